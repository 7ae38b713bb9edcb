"""Discrete actions and multi-agent PPO: the discrete diffusion policy (ratio == 1, gradient through every
denoising step, masked actions never sampled), the categorical MLP, value normalisation, the agent-row view
of a multi-agent vector env (env steps and episodes counted once per env), and training, evaluation and
resume on mpe2's simple_spread."""

import csv
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ncdpo.algos import load_agent, make_agent
from ncdpo.cli import main
from ncdpo.config import DiffusionConfig, GaussianConfig, TrainConfig
from ncdpo.envs import registry
from ncdpo.envs.multiagent import Backend, MultiAgentEnv
from ncdpo.envs.registry import Task, env_spec, make_vec_env
from ncdpo.envs.spec import EnvSpec
from ncdpo.policies.categorical import CategoricalPolicy, DiscreteDiffusionPolicy
from ncdpo.policies.common import ValueNorm

pytest.importorskip("mpe2")


def diffusion(K=6, n_actions=5, obs_dim=7, **kw):
    torch.manual_seed(0)
    return DiscreteDiffusionPolicy(obs_dim, n_actions, DiffusionConfig(denoising_steps=K, hidden_dim=32, **kw))


def test_discrete_diffusion_log_prob_is_recomputed_exactly():
    pol = diffusion()
    obs = torch.randn(64, 7)
    a, noise, logp, logits = pol.act(obs)
    assert a.shape == (64,) and a.dtype == torch.long and noise.shape == (64, pol.n_chain, 1, 5)
    assert logits.abs().max() <= pol.cfg.logit_scale + 1e-5  # the chain's output is clipped to [-1, 1]
    new, ent = pol.log_prob_entropy(obs, noise, a)
    assert torch.equal(new, logp)  # ratio == 1 on the first minibatch, exactly
    for idx in (slice(0, 10), slice(10, 64)):  # and under any split into minibatches, to float precision
        part, _ = pol.log_prob_entropy(obs[idx], noise[idx], a[idx])
        torch.testing.assert_close(part, logp[idx], rtol=0, atol=1e-6)
    assert 0 < float(ent.detach()) <= np.log(5) + 1e-6
    # deterministic: the most likely action under the same chain noise
    torch.manual_seed(5)
    ad, nd, _, lg = pol.act(obs, deterministic=True)
    assert torch.equal(ad, lg.argmax(-1))


def test_discrete_diffusion_gradient_reaches_every_denoising_step():
    pol = diffusion(K=5, denoised_clip=0.0)
    obs = torch.randn(32, 7)
    a, noise, _, _ = pol.act(obs)
    noise.requires_grad_(True)
    m, latents = pol.chain_mean(obs, noise, return_latents=True)
    for x in latents[1:]:
        x.retain_grad()
    from ncdpo.policies.categorical import categorical_log_prob

    categorical_log_prob(pol.cfg.logit_scale * m[:, 0], a).mean().backward()
    assert noise.grad is not None and noise.grad.abs().sum() > 0
    for j, x in enumerate(latents[1:], start=1):
        assert x.grad is not None and x.grad.abs().sum() > 0, f"no gradient at chain step {j}"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pol.denoiser.parameters())


def test_x0_prediction_starts_with_noise_independent_logits():
    """Why ``diffusion.prediction x0`` exists for training from scratch: a randomly initialised epsilon-predicting
    chain passes its noise through to the logits (each noise draw picks its own random action), an x0-predicting
    one starts near a noise-independent, near-uniform policy, as an MLP does."""
    obs = torch.randn(16, 7).repeat_interleave(64, 0)
    spread, entropy = {}, {}
    for pred in ("epsilon", "x0"):
        pol = diffusion(K=5, n_actions=9, prediction=pred)
        lg = pol.logits(obs, pol.sample_noise(obs.shape[0], torch.Generator().manual_seed(0))).detach().view(16, 64, 9)
        spread[pred] = float(lg.std(1).mean())  # across chain noises, same state
        entropy[pred] = float(-(lg.softmax(-1) * lg.log_softmax(-1)).sum(-1).mean())
    assert spread["epsilon"] > 10 * spread["x0"]
    assert entropy["x0"] > 0.9 * np.log(9) > entropy["epsilon"]


