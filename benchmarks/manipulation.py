"""Manipulation fine-tuning: the shipped behaviour-cloned policies of the robosuite tasks -> NCDPO and -> DPPO.

    python benchmarks/manipulation.py --tasks lift can --algos ncdpo dppo --seeds 1 2 3 --steps 100000
    python benchmarks/manipulation.py --tasks lift can square --algos ncdpo_noise --seeds 1 2 3 --steps 100000
    python benchmarks/manipulation.py --raw-throughput     # raw vectorised env vs training, env steps/s on lift
    python benchmarks/manipulation.py --tasks lift --summarize

Each (task, algo, seed) run is ``ncdpo train --algo <algo> --init shipped:<task> --config <config>`` with
``configs/finetune_manipulation.yaml`` (NCDPO), ``configs/noise_manipulation.yaml`` (``ncdpo_noise``: NCDPO with
its noise policy) or ``configs/dppo_manipulation.yaml`` (DPPO): the same 8
subprocess envs and the same env steps per iteration. Runs go one at a time (each already uses every core
through its subprocess envs) into ``benchmarks/results/manipulation/<task>/<task>__<algo>__s<seed>`` and are
resumable like the other harnesses (``--jobs`` runs several at once where there are cores to spare).

Then the BC policy and every final policy are evaluated over ``--episodes`` episodes (fixed seed), with the
deterministic policy and the sampled one, and ``<task>/summary.csv``, ``<task>/table.md`` and
``<task>/curves_<task>.png`` (success rate of the training episodes, which run the sampled policy, mean ± std over
seeds) are written; ``summary.csv`` and ``table.md`` at the top join every task's. Raw
``progress.csv`` files are kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

CONFIGS = H.recipe_configs("manipulation")
LEGACY_SEED = 424242  # the eval seed of results written before they recorded it


def run_one(task: str, algo: str, seed: int, steps: int, out: Path) -> str:
    return H.run_finetune(out, task, algo, CONFIGS[algo], seed, steps, keep=2, threads=False)


def summarize(
    tasks: list[str],
    algos: list[str],
    seeds: list[int],
    root: Path,
    episodes: int,
    n_envs: int,
    eval_seed: int = H.EVAL_SEED,
) -> str:
    from ncdpo.shipped import asset_dir

    def ev(target: str | Path, res: Path, sampled: bool) -> dict:
        return H.evaluate(target, res, episodes, eval_seed, sampled, n_envs, legacy_seed=LEGACY_SEED)

    algos = [*algos, *(a for a in CONFIGS if a not in algos)]  # every algorithm and seed on disk goes in the table
    for task in tasks:
        out = root / task
        rows: list[list] = []
        lines: list[str] = []
        demo = json.loads((asset_dir(task) / "summary.json").read_text())["demos"]["success_rate"]
        bc_det = ev(f"shipped:{task}", out / "bc_eval_det.json", False)["success_rate"]
        bc_smp = ev(f"shipped:{task}", out / "bc_eval_smp.json", True)["success_rate"]
        task_runs = []
        for algo in algos:
            runs = [out / f"{task}__{algo}__s{s}" for s in H.seeds_on_disk(out, task, algos, seeds)]
            runs = [r for r in runs if H.finished(r)]
            if not runs:
                continue
            det = [ev(r, r / "eval_det.json", False)["success_rate"] for r in runs]
            smp = [ev(r, r / "eval_smp.json", True)["success_rate"] for r in runs]
            costs = [H.run_cost(H.read_log(r)) for r in runs]
            for r, d, sm, c in zip(runs, det, smp, costs):
                seed = int(r.name.rsplit("__s", 1)[1])
                rows.append([task, algo, seed, d, sm, bc_det, bc_smp, c["env_steps"], c["wall_s"]])
            task_runs += runs
            steps, walls = np.mean([c["env_steps"] for c in costs]), np.mean([c["wall_s"] for c in costs])
            lines.append(
                f"| {task} | {100 * demo:.0f} | {100 * bc_det:.0f} | {100 * bc_smp:.0f} | {algo} | {int(steps)} | "
                f"{len(runs)} | {H.mean_std(det, scale=100)} | {H.mean_std(smp, scale=100)} | {walls / 60:.0f} | "
                f"{steps / walls:.0f} |"
            )
        notes = []
        bc_c = [
            ev(f"shipped:{task}", out / f"bc_eval_{m}.json", m == "smp").get("completion_rate") for m in ("det", "smp")
        ]
        if bc_c[0] is not None:  # kitchen: the task-completion rate (fraction of the four subtasks) beside success
            notes.append(f"- BC task-completion rate (det / smp): {100 * bc_c[0]:.0f}% / {100 * bc_c[1]:.0f}%")
        for algo in algos:
            runs = [r for r in task_runs if r.name.startswith(f"{task}__{algo}__s")]
            comp = [
                [ev(r, r / f"eval_{m}.json", m == "smp").get("completion_rate") for r in runs] for m in ("det", "smp")
            ]
            if runs and comp[0][0] is not None:
                notes.append(
                    f"- {algo}: task-completion rate (det / smp) {H.mean_std(comp[0], scale=100)}% / "
                    f"{H.mean_std(comp[1], scale=100)}%"
                )
            if runs:
                final, at = H.steps_to_fraction(runs)
                notes.append(
                    f"- {algo}: the training episodes' success (seed mean, 5-iteration average) first reaches 90% of "
                    f"its final {final:.2f} at {at / 1000:.0f}k env steps"
                )
            if runs and algo == "ncdpo_noise":  # deterministic on the noise policy's mean too (--noise-mean)
                mean = [
                    H.evaluate(r, r / "eval_mean.json", episodes, eval_seed, False, n_envs, extra=["--noise-mean"])[
                        "success_rate"
                    ]
                    for r in runs
                ]
                per_seed = ", ".join(f"{100 * m:.0f}" for m in mean)
                notes.append(
                    f"- {algo}, deterministic on the noise policy's mean: {H.mean_std(mean, scale=100)}% ({per_seed})"
                )
        if task_runs:
            H.plot_curves(
                task_runs,
                out / f"curves_{task}.png",
                y="charts/success_rate",
                smooth=3,
                baseline=bc_smp,
                baseline_label="BC (sampled)",
                title=f"{task}: success of training episodes (sampled policy), mean ± std over seeds",
            )
            if bc_c[1] is not None:  # kitchen: the completion rate is where the learning shows
                H.plot_curves(
                    task_runs,
                    out / f"completion_{task}.png",
                    y="charts/completion_rate",
                    smooth=3,
                    baseline=bc_c[1],
                    baseline_label="BC (sampled)",
                    title=f"{task}: completion rate of training episodes (sampled), mean ± std",
                )
        # each task keeps its own table, so a harness call for one task never drops another task's results
        H.write_csv(out / "summary.csv", SUMMARY_HEADER, rows)
        H.write_table(out / "table.md", [*table_header(episodes, eval_seed), *lines, *([""] + notes if notes else [])])
    return merge_tables(root, episodes, eval_seed)


SUMMARY_HEADER = [
    "task",
    "algo",
    "seed",
    "success_det",
    "success_smp",
    "bc_success_det",
    "bc_success_smp",
    "env_steps",
    "wall_s",
]


def table_header(episodes: int, eval_seed: int = H.EVAL_SEED) -> list[str]:
    return [
        f"Success rate in % over {episodes} evaluation episodes (eval seed {eval_seed}); fine-tuned: mean ± std over "
        "seeds. det = deterministic policy (no exploration noise), smp = sampled policy.",
        "",
        "| task | demonstrator | BC det | BC smp | algo | env steps | seeds | fine-tuned det | fine-tuned smp | "
        "wall min / run | env steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def merge_tables(root: Path, episodes: int, eval_seed: int = H.EVAL_SEED) -> str:
    """``root/summary.csv`` and ``root/table.md``: every task's own summary and table (lift, can, square, transport
    first)."""
    import csv

    order = {t: i for i, t in enumerate(["lift", "can", "square", "transport"])}
    tasks = sorted(
        (d.name for d in root.iterdir() if (d / "summary.csv").is_file() and (d / "table.md").is_file()),
        key=lambda t: (order.get(t, len(order)), t),
    )
    rows, lines = [], []
    for task in tasks:
        with open(root / task / "summary.csv") as f:
            rows += list(csv.reader(f))[1:]
        lines += [ln for ln in (root / task / "table.md").read_text().splitlines() if ln.startswith(f"| {task} |")]
    H.write_csv(root / "summary.csv", SUMMARY_HEADER, rows)
    return H.write_table(root / "table.md", [*table_header(episodes, eval_seed), *lines])


def raw_throughput(task: str, n_envs: int, decisions: int, train_steps: int, root: Path) -> str:
    """Raw subprocess-vectorised env steps/s with random actions, then NCDPO training's env steps/s, one run."""
    raw = H.raw_env_sps(task, n_envs, act_steps=4, decisions=decisions, vector="async")
    run = root / task / "throughput_ncdpo"
    subprocess.check_call(
        [
            *H.NCDPO,
            "train",
            "--init",
            f"shipped:{task}",
            "--config",
            str(CONFIGS["ncdpo"]),
            "--total-env-steps",
            str(train_steps),
            "--progress",
            "false",
            "--tensorboard",
            "false",
            "--out-dir",
            str(run.parent),
            "--run-name",
            run.name,
            "--overwrite",
        ],
        stdout=subprocess.DEVNULL,
    )
    log = H.read_log(run)[1:]  # the first iteration includes starting the workers
    steps = int(log[-1]["env_steps"]) - int(log[0]["env_steps"]) if len(log) > 1 else 0
    wall = float(log[-1]["wall_s"]) - float(log[0]["wall_s"])
    train = steps / wall if wall > 0 else float("nan")
    c = H.run_cost(log)
    rollout, update = c["s_per_iteration"] - c["update_s"], c["update_s"]
    H.write_csv(
        root / task / "throughput.csv",
        [
            "task",
            "n_envs",
            "raw_env_steps_per_s",
            "train_env_steps_per_s",
            "ratio",
            "rollout_s_per_iter",
            "update_s_per_iter",
        ],
        [[task, n_envs, raw, train, train / raw, rollout, update]],
    )
    return (
        f"| {task} | {n_envs} subprocess envs | raw (random actions) {raw:.0f} env steps/s | NCDPO training "
        f"{train:.0f} env steps/s | ratio {train / raw:.2f} | rollout {rollout:.1f} s / iter | update {update:.1f} "
        "s / iter |\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["lift", "can"])
    ap.add_argument("--algos", nargs="+", default=["ncdpo", "dppo"], choices=sorted(CONFIGS))
    ap.add_argument("--eval-envs", type=int, default=8)
    ap.add_argument(
        "--raw-throughput", action="store_true", help="only measure env steps/s (raw env vs training) on the first task"
    )
    # one run at a time by default: each run's 8 subprocess envs use every core
    H.add_common_args(ap, steps=100_000, episodes=50, out="manipulation", jobs=1)
    args = ap.parse_args()
    root = Path(args.out)
    for task in args.tasks:
        (root / task).mkdir(parents=True, exist_ok=True)
    if args.raw_throughput:
        print(raw_throughput(args.tasks[0], 8, 100, 6 * 2048, root))
        return
    if not args.summarize:
        jobs = [(t, a, s, args.steps, root / t) for s in args.seeds for t in args.tasks for a in args.algos]
        H.run_jobs(run_one, jobs, args.jobs, args.address)
    print(summarize(args.tasks, args.algos, args.seeds, root, args.episodes, args.eval_envs, args.eval_seed))


if __name__ == "__main__":
    main()
