"""What each ``ncdpo`` command does, once :mod:`ncdpo.cli` has parsed its arguments; each returns the exit status."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ncdpo.cli import resolve_train_config
from ncdpo.errors import NcdpoError
from ncdpo.training.resolve import PRETRAIN_RESUME_OVERRIDABLE, RESUME_OVERRIDABLE, resume_overrides


def cmd_train(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from ncdpo.config import to_dict
    from ncdpo.training.trainer import Trainer

    if args.resume:
        trainer = Trainer.resume(args.resume, _resume_overrides(args, extra, RESUME_OVERRIDABLE))
        print(
            f"resuming {trainer.run_dir} from {trainer.resumed_from} (iteration {trainer.iteration}, "
            f"{trainer.env_steps} env steps)",
            flush=True,
        )
        return _run_trainer(trainer)
    cfg = resolve_train_config(args, extra)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    return _run_trainer(Trainer(cfg))


def _run_trainer(trainer: Any) -> int:
    """Run; 128 + signal number when SIGINT/SIGTERM stopped it (after writing a checkpoint), else 0."""
    run_dir = trainer.run()
    if trainer.stop_signal:
        return 128 + trainer.stop_signal
    print(f"run finished: {run_dir} (checkpoint {run_dir / 'checkpoints' / 'final.safetensors'})")
    return 0


def _resume_overrides(args: argparse.Namespace, extra: Sequence[str], allowed: Sequence[str]) -> dict[str, Any]:
    """The config options given with ``--resume`` (only ``allowed`` ones may be)."""
    if extra:
        raise NcdpoError(f"unknown option {extra[0]}")
    return resume_overrides(vars(args), allowed, args.config)


def cmd_pretrain(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from ncdpo.config import to_dict
    from ncdpo.training.bc import pretrain, resume_pretrain

    if args.resume:
        return resume_pretrain(args.resume, _resume_overrides(args, extra, PRETRAIN_RESUME_OVERRIDABLE))[1]
    cfg = resolve_train_config(args, extra, command="pretrain")
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    return pretrain(cfg)[1]


def _dataset_out(args: argparse.Namespace) -> Path:
    """The ``--out`` dataset path of ``collect`` / ``demos``, checked before any work is done."""
    out = Path(args.out)
    if out.suffix not in (".hdf5", ".h5"):
        raise NcdpoError(f"--out must end in .hdf5 or .h5 (got {out.name})")
    if out.exists() and not args.overwrite:
        raise NcdpoError(f"{out} already exists; pass --overwrite to replace it")
    return out


def cmd_collect(args: argparse.Namespace) -> int:
    from ncdpo.data.collect import collect

    out = _dataset_out(args)
    if args.n_envs < 1:
        raise NcdpoError(f"--n-envs must be >= 1 (got {args.n_envs})")
    if args.episodes < 0 or args.transitions < 0:
        raise NcdpoError("--episodes and --transitions must be >= 0")
    ds = collect(
        args.path, args.episodes, args.transitions, args.action_noise, args.deterministic, args.seed, args.n_envs
    )
    ds.save(out)
    st = ds.stats()
    print(
        f"wrote {out}: {ds.env_id}, {st['episodes']} episodes, {st['transitions']} transitions, "
        f"return {st['return_mean']:.1f} ± {st['return_std']:.1f} (min {st['return_min']:.1f}, max "
        f"{st['return_max']:.1f}); "
        f"{st['complete_episodes']} complete episodes: {st['complete_return_mean']:.1f} ± "
        f"{st['complete_return_std']:.1f}"
    )
    return 0


def cmd_demos(args: argparse.Namespace) -> int:
    out = _dataset_out(args)
    if args.workers < 1:
        raise NcdpoError(f"--workers must be >= 1 (got {args.workers})")
    kitchen = args.task.startswith("kitchen-")
    if kitchen:
        from ncdpo.envs.kitchen_demos import DEFAULT_NOISE, collect_kitchen_demos

        noise = DEFAULT_NOISE if args.noise is None else args.noise
        ds = collect_kitchen_demos(
            args.task, args.episodes, noise, args.offset, args.seed, args.workers, args.skill, args.mistake
        )
    else:
        from ncdpo.envs.demonstrators import collect_demos

        noise = 0.1 if args.noise is None else args.noise
        ds = collect_demos(
            args.task, args.episodes, noise, args.offset, args.seed, args.workers, args.skill, args.mistake
        )
    ds.save(out)
    m = ds.meta
    by_skill = {}
    for sk, ok in zip(m["skills"], m["successes"]):
        by_skill.setdefault(sk, []).append(ok)
    detail = ", ".join(f"{sk} {sum(v)}/{len(v)}" for sk, v in sorted(by_skill.items()))
    completion = f", completion rate {sum(m['completions']) / len(m['completions']):.2f}" if kitchen else ""
    print(
        f"wrote {out}: {args.task}, {len(ds.episodes)} episodes, {ds.n_transitions} transitions, "
        f"success rate {m['success_rate']:.2f} ({detail}){completion}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ncdpo.algos import load_agent
    from ncdpo.checkpoint import atomic_write_bytes
    from ncdpo.envs.registry import env_kwargs
    from ncdpo.training.evaluation import evaluate

    if args.episodes < 1:
        raise NcdpoError(f"--episodes must be >= 1 (got {args.episodes})")
    agent, obs_norm, ck = load_agent(args.path, args.device)
    cfg = ck.config
    if args.chain_noise_scale is not None:
        if cfg.algo != "ncdpo":
            raise NcdpoError(
                f"--chain-noise-scale applies to NCDPO checkpoints only ({ck.path} holds a {cfg.algo} policy)"
            )
        if not args.chain_noise_scale >= 0:
            raise NcdpoError(f"--chain-noise-scale must be >= 0 (got {args.chain_noise_scale})")
        agent.policy.cfg.chain_noise_scale = args.chain_noise_scale  # the policy's config is cfg.diffusion
    if args.noise_mean:
        if getattr(agent, "noise_policy", None) is None:
            raise NcdpoError(f"--noise-mean needs an NCDPO checkpoint with a noise policy ({ck.path} has none)")
        agent.noise_mean = True
    deterministic = not args.sampled
    if args.n_envs < 1:
        raise NcdpoError(f"--n-envs must be >= 1 (got {args.n_envs})")
    res = evaluate(
        agent,
        obs_norm,
        cfg.env.id,
        args.episodes,
        cfg.act_steps,
        deterministic,
        args.seed,
        cfg.env.max_episode_steps,
        max_envs=args.n_envs,
        vector=cfg.env.vector,
        options=env_kwargs(cfg.env),
    )
    mode = "deterministic" if deterministic else "sampled"
    print(
        f"{cfg.env.id} {cfg.algo} ({ck.path}, {ck.meta.get('env_steps', '?')} env steps): "
        f"return {res['return_mean']:.1f} ± {res['return_std']:.1f} over {args.episodes} episodes ({mode}), "
        f"mean length {res['length_mean']:.0f}"
        + (f", chain noise x {args.chain_noise_scale:g}" if args.chain_noise_scale is not None else "")
        + (", noise policy's mean" if args.noise_mean else "")
        + (f", success rate {res['success_rate']:.2f}" if res["success_rate"] == res["success_rate"] else "")
        + "".join(
            f", {k.removesuffix('_rate')} rate {v:.2f}"
            for k, v in res.items()
            if k.endswith("_rate") and k != "success_rate" and v == v
        )
    )
    if args.json:
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in res.items()}
        clean["successes"] = [None if x != x else x for x in res["successes"]]
        clean.pop("rows")
        payload = {
            "checkpoint": str(ck.path),
            "env_id": cfg.env.id,
            "algo": cfg.algo,
            "mode": mode,
            "seed": args.seed,
            "episodes": args.episodes,
            "chain_noise_scale": cfg.diffusion.chain_noise_scale if cfg.algo == "ncdpo" else None,
            **({"noise_mean": True} if args.noise_mean else {}),
            **clean,
        }
        atomic_write_bytes(args.json, json.dumps(payload, indent=2).encode())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ncdpo.checkpoint import export_policy, resolve_checkpoint

    src, out = resolve_checkpoint(args.path), Path(args.out)
    if out.exists() and not args.overwrite:
        raise NcdpoError(f"{out} exists; pass --overwrite to replace it")
    if args.format == "safetensors":
        if args.noise_mean:
            raise NcdpoError(
                "--noise-mean applies to --format torchscript or onnx (a checkpoint keeps its noise policy)"
            )
        export_policy(src, out)
    else:
        from ncdpo.deploy import export_onnx, export_torchscript

        (export_torchscript if args.format == "torchscript" else export_onnx)(src, out, args.noise_mean)
    print(
        f"wrote {out} ({args.format}, {out.stat().st_size / 2**20:.2f} MiB, from {src}, "
        f"{src.stat().st_size / 2**20:.2f} MiB)"
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from ncdpo.plotting import plot_runs

    out = plot_runs(args.runs, args.out, args.x, args.y, group=not args.no_group, smooth_window=args.smooth)
    print(f"wrote {out}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from ncdpo.envs.registry import TASKS
    from ncdpo.shipped import asset_dir, available

    for t in TASKS.values():
        preset = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in t.preset.items())
        print(f"{t.id:16s} {t.description}\n{'':16s} preset: {preset or '(none)'}")
        if t.id in available():
            has_data = any((asset_dir(t.id) / f).is_file() for f in ("medium.hdf5", "demos.hdf5"))
            what = "behaviour-cloned diffusion policy" + ("; its dataset" if has_data else "")
            print(f"{'':16s} shipped: shipped:{t.id} ({what})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ncdpo.sweep import run_sweep

    return run_sweep(args.target, address=args.address, resume=args.resume)