@pytest.mark.parametrize("kind", ["diffusion", "mlp"])
def test_masked_actions_are_never_sampled(kind):
    torch.manual_seed(1)
    n = 6
    pol = diffusion(n_actions=n) if kind == "diffusion" else CategoricalPolicy(7, n, GaussianConfig(hidden_dims=(16,)))
    obs = torch.randn(2000, 7)
    mask = torch.rand(2000, n) < 0.4
    mask[torch.arange(2000), torch.randint(0, n, (2000,))] = True  # at least one legal action per row
    for det in (False, True):
        out = pol.act(obs, det, mask=mask)
        a, logp = out[0], out[-2] if kind == "diffusion" else out[1]
        assert mask[torch.arange(2000), a].all(), "an illegal action was chosen"
        assert torch.isfinite(logp).all()
    # an illegal action has probability 0 and the legal ones sum to 1
    if kind == "mlp":
        lg = pol.logits(obs, mask)
    else:
        lg = pol.logits(obs, pol.sample_noise(2000), mask)
    p = torch.softmax(lg, -1)
    assert float(p[~mask].detach().max()) == 0.0
    torch.testing.assert_close(p.sum(-1), torch.ones(2000))


def test_value_norm_round_trip_and_statistics():
    vn = ValueNorm()
    x = torch.randn(10_000, dtype=torch.float32) * 30 + 100
    vn.update(x[:4000])
    vn.update(x[4000:])
    assert abs(float(vn.mean) - float(x.double().mean())) < 1e-6
    assert abs(float(vn.var) - float(x.double().var(unbiased=False))) < 1e-3
    torch.testing.assert_close(vn.denormalize(vn.normalize(x)), x)
    assert abs(float(vn.normalize(x).mean())) < 1e-4 and abs(float(vn.normalize(x).std()) - 1) < 1e-3
    assert set(dict(vn.named_buffers())) == {"mean", "var", "count"}  # saved with the agent


def test_agent_rows_count_env_steps_and_episodes_once_per_env():
    envs = make_vec_env("simple_spread", 2, vector="sync")
    try:
        spec = env_spec(envs)
        assert spec == EnvSpec(75, 5, discrete=True, n_agents=3, actor_dim=21, critic_start=18)
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (6, 75)
        # rows hold the one-hot agent id after the local obs, then the same global state for each agent of an env
        np.testing.assert_array_equal(obs[:3, 18:21], np.eye(3))
        np.testing.assert_array_equal(obs[0, 21:], obs[2, 21:])
        assert not np.array_equal(obs[0, 21:], obs[3, 21:])
        rng = np.random.default_rng(0)
        steps, agent_sums = 0, np.zeros(6)
        for t in range(25):
            obs, r, term, trunc, info = envs.step(rng.integers(0, 5, 6))
            steps += int(info["env_steps"].sum())
            agent_sums += r
        assert steps == 50  # 25 steps of 2 envs, not of 6 rows
        assert trunc.all() and not term.any()  # simple_spread ends by the 25-step limit only
        ep = info["final_info"]["episode"]
        assert list(np.nonzero(ep["_r"])[0]) == [0, 3] and list(ep["l"][[0, 3]]) == [25, 25]
        # the team return is the mean over agents of each agent's return
        np.testing.assert_allclose(ep["r"][[0, 3]], agent_sums.reshape(2, 3).mean(1))
        assert info["final_obs"][4].shape == (75,)
    finally:
        envs.close()


# ---------------------------------------------------------------------------------------------- training


def ma_args(tmp_path, algo, name, steps=150, extra=()):
    return [
        "train", "--algo", algo, "--env", "simple_spread", "--total-env-steps", str(steps), "--env.n-envs", "2",
        "--ppo.n-steps", "25", "--ppo.minibatch-size", "50", "--ppo.update-epochs", "2",
        "--diffusion.denoising-steps", "4", "--diffusion.hidden-dim", "32", "--critic.hidden-dims", "32", "32",
        "--gaussian.hidden-dims", "16", "--out-dir", str(tmp_path), "--run-name", name, "--progress", "false",
        "--tensorboard", "false", "--seed", "3", "--save-every", "1", "--torch-threads", "1", *extra
    ]


