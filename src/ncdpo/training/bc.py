"""Behaviour-cloning pre-training of the diffusion policy (``ncdpo pretrain``), on the same run skeleton as RL.

The denoising loss on action chunks built from the dataset's episodes (see
:func:`~ncdpo.data.dataset.make_chunks`), AdamW with a linear warm-up then cosine learning rate, an
exponential moving average (EMA) of the weights, and periodic evaluation of the EMA policy in the env.
The checkpoint is an ordinary ``ncdpo`` checkpoint (EMA weights, the dataset's observation statistics,
the config), so ``ncdpo eval`` and ``ncdpo collect`` read it and ``ncdpo train --init`` fine-tunes it.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncdpo.algos import make_agent
from ncdpo.checkpoint import Checkpoint, load_module_state
from ncdpo.config import TrainConfig, validate
from ncdpo.data.dataset import check_fits_env, load_dataset, make_chunks
from ncdpo.data.options import ReadOptions
from ncdpo.envs.registry import env_kwargs, make_env
from ncdpo.envs.spec import EnvSpec
from ncdpo.errors import NcdpoError
from ncdpo.logger import Logger
from ncdpo.observations import ObsSpec, obs_index, obs_len, to_tensor
from ncdpo.policies.common import make_obs_normalizer
from ncdpo.policies.encoders import shift_images
from ncdpo.state import pack, rng_state, set_rng_state, unpack
from ncdpo.training.run import RunSkeleton, resume_point


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``pretrain.lr``, then cosine decay to ``pretrain.lr_min`` at ``pretrain.steps``."""
    b = cfg.pretrain
    if step < b.warmup_steps:
        return b.lr * (step + 1) / b.warmup_steps
    frac = (step - b.warmup_steps) / max(1, b.steps - b.warmup_steps)
    return b.lr_min + 0.5 * (b.lr - b.lr_min) * (1 + math.cos(math.pi * min(frac, 1.0)))


def env_spec_of(cfg: TrainConfig) -> EnvSpec:
    """The :class:`EnvSpec` of one env of ``cfg``'s task (its cameras included), made and closed here."""
    import gymnasium as gym

    env = make_env(cfg.env.id, options=env_kwargs(cfg.env))
    try:
        space = env.observation_space
        if isinstance(space, gym.spaces.Dict):
            spec = ObsSpec.from_space(space, tuple(getattr(env.unwrapped, "privileged_keys", ())))
            return EnvSpec(spec.flat_dim, int(env.action_space.shape[-1]), obs=spec.to_dict())
        return EnvSpec(int(space.shape[0]), int(env.action_space.shape[-1]))
    finally:
        env.close()


