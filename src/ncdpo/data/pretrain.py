"""Behaviour-cloning pre-training of the diffusion policy (``ncdpo pretrain``).

The epsilon-MSE denoising loss on action chunks built from the dataset's episodes (see
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

import numpy as np
import torch

from ncdpo.algos import make_agent
from ncdpo.algos.core import (
    evaluate, newest_resumable_checkpoint, prepare_run_dir, prune_checkpoints, resolve_device, seed_everything, stop_on_signals,
)
from ncdpo.checkpoint import Checkpoint, load_module_state, save_checkpoint
from ncdpo.config import TrainConfig, apply_overrides, validate
from ncdpo.data.dataset import check_fits_env, load_dataset, make_chunks
from ncdpo.envs.registry import make_env
from ncdpo.errors import NcdpoError
from ncdpo.logger import Logger
from ncdpo.policies.common import ObsNormalizer
from ncdpo.state import pack, rng_state, set_rng_state, unpack


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``pretrain.lr``, then cosine decay to ``pretrain.lr_min`` at ``pretrain.steps``."""
    b = cfg.pretrain
    if step < b.warmup_steps:
        return b.lr * (step + 1) / b.warmup_steps
    frac = (step - b.warmup_steps) / max(1, b.steps - b.warmup_steps)
    return b.lr_min + 0.5 * (b.lr - b.lr_min) * (1 + math.cos(math.pi * min(frac, 1.0)))


def pretrain_run_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / (cfg.run_name or f"{cfg.env.id}__pretrain__s{cfg.seed}")


class _StopFlag:
    stop_requested = False
    stop_signal = 0


def resume_pretrain(run_dir: str | Path, overrides: dict | None = None) -> tuple[Path, int]:
    """Continue an interrupted ``ncdpo pretrain`` run from its newest readable checkpoint."""
    ck = newest_resumable_checkpoint(Path(run_dir))
    if ck.meta.get("kind") != "pretrain":
        raise NcdpoError(f"{run_dir} is not a pretrain run (resume it with ncdpo train --resume)")
    cfg = ck.config
    if overrides:
        cfg = apply_overrides(cfg, overrides, source="--resume override")
    cfg.out_dir, cfg.run_name = str(Path(run_dir).parent), Path(run_dir).name
    if int(ck.meta["iteration"]) >= cfg.pretrain.steps:
        raise NcdpoError(f"pretrain run {run_dir} already finished ({ck.meta['iteration']} of {cfg.pretrain.steps} steps); "
                         "pass a larger --pretrain.steps to continue it")
    print(f"resuming {run_dir} from {ck.path} (step {ck.meta['iteration']})", flush=True)
    return pretrain(cfg, resume_from=ck)