def read_rows(run):
    timing = {"wall_s", "charts/SPS", "perf/rollout_s", "perf/update_s", "perf/peak_mem_mb"}
    with open(Path(run) / "progress.csv") as f:
        return [{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(f)]


@pytest.mark.parametrize("algo", ["ncdpo", "ppo"])
def test_simple_spread_trains_evaluates_and_resumes_bitwise(tmp_path, algo):
    assert main(ma_args(tmp_path, algo, "ref", extra=["--eval-every", "3", "--eval-episodes", "2"])) == 0
    log = read_rows(tmp_path / "ref")
    assert [int(r["env_steps"]) for r in log] == [50, 100, 150]
    assert all(int(r["charts/episodes"]) == 2 for r in log)  # one 25-step episode per env per iteration
    assert all(float(r["losses/first_minibatch_ratio_dev"]) < 1e-5 for r in log)
    assert np.isfinite(float(log[-1]["eval/return_mean"]))
    # the checkpoint rebuilds the same multi-agent agent (spec, value normaliser) and evaluates like training did
    agent, obs_norm, ck = load_agent(tmp_path / "ref" / "checkpoints" / "final.safetensors")
    assert agent.spec.n_agents == 3 and agent.discrete and agent.value_norm is not None
    assert float(agent.value_norm.count) > 1
    res = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "ref"), "--episodes", "2", "--seed", str(3 + 100_000), "--json", str(res)]) == 0
    assert json.loads(res.read_text())["return_mean"] == pytest.approx(float(log[-1]["eval/return_mean"]), abs=1e-9)
    # a run stopped after 2 iterations and continued is the same run, bit for bit (env snapshots included)
    assert main(ma_args(tmp_path, algo, "part", steps=100, extra=["--eval-every", "3", "--eval-episodes", "2"])) == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--total-env-steps", "150", "--progress", "false"]) == 0
    train_only = lambda rows: [{k: v for k, v in r.items() if not k.startswith("eval/")} for r in rows]  # noqa: E731
    assert train_only(read_rows(tmp_path / "part")) == train_only(log)  # ("part" also evaluated at its first end)
    wa = load_agent(tmp_path / "ref" / "checkpoints" / "final.safetensors")[0].state_dict()
    wb = load_agent(tmp_path / "part" / "checkpoints" / "final.safetensors")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dppo_and_chunked_discrete_runs_are_refused(tmp_path, capsys):
    assert main(ma_args(tmp_path, "dppo", "d", extra=["--dppo.ft-denoising-steps", "2"])) != 0
    assert main(ma_args(tmp_path, "ncdpo", "h", extra=["--horizon", "4", "--act-steps", "2"])) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any("dppo supports single-agent tasks with continuous actions only" in e for e in err)
    assert any("discrete actions: act_steps and horizon must be 1" in e for e in err)


# ---------------------------------------------------------------------------------------------- action masks


class MaskedChoice(Backend):
    """2 agents, 4 actions, a random set of legal actions each step; an illegal action is an error."""

    n_agents, n_actions, local_dim, state_dim, max_steps = 2, 4, 4, 2, 10

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def _mask(self) -> np.ndarray:
        m = self.rng.random((2, 4)) < 0.5
        m[np.arange(2), self.rng.integers(0, 4, 2)] = True
        self.mask = m
        return m

    def reset(self, seed):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        m = self._mask()
        return m.astype(np.float32), np.zeros(2, np.float32), m

    def step(self, actions):
        if not self.mask[np.arange(2), actions].all():
            raise AssertionError(f"illegal action {actions} under mask {self.mask}")
        r = (actions == 0).astype(np.float64)  # action 0, when legal, pays
        m = self._mask()
        return m.astype(np.float32), np.zeros(2, np.float32), r, False, False, np.nan, m

    def get_state(self):
        return {"rng": self.rng.bit_generator.state, "mask": self.mask}

    def set_state(self, st):
        self.rng.bit_generator.state = st["rng"]
        self.mask = np.asarray(st["mask"], bool)


@pytest.fixture
def masked_task(monkeypatch):
    monkeypatch.setitem(
        registry.TASKS,
        "masked_choice",
        Task(
            "masked_choice",
            "test task with action masks",
            lambda **kw: MultiAgentEnv(MaskedChoice(), **kw),
            multi_agent=True,
        ),
    )
    return "masked_choice"


@pytest.mark.parametrize("algo", ["ncdpo", "ppo"])
def test_training_and_evaluation_respect_action_masks(tmp_path, masked_task, algo):
    # the env raises on any illegal action, through rollouts (with autoreset), the update and evaluation
    args = ma_args(tmp_path, algo, "m", steps=60, extra=["--eval-every", "3", "--eval-episodes", "3"])
    args[args.index("simple_spread")] = masked_task
    args[args.index("--ppo.n-steps") + 1] = "10"
    assert main(args) == 0
    log = read_rows(tmp_path / "m")
    assert len(log) == 3 and all(float(r["losses/first_minibatch_ratio_dev"]) < 1e-5 for r in log)


