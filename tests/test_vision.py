"""Camera (dict) observations end to end: shapes and dtypes through the buffer, uint8 storage, seeded augmentation,
the METHOD invariants with an image encoder (ratio 1 on the first minibatch, gradients through every denoising
step and the encoder, reproducibility), bitwise resume, the datasets' robomimic image layout, the API, and
one-line errors. A small synthetic camera env (a dot on a 24x24 image) keeps the core tests fast; the robosuite
camera tasks (lift-image, ...) are tested where robosuite is installed (the README's install includes it)."""

import csv
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ncdpo.cli import main
from ncdpo.envs.manipulation import robosuite_available

IMG_ENV = "ncdpo-test/ImageReach-v0"
SIZE = 24
TIMING = {"wall_s", "charts/SPS", "perf/rollout_s", "perf/update_s", "perf/peak_mem_mb"}


class ImageReach(gym.Env):
    """Move a dot to the centre of a 24x24 image: obs ``{"cam_image": uint8 (24, 24, 3), "pos": (2,)}``, a 2-D
    velocity action, reward minus the distance, 30-step episodes (truncated)."""

    def __init__(self, bad_entry: bool = False) -> None:
        spaces = {
            "cam_image": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
            "pos": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        }
        if bad_entry:
            spaces["map"] = gym.spaces.Box(0.0, 1.0, (4, 4), np.float32)  # 2-D float: no encoder reads it
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.pos = np.zeros(2)
        self.t = 0

    def _obs(self):
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        r, c = ((self.pos + 1) / 2 * (SIZE - 1)).round().astype(int)
        img[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = (255, 128, 0)
        return {"cam_image": img, "pos": self.pos.astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = self.np_random.uniform(-0.9, 0.9, 2), 0
        return self._obs(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.1 * np.clip(action, -1, 1), -1, 1)
        self.t += 1
        return self._obs(), -float(np.linalg.norm(self.pos)), False, self.t >= 30, {}


gym.register(IMG_ENV, entry_point=ImageReach)
gym.register("ncdpo-test/BadObs-v0", entry_point=lambda: ImageReach(bad_entry=True))


def tiny(tmp_path, algo="ncdpo", name="run", steps=192, extra=()):
    return [
        "train", "--algo", algo, "--env", IMG_ENV, "--total-env-steps", str(steps), "--env.n-envs", "2",
        "--env.vector", "sync", "--horizon", "2", "--act-steps", "2", "--ppo.n-steps", "8", "--ppo.minibatch-size",
        "8", "--ppo.update-epochs", "2", "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "32",
        "--critic.hidden-dims", "32", "32", "--encoder.channels", "8", "--encoder.feature-dim", "16", "--out-dir",
        str(tmp_path), "--run-name", name, "--progress", "false", "--tensorboard", "false", "--seed", "3",
        "--save-every", "1", "--keep-checkpoints", "0",
        *(["--dppo.ft-denoising-steps", "2"] if algo == "dppo" else []), *extra
    ]


def rows(run):
    with open(Path(run) / "progress.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def obs_spec():
    from ncdpo.observations import ObsSpec

    return ObsSpec.from_space(ImageReach().observation_space)


# ---------------------------------------------------------------------------------------------- core pieces
def test_buffer_keeps_dict_observations_and_stores_images_as_uint8():
    from ncdpo.algos.buffer import RolloutBuffer

    spec = obs_spec()
    buf = RolloutBuffer(4, 3, spec.flat_dim, torch.device("cpu"), spec)
    assert buf.obs["cam_image"].dtype == torch.uint8 and buf.obs["cam_image"].shape == (4, 3, SIZE, SIZE, 3)
    assert buf.obs["pos"].dtype == torch.float32
    assert buf.obs_bytes_per_decision() == SIZE * SIZE * 3 + 2 * 4  # 4x fewer image bytes than float32
    for t in range(4):
        obs = {"cam_image": torch.full((3, SIZE, SIZE, 3), t, dtype=torch.uint8), "pos": torch.full((3, 2), t + 0.5)}
        buf.add(t, obs, torch.zeros(3), torch.zeros(3), {"a": torch.zeros(3, 2)}, torch.zeros(3), torch.zeros(3))
    b = buf.batch(torch.zeros(4, 3), torch.zeros(4, 3))
    assert b.obs["cam_image"].shape == (12, SIZE, SIZE, 3) and b.obs["cam_image"].dtype == torch.uint8
    assert b.obs["cam_image"][5, 0, 0, 0] == 1 and b.obs["pos"][11, 0] == 3.5  # flattened time-major
    assert b.minibatch_obs(torch.tensor([0, 11]))["pos"][:, 0].tolist() == [0.5, 3.5]


def test_random_shift_is_seeded_bounded_and_keeps_dtype():
    from ncdpo.policies.encoders import random_shift

    img = torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = random_shift(img, 4, torch.Generator().manual_seed(1))
    b = random_shift(img, 4, torch.Generator().manual_seed(1))
    c = random_shift(img, 4, torch.Generator().manual_seed(2))
    assert a.dtype == torch.uint8 and a.shape == img.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(random_shift(img, 0), img)
    # a pure shift: every shifted image's interior equals the original's, offset by at most 4 pixels
    for i in range(6):
        found = any(
            torch.equal(a[i, 4:-4, 4:-4], img[i, 4 + dy : 12 + dy, 4 + dx : 12 + dx])
            for dy in range(-4, 5)
            for dx in range(-4, 5)
        )
        assert found


def test_dict_normaliser_scales_low_dim_keys_only():
    from ncdpo.policies.common import DictObsNormalizer

    norm = DictObsNormalizer(obs_spec())
    obs = {"cam_image": np.full((5, SIZE, SIZE, 3), 200, np.uint8), "pos": np.arange(10.0, dtype=np.float32)}
    obs["pos"] = obs["pos"].reshape(5, 2)
    out = norm(obs, update=True)
    assert out["cam_image"].dtype == np.uint8 and (out["cam_image"] == 200).all()
    assert out["pos"].dtype == np.float32 and abs(float(out["pos"].mean())) < 1e-3
    st = norm.rms.state("obs_rms")
    assert set(st) == {"obs_rms.pos.mean", "obs_rms.pos.var", "obs_rms.pos.count"}


def _agent(algo, aug_pad=4):
    from ncdpo.algos import make_agent
    from ncdpo.config import TrainConfig
    from ncdpo.envs.spec import EnvSpec

    cfg = TrainConfig(algo=algo, horizon=2, act_steps=2)
    cfg.diffusion.denoising_steps = 3
    cfg.dppo.ft_denoising_steps = 2
    cfg.encoder.channels, cfg.encoder.feature_dim, cfg.encoder.aug_pad = 8, 16, aug_pad
    spec = obs_spec()
    return make_agent(cfg, spec.flat_dim, 2, EnvSpec(spec.flat_dim, 2, obs=spec.to_dict())), cfg


def _obs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "cam_image": torch.randint(0, 256, (n, SIZE, SIZE, 3), dtype=torch.uint8, generator=g),
        "pos": torch.randn(n, 2, generator=g),
    }


def test_gradients_reach_the_encoder_and_every_denoising_step():
    torch.manual_seed(0)
    agent, _ = _agent("ncdpo")
    obs = _obs(5)
    out = agent.act(obs)
    pol = agent.policy
    feat = pol.encode(obs)
    m, latents = pol.chain_mean(feat, out.store["noise"].clone().requires_grad_(), return_latents=True)
    for x in latents:
        x.retain_grad()
    m.sum().backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in latents)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pol.encoder.parameters() if p.requires_grad)
    # the critic's own encoder is a separate network
    assert not set(map(id, agent.critic.encoder.parameters())) & set(map(id, pol.encoder.parameters()))


