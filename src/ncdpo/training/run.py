"""What every run shares, RL training (:mod:`ncdpo.training.trainer`) and behaviour cloning
(:mod:`ncdpo.training.bc`) alike: device and seeding, the run folder and its ``config.json``, the CSV/TensorBoard
logger (continued on resume), a progress bar, periodic checkpoints (pruned), finding the checkpoint to resume
from, and stopping cleanly on SIGINT/SIGTERM after the current iteration with a checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncdpo.checkpoint import Checkpoint, atomic_write_bytes, load_checkpoint, save_checkpoint
from ncdpo.config import TrainConfig, apply_overrides, to_dict
from ncdpo.errors import NcdpoError
from ncdpo.logger import Logger


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise NcdpoError(f"unknown device '{name}' (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NcdpoError(f"device '{name}' requested but CUDA is not available")
    return dev


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: the device's allocator peak on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # not on Windows
        return math.nan


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
            print(
                f"ncdpo: warning: skipped unreadable newer checkpoints: {'; '.join(bad)}; resuming from {path}",
                flush=True,
            )
        return ck
    raise NcdpoError(f"cannot resume {run_dir}: no usable checkpoint ({'; '.join(bad)})")


def resume_point(run_dir: str | Path, overrides: dict[str, Any] | None) -> tuple[Checkpoint, TrainConfig]:
    """The checkpoint a run continues from and its config, with the allowed ``overrides`` applied and the run
    folder pointing at ``run_dir`` (wherever the run was started)."""
    ck = newest_resumable_checkpoint(Path(run_dir))
    cfg = ck.config
    if overrides:
        cfg = apply_overrides(cfg, overrides, source="--resume override")
    cfg.out_dir, cfg.run_name = str(Path(run_dir).parent), Path(run_dir).name
    return ck, cfg


class stop_on_signals:
    """While active, SIGINT/SIGTERM ask the run to checkpoint after the current iteration and stop
    (a second signal interrupts at once)."""

    def __init__(self, run: "RunSkeleton") -> None:
        self.run = run
        self.old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.run.stop_requested:
            raise KeyboardInterrupt
        self.run.stop_requested = True
        self.run.stop_signal = signum
        print(
            f"\nncdpo: got {signal.Signals(signum).name}; stopping after this iteration with a checkpoint "
            "(send it again to stop at once)",
            flush=True,
        )

    def __enter__(self) -> "stop_on_signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)


class RunSkeleton:
    """The state and services of one run; subclasses add what they train and how (:meth:`run`)."""

    command = "train"
    """The ``ncdpo`` command that starts and resumes this kind of run (named in messages)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.run_dir = Path(cfg.out_dir) / (cfg.run_name or self.default_run_name())
        self.stop_requested = False
        self.stop_signal = 0  # the signal that stopped the run early, if any
        self.resumed_from: Path | None = None

    def default_run_name(self) -> str:
        return f"{self.cfg.env.id}__{self.cfg.algo}__s{self.cfg.seed}"

    @property
    def resumed(self) -> bool:
        return self.resumed_from is not None

    def open_logger(self, row: int, step: int, key: str = "iteration") -> Logger:
        """A fresh run folder and log, or (resumed) the log continued after the checkpoint's row ``row`` (its
        ``key`` column) and TensorBoard step ``step``."""
        if self.resumed:
            return Logger(self.run_dir, self.cfg.tensorboard, resume_iteration=row, resume_step=step, key=key)
        prepare_run_dir(self.run_dir, self.cfg)
        return Logger(self.run_dir, self.cfg.tensorboard)

    def progress_bar(self, total: int, initial: int, desc: str) -> Any:
        """A tqdm bar when ``progress`` is on, else None."""
        if not self.cfg.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc=desc)

    def write_checkpoint(
        self,
        name: str,
        modules: dict[str, torch.nn.Module],
        tensors: dict[str, torch.Tensor],
        meta: dict[str, Any],
        prune: bool = True,
    ) -> Path:
        """``checkpoints/<name>.safetensors`` (atomically), then the older periodic ones pruned."""
        path = self.run_dir / "checkpoints" / f"{name}.safetensors"
        save_checkpoint(path, self.cfg, modules, tensors, meta)
        if prune:
            prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints)
        return path

    def continue_hint(self) -> str:
        return f"continue with: ncdpo {self.command} --resume {self.run_dir}"

    def signals(self) -> stop_on_signals:
        return stop_on_signals(self)

    def evaluate_policy(self, agent: Any, obs_norm: Any, envs: Any = None) -> dict[str, float]:
        """The ``eval/*`` metrics of ``agent``: ``eval_episodes`` episodes of the run's task, seeded with the run's
        seed + 100000 (``envs``: a vector env to reuse)."""
        from ncdpo.envs.registry import env_kwargs
        from ncdpo.training.evaluation import eval_metrics, evaluate

        cfg = self.cfg
        r = evaluate(
            agent,
            obs_norm,
            cfg.env.id,
            cfg.eval_episodes,
            cfg.act_steps,
            cfg.eval_deterministic,
            seed=cfg.seed + 100_000,
            max_episode_steps=cfg.env.max_episode_steps,
            vector=cfg.env.vector,
            envs=envs,
            options=env_kwargs(cfg.env),
        )
        return eval_metrics(r)
