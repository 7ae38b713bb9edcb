"""Fine-tuning of the shipped behaviour-cloned locomotion policies, several algorithms and seeds per task.

    python benchmarks/finetune.py --tasks Hopper-v5 Walker2d-v5 HalfCheetah-v5 --steps 1000000 --seeds 1 2 3 --jobs 2
    python benchmarks/finetune.py --algos ncdpo dppo --tasks Hopper-v5 --steps 1000000

Each (task, algo, seed) run is ``ncdpo train --algo <algo> --init shipped:<task> --config <config>`` with
``configs/finetune_locomotion.yaml`` for NCDPO and ``configs/dppo_locomotion.yaml`` for DPPO, writing into
``benchmarks/results/finetune/<task>/<task>__<algo>__s<seed>``; resumable (``_harness.run_train``). Then every final
checkpoint and the BC checkpoint are evaluated with the harness's protocol (``--episodes`` deterministic episodes,
``--eval-seed``), and ``summary.csv``, ``table.md`` and one ``curves_<task>.png`` per task (logged evaluation
return, mean ± std over seeds, the BC level dashed) are written. ``--summarize`` only rebuilds the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

CONFIGS = H.recipe_configs("locomotion")
LEGACY_SEED = 424242  # the eval seed of results written before they recorded it


def run_one(task: str, algo: str, seed: int, steps: int, out: Path) -> str:
    return H.run_finetune(out, task, algo, CONFIGS[algo], seed, steps, keep=2)


def steps_to_reach(runs: list[Path], target: float) -> float:
    """First env step at which the seed-averaged logged evaluation return reaches ``target`` (nan if never)."""
    from ncdpo.plotting import load_curve

    curves = [load_curve(r, "env_steps", "eval/return_mean") for r in runs]
    n = min(len(c[0]) for c in curves)
    if n == 0:
        return float("nan")
    xs, ys = np.mean([c[0][:n] for c in curves], 0), np.mean([c[1][:n] for c in curves], 0)
    hit = np.nonzero(ys >= target)[0]
    return float(xs[hit[0]]) if len(hit) else float("nan")


def summarize(tasks: list[str], algos: list[str], seeds: list[int], root: Path, episodes: int, eval_seed: int) -> str:
    from ncdpo.shipped import ASSETS

    rows, notes = [], []
    lines = [
        f"Deterministic evaluation over {episodes} episodes (eval seed {eval_seed}); fine-tuned: mean ± std "
        "over seeds of each seed's mean. Dataset: complete episodes of the shipped medium dataset.",
        "",
        "| task | algo | expert | dataset | BC | fine-tuned | env steps | seeds | fine-tuned / BC | wall s / run "
        "| update s / iter | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        out = root / task
        summary = json.loads((ASSETS / task / "summary.json").read_text())
        bc = H.evaluate(f"shipped:{task}", out / "bc_eval.json", episodes, eval_seed, legacy_seed=LEGACY_SEED)
        d = summary["datasets"]["medium"]
        task_runs, finals_by_algo = [], {}
        for algo in algos:
            runs = [out / f"{task}__{algo}__s{seed}" for seed in seeds if H.finished(out / f"{task}__{algo}__s{seed}")]
            if not runs:
                continue
            evs = [H.evaluate(r, r / "eval.json", episodes, eval_seed, legacy_seed=LEGACY_SEED) for r in runs]
            costs = [H.run_cost(H.read_log(r)) for r in runs]
            finals = np.asarray([ev["return_mean"] for ev in evs])
            for r, ev, c in zip(runs, evs, costs):
                rows.append(
                    [
                        task, algo, r.name.rsplit("__s", 1)[1], ev["return_mean"], ev["return_std"],
                        bc["return_mean"], c["env_steps"], c["wall_s"]
                    ]
                )
            finals_by_algo[algo] = (finals.mean(), runs)
            task_runs += runs
            mem = [c["peak_mem_mb"] for c in costs if np.isfinite(c["peak_mem_mb"])]
            lines.append(
                f"| {task} | {algo} | {summary['expert_return']:.0f} | {d['complete_return_mean']:.0f} ± "
                f"{d['complete_return_std']:.0f} ({d['transitions']} transitions) | {bc['return_mean']:.0f} ± "
                f"{bc['return_std']:.0f} | {H.mean_std(finals)} | {int(np.mean([c['env_steps'] for c in costs]))} | "
                f"{len(finals)} | {finals.mean() / bc['return_mean']:.2f} | {np.mean([c['wall_s'] for c in costs]):.0f}"
                f" | {np.mean([c['update_s'] for c in costs]):.2f} | {np.mean(mem) if mem else float('nan'):.0f} |"
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
            H.plot_curves(
                task_runs,
                out / f"curves_{task}.png",
                y="eval/return_mean",
                baseline=bc["return_mean"],
                title=f"{task}: fine-tuning from BC ({bc['return_mean']:.0f}), mean ± std over seeds",
            )
    H.write_csv(
        root / "summary.csv",
        ["task", "algo", "seed", "final_eval_return", "final_eval_std", "bc_eval_return", "env_steps", "wall_s"],
        rows,
    )
    return H.write_table(root / "table.md", lines + ([""] + notes if notes else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
    ap.add_argument("--algos", nargs="+", default=["ncdpo"], choices=sorted(CONFIGS))
    H.add_common_args(ap, steps=1_000_000, episodes=20, out="finetune")
    args = ap.parse_args()
    root = Path(args.out)
    for task in args.tasks:
        (root / task).mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        jobs = [(t, a, s, args.steps, root / t) for s in args.seeds for t in args.tasks for a in args.algos]
        H.run_jobs(run_one, jobs, args.jobs, args.address)
    print(summarize(args.tasks, args.algos, args.seeds, root, args.episodes, args.eval_seed))


if __name__ == "__main__":
    main()