@pytest.mark.parametrize("algo", ["ncdpo", "dppo"])
def test_augmented_update_recomputes_log_pi_old_so_the_ratio_starts_at_one(algo):
    from ncdpo.algos.buffer import Batch

    torch.manual_seed(0)
    agent, _ = _agent(algo)
    obs = _obs(16)
    out = agent.act(obs)
    batch = Batch(obs, out.log_prob, torch.randn(16), torch.randn(16), agent.value(obs, out.store), out.store)
    aug = agent.augment(batch)
    assert not torch.equal(aug.obs["cam_image"], obs["cam_image"])  # shifted ...
    assert torch.equal(aug.obs["pos"], obs["pos"])  # ... images only
    samples = agent.training_samples(aug)
    idx = torch.arange(len(samples))
    new, _ = agent.log_prob_entropy(samples.minibatch_obs(idx), samples.minibatch_store(idx))
    torch.testing.assert_close(new, samples.log_prob, rtol=0, atol=1e-5)
    torch.manual_seed(5)
    a1 = agent.augment(batch).obs["cam_image"]
    torch.manual_seed(5)
    assert torch.equal(agent.augment(batch).obs["cam_image"], a1)  # the shifts come from torch's seeded generator


def test_dppo_minibatches_hold_whole_decisions_with_images():
    agent, _ = _agent("dppo")
    order = agent.minibatch_order(12, torch.device("cpu"))
    assert sorted(order.tolist()) == list(range(12))
    assert all(order[i].item() // 2 == order[i + 1].item() // 2 for i in range(0, 12, 2))


# ---------------------------------------------------------------------------------------------- runs
@pytest.mark.parametrize("algo", ["ncdpo", "dppo", "ppo"])
def test_pixel_runs_are_reproducible_with_ratio_one(tmp_path, algo):
    assert main(tiny(tmp_path, algo, "a")) == 0
    assert main(tiny(tmp_path, algo, "b")) == 0
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert len(ra) == 6 and ra == rb
    devs = [float(r["losses/first_minibatch_ratio_dev"]) for r in ra]
    assert max(devs) < 1e-5, devs
    from ncdpo.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "a" / "checkpoints" / "final.safetensors")
    keys = [k for k, _, _ in ck.meta["spec"]["obs"]["keys"]]
    assert keys == ["cam_image", "pos"] and "obs_rms.pos.mean" in ck.tensors