class BCTrainer(RunSkeleton):
    """One behaviour-cloning run; :meth:`run` trains it and returns its exit status."""

    command = "pretrain"

    def __init__(self, cfg: TrainConfig, resume_from: Checkpoint | None = None) -> None:
        cfg = validate(cfg)
        if cfg.algo != "ncdpo":
            raise NcdpoError(f"pretrain trains the diffusion policy (algo ncdpo), not '{cfg.algo}'")
        if not cfg.pretrain.dataset:
            raise NcdpoError("pretrain needs a dataset: --dataset FILE")
        super().__init__(cfg)
        self.spec = env_spec_of(cfg)
        self.obs_dim, self.act_dim = self.spec.obs_dim, self.spec.act_dim
        obs_spec = self.spec.obs_spec
        p = cfg.pretrain
        opts = ReadOptions(p.dataset_obs_keys, p.dataset_filter, p.dataset_action_key, cfg.env.id, obs_spec)
        self.ds = ds = load_dataset(p.dataset, opts)
        if ds.env_id and ds.env_id != cfg.env.id:
            raise NcdpoError(
                f"dataset {ds.source} was recorded on {ds.env_id}, but the env is {cfg.env.id} (drop --env or fix it)"
            )
        check_fits_env(ds, cfg.env.id, self.obs_dim, self.act_dim, obs_spec)
        # Data: observation statistics from the dataset (they travel in the checkpoint), chunks in [-1, 1].
        self.obs_norm = make_obs_normalizer(self.spec, cfg.env.norm_obs, cfg.env.clip_obs)
        raw_obs, chunks = make_chunks(ds, cfg.horizon)
        if cfg.env.norm_obs:
            self.obs_norm.rms.update(raw_obs)
        self.obs_t = to_tensor(self.obs_norm(raw_obs), self.device)
        self.n_chunks = obs_len(self.obs_t)
        self.chunks_t = torch.as_tensor(chunks, device=self.device)
        agent = make_agent(cfg, self.obs_dim, self.act_dim, self.spec).to(self.device)
        self.policy = agent.policy
        self.image_keys = obs_spec.image_keys if obs_spec is not None else []
        self.ema = copy.deepcopy(self.policy).requires_grad_(False)
        self.eval_agent = copy.deepcopy(agent)  # the agent checkpoints and evaluations hold the EMA weights in
        self.opt = torch.optim.AdamW(
            self.trained(self.policy), lr=cfg.pretrain.lr, weight_decay=cfg.pretrain.weight_decay
        )
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.step, self.n_evals, self.wall_offset = 0, 0, 0.0
        self.last_eval: dict[str, float] = {}
        self.stats = ds.stats()
        if resume_from is not None:
            self._restore(resume_from)

    @staticmethod
    def trained(policy: torch.nn.Module) -> list[torch.nn.Parameter]:
        """What behaviour cloning trains: the denoiser, and the encoder of a dict observation (not the
        exploration std)."""
        enc = policy.encoder
        return list(policy.denoiser.parameters()) + (list(enc.parameters()) if enc is not None else [])

    def default_run_name(self) -> str:
        return f"{self.cfg.env.id}__pretrain__s{self.cfg.seed}"

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: dict[str, Any] | None = None) -> "BCTrainer":
        """Continue an interrupted ``ncdpo pretrain`` run from its newest readable checkpoint."""
        ck, cfg = resume_point(run_dir, overrides)
        if ck.meta.get("kind") != "pretrain":
            raise NcdpoError(f"{run_dir} is not a pretrain run (resume it with ncdpo train --resume)")
        if int(ck.meta["iteration"]) >= cfg.pretrain.steps:
            raise NcdpoError(
                f"pretrain run {run_dir} already finished ({ck.meta['iteration']} of "
                f"{cfg.pretrain.steps} steps); pass a larger --pretrain.steps to continue it"
            )
        print(f"resuming {run_dir} from {ck.path} (step {ck.meta['iteration']})", flush=True)
        return cls(cfg, resume_from=ck)

    def _restore(self, ck: Checkpoint) -> None:
        load_module_state(self.policy, ck.prefixed("train_policy"), f"checkpoint {ck.path}")
        load_module_state(self.ema, ck.prefixed("agent.policy"), f"checkpoint {ck.path}")
        st = unpack(ck.meta["resume"], ck.tensors)
        st["optimizer"]["state"] = {int(k): v for k, v in st["optimizer"]["state"].items()}
        self.opt.load_state_dict(st["optimizer"])
        self.gen.set_state(st["generator"])
        set_rng_state(st["rng"])
        self.step, self.n_evals, self.wall_offset = int(ck.meta["iteration"]), int(st["n_evals"]), float(st["wall_s"])
        self.resumed_from = ck.path

    def save(self, name: str, step: int, ev: dict[str, float], wall_s: float, prune: bool = False) -> Path:
        """The EMA policy as an ordinary checkpoint, plus what ``--resume`` needs (raw weights, optimiser, RNG)."""
        self.eval_agent.policy.load_state_dict(self.ema.state_dict())
        tensors = self.obs_norm.rms.state("obs_rms")
        resume = pack(
            {
                "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(),
                "rng": rng_state(),
                "n_evals": self.n_evals,
                "wall_s": wall_s,
            },
            "resume",
            tensors,
        )
        cfg = self.cfg
        meta = {
            "algo": "ncdpo",
            "kind": "pretrain",
            "critic_trained": False,
            "env_id": cfg.env.id,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            **({"spec": self.spec.to_dict()} if self.spec.obs is not None else {}),
            "iteration": step,
            "env_steps": 0,
            "action_bounds": [self.ds.action_low.astype(float).tolist(), self.ds.action_high.astype(float).tolist()],
            "dataset": str(self.ds.source),
            "dataset_return_mean": self.stats["return_mean"],
            **({"eval_return_mean": ev["eval/return_mean"]} if ev else {}),
            "resume": resume,
        }
        return self.write_checkpoint(
            name, {"agent": self.eval_agent, "train_policy": self.policy}, tensors, meta, prune=prune
        )

    # ---------------------------------------------------------------- the run
    def run(self) -> int:
        """Gradient steps to ``pretrain.steps``; 0, or 128 + the signal number if SIGINT/SIGTERM stopped it
        early (after a checkpoint that ``ncdpo pretrain --resume`` continues bit for bit)."""
        cfg, st = self.cfg, self.stats
        logger = self.open_logger(self.step, self.step, key="step")
        print(
            f"pretrain {cfg.env.id}: {st['episodes']} episodes, {self.n_chunks} chunks of horizon {cfg.horizon}, "
            f"dataset return {st['return_mean']:.1f} ± {st['return_std']:.1f}"
        )
        bar = self.progress_bar(cfg.pretrain.steps, self.step, f"pretrain {cfg.env.id}")
        t0 = time.perf_counter() - self.wall_offset
        self.policy.train()
        try:
            with self.signals():
                self.train_loop(logger, bar, t0)
            if self.stop_signal and self.step < cfg.pretrain.steps:
                path = self.save(f"iter_{self.step:06d}", self.step, {}, time.perf_counter() - t0)
                print(f"stopped by signal at step {self.step}; checkpoint {path}; {self.continue_hint()}")
                return 128 + self.stop_signal
            final = self.save("final", cfg.pretrain.steps, self.last_eval, time.perf_counter() - t0)
        finally:
            if bar is not None:
                bar.close()
            logger.close()
        msg = f"pretrain finished: {final}"
        if self.last_eval:
            ev = self.last_eval
            msg += (
                f" (EMA policy return {ev['eval/return_mean']:.1f} ± {ev['eval/return_std']:.1f} over "
                f"{cfg.eval_episodes} episodes)"
            )
        print(msg)
        return 0

    def train_loop(self, logger: Logger, bar: Any, t0: float) -> None:
        """Gradient steps from ``self.step`` to ``pretrain.steps``: BC step, log (and evaluate), checkpoint."""
        cfg = self.cfg
        losses: list[float] = []
        for step in range(self.step, cfg.pretrain.steps):
            losses.append(self.bc_step(step))
            self.step = done = step + 1
            is_last = done == cfg.pretrain.steps
            do_eval = bool(cfg.eval_every) and (done % cfg.eval_every == 0 or is_last)
            if done % cfg.pretrain.log_every == 0 or is_last or do_eval:
                ev = self.evaluate() if do_eval else {}
                row = {
                    "step": done,
                    "wall_s": time.perf_counter() - t0,
                    "losses/bc_loss": float(np.mean(losses)),
                    "charts/lr": lr_at(step, cfg),
                    "eval/return_mean": ev.get("eval/return_mean", math.nan),
                    "eval/return_std": ev.get("eval/return_std", math.nan),
                    "eval/success_rate": ev.get("eval/success_rate", math.nan),
                }
                logger.log(row, done)
                losses.clear()
                n_logs = done // cfg.pretrain.log_every
                periodic = (do_eval and self.n_evals % cfg.save_every == 0) or (
                    not cfg.eval_every and done % cfg.pretrain.log_every == 0 and n_logs % cfg.save_every == 0
                )
                if periodic and not is_last:
                    self.save(f"iter_{done:06d}", done, ev, time.perf_counter() - t0, prune=True)
                if bar is not None:
                    post = {"loss": f"{row['losses/bc_loss']:.4f}"}
                    if ev:
                        post["eval"] = f"{ev['eval/return_mean']:.1f}"
                    bar.set_postfix(post)
                if self.stop_requested and not is_last:
                    return
            if bar is not None:
                bar.update(1)

    def bc_step(self, step: int) -> float:
        """One AdamW step on a random minibatch of chunks, then the EMA update; returns the loss."""
        cfg, policy = self.cfg, self.policy
        for g in self.opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = torch.randint(0, self.n_chunks, (cfg.pretrain.batch_size,), generator=self.gen).to(self.device)
        obs = obs_index(self.obs_t, idx)
        if self.image_keys and cfg.encoder.aug_pad:
            obs = shift_images(obs, self.image_keys, cfg.encoder.aug_pad, self.gen)
        loss = policy.bc_loss(obs, self.chunks_t[idx])
        if not torch.isfinite(loss):
            raise NcdpoError(f"pretrain step {step}: the BC loss is {float(loss)}; stopping (last checkpoint kept)")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trained(policy), 1.0)
        self.opt.step()
        with torch.no_grad():
            decay = min(cfg.pretrain.ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(self.trained(self.ema), self.trained(policy)):
                pe.lerp_(p, 1.0 - decay)
        return float(loss.detach())

    def evaluate(self) -> dict[str, float]:
        """The EMA policy's ``eval/*`` metrics (training's RNG is left alone)."""
        self.eval_agent.policy.load_state_dict(self.ema.state_dict())
        with torch.random.fork_rng(devices=[]):
            self.last_eval = self.evaluate_policy(self.eval_agent, self.obs_norm)
        self.n_evals += 1
        return self.last_eval


def pretrain(cfg: TrainConfig) -> tuple[Path, int]:
    """Behaviour-clone a diffusion policy on ``cfg.pretrain.dataset``: ``(run folder, exit status)``."""
    trainer = BCTrainer(cfg)
    return trainer.run_dir, trainer.run()


def resume_pretrain(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> tuple[Path, int]:
    """Continue an interrupted ``ncdpo pretrain`` run: ``(run folder, exit status)``."""
    trainer = BCTrainer.resume(run_dir, overrides)
    return trainer.run_dir, trainer.run()