def test_cartpole_discrete_single_agent_runs(tmp_path):
    args = [
        "train", "--algo", "ncdpo", "--env", "CartPole-v1", "--total-env-steps", "256", "--env.n-envs", "2",
        "--ppo.n-steps", "64", "--ppo.minibatch-size", "32", "--ppo.update-epochs", "1",
        "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "16", "--out-dir", str(tmp_path), "--run-name",
        "c", "--progress", "false", "--tensorboard", "false"
    ]
    assert main(args) == 0
    agent, _, _ = load_agent(tmp_path / "c" / "checkpoints" / "final.safetensors")
    assert agent.discrete and agent.spec == EnvSpec(4, 2, discrete=True)
    cfg = TrainConfig()
    assert isinstance(make_agent(cfg, 4, 2, EnvSpec(4, 2, discrete=True)).policy, DiscreteDiffusionPolicy)
    assert isinstance(gym.make("CartPole-v1").action_space, gym.spaces.Discrete)


# ---------------------------------------------------------------------------------------------- Google Research
# Football


def test_grf_same_seed_same_game():
    """gfootball plays a first game when it is constructed, seeded from Python's global ``random``, and that
    seed used to fix the engine's team processing order for the env's lifetime: the same seed then gave
    different games in different processes. The games must depend on the reset seed alone."""
    pytest.importorskip("gfootball")
    import random

    from ncdpo.envs.registry import make_env

    games = []
    for py_seed in (0, 1, 2, 3):
        random.seed(py_seed)
        env = make_env("grf-3v1")
        try:
            obs, _ = env.reset(seed=7)
            rng, frames = np.random.default_rng(0), [obs]
            for _ in range(60):
                obs, _, term, trunc, _ = env.step(rng.integers(0, 19, 3))
                frames.append(obs)
                if term or trunc:
                    frames.append(env.reset()[0])
        finally:
            env.close()
        games.append(np.stack(frames))
    for g in games[1:]:
        np.testing.assert_array_equal(games[0], g)


def test_grf_academy_rows_episodes_and_snapshot():
    pytest.importorskip("gfootball")
    from ncdpo.envs.registry import make_env

    env = make_env("grf-3v1")
    try:
        obs, _ = env.reset(seed=4)
        assert obs.shape == (3, 115 + 3 + 115) and env.unwrapped.spec_rows.n_agents == 3
        rng = np.random.default_rng(0)
        for _ in range(5):
            env.step(rng.integers(0, 19, 3))
        # the checkpoint-reward wrapper's collected rings are part of the snapshot
        ckpt = env.unwrapped.backend.env
        while type(ckpt).__name__ != "CheckpointRewardWrapper":
            ckpt = ckpt.env
        ckpt._collected_checkpoints = {0: 3, 1: 1}
        snap = env.unwrapped.ncdpo_state()
        acts = [rng.integers(0, 19, 3) for _ in range(20)]
        a = [env.step(x)[:2] for x in acts]
        ckpt._collected_checkpoints = {}
        env.unwrapped.ncdpo_set_state(snap)
        assert ckpt._collected_checkpoints == {0: 3, 1: 1}
        b = [env.step(x)[:2] for x in acts]
        for (oa, ra), (ob, rb) in zip(a, b):  # a restored game continues identically, rewards included
            np.testing.assert_array_equal(oa, ob)
            assert ra == rb
        done, n = False, 0
        while not done:
            _, _, term, trunc, info = env.step(rng.integers(0, 19, 3))
            done, n = term or trunc, n + 1
        assert info["episode"]["l"] <= 400 and "is_success" in info  # a time-limit end counts as a loss
        # a game restored one step before its end ends on that step (gfootball's own step count is restored)
        env.reset(seed=5)
        done = False
        while not done:
            snap, act = env.unwrapped.ncdpo_state(), rng.integers(0, 19, 3)
            _, r_end, term, trunc, _ = env.step(act)
            done = term or trunc
        env.reset(seed=6)
        env.unwrapped.ncdpo_set_state(snap)
        _, r, term2, trunc2, _ = env.step(act)
        assert (term2, trunc2) == (term, trunc) and r == r_end
    finally:
        env.close()
