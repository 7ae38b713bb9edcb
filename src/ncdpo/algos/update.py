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
        self.params = [q for g in optimizer.param_groups for q in g["params"]]
        self.stats: dict[str, list[float]] = {k: [] for k in STATS}
        self.first_ratio_dev = math.nan

    def _value_loss(self, idx: torch.Tensor, store: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.p
        new_v = self.agent.critic_value(self.batch.minibatch_obs(idx), store)
        return losses.value_loss(new_v, self.v_old[idx], self.v_ret[idx], p.clip_coef if p.clip_vloss else None)

    def _step(self, loss: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gn = nn.utils.clip_grad_norm_(self.params, self.p.max_grad_norm)
        check_finite(gn, "gradient norm")
        self.optimizer.step()
        return gn

    def critic_step(self, idx: torch.Tensor) -> None:
        """Critic warm-up: only the value loss is optimised."""
        v_loss = self._value_loss(idx, self.batch.minibatch_store(idx))
        check_finite(v_loss, "value loss")
        self.stats["grad_norm"].append(float(self._step(self.p.vf_coef * v_loss)))
        self.stats["value_loss"].append(float(v_loss.detach()))

    def actor_critic_step(self, idx: torch.Tensor) -> bool:
        """One clipped-PPO step on minibatch ``idx``; False when the approximate KL stops the update first."""
        p, b, agent = self.p, self.batch, self.agent
        store = b.minibatch_store(idx)
        new_logp, entropy = agent.log_prob_entropy(b.minibatch_obs(idx), store)
        adv = b.advantages[idx]
        if p.norm_adv and len(idx) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        scale = agent.advantage_scale(store)
        if scale is not None:
            adv = adv * scale
        pl = clipped_policy_loss(new_logp, b.log_prob[idx], adv, agent.clip_coef(store, p.clip_coef))
        if math.isnan(self.first_ratio_dev):
            self.first_ratio_dev = float((pl.ratio.detach() - 1).abs().max())
        if p.target_kl > 0 and float(pl.approx_kl) > 1.5 * p.target_kl:
            self.stats["approx_kl"].append(float(pl.approx_kl))  # logged: the KL that stopped the update
            return False
        v_loss = self._value_loss(idx, store)
        loss = pl.loss - p.ent_coef * entropy + p.vf_coef * v_loss
        check_finite(pl.loss, "policy loss")
        check_finite(v_loss, "value loss")
        gn = self._step(loss)
        for k, v in (
            ("policy_loss", pl.loss),
            ("value_loss", v_loss),
            ("entropy", entropy),
            ("approx_kl", pl.approx_kl),
            ("clipfrac", pl.clipfrac),
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