def test_pixel_run_resumes_bitwise(tmp_path):
    assert main(tiny(tmp_path, "ncdpo", "ref")) == 0
    assert main(tiny(tmp_path, "ncdpo", "run")) == 0
    ck = tmp_path / "run" / "checkpoints"
    for p in ck.glob("*.safetensors"):  # as if the run had been killed after iteration 3
        if p.name == "final.safetensors" or int(p.stem.split("_")[1]) > 3:
            p.unlink()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert rows(tmp_path / "run") == rows(tmp_path / "ref")
    from ncdpo.checkpoint import load_checkpoint

    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "final.safetensors").tensors
    b = load_checkpoint(ck / "final.safetensors").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_vit_encoder_and_privileged_critic_options(tmp_path, capsys):
    assert main(tiny(tmp_path, "ncdpo", "vit", 64, ["--encoder.kind", "vit", "--encoder.patch", "8",
                                                     "--encoder.embed-dim", "16", "--encoder.heads", "2"])) == 0
    assert main(tiny(tmp_path, "ncdpo", "bad", 64, ["--encoder.kind", "vit", "--encoder.patch", "7"])) == 2
    assert "encoder.patch 7 must divide the image size 24" in capsys.readouterr().err
    # the synthetic env has no privileged entries: a privileged critic is refused in one line
    assert main(tiny(tmp_path, "ncdpo", "priv", 64, ["--critic.privileged", "true"])) == 2
    assert "critic.privileged needs an env with privileged state entries" in capsys.readouterr().err


def test_an_observation_space_no_encoder_handles_is_one_line(tmp_path, capsys):
    args = tiny(tmp_path, "ncdpo", "x", 64)
    args[args.index(IMG_ENV)] = "ncdpo-test/BadObs-v0"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "observation entry 'map'" in err and "no encoder handles it" in err and len(err.strip().splitlines()) == 1


