"""Manipulation tasks on robosuite: construction and observation layout, success semantics (success ends the
episode), scripted demonstrators and their datasets, subprocess vector envs and their snapshots, and a short
real training run. Skipped where robosuite is not installed (the README's install includes it)."""

import csv
import json

import numpy as np
import pytest

from ncdpo.envs.manipulation import robosuite_available

pytestmark = pytest.mark.skipif(not robosuite_available(), reason="robosuite is not installed")

LAYOUTS = {"lift": (19, 7, 10), "can": (23, 7, 14), "square": (23, 7, 14), "transport": (59, 14, 41)}


@pytest.fixture(scope="module")
def lift():
    from ncdpo.envs.manipulation import RobosuiteEnv

    env = RobosuiteEnv("lift")
    yield env
    env.close()


@pytest.mark.parametrize("task", ["lift", "can", "square", "transport"])
def test_task_construction_and_observation_layout(task):
    from ncdpo.envs.registry import make_env

    obs_dim, act_dim, obj_dim = LAYOUTS[task]
    env = make_env(task, act_steps=1)
    inner = env.unwrapped
    try:
        assert env.observation_space.shape == (obs_dim,)
        assert inner.action_space.shape == (act_dim,)
        assert np.all(inner.action_space.low == -1) and np.all(inner.action_space.high == 1)
        names = [n for n, _ in inner.obs_layout]
        arms = act_dim // 7
        expected = [f"robot{i}_{k}" for i in range(arms) for k in ("eef_pos", "eef_quat", "gripper_qpos")] + [
            "object-state"
        ]
        assert names == expected
        obs, info = env.reset(seed=4)
        raw = inner.last_raw_obs
        assert obs.shape == (obs_dim,) and obs.dtype == np.float32 and info["is_success"] is False
        for name, sl in inner.obs_layout:  # the flat observation is exactly these raw pieces, in order
            np.testing.assert_array_equal(obs[sl], np.asarray(raw[name], np.float32).reshape(-1))
        assert inner.obs_layout[-1][1].stop - inner.obs_layout[-1][1].start == obj_dim
        assert inner.horizon == {"lift": 300, "can": 300, "square": 400, "transport": 800}[task]
    finally:
        env.close()


def test_reset_seed_fixes_the_scene(lift):
    a, _ = lift.reset(seed=11)
    b, _ = lift.reset(seed=11)
    c, _ = lift.reset(seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[9:12], c[9:12])  # the cube is placed elsewhere


def test_success_terminates_the_episode_and_is_reported(lift):
    from ncdpo.envs.demonstrators import Demonstrator

    lift.reset(seed=0)
    demo = Demonstrator(lift, np.random.default_rng(0), noise=0.0, offset=0.0, mistake=0.0)
    steps = []
    while True:
        _, r, term, trunc, info = lift.step(demo.act())
        steps.append((r, term, trunc, info["is_success"], bool(lift.env._check_success())))
        if term or trunc:
            break
    r, term, trunc, success, solved = steps[-1]
    assert term and not trunc and success and solved and r == 1.0  # success ends the episode, sparse reward 1
    assert len(steps) < lift.horizon
    for r, term, trunc, success, solved in steps[:-1]:  # before it: never solved, never reported, reward 0
        assert (r, term, trunc, success, solved) == (0.0, False, False, False, False)


def test_time_limit_truncates_without_success():
    from ncdpo.envs.manipulation import RobosuiteEnv

    env = RobosuiteEnv("lift", max_episode_steps=5)
    try:
        env.reset(seed=0)
        for t in range(5):
            _, r, term, trunc, info = env.step(np.zeros(7, np.float32))
            assert r == 0.0 and not term and info["is_success"] is False
            assert trunc == (t == 4)
    finally:
        env.close()


def test_dense_reward_pays_for_finishing_early():
    from ncdpo.envs.demonstrators import run_episode
    from ncdpo.envs.manipulation import RobosuiteEnv

    env = RobosuiteEnv("lift", reward="dense")
    try:
        ep = run_episode(env, seed=0, noise=0.0, offset=0.0)
        assert ep["success"]
        steps_left = env.horizon - len(ep["actions"])
        assert ep["rewards"][-1] >= steps_left  # the success step carries the rest of the episode's reward
        assert np.all((ep["rewards"][:-1] >= 0) & (ep["rewards"][:-1] <= 1))
        assert ep["rewards"][:-1].max() > 0  # shaped: reaching and grasping already pay
    finally:
        env.close()


