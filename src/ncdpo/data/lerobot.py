"""LeRobot datasets (a local folder, codebase v2.0/v2.1 and v3.0), read with pyarrow alone (not the ``lerobot``
package, which would replace the pinned torch)::

    meta/info.json        codebase_version, fps, features {name: {dtype, shape, names}}, data_path, ...
    meta/episodes.jsonl   (v2.x) one {"episode_index", "length", "tasks"} per line
    meta/episodes/...     (v3.0) parquet files with episode_index, length, ...
    data/**/*.parquet     one row per frame: episode_index, frame_index, observation.state, action, optional
                          next.reward, next.done; image features (dtype "image") as encoded PNG/JPEG bytes

v2.x writes one parquet file per episode (``data/chunk-000/episode_000000.parquet``), v3.0 several episodes per
file (``data/chunk-000/file-000.parquet``); both are read the same way: every frame file, grouped by
``episode_index`` and ordered by ``frame_index``. The observation is the features that ``--dataset-obs-keys``
names (default ``observation.state``), the action the feature ``--dataset-action-key`` names (default
``action``). A missing ``next.reward`` reads as zero reward; an episode whose last ``next.done`` is set counts as
terminated, any other as cut. Video-encoded features (dtype ``video``, MP4) need a video decoder this package
does not depend on: they are a one-line error.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ncdpo.data.dataset import Dataset, Episode, bounds_for
from ncdpo.data.options import ReadOptions, assemble, key_pairs
from ncdpo.errors import NcdpoError

VERSIONS = ("v2.0", "v2.1", "v3.0")


def is_lerobot(path: Path) -> bool:
    return path.is_dir() and (path / "meta" / "info.json").is_file()


def read_info(path: Path) -> dict[str, Any]:
    info_path = path / "meta" / "info.json"
    if not info_path.is_file():
        raise NcdpoError(f"dataset folder {path} has no meta/info.json (not a LeRobot dataset)")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NcdpoError(f"dataset {path}: meta/info.json is not readable JSON ({e})") from None
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise NcdpoError(f"dataset {path}: meta/info.json has no 'features' table")
    version = str(info.get("codebase_version", ""))
    if version not in VERSIONS:
        raise NcdpoError(
            f"dataset {path}: LeRobot codebase_version '{version}' is not supported (supported: {', '.join(VERSIONS)})"
        )
    return info


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise NcdpoError("reading a LeRobot dataset needs pyarrow (pip install pyarrow)") from None
    return pq


def _read_table(files: list[Path], path: Path) -> Any:
    import pyarrow as pa

    pq = _pyarrow()
    try:
        tables = [pq.read_table(p) for p in files]
        return pa.concat_tables(tables, promote_options="default")
    except (OSError, pa.ArrowException) as e:
        first = str(e).splitlines()[0]
        raise NcdpoError(f"dataset {path}: a parquet file is damaged or inconsistent ({first})") from None


def _column(table: Any, name: str, feature: dict[str, Any], where: str) -> np.ndarray:
    """One feature as a numpy array with a leading frame axis (images decoded to uint8 (H, W, 3))."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    dtype = str(feature.get("dtype", ""))
    if dtype == "image":
        from PIL import Image

        out = []
        for item in col.to_pylist():
            data = item.get("bytes") if isinstance(item, dict) else item
            if not data:
                raise NcdpoError(f"{where}: image feature '{name}' has a frame without encoded bytes")
            out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.uint8))
        return np.stack(out)
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), -1) if len(col) else flat.reshape(0, 0)
    return col.to_numpy(zero_copy_only=False)


def _episode_lengths(path: Path, version: str) -> dict[int, int]:
    """Episode index -> length from the episode metadata, where it is there."""
    meta = path / "meta"
    lengths: dict[int, int] = {}
    if version.startswith("v2"):
        f = meta / "episodes.jsonl"
        if f.is_file():
            for line in f.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    lengths[int(row["episode_index"])] = int(row["length"])
        return lengths
    files = sorted((meta / "episodes").glob("**/*.parquet"))
    if files:
        t = _read_table(files, path)
        if "episode_index" in t.column_names and "length" in t.column_names:
            for e, n in zip(t.column("episode_index").to_pylist(), t.column("length").to_pylist()):
                lengths[int(e)] = int(n)
    return lengths