def test_dict_dataset_round_trip_in_robomimic_image_layout(tmp_path):
    import h5py

    from ncdpo.data.dataset import Dataset, Episode, load_dataset, make_chunks

    T = 7
    obs = {"cam_image": np.random.default_rng(0).integers(0, 256, (T, SIZE, SIZE, 3), dtype=np.uint8),
           "pos": np.zeros((T, 2), np.float32)}  # fmt: skip
    ep = Episode(obs, np.zeros((T, 2), np.float32), np.zeros(T, np.float32), np.zeros(T, bool), True)
    ds = Dataset([ep, ep], IMG_ENV, -np.ones(2, np.float32), np.ones(2, np.float32))
    ds.save(tmp_path / "d.hdf5")
    with h5py.File(tmp_path / "d.hdf5") as f:
        d = f["data/demo_0/obs/cam_image"]
        assert d.dtype == np.uint8 and d.shape == (T, SIZE, SIZE, 3) and d.compression == "gzip"
    back = load_dataset(tmp_path / "d.hdf5")
    assert np.array_equal(back.episodes[1].obs["cam_image"], obs["cam_image"])
    o, chunks = make_chunks(back, 3)
    assert o["cam_image"].shape == (2 * T, SIZE, SIZE, 3) and o["cam_image"].dtype == np.uint8
    assert chunks.shape == (2 * T, 3, 2)


# ---------------------------------------------------------------------------------------------- robosuite cameras
needs_robosuite = pytest.mark.skipif(not robosuite_available(), reason="robosuite is not installed")


@needs_robosuite
def test_lift_image_renders_the_same_frames_for_the_same_seed_and_only_per_decision():
    from ncdpo.envs.registry import make_env

    a, b = make_env("lift-image", 4), make_env("lift-image", 4)
    try:
        oa, _ = a.reset(seed=5)
        ob, _ = b.reset(seed=5)
        img = "robot0_eye_in_hand_image"
        assert oa[img].dtype == np.uint8 and oa[img].shape == (84, 84, 3) and oa[img].std() > 1
        assert np.array_equal(oa[img], ob[img]) and set(oa) >= {"robot0_eef_pos", "object"}
        calls = []
        inner = a.unwrapped
        orig = inner.renderer.render
        inner.renderer.render = lambda: calls.append(1) or orig()
        act = np.random.default_rng(0).uniform(-1, 1, (4, 7)).astype(np.float32)
        oa, *_ = a.step(act)
        ob, *_ = b.step(act)
        assert len(calls) == 1  # one frame for a chunk of 4 env steps
        assert np.array_equal(oa[img], ob[img])
        oc, _ = b.reset(seed=6)
        assert not np.array_equal(oc[img], a.reset(seed=5)[0][img])
    finally:
        a.close()
        b.close()


