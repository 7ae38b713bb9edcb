"""The RL training run: every algorithm (NCDPO, DPPO, MLP+PPO) trains through :class:`Trainer`.

Each iteration reads top to bottom (:meth:`Trainer.train_loop`): collect a rollout of ``n_steps`` decisions from
``n_envs`` envs, update (GAE, then ``update_epochs`` passes of clipped PPO over shuffled minibatches), evaluate
now and then, log, checkpoint; until the env-step budget is spent. What differs between algorithms is the
:class:`~ncdpo.algos.base.Agent`.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncdpo.algos import make_agent
from ncdpo.algos.buffer import RolloutBuffer
from ncdpo.algos.losses import compute_gae
from ncdpo.algos.update import ppo_update
from ncdpo.checkpoint import Checkpoint, load_checkpoint, load_module_state
from ncdpo.config import TrainConfig, validate
from ncdpo.envs.registry import action_mask, done_values, env_kwargs, env_spec, episode_stats, make_vec_env, vector_mode
from ncdpo.errors import EnvWorkerError, NcdpoError, NonFiniteError
from ncdpo.logger import Logger
from ncdpo.observations import finite_rows, obs_stack, to_tensor
from ncdpo.policies.common import RewardScaler, make_obs_normalizer
from ncdpo.state import env_state, pack, rng_state, set_env_state, set_rng_state, unpack
from ncdpo.training.evaluation import no_eval
from ncdpo.training.run import RunSkeleton, peak_memory_mb, resume_point


@dataclass
class RolloutStats:
    """What one rollout reports besides the buffer it filled."""

    env_steps: int = 0
    """Inner env steps executed (a decision executes up to ``act_steps`` of them)."""
    returns: list[float] = field(default_factory=list)
    """Returns of the training episodes that ended in the rollout."""
    lengths: list[int] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)
    """``is_success`` of those episodes, where the env reports it."""
    extra: dict[str, list[float]] = field(default_factory=dict)
    """The task's other episode-end ``info`` entries of those episodes (``Task.episode_info``)."""
    last_value: torch.Tensor | None = None
    """V of the observation after the rollout's last decision (GAE's bootstrap)."""


BeforeUpdate = Callable[["Trainer", RolloutBuffer], None]
AfterUpdate = Callable[["Trainer", RolloutBuffer, torch.Tensor, dict[str, float]], None]


