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
from ncdpo.algos.core import evaluate, prepare_run_dir, prune_checkpoints, resolve_device, seed_everything
from ncdpo.checkpoint import save_checkpoint
from ncdpo.config import TrainConfig, validate
from ncdpo.data.dataset import check_fits_env, load_dataset, make_chunks
from ncdpo.envs.registry import make_env
from ncdpo.errors import NcdpoError
from ncdpo.logger import Logger
from ncdpo.policies.common import ObsNormalizer


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``pretrain.lr``, then cosine decay to ``pretrain.lr_min`` at ``pretrain.steps``."""
    b = cfg.pretrain
    if step < b.warmup_steps:
        return b.lr * (step + 1) / b.warmup_steps
    frac = (step - b.warmup_steps) / max(1, b.steps - b.warmup_steps)
    return b.lr_min + 0.5 * (b.lr - b.lr_min) * (1 + math.cos(math.pi * min(frac, 1.0)))


def pretrain_run_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / (cfg.run_name or f"{cfg.env.id}__pretrain__s{cfg.seed}")


def pretrain(cfg: TrainConfig) -> Path:
    """Behaviour-clone a diffusion policy on ``cfg.pretrain.dataset``; returns the run folder."""
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
    logger = Logger(run_dir, cfg.tensorboard)
    stats = ds.stats()
    print(f"pretrain {cfg.env.id}: {stats['episodes']} episodes, {n} chunks of horizon {cfg.horizon}, "
          f"dataset return {stats['return_mean']:.1f} ± {stats['return_std']:.1f}")

    def save(name: str, step: int, ev: dict[str, float]) -> Path:
        eval_agent.policy.load_state_dict(ema.state_dict())
        path = run_dir / "checkpoints" / f"{name}.safetensors"
        save_checkpoint(path, cfg, {"agent": eval_agent}, obs_norm.rms.state("obs_rms"), {
            "algo": "ncdpo", "kind": "pretrain", "critic_trained": False, "env_id": cfg.env.id, "obs_dim": obs_dim,
            "act_dim": act_dim, "iteration": step, "env_steps": 0, "dataset": str(ds.source),
            "dataset_return_mean": stats["return_mean"], **({"eval_return_mean": ev["eval/return_mean"]} if ev else {}),
        })
        return path

    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.pretrain.steps, unit="step", dynamic_ncols=True, desc=f"pretrain {cfg.env.id}")
    t0 = time.perf_counter()
    losses: list[float] = []
    n_evals = 0
    ev: dict[str, float] = {}
    policy.train()
    for step in range(cfg.pretrain.steps):
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
                r = evaluate(eval_agent, obs_norm, cfg.env.id, cfg.eval_episodes, cfg.act_steps, cfg.eval_deterministic,
                             seed=cfg.seed + 100_000, max_episode_steps=cfg.env.max_episode_steps)
                ev = {"eval/return_mean": r["return_mean"], "eval/return_std": r["return_std"]}
                n_evals += 1
            row = {"step": done, "wall_s": time.perf_counter() - t0, "losses/bc_loss": float(np.mean(losses)),
                   "charts/lr": lr_at(step, cfg), "eval/return_mean": ev.get("eval/return_mean", math.nan),
                   "eval/return_std": ev.get("eval/return_std", math.nan)}
            logger.log(row, done)
            losses = []
            if do_eval and n_evals % cfg.save_every == 0 and not is_last:
                save(f"iter_{done:06d}", done, ev)
                prune_checkpoints(run_dir, cfg.keep_checkpoints)
            if bar is not None:
                post = {"loss": f"{row['losses/bc_loss']:.4f}"}
                if ev:
                    post["eval"] = f"{ev['eval/return_mean']:.1f}"
                bar.set_postfix(post)
        if bar is not None:
            bar.update(1)
    final = save("final", cfg.pretrain.steps, ev)
    if bar is not None:
        bar.close()
    logger.close()
    msg = f"pretrain finished: {final}"
    if ev:
        msg += f" (EMA policy return {ev['eval/return_mean']:.1f} ± {ev['eval/return_std']:.1f} over {cfg.eval_episodes} episodes)"
    print(msg)
    return run_dir
