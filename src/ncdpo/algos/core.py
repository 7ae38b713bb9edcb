"""The shared on-policy core: rollout buffer, GAE, clipped PPO loss, minibatch loop, and the training run.

Every algorithm runs through :func:`train`; what differs is the :class:`~ncdpo.algos.base.Agent`. The
training loop reads top to bottom: collect ``n_steps`` decisions from ``n_envs`` envs, compute GAE, run
``update_epochs`` passes of clipped PPO over shuffled minibatches, log, checkpoint, repeat until the
env-step budget is spent.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ncdpo.algos import make_agent
from ncdpo.algos.base import Agent
from ncdpo.checkpoint import Checkpoint, atomic_write_bytes, load_checkpoint, load_module_state, save_checkpoint
from ncdpo.config import TrainConfig, apply_overrides, to_dict, validate
from ncdpo.envs.registry import action_mask, done_values, env_spec, episode_stats, make_vec_env, vector_mode
from ncdpo.envs.spec import EnvSpec
from ncdpo.errors import EnvWorkerError, NcdpoError, NonFiniteError
from ncdpo.logger import Logger
from ncdpo.policies.common import ObsNormalizer, RewardScaler
from ncdpo.state import env_state, pack, rng_state, set_env_state, set_rng_state, unpack

# ----------------------------------------------------------------------------------------------------
# Pieces of PPO


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a (T, N) rollout.

    ``dones[t]`` marks that the episode ended with transition ``t`` (terminated or truncated; truncated
    rewards already carry the bootstrapped ``gamma * V(final_obs)``). Returns ``(advantages, returns)``.
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(last_value)
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        last = delta + gamma * lam * not_done * last
        adv[t] = last
    return adv, adv + values


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    ratio: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor


def clipped_policy_loss(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, adv: torch.Tensor, clip: float) -> PolicyLoss:
    """PPO's clipped surrogate, to be minimised: ``-min(r A, clip(r, 1-c, 1+c) A)`` averaged."""
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip).float().mean()
    return PolicyLoss(loss, ratio, approx_kl, clipfrac)


def value_loss(new_v: torch.Tensor, old_v: torch.Tensor, returns: torch.Tensor, clip: float | None) -> torch.Tensor:
    """0.5 * squared error, optionally clipped around the old value estimate."""
    if clip is None:
        return 0.5 * ((new_v - returns) ** 2).mean()
    v_clipped = old_v + (new_v - old_v).clamp(-clip, clip)
    return 0.5 * torch.max((new_v - returns) ** 2, (v_clipped - returns) ** 2).mean()