class Trainer(RunSkeleton):
    """Holds the state of one RL run; :meth:`run` trains it.

    Hooks for probes and tests: ``before_update(trainer, buffer)`` is called with the filled rollout buffer
    before each update (it holds what the update is about to consume), ``after_update(trainer, buffer,
    advantages, metrics)`` after it, with the GAE advantages and the update's ``losses/*`` metrics.
    """

    command = "train"

    def __init__(
        self,
        cfg: TrainConfig,
        resume_from: Checkpoint | None = None,
        before_update: BeforeUpdate | None = None,
        after_update: AfterUpdate | None = None,
    ) -> None:
        super().__init__(validate(cfg))
        cfg = self.cfg
        self.before_update, self.after_update = before_update, after_update
        if vector_mode(cfg.env.id, cfg.env.vector) == "ray":
            from ncdpo.envs.ray_vector import ensure_ray

            ensure_ray(cfg.env.ray_address, cfg.env.ray_cpus * cfg.env.n_envs)
        self.envs = make_vec_env(
            cfg.env.id,
            cfg.env.n_envs,
            cfg.act_steps,
            cfg.env.max_episode_steps,
            cfg.env.vector,
            env_kwargs(cfg.env),
            ray_cpus=cfg.env.ray_cpus,
        )
        self.eval_envs: Any = None  # subprocess eval envs are kept between evaluations (slow to start)
        self.spec = env_spec(self.envs)
        self.obs_dim, self.act_dim = self.spec.obs_dim, self.spec.act_dim
        self.n_rows = self.envs.num_envs  # n_envs, times the agents per env for a multi-agent task
        try:
            if self.spec.discrete and cfg.horizon != 1:
                raise NcdpoError(
                    f"env {cfg.env.id} has discrete actions: horizon and act_steps must be 1 "
                    f"(got horizon={cfg.horizon})"
                )
            self.agent = make_agent(cfg, self.obs_dim, self.act_dim, self.spec).to(self.device)
        except NcdpoError:
            self.envs.close()
            raise
        self.obs_norm = make_obs_normalizer(self.spec, cfg.env.norm_obs, cfg.env.clip_obs)
        self.reward_scaler = RewardScaler(self.n_rows, cfg.ppo.gamma, cfg.env.norm_reward)
        if cfg.init and resume_from is None:
            self._load_init(cfg.init)
        self.optimizer = torch.optim.Adam(self._param_groups(), eps=1e-5)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.iteration = 0
        self.env_steps = 0
        self.wall_offset = 0.0  # wall seconds of the run before a resume
        self.obs: Any = None  # normalised observations the next decision acts on (an array, or a dict of them)
        self.mask: np.ndarray | None = None  # the legal actions of the next decision (discrete tasks with masks)
        self.recent: list[float] = []  # returns of the last training episodes (progress bar)
        if resume_from is not None:
            self._restore(resume_from)

    # ---------------------------------------------------------------- set-up, resume, checkpoints
    @classmethod
    def resume(cls, run_dir: str | Path, overrides: dict[str, Any] | None = None) -> "Trainer":
        """A trainer that continues ``run_dir`` from its newest readable checkpoint.

        ``overrides`` may change fields that do not alter the run's computation so far (e.g. a larger
        ``total_env_steps``, ``progress``, ``eval_every``); the rest of the config is the run's own.
        """
        ck, cfg = resume_point(run_dir, overrides)
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

    def _load_init(self, path: str) -> None:
        """Start from an ``--init`` checkpoint's policy (the agent's hook) and observation statistics."""
        ck = load_checkpoint(path)
        self.agent.load_init(ck, self.cfg.env.id)
        if any(k.startswith("obs_rms.") for k in ck.tensors):
            try:
                self.obs_norm.rms.load(ck.tensors, "obs_rms")
            except ValueError as e:
                raise NcdpoError(f"--init checkpoint {ck.path}: observation statistics do not fit ({e})") from None

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

    def save(self, name: str, wall_s: float = 0.0) -> Path:
        """Write a checkpoint that both ``eval`` (the policy) and ``--resume`` (everything else) can load."""
        tensors = self.obs_norm.rms.state("obs_rms")
        rs = self.reward_scaler
        resume = pack(
            {
                "optimizer": self.optimizer.state_dict(),
                "reward_scaler": {"ret": rs.ret, "mean": rs.rms.mean, "var": rs.rms.var, "count": rs.rms.count},
                "obs": self.obs,
                "mask": self.mask,
                "recent": self.recent,
                "wall_s": wall_s,
                "env": env_state(self.envs),
                "rng": rng_state(),
            },
            "resume",
            tensors,
        )
        meta = {
            "algo": self.cfg.algo,
            "env_id": self.cfg.env.id,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "spec": self.spec.to_dict(),
            **self._action_bounds(),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "resume": resume,
        }
        return self.write_checkpoint(name, {"agent": self.agent}, tensors, meta)

    def _action_bounds(self) -> dict[str, Any]:
        """The env's continuous action bounds (what [-1, 1] maps onto), saved for :func:`ncdpo.load_policy`."""
        if self.spec.discrete:
            return {}
        low, high = self.envs.get_attr("action_low")[0], self.envs.get_attr("action_high")[0]
        return {"action_bounds": [np.asarray(low).tolist(), np.asarray(high).tolist()]}

    def _param_groups(self) -> list[dict[str, Any]]:
        """Adam's groups: the actor, the critic(s), a learnable exploration std given its own lr if asked, and NCDPO's
        noise policy (``noise_policy.lr``)."""
        cfg = self.cfg
        actor = self.agent.actor_parameters()
        groups = [
            {"params": actor, "lr": cfg.ppo.actor_lr},
            {"params": self.agent.critic_parameters(), "lr": cfg.ppo.critic_lr},
        ]
        sigma = getattr(getattr(self.agent, "policy", None), "log_sigma_exp", None)
        if cfg.diffusion.sigma_exp_lr > 0 and isinstance(sigma, torch.nn.Parameter) and any(q is sigma for q in actor):
            groups[0]["params"] = [q for q in actor if q is not sigma]
            groups.append({"params": [sigma], "lr": cfg.diffusion.sigma_exp_lr})
        noise = self.agent.noise_parameters()
        if noise:
            groups.append({"params": noise, "lr": cfg.noise_policy.lr})
        return groups

    # ---------------------------------------------------------------- the run
    def run(self) -> Path:
        """Train until the budget is spent (or a signal stops it after a checkpoint); returns the run folder."""
        cfg = self.cfg
        logger = self.open_logger(self.iteration, self.env_steps)
        buf = RolloutBuffer(cfg.ppo.n_steps, self.n_rows, self.obs_dim, self.device, self.spec.obs_spec)
        bar = self.progress_bar(
            cfg.total_env_steps, min(self.env_steps, cfg.total_env_steps), f"{cfg.algo} {cfg.env.id}"
        )
        t_start = time.perf_counter() - self.wall_offset
        if self.obs is None:
            raw_obs, info = self.envs.reset(seed=cfg.seed)
            self.obs = self.obs_norm(raw_obs, update=cfg.env.update_obs_norm)
            self.mask = action_mask(info, self.n_rows)
        try:
            with self.signals():
                self.train_loop(logger, buf, bar, t_start)
        except (NonFiniteError, EnvWorkerError) as e:
            ck = sorted((self.run_dir / "checkpoints").glob("*.safetensors"))
            last = f"last checkpoint {ck[-1]}" if ck else "no checkpoint was written yet"
            raise NcdpoError(
                f"iteration {self.iteration}: {e}; training stopped ({last}; {self.continue_hint()})"
            ) from e
        finally:
            if bar is not None:
                bar.close()
            logger.close()
            self.envs.close()
            if self.eval_envs is not None:
                self.eval_envs.close()
        return self.run_dir

    def train_loop(self, logger: Logger, buf: RolloutBuffer, bar: Any, t_start: float) -> None:
        """Iterations until the budget is spent: rollout, update, evaluate, log, checkpoint."""
        cfg = self.cfg
        while self.env_steps < cfg.total_env_steps:
            self.iteration += 1
            self.apply_schedules()
            t0 = time.perf_counter()
            stats = self.collect_rollout(buf)
            t_rollout = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics = self.update(buf, stats.last_value)
            t_update = time.perf_counter() - t0
            is_last = self.env_steps >= cfg.total_env_steps
            due = cfg.eval_every and (self.iteration % cfg.eval_every == 0 or is_last)
            ev = self.evaluate() if due else no_eval(cfg.env.id)
            self.recent[:] = (self.recent + stats.returns)[-20:]
            wall = time.perf_counter() - t_start
            row = self.log_row(stats, metrics, ev, wall, t_rollout, t_update)
            logger.log(row, self.env_steps)
            if self.stop_requested and not is_last:
                path = self.save(f"iter_{self.iteration:06d}", wall)
                print(
                    f"stopped by signal after iteration {self.iteration}; checkpoint {path}; {self.continue_hint()}",
                    flush=True,
                )
                return
            if self.iteration % cfg.save_every == 0:
                self.save(f"iter_{self.iteration:06d}", wall)
            if bar is not None:
                self.show_progress(bar, stats.env_steps, row, ev)
        self.save("final", time.perf_counter() - t_start)
        self.stop_signal = 0  # a signal during the last iteration: the run completed anyway

    def apply_schedules(self) -> None:
        """The agent's schedules and the annealed learning rates, at the fraction of the budget spent."""
        frac = self.env_steps / self.cfg.total_env_steps
        self.agent.set_progress(frac)
        if self.cfg.ppo.anneal_lr:
            for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = lr * (1.0 - frac)

    @torch.no_grad()
    def collect_rollout(self, buf: RolloutBuffer) -> RolloutStats:
        """``n_steps`` decisions of every env row into ``buf``; rewards scaled, truncations bootstrapped."""
        cfg, dev, agent = self.cfg, self.device, self.agent
        from ncdpo.envs.registry import episode_info_keys

        stats = RolloutStats(extra={k: [] for k in episode_info_keys(self.cfg.env.id)})
        obs, mask = self.obs, self.mask
        for t in range(cfg.ppo.n_steps):
            obs_t = to_tensor(obs, dev)
            out = agent.act(obs_t) if mask is None else agent.act(obs_t, mask=torch.as_tensor(mask, device=dev))
            value = agent.value(obs_t, out.store)
            raw_obs, reward, term, trunc, info = self.envs.step(out.action.cpu().numpy())
            bad = ~(finite_rows(raw_obs) & np.isfinite(reward))
            if bad.any():
                raise NonFiniteError(
                    f"non-finite observation or reward from env {cfg.env.id} worker(s) {np.nonzero(bad)[0].tolist()}"
                )
            done = term | trunc
            self._record_episodes(stats, info, done)
            reward = self.reward_scaler(np.asarray(reward, np.float64), done)
            self._bootstrap_truncated(reward, term, trunc, info)
            buf.add(
                t,
                obs_t,
                value,
                out.log_prob,
                out.store,
                torch.as_tensor(reward, device=dev),
                torch.as_tensor(done, dtype=torch.float32, device=dev),
            )
            obs = self.obs_norm(raw_obs, update=cfg.env.update_obs_norm)
            mask = action_mask(info, self.n_rows)
        stats.last_value = agent.bootstrap_value(to_tensor(obs, dev))
        self.obs, self.mask = obs, mask
        self.env_steps += stats.env_steps
        return stats

    @staticmethod
    def _record_episodes(stats: RolloutStats, info: dict, done: np.ndarray) -> None:
        stats.env_steps += int(done_values(info, "env_steps", done).sum())
        for r, length in episode_stats(info, done):
            stats.returns.append(r)
            stats.lengths.append(length)
        succ = done_values(info, "is_success", done, math.nan)[done]
        stats.successes.extend(float(x) for x in succ if not math.isnan(x))
        for k, xs in stats.extra.items():
            xs.extend(float(x) for x in done_values(info, k, done, math.nan)[done] if not math.isnan(x))

    def _bootstrap_truncated(self, reward: np.ndarray, term: np.ndarray, trunc: np.ndarray, info: dict) -> None:
        """Time-limit truncation: add ``gamma * V(final observation)`` to the reward of the truncated rows."""
        boot = np.nonzero(trunc & ~term)[0]
        if len(boot):
            final = obs_stack([info["final_obs"][i] for i in boot])
            v_final = self.agent.bootstrap_value(to_tensor(self.obs_norm(final), self.device))
            reward[boot] += self.cfg.ppo.gamma * v_final.cpu().numpy()

    def update(self, buf: RolloutBuffer, last_value: torch.Tensor) -> dict[str, float]:
        """GAE over the rollout, then the PPO update (only the critic during ``critic_warmup_iters``)."""
        p = self.cfg.ppo
        adv, returns = compute_gae(buf.rewards, buf.values, buf.dones, last_value, p.gamma, p.gae_lambda)
        if self.before_update is not None:
            self.before_update(self, buf)
        metrics = ppo_update(
            self.agent, self.optimizer, buf, adv, returns, self.cfg, train_actor=self.iteration > p.critic_warmup_iters
        )
        if self.after_update is not None:
            self.after_update(self, buf, adv, metrics)
        return metrics

    def evaluate(self) -> dict[str, float]:
        """The ``eval/*`` metrics of the current policy (training's RNG is left alone)."""
        cfg = self.cfg
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            mode = vector_mode(cfg.env.id, cfg.env.vector)
            if self.eval_envs is None and mode in ("async", "ray"):
                self.eval_envs = make_vec_env(
                    cfg.env.id,
                    min(cfg.eval_episodes, cfg.env.n_envs),
                    cfg.act_steps,
                    cfg.env.max_episode_steps,
                    mode,
                    env_kwargs(cfg.env),
                    ray_cpus=cfg.env.ray_cpus,
                )
            return self.evaluate_policy(self.agent, self.obs_norm, self.eval_envs)

    def log_row(
        self,
        stats: RolloutStats,
        metrics: dict[str, float],
        ev: dict[str, float],
        wall: float,
        t_rollout: float,
        t_update: float,
    ) -> dict[str, Any]:
        """One ``progress.csv`` row (CleanRL's metric names)."""

        def mean(xs: list) -> float:
            return float(np.mean(xs)) if xs else math.nan

        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_s": wall,
            "charts/episodic_return": mean(stats.returns),
            "charts/episodic_length": mean(stats.lengths),
            "charts/episodes": len(stats.returns),
            "charts/success_rate": mean(stats.successes),
            **{f"charts/{k}_rate": mean(xs) for k, xs in stats.extra.items()},
            "charts/SPS": stats.env_steps / (t_rollout + t_update),
            "charts/policy_std": self.agent.policy_std(),
            **self.agent.charts(),
            **metrics,
            **ev,
            "perf/rollout_s": t_rollout,
            "perf/update_s": t_update,
            "perf/peak_mem_mb": peak_memory_mb(self.device),
        }

    def show_progress(self, bar: Any, steps: int, row: dict[str, Any], ev: dict[str, float]) -> None:
        bar.update(min(steps, self.cfg.total_env_steps - bar.n))
        post = {"SPS": f"{row['charts/SPS']:.0f}", "return": f"{np.mean(self.recent):.1f}" if self.recent else "-"}
        if not math.isnan(ev["eval/return_mean"]):
            post["eval"] = f"{ev['eval/return_mean']:.1f}"
        bar.set_postfix(post)


def train(cfg: TrainConfig) -> Path:
    """Run one training run described by ``cfg``; returns its run folder."""
    return Trainer(cfg).run()
