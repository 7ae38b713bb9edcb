"""Checkpoints: one safetensors file holding weights, normaliser statistics, the config and counters.

Files are written atomically (temporary file in the same folder, fsync, rename), so a crash never leaves a
half-written checkpoint under the final name, and carry a SHA-256 of their tensor data that loading checks. Loading
checks the format and that every tensor fits the
policy the config describes; any problem is a one-line :class:`NcdpoError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ncdpo.config import TrainConfig, from_dict, to_dict
from ncdpo.errors import NcdpoError

FORMAT = "ncdpo-checkpoint"
FORMAT_VERSION = "1"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either the old or the complete new content."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # disk full, permissions, ...: the old file (if any) is untouched
            raise NcdpoError(
                f"could not write {path}: {e.strerror or e} (an existing file there was left as it was)"
            ) from e
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text (result tables, CSV summaries, JSON)."""
    atomic_write_bytes(path, text.encode())


class AtomicText(io.StringIO):
    """``with AtomicText(path) as f: ...`` collects text and writes it atomically when the block succeeds."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(newline="")
        self.path = Path(path)

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            atomic_write_text(self.path, self.getvalue())
        super().__exit__(exc_type, *rest)


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    config: TrainConfig
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def obs_dim(self) -> int:
        return int(self.meta["obs_dim"])

    @property
    def act_dim(self) -> int:
        return int(self.meta["act_dim"])

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix.`` with the prefix stripped."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(
    path: str | Path,
    cfg: TrainConfig,
    modules: dict[str, torch.nn.Module],
    extra_tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> None:
    """Save ``modules``' state dicts (under their names) plus ``extra_tensors`` and ``meta``, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().cpu().contiguous().clone()
    tensors.update({k: v.detach().cpu().contiguous().clone() for k, v in extra_tensors.items()})
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(to_dict(cfg))}
    header.update({k: json.dumps(v) for k, v in meta.items()})
    blob = st_save(tensors, metadata=header)
    header["sha256"] = hashlib.sha256(blob[8 + int.from_bytes(blob[:8], "little") :]).hexdigest()  # of the tensor data
    atomic_write_bytes(path, st_save(tensors, metadata=header))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, a run folder (its final checkpoint, else its newest periodic one), or ``shipped:TASK``."""
    from ncdpo.shipped import resolve

    p = resolve(path, "checkpoint")
    if p.is_dir():
        ck = p / "checkpoints"
        if (ck / "final.safetensors").is_file():
            return ck / "final.safetensors"
        periodic = sorted(ck.glob("iter_*.safetensors")) if ck.is_dir() else []
        if periodic:
            return periodic[-1]
        raise NcdpoError(f"no checkpoint in run folder {p} (expected {ck}/final.safetensors)")
    if not p.is_file():
        raise NcdpoError(f"checkpoint not found: {p}")
    return p


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint (file or run folder)."""
    p = resolve_checkpoint(path)
    try:
        data = p.read_bytes()
        tensors = st_load(data)  # validates the whole file
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise NcdpoError(f"checkpoint {p} is corrupt or not a safetensors file ({str(e).splitlines()[0]})") from None
    digest = header.get("sha256")
    if digest is not None and hashlib.sha256(data[8 + n :]).hexdigest() != digest:
        raise NcdpoError(f"checkpoint {p} is corrupt (its tensor data does not match the checksum in its header)")
    if header.get("format") != FORMAT:
        raise NcdpoError(f"{p} is a safetensors file but not an ncdpo checkpoint (no '{FORMAT}' header)")
    if header.get("format_version") != FORMAT_VERSION:
        raise NcdpoError(
            f"checkpoint {p} has format version {header.get('format_version')}; this ncdpo reads {FORMAT_VERSION}"
        )
    try:
        cfg = from_dict(json.loads(header["config"]))
        meta = {
            k: json.loads(v) for k, v in header.items() if k not in ("format", "format_version", "config", "sha256")
        }
    except (KeyError, json.JSONDecodeError) as e:
        raise NcdpoError(f"checkpoint {p} has a damaged header ({e})") from None
    return Checkpoint(p, cfg, tensors, meta)


def export_policy(src: str | Path, dst: str | Path) -> Path:
    """Copy a checkpoint without its training state (optimiser, RNG, env states, raw pre-EMA weights, and the
    never-trained critic of a behaviour-cloned policy): what ``eval``, ``collect`` and ``train --init`` need, a
    fraction of the size (used for the shipped files)."""
    ck = load_checkpoint(src)
    drop: tuple[str, ...] = ("resume.", "train_policy.")
    meta = {k: v for k, v in ck.meta.items() if k != "resume"}
    if meta.get("critic_trained") is False:  # a behaviour-cloned policy's critic was never trained: leave it out
        drop += ("agent.critic.",)
        meta["critic_omitted"] = True
    keep = {k: v for k, v in ck.tensors.items() if not k.startswith(drop)}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(to_dict(ck.config))}
    header.update({k: json.dumps(v) for k, v in meta.items()})
    blob = st_save(keep, metadata=header)
    header["sha256"] = hashlib.sha256(blob[8 + int.from_bytes(blob[:8], "little") :]).hexdigest()
    atomic_write_bytes(dst, st_save(keep, metadata=header))
    return Path(dst)


def load_module_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error naming the first mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        k = (missing or unexpected)[0]
        kind = "lacks" if missing else "has an unexpected"
        raise NcdpoError(
            f"{what} does not fit this policy: it {kind} tensor '{k}' (different architecture or algorithm)"
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise NcdpoError(
                f"{what} does not fit this policy: '{k}' has shape {tuple(state[k].shape)} in the checkpoint "
                f"but {tuple(v.shape)} here (different architecture, horizon or env)"
            )
    module.load_state_dict(state)
