"""Guards: a NaN in the loss, an env that raises, a NaN observation each stop training with one clear line
naming the iteration and the quantity, and what was saved before stays loadable."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import ncdpo.algos.losses as losses
from ncdpo.checkpoint import load_checkpoint
from ncdpo.cli import main


class Faulty(gym.Wrapper):
    """Hopper that raises, or returns a NaN observation, at its ``at``-th step."""

    def __init__(self, mode: str = "raise", at: int = 300) -> None:
        super().__init__(gym.make("Hopper-v5"))
        self.mode, self.at, self.n = mode, at, 0

    def step(self, action):
        self.n += 1
        obs, r, term, trunc, info = self.env.step(action)
        if self.n == self.at:
            if self.mode == "raise":
                raise RuntimeError("simulator exploded")
            obs = np.full_like(obs, np.nan)
        return obs, r, term, trunc, info


gym.register("ncdpo-test/FaultyHopper-v0", entry_point=Faulty, max_episode_steps=1000)


def args(tmp_path, name, env="Hopper-v5", extra=()):
    return [
        "train", "--algo", "ncdpo", "--env", env, "--total-env-steps", "1500", "--env.n-envs", "2", "--ppo.n-steps",
        "64", "--ppo.minibatch-size", "32", "--ppo.update-epochs", "2", "--diffusion.denoising-steps", "4",
        "--diffusion.hidden-dim", "32", "--critic.hidden-dims", "32", "32", "--out-dir", str(tmp_path), "--run-name",
        name, "--progress", "false", "--tensorboard", "false", "--seed", "3", "--save-every", "1", *extra
    ]


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("ncdpo: error:") and "\n" not in err, err
    return err


def saved_checkpoints_are_good(run):
    files = sorted((run / "checkpoints").glob("iter_*.safetensors"))
    assert files
    for f in files:
        ck = load_checkpoint(f)
        assert all(bool(torch.isfinite(t).all()) for t in ck.tensors.values() if t.is_floating_point())
    return files


def test_nan_loss_stops_with_the_iteration_and_quantity(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    orig = losses.value_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        v = orig(*a, **k)
        return v * math.nan if calls["n"] == 25 else v  # 8 minibatches per update: in iteration 4

    monkeypatch.setattr(losses, "value_loss", poisoned)
    assert main(args(tmp_path, "nan")) == 2
    err = one_line(capsys)
    assert "iteration 4: non-finite value loss" in err and "the update was not applied" in err, err
    files = saved_checkpoints_are_good(tmp_path / "nan")
    assert [f.name for f in files][-1] == "iter_000003.safetensors" and f"last checkpoint {files[-1]}" in err
    assert "ncdpo train --resume" in err


def test_env_that_raises_is_named_with_worker_and_seed(tmp_path, capsys):
    assert main(args(tmp_path, "raise", env="ncdpo-test/FaultyHopper-v0")) == 2
    err = one_line(capsys)
    assert "env ncdpo-test/FaultyHopper-v0 (worker 0, seed 3) raised RuntimeError in step: simulator exploded" in err, (
        err
    )
    assert err.startswith("ncdpo: error: iteration ")
    saved_checkpoints_are_good(tmp_path / "raise")


def test_nan_observation_stops_training(tmp_path, capsys, monkeypatch):
    gym.register("ncdpo-test/NaNHopper-v0", entry_point=Faulty, kwargs={"mode": "nan"}, max_episode_steps=1000)
    assert main(args(tmp_path, "nanobs", env="ncdpo-test/NaNHopper-v0")) == 2
    err = one_line(capsys)
    assert "non-finite observation or reward from env ncdpo-test/NaNHopper-v0 worker(s) [0, 1]" in err, err


@pytest.mark.parametrize("debug", [False, True])
def test_debug_flag_shows_the_traceback(tmp_path, debug):
    argv = args(tmp_path, f"dbg{debug}", env="ncdpo-test/FaultyHopper-v0") + (["--debug"] if debug else [])
    if debug:
        with pytest.raises(Exception, match="simulator exploded"):
            main(argv)
    else:
        assert main(argv) == 2


def test_flipped_bit_in_a_checkpoint_is_caught_by_the_checksum(tmp_path, capsys):
    assert main(args(tmp_path, "ok", extra=["--total-env-steps", "256"])) == 0
    path = tmp_path / "ok" / "checkpoints" / "final.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the tensor data: still a valid safetensors file
    path.write_bytes(bytes(data))
    assert main(["eval", str(path), "--episodes", "1"]) == 2
    assert "checksum" in one_line(capsys)


def test_disk_full_while_checkpointing_keeps_the_earlier_checkpoints(tmp_path, capsys, monkeypatch):
    import errno

    import ncdpo.checkpoint as ckmod

    calls = {"n": 0}
    real_fsync = ckmod.os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 4:  # config.json, iter 1, iter 2, then iteration 3's checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(ckmod.os, "fsync", fsync)
    assert main(args(tmp_path, "full")) == 2
    err = one_line(capsys)
    assert "could not write" in err and "iter_000003.safetensors" in err and "No space left on device" in err, err
    files = saved_checkpoints_are_good(tmp_path / "full")
    assert [f.name for f in files] == ["iter_000001.safetensors", "iter_000002.safetensors"]
    assert not list((tmp_path / "full" / "checkpoints").glob("*.tmp"))
