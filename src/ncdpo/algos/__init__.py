"""Algorithms: one shared PPO core (:mod:`~ncdpo.algos.losses`, :mod:`~ncdpo.algos.buffer`,
:mod:`~ncdpo.algos.update`) and a small agent per algorithm (:mod:`~ncdpo.algos.ncdpo`, :mod:`~ncdpo.algos.dppo`,
:mod:`~ncdpo.algos.ppo`) on the contract of :mod:`~ncdpo.algos.base`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ncdpo.algos.base import ActOutput, Agent
from ncdpo.algos.buffer import Batch, RolloutBuffer
from ncdpo.algos.dppo import DPPOAgent
from ncdpo.algos.ncdpo import NCDPOAgent
from ncdpo.algos.ppo import PPOAgent
from ncdpo.config import TrainConfig
from ncdpo.envs.spec import EnvSpec

if TYPE_CHECKING:
    from ncdpo.checkpoint import Checkpoint
    from ncdpo.policies.common import ObsNormalizer

AGENTS: dict[str, type[Agent]] = {"ncdpo": NCDPOAgent, "ppo": PPOAgent, "dppo": DPPOAgent}


def make_agent(cfg: TrainConfig, obs_dim: int, act_dim: int, spec: EnvSpec | None = None) -> Agent:
    """Build the agent of ``cfg.algo`` for an env with the given dimensions (``spec``: discrete actions,
    multi-agent rows; default a single agent with continuous actions)."""
    return AGENTS[cfg.algo](obs_dim, act_dim, cfg, spec)


def load_agent(path: str | Path, device: str = "cpu") -> tuple[Agent, ObsNormalizer, Checkpoint]:
    """Rebuild exactly the agent and observation normaliser a checkpoint was saved from (in eval mode)."""
    from ncdpo.checkpoint import load_checkpoint, load_module_state
    from ncdpo.errors import NcdpoError
    from ncdpo.policies.common import make_obs_normalizer
    from ncdpo.training.run import resolve_device

    ck = load_checkpoint(path)
    cfg = ck.config
    spec = EnvSpec.from_meta(ck.meta)
    agent = make_agent(cfg, ck.obs_dim, ck.act_dim, spec)
    state = ck.prefixed("agent")
    if ck.meta.get("critic_omitted"):  # an exported BC policy: its untrained critic was left out
        state.update({f"critic.{k}": v for k, v in agent.critic.state_dict().items()})
    load_module_state(agent, state, f"checkpoint {ck.path}")
    obs_norm = make_obs_normalizer(spec, cfg.env.norm_obs, cfg.env.clip_obs)
    try:
        obs_norm.rms.load(ck.tensors, "obs_rms")
    except (KeyError, ValueError) as e:
        raise NcdpoError(f"checkpoint {ck.path} holds no usable observation statistics ({e})") from None
    return agent.to(resolve_device(device)).eval(), obs_norm, ck


__all__ = [
    "AGENTS",
    "ActOutput",
    "Agent",
    "Batch",
    "DPPOAgent",
    "NCDPOAgent",
    "PPOAgent",
    "RolloutBuffer",
    "load_agent",
    "make_agent",
]