@dataclass
class RolloutBuffer:
    """Fixed-size (T, N, ...) storage of one iteration's decisions."""

    T: int
    N: int
    obs_dim: int
    device: torch.device
    obs: torch.Tensor = field(init=False)
    rewards: torch.Tensor = field(init=False)
    dones: torch.Tensor = field(init=False)
    values: torch.Tensor = field(init=False)
    log_probs: torch.Tensor = field(init=False)
    store: dict[str, torch.Tensor] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        z = lambda *s: torch.zeros(self.T, self.N, *s, device=self.device)  # noqa: E731
        self.obs, self.rewards, self.dones, self.values = z(self.obs_dim), z(), z(), z()
        self.log_probs = z()  # reshaped on the first add if the agent returns several log-probs per decision

    def add(self, t: int, obs: torch.Tensor, value: torch.Tensor, log_prob: torch.Tensor, store: dict[str, torch.Tensor], reward: torch.Tensor, done: torch.Tensor) -> None:
        if log_prob.dim() > 1 and self.log_probs.shape[2:] != log_prob.shape[1:]:
            self.log_probs = torch.zeros(self.T, *log_prob.shape, device=self.device)
        if not self.store:
            self.store = {k: torch.zeros(self.T, *v.shape, device=self.device, dtype=v.dtype) for k, v in store.items()}
        self.obs[t], self.values[t], self.log_probs[t] = obs, value, log_prob
        self.rewards[t], self.dones[t] = reward, done
        for k, v in store.items():
            self.store[k][t] = v


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` if ``x`` holds a NaN or an infinity (before any step)."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"non-finite {what} ({float(x.detach().float().flatten()[0]) if x.numel() == 1 else 'tensor'}); "
                             "the update was not applied")


def ppo_update(
    agent: Agent, optimizer: torch.optim.Optimizer, buf: RolloutBuffer, adv: torch.Tensor, returns: torch.Tensor,
    cfg: TrainConfig, train_actor: bool = True,
) -> dict[str, float]:
    """``update_epochs`` passes of clipped PPO over shuffled minibatches of the flattened rollout.

    With ``train_actor=False`` (critic warm-up) only the value loss is optimised.
    """
    p = cfg.ppo
    B = buf.T * buf.N
    flat = lambda x: x.reshape(B, *x.shape[2:])  # noqa: E731
    b_obs, b_logp, b_adv, b_ret, b_val = flat(buf.obs), flat(buf.log_probs), flat(adv), flat(returns), flat(buf.values)
    b_store = {k: flat(v) for k, v in buf.store.items()}
    b_obs, b_logp, b_adv, b_ret, b_val, b_store = agent.training_samples(b_obs, b_logp, b_adv, b_ret, b_val, b_store)
    B = b_obs.shape[0]
    vn = agent.value_norm
    if vn is not None:  # the critic learns standardised returns (its old outputs were standardised the same way)
        vn.update(b_ret)
    v_ret, v_old = (b_ret, b_val) if vn is None else (vn.normalize(b_ret), vn.normalize(b_val))
    params = [q for g in optimizer.param_groups for q in g["params"]]
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm")}
    first_ratio_dev = math.nan
    stop, epochs_done = False, 0
    for _epoch in range(p.update_epochs):
        perm = torch.randperm(B, device=b_obs.device)
        for start in range(0, B, p.minibatch_size):
            idx = perm[start : start + p.minibatch_size]
            if not train_actor:
                mb_store = {k: v[idx] for k, v in b_store.items()}
                v_loss = value_loss(agent.value_raw(b_obs[idx], mb_store), v_old[idx], v_ret[idx], p.clip_coef if p.clip_vloss else None)
                optimizer.zero_grad(set_to_none=True)
                check_finite(v_loss, "value loss")
                (p.vf_coef * v_loss).backward()
                gn = nn.utils.clip_grad_norm_(params, p.max_grad_norm)
                check_finite(gn, "gradient norm")
                stats["grad_norm"].append(float(gn))
                optimizer.step()
                stats["value_loss"].append(float(v_loss.detach()))
                continue
            mb_store = {k: v[idx] for k, v in b_store.items()}
            new_logp, entropy = agent.evaluate(b_obs[idx], mb_store)
            mb_adv = b_adv[idx]
            if p.norm_adv and len(idx) > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            scale = agent.advantage_scale(mb_store)
            if scale is not None:
                mb_adv = mb_adv * scale
            pl = clipped_policy_loss(new_logp, b_logp[idx], mb_adv, agent.clip_coef(mb_store, p.clip_coef))
            if math.isnan(first_ratio_dev):
                first_ratio_dev = float((pl.ratio.detach() - 1).abs().max())
            if p.target_kl > 0 and float(pl.approx_kl) > 1.5 * p.target_kl:
                stats["approx_kl"].append(float(pl.approx_kl))  # logged: the KL that stopped the update
                stop = True
                break
            v_loss = value_loss(agent.value_raw(b_obs[idx], mb_store), v_old[idx], v_ret[idx], p.clip_coef if p.clip_vloss else None)
            loss = pl.loss - p.ent_coef * entropy + p.vf_coef * v_loss
            check_finite(pl.loss, "policy loss")
            check_finite(v_loss, "value loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gn = nn.utils.clip_grad_norm_(params, p.max_grad_norm)
            check_finite(gn, "gradient norm")
            optimizer.step()
            for k, v in (("policy_loss", pl.loss), ("value_loss", v_loss), ("entropy", entropy), ("approx_kl", pl.approx_kl), ("clipfrac", pl.clipfrac), ("grad_norm", gn)):
                stats[k].append(float(v.detach()) if torch.is_tensor(v) else float(v))
        epochs_done += 1
        if stop:
            break
    out = {f"losses/{k}": (float(np.mean(v)) if v else math.nan) for k, v in stats.items()}
    var_y = float(b_ret.var())
    out["losses/explained_variance"] = math.nan if var_y == 0 else 1.0 - float((b_ret - b_val).var()) / var_y
    out["losses/first_minibatch_ratio_dev"] = first_ratio_dev
    out["losses/epochs"] = float(epochs_done)
    return out


# ----------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(
    agent: Agent,
    obs_norm: ObsNormalizer,
    env_id: str,
    n_episodes: int,
    act_steps: int,
    deterministic: bool = True,
    seed: int = 0,
    max_episode_steps: int = 0,
    max_envs: int = 16,
    vector: str = "auto",
    envs: Any = None,
) -> dict[str, Any]:
    """Run ``n_episodes`` complete episodes; each env contributes a fixed quota (no bias to short ones).

    ``envs``: a vector env made by :func:`make_vec_env` for this task to use (and leave open) instead of
    making one; every env is reset with ``seed`` first, so the result does not depend on what ran before.
    The policy's noise (a diffusion chain's initial latent even when ``deterministic``) is drawn from torch's
    generator seeded with ``seed`` too, inside :func:`torch.random.fork_rng`: the result is reproducible and
    the caller's generator state is left as it was.
    """
    device = next(agent.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _evaluate(agent, obs_norm, env_id, n_episodes, act_steps, deterministic, seed, max_episode_steps,
                         max_envs, vector, envs)


def _evaluate(agent: Agent, obs_norm: ObsNormalizer, env_id: str, n_episodes: int, act_steps: int, deterministic: bool,
              seed: int, max_episode_steps: int, max_envs: int, vector: str, envs: Any) -> dict[str, Any]:
    own = envs is None
    if own:
        envs = make_vec_env(env_id, min(n_episodes, max_envs), act_steps, max_episode_steps, vector)
    n_rows = envs.num_envs
    M = getattr(envs, "n_agents", 1)  # a multi-agent env's episodes are reported on agent 0's row of each copy
    n_envs = n_rows // M
    quota = np.zeros(n_rows, np.int64)
    quota[::M] = np.full(n_envs, n_episodes // n_envs) + (np.arange(n_envs) < n_episodes % n_envs)
    device = next(agent.parameters()).device
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[float] = []
    got = np.zeros(n_rows, np.int64)
    obs, info = envs.reset(seed=seed)
    while (got < quota).any():
        mask = action_mask(info, n_rows)
        obs_t = torch.as_tensor(obs_norm(obs), device=device)
        out = agent.act(obs_t, deterministic) if mask is None else agent.act(obs_t, deterministic, mask=torch.as_tensor(mask, device=device))
        obs, _, term, trunc, info = envs.step(out.action.cpu().numpy())
        done = term | trunc
        ep = info.get("final_info", {}).get("episode")
        succ = done_values(info, "is_success", done, default=math.nan)
        for i in np.nonzero(done)[0]:
            if got[i] < quota[i]:
                returns.append(float(ep["r"][i]))
                lengths.append(int(ep["l"][i]))
                successes.append(float(succ[i]))
                got[i] += 1
    if own:
        envs.close()
    known = [x for x in successes if not math.isnan(x)]
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        # fraction of episodes whose final step reported info["is_success"] true (nan: the env does not report it)
        "success_rate": float(np.mean(known)) if known else math.nan,
        "returns": returns,
        "successes": successes,
    }


# ----------------------------------------------------------------------------------------------------
# The training run


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: the device's allocator peak on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # not on Windows
        return math.nan


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise NcdpoError(f"unknown device '{name}' (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NcdpoError(f"device '{name}' requested but CUDA is not available")
    return dev


def prepare_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """Create the run folder (an existing, non-empty one only with ``overwrite``) and write ``config.json``."""
    if run_dir.exists() and any(run_dir.iterdir()):
        if not cfg.overwrite:
            raise NcdpoError(f"run folder {run_dir} already exists; pass --overwrite or choose --run-name")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.json", json.dumps(to_dict(cfg), indent=2).encode())


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` periodic checkpoints (``keep`` 0 keeps them all)."""
    if keep > 0:
        for old in sorted((run_dir / "checkpoints").glob("iter_*.safetensors"))[:-keep]:
            old.unlink()


def newest_resumable_checkpoint(run_dir: Path) -> Checkpoint:
    """The newest checkpoint of ``run_dir`` that loads and holds resume state; damaged newer ones are named."""
    ck_dir = run_dir / "checkpoints"
    if not run_dir.is_dir():
        raise NcdpoError(f"cannot resume: run folder {run_dir} does not exist")
    files = sorted(ck_dir.glob("iter_*.safetensors")) if ck_dir.is_dir() else []
    if (ck_dir / "final.safetensors").is_file():
        files.append(ck_dir / "final.safetensors")
    if not files:
        raise NcdpoError(f"cannot resume: no checkpoint in {ck_dir}")
    bad: list[str] = []
    for path in reversed(files):
        try:
            ck = load_checkpoint(path)
        except NcdpoError as e:
            bad.append(f"{path.name} ({e})")
            continue
        if "resume" not in ck.meta:
            bad.append(f"{path.name} (no resume state: an exported policy or a checkpoint of an older ncdpo)")
            continue
        if bad:
            print(f"ncdpo: warning: skipped unreadable newer checkpoints: {'; '.join(bad)}; resuming from {path}", flush=True)
        return ck
    raise NcdpoError(f"cannot resume {run_dir}: no usable checkpoint ({'; '.join(bad)})")


class stop_on_signals:
    """While active, SIGINT/SIGTERM ask the trainer to checkpoint after the current iteration and stop
    (a second signal interrupts at once)."""

    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        self.old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.trainer.stop_requested:
            raise KeyboardInterrupt
        self.trainer.stop_requested = True
        self.trainer.stop_signal = signum
        print(f"\nncdpo: got {signal.Signals(signum).name}; stopping after this iteration with a checkpoint "
              "(send it again to stop at once)", flush=True)

    def __enter__(self) -> "stop_on_signals":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)


def run_dir_for(cfg: TrainConfig) -> Path:
    name = cfg.run_name or f"{cfg.env.id}__{cfg.algo}__s{cfg.seed}"
    return Path(cfg.out_dir) / name


class Trainer:
    """Holds the state of one run; :meth:`run` is the training loop."""

    def __init__(self, cfg: TrainConfig, resume_from: Checkpoint | None = None) -> None:
        self.cfg = cfg = validate(cfg)
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.envs = make_vec_env(cfg.env.id, cfg.env.n_envs, cfg.act_steps, cfg.env.max_episode_steps, cfg.env.vector)
        self.eval_envs: Any = None  # subprocess eval envs are kept between evaluations (slow to start)
        self.spec: EnvSpec = env_spec(self.envs)
        self.obs_dim, self.act_dim = self.spec.obs_dim, self.spec.act_dim
        self.n_rows = self.envs.num_envs  # n_envs, times the agents per env for a multi-agent task
        if self.spec.discrete and cfg.horizon != 1:
            self.envs.close()
            raise NcdpoError(f"env {cfg.env.id} has discrete actions: horizon and act_steps must be 1 (got horizon={cfg.horizon})")
        try:
            self.agent = make_agent(cfg, self.obs_dim, self.act_dim, self.spec).to(self.device)
        except NcdpoError:
            self.envs.close()
            raise
        self.obs_norm = ObsNormalizer(self.obs_dim, cfg.env.norm_obs, cfg.env.clip_obs)
        self.reward_scaler = RewardScaler(self.n_rows, cfg.ppo.gamma, cfg.env.norm_reward)
        if cfg.init and resume_from is None:
            self._load_init(cfg.init)
        self.optimizer = torch.optim.Adam(self._param_groups(), eps=1e-5)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.run_dir = run_dir_for(cfg)
        self.iteration = 0
        self.env_steps = 0
        self.wall_offset = 0.0  # wall seconds of the run before a resume
        self.obs: np.ndarray | None = None  # normalised observations the next decision acts on
        self.mask: np.ndarray | None = None  # the legal actions of the next decision (discrete tasks with masks)
        self.recent: list[float] = []  # returns of the last training episodes (progress bar)
        self.stop_requested = False
        self.stop_signal = 0  # the signal that stopped the run early, if any
        self.resumed = resume_from is not None
        if resume_from is not None:
            self._restore(resume_from)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: dict[str, Any] | None = None) -> "Trainer":
        """A trainer that continues ``run_dir`` from its newest readable checkpoint.

        ``overrides`` may change fields that do not alter the run's computation so far (e.g. a larger
        ``total_env_steps``, ``progress``, ``eval_every``); the rest of the config is the run's own.
        """
        ck = newest_resumable_checkpoint(Path(run_dir))
        cfg = ck.config
        if overrides:
            cfg = apply_overrides(cfg, overrides, source="--resume override")
        cfg.out_dir, cfg.run_name = str(Path(run_dir).parent), Path(run_dir).name
        final = Path(run_dir) / "checkpoints" / "final.safetensors"
        if ck.meta.get("env_steps", 0) >= cfg.total_env_steps and not final.exists():
            # stopped between its last periodic checkpoint and the final one: that checkpoint is the final state
            shutil.copyfile(ck.path, final)
            ck = load_checkpoint(final)
        if ck.meta.get("env_steps", 0) >= cfg.total_env_steps:
            raise NcdpoError(
                f"run {run_dir} already finished ({ck.meta.get('env_steps')} of {cfg.total_env_steps} env steps); "
                "pass a larger --total-env-steps to continue it"
            )
        return cls(cfg, resume_from=ck)

    def _restore(self, ck: Checkpoint) -> None:
        """Load everything :meth:`save` wrote: weights, optimiser, normalisers, counters, RNG and env states."""
        load_module_state(self.agent, ck.prefixed("agent"), f"checkpoint {ck.path}")
        self.obs_norm.rms.load(ck.tensors, "obs_rms")
        st = unpack(ck.meta["resume"], ck.tensors)
        opt = st["optimizer"]
        opt["state"] = {int(k): v for k, v in opt["state"].items()}
        self.optimizer.load_state_dict(opt)
        rs = st["reward_scaler"]
        self.reward_scaler.ret, self.reward_scaler.rms.mean = rs["ret"], rs["mean"]
        self.reward_scaler.rms.var, self.reward_scaler.rms.count = rs["var"], rs["count"]
        self.iteration, self.env_steps = int(ck.meta["iteration"]), int(ck.meta["env_steps"])
        self.wall_offset, self.recent, self.obs = float(st["wall_s"]), list(st["recent"]), st["obs"]
        self.mask = st.get("mask")
        try:
            set_env_state(self.envs, st["env"])
        except ValueError as e:
            raise NcdpoError(f"checkpoint {ck.path} holds env state that does not fit this env ({e})") from None
        set_rng_state(st["rng"])
        self.resumed_from = ck.path

    def _load_init(self, path: str) -> None:
        ck = load_checkpoint(path)
        same_policy = {ck.meta.get("algo"), self.cfg.algo} <= {"ncdpo", "dppo"}  # both hold a DiffusionPolicy
        if ck.meta.get("algo") != self.cfg.algo and not same_policy:
            raise NcdpoError(f"--init checkpoint {ck.path} holds a '{ck.meta.get('algo')}' policy, not '{self.cfg.algo}'")
        if (ck.obs_dim, ck.act_dim) != (self.obs_dim, self.act_dim):
            raise NcdpoError(
                f"--init checkpoint {ck.path} was made for obs/act dims ({ck.obs_dim}, {ck.act_dim}) "
                f"but {self.cfg.env.id} has ({self.obs_dim}, {self.act_dim})"
            )
        if same_policy and ck.config.diffusion.prediction != self.cfg.diffusion.prediction:
            # same tensors, different meaning: the network predicts the noise in one and the clean chunk in the other
            raise NcdpoError(
                f"--init checkpoint {ck.path} predicts '{ck.config.diffusion.prediction}' but this run sets "
                f"diffusion.prediction '{self.cfg.diffusion.prediction}'; drop the override"
            )
        policy_state = ck.prefixed("agent.policy")
        own = self.agent.policy.state_dict()
        if "log_sigma_exp" in own and "log_sigma_exp" in policy_state:  # the exploration std comes from this config
            policy_state["log_sigma_exp"] = own["log_sigma_exp"]
        load_module_state(self.agent.policy, policy_state, f"checkpoint {ck.path}")
        critic = ck.prefixed("agent.critic")
        if critic and ck.meta.get("critic_trained", True):
            load_module_state(self.agent.critic, critic, f"checkpoint {ck.path} (critic)")
        if any(k.startswith("obs_rms.") for k in ck.tensors):
            self.obs_norm.rms.load(ck.tensors, "obs_rms")
        self.agent.on_init_loaded(ck)

    def save(self, name: str, wall_s: float = 0.0) -> Path:
        """Write a checkpoint that both ``eval`` (the policy) and ``--resume`` (everything else) can load."""
        path = self.run_dir / "checkpoints" / f"{name}.safetensors"
        tensors = self.obs_norm.rms.state("obs_rms")
        rs = self.reward_scaler
        resume = pack(
            {
                "optimizer": self.optimizer.state_dict(),
                "reward_scaler": {"ret": rs.ret, "mean": rs.rms.mean, "var": rs.rms.var, "count": rs.rms.count},
                "obs": self.obs, "mask": self.mask, "recent": self.recent, "wall_s": wall_s,
                "env": env_state(self.envs), "rng": rng_state(),
            },
            "resume", tensors,
        )
        save_checkpoint(
            path,
            self.cfg,
            {"agent": self.agent},
            tensors,
            {"algo": self.cfg.algo, "env_id": self.cfg.env.id, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
             "spec": self.spec.to_dict(),
             "iteration": self.iteration, "env_steps": self.env_steps, "resume": resume},
        )
        prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints)
        return path

    def run(self) -> Path:
        cfg, p, dev = self.cfg, self.cfg.ppo, self.device
        if self.resumed:  # continue the log where the checkpoint left it
            logger = Logger(self.run_dir, cfg.tensorboard, resume_iteration=self.iteration, resume_step=self.env_steps)
        else:
            prepare_run_dir(self.run_dir, cfg)
            logger = Logger(self.run_dir, cfg.tensorboard)
        buf = RolloutBuffer(p.n_steps, self.n_rows, self.obs_dim, dev)
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.total_env_steps, initial=min(self.env_steps, cfg.total_env_steps), unit="step",
                       dynamic_ncols=True, desc=f"{cfg.algo} {cfg.env.id}")
        t_start = time.perf_counter() - self.wall_offset
        if self.obs is None:
            raw_obs, info = self.envs.reset(seed=cfg.seed)
            self.obs = self.obs_norm(raw_obs, update=cfg.env.update_obs_norm)
            self.mask = action_mask(info, self.n_rows)
        obs = self.obs
        try:
            with stop_on_signals(self):
                self._loop(logger, buf, bar, obs, t_start)
        except (NonFiniteError, EnvWorkerError) as e:
            ck = sorted((self.run_dir / "checkpoints").glob("*.safetensors"))
            last = f"last checkpoint {ck[-1]}" if ck else "no checkpoint was written yet"
            raise NcdpoError(f"iteration {self.iteration}: {e}; training stopped ({last}; "
                             f"continue with: ncdpo train --resume {self.run_dir})") from e
        finally:
            if bar is not None:
                bar.close()
            logger.close()
            self.envs.close()
            if self.eval_envs is not None:
                self.eval_envs.close()
        return self.run_dir

    def _param_groups(self) -> list[dict[str, Any]]:
        """Adam's groups: the actor, the critic, and a learnable exploration std given its own lr if asked."""
        cfg = self.cfg
        actor = self.agent.actor_parameters()
        groups = [{"params": actor, "lr": cfg.ppo.actor_lr},
                  {"params": list(self.agent.critic.parameters()), "lr": cfg.ppo.critic_lr}]
        sigma = getattr(getattr(self.agent, "policy", None), "log_sigma_exp", None)
        if cfg.diffusion.sigma_exp_lr > 0 and isinstance(sigma, torch.nn.Parameter) and any(q is sigma for q in actor):
            groups[0]["params"] = [q for q in actor if q is not sigma]
            groups.append({"params": [sigma], "lr": cfg.diffusion.sigma_exp_lr})
        return groups

    def _loop(self, logger: Logger, buf: RolloutBuffer, bar: Any, obs: np.ndarray, t_start: float) -> None:
        cfg, p, dev = self.cfg, self.cfg.ppo, self.device
        recent, mask = self.recent, self.mask
        while self.env_steps < cfg.total_env_steps:
            self.iteration += 1
            frac = self.env_steps / cfg.total_env_steps
            self.agent.set_progress(frac)
            if p.anneal_lr:
                for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
                    g["lr"] = lr * (1.0 - frac)

            # ---- rollout
            t0 = time.perf_counter()
            it_steps, ep_returns, ep_lengths, ep_success = 0, [], [], []
            for t in range(p.n_steps):
                obs_t = torch.as_tensor(obs, device=dev)
                with torch.no_grad():
                    out = self.agent.act(obs_t) if mask is None else self.agent.act(obs_t, mask=torch.as_tensor(mask, device=dev))
                    value = self.agent.value(obs_t, out.store)
                raw_obs, reward, term, trunc, info = self.envs.step(out.action.cpu().numpy())
                bad = ~(np.isfinite(raw_obs).all(axis=1) & np.isfinite(reward))
                if bad.any():
                    raise NonFiniteError(f"non-finite observation or reward from env {cfg.env.id} worker(s) "
                                         f"{np.nonzero(bad)[0].tolist()}")
                done = term | trunc
                it_steps += int(done_values(info, "env_steps", done).sum())
                for r, length in episode_stats(info, done):
                    ep_returns.append(r)
                    ep_lengths.append(length)
                ep_success.extend(float(x) for x in done_values(info, "is_success", done, math.nan)[done] if not math.isnan(x))
                reward = self.reward_scaler(np.asarray(reward, np.float64), done)
                boot = np.nonzero(trunc & ~term)[0]
                if len(boot):  # time-limit truncation: bootstrap from the value of the final observation
                    final = np.stack([info["final_obs"][i] for i in boot])
                    with torch.no_grad():
                        v_final = self.agent.value(torch.as_tensor(self.obs_norm(final), device=dev)).cpu().numpy()
                    reward[boot] += p.gamma * v_final
                buf.add(t, obs_t, value, out.log_prob, out.store, torch.as_tensor(reward, device=dev), torch.as_tensor(done, dtype=torch.float32, device=dev))
                obs = self.obs_norm(raw_obs, update=cfg.env.update_obs_norm)
                mask = action_mask(info, self.n_rows)
            with torch.no_grad():
                last_value = self.agent.value(torch.as_tensor(obs, device=dev))
            self.env_steps += it_steps
            t_rollout = time.perf_counter() - t0

            # ---- update
            t0 = time.perf_counter()
            adv, returns = compute_gae(buf.rewards, buf.values, buf.dones, last_value, p.gamma, p.gae_lambda)
            metrics = ppo_update(self.agent, self.optimizer, buf, adv, returns, cfg, train_actor=self.iteration > p.critic_warmup_iters)
            t_update = time.perf_counter() - t0

            # ---- evaluation, logging, checkpoints
            ev = {"eval/return_mean": math.nan, "eval/return_std": math.nan, "eval/success_rate": math.nan}
            is_last = self.env_steps >= cfg.total_env_steps
            if cfg.eval_every and (self.iteration % cfg.eval_every == 0 or is_last):
                ev = self._eval()
            recent[:] = (recent + ep_returns)[-20:]
            wall = time.perf_counter() - t_start
            row = {
                "iteration": self.iteration,
                "env_steps": self.env_steps,
                "wall_s": wall,
                "charts/episodic_return": float(np.mean(ep_returns)) if ep_returns else math.nan,
                "charts/episodic_length": float(np.mean(ep_lengths)) if ep_lengths else math.nan,
                "charts/episodes": len(ep_returns),
                "charts/success_rate": float(np.mean(ep_success)) if ep_success else math.nan,
                "charts/SPS": it_steps / (t_rollout + t_update),
                "charts/policy_std": self.agent.policy_std(),
                **metrics,
                **ev,
                "perf/rollout_s": t_rollout,
                "perf/update_s": t_update,
                "perf/peak_mem_mb": peak_memory_mb(dev),
            }
            logger.log(row, self.env_steps)
            self.obs, self.recent, self.mask = obs, recent, mask
            if self.stop_requested and not is_last:
                path = self.save(f"iter_{self.iteration:06d}", wall)
                print(f"stopped by signal after iteration {self.iteration}; checkpoint {path}; "
                      f"continue with: ncdpo train --resume {self.run_dir}", flush=True)
                return
            if self.iteration % cfg.save_every == 0:
                self.save(f"iter_{self.iteration:06d}", wall)
            if bar is not None:
                bar.update(min(it_steps, cfg.total_env_steps - bar.n))
                post = {"SPS": f"{row['charts/SPS']:.0f}", "return": f"{np.mean(recent):.1f}" if recent else "-"}
                if not math.isnan(ev["eval/return_mean"]):
                    post["eval"] = f"{ev['eval/return_mean']:.1f}"
                bar.set_postfix(post)
        self.save("final", time.perf_counter() - t_start)
        self.stop_signal = 0  # a signal during the last iteration: the run completed anyway

    def _eval(self) -> dict[str, float]:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):  # eval leaves training's RNG alone
            return self._eval_inner()

    def _eval_inner(self) -> dict[str, float]:
        cfg = self.cfg
        if self.eval_envs is None and vector_mode(cfg.env.id, cfg.env.vector) == "async":
            self.eval_envs = make_vec_env(cfg.env.id, min(cfg.eval_episodes, cfg.env.n_envs), cfg.act_steps,
                                          cfg.env.max_episode_steps, "async")
        r = evaluate(self.agent, self.obs_norm, cfg.env.id, cfg.eval_episodes, cfg.act_steps, cfg.eval_deterministic,
                     seed=cfg.seed + 100_000, max_episode_steps=cfg.env.max_episode_steps, vector=cfg.env.vector,
                     envs=self.eval_envs)
        return {"eval/return_mean": r["return_mean"], "eval/return_std": r["return_std"], "eval/success_rate": r["success_rate"]}


def train(cfg: TrainConfig) -> Path:
    """Run one training run described by ``cfg``; returns its run folder."""
    return Trainer(cfg).run()


def load_agent(path: str | Path, device: str = "cpu") -> tuple[Agent, ObsNormalizer, Any]:
    """Rebuild exactly the agent and observation normaliser a checkpoint was saved from."""
    ck = load_checkpoint(path)
    cfg = ck.config
    agent = make_agent(cfg, ck.obs_dim, ck.act_dim, EnvSpec.from_meta(ck.meta))
    load_module_state(agent, ck.prefixed("agent"), f"checkpoint {ck.path}")
    obs_norm = ObsNormalizer(ck.obs_dim, cfg.env.norm_obs, cfg.env.clip_obs)
    obs_norm.rms.load(ck.tensors, "obs_rms")
    return agent.to(resolve_device(device)).eval(), obs_norm, ck