def pretrain(cfg: TrainConfig, resume_from: Checkpoint | None = None) -> tuple[Path, int]:
    """Behaviour-clone a diffusion policy on ``cfg.pretrain.dataset``.

    Returns the run folder and 0, or 128 + the signal number if SIGINT/SIGTERM stopped it early (after a
    checkpoint that ``ncdpo pretrain --resume`` continues bit for bit).
    """
    cfg = validate(cfg)
    if cfg.algo != "ncdpo":
        raise NcdpoError(f"pretrain trains the diffusion policy (algo ncdpo), not '{cfg.algo}'")
    if not cfg.pretrain.dataset:
        raise NcdpoError("pretrain needs a dataset: --dataset FILE")
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    ds = load_dataset(cfg.pretrain.dataset)
    if ds.env_id and ds.env_id != cfg.env.id:
        raise NcdpoError(f"dataset {ds.source} was recorded on {ds.env_id}, but the env is {cfg.env.id} (drop --env or fix it)")
    env = make_env(cfg.env.id)
    obs_dim, act_dim = int(env.observation_space.shape[0]), int(env.action_space.shape[-1])
    env.close()
    check_fits_env(ds, cfg.env.id, obs_dim, act_dim)

    run_dir = pretrain_run_dir(cfg)
    if resume_from is None:
        prepare_run_dir(run_dir, cfg)

    # Data: observation statistics from the dataset (they travel in the checkpoint), chunks in [-1, 1].
    obs_norm = ObsNormalizer(obs_dim, cfg.env.norm_obs, cfg.env.clip_obs)
    raw_obs, chunks = make_chunks(ds, cfg.horizon)
    if cfg.env.norm_obs:
        obs_norm.rms.update(raw_obs)
    obs_t = torch.as_tensor(obs_norm(raw_obs), device=device)
    chunks_t = torch.as_tensor(chunks, device=device)
    n = len(obs_t)

    agent = make_agent(cfg, obs_dim, act_dim).to(device)
    policy = agent.policy
    ema = copy.deepcopy(policy).requires_grad_(False)
    eval_agent = copy.deepcopy(agent)
    opt = torch.optim.AdamW(policy.denoiser.parameters(), lr=cfg.pretrain.lr, weight_decay=cfg.pretrain.weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    start, n_evals, wall_offset = 0, 0, 0.0
    if resume_from is not None:
        ck = resume_from
        load_module_state(policy, ck.prefixed("train_policy"), f"checkpoint {ck.path}")
        load_module_state(ema, ck.prefixed("agent.policy"), f"checkpoint {ck.path}")
        st = unpack(ck.meta["resume"], ck.tensors)
        st["optimizer"]["state"] = {int(k): v for k, v in st["optimizer"]["state"].items()}
        opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        set_rng_state(st["rng"])
        start, n_evals, wall_offset = int(ck.meta["iteration"]), int(st["n_evals"]), float(st["wall_s"])
        logger = Logger(run_dir, cfg.tensorboard, resume_iteration=start, resume_step=start, key="step")
    else:
        logger = Logger(run_dir, cfg.tensorboard)
    stats = ds.stats()
    print(f"pretrain {cfg.env.id}: {stats['episodes']} episodes, {n} chunks of horizon {cfg.horizon}, "
          f"dataset return {stats['return_mean']:.1f} ± {stats['return_std']:.1f}")

    def save(name: str, step: int, ev: dict[str, float], wall_s: float, n_evals: int) -> Path:
        """The EMA policy as an ordinary checkpoint, plus what ``--resume`` needs (raw weights, optimiser, RNG)."""
        eval_agent.policy.load_state_dict(ema.state_dict())
        path = run_dir / "checkpoints" / f"{name}.safetensors"
        tensors = obs_norm.rms.state("obs_rms")
        resume = pack({"optimizer": opt.state_dict(), "generator": gen.get_state(), "rng": rng_state(),
                       "n_evals": n_evals, "wall_s": wall_s}, "resume", tensors)
        save_checkpoint(path, cfg, {"agent": eval_agent, "train_policy": policy}, tensors, {
            "algo": "ncdpo", "kind": "pretrain", "critic_trained": False, "env_id": cfg.env.id, "obs_dim": obs_dim,
            "act_dim": act_dim, "iteration": step, "env_steps": 0, "dataset": str(ds.source),
            "dataset_return_mean": stats["return_mean"], **({"eval_return_mean": ev["eval/return_mean"]} if ev else {}),
            "resume": resume,
        })
        return path

    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.pretrain.steps, initial=start, unit="step", dynamic_ncols=True, desc=f"pretrain {cfg.env.id}")
    t0 = time.perf_counter() - wall_offset
    policy.train()
    flag = _StopFlag()
    with stop_on_signals(flag):  # type: ignore[arg-type]
        step, n_evals, ev = _bc_loop(cfg, start, n_evals, policy, ema, eval_agent, opt, gen, obs_t, chunks_t, obs_norm,
                                     logger, bar, flag, save, t0, run_dir)
    if flag.stop_signal and step < cfg.pretrain.steps:
        path = save(f"iter_{step:06d}", step, {}, time.perf_counter() - t0, n_evals)
        print(f"stopped by signal at step {step}; checkpoint {path}; continue with: ncdpo pretrain --resume {run_dir}")
        if bar is not None:
            bar.close()
        logger.close()
        return run_dir, 128 + flag.stop_signal
    final = save("final", cfg.pretrain.steps, ev, time.perf_counter() - t0, n_evals)
    if bar is not None:
        bar.close()
    logger.close()
    msg = f"pretrain finished: {final}"
    if ev:
        msg += f" (EMA policy return {ev['eval/return_mean']:.1f} ± {ev['eval/return_std']:.1f} over {cfg.eval_episodes} episodes)"
    print(msg)
    return run_dir, 0


