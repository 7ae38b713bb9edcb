"""Learning-curve plots from run folders' ``progress.csv`` files."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ncdpo.errors import NcdpoError
from ncdpo.logger import read_csv


def load_curve(run_dir: str | Path, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) points of a run with NaN y dropped."""
    path = Path(run_dir) / "progress.csv" if Path(run_dir).is_dir() else Path(run_dir)
    if not path.is_file():
        raise NcdpoError(f"no progress.csv in {run_dir}")
    cols = read_csv(path)
    for key in (x, y):
        if key not in cols:
            raise NcdpoError(f"{path} has no column '{key}' (columns: {', '.join(cols)})")
    xs, ys = np.asarray(cols[x]), np.asarray(cols[y])
    keep = ~np.isnan(ys)
    return xs[keep], ys[keep]


def group_label(run_dir: str | Path) -> str:
    """A run folder's name without its seed suffix (``Hopper-v5__ncdpo__s2`` -> ``Hopper-v5__ncdpo``)."""
    return re.sub(r"__s\d+$", "", Path(run_dir).name)


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < 2:
        return y
    out = np.empty_like(y)
    for i in range(len(y)):
        out[i] = y[max(0, i - window + 1) : i + 1].mean()
    return out


def aggregate(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], n_points: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std across runs on a common grid (up to the shortest run's last x)."""
    x_max = min(c[0][-1] for c in curves)
    x_min = max(c[0][0] for c in curves)
    grid = np.linspace(x_min, x_max, n_points)
    ys = np.stack([np.interp(grid, cx, cy) for cx, cy in curves])
    return grid, ys.mean(0), ys.std(0)


def plot_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    x: str = "env_steps",
    y: str = "charts/episodic_return",
    group: bool = True,
    smooth_window: int = 1,
    title: str = "",
    levels: dict[str, float] | None = None,
) -> Path:
    """Plot ``y`` against ``x`` for each run (or mean ± std per group of seeds) into a PNG; ``levels`` draws
    labelled horizontal reference lines (e.g. the behaviour-cloned policy's return a fine-tuning run starts from)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for r in runs:
        cx, cy = load_curve(r, x, y)
        if len(cx) == 0:
            raise NcdpoError(f"run {r} has no values of '{y}' yet")
        groups.setdefault(group_label(r) if group else Path(r).name, []).append((cx, smooth(cy, smooth_window)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curves in groups.items():
        if len(curves) == 1:
            ax.plot(*curves[0], label=label)
        else:
            gx, mean, std = aggregate(curves)
            ax.plot(gx, mean, label=f"{label} (n={len(curves)})")
            ax.fill_between(gx, mean - std, mean + std, alpha=0.25)
    for label, level in (levels or {}).items():
        ax.axhline(level, color="0.4", linestyle="--", linewidth=1, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    import io

    from ncdpo.checkpoint import atomic_write_bytes

    png = io.BytesIO()
    fig.savefig(png, dpi=120, format="png")
    plt.close(fig)
    atomic_write_bytes(out, png.getvalue())
    return out


__all__ = ["aggregate", "group_label", "load_curve", "plot_runs", "smooth"]
