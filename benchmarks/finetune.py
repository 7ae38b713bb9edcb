"""NCDPO fine-tuning of the shipped behaviour-cloned locomotion policies, several seeds per task.

    python benchmarks/finetune.py --tasks Hopper-v5 Walker2d-v5 HalfCheetah-v5 --steps 1000000 --seeds 1 2 3 --jobs 2

Each (task, seed) run is ``ncdpo train --init shipped:<task> --config configs/finetune_locomotion.yaml``
writing into ``benchmarks/results/finetune/<task>/<task>__ncdpo__s<seed>``. Resumable: a run whose final
checkpoint exists is not redone, an unfinished one is restarted. Then every final checkpoint and the BC
checkpoint are evaluated with the same protocol (``--episodes`` deterministic episodes, fixed seed) and
``summary.csv``, ``table.md`` and one ``curves_<task>.png`` per task (logged evaluation return, mean ± std
over seeds) are written. The raw ``progress.csv`` of every run is kept. ``--summarize`` only rebuilds the
summary.
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

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
NCDPO = [sys.executable, "-m", "ncdpo.cli"]
CONFIG = REPO / "configs" / "finetune_locomotion.yaml"
EVAL_SEED = 424242


def run_one(task: str, seed: int, steps: int, out: Path) -> str:
    name = f"{task}__ncdpo__s{seed}"
    run = out / name
    if (run / "checkpoints" / "final.safetensors").is_file():
        return f"{name}: done already"
    cmd = [*NCDPO, "train", "--init", f"shipped:{task}", "--config", str(CONFIG), "--seed", str(seed),
           "--total-env-steps", str(steps), "--out-dir", str(out), "--run-name", name, "--overwrite",
           "--torch-threads", "1", "--progress", "false", "--keep-checkpoints", "2"]
    t0 = time.time()
    with open(out / f"{name}.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"{name} failed (exit {rc}); see {out / (name + '.log')}")
    return f"{name}: {time.time() - t0:.0f} s"


def evaluate(target: str, res: Path, episodes: int) -> dict:
    if not res.is_file():
        subprocess.check_call([*NCDPO, "eval", target, "--episodes", str(episodes), "--seed", str(EVAL_SEED),
                               "--json", str(res)], stdout=subprocess.DEVNULL)
    return json.loads(res.read_text())


def summarize(tasks: list[str], seeds: list[int], root: Path, episodes: int) -> str:
    sys.path.insert(0, str(REPO / "src"))
    from ncdpo.plotting import plot_runs
    from ncdpo.shipped import ASSETS

    rows, lines = [], []
    lines += [f"Deterministic evaluation over {episodes} episodes (eval seed {EVAL_SEED}); fine-tuned: mean ± std "
              "over seeds of each seed's mean. Dataset: complete episodes of the shipped medium dataset.", "",
              "| task | expert | dataset | BC | NCDPO fine-tuned | env steps | seeds | NCDPO / BC | wall s / run |",
              "|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        out = root / task
        summary = json.loads((ASSETS / task / "summary.json").read_text())
        bc = evaluate(f"shipped:{task}", out / "bc_eval.json", episodes)
        finals, walls, steps, runs = [], [], [], []
        for seed in seeds:
            run = out / f"{task}__ncdpo__s{seed}"
            if not (run / "checkpoints" / "final.safetensors").is_file():
                continue
            ev = evaluate(str(run), run / "eval.json", episodes)
            with open(run / "progress.csv") as f:
                last = list(csv.DictReader(f))[-1]
            finals.append(ev["return_mean"])
            walls.append(float(last["wall_s"]))
            steps.append(int(last["env_steps"]))
            runs.append(run)
            rows.append([task, seed, ev["return_mean"], ev["return_std"], bc["return_mean"], int(last["env_steps"]), float(last["wall_s"])])
        if not finals:
            continue
        d = summary["datasets"]["medium"]
        ft = np.asarray(finals)
        lines.append(
            f"| {task} | {summary['expert_return']:.0f} | {d['complete_return_mean']:.0f} ± {d['complete_return_std']:.0f} "
            f"({d['transitions']} transitions) | {bc['return_mean']:.0f} ± {bc['return_std']:.0f} | "
            f"{ft.mean():.0f} ± {ft.std():.0f} | {int(np.mean(steps))} | {len(ft)} | {ft.mean() / bc['return_mean']:.2f} | "
            f"{np.mean(walls):.0f} |"
        )
        plot_runs(runs, out / f"curves_{task}.png", y="eval/return_mean", title=f"{task}: NCDPO fine-tuning from BC "
                  f"(BC {bc['return_mean']:.0f}), mean ± std over seeds")
    with open(root / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "seed", "final_eval_return", "final_eval_std", "bc_eval_return", "env_steps", "wall_s"])
        w.writerows(rows)
    md = "\n".join(lines) + "\n"
    (root / "table.md").write_text(md)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    ap.add_argument("--episodes", type=int, default=20, help="evaluation episodes per checkpoint")
    ap.add_argument("--out", default=str(ROOT / "results" / "finetune"))
    ap.add_argument("--summarize", action="store_true", help="only rebuild the summary from finished runs")
    args = ap.parse_args()
    root = Path(args.out)
    for task in args.tasks:
        (root / task).mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        jobs = [(t, s) for s in args.seeds for t in args.tasks]
        with ThreadPoolExecutor(args.jobs) as pool:
            for msg in pool.map(lambda j: run_one(j[0], j[1], args.steps, root / j[0]), jobs):
                print(msg, flush=True)
    print(summarize(args.tasks, args.seeds, root, args.episodes))


if __name__ == "__main__":
    main()