@needs_robosuite
def test_unknown_camera_is_one_line(tmp_path, capsys):
    args = ["train", "--env", "lift-image", "--env.cameras", "nosuchcam", "--total-env-steps", "64",
            "--out-dir", str(tmp_path), "--progress", "false", "--env.vector", "sync", "--env.n-envs", "1"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown camera 'nosuchcam'" in err and "agentview" in err and len(err.splitlines()) == 1


@needs_robosuite
def test_pixel_bc_then_ncdpo_and_dppo_through_the_cli(tmp_path, capsys):
    """demos -> pretrain -> train --init (NCDPO, DPPO) -> eval -> collect -> the Python API, on lift-image."""
    import ncdpo

    d = tmp_path / "demos.hdf5"
    assert main(["demos", "lift-image", "--episodes", "2", "--out", str(d)]) == 0
    import h5py

    with h5py.File(d) as f:
        assert f["data/demo_0/obs/robot0_eye_in_hand_image"].dtype == np.uint8
    small = ["--out-dir", str(tmp_path), "--progress", "false", "--tensorboard", "false", "--encoder.channels", "8",
             "--diffusion.hidden-dim", "32", "--diffusion.denoising-steps", "3"]  # fmt: skip
    bc_args = ["--pretrain.steps", "4", "--pretrain.batch-size", "8", "--pretrain.log-every", "2"]
    assert main(["pretrain", "--dataset", str(d), "--env", "lift-image", *bc_args, "--run-name", "bc", *small]) == 0
    bc = tmp_path / "bc"
    # the shipped form: no training state and no (never trained) critic; it loads, evaluates and fine-tunes alike
    assert main(["export", str(bc), "--out", str(tmp_path / "bc.safetensors")]) == 0
    from ncdpo.checkpoint import load_checkpoint

    exp = load_checkpoint(tmp_path / "bc.safetensors")
    assert exp.meta["critic_omitted"] and not any(k.startswith("agent.critic.") for k in exp.tensors)
    a, b = ncdpo.load_policy(bc), ncdpo.load_policy(tmp_path / "bc.safetensors")
    for k, v in a.agent.policy.state_dict().items():
        assert torch.equal(v, b.agent.policy.state_dict()[k])
    for algo in ("ncdpo", "dppo"):
        assert main(["train", "--init", str(bc), "--algo", algo, "--total-env-steps", "64", "--env.n-envs", "2",
                     "--env.vector", "sync", "--ppo.n-steps", "8", "--ppo.minibatch-size", "8",
                     "--ppo.update-epochs", "1", "--ppo.critic-warmup-iters", "0", "--dppo.ft-denoising-steps", "2",
                     "--out-dir", str(tmp_path), "--run-name", algo, "--progress", "false",
                     "--tensorboard", "false"]) == 0  # fmt: skip
        r = rows(tmp_path / algo)
        assert float(r[0]["losses/first_minibatch_ratio_dev"]) < 1e-5
    # a privileged critic: it reads every low-dim entry (the object state too) and no camera
    assert main(["train", "--init", str(bc), "--critic.privileged", "true", "--total-env-steps", "32",
                 "--env.n-envs", "2", "--env.vector", "sync", "--ppo.n-steps", "4", "--ppo.minibatch-size", "8",
                 "--out-dir", str(tmp_path), "--run-name", "priv", "--progress", "false", "--tensorboard",
                 "false"]) == 0  # fmt: skip
    from ncdpo.algos import load_agent as _load

    priv = _load(tmp_path / "priv")[0]
    assert priv.critic.encoder.image_keys == [] and "object" in priv.critic.encoder.lowdim_keys
    assert "object" not in priv.policy.encoder.lowdim_keys and priv.policy.encoder.image_keys
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "ncdpo"), "--episodes", "1", "--n-envs", "1"]) == 0
    assert "lift-image ncdpo" in capsys.readouterr().out
    assert main(["collect", str(tmp_path / "dppo"), "--episodes", "1", "--out", str(tmp_path / "c.hdf5")]) == 0
    from ncdpo.data.dataset import load_dataset

    c = load_dataset(tmp_path / "c.hdf5")
    assert c.episodes[0].obs["robot0_eye_in_hand_image"].shape[1:] == (84, 84, 3)
    policy = ncdpo.load_policy(tmp_path / "ncdpo")
    obs = {k: v[0] for k, v in c.episodes[0].obs.items()}
    assert policy.act(obs).shape == (7,)
    bad = dict(obs, robot0_eye_in_hand_image=np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ncdpo.NcdpoError, match="trained on"):
        policy.act(bad)
    # the cameras travel with the policy: another camera, or another size, is refused at --init
    capsys.readouterr()
    args = ["train", "--init", str(bc), "--env.cameras", "agentview", "--total-env-steps", "64", "--env.vector",
            "sync", "--out-dir", str(tmp_path), "--run-name", "cam", "--progress", "false"]  # fmt: skip
    assert main(args) == 2
    assert "reads observation entry 'robot0_eye_in_hand_image' that lift-image does not produce" in (
        capsys.readouterr().err
    )
    # evaluating it where the images differ (another size): one line naming the entry
    from ncdpo.algos import load_agent
    from ncdpo.training.evaluation import evaluate

    agent, norm, _ = load_agent(bc)
    with pytest.raises(ncdpo.NcdpoError, match="the policy was made for 'robot0_eye_in_hand_image' of 84x84x3 but"):
        evaluate(agent, norm, "lift-image", 1, 4, vector="sync", options={"image_size": 64})
    # a dataset without the image key, or with images of another size, is refused in one line
    assert main(["pretrain", "--dataset", str(d), "--env", "lift-image", "--env.image-size", "64", *small]) == 2
    assert "has 'robot0_eye_in_hand_image' of 84x84x3 but lift-image gives 64x64x3" in capsys.readouterr().err
    assert main(["pretrain", "--dataset", str(d), "--env", "lift-image", "--env.cameras", "agentview", *small]) == 2
    assert "lacks the image key 'agentview_image' that lift-image needs" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "ncdpo")


