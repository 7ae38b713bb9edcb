"""Franka Kitchen tasks (D4RL's three, on gymnasium-robotics' FrankaKitchen-v1): observation layout, reward per
subtask counted once, success ends the episode, snapshots and bitwise resume."""

from __future__ import annotations

import csv

import mujoco
import numpy as np
import pytest

from ncdpo.cli import main
from ncdpo.envs.kitchen import TASKS, KitchenEnv, element_goals, element_indices, goal_vector


def solve(env: KitchenEnv, name: str) -> None:
    """Put subtask ``name`` at its goal in the simulator (what a demonstrator's motions achieve)."""
    m, d = env.sim
    d.qpos[element_indices()[name]] = element_goals()[name]
    mujoco.mj_forward(m, d)


def test_observation_is_robot_objects_goal_in_d4rl_order():
    env = KitchenEnv("kitchen-mixed")
    obs, info = env.reset(seed=0)
    _, d = env.sim
    assert obs.shape == (60,) and obs.dtype == np.float32 and env.observation_space.shape == (60,)
    np.testing.assert_allclose(obs[:9], d.qpos[:9], atol=0.01)  # robot joints (with the env's observation noise)
    np.testing.assert_allclose(obs[9:30], d.qpos[9:30], atol=0.01)  # the kitchen's 21 joint positions
    goal = obs[30:]
    np.testing.assert_array_equal(goal, goal_vector(TASKS["kitchen-mixed"]))
    idx = element_indices()
    assert goal[idx["bottom burner"]].tolist() == pytest.approx([-0.88, -0.01])  # mixed's third subtask
    assert not goal[idx["slide cabinet"]].any()  # complete's, not mixed's
    assert info == {"is_success": False, "completion": 0.0, "completed": []}
    assert env.action_space.shape == (9,) and env.horizon == 280


def test_reward_counts_each_subtask_once_and_success_terminates():
    env = KitchenEnv("kitchen-complete")
    env.reset(seed=1)
    zero = np.zeros(9, np.float32)
    _, r, term, trunc, info = env.step(zero)
    assert (r, term, trunc, info["completion"]) == (0.0, False, False, 0.0)
    solve(env, "microwave")
    _, r, term, _, info = env.step(zero)
    assert r == 1.0 and not term and info["completed"] == ["microwave"] and info["completion"] == 0.25
    _, r, _, _, info = env.step(zero)  # still open: not counted again
    assert r == 0.0 and info["completion"] == 0.25
    solve(env, "hinge cabinet")  # not one of this task's four: no reward
    _, r, _, _, info = env.step(zero)
    assert r == 0.0 and info["completed"] == ["microwave"]
    for name in ("kettle", "light switch"):
        solve(env, name)
    _, r, term, _, info = env.step(zero)
    assert r == 2.0 and not term and not info["is_success"] and info["completion"] == 0.75
    solve(env, "slide cabinet")
    _, r, term, trunc, info = env.step(zero)
    assert r == 1.0 and term and not trunc and info["is_success"] and info["completion"] == 1.0
    assert info["completed"] == ["microwave", "kettle", "light switch", "slide cabinet"]


def test_time_limit_truncates_and_tasks_are_registered():
    from ncdpo.envs.registry import TASKS as REGISTRY

    env = KitchenEnv("kitchen-partial", max_episode_steps=3)
    env.reset(seed=0)
    ends = [env.step(np.zeros(9))[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]
    assert {"kitchen-complete", "kitchen-partial", "kitchen-mixed"} <= set(REGISTRY)
    with pytest.raises(Exception, match="unknown kitchen task"):
        KitchenEnv("kitchen-everything")


def test_snapshot_restores_the_episode_exactly():
    from ncdpo.envs.snapshot import set_stack_state, stack_state

    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (30, 9))
    a = KitchenEnv("kitchen-complete")
    a.reset(seed=3)
    for x in acts[:10]:
        a.step(x)
    solve(a, "microwave")
    st = stack_state(a)
    ref = [a.step(x) for x in acts[10:]]
    b = KitchenEnv("kitchen-complete")
    b.reset(seed=99)
    set_stack_state(b, st)
    got = [b.step(x) for x in acts[10:]]
    for (o1, r1, t1, u1, i1), (o2, r2, t2, u2, i2) in zip(ref, got):
        np.testing.assert_array_equal(o1, o2)
        assert (r1, t1, u1, i1) == (r2, t2, u2, i2)


