"""Runs that survive faults: SIGKILL + --resume is bitwise identical to an uninterrupted run; SIGTERM
checkpoints and stops; a damaged newest checkpoint falls back to the previous one, named."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ncdpo.checkpoint import load_checkpoint
from ncdpo.cli import main

TIMING = {"wall_s", "charts/SPS", "perf/rollout_s", "perf/update_s", "perf/peak_mem_mb"}


def rows(run):
    with open(Path(run) / "progress.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def weights(run):
    return load_checkpoint(Path(run) / "checkpoints" / "final.safetensors").tensors


def argv(tmp_path, name, algo="ncdpo"):
    return [
        "train", "--algo", algo, "--env", "Hopper-v5", "--total-env-steps", "2600", "--env.n-envs", "2",
        "--ppo.n-steps", "64", "--ppo.minibatch-size", "32", "--ppo.update-epochs", "2",
        "--diffusion.denoising-steps", "4", "--diffusion.hidden-dim", "32", "--critic.hidden-dims", "32", "32",
        "--gaussian.hidden-dims", "16", "--out-dir", str(tmp_path), "--run-name", name, "--progress", "false",
        "--tensorboard", "true", "--seed", "3", "--save-every", "1", "--keep-checkpoints", "0", "--eval-every", "4",
        "--eval-episodes", "1", "--diffusion.sigma-exp", "learnable", "--torch-threads", "1"
    ]


def start(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ncdpo.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def wait_for(path, proc, timeout=240):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


def tb_points(run, tag="losses/value_loss"):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run) / "tb"), purge_orphaned_data=True)
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def assert_same_as(reference, run):
    assert rows(run) == rows(reference)
    wa, wb = weights(reference), weights(run)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # TensorBoard: the points written after the checkpoint by the killed process are purged, none is missing
    pa, pb = tb_points(reference), tb_points(run)
    assert [p[0] for p in pb] == [p[0] for p in pa] and len({p[0] for p in pb}) == len(pb)
    np.testing.assert_allclose([p[1] for p in pb], [p[1] for p in pa], rtol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    out = {}
    for algo in ("ncdpo", "ppo"):
        assert main(argv(d, algo, algo)) == 0
        out[algo] = d / algo
    return out


@pytest.mark.parametrize("algo", ["ncdpo", "ppo"])
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, reference, algo):
    proc = start(argv(tmp_path, "run", algo))
    wait_for(tmp_path / "run" / "checkpoints" / "iter_000007.safetensors", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "checkpoints" / "final.safetensors").exists()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert len(rows(tmp_path / "run")) == len(rows(reference[algo])) == 21
    assert_same_as(reference[algo], tmp_path / "run")


def test_sigterm_checkpoints_stops_and_resumes(tmp_path, reference):
    proc = start(argv(tmp_path, "run"))
    wait_for(tmp_path / "run" / "checkpoints" / "iter_000003.safetensors", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped by signal after iteration" in out and "ncdpo train --resume" in out
    assert not (tmp_path / "run" / "checkpoints" / "final.safetensors").exists()
    last = sorted((tmp_path / "run" / "checkpoints").glob("iter_*.safetensors"))[-1]
    n = len(rows(tmp_path / "run"))
    assert int(last.stem.split("_")[1]) == n  # the checkpoint is the last logged iteration
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert_same_as(reference["ncdpo"], tmp_path / "run")


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, capsys):
    proc = start(argv(tmp_path, "run"))
    wait_for(tmp_path / "run" / "checkpoints" / "iter_000006.safetensors", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = sorted((tmp_path / "run" / "checkpoints").glob("iter_*.safetensors"))[-1]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"skipped unreadable newer checkpoints: {newest.name}" in out and "corrupt" in out
    assert_same_as(reference["ncdpo"], tmp_path / "run")


def test_resume_errors_are_one_line(tmp_path, reference, capsys):
    def err(args, *needles):
        assert main(args) == 2
        e = capsys.readouterr().err.strip()
        assert e.startswith("ncdpo: error:") and "\n" not in e, e
        for n in needles:
            assert n in e, e

    err(["train", "--resume", str(tmp_path / "nope")], "does not exist")
    err(["train", "--resume", str(reference["ncdpo"])], "already finished", "--total-env-steps")
    err(["train", "--resume", str(reference["ncdpo"]), "--ppo.clip-coef", "0.3"], "--ppo.clip-coef cannot be changed")
    (tmp_path / "empty").mkdir()
    err(["train", "--resume", str(tmp_path / "empty")], "no checkpoint")


def test_a_finished_run_continues_with_a_larger_budget(tmp_path, reference):
    import shutil

    shutil.copytree(reference["ppo"], tmp_path / "run")
    n = len(rows(tmp_path / "run"))
    assert main(["train", "--resume", str(tmp_path / "run"), "--total-env-steps", "3200"]) == 0
    r = rows(tmp_path / "run")
    assert len(r) > n and r[:n] == rows(reference["ppo"]) and int(r[-1]["env_steps"]) >= 3200
    assert [int(x["iteration"]) for x in r] == list(range(1, len(r) + 1))


def pretrain_argv(tmp_path, name):
    return [
        "pretrain", "--dataset", "shipped:Hopper-v5", "--horizon", "4", "--act-steps", "4",
        "--diffusion.denoising-steps", "4", "--diffusion.hidden-dim", "32", "--pretrain.steps", "800",
        "--pretrain.batch-size", "64", "--pretrain.log-every", "50", "--pretrain.warmup-steps", "20", "--save-every",
        "1", "--keep-checkpoints", "0", "--out-dir", str(tmp_path), "--run-name", name, "--progress", "false",
        "--tensorboard", "false", "--seed", "2", "--torch-threads", "1"
    ]


def test_pretrain_sigkill_then_resume_is_bitwise_identical(tmp_path):
    assert main(pretrain_argv(tmp_path, "ref")) == 0
    proc = start(pretrain_argv(tmp_path, "run"))
    wait_for(tmp_path / "run" / "checkpoints" / "iter_000300.safetensors", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(["pretrain", "--resume", str(tmp_path / "run")]) == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]  # noqa: E731
    with open(tmp_path / "ref" / "progress.csv") as f, open(tmp_path / "run" / "progress.csv") as g:
        assert strip(csv.DictReader(f)) == strip(csv.DictReader(g))
    assert_same_weights = weights(tmp_path / "ref"), weights(tmp_path / "run")
    assert all(torch.equal(v, assert_same_weights[1][k]) for k, v in assert_same_weights[0].items())


def test_exported_policy_loads_identically_but_cannot_be_resumed(tmp_path, reference, capsys):
    from ncdpo.algos import load_agent
    from ncdpo.checkpoint import export_policy

    src = reference["ncdpo"] / "checkpoints" / "final.safetensors"
    dst = tmp_path / "run" / "checkpoints" / "final.safetensors"
    assert main(["export", str(reference["ncdpo"]), "--out", str(dst)]) == 0
    assert main(["export", str(reference["ncdpo"]), "--out", str(dst)]) == 2  # no silent overwrite
    assert export_policy(src, dst) == dst
    assert dst.stat().st_size < src.stat().st_size / 2
    a1, n1, _ = load_agent(src)
    a2, n2, ck = load_agent(dst)
    assert "resume" not in ck.meta
    obs = torch.as_tensor(n1(np.ones((3, 11))))
    torch.manual_seed(0)
    x1 = a1.act(obs).action
    torch.manual_seed(0)
    assert torch.equal(x1, a2.act(obs).action)
    (dst.parent / "final.safetensors").rename(dst.parent / "iter_000001.safetensors")
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "no resume state" in capsys.readouterr().err
