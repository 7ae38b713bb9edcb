"""Manipulation fine-tuning: the shipped behaviour-cloned policies of the robosuite tasks -> NCDPO and -> DPPO.

    python benchmarks/manipulation.py --tasks lift can --algos ncdpo dppo --seeds 1 2 3 --steps 100000
    python benchmarks/manipulation.py --raw-throughput     # raw vectorised env vs training, env steps/s on lift
    python benchmarks/manipulation.py --tasks lift --summarize

Each (task, algo, seed) run is ``ncdpo train --algo <algo> --init shipped:<task> --config <config>`` with
``configs/finetune_manipulation.yaml`` (NCDPO) or ``configs/dppo_manipulation.yaml`` (DPPO): the same 8
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
import csv
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ncdpo.checkpoint import AtomicText, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import NCDPO, eval_json, finished, run_train, seeds_on_disk  # noqa: E402

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
CONFIGS = {
    "ncdpo": REPO / "configs" / "finetune_manipulation.yaml",
    "dppo": REPO / "configs" / "dppo_manipulation.yaml",
}
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
            "--progress",
            "false",
            "--keep-checkpoints",
            "2",
        ],
    )


def evaluate(target: str, res: Path, episodes: int, sampled: bool, n_envs: int) -> dict:
    return eval_json(target, res, episodes, EVAL_SEED, ["--n-envs", str(n_envs), *(["--sampled"] if sampled else [])])


def fmt(xs: list[float]) -> str:
    return f"{100 * np.mean(xs):.0f} ± {100 * np.std(xs):.0f}" if xs else "-"


def summarize(tasks: list[str], algos: list[str], seeds: list[int], root: Path, episodes: int, n_envs: int) -> str:
    sys.path.insert(0, str(REPO / "src"))
    from ncdpo.plotting import plot_runs
    from ncdpo.shipped import asset_dir

    algos = [*algos, *(a for a in CONFIGS if a not in algos)]  # every algorithm and seed on disk goes in the table
    for task in tasks:
        out = root / task
        task_seeds = seeds_on_disk(out, task, algos, seeds)
        rows: list[list] = []
        lines: list[str] = []
        summary = json.loads((asset_dir(task) / "summary.json").read_text())
        bc_det = evaluate(f"shipped:{task}", out / "bc_eval_det.json", episodes, False, n_envs)
        bc_smp = evaluate(f"shipped:{task}", out / "bc_eval_smp.json", episodes, True, n_envs)
        demo = summary["demos"]["success_rate"]
        task_runs = []
        for algo in algos:
            det, smp, walls, steps, runs = [], [], [], [], []
            for seed in task_seeds:
                run = out / f"{task}__{algo}__s{seed}"
                if not finished(run):
                    continue
                d = evaluate(str(run), run / "eval_det.json", episodes, False, n_envs)
                s = evaluate(str(run), run / "eval_smp.json", episodes, True, n_envs)
                with open(run / "progress.csv") as f:
                    log = list(csv.DictReader(f))
                det.append(d["success_rate"])
                smp.append(s["success_rate"])
                walls.append(float(log[-1]["wall_s"]))
                steps.append(int(log[-1]["env_steps"]))
                runs.append(run)
                rows.append(
                    [
                        task,
                        algo,
                        seed,
                        d["success_rate"],
                        s["success_rate"],
                        bc_det["success_rate"],
                        bc_smp["success_rate"],
                        steps[-1],
                        walls[-1],
                    ]
                )
            if not runs:
                continue
            task_runs += runs
            lines.append(
                f"| {task} | {100 * demo:.0f} | {100 * bc_det['success_rate']:.0f} | "
                f"{100 * bc_smp['success_rate']:.0f} | "
                f"{algo} | {int(np.mean(steps))} | {len(runs)} | {fmt(det)} | {fmt(smp)} | {np.mean(walls) / 60:.0f} | "
                f"{np.mean(steps) / np.mean(walls):.0f} |"
            )
        if task_runs:
            plot_runs(
                task_runs,
                out / f"curves_{task}.png",
                y="charts/success_rate",
                smooth_window=3,
                title=f"{task}: success of training episodes (sampled policy), mean ± std over seeds",
            )
        # each task keeps its own table, so a harness call for one task never drops another task's results
        with AtomicText(out / "summary.csv") as f:
            w = csv.writer(f)
            w.writerow(SUMMARY_HEADER)
            w.writerows(rows)
        atomic_write_text(out / "table.md", "\n".join([*table_header(episodes), *lines]) + "\n")
    return merge_tables(root, episodes)


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


def table_header(episodes: int) -> list[str]:
    return [
        f"Success rate in % over {episodes} evaluation episodes (eval seed {EVAL_SEED}); fine-tuned: mean ± std over "
        "seeds. det = deterministic policy (no exploration noise), smp = sampled policy.",
        "",
        "| task | demonstrator | BC det | BC smp | algo | env steps | seeds | fine-tuned det | fine-tuned smp | "
        "wall min / run | env steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def merge_tables(root: Path, episodes: int) -> str:
    """``root/summary.csv`` and ``root/table.md``: every task's own summary and table (lift, can, square, transport
    first)."""
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
    with AtomicText(root / "summary.csv") as f:
        w = csv.writer(f)
        w.writerow(SUMMARY_HEADER)
        w.writerows(rows)
    md = "\n".join([*table_header(episodes), *lines]) + "\n"
    atomic_write_text(root / "table.md", md)
    return md


def raw_throughput(task: str, n_envs: int, decisions: int, train_steps: int, root: Path) -> str:
    """Raw subprocess-vectorised env steps/s with random actions, then NCDPO training's env steps/s, one run."""
    from ncdpo.envs.registry import make_vec_env

    envs = make_vec_env(task, n_envs, act_steps=4, vector="async")
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    shape = envs.action_space.shape  # (n_envs, act_steps, act_dim): 7 per Panda arm, 14 on transport
    envs.step(rng.uniform(-1, 1, shape).astype(np.float32))  # warm-up (numba compilation)
    steps, t0 = 0, time.perf_counter()
    for _ in range(decisions):
        _, _, term, trunc, info = envs.step(rng.uniform(-1, 1, shape).astype(np.float32))
        steps += int(np.sum(info["env_steps"])) if "env_steps" in info else n_envs * 4
    raw = steps / (time.perf_counter() - t0)
    envs.close()
    run = root / task / "throughput_ncdpo"
    subprocess.check_call(
        [
            *NCDPO,
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
    with open(run / "progress.csv") as f:
        log = list(csv.DictReader(f))[1:]  # the first iteration includes starting the workers
    steps = sum(int(r["env_steps"]) for r in log[-1:]) - int(log[0]["env_steps"]) if len(log) > 1 else 0
    wall = float(log[-1]["wall_s"]) - float(log[0]["wall_s"])
    train = steps / wall if wall > 0 else float("nan")
    rollout = np.mean([float(r["perf/rollout_s"]) for r in log]) if "perf/rollout_s" in log[0] else float("nan")
    update = np.mean([float(r["perf/update_s"]) for r in log])
    md = (
        f"| {task} | {n_envs} subprocess envs | raw (random actions) {raw:.0f} env steps/s | NCDPO training "
        f"{train:.0f} "
        f"env steps/s | ratio {train / raw:.2f} | rollout {rollout:.1f} s / iter | update {update:.1f} s / iter |\n"
    )
    with AtomicText(root / task / "throughput.csv") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "task",
                "n_envs",
                "raw_env_steps_per_s",
                "train_env_steps_per_s",
                "ratio",
                "rollout_s_per_iter",
                "update_s_per_iter",
            ]
        )
        w.writerow([task, n_envs, raw, train, train / raw, rollout, update])
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["lift", "can"])
    ap.add_argument("--algos", nargs="+", default=["ncdpo", "dppo"], choices=sorted(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (default 1: each run's 8 envs use every core)")
    ap.add_argument("--episodes", type=int, default=50, help="evaluation episodes per policy and mode")
    ap.add_argument("--eval-envs", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "results" / "manipulation"))
    ap.add_argument("--summarize", action="store_true", help="only rebuild the summary from finished runs")
    ap.add_argument(
        "--raw-throughput", action="store_true", help="only measure env steps/s (raw env vs training) on the first task"
    )
    args = ap.parse_args()
    root = Path(args.out)
    for task in args.tasks:
        (root / task).mkdir(parents=True, exist_ok=True)
    if args.raw_throughput:
        print(raw_throughput(args.tasks[0], 8, 100, 6 * 2048, root))
        return
    if not args.summarize:
        jobs = [(t, a, s) for s in args.seeds for t in args.tasks for a in args.algos]
        with ThreadPoolExecutor(args.jobs) as pool:
            for msg in pool.map(lambda j: run_one(j[0], j[1], j[2], args.steps, root / j[0]), jobs):
                print(msg, flush=True)
    print(summarize(args.tasks, args.algos, args.seeds, root, args.episodes, args.eval_envs))


if __name__ == "__main__":
    main()