def read_lerobot(path: Path, opts: ReadOptions) -> Dataset:
    """A :class:`Dataset` from a local LeRobot dataset folder (see the module docstring)."""
    info = read_info(path)
    features: dict[str, dict[str, Any]] = info["features"]
    version = str(info["codebase_version"])
    pairs = key_pairs(opts.obs_keys or ("observation.state",))
    act_key = opts.action_key or "action"
    for _, k in pairs + [("", act_key)]:
        if k not in features:
            floats = [n for n, f in features.items() if f.get("dtype") in ("float32", "float64", "image", "video")]
            raise NcdpoError(f"dataset {path} has no feature '{k}' (it has: {', '.join(floats)})")
        if features[k].get("dtype") == "video":
            raise NcdpoError(
                f"dataset {path}: feature '{k}' is video-encoded (MP4); decoding video needs a decoder this package "
                "does not depend on: read state keys (--dataset-obs-keys) or store the frames as LeRobot 'image' "
                "features"
            )
    files = sorted((path / "data").glob("**/*.parquet"))
    if not files:
        raise NcdpoError(f"dataset {path} has no frame files (data/**/*.parquet)")
    table = _read_table(files, path)
    where = f"dataset {path}"
    for need in ("episode_index", *{k for _, k in pairs}, act_key):
        if need not in table.column_names:
            raise NcdpoError(f"{where}: the frame files lack column '{need}'")
    ep_idx = table.column("episode_index").to_numpy().astype(np.int64)
    frame = (
        table.column("frame_index").to_numpy().astype(np.int64)
        if "frame_index" in table.column_names
        else np.arange(len(ep_idx))
    )
    parts = {k: _column(table, k, features[k], where) for k in {k for _, k in pairs}}
    actions = _column(table, act_key, features[act_key], where).astype(np.float32)
    if actions.ndim == 1:
        actions = actions[:, None]
    rewards = (
        _column(table, "next.reward", features.get("next.reward", {}), where).astype(np.float32).reshape(-1)
        if "next.reward" in table.column_names
        else np.zeros(len(ep_idx), np.float32)
    )
    done = (
        _column(table, "next.done", {}, where).astype(bool).reshape(-1)
        if "next.done" in table.column_names
        else np.zeros(len(ep_idx), bool)
    )
    lengths = _episode_lengths(path, version)
    order = np.lexsort((frame, ep_idx))
    episodes, indices = [], []
    for e in np.unique(ep_idx):
        rows = order[ep_idx[order] == e]
        T = len(rows)
        if e in lengths and lengths[int(e)] != T:
            raise NcdpoError(f"{where}: episode {e} has {T} frames but the episode metadata says {lengths[int(e)]}")
        if T == 0:
            raise NcdpoError(f"{where}: episode {e} is empty")
        obs = assemble({k: v[rows] for k, v in parts.items()}, pairs, opts.obs_spec is None, f"{where}, episode {e}")
        terminated = bool(done[rows][-1])
        dones = np.zeros(T, bool)
        dones[-1] = terminated
        episodes.append(Episode(obs, actions[rows], rewards[rows], dones, not terminated))
        indices.append(int(e))
    missing = sorted(set(lengths) - set(indices))
    if missing:
        raise NcdpoError(f"{where}: episode {missing[0]} is in the episode metadata but has no frames")
    if not episodes:
        raise NcdpoError(f"{where} holds no frames")
    lo, hi = bounds_for(opts.env_id, actions.shape[1])
    meta = {
        "source": "lerobot",
        "codebase_version": version,
        "fps": info.get("fps"),
        "robot_type": info.get("robot_type"),
        "obs_keys": [k for _, k in pairs],
        "action_key": act_key,
        "episode_index": indices,
    }
    return Dataset(episodes, opts.env_id, lo, hi, meta, str(path))
