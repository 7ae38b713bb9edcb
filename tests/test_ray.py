"""Ray: ``ncdpo sweep`` (a 2x2 grid completes and aggregates; a trial whose worker is SIGKILLed is retried and ends
bitwise as an uninterrupted run; bad input is one line) and ``--env.vector ray`` (the rollouts of ``sync``,
bitwise resume, an env that raises and a killed actor reported as one line). Every Ray instance here is local,
bound to the loopback address, and stopped at the end."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ncdpo.checkpoint import load_checkpoint
from ncdpo.cli import main
from ncdpo.errors import EnvWorkerError

ray = pytest.importorskip("ray")

TIMING = {"wall_s", "charts/SPS", "perf/rollout_s", "perf/update_s", "perf/peak_mem_mb"}
TESTS = Path(__file__).resolve().parent
SMALL = {
    "env.n_envs": 2, "ppo.n_steps": 64, "ppo.minibatch_size": 32, "ppo.update_epochs": 2,
    "diffusion.denoising_steps": 4, "diffusion.hidden_dim": 32, "critic.hidden_dims": [32, 32],
    "gaussian.hidden_dims": [16], "tensorboard": False, "save_every": 1,
}  # fmt: skip


def small_args(**extra):
    out = []
    for k, v in {**SMALL, **extra}.items():
        vals = v if isinstance(v, list) else [v]
        out += ["--" + k.replace("_", "-"), *[str(x).lower() if isinstance(x, bool) else str(x) for x in vals]]
    return out


def rows(run):
    with open(Path(run) / "progress.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def weights(run):
    return load_checkpoint(Path(run) / "checkpoints" / "final.safetensors").tensors


def same_run(a, b):
    assert rows(a) == rows(b)
    wa, wb = weights(a), weights(b)
    policy = [k for k in wa if not k.startswith("resume.env.")]  # (the vector env's own state differs by kind)
    assert policy and all(torch.equal(wa[k], wb[k]) for k in policy)


@pytest.fixture(scope="module", autouse=True)
def ray_stopped_at_the_end():
    # the actors import tests/ray_envs.py by id: the local instance (started by the code under test) inherits this
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), *([old] if old else [])])
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def write_spec(path, **spec):
    path.write_text(yaml.safe_dump(spec))
    return path


# ---------------------------------------------------------------------------------------------- sweeps
def test_sweep_2x2_completes_aggregates_and_resumes(tmp_path, capsys):
    spec = write_spec(
        tmp_path / "grid.yaml",
        out=str(tmp_path / "sweeps"), tasks=["Hopper-v5"], algos=["ncdpo", "ppo"], seeds=[1, 2],
        set={**SMALL, "total_env_steps": 256}, eval_episodes=1, progress_every=2,
    )  # fmt: skip
    assert main(["sweep", str(spec)]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "sweeps" / "grid"
    names = [f"Hopper-v5__{a}__s{s}" for a in ("ncdpo", "ppo") for s in (1, 2)]
    assert json.loads((folder / "sweep.json").read_text())["trials"] == names
    for n in names:
        assert (folder / n / "checkpoints" / "final.safetensors").is_file() and (folder / n / "eval.json").is_file()
        assert json.loads((folder / n / "config.json").read_text())["seed"] == int(n[-1])
    with open(folder / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [r["trial"] for r in summary] == names and all(int(r["env_steps"]) == 256 for r in summary)
    table = (folder / "table.md").read_text().splitlines()
    assert [ln.split(" | ")[1] for ln in table[2:]] == ["ncdpo", "ppo"] and all(" | 2 | " in ln for ln in table[2:])
    assert (folder / "curves_Hopper-v5.png").stat().st_size > 1000
    assert "sweep: 4 trials" in out and "Hopper-v5__ppo__s2" in out  # the progress table
    # the same spec again: one line; with --resume: nothing left to run, the tables again
    assert main(["sweep", str(spec)]) == 2
    assert "add --resume" in capsys.readouterr().err
    assert main(["sweep", str(folder), "--resume"]) == 0
    assert "4 trials, 4 done already" in capsys.readouterr().out


def test_a_trial_whose_worker_is_killed_is_retried_and_ends_as_an_uninterrupted_run(tmp_path):
    budget = 1920  # 15 iterations of 128 env steps, a checkpoint after each
    spec = write_spec(
        tmp_path / "kill.yaml",
        out=str(tmp_path / "sweeps"), tasks=["Hopper-v5"], algos=["ncdpo"], seeds=[3],
        set={**SMALL, "total_env_steps": budget}, eval_episodes=0, progress_every=1,
    )  # fmt: skip
    folder = tmp_path / "sweeps" / "kill"
    name = "Hopper-v5__ncdpo__s3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncdpo.cli", "sweep", str(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        t0 = time.time()
        while not (folder / name / "checkpoints" / "iter_000003.safetensors").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() - t0 < 240
            time.sleep(0.05)
        info = json.loads((folder / f"{name}.trial.json").read_text())
        os.kill(info["pid"], signal.SIGKILL)  # the Ray worker running the trial (its training process dies with it)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert json.loads((folder / f"{name}.trial.json").read_text())["attempts"] == 2, out
    log = (folder / f"{name}.log").read_text()
    assert "resum" in log.lower(), log
    # the uninterrupted run, in this process
    assert main(["train", "--algo", "ncdpo", "--env", "Hopper-v5", "--seed", "3", *small_args(),
                 "--total-env-steps", str(budget), "--progress", "false", "--out-dir", str(tmp_path),
                 "--run-name", "ref"]) == 0  # fmt: skip
    assert len(rows(tmp_path / "ref")) == 15
    same_run(tmp_path / "ref", folder / name)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"tasks": ["Hopper-v5"], "sedes": [1]}, "unknown sweep key 'sedes'"),
        ({"tasks": ["Hopper-v5"], "grid": {"ppo.actor_lrr": [1e-4]}}, "'ppo.actor_lrr', which is not a config field"),
        ({"tasks": ["Hopper-v5"], "set": {"ppo.clip_coef": "wide"}}, "ppo.clip_coef"),
        ({"tasks": ["Hopper-v5"], "algos": ["sac"]}, "unknown algo 'sac'"),
        ({"tasks": ["NoSuchEnv-v9"]}, "unknown env id 'NoSuchEnv-v9'"),
        ({"tasks": "Hopper-v5", "grid": {"seed": [1, 2]}}, "cannot set 'seed'"),
    ],
)
def test_bad_sweep_specs_are_one_line(tmp_path, capsys, spec, message):
    path = write_spec(tmp_path / "bad.yaml", out=str(tmp_path / "sweeps"), **spec)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ncdpo: error:") and "\n" not in err and message in err, err
    assert not (tmp_path / "sweeps" / "bad").exists()  # nothing ran, nothing was written


def test_an_unreachable_address_is_one_line(tmp_path, capsys):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = write_spec(tmp_path / "far.yaml", out=str(tmp_path / "sweeps"), tasks=["Hopper-v5"],
                      set={**SMALL, "total_env_steps": 128})  # fmt: skip
    t0 = time.time()
    assert main(["sweep", str(spec), "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err and "\n" not in err, err
    assert time.time() - t0 < 30


def test_the_benchmark_harness_runs_its_jobs_as_ray_tasks(capsys):
    sys.path.insert(0, str(TESTS.parent / "benchmarks"))
    try:
        import _harness as H
    finally:
        sys.path.pop(0)
    H.run_jobs(lambda a, b: f"{a}+{b}={a + b} in pid {os.getpid()}", [(1, 2), (3, 4), (5, 6)], 2)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(" in ")[0] for ln in lines] == ["1+2=3", "3+4=7", "5+6=11"]  # in job order
    assert str(os.getpid()) not in {ln.rsplit(" ", 1)[1] for ln in lines}  # in Ray workers, not here


# ---------------------------------------------------------------------------------------------- env actors
def train(tmp_path, name, vector, budget=768, env="Hopper-v5", extra=()):
    return main(["train", "--algo", "ncdpo", "--env", env, "--seed", "3", *small_args(), "--env.vector", vector,
                 "--total-env-steps", str(budget), "--progress", "false", "--out-dir", str(tmp_path), "--run-name",
                 name, *extra])  # fmt: skip


def test_ray_vector_gives_the_rollouts_of_sync_and_resumes_bitwise(tmp_path):
    assert train(tmp_path, "sync", "sync") == 0
    assert train(tmp_path, "ray", "ray") == 0
    same_run(tmp_path / "sync", tmp_path / "ray")
    # a run stopped at 384 env steps, then continued to 768 from its checkpoint (env states restored in the actors)
    assert train(tmp_path, "split", "ray", budget=384) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--total-env-steps", "768"]) == 0
    same_run(tmp_path / "sync", tmp_path / "split")


def test_ray_vector_gives_the_multi_agent_rows_of_sync(tmp_path):
    pytest.importorskip("mpe2")
    common = ["--algo", "ppo", "--env", "simple_spread", "--total-env-steps", "300", "--env.n-envs", "2",
              "--ppo.n-steps", "50", "--ppo.minibatch-size", "50", "--ppo.update-epochs", "1", "--out-dir",
              str(tmp_path), "--progress", "false", "--tensorboard", "false", "--seed", "3"]  # fmt: skip
    for vector in ("sync", "ray"):
        assert main(["train", *common, "--run-name", vector, "--env.vector", vector]) == 0
    same_run(tmp_path / "sync", tmp_path / "ray")


def test_an_env_that_raises_in_an_actor_is_one_line(tmp_path, capsys):
    assert train(tmp_path, "raise", "ray", env="ray_envs:FaultyHopper-v0") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ncdpo: error: iteration ") and "\n" not in err, err
    assert "env ray_envs:FaultyHopper-v0 (worker 0, seed 3) raised RuntimeError in step: simulator exploded" in err


def test_a_killed_env_actor_is_one_line_and_does_not_hang():
    from ncdpo.envs.registry import make_vec_env

    envs = make_vec_env("Hopper-v5", 2, vector="ray")
    try:
        envs.reset(seed=7)
        act = np.zeros((2, *envs.single_action_space.shape), np.float32)
        envs.step(act)
        os.kill(envs.actor_pids()[1], signal.SIGKILL)
        t0 = time.time()
        with pytest.raises(EnvWorkerError) as e:
            for _ in range(100):
                envs.step(act)
        assert time.time() - t0 < 60
        msg = str(e.value)
        assert msg.startswith("env Hopper-v5 (worker 1, seed 8) died in step: Ray actor lost") and "\n" not in msg
    finally:
        envs.close()
