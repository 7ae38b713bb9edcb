"""DPPO (Ren et al., ICLR 2025): the denoising chain is itself an MDP, PPO runs over its steps.

docs/METHOD.md section 3. The same :class:`DiffusionPolicy` (and checkpoints) as NCDPO. The last K' chain steps
are fine-tuned, the earlier ones run a frozen copy of the pre-trained denoiser. When sampling, every step is
a Gaussian whose std is floored at ``min_sampling_std`` (the exploration), and the buffer stores the chain of
latents through the fine-tuned steps with each step's log-probability. The update treats every
(decision, fine-tuned step) pair as one PPO sample: ``log N(x_{k-1}; mu_theta(x_k, k, s), std_k)`` with the std
floored at ``min_logprob_std``, the decision's advantage scaled by ``gamma_denoise^(K'-k-1)`` and a clip
that grows from ``clip_coef_base`` at the first fine-tuned step to ``ppo.clip_coef`` at the last. As in
DPPO's code, a step's log-probability is the mean over the chunk's elements of the per-element Gaussian
log-density clamped to [-5, 2], the noise is clipped at ``randn_clip`` and the final action at [-1, 1].
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from ncdpo.algos.base import ActOutput, Agent, check_same_prediction
from ncdpo.algos.buffer import Batch
from ncdpo.config import TrainConfig
from ncdpo.envs.spec import EnvSpec
from ncdpo.errors import NcdpoError
from ncdpo.policies.diffusion import DiffusionPolicy

LOGPROB_MIN, LOGPROB_MAX = -5.0, 2.0
DETERMINISTIC_MIN_STD = 1e-3


def step_log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """DPPO's per-step log-probability: clamped element-wise Gaussian log-density, averaged over the chunk."""
    lp = -((x_next - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)
    return lp.clamp(LOGPROB_MIN, LOGPROB_MAX).mean(-1)


class DPPOAgent(Agent):
    algo = "dppo"
    init_algos = ("ncdpo",)

    def __init__(self, obs_dim: int, act_dim: int, cfg: TrainConfig, spec: EnvSpec | None = None) -> None:
        super().__init__(obs_dim, act_dim, cfg, spec)
        if self.discrete or self.spec.n_agents > 1:
            raise NcdpoError("dppo supports single-agent tasks with continuous actions only (use ncdpo or ppo)")
        encoder, in_dim = self.actor_encoder(cfg)
        self.policy = DiffusionPolicy(in_dim, act_dim, cfg.horizon, cfg.act_steps, cfg.diffusion, encoder)
        self.base = copy.deepcopy(self.policy.denoiser).requires_grad_(False)
        """Frozen pre-trained denoiser for the first ``n_chain - K'`` steps (conditioned on the same encoder
        features as the fine-tuned steps: the encoder runs once per decision and learns through those)."""
        q = cfg.dppo
        self.q = q
        n = self.policy.n_chain
        self.k_ft = q.ft_denoising_steps
        self.first_ft = n - self.k_ft
        std = self.policy.chain_std.clone()
        self.register_buffer("sample_std", std.clamp(min=q.min_sampling_std), persistent=False)
        self.register_buffer("det_std", std.clamp(min=DETERMINISTIC_MIN_STD), persistent=False)
        self.register_buffer("logprob_std", std[self.first_ft :].clamp(min=q.min_logprob_std), persistent=False)
        k = torch.arange(self.k_ft, dtype=torch.float32)
        self.register_buffer("adv_scale", q.gamma_denoise ** (self.k_ft - k - 1), persistent=False)
        if self.k_ft > 1:
            t = k / (self.k_ft - 1)
            frac = (torch.exp(q.clip_coef_rate * t) - 1) / (math.exp(q.clip_coef_rate) - 1)
            clip = q.clip_coef_base + (cfg.ppo.clip_coef - q.clip_coef_base) * frac
        else:
            clip = torch.full((1,), cfg.ppo.clip_coef)
        self.register_buffer("step_clip", clip, persistent=False)

    def check_init(self, ck: Any) -> None:
        check_same_prediction(ck, self.policy.cfg.prediction)

    def load_init(self, ck: Any, env_id: str) -> None:
        """The policy, then the frozen copy: a DPPO checkpoint's own, otherwise the weights just loaded."""
        super().load_init(ck, env_id)
        from ncdpo.checkpoint import load_module_state

        base = ck.prefixed("agent.base")
        if base:
            load_module_state(self.base, base, f"checkpoint {ck.path} (frozen denoiser)")
        else:
            self.base.load_state_dict(self.policy.denoiser.state_dict())

    def actor_parameters(self) -> list[torch.nn.Parameter]:
        enc = self.policy.encoder
        return list(self.policy.denoiser.parameters()) + (list(enc.parameters()) if enc is not None else [])

    # ---------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None) -> ActOutput:
        pol = self.policy
        feat = pol.encode(obs)
        B = feat.shape[0]
        x = torch.randn(B, pol.horizon * pol.act_dim, device=feat.device)
        chain, logps = [], []
        for j in range(pol.n_chain):
            ft = j >= self.first_ft
            if j == self.first_ft:
                chain.append(x)
            mean = pol.step_mean(x, feat, j, pol.denoiser if ft else self.base)
            if deterministic:
                std = 0.0 if j + 1 == pol.n_chain else self.det_std[j]
            else:
                std = self.sample_std[j]
            x = mean + std * torch.randn_like(x).clamp(-self.q.randn_clip, self.q.randn_clip)
            if j + 1 == pol.n_chain:
                x = x.clamp(-1.0, 1.0)
            if ft:
                chain.append(x)
                logps.append(step_log_prob(x, mean, self.logprob_std[j - self.first_ft]))
        action = x.view(B, pol.horizon, pol.act_dim)[:, : self.act_steps]
        return ActOutput(action, torch.stack(logps, 1), {"chain": torch.stack(chain, 1), "action": action})

    # ---------------------------------------------------------------- PPO over (decision, denoising step)
    def training_samples(self, batch: Batch) -> Batch:
        """One PPO sample per (decision, fine-tuned denoising step): the step's input and output latents. The
        samples share their decision's observation (``obs_rows``) instead of copying it K' times."""
        B, K = len(batch), self.k_ft

        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(K, 0)

        chain = batch.store["chain"]
        dev = batch.log_prob.device
        samples = {
            "x": chain[:, :-1].reshape(B * K, -1),
            "x_next": chain[:, 1:].reshape(B * K, -1),
            "k": torch.arange(K, device=dev).repeat(B),
            "decision": torch.arange(B, device=dev).repeat_interleave(K),
        }
        return Batch(
            batch.obs,
            batch.log_prob.reshape(B * K),
            rep(batch.advantages),
            rep(batch.returns),
            rep(batch.values),
            samples,
            obs_rows=samples["decision"],
        )

    def minibatch_order(self, n: int, device: torch.device) -> torch.Tensor:
        """Dict observations: whole decisions (all K' steps of each) in random order, so that a minibatch
        encodes each of its images once; vectors: every sample shuffled on its own (DPPO's)."""
        if self.obs_spec is None:
            return torch.randperm(n, device=device)
        K = self.k_ft
        d = torch.randperm(n // K, device=device)
        return (d[:, None] * K + torch.arange(K, device=device)[None]).reshape(-1)

    def decisions_per_minibatch(self, minibatch_size: int) -> int:
        return max(1, minibatch_size // self.k_ft) if self.obs_spec is not None else minibatch_size

    def _features(self, obs: Any, store: dict[str, torch.Tensor], encode: Any) -> torch.Tensor:
        """``encode`` of each sample's observation, run once per distinct decision of the minibatch."""
        if "decision" not in store or not isinstance(obs, dict):
            return encode(obs)
        from ncdpo.observations import obs_index

        uniq, inv = torch.unique(store["decision"], return_inverse=True)
        # one sample of each decision (its samples share the observation, so any one will do)
        one = torch.zeros(len(uniq), dtype=torch.long, device=inv.device).scatter_(
            0, inv, torch.arange(len(inv), device=inv.device)
        )
        return encode(obs_index(obs, one))[inv]

    def critic_features(self, obs: Any, store: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._features(obs, store, self.critic_obs)

    def log_prob_entropy(self, obs: Any, store: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        k = store["k"]
        feat = self._features(obs, store, self.policy.encode)
        mean = self.policy.step_mean(store["x"], feat, k + self.first_ft)
        std = self.logprob_std[k][:, None]
        entropy = (0.5 * (1.0 + math.log(2 * math.pi)) + std.log()).mean()
        return step_log_prob(store["x_next"], mean, std), entropy

    def decision_log_prob(self, obs: Any, store: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K') log-probabilities of each stored chain's fine-tuned steps (the update's log pi_old)."""
        feat = self.policy.encode(obs)
        chain = store["chain"]
        out = []
        for k in range(self.k_ft):
            mean = self.policy.step_mean(chain[:, k], feat, self.first_ft + k)
            out.append(step_log_prob(chain[:, k + 1], mean, self.logprob_std[k]))
        return torch.stack(out, 1)

    def advantage_scale(self, store: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.adv_scale[store["k"]]

    def clip_coef(self, store: dict[str, torch.Tensor], clip: float) -> torch.Tensor:
        return self.step_clip[store["k"]]

    def policy_std(self) -> float:
        return float(self.sample_std[self.first_ft :].mean())
