"""Fine-tuning of the shipped behaviour-cloned locomotion policies, several algorithms and seeds per task.

    python benchmarks/finetune.py --tasks Hopper-v5 Walker2d-v5 HalfCheetah-v5 --steps 1000000 --seeds 1 2 3 --jobs 2
    python benchmarks/finetune.py --algos ncdpo dppo --tasks Hopper-v5 --steps 1000000

Each (task, algo, seed) run is ``ncdpo train --algo <algo> --init shipped:<task> --config <config>`` with
``configs/finetune_locomotion.yaml`` for NCDPO and ``configs/dppo_locomotion.yaml`` for DPPO, writing into
``benchmarks/results/finetune/<task>/<task>__<algo>__s<seed>``. Resumable: a run whose final
checkpoint exists is not redone, an interrupted one is continued from its last checkpoint (``ncdpo train
--resume``). Then every final checkpoint and the BC checkpoint are evaluated with the same protocol (``--episodes``
deterministic episodes, fixed seed) and
``summary.csv``, ``table.md`` and one ``curves_<task>.png`` per task (logged evaluation return, mean ± std
over seeds) are written. The raw ``progress.csv`` of every run is kept. ``--summarize`` only rebuilds the
summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ncdpo.checkpoint import AtomicText, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import eval_json, finished, run_train  # noqa: E402

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
CONFIGS = {"ncdpo": REPO / "configs" / "finetune_locomotion.yaml", "dppo": REPO / "configs" / "dppo_locomotion.yaml"}
EVAL_SEED = 424242


def run_one(task: str, algo: str, seed: int, steps: int, out: Path) -> str:
    return run_train(
        out / f"{task}__{algo}__s{seed}",
        [
            "--algo",
            algo,
            "--init",
            f"shipped:{task}",
            "--config",
            str(CONFIGS[algo]),
            "--seed",
            str(seed),
            "--total-env-steps",
            str(steps),
            "--torch-threads",
            "1",
            "--progress",
            "false",
            "--keep-checkpoints",
            "2",
        ],
    )


def evaluate(target: str, res: Path, episodes: int) -> dict:
    return eval_json(target, res, episodes, EVAL_SEED)


def peak_mem(log: list[dict]) -> float:
    """Largest logged peak memory of a run (NaN for runs logged before the metric existed)."""
    vals = [float(r["perf/peak_mem_mb"]) for r in log if r.get("perf/peak_mem_mb")]
    return max(vals) if vals else float("nan")


def finite_mean(xs: list[float]) -> float:
    vals = [x for x in xs if np.isfinite(x)]
    return float(np.mean(vals)) if vals else float("nan")


def steps_to_reach(runs: list[Path], target: float) -> float:
    """First env step at which the seed-averaged logged evaluation return reaches ``target`` (nan if never)."""
    sys.path.insert(0, str(REPO / "src"))
    from ncdpo.plotting import load_curve

    curves = [load_curve(r, "env_steps", "eval/return_mean") for r in runs]
    n = min(len(c[0]) for c in curves)
    if n == 0:
        return float("nan")
    xs = np.mean([c[0][:n] for c in curves], 0)
    ys = np.mean([c[1][:n] for c in curves], 0)
    hit = np.nonzero(ys >= target)[0]
    return float(xs[hit[0]]) if len(hit) else float("nan")


def summarize(tasks: list[str], algos: list[str], seeds: list[int], root: Path, episodes: int) -> str:
    sys.path.insert(0, str(REPO / "src"))
    from ncdpo.plotting import plot_runs
    from ncdpo.shipped import ASSETS

    rows, lines, notes = [], [], []
    lines += [
        f"Deterministic evaluation over {episodes} episodes (eval seed {EVAL_SEED}); fine-tuned: mean ± std "
        "over seeds of each seed's mean. Dataset: complete episodes of the shipped medium dataset.",
        "",
        "| task | algo | expert | dataset | BC | fine-tuned | env steps | seeds | fine-tuned / BC | wall s / run "
        "| update s / iter | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        out = root / task
        summary = json.loads((ASSETS / task / "summary.json").read_text())
        bc = evaluate(f"shipped:{task}", out / "bc_eval.json", episodes)
        d = summary["datasets"]["medium"]
        task_runs, finals_by_algo = [], {}
        for algo in algos:
            finals, walls, steps, runs, upd, mem = [], [], [], [], [], []
            for seed in seeds:
                run = out / f"{task}__{algo}__s{seed}"
                if not finished(run):
                    continue
                ev = evaluate(str(run), run / "eval.json", episodes)
                with open(run / "progress.csv") as f:
                    log = list(csv.DictReader(f))
                finals.append(ev["return_mean"])
                walls.append(float(log[-1]["wall_s"]))
                steps.append(int(log[-1]["env_steps"]))
                upd.append(np.mean([float(r["perf/update_s"]) for r in log]))
                mem.append(peak_mem(log))
                runs.append(run)
                rows.append(
                    [
                        task,
                        algo,
                        seed,
                        ev["return_mean"],
                        ev["return_std"],
                        bc["return_mean"],
                        int(log[-1]["env_steps"]),
                        float(log[-1]["wall_s"]),
                    ]
                )
            if not finals:
                continue
            ft = np.asarray(finals)
            finals_by_algo[algo] = (ft.mean(), runs)
            task_runs += runs
            lines.append(
                f"| {task} | {algo} | {summary['expert_return']:.0f} | {d['complete_return_mean']:.0f} ± "
                f"{d['complete_return_std']:.0f} ({d['transitions']} transitions) | {bc['return_mean']:.0f} ± "
                f"{bc['return_std']:.0f} | {ft.mean():.0f} ± {ft.std():.0f} | {int(np.mean(steps))} | {len(ft)} | "
                f"{ft.mean() / bc['return_mean']:.2f} | "
                f"{np.mean(walls):.0f} | {np.mean(upd):.2f} | {finite_mean(mem):.0f} |"
            )
        if {"ncdpo", "dppo"} <= finals_by_algo.keys():
            target = finals_by_algo["dppo"][0]
            s_n = steps_to_reach(finals_by_algo["ncdpo"][1], target)
            s_d = steps_to_reach(finals_by_algo["dppo"][1], target)
            notes.append(
                f"- {task}: env steps for the seed-mean logged evaluation to reach DPPO's final return "
                f"({target:.0f}): NCDPO {s_n:.0f}, DPPO {s_d:.0f}"
            )
        if task_runs:
            plot_runs(
                task_runs,
                out / f"curves_{task}.png",
                y="eval/return_mean",
                title=f"{task}: fine-tuning from BC ({bc['return_mean']:.0f}), mean ± std over seeds",
            )
    with AtomicText(root / "summary.csv") as f:
        w = csv.writer(f)
        w.writerow(
            ["task", "algo", "seed", "final_eval_return", "final_eval_std", "bc_eval_return", "env_steps", "wall_s"]
        )
        w.writerows(rows)
    md = "\n".join(lines + ([""] + notes if notes else [])) + "\n"
    atomic_write_text(root / "table.md", md)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
    ap.add_argument("--algos", nargs="+", default=["ncdpo"], choices=sorted(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="runs in parallel, one torch thread each (default: the core count)",
    )
    ap.add_argument("--episodes", type=int, default=20, help="evaluation episodes per checkpoint")
    ap.add_argument("--out", default=str(ROOT / "results" / "finetune"))
    ap.add_argument("--summarize", action="store_true", help="only rebuild the summary from finished runs")
    args = ap.parse_args()
    root = Path(args.out)
    for task in args.tasks:
        (root / task).mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        jobs = [(t, a, s) for s in args.seeds for t in args.tasks for a in args.algos]
        with ThreadPoolExecutor(args.jobs) as pool:
            for msg in pool.map(lambda j: run_one(j[0], j[1], j[2], args.steps, root / j[0]), jobs):
                print(msg, flush=True)
    print(summarize(args.tasks, args.algos, args.seeds, root, args.episodes))


if __name__ == "__main__":
    main()
