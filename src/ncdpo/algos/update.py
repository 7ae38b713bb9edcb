"""The PPO update shared by every algorithm: ``update_epochs`` passes over shuffled minibatches of a batch."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ncdpo.algos import losses
from ncdpo.algos.base import Agent
from ncdpo.algos.buffer import Batch, RolloutBuffer
from ncdpo.algos.losses import check_finite, clipped_policy_loss
from ncdpo.config import PPOConfig, TrainConfig

STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm")
NOISE_STATS = ("noise_policy_loss", "noise_approx_kl", "noise_clipfrac")
"""Factored PPO with NCDPO's noise policy: the noise level's own loss, KL and clip fraction (the action level's are
``policy_loss``, ``approx_kl`` and ``clipfrac``)."""


class _Minibatches:
    """What every minibatch step reads: the agent's samples, the value targets in the critic's scale, the
    optimiser, and the running statistics of the update."""

    def __init__(self, agent: Agent, optimizer: torch.optim.Optimizer, batch: Batch, p: PPOConfig) -> None:
        self.agent, self.optimizer, self.batch, self.p = agent, optimizer, batch, p
        vn = agent.value_norm
        if vn is not None:  # the critic learns standardised returns (its old outputs were standardised the same way)
            vn.update(batch.returns)
        self.v_ret, self.v_old = (
            (batch.returns, batch.values) if vn is None else (vn.normalize(batch.returns), vn.normalize(batch.values))
        )
        # the noise level (NCDPO's noise policy and its critic) is clipped on its own: each level has its own step size
        self.noise_params = agent.noise_parameters()
        self.noise_level = agent.noise_level_parameters()
        level_ids = {id(q) for q in self.noise_level}
        self.params = [q for g in optimizer.param_groups for q in g["params"] if id(q) not in level_ids]
        self.factored = batch.log_prob.dim() > 1
        self.noise_stopped = False  # the noise level's own KL stop (agent.noise_target_kl) fired in this update
        keys = STATS + (NOISE_STATS if self.factored else ()) + (("noise_grad_norm",) if self.noise_level else ())
        keys += ("noise_value_loss",) if agent.has_aux_value else ()
        self._aux_loss: torch.Tensor | None = None
        self.stats: dict[str, list[float]] = {k: [] for k in keys}
        self.first_ratio_dev = math.nan

    def _value_loss(self, idx: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.p
        obs = self.batch.minibatch_obs(idx)
        new_v = self.agent.critic_value(obs, store)
        v_loss = losses.value_loss(new_v, self.v_old[idx], self.v_ret[idx], p.clip_coef if p.clip_vloss else None)
        aux = self.agent.aux_value(obs)  # a second critic (V(s) for the noise policy) learns the same targets
        if aux is not None:
            aux_loss = losses.value_loss(aux, self.v_old[idx], self.v_ret[idx], None)
            check_finite(aux_loss, "value loss of the noise level's critic")
            self.stats["noise_value_loss"].append(float(aux_loss.detach()))
            self._aux_loss = aux_loss
        return v_loss

    def _with_aux(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` plus the second critic's value loss of the same minibatch (if there is one)."""
        aux, self._aux_loss = self._aux_loss, None
        return loss if aux is None else loss + self.p.vf_coef * aux

    def _step(self, loss: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gn = nn.utils.clip_grad_norm_(self.params, self.p.max_grad_norm)
        check_finite(gn, "gradient norm")
        if self.noise_level:
            if self.noise_stopped:
                for q in self.noise_params:
                    q.grad = None  # Adam leaves a parameter without a gradient alone
            gn_noise = nn.utils.clip_grad_norm_(self.noise_level, self.p.max_grad_norm)
            check_finite(gn_noise, "gradient norm of the noise policy")
            self.stats["noise_grad_norm"].append(float(gn_noise))
        self.optimizer.step()
        self.agent.after_step()
        return gn

    def critic_step(self, idx: torch.Tensor) -> None:
        """Critic warm-up: only the value loss is optimised."""
        v_loss = self._value_loss(idx, self.batch.minibatch_store(idx))
        check_finite(v_loss, "value loss")
        self.stats["grad_norm"].append(float(self._step(self._with_aux(self.p.vf_coef * v_loss))))
        self.stats["value_loss"].append(float(v_loss.detach()))

    def actor_critic_step(self, idx: torch.Tensor) -> bool:
        """One clipped-PPO step on minibatch ``idx``; False when the approximate KL stops the update first."""
        p, b, agent = self.p, self.batch, self.agent
        store = b.minibatch_store(idx)
        new_logp, entropy = agent.log_prob_entropy(b.minibatch_obs(idx), store)
        adv = b.advantages[idx]
        if p.norm_adv and len(idx) > 1:
            if adv.dim() > 1:  # factored: each factor's advantages normalised on their own
                adv = (adv - adv.mean(0)) / (adv.std(0) + 1e-8)
            else:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        scale = agent.advantage_scale(store)
        if scale is not None:
            adv = adv * scale
        pl = clipped_policy_loss(new_logp, b.log_prob[idx], adv, agent.clip_coef(store, p.clip_coef))
        if math.isnan(self.first_ratio_dev):
            self.first_ratio_dev = float((pl.ratio.detach() - 1).abs().max())
        # factored: ppo.target_kl watches the last factor (the action given the noise) and stops both levels
        kl = pl.approx_kl[-1] if self.factored else pl.approx_kl
        if p.target_kl > 0 and float(kl) > 1.5 * p.target_kl:
            self.stats["approx_kl"].append(float(kl))  # logged: the KL that stopped the update
            return False
        policy_loss = pl.loss
        if self.factored:
            noise_kl = float(pl.approx_kl[0])
            if agent.noise_target_kl > 0 and noise_kl > 1.5 * agent.noise_target_kl:
                self.noise_stopped = True
            if self.noise_stopped:  # the action level alone from here on
                policy_loss = pl.factor_losses[-1]
            for k, v in zip(NOISE_STATS, (pl.factor_losses[0].detach(), noise_kl, pl.clipfrac[0])):
                self.stats[k].append(float(v))
        v_loss = self._value_loss(idx, store)
        loss = policy_loss - p.ent_coef * entropy + p.vf_coef * v_loss
        check_finite(pl.loss, "policy loss")
        check_finite(v_loss, "value loss")
        gn = self._step(self._with_aux(loss))
        last = (lambda x: x[-1]) if self.factored else (lambda x: x)  # noqa: E731
        for k, v in (
            ("policy_loss", last(pl.factor_losses) if self.factored else pl.loss),
            ("value_loss", v_loss),
            ("entropy", entropy),
            ("approx_kl", kl),
            ("clipfrac", last(pl.clipfrac)),
            ("grad_norm", gn),
        ):
            self.stats[k].append(float(v.detach()) if torch.is_tensor(v) else float(v))
        return True


def ppo_update(
    agent: Agent,
    optimizer: torch.optim.Optimizer,
    buf: RolloutBuffer,
    adv: torch.Tensor,
    returns: torch.Tensor,
    cfg: TrainConfig,
    train_actor: bool = True,
) -> dict[str, float]:
    """``update_epochs`` passes of clipped PPO over shuffled minibatches of the flattened rollout.

    With ``train_actor=False`` (critic warm-up) only the value loss is optimised. Returns the ``losses/*``
    metrics of the update.
    """
    p = cfg.ppo
    batch = agent.training_samples(
        agent.augment(buf.batch(adv, returns), agent.decisions_per_minibatch(p.minibatch_size))
    )
    mb = _Minibatches(agent, optimizer, batch, p)
    B, epochs_done = len(batch), 0
    for _epoch in range(p.update_epochs):
        perm = agent.minibatch_order(B, batch.log_prob.device)
        stop = False
        for start in range(0, B, p.minibatch_size):
            idx = perm[start : start + p.minibatch_size]
            if not train_actor:
                mb.critic_step(idx)
            elif not mb.actor_critic_step(idx):
                stop = True
                break
        epochs_done += 1
        if stop:
            break
    out = {f"losses/{k}": (float(np.mean(v)) if v else math.nan) for k, v in mb.stats.items()}
    var_y = float(batch.returns.var())
    out["losses/explained_variance"] = (
        math.nan if var_y == 0 else 1.0 - float((batch.returns - batch.values).var()) / var_y
    )
    out["losses/first_minibatch_ratio_dev"] = mb.first_ratio_dev
    out["losses/epochs"] = float(epochs_done)
    return out