@pytest.mark.parametrize("task,seed", [("lift", 1), ("can", 3), ("square", 4)])
def test_clean_demonstrator_succeeds_on_a_fixed_seed(task, seed):
    from ncdpo.envs.demonstrators import run_episode
    from ncdpo.envs.manipulation import RobosuiteEnv

    env = RobosuiteEnv(task)
    try:
        ep = run_episode(env, seed=seed, noise=0.0, offset=0.0)
        assert ep["success"] and ep["terminated"], f"{task} demonstrator failed on seed {seed}"
    finally:
        env.close()


def test_transport_demonstrator_hands_the_hammer_over_on_a_fixed_seed():
    """Both arms' scripts run to the end: lid off, trash into the trash bin, hammer handed over and dropped
    into the target bin; success ends the episode well before the 800-step limit."""
    from ncdpo.envs.demonstrators import Demonstrator, run_episode
    from ncdpo.envs.manipulation import RobosuiteEnv

    env = RobosuiteEnv("transport")
    try:
        ep = run_episode(env, seed=1, noise=0.0, offset=0.0)
        assert ep["success"] and ep["terminated"] and len(ep["actions"]) < 700
        assert ep["actions"].shape[1] == 14 and np.abs(ep["actions"]).max() <= 1.0
        obs = env.last_raw_obs
        assert bool(obs["payload_in_target_bin"]) and bool(obs["trash_in_trash_bin"])
        env.reset(seed=1)
        demo = Demonstrator(env, np.random.default_rng(1), noise=0.0, offset=0.0, mistake=0.0)
        assert [p[-1].name for p in demo.plans] == ["retreat", "retreat"]
    finally:
        env.close()


def test_a_demonstrator_mistake_fails_the_episode(lift):
    from ncdpo.envs.demonstrators import run_episode

    ep = run_episode(lift, seed=1, noise=0.0, offset=0.0, mistake=1.0)  # closes the gripper above the cube
    assert ep["slip"] == "early" and not ep["success"] and not ep["terminated"]
    assert len(ep["actions"]) == lift.horizon


def test_demonstration_dataset_shapes_and_round_trip(tmp_path):
    from ncdpo.data.dataset import load_dataset
    from ncdpo.envs.demonstrators import collect_demos

    ds = collect_demos("lift", episodes=3, noise=0.1, offset=0.01, seed=5)
    path = ds.save(tmp_path / "lift.hdf5")
    back = load_dataset(path)
    assert back.env_id == "lift" and len(back.episodes) == 3
    assert back.meta["successes"] == ds.meta["successes"] and len(back.meta["skills"]) == len(back.meta["slips"]) == 3
    for e, ok in zip(back.episodes, back.meta["successes"]):
        T = len(e)
        assert e.obs.shape == (T, 19) and e.actions.shape == (T, 7) and e.rewards.shape == (T,)
        assert np.all(np.abs(e.actions) <= 1.0)
        assert bool(e.dones[-1]) == ok and not e.dones[:-1].any()  # success, and only success, terminates
        assert e.truncated == (not ok) and (ok or T == 300)
    # the data do not depend on how many worker processes made them
    again = collect_demos("lift", episodes=3, noise=0.1, offset=0.01, seed=5, workers=2)
    for a, b in zip(ds.episodes, again.episodes):
        np.testing.assert_array_equal(a.actions, b.actions)


@pytest.mark.parametrize(
    "task,obs_dim,act_dim", [("lift", 19, 7), ("can", 23, 7), ("square", 23, 7), ("transport", 59, 14)]
)
def test_shipped_manipulation_assets(task, obs_dim, act_dim):
    from ncdpo.checkpoint import load_checkpoint
    from ncdpo.data.dataset import load_dataset
    from ncdpo.shipped import asset_dir, available

    assert task in available()
    ds = load_dataset(f"shipped:{task}")
    summary = json.loads((asset_dir(task) / "summary.json").read_text())
    assert ds.env_id == task and ds.obs_dim == obs_dim and ds.act_dim == act_dim
    assert len(ds.episodes) == summary["demos"]["episodes"] and ds.n_transitions == summary["demos"]["transitions"]
    assert np.mean(ds.meta["successes"]) == pytest.approx(summary["demos"]["success_rate"])
    ck = load_checkpoint(f"shipped:{task}")
    assert (ck.meta["env_id"], ck.obs_dim, ck.act_dim) == (task, obs_dim, act_dim)


