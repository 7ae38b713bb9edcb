"""NCDPO: PPO on the noise-conditioned diffusion policy, back-propagating through every denoising step.

docs/METHOD.md section 2. Acting draws the whole chain noise ``xi``; the buffer stores it with the executed
action; the update recomputes ``m_theta(s, xi)`` through all K denoising steps and scores the stored
action under ``N(m_theta(s, xi), sigma_exp^2 I)`` (continuous actions) or ``softmax(logit_scale * m_theta(s, xi))``
(discrete actions).

With ``noise_policy.enabled`` (an extension beyond the paper, METHOD section 6) the noise is drawn by a learned
:class:`~ncdpo.policies.noise.NoisePolicy` and PPO's action is ``(xi, a)``:
``log pi(xi, a | s) = log N(xi_c; mu_psi(s), sigma_psi^2) + log pi_theta(a | s, xi)``. ``ratio: factored`` keeps the
two terms apart as two levels of one decision, each with its own ratio, clip and advantage: the noise level's
advantage is ``R - V(s)`` (the lambda-return minus a critic of the state alone), the action level's is plain
NCDPO's (the run's critic, e.g. ``V(s, m)``). With the noise policy frozen at ``N(0, I)`` it is plain NCDPO.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from ncdpo.algos.base import ActOutput, Agent, check_same_prediction, with_mask
from ncdpo.algos.buffer import Batch
from ncdpo.config import TrainConfig
from ncdpo.envs.spec import EnvSpec
from ncdpo.policies.categorical import DiscreteDiffusionPolicy
from ncdpo.policies.common import Critic
from ncdpo.policies.diffusion import DiffusionPolicy
from ncdpo.policies.noise import NoisePolicy


class NCDPOAgent(Agent):
    algo = "ncdpo"
    init_algos = ("dppo",)

    def __init__(self, obs_dim: int, act_dim: int, cfg: TrainConfig, spec: EnvSpec | None = None) -> None:
        if (
            cfg.critic.condition_on_mean
        ):  # the critic sees the executed part of m_theta_old(s, xi) (discrete: the logits)
            self.critic_extra_dim = cfg.act_steps * act_dim
        super().__init__(obs_dim, act_dim, cfg, spec)
        if self.discrete:
            self.policy: DiffusionPolicy = DiscreteDiffusionPolicy(self.spec.actor_dim, act_dim, cfg.diffusion)
            feat_dim = self.spec.actor_dim
        else:
            encoder, feat_dim = self.actor_encoder(cfg)
            self.policy = DiffusionPolicy(feat_dim, act_dim, cfg.horizon, cfg.act_steps, cfg.diffusion, encoder)
        self.noise_policy: NoisePolicy | None = None
        """The learned noise policy psi (``noise_policy.enabled``), or None: xi ~ N(0, I)."""
        self.state_critic: Critic | None = None
        """V(s) for the noise level's advantage when the run's critic conditions on the chain's mean."""
        self.factored = False
        self.noise_mean = False
        """Act with the noise policy's mean ``mu_psi(s)`` instead of a draw (``ncdpo eval --noise-mean``)."""
        self._noise_mu_abs = math.nan
        n = cfg.noise_policy
        if n.enabled:
            self.factored = n.ratio == "factored"
            self.noise_target_kl = n.target_kl if self.factored else 0.0
            self._noise_clip = n.clip_coef
            # built on the side of the run's random stream: with psi frozen, the run is plain NCDPO's bit for bit
            with torch.random.fork_rng(devices=[]):
                step_shape = (self.policy.horizon, self.policy.act_dim)
                self.noise_policy = NoisePolicy(feat_dim, self.policy.n_chain, step_shape, n)
                if self.critic_extra_dim:
                    self.state_critic = self.make_critic(cfg)

    # ---------------------------------------------------------------- acting and scoring
    def act(self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None) -> ActOutput:
        if self.noise_policy is not None:
            return self._act_steered(obs, deterministic, mask)
        if self.discrete:
            action, noise, log_prob, mean = self.policy.act(self.actor_obs(obs), deterministic, mask=mask)
        else:
            action, noise, log_prob, mean = self.policy.act(self.actor_obs(obs), deterministic, return_mean=True)
        return ActOutput(action, log_prob, self._store(noise, action, mean, mask))

    @torch.no_grad()
    def _act_steered(self, obs: Any, deterministic: bool, mask: torch.Tensor | None) -> ActOutput:
        """Acting with the noise policy: the covered noise drawn from N(mu_psi(s), sigma_psi^2), then the chain."""
        feat = self.policy.encode(self.actor_obs(obs))
        eps = self.policy.sample_noise(feat.shape[0])
        c = self.noise_policy.n_covered
        xi_c = self.noise_policy.draw(feat, eps[:, :c], self.noise_mean)
        noise = xi_c if c == eps.shape[1] else torch.cat([xi_c, eps[:, c:]], 1)
        if self.discrete:
            action, noise, log_prob, mean = self.policy.act_given(feat, noise, deterministic, mask=mask)
        else:
            action, noise, log_prob, mean = self.policy.act_given(feat, noise, deterministic, return_mean=True)
        return ActOutput(
            action,
            self._joint(self.noise_policy.log_prob(feat, xi_c), log_prob),
            self._store(noise, action, mean, mask),
        )

    def _store(self, noise: torch.Tensor, action: torch.Tensor, mean: torch.Tensor, mask: Any) -> dict:
        store = with_mask({"noise": noise, "action": action}, mask if self.discrete else None)
        if self.critic_extra_dim:
            store["mean"] = mean
        return store

    def _joint(self, lp_noise: torch.Tensor, lp_action: torch.Tensor) -> torch.Tensor:
        """Factored: (B, 2), the noise level's log-probability then the action's; joint: their sum (B,)."""
        return torch.stack([lp_noise, lp_action], -1) if self.factored else lp_noise + lp_action

    def critic_features(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.critic_extra_dim:
            return self.critic_obs(obs)
        return torch.cat([self.critic_obs(obs), store["mean"].flatten(1)], dim=-1)

    def log_prob_entropy(self, obs: torch.Tensor, store: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.noise_policy is not None:
            feat = self.policy.encode(self.actor_obs(obs))
            noise = store["noise"]
            if self.discrete:
                lp, ent = self.policy.log_prob_entropy(feat, noise, store["action"], store.get("mask"))
            else:
                lp, ent = self.policy.log_prob_features(feat, noise, store["action"]), self.policy.entropy()
            lp_noise = self.noise_policy.log_prob(feat, noise[:, : self.noise_policy.n_covered])
            return self._joint(lp_noise, lp), ent
        if self.discrete:
            return self.policy.log_prob_entropy(self.actor_obs(obs), store["noise"], store["action"], store.get("mask"))
        return self.policy.log_prob(self.actor_obs(obs), store["noise"], store["action"]), self.policy.entropy()

    # ---------------------------------------------------------------- the noise policy's PPO samples
    @property
    def has_aux_value(self) -> bool:
        return self.state_critic is not None

    def aux_value(self, obs: Any) -> torch.Tensor | None:
        return None if self.state_critic is None else self.state_critic(self.state_critic.encode(obs))

    @torch.no_grad()
    def _state_values(self, obs: Any, chunk: int = 4096) -> torch.Tensor:
        from ncdpo.observations import obs_index, obs_len

        n, dev = obs_len(obs), self.state_critic.net[0].weight.device
        rows = [torch.arange(a, min(a + chunk, n), device=dev) for a in range(0, n, chunk)]
        v = torch.cat([self.aux_value(obs_index(obs, r)) for r in rows])
        return v if self.value_norm is None else self.value_norm.denormalize(v)

    def training_samples(self, batch: Batch) -> Batch:
        """With the noise policy: the advantages of its level, ``R - V(s)`` (the lambda-return minus the state
        critic; the run's own advantage when its critic is already V(s)), beside the action level's (factored:
        (B, 2)); otherwise the batch as it is."""
        if self.noise_policy is None:
            return batch
        from ncdpo.observations import obs_index, obs_len

        adv_noise = batch.advantages if self.state_critic is None else batch.returns - self._state_values(batch.obs)
        with torch.no_grad():  # how far the noise policy's mean has moved from 0 (logged as charts/noise_mean_abs)
            first = obs_index(batch.obs, torch.arange(min(obs_len(batch.obs), 1024), device=batch.log_prob.device))
            self._noise_mu_abs = float(self.noise_policy.mean(self.policy.encode(self.actor_obs(first))).abs().mean())
        adv = torch.stack([adv_noise, batch.advantages], -1) if self.factored else adv_noise
        return replace(batch, advantages=adv)

    def clip_coef(self, store: dict[str, torch.Tensor], clip: float) -> float | torch.Tensor:
        if not self.factored:
            return clip
        return torch.tensor([self._noise_clip, clip], device=store["noise"].device)

    # ---------------------------------------------------------------- training hooks
    def noise_level_parameters(self) -> list[torch.nn.Parameter]:
        extra = [] if self.state_critic is None else list(self.state_critic.parameters())
        return self.noise_parameters() + extra

    def after_step(self) -> None:
        if self.noise_policy is not None:
            self.noise_policy.project_()

    def charts(self) -> dict[str, float]:
        if self.noise_policy is None:
            return {}
        return {
            "charts/noise_std": float(self.noise_policy.std().detach().mean()),
            "charts/noise_mean_abs": self._noise_mu_abs,
        }

    def load_init(self, ck: Any, env_id: str) -> None:
        super().load_init(ck, env_id)
        from ncdpo.checkpoint import load_module_state

        if self.noise_policy is not None and ck.prefixed("agent.noise_policy"):
            load_module_state(self.noise_policy, ck.prefixed("agent.noise_policy"), f"checkpoint {ck.path} (noise)")
            if self.state_critic is not None and ck.prefixed("agent.state_critic"):
                load_module_state(self.state_critic, ck.prefixed("agent.state_critic"), f"checkpoint {ck.path}")

    def check_init(self, ck: Any) -> None:
        check_same_prediction(ck, self.policy.cfg.prediction)

    def set_progress(self, frac: float) -> None:
        self.policy.set_progress(frac)

    def policy_std(self) -> float:
        return math.nan if self.discrete else float(self.policy.sigma_exp().detach().mean())
