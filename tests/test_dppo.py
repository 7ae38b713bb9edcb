"""The DPPO baseline: per-step PPO samples over the last K' denoising steps of the shared diffusion policy."""

import math

import numpy as np
import pytest
import torch

from ncdpo.algos import load_agent
from ncdpo.algos.buffer import Batch
from ncdpo.algos.dppo import DPPOAgent
from ncdpo.cli import build_parser, main, resolve_train_config
from ncdpo.config import TrainConfig, apply_overrides
from ncdpo.training.trainer import Trainer


def agent_for(**over):
    cfg = apply_overrides(
        TrainConfig(),
        {
            "algo": "dppo",
            "horizon": 4,
            "act_steps": 2,
            "diffusion.denoising_steps": 6,
            "diffusion.hidden_dim": 32,
            "dppo.ft_denoising_steps": 3,
            **over,
        },
    )
    torch.manual_seed(0)
    return DPPOAgent(11, 3, cfg), cfg


def test_clip_and_advantage_schedules_follow_dppo():
    agent, cfg = agent_for(**{"ppo.clip_coef": 0.01, "dppo.clip_coef_base": 0.001, "dppo.gamma_denoise": 0.9})
    clip = agent.step_clip
    assert clip[0] == pytest.approx(0.001) and clip[-1] == pytest.approx(0.01) and bool((clip[1:] > clip[:-1]).all())
    np.testing.assert_allclose(agent.adv_scale.numpy(), [0.81, 0.9, 1.0], rtol=1e-6)
    # every sampling step is floored at 0.1 (the DDPM last step would be 0); log-prob std floored too
    assert float(agent.sample_std.min()) >= 0.1 - 1e-7 and float(agent.logprob_std.min()) >= 0.1 - 1e-7


def test_stored_step_log_probs_are_recomputed_exactly_and_only_fine_tuned_steps_get_gradients():
    agent, cfg = agent_for()
    obs = torch.randn(8, 11)
    out = agent.act(obs)
    assert out.log_prob.shape == (8, 3) and out.store["chain"].shape == (8, 4, 12)
    assert float(out.action.abs().max()) <= 1.0
    seen_t = []
    hook = agent.policy.denoiser.register_forward_hook(lambda m, inp, o: seen_t.append(inp[1].clone()))
    b = agent.training_samples(Batch(obs, out.log_prob, torch.ones(8), torch.ones(8), torch.ones(8), out.store))
    o, lp, samples = b.minibatch_obs(torch.arange(len(b))), b.log_prob, b.store  # each sample's observation
    assert o.shape[0] == 24 and samples["k"].tolist()[:6] == [0, 1, 2, 0, 1, 2]
    new_lp, _ = agent.log_prob_entropy(o, samples)
    hook.remove()
    torch.testing.assert_close(new_lp, lp, rtol=0, atol=1e-5)  # ratio == 1 before any update
    # the fine-tuned denoiser is only ever asked about the last K' = 3 chain steps (t = 2, 1, 0 of K = 6)
    assert set(torch.cat(seen_t).tolist()) == {2, 1, 0}
    new_lp.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.policy.denoiser.parameters() if p.dim() > 1)
    assert all(p.grad is None and not p.requires_grad for p in agent.base.parameters())
    assert {id(p) for p in agent.actor_parameters()} == {id(p) for p in agent.policy.denoiser.parameters()}


def test_finetuning_from_a_pretrained_checkpoint_keeps_the_frozen_steps(tmp_path, tiny_args):
    """--init a behaviour-cloned (ncdpo) checkpoint with --algo dppo: both copies start from it; training
    moves the fine-tuned copy only; eval reloads both exactly."""
    assert main(tiny_args("ncdpo", steps=128, name="bc")) == 0
    pre, _, _ = load_agent(tmp_path / "bc")
    args, extra = build_parser().parse_known_args(
        tiny_args("dppo", steps=384, name="ft", extra=["--init", str(tmp_path / "bc")])
    )
    tr = Trainer(resolve_train_config(args, extra))
    ref = pre.policy.denoiser.state_dict()
    for k, v in tr.agent.base.state_dict().items():
        assert torch.equal(v, ref[k])
    tr.run()
    assert all(torch.equal(v, ref[k]) for k, v in tr.agent.base.state_dict().items())
    assert any(not torch.equal(v, ref[k]) for k, v in tr.agent.policy.denoiser.state_dict().items())
    agent, _, ck = load_agent(tmp_path / "ft")
    assert ck.meta["algo"] == "dppo"
    for k, v in agent.base.state_dict().items():
        assert torch.equal(v, ref[k])
    obs = torch.randn(4, 11)
    torch.manual_seed(1)
    a1 = tr.agent.act(obs, deterministic=True)
    torch.manual_seed(1)
    a2 = agent.act(obs, deterministic=True)
    assert torch.equal(a1.action, a2.action)
    assert math.isfinite(float(a1.log_prob.sum()))


@pytest.mark.parametrize("config, algo", [("finetune_locomotion.yaml", "ncdpo"), ("dppo_locomotion.yaml", "dppo")])
def test_shipped_configs_resolve_against_the_shipped_checkpoint(config, algo):
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "configs" / config
    args, extra = build_parser().parse_known_args(["train", "--init", "shipped:Hopper-v5", "--config", str(path)])
    cfg = resolve_train_config(args, extra)
    assert cfg.algo == algo and cfg.env.id == "Hopper-v5" and cfg.horizon == 4 and cfg.env.update_obs_norm is False
    if algo == "dppo":
        assert (cfg.ppo.clip_coef, cfg.dppo.clip_coef_base, cfg.dppo.ft_denoising_steps) == (0.01, 0.001, 10)
    else:
        assert cfg.critic.condition_on_mean and cfg.diffusion.sigma_exp == "learnable"
