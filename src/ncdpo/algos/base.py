"""The policy-specific part of an on-policy algorithm: the agent contract.

The PPO core (:mod:`ncdpo.algos.update`, :mod:`ncdpo.training.trainer`) only ever talks to an :class:`Agent`:
it asks it to act, stores what the agent returns in the rollout buffer, turns the rollout into a
:class:`~ncdpo.algos.buffer.Batch` of PPO samples (:meth:`Agent.training_samples`) and asks for the
log-probabilities of the stored actions with gradients (:meth:`Agent.log_prob_entropy`). Each algorithm
(NCDPO, DPPO, MLP+PPO) is a small subclass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ncdpo.algos.buffer import Batch
from ncdpo.config import TrainConfig
from ncdpo.envs.spec import EnvSpec
from ncdpo.errors import NcdpoError
from ncdpo.policies.common import Critic, ValueNorm

if TYPE_CHECKING:
    from ncdpo.checkpoint import Checkpoint


@dataclass
class ActOutput:
    """What one call of :meth:`Agent.act` returns for a batch of observations."""

    action: torch.Tensor
    """Executed actions: continuous ones normalised to [-1, 1] (before clipping), (B, act_steps, act_dim);
    discrete ones as indices, (B,)."""
    log_prob: torch.Tensor
    """log pi_old of those actions: (B,) (DPPO: (B, K') one per fine-tuned denoising step)."""
    store: dict[str, torch.Tensor]
    """Everything the update needs to recompute the log-probability (e.g. the chain noise), batch-first."""


class Agent(nn.Module):
    """Actor (algorithm-specific) plus critic (shared)."""

    algo: str = ""
    init_algos: tuple[str, ...] = ()
    """Algorithms whose checkpoints hold a policy this agent can start from with ``--init`` (besides its own)."""
    critic_extra_dim: int = 0
    """Width of the features :meth:`critic_features` appends to the observation (0: the critic is V(s))."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: TrainConfig, spec: EnvSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or EnvSpec(obs_dim, act_dim)
        if (self.spec.obs_dim, self.spec.act_dim) != (obs_dim, act_dim):
            raise ValueError(f"spec {self.spec} does not match obs/act dims ({obs_dim}, {act_dim})")
        self.obs_dim, self.act_dim, self.act_steps = obs_dim, act_dim, cfg.act_steps
        self.discrete = self.spec.discrete
        self.obs_spec = self.spec.obs_spec
        self.aug_pad = cfg.encoder.aug_pad if self.obs_spec is not None and self.obs_spec.image_keys else 0
        if self.obs_spec is None and cfg.critic.privileged:
            raise NcdpoError("critic.privileged applies to dict observations with privileged entries (-image tasks)")
        if self.obs_spec is not None and (self.discrete or self.spec.n_agents > 1):
            raise NcdpoError("dict (camera) observations need a single-agent task with continuous actions")
        self.critic = self.make_critic(cfg, self.critic_extra_dim)
        self.value_norm = ValueNorm() if cfg.ppo.norm_value else None

    def make_critic(self, cfg: TrainConfig, extra_dim: int = 0) -> Critic:
        """A critic of what :meth:`critic_obs` reads plus ``extra_dim`` features (a dict observation: with its own
        encoder)."""
        if self.obs_spec is None:
            critic_in, encoder = self.obs_dim - self.spec.critic_start + extra_dim, None
        else:
            from ncdpo.policies.encoders import critic_encoder

            critic_in, encoder = extra_dim, critic_encoder(self.obs_spec, cfg.encoder, cfg.critic.privileged)
        return Critic(critic_in, cfg.critic.hidden_dims, cfg.critic.activation, encoder)

    def actor_encoder(self, cfg: TrainConfig) -> tuple[nn.Module | None, int]:
        """The actor's encoder for a dict observation and its feature width; ``(None, actor_dim)`` for a vector."""
        if self.obs_spec is None:
            return None, self.spec.actor_dim
        from ncdpo.policies.encoders import actor_encoder

        enc = actor_encoder(self.obs_spec, cfg.encoder)
        return enc, enc.out_dim

    # ---------------------------------------------------------------- what the actor and critic read
    def actor_obs(self, obs: Any) -> Any:
        """The part of a row's observation the actor reads (a multi-agent row: local obs and agent id; a dict
        observation: all of it, its encoder picks the entries)."""
        if isinstance(obs, dict):
            return obs
        return obs if self.spec.actor_dim == obs.shape[-1] else obs[:, : self.spec.actor_dim]

    def critic_obs(self, obs: Any) -> torch.Tensor:
        """What the critic reads (a multi-agent row: agent id and global state; a dict observation: its own
        encoder's features)."""
        if isinstance(obs, dict):
            return self.critic.encode(obs)
        return obs if self.spec.critic_start == 0 else obs[:, self.spec.critic_start :]

    def critic_features(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        """The critic's input for observations and what :meth:`act` stored for them."""
        return self.critic_obs(obs)

    # ---------------------------------------------------------------- acting and scoring
    def act(self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None) -> ActOutput:
        """Sample (or take the mean / most likely) executed action for normalised observations; ``mask``
        (B, n_actions) marks the legal discrete actions (ignored for continuous actions)."""
        raise NotImplementedError

    def log_prob_entropy(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log pi_theta(stored action), entropy)`` with gradients, for the PPO update."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the critic
    def critic_value(self, obs: torch.Tensor, store: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The critic's output for decisions :meth:`act` took (``store``): standardised values when
        ``ppo.norm_value`` (the scale the critic learns in), else the values themselves."""
        if self.critic_extra_dim and store is None:
            raise ValueError(f"the {self.algo} critic conditions on the decision: pass what act() stored")
        return self.critic(self.critic_features(obs, store or {}))

    def value(self, obs: torch.Tensor, store: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Value of the decisions :meth:`act` took (``store``; not needed by a critic of the state alone)."""
        v = self.critic_value(obs, store)
        return v if self.value_norm is None else self.value_norm.denormalize(v)

    def bootstrap_value(self, obs: torch.Tensor) -> torch.Tensor:
        """Value of observations no decision was taken on yet (the rollout's last observation, a truncated
        episode's final one): a critic that conditions on the decision takes one first (it draws noise)."""
        return self.value(obs, self.act(obs).store if self.critic_extra_dim else None)

    # ---------------------------------------------------------------- the PPO samples
    def training_samples(self, batch: Batch) -> Batch:
        """The PPO samples of a flattened rollout: one per decision here; DPPO makes one per denoising step."""
        return batch

    def decision_log_prob(self, obs: Any, store: dict[str, torch.Tensor]) -> torch.Tensor:
        """log pi of the stored decisions, shaped as :meth:`act`'s ``log_prob`` (no gradients needed)."""
        return self.log_prob_entropy(obs, store)[0]

    def decisions_per_minibatch(self, minibatch_size: int) -> int:
        """Decisions in one update minibatch of ``minibatch_size`` samples."""
        return minibatch_size

    @torch.no_grad()
    def augment(self, batch: Batch, chunk: int = 256) -> Batch:
        """Image observations (``encoder.aug_pad`` > 0): one random shift per decision for this update, drawn from
        torch's generator, with log pi_old and V_old recomputed on the shifted images, so that the PPO ratio
        compares old and new policy on the same input (it is 1 on the first minibatch). Otherwise ``batch``.

        The recomputation runs in batches of ``chunk`` decisions, the update's minibatch size: a conv layer's
        result can differ in the last bits between batch sizes, and with a small exploration std such a
        difference would show in the ratio."""
        if not self.aug_pad:
            return batch
        from ncdpo.observations import obs_index, obs_len
        from ncdpo.policies.encoders import shift_images

        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        obs = shift_images(batch.obs, self.obs_spec.image_keys, self.aug_pad, gen)
        n = obs_len(obs)
        logps, values = [], []
        for a in range(0, n, chunk):
            idx = torch.arange(a, min(a + chunk, n), device=batch.log_prob.device)
            o, st = obs_index(obs, idx), batch.minibatch_store(idx)
            logps.append(self.decision_log_prob(o, st))
            values.append(self.value(o, st))
        return replace(batch, obs=obs, log_prob=torch.cat(logps), values=torch.cat(values))

    def minibatch_order(self, n: int, device: torch.device) -> torch.Tensor:
        """The order in which an epoch visits the ``n`` samples (a random permutation)."""
        return torch.randperm(n, device=device)

    def advantage_scale(self, store: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Per-sample factor applied to the (normalised) advantages, or None."""
        return None

    def clip_coef(self, store: dict[str, torch.Tensor], clip: float) -> float | torch.Tensor:
        """PPO clip range of each sample (a float for all by default)."""
        return clip

    @property
    def has_aux_value(self) -> bool:
        """Whether :meth:`aux_value` returns a second critic's output."""
        return False

    def aux_value(self, obs: Any) -> torch.Tensor | None:
        """A second critic's output, trained on the same value targets as :meth:`critic_value` (NCDPO's noise
        policy: V(s) beside a critic that conditions on the chain's mean); None: there is none."""
        return None

    # ---------------------------------------------------------------- training hooks
    noise_target_kl: float = 0.0
    """Factored PPO (a log-probability per factor, the first the noise policy's): stop updating the
    :meth:`noise_parameters` for the rest of an update once the first factor's approximate KL exceeds 1.5x this."""

    def actor_parameters(self) -> list[nn.Parameter]:
        """The parameters the actor's learning rate applies to."""
        return [p for n, p in self.named_parameters() if not n.startswith(_NOT_ACTOR)]

    def critic_parameters(self) -> list[nn.Parameter]:
        """The parameters the critic's learning rate applies to (every critic's)."""
        return [p for n, p in self.named_parameters() if n.startswith(_CRITICS)]

    def noise_parameters(self) -> list[nn.Parameter]:
        """NCDPO's noise policy: its own learning rate and gradient-norm clip (empty for every other agent)."""
        return [p for n, p in self.named_parameters() if n.startswith("noise_policy.")]

    def noise_level_parameters(self) -> list[nn.Parameter]:
        """What serves the noise level (the noise policy and its critic): their gradient norm is clipped apart from
        the rest, so the action level's steps are the same with or without them."""
        return self.noise_parameters()

    def after_step(self) -> None:
        """Called after every optimiser step (to keep bounded parameters in their bounds)."""

    def charts(self) -> dict[str, float]:
        """Extra ``charts/*`` metrics of the agent for the iteration's log row."""
        return {}

    def set_progress(self, frac: float) -> None:
        """Called before each rollout with the fraction of the budget spent (for schedules)."""

    def policy_std(self) -> float:
        """Mean std of the executed-action distribution (logged as charts/policy_std; nan for discrete actions)."""
        raise NotImplementedError

    def load_init(self, ck: Checkpoint, env_id: str) -> None:
        """Start from the policy (and a trained critic) of an ``--init`` checkpoint made for ``env_id``'s shapes."""
        algo = ck.meta.get("algo")
        if algo != self.algo and algo not in self.init_algos:
            raise NcdpoError(f"--init checkpoint {ck.path} holds a '{algo}' policy, not '{self.algo}'")
        check_obs_spec(ck, self.spec, env_id, "--init checkpoint")
        if (ck.obs_dim, ck.act_dim) != (self.obs_dim, self.act_dim):
            raise NcdpoError(
                f"--init checkpoint {ck.path} was made for obs/act dims ({ck.obs_dim}, {ck.act_dim}) "
                f"but {env_id} has ({self.obs_dim}, {self.act_dim})"
            )
        self.check_init(ck)
        policy_state = ck.prefixed("agent.policy")
        own = self.policy.state_dict()
        if "log_sigma_exp" in own and "log_sigma_exp" in policy_state:  # the exploration std comes from this config
            policy_state["log_sigma_exp"] = own["log_sigma_exp"]
        from ncdpo.checkpoint import load_module_state

        load_module_state(self.policy, policy_state, f"checkpoint {ck.path}")
        critic = ck.prefixed("agent.critic")
        if critic and ck.meta.get("critic_trained", True):
            load_module_state(self.critic, critic, f"checkpoint {ck.path} (critic)")

    def check_init(self, ck: Checkpoint) -> None:
        """Refuse an ``--init`` checkpoint whose tensors fit but mean something else (before any is loaded)."""


_CRITICS = ("critic.", "state_critic.")
_NOT_ACTOR = (*_CRITICS, "noise_policy.")


def check_obs_spec(ck: Checkpoint, spec: EnvSpec, env_id: str, what: str = "checkpoint") -> None:
    """Refuse a checkpoint whose policy reads other observation entries (cameras, image sizes) than ``env_id``
    produces, naming the first difference."""
    check_obs_fits(EnvSpec.from_meta(ck.meta), spec, env_id, f"{what} {ck.path}")


def check_obs_fits(saved_spec: EnvSpec, spec: EnvSpec, env_id: str, what: str) -> None:
    """:func:`check_obs_spec` for a policy's spec (``what`` names the policy in the message)."""
    saved = saved_spec.obs_spec
    own = spec.obs_spec
    if saved is None and own is None:
        return
    if saved is None or own is None:
        kind = lambda s: "a flat vector" if s is None else "a dict observation"  # noqa: E731
        raise NcdpoError(f"{what} was made for {kind(saved)} but {env_id} has {kind(own)}")
    a, b = dict((k, s) for k, s, _ in saved.keys), dict((k, s) for k, s, _ in own.keys)
    for k, shape in a.items():
        if k not in b:
            raise NcdpoError(
                f"{what} reads observation entry '{k}' that {env_id} does not produce (it has: "
                f"{', '.join(b)}; set env.cameras to the checkpoint's cameras)"
            )
        if tuple(shape) != tuple(b[k]):
            size = lambda s: "x".join(map(str, s))  # noqa: E731
            raise NcdpoError(
                f"{what} was made for '{k}' of {size(shape)} but {env_id} gives {size(b[k])} (env.image_size)"
            )
    extra = [k for k in b if k not in a]
    if extra:
        raise NcdpoError(f"{what} does not read observation entry '{extra[0]}' that {env_id} produces")


def check_same_prediction(ck: Checkpoint, prediction: str) -> None:
    """Diffusion policies: the same tensors predict the noise in one and the clean chunk in the other."""
    if ck.config.diffusion.prediction != prediction:
        raise NcdpoError(
            f"--init checkpoint {ck.path} predicts '{ck.config.diffusion.prediction}' but this run sets "
            f"diffusion.prediction '{prediction}'; drop the override"
        )


def with_mask(store: dict[str, torch.Tensor], mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``store`` plus the action mask the decision was taken under (so the update scores it the same way)."""
    if mask is not None:
        store["mask"] = mask.bool()
    return store
