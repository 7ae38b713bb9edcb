"""The public Python API: ``ncdpo.load_policy`` (raw observations in, env-ready actions out) and
``ncdpo.train`` / ``ncdpo.pretrain``; the README's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import ncdpo
from ncdpo.algos import load_agent
from ncdpo.training.evaluation import evaluate

README = Path(__file__).resolve().parents[1] / "README.md"


def episode(policy: ncdpo.Policy, seed: int, steps: int) -> float:
    env = gym.make(policy.env_id, max_episode_steps=steps)
    obs, _ = env.reset(seed=seed)
    policy.reset()
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, _ = env.step(policy.act(obs))
        total += float(r)
        done = term or trunc
    env.close()
    return total


@pytest.mark.parametrize("deterministic", [True, False])
def test_policy_act_reproduces_ncdpo_eval(deterministic):
    """Same checkpoint, seed and episode: the Policy's queued chunks, bounds and noise give ncdpo eval's return."""
    agent, obs_norm, ck = load_agent("shipped:Hopper-v5")
    ref = evaluate(
        agent, obs_norm, "Hopper-v5", 1, ck.config.act_steps, deterministic, seed=11, max_episode_steps=150, max_envs=1
    )
    torch.manual_seed(0)
    before = torch.get_rng_state()
    policy = ncdpo.load_policy("shipped:Hopper-v5", deterministic=deterministic, seed=11)
    assert episode(policy, 11, 150) == pytest.approx(ref["return_mean"], rel=1e-9)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone


def test_policy_queues_the_chunk_and_decides_per_batch(monkeypatch):
    policy = ncdpo.load_policy("shipped:Hopper-v5")
    assert policy.act_steps == 4 and policy.action_low.shape == (3,)
    calls = []
    orig = policy.agent.act
    monkeypatch.setattr(policy.agent, "act", lambda *a, **k: calls.append(1) or orig(*a, **k))
    obs = np.random.default_rng(0).normal(size=(5, 11))
    actions = [policy.act(obs) for _ in range(6)]
    assert len(calls) == 2 and actions[0].shape == (5, 3) and actions[0].dtype == np.float32
    assert all((a >= policy.action_low).all() and (a <= policy.action_high).all() for a in actions)
    policy.reset()
    policy.act(obs)
    assert len(calls) == 3
    with pytest.raises(ncdpo.NcdpoError, match="takes observations of 11 numbers"):
        policy.act(np.zeros(4))


def test_train_and_load_a_discrete_policy_from_python(tmp_path):
    quiet = {"out_dir": str(tmp_path), "progress": False, "tensorboard": False}
    run = ncdpo.train(env="CartPole-v1", algo="ppo", total_env_steps=256, env__n_envs=2, ppo__n_steps=64, run_name="cp",
                      **quiet)
    assert (run / "checkpoints" / "final.safetensors").is_file()
    policy = ncdpo.load_policy(run)
    a = policy.act(np.zeros(4, np.float32))
    assert isinstance(a.item(), int) and 0 <= a < 2
    assert ncdpo.resolve(ncdpo.TrainConfig(), ppo__gamma=0.5).ppo.gamma == 0.5
    with pytest.raises(ncdpo.NcdpoError, match="unknown config key"):
        ncdpo.resolve(env="CartPole-v1", ppo__gama=0.5)


def test_pretrain_from_python(tmp_path):
    bc = {"pretrain__steps": 20, "pretrain__log_every": 10, "diffusion__hidden_dim": 32}
    run = ncdpo.pretrain(dataset="shipped:Hopper-v5", horizon=4, act_steps=4, out_dir=str(tmp_path), run_name="bc",
                         progress=False, tensorboard=False, **bc)
    policy = ncdpo.load_policy(run)
    assert policy.checkpoint.meta["kind"] == "pretrain" and policy.act(np.zeros(11)).shape == (3,)


def readme_examples() -> list[str]:
    text = README.read_text()
    return re.findall(r"<!-- test: python -->\s*```python\n(.*?)```", text, re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    examples = readme_examples()
    assert examples, "the README has no tested Python example"
    monkeypatch.chdir(tmp_path)
    for code in examples:
        assert len(code.strip().splitlines()) <= 12
        exec(compile(code, "README.md", "exec"), {})
    assert "return" in capsys.readouterr().out


def test_a_trained_checkpoint_carries_its_action_bounds(tmp_path, tiny_args):
    """``load_policy`` maps onto the bounds the run saved, without making the env."""
    from ncdpo.cli import main

    assert main(tiny_args("ppo", steps=128, name="b")) == 0
    policy = ncdpo.load_policy(tmp_path / "b")
    env = gym.make("Hopper-v5")
    assert policy.checkpoint.meta["action_bounds"] == [env.action_space.low.tolist(), env.action_space.high.tolist()]
    np.testing.assert_array_equal(policy.action_low, env.action_space.low)