def _bc_loop(cfg, start, n_evals, policy, ema, eval_agent, opt, gen, obs_t, chunks_t, obs_norm, logger, bar, flag,  # noqa: ANN001
             save, t0, run_dir) -> tuple[int, int, dict[str, float]]:
    """Gradient steps ``start`` .. ``pretrain.steps``: (steps done, evaluations done, last evaluation)."""
    n, device = len(obs_t), obs_t.device
    losses: list[float] = []
    last_ev: dict[str, float] = {}
    for step in range(start, cfg.pretrain.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = torch.randint(0, n, (cfg.pretrain.batch_size,), generator=gen).to(device)
        loss = policy.bc_loss(obs_t[idx], chunks_t[idx])
        if not torch.isfinite(loss):
            raise NcdpoError(f"pretrain step {step}: the BC loss is {float(loss)}; stopping (last checkpoint kept)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.denoiser.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.pretrain.ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(ema.denoiser.parameters(), policy.denoiser.parameters()):
                pe.lerp_(p, 1.0 - decay)
        losses.append(float(loss.detach()))
        done = step + 1
        is_last = done == cfg.pretrain.steps
        do_eval = bool(cfg.eval_every) and (done % cfg.eval_every == 0 or is_last)
        if done % cfg.pretrain.log_every == 0 or is_last or do_eval:
            ev = {}
            if do_eval:
                eval_agent.policy.load_state_dict(ema.state_dict())
                with torch.random.fork_rng(devices=[]):  # evaluation leaves the training RNG alone
                    r = evaluate(eval_agent, obs_norm, cfg.env.id, cfg.eval_episodes, cfg.act_steps, cfg.eval_deterministic,
                                 seed=cfg.seed + 100_000, max_episode_steps=cfg.env.max_episode_steps, vector=cfg.env.vector)
                ev = {"eval/return_mean": r["return_mean"], "eval/return_std": r["return_std"],
                      "eval/success_rate": r["success_rate"]}
                last_ev = ev
                n_evals += 1
            row = {"step": done, "wall_s": time.perf_counter() - t0, "losses/bc_loss": float(np.mean(losses)),
                   "charts/lr": lr_at(step, cfg), "eval/return_mean": ev.get("eval/return_mean", math.nan),
                   "eval/return_std": ev.get("eval/return_std", math.nan),
                   "eval/success_rate": ev.get("eval/success_rate", math.nan)}
            logger.log(row, done)
            losses.clear()
            n_logs = done // cfg.pretrain.log_every
            periodic = (do_eval and n_evals % cfg.save_every == 0) or (
                not cfg.eval_every and done % cfg.pretrain.log_every == 0 and n_logs % cfg.save_every == 0)
            if periodic and not is_last:
                save(f"iter_{done:06d}", done, ev, time.perf_counter() - t0, n_evals)
                prune_checkpoints(run_dir, cfg.keep_checkpoints)
            if bar is not None:
                post = {"loss": f"{row['losses/bc_loss']:.4f}"}
                if ev:
                    post["eval"] = f"{ev['eval/return_mean']:.1f}"
                bar.set_postfix(post)
            if flag.stop_requested and not is_last:
                return done, n_evals, last_ev
        if bar is not None:
            bar.update(1)
    return cfg.pretrain.steps, n_evals, last_ev