def test_demos_cli_errors(tmp_path, capsys):
    from ncdpo.cli import main

    assert main(["demos", "Hopper-v5", "--out", str(tmp_path / "s.hdf5")]) == 2
    assert "no scripted demonstrator for task 'Hopper-v5'" in capsys.readouterr().err
    assert main(["demos", "lift", "--out", str(tmp_path / "s.hdf5"), "--skill", "expert"]) == 2
    assert "--skill must be one of" in capsys.readouterr().err
    assert not (tmp_path / "s.hdf5").exists()


def test_subprocess_vector_env_snapshot_is_bitwise():
    from ncdpo.envs.registry import make_vec_env
    from ncdpo.envs.snapshot import env_state, set_env_state

    rng = np.random.default_rng(0)
    acts = [rng.uniform(-1, 1, (2, 4, 7)).astype(np.float32) for _ in range(8)]
    envs = make_vec_env("can", 2, act_steps=4)
    assert type(envs).__name__ == "AsyncVectorEnv"
    envs.reset(seed=3)
    for a in acts[:4]:
        envs.step(a)
    st = env_state(envs)
    ref = [envs.step(a) for a in acts[4:]]
    envs.close()
    other = make_vec_env("can", 2, act_steps=4)
    other.reset(seed=99)
    set_env_state(other, st)
    got = [other.step(a) for a in acts[4:]]
    other.close()
    for (o1, r1, *_), (o2, r2, *_) in zip(ref, got):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)


def test_training_on_lift_logs_success_and_eval_reports_it(tmp_path, capsys):
    from ncdpo.cli import main

    argv = [
        "train", "--algo", "ncdpo", "--env", "lift", "--total-env-steps", "256", "--env.n-envs", "2", "--horizon",
        "4", "--act-steps", "4", "--ppo.n-steps", "16", "--ppo.minibatch-size", "16", "--ppo.update-epochs", "1",
        "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "32", "--critic.hidden-dims", "32", "32",
        "--eval-every", "2", "--eval-episodes", "2", "--env.max-episode-steps", "40", "--out-dir", str(tmp_path),
        "--run-name", "r", "--progress", "false", "--tensorboard", "false"
    ]
    assert main(argv) == 0
    with open(tmp_path / "r" / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and "charts/success_rate" in rows[0] and "eval/success_rate" in rows[0]
    assert rows[-1]["eval/success_rate"] != ""
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["env"]["id"] == "lift" and cfg["env"]["vector"] == "auto"
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r"), "--episodes", "2", "--n-envs", "2", "--sampled"]) == 0
    out = capsys.readouterr().out
    assert "success rate 0.00" in out and "(sampled)" in out


def test_lift_training_interrupted_and_resumed_is_bitwise_identical(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, subprocess envs included) stops a run on robosuite envs with a
    checkpoint; --resume then reproduces the uninterrupted run bit for bit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from ncdpo.checkpoint import load_checkpoint
    from ncdpo.cli import main

    def args(name):
        return [
            "train", "--algo", "ncdpo", "--env", "lift", "--total-env-steps", "384", "--env.n-envs", "2", "--horizon",
            "4", "--act-steps", "4", "--ppo.n-steps", "8", "--ppo.minibatch-size", "8", "--ppo.update-epochs", "1",
            "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "32", "--critic.hidden-dims", "32", "32",
            "--env.max-episode-steps", "40", "--save-every", "1", "--keep-checkpoints", "0", "--out-dir",
            str(tmp_path), "--run-name", name, "--progress", "false", "--tensorboard", "false", "--torch-threads",
            "1"
        ]

    def rows(name):
        with open(tmp_path / name / "progress.csv") as f:
            skip = {"wall_s", "charts/SPS", "perf/rollout_s", "perf/update_s", "perf/peak_mem_mb"}
            return [{k: v for k, v in r.items() if k not in skip} for r in csv.DictReader(f)]

    assert main(args("ref")) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncdpo.cli", *args("run")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ck = tmp_path / "run" / "checkpoints" / "iter_000002.safetensors"
    t0 = time.time()
    while not ck.exists():
        assert proc.poll() is None and time.time() - t0 < 240
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert not (tmp_path / "run" / "checkpoints" / "final.safetensors").exists()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert len(rows("run")) == len(rows("ref")) == 6
    assert rows("run") == rows("ref")
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "final.safetensors").tensors
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.safetensors").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