@needs_robosuite
def test_lift_image_run_interrupted_and_resumed_is_bitwise_identical(tmp_path):
    """A subprocess-env camera run stopped by SIGINT after a checkpoint resumes bit for bit (env snapshots with
    dict observations, lazy rendering)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def args(name):
        return [
            "train", "--env", "lift-image", "--total-env-steps", "192", "--env.n-envs", "2", "--horizon", "4",
            "--act-steps", "4", "--ppo.n-steps", "8", "--ppo.minibatch-size", "8", "--ppo.update-epochs", "1",
            "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "32", "--critic.hidden-dims", "32", "32",
            "--encoder.channels", "8", "--env.image-size", "32", "--env.max-episode-steps", "20", "--save-every",
            "1", "--keep-checkpoints", "0", "--out-dir", str(tmp_path), "--run-name", name, "--progress", "false",
            "--tensorboard", "false", "--torch-threads", "1"
        ]

    assert main(args("ref")) == 0
    proc = subprocess.Popen([sys.executable, "-m", "ncdpo.cli", *args("run")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    ck = tmp_path / "run" / "checkpoints" / "iter_000001.safetensors"
    t0 = time.time()
    while not ck.exists():
        assert proc.poll() is None and time.time() - t0 < 240
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert len(rows(tmp_path / "run")) == len(rows(tmp_path / "ref")) == 3
    assert rows(tmp_path / "run") == rows(tmp_path / "ref")


def test_the_gpu_timing_script_uses_the_recipe_files_settings_and_needs_torch_only():
    """benchmarks/pixel_update_timing.py runs where only torch is installed; its settings are the recipes'."""
    import subprocess
    import sys

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import pixel_update_timing as T

    from ncdpo.config import flatten_nested

    root = Path(__file__).resolve().parent.parent / "configs"
    for algo, name in (("ncdpo", "finetune_manipulation.yaml"), ("dppo", "dppo_manipulation.yaml")):
        recipe = flatten_nested(yaml.safe_load((root / name).read_text()))
        for k, v in T.RECIPES[algo].items():
            if k != "ppo.target_kl":  # switched off on purpose (see the script)
                assert (tuple(recipe[k]) if isinstance(v, tuple) else recipe[k]) == v, (algo, k)
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('gymnasium', 'safetensors', 'h5py', 'mujoco', 'robosuite', 'yaml'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, B())\n"
        f"sys.path.insert(0, {str(Path(T.__file__).parent)!r})\n"
        "import pixel_update_timing as T\n"
        "cfg = T.make_config('dppo', 84, 'conv')\n"
        "from ncdpo.algos import make_agent\n"
        "from ncdpo.envs.spec import EnvSpec\n"
        "s = T.obs_spec(84)\n"
        "make_agent(cfg, s.flat_dim, 7, EnvSpec(s.flat_dim, 7, obs=s.to_dict()))\n"
        "print('ok', T.frames(84, 5).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ok (5, 84, 84, 3)" in out


@needs_robosuite
def test_a_camera_task_renders_when_mujoco_was_imported_before_ncdpo():
    """MuJoCo reads MUJOCO_GL at import: imported first (without it), ncdpo still renders through EGL/OSMesa."""
    import os
    import subprocess
    import sys

    code = (
        "import mujoco\n"
        "from ncdpo.envs.registry import make_env\n"
        "e = make_env('lift-image', 4)\n"
        "o, _ = e.reset(seed=0)\n"
        "print('std', float(o['robot0_eye_in_hand_image'].std()) > 1)\n"
        "e.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "std True" in out.stdout, out.stderr[-2000:]