def test_kitchen_run_interrupted_and_resumed_is_bitwise_identical(tmp_path):
    """SIGINT to a run on subprocess kitchen envs, then --resume: the same progress.csv and weights as a run that
    was never stopped."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from ncdpo.checkpoint import load_checkpoint

    def args(name):
        return [
            "train", "--algo", "ncdpo", "--env", "kitchen-complete", "--total-env-steps", "384", "--env.n-envs", "2",
            "--horizon", "4", "--act-steps", "4", "--ppo.n-steps", "8", "--ppo.minibatch-size", "8",
            "--ppo.update-epochs", "1", "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "32",
            "--critic.hidden-dims", "32", "32", "--env.max-episode-steps", "40", "--save-every", "1",
            "--keep-checkpoints", "0", "--out-dir", str(tmp_path), "--run-name", name, "--progress", "false",
            "--tensorboard", "false", "--torch-threads", "1", "--eval-every", "3", "--eval-episodes", "2"
        ]  # fmt: skip

    def rows(name):
        with open(tmp_path / name / "progress.csv") as f:
            skip = {"wall_s", "charts/SPS", "perf/rollout_s", "perf/update_s", "perf/peak_mem_mb"}
            return [{k: v for k, v in r.items() if k not in skip} for r in csv.DictReader(f)]

    assert main(args("ref")) == 0
    proc = subprocess.Popen([sys.executable, "-m", "ncdpo.cli", *args("run")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    ck = tmp_path / "run" / "checkpoints" / "iter_000002.safetensors"
    t0 = time.time()
    while not ck.exists():
        assert proc.poll() is None and time.time() - t0 < 240
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert len(rows("run")) == len(rows("ref")) == 6
    assert rows("run") == rows("ref")
    ref = rows("ref")
    done = [float(r["charts/completion_rate"]) for r in ref if r["charts/completion_rate"] not in ("", "nan")]
    assert done and all(0 <= v <= 1 for v in done)  # the training episodes' completion, where any ended
    assert ref[0]["eval/completion_rate"] in ("", "nan") and 0 <= float(ref[2]["eval/completion_rate"]) <= 1
    import json

    out = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "ref"), "--episodes", "2", "--n-envs", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert 0 <= res["completion_rate"] <= 1 and 0 <= res["success_rate"] <= 1
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "final.safetensors").tensors
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.safetensors").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- demonstrators
def test_the_demonstrator_solves_kitchen_complete_and_each_subtask_on_a_fixed_seed():
    from ncdpo.envs.kitchen import SUBTASKS
    from ncdpo.envs.kitchen_demos import run_episode

    env = KitchenEnv("kitchen-complete")
    r = run_episode(env, 0, list(TASKS["kitchen-complete"]), noise=0.05, offset=0.01, skill="better")
    assert r["success"] and r["terminated"] and r["completion"] == 1.0 and len(r["actions"]) < 280
    assert r["rewards"].sum() == 4.0 and r["actions"].shape[1] == 9 and np.abs(r["actions"]).max() <= 1.0
    for name in SUBTASKS:  # the clean expert, each subtask alone from the reset state
        r = run_episode(env, 1, [name], noise=0.0, offset=0.0, skill="okay")
        assert r["subtasks_done"] == {name: True}, name


def test_demos_command_builds_d4rl_style_kitchen_datasets(tmp_path, capsys):
    from ncdpo.data.dataset import load_dataset
    from ncdpo.envs.kitchen_demos import sequences

    rng = np.random.default_rng(0)
    goal = set(TASKS["kitchen-mixed"])
    assert all(len(s) == 4 and not goal <= set(s) for s in sequences("kitchen-mixed", 30, rng))
    partial = sequences("kitchen-partial", 9, rng)
    assert partial[0] == list(TASKS["kitchen-partial"]) and sum(s == partial[0] for s in partial) == 3
    assert all(s == list(TASKS["kitchen-complete"]) for s in sequences("kitchen-complete", 3, rng))
    out = tmp_path / "mixed.hdf5"
    assert main(["demos", "kitchen-mixed", "--episodes", "2", "--out", str(out), "--skill", "better"]) == 0
    assert "kitchen-mixed, 2 episodes" in capsys.readouterr().out
    ds = load_dataset(out)
    assert ds.env_id == "kitchen-mixed" and ds.obs_dim == 60 and ds.act_dim == 9 and len(ds.episodes) == 2
    assert not any(ds.meta["successes"]) and all(e.truncated for e in ds.episodes)  # no episode does all four
    assert [len(e) for e in ds.episodes] == [len(e.rewards) for e in ds.episodes]
    assert main(["demos", "kitchen-nothing", "--episodes", "1", "--out", str(tmp_path / "x.hdf5")]) == 2


def test_minari_d4rl_kitchen_layout_is_imported_as_the_task(tmp_path, monkeypatch, capsys):
    """A dataset in Minari's D4RL/kitchen layout (dict observations of FrankaKitchen-v1, no termination, completed
    subtasks kept, a reward that counts them every step), built locally: converted to the task's observation, reward
    and episode end, and trained on through the CLI."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from ncdpo.data.dataset import load_dataset
    from ncdpo.envs.kitchen import _kitchen_module

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    _kitchen_module()
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    goal = list(TASKS["kitchen-complete"])
    env = gym.make("FrankaKitchen-v1", tasks_to_complete=goal, remove_task_when_completed=False,
                   terminate_on_tasks_completed=False, max_episode_steps=40)  # fmt: skip

    def stack(rows):
        return {k: stack([r[k] for r in rows]) for k in rows[0]} if isinstance(rows[0], dict) else np.asarray(rows)

    buffers = []
    for ep, solved in enumerate((["microwave"], goal)):
        o, _ = env.reset(seed=ep)
        rows, acts, rews, terms, truncs = [o], [], [], [], []
        for t in range(40):
            if t == 10:
                u = env.unwrapped
                for name in solved:
                    u.data.qpos[element_indices()[name]] = element_goals()[name]
                mujoco.mj_forward(u.model, u.data)
            a = np.zeros(9)
            o, r, term, trunc, _ = env.step(a)
            rows.append(o), acts.append(a), rews.append(r), terms.append(term), truncs.append(trunc)
        arrays = {"actions": acts, "rewards": rews, "terminations": terms, "truncations": truncs}
        buffers.append(EpisodeBuffer(id=ep, observations=stack(rows), **{k: np.asarray(v) for k, v in arrays.items()}))
    assert sum(buffers[0].rewards) > 1  # Minari's reward counts the completed subtasks on every step
    minari.create_dataset_from_buffers("D4RL/kitchen/complete-v2", buffers, env=env, algorithm_name="scripted")
    ds = load_dataset("minari:D4RL/kitchen/complete-v2")
    assert ds.env_id == "kitchen-complete" and ds.obs_dim == 60 and ds.act_dim == 9
    a, b = ds.episodes
    assert len(a) == 40 and a.truncated and a.rewards.sum() == 1.0 and a.rewards[10] == 1.0  # once, when first done
    assert len(b) == 11 and not b.truncated and b.dones[-1] and b.rewards.sum() == 4.0  # ends where all four are done
    np.testing.assert_array_equal(a.obs[:, 30:], np.tile(goal_vector(TASKS["kitchen-complete"]), (40, 1)))
    with pytest.raises(Exception, match="has the goal"):
        from ncdpo.data.options import ReadOptions

        load_dataset("minari:D4RL/kitchen/complete-v2", ReadOptions(env_id="kitchen-mixed"))
    small = ["--horizon", "4", "--act-steps", "4", "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "32",
             "--pretrain.steps", "4", "--pretrain.batch-size", "8", "--progress", "false", "--tensorboard", "false",
             "--eval-every", "0", "--out-dir", str(tmp_path)]  # fmt: skip
    assert main(["pretrain", "--dataset", "minari:D4RL/kitchen/complete-v2", "--run-name", "bc", *small]) == 0


def test_shipped_kitchen_policy_evaluates_and_its_dataset_is_rebuilt_not_shipped(capsys):
    import json

    import ncdpo.shipped as shipped
    from ncdpo.data.dataset import load_dataset
    from ncdpo.errors import NcdpoError

    assert "kitchen-complete" in shipped.available()
    summary = json.loads((shipped.asset_dir("kitchen-complete") / "summary.json").read_text())
    assert summary["demos"]["episodes"] == 200 and 0 <= summary["bc"]["completion_rate_deterministic"] <= 1
    assert main(["eval", "shipped:kitchen-complete", "--episodes", "2", "--n-envs", "2"]) == 0
    out = capsys.readouterr().out
    assert "kitchen-complete ncdpo" in out and "completion rate" in out
    with pytest.raises(NcdpoError, match="not shipped .*make_kitchen_data.py --tasks kitchen-complete"):
        load_dataset("shipped:kitchen-complete")
