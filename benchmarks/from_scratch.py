"""NCDPO vs MLP+PPO vs DPPO from random initialisation at the same env-step budget.

    python benchmarks/from_scratch.py --env Hopper-v5 --steps 300000 --seeds 1 2 3 --algos ncdpo ppo dppo --jobs 2

Each (algo, seed) run is an ordinary ``ncdpo train`` subprocess writing into
``benchmarks/results/from_scratch/<env>/<env>__<algo>__s<seed>``. The harness is resumable: a run whose
final checkpoint exists is not redone, an interrupted one is continued from its last checkpoint (``ncdpo train
--resume``). When all runs are done it evaluates
each final checkpoint (10 deterministic episodes), then writes ``summary.csv`` (return per run at fixed
step counts), ``table.md`` (mean ± std across seeds) and ``curves.png``. The raw ``progress.csv`` of every
run is kept so anyone can re-plot. ``--summarize`` only rebuilds the summary from existing runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ncdpo.checkpoint import AtomicText, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import NCDPO, finished, run_train  # noqa: E402

ROOT = Path(__file__).resolve().parent

# Settings shared by both algorithms, then each algorithm's own (the defaults of ncdpo train otherwise).
COMMON = [
    "--env.n-envs",
    "16",
    "--ppo.n-steps",
    "128",
    "--ppo.minibatch-size",
    "256",
    "--ppo.update-epochs",
    "10",
    "--horizon",
    "1",
    "--act-steps",
    "1",
    "--torch-threads",
    "1",
    "--save-every",
    "10",
    "--keep-checkpoints",
    "1",
    "--progress",
    "false",
]
# Variants: label -> (algo, its own options). "ncdpo" explores like MLP+PPO (a learnable, state-independent
# std starting at 1.0, in the normalised action space); "ncdpo-sigma0.3" is the first setting we ran (fixed
# std 0.3), kept for the record.
VARIANTS = {
    "ppo": ("ppo", ["--ppo.actor-lr", "3e-4"]),
    "ncdpo": (
        "ncdpo",
        [
            "--ppo.actor-lr",
            "3e-4",
            "--diffusion.denoising-steps",
            "10",
            "--diffusion.clip-last-step",
            "false",
            "--diffusion.sigma-exp",
            "learnable",
            "--diffusion.sigma-exp-start",
            "1.0",
        ],
    ),
    # the same with an x0-predicting denoiser: a random init then starts noise-independent, like an MLP (RESULTS
    # section 7)
    "ncdpo-x0": (
        "ncdpo",
        [
            "--ppo.actor-lr",
            "3e-4",
            "--diffusion.denoising-steps",
            "10",
            "--diffusion.clip-last-step",
            "false",
            "--diffusion.sigma-exp",
            "learnable",
            "--diffusion.sigma-exp-start",
            "1.0",
            "--diffusion.prediction",
            "x0",
        ],
    ),
    # DPPO with its own defaults (all K'=K=10 steps fine-tuned, std floor 0.1, clip 0.01 -> 0.001 schedule,
    # actor lr 1e-4); a minibatch of 2560 (decision, step) samples = 256 decisions, as for the others.
    "dppo": (
        "dppo",
        [
            "--ppo.actor-lr",
            "1e-4",
            "--ppo.clip-coef",
            "0.01",
            "--ppo.minibatch-size",
            "2560",
            "--diffusion.denoising-steps",
            "10",
            "--dppo.ft-denoising-steps",
            "10",
        ],
    ),
    "ncdpo-sigma0.3": (
        "ncdpo",
        [
            "--ppo.actor-lr",
            "3e-4",
            "--diffusion.denoising-steps",
            "10",
            "--diffusion.clip-last-step",
            "false",
            "--diffusion.sigma-exp-start",
            "0.3",
        ],
    ),
}


def run_one(env: str, algo: str, seed: int, steps: int, out: Path) -> str:
    algo_name, algo_args = VARIANTS[algo]
    return run_train(
        out / f"{env}__{algo}__s{seed}",
        ["--algo", algo_name, "--env", env, "--seed", str(seed), "--total-env-steps", str(steps), *COMMON, *algo_args],
    )


def evaluate(run: Path, episodes: int = 10) -> float:
    res = run / "eval.json"
    if not res.is_file():
        subprocess.check_call(
            [*NCDPO, "eval", str(run), "--episodes", str(episodes), "--json", str(res)], stdout=subprocess.DEVNULL
        )
    return float(json.loads(res.read_text())["return_mean"])


def value_at(run: Path, step: int, window: int = 5) -> float:
    """Mean training-episode return over the last ``window`` logged iterations at or before ``step``."""
    with open(run / "progress.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["charts/episodic_return"]]
    pts = [float(r["charts/episodic_return"]) for r in rows if int(r["env_steps"]) <= step]
    return float(np.mean(pts[-window:])) if pts else float("nan")


def summarize(env: str, algos: list[str], seeds: list[int], steps: int, out: Path) -> str:
    sys.path.insert(0, str(ROOT.parent / "src"))
    from ncdpo.plotting import plot_runs

    marks = sorted({steps // 6, steps // 3, steps // 2, 2 * steps // 3, steps})
    rows, table, cost = [], {}, {}
    for algo in algos:
        for seed in seeds:
            run = out / f"{env}__{algo}__s{seed}"
            if not finished(run):
                continue
            with open(run / "progress.csv") as f:
                last = list(csv.DictReader(f))[-1]
            vals = [value_at(run, m) for m in marks]
            ev = evaluate(run)
            with open(run / "progress.csv") as f:
                log = list(csv.DictReader(f))
            upd = float(np.mean([float(r["perf/update_s"]) + float(r["perf/rollout_s"]) for r in log]))
            mem = max(float(r.get("perf/peak_mem_mb") or "nan") for r in log)
            rows.append([algo, seed, *vals, ev, float(last["wall_s"]), int(last["env_steps"]), upd, mem])
            table.setdefault(algo, []).append([*vals, ev])
            cost.setdefault(algo, []).append([upd, mem, float(last["wall_s"])])
    with AtomicText(out / "summary.csv") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "algo",
                "seed",
                *[f"return@{m}" for m in marks],
                "final_eval_return",
                "wall_s",
                "env_steps",
                "s_per_iteration",
                "peak_mem_mb",
            ]
        )
        w.writerows(rows)
    head = "| algo | seeds | " + " | ".join(f"{m // 1000}k" for m in marks) + " | final eval (det.) |"
    lines = [
        f"Training-episode return on {env} (mean ± std over seeds; each value averages the last 5 iterations "
        f"before the mark), and the final policy's deterministic return over 10 episodes.",
        "",
        head,
        "|" + "---|" * (len(marks) + 3),
    ]
    for algo, vals in table.items():
        a = np.asarray(vals)
        cells = [f"{m:.0f} ± {s:.0f}" for m, s in zip(a.mean(0), a.std(0))]
        lines.append(f"| {algo} | {len(vals)} | " + " | ".join(cells) + " |")
    lines += ["", "| algo | s / iteration (rollout + update) | peak MiB | wall s / run |", "|---|---|---|---|"]
    for algo, c in cost.items():
        c = np.asarray(c)
        lines.append(f"| {algo} | {c[:, 0].mean():.2f} | {np.nanmean(c[:, 1]):.0f} | {c[:, 2].mean():.0f} |")
    if {"ncdpo", "ppo"} <= table.keys():
        r = np.mean(np.asarray(table["ncdpo"])[:, len(marks) - 1]) / np.mean(
            np.asarray(table["ppo"])[:, len(marks) - 1]
        )
        lines += ["", f"NCDPO / MLP+PPO mean training return at {marks[-1] // 1000}k steps: {r:.2f}"]
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "table.md", md)
    runs = [
        out / f"{env}__{a}__s{s}"
        for a in algos
        for s in seeds
        if (out / f"{env}__{a}__s{s}" / "progress.csv").is_file()
    ]
    if runs:
        plot_runs(runs, out / "curves.png", smooth_window=5, title=f"{env}: from scratch, mean ± std over seeds")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--algos", nargs="+", default=["ncdpo", "ppo"], choices=sorted(VARIANTS), help="variants to run")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=300_000)
    ap.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="runs in parallel, one torch thread each (default: the core count)",
    )
    ap.add_argument("--out", default=str(ROOT / "results" / "from_scratch"))
    ap.add_argument("--summarize", action="store_true", help="only rebuild the summary from finished runs")
    args = ap.parse_args()
    out = Path(args.out) / args.env
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        jobs = [(a, s) for s in args.seeds for a in args.algos]
        with ThreadPoolExecutor(args.jobs) as pool:
            for msg in pool.map(lambda j: run_one(args.env, j[0], j[1], args.steps, out), jobs):
                print(msg, flush=True)
    print(summarize(args.env, args.algos, args.seeds, args.steps, out))


if __name__ == "__main__":
    main()
