"""What the benchmark scripts share, so each script keeps only its experiment.

- **Runs**: :func:`run_train` skips a finished run, continues an interrupted one (``ncdpo train --resume``, with the
  harness's ``--total-env-steps``: a rerun with another budget shortens or extends it; for schedules that depend on
  the budget, such as ``--ppo.anneal-lr``, that is not the same as a fresh run) and starts the others afresh,
  appending the console output to ``<run>.log``; :func:`run_jobs` runs a list of them side by side as Ray tasks
  (on this machine, or on a cluster with ``--address``), retrying a job whose worker died.
- **One evaluation protocol**: :func:`evaluate` runs ``ncdpo eval`` over complete episodes with one seed,
  :data:`EVAL_SEED` unless ``--eval-seed`` says otherwise, and caches the result as JSON (with its seed).
- **One progress reader**: :func:`read_log`, :func:`value_at`, :func:`run_cost`.
- **One table and plot writer**: :func:`mean_std`, :func:`write_table`, :func:`write_csv`, :func:`plot_curves`
  (mean ± std over seeds, the starting BC level drawn where there is one).
- **One throughput loop**: :func:`raw_env_sps`, the raw vector env with random actions.
- **Common options**: :func:`add_common_args`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

NCDPO = [sys.executable, "-m", "ncdpo.cli"]
ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
EVAL_SEED = 424242
"""The evaluation seed of every benchmark table (the manipulation tables'). ``--eval-seed`` reproduces older
figures: 777 for the multi-agent tables of RESULTS section 7, 0 for the from-scratch table of section 1."""


# ---------------------------------------------------------------------------------------------- options
def add_common_args(
    ap: argparse.ArgumentParser,
    *,
    steps: int,
    episodes: int,
    out: str,
    jobs: int | None = None,
    seeds: Sequence[int] = (1, 2, 3),
) -> None:
    """``--seeds --steps --jobs --address --episodes --eval-seed --out --summarize``, with this script's defaults."""
    ap.add_argument("--seeds", nargs="+", type=int, default=list(seeds))
    ap.add_argument("--steps", type=int, default=steps, help=f"env steps per run (default {steps})")
    ap.add_argument(
        "--jobs",
        type=int,
        default=jobs or os.cpu_count() or 1,
        help="runs side by side, one torch thread each (default: %(default)s)",
    )
    ap.add_argument(
        "--address", default="", help="HOST:PORT of a Ray cluster to run the jobs on (default: Ray on this machine)"
    )
    ap.add_argument("--episodes", type=int, default=episodes, help="evaluation episodes per policy and mode")
    ap.add_argument("--eval-seed", type=int, default=EVAL_SEED, help=f"evaluation seed (default {EVAL_SEED})")
    ap.add_argument("--out", default=str(ROOT / "results" / out))
    ap.add_argument("--summarize", action="store_true", help="only rebuild tables and plots from finished runs")


# ---------------------------------------------------------------------------------------------- runs
def finished(run: Path) -> bool:
    """A run counts as done when its final checkpoint, or (in a clone without checkpoints) its evaluation
    (``eval.json``, or ``eval_det.json`` for the manipulation harness), exists."""
    return (run / "checkpoints" / "final.safetensors").is_file() or any(
        (run / f).is_file() for f in ("eval.json", "eval_det.json")
    )


def resumable(run: Path) -> bool:
    """An interrupted run with a checkpoint that ``ncdpo train --resume`` can continue."""
    from ncdpo.sweep import run_resumable

    return run_resumable(run)


def run_args(seed: int, steps: int, keep: int = 1, threads: bool = True) -> list[str]:
    """The ``ncdpo train`` options every harness run shares: seed, budget, no progress bar, ``keep`` periodic
    checkpoints, and one torch thread (``threads=False``: torch's default, for runs whose subprocess envs use the
    cores)."""
    one = ["--torch-threads", "1"] if threads else []
    return [
        "--seed",
        str(seed),
        "--total-env-steps",
        str(steps),
        *one,
        "--progress",
        "false",
        "--keep-checkpoints",
        str(keep),
    ]


def run_train(run: Path, train_args: list[str]) -> str:
    """Skip, continue or start the run ``run`` (``train_args``: the ``ncdpo train`` options of a fresh start): what
    a sweep trial does (:func:`ncdpo.sweep.train_or_resume`; the harness's budget wins, so a rerun with another
    ``--steps`` shortens or extends an interrupted run). A training process killed by a signal (its Ray worker
    died) raises :class:`ncdpo.sweep.TrialInterrupted`, which Ray retries from the newest checkpoint."""
    from ncdpo.sweep import TrialInterrupted, train_or_resume

    if finished(run):
        return f"{run.name}: done already"
    t0 = time.time()
    log_path = run.parent / f"{run.name}.log"
    rc = train_or_resume(run, train_args, log_path)
    if rc < 0:
        raise TrialInterrupted(f"{run.name}: training killed by signal {-rc}")
    if rc != 0 and not finished(run):  # (a resume that found the run complete restores its final checkpoint)
        raise SystemExit(f"{run.name} failed (exit {rc}); see {log_path}")
    return f"{run.name}: {time.time() - t0:.0f} s"


def recipe_configs(family: str) -> dict[str, Path]:
    """The shipped recipe files of a task family (``locomotion``, ``manipulation``), per algorithm; ``ncdpo_noise`` is
    NCDPO with its noise policy (``configs/noise_<family>.yaml``, where there is one)."""
    configs = {"ncdpo": REPO / "configs" / f"finetune_{family}.yaml", "dppo": REPO / "configs" / f"dppo_{family}.yaml"}
    noise = REPO / "configs" / f"noise_{family}.yaml"
    return {**configs, "ncdpo_noise": noise} if noise.is_file() else configs


def run_finetune(out: Path, task: str, algo: str, config: Path, seed: int, steps: int, **run_kw: Any) -> str:
    """Fine-tune ``shipped:TASK`` with ``algo`` (``ncdpo_noise``: NCDPO, its recipe file turns the noise policy on)
    and its recipe file, as ``out/<task>__<algo>__s<seed>``."""
    args = ["--algo", algo.split("_")[0], "--init", f"shipped:{task}", "--config", str(config)]
    return run_train(out / f"{task}__{algo}__s{seed}", args + run_args(seed, steps, **run_kw))


def run_jobs(fn: Callable[..., str], jobs: Iterable[tuple], n_jobs: int, address: str = "") -> None:
    """``fn(*job)`` for every job as Ray tasks (:func:`ncdpo.sweep.run_jobs`): ``n_jobs`` at a time on a Ray instance
    started here, or one CPU each on the cluster at ``address``; each one's message printed in job order. A job
    whose worker dies is retried, and its run resumes from the newest checkpoint."""
    import ray.cloudpickle

    from ncdpo import sweep

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not find this file
    sweep.run_jobs(fn, jobs, n_jobs, address)


def seeds_on_disk(task_dir: Path, task: str, algos: list[str], seeds: list[int]) -> list[int]:
    """``seeds`` and every other seed with a run folder of one of ``algos`` in ``task_dir``, in order (so a table's
    rows do not depend on how the harness was called)."""
    found = {
        int(m.group(1))
        for a in algos
        for d in task_dir.glob(f"{task}__{a}__s*")
        if d.is_dir() and (m := re.fullmatch(rf"{re.escape(task)}__{re.escape(a)}__s(\d+)", d.name))
    }
    return sorted(found | set(seeds))


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(
    target: str | Path,
    res: Path,
    episodes: int,
    seed: int = EVAL_SEED,
    sampled: bool = False,
    n_envs: int | None = None,
    legacy_seed: int | None = None,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """``ncdpo eval TARGET`` over ``episodes`` complete episodes with ``seed``, cached in the JSON file ``res``
    (``extra``: more ``ncdpo eval`` options, e.g. ``--noise-mean``).

    A cached result of another seed is evaluated again; one written before results recorded their seed counts as
    ``legacy_seed`` (the seed its script used then). Without a checkpoint to evaluate (a clone holds only the raw
    results), asking for another seed is a one-line error naming the seed that reproduces the cached table.
    """
    if res.is_file():
        cached = json.loads(res.read_text())
        was = cached.get("seed", legacy_seed)
        if was == seed:
            return cached
        path = Path(str(target))
        evaluable = str(target).startswith("shipped:") or path.is_file() or any(path.glob("checkpoints/*.safetensors"))
        if not evaluable:
            raise SystemExit(
                f"{res} was evaluated with seed {was} and {target} has no checkpoint to evaluate with "
                f"seed {seed}: pass --eval-seed {was} to rebuild the table from the cached results"
            )
    extra = [*(["--sampled"] if sampled else []), *(["--n-envs", str(n_envs)] if n_envs else []), *extra]
    subprocess.check_call(
        [*NCDPO, "eval", str(target), "--episodes", str(episodes), "--seed", str(seed), "--json", str(res), *extra],
        stdout=subprocess.DEVNULL,
    )
    return json.loads(res.read_text())


# ---------------------------------------------------------------------------------------------- progress
def read_log(run: Path) -> list[dict[str, str]]:
    """The rows of a run's ``progress.csv``."""
    with open(run / "progress.csv") as f:
        return list(csv.DictReader(f))


def value_at(log: list[dict[str, str]], step: int, key: str = "charts/episodic_return", window: int = 5) -> float:
    """Mean of ``key`` over the last ``window`` logged iterations at or before env step ``step``."""
    pts = [float(r[key]) for r in log if r.get(key) and int(r["env_steps"]) <= step]
    return float(np.mean(pts[-window:])) if pts else math.nan


def steps_to_fraction(
    runs: Sequence[Path], key: str = "charts/success_rate", frac: float = 0.9, window: int = 5, skip: int = 3
) -> tuple[float, float]:
    """Sample efficiency: ``(final, env step)`` where the seed-mean curve of ``key`` (iteration by iteration, a moving
    average over ``window`` iterations) first reaches ``frac`` of its final value (its last smoothed point).

    The first ``skip`` iterations are left out: a run's first iterations count only the episodes that ended early
    (on the manipulation tasks, only successes) and fit a fresh critic."""
    logs = [read_log(r) for r in runs]
    n = min(len(lg) for lg in logs)
    if n <= skip:
        return math.nan, math.nan
    ys = np.array([[float(r[key]) if r.get(key) not in (None, "") else math.nan for r in lg[:n]] for lg in logs])
    xs = np.array([[float(r["env_steps"]) for r in lg[:n]] for lg in logs]).mean(0)
    y = np.nanmean(ys, 0)
    smooth = np.array([np.nanmean(y[max(skip, i - window + 1) : i + 1]) for i in range(skip, n)])
    final = float(smooth[-1])
    hit = np.nonzero(smooth >= frac * final)[0]
    return final, float(xs[skip + hit[0]]) if len(hit) else math.nan


def run_cost(log: list[dict[str, str]]) -> dict[str, float]:
    """Wall time, env steps, seconds per iteration (rollout + update), update seconds and peak memory of a run."""

    def mean(key: str) -> float:
        vals = [float(r[key]) for r in log if r.get(key)]
        return float(np.mean(vals)) if vals else math.nan

    mem = [float(r["perf/peak_mem_mb"]) for r in log if r.get("perf/peak_mem_mb")]
    return {
        "wall_s": float(log[-1]["wall_s"]),
        "env_steps": int(log[-1]["env_steps"]),
        "s_per_iteration": mean("perf/rollout_s") + mean("perf/update_s"),
        "update_s": mean("perf/update_s"),
        "sps": mean("charts/SPS"),
        "peak_mem_mb": max(mem) if mem else math.nan,
    }


# ---------------------------------------------------------------------------------------------- tables, plots
def mean_std(xs: Sequence[float], digits: int = 0, scale: float = 1.0, unit: str = "") -> str:
    """``"m ± s"`` over seeds (``"-"`` for none)."""
    if not len(xs):
        return "-"
    a = scale * np.asarray(xs, np.float64)
    return f"{a.mean():.{digits}f}{unit} ± {a.std():.{digits}f}"


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from ncdpo.checkpoint import AtomicText

    with AtomicText(path) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_table(path: Path, lines: Sequence[str]) -> str:
    """The markdown ``lines`` into ``path`` (atomically); returns the text."""
    from ncdpo.checkpoint import atomic_write_text

    md = "\n".join(lines) + "\n"
    atomic_write_text(path, md)
    return md


def plot_curves(
    runs: Sequence[Path],
    out: Path,
    y: str = "charts/episodic_return",
    title: str = "",
    smooth: int = 1,
    baseline: float | None = None,
    baseline_label: str = "BC",
) -> Path:
    """``y`` against env steps, mean ± std over the seeds of each variant, with the starting level ``baseline``."""
    from ncdpo.plotting import plot_runs

    levels = {baseline_label: baseline} if baseline is not None and math.isfinite(baseline) else {}
    return plot_runs(runs, out, y=y, smooth_window=smooth, title=title, levels=levels)


# ---------------------------------------------------------------------------------------------- throughput
def raw_env_sps(
    env_id: str,
    n_envs: int,
    act_steps: int = 1,
    decisions: int = 0,
    seconds: float = 0.0,
    vector: str = "auto",
    warmup: int = 1,
) -> float:
    """Env steps/s of the raw vector env with uniformly random actions (continuous or discrete), after ``warmup``
    decisions (subprocess start, numba compilation): ``decisions`` steps, or as many as fit in ``seconds``."""
    from ncdpo.envs.registry import done_values, make_vec_env

    envs = make_vec_env(env_id, n_envs, act_steps, vector=vector)
    try:
        rng = np.random.default_rng(0)
        space = envs.single_action_space

        def actions() -> np.ndarray:
            if hasattr(space, "n"):
                return rng.integers(0, space.n, envs.num_envs)
            return rng.uniform(-1, 1, (envs.num_envs, *space.shape)).astype(np.float32)

        envs.reset(seed=0)
        for _ in range(warmup):
            envs.step(actions())
        steps, n, t0 = 0, 0, time.perf_counter()
        while (n < decisions) if decisions else (time.perf_counter() - t0 < seconds):
            _, _, term, trunc, info = envs.step(actions())
            steps += int(done_values(info, "env_steps", term | trunc).sum())
            n += 1
        return steps / (time.perf_counter() - t0)
    finally:
        envs.close()
