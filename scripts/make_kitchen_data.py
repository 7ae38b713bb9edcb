#!/usr/bin/env python
"""Regenerate the Franka Kitchen demonstrations and behaviour-cloned policies (``kitchen-complete``, ``-partial``,
``-mixed``), each step skipped when its output exists (the script resumes after an interruption):

1. the demonstrator's success per subtask: each of the seven alone from the reset state, ``--probe-episodes`` seeds
   per operator skill (``demonstrator.json``);
2. ``ncdpo demos TASK --episodes N`` -> ``demos.hdf5`` (the composition of D4RL's dataset of that name,
   ``ncdpo.envs.kitchen_demos``);
3. ``ncdpo pretrain`` of a K=10 diffusion policy (horizon 4, 4 actions executed per decision) on it;
4. ``ncdpo eval`` of the BC policy: ``--eval-episodes`` episodes, deterministic and sampled (success and completion).

The BC policy (without training state) and ``summary.json`` go to ``src/ncdpo/assets/manipulation/<task>/``, where
``shipped:<task>`` finds them; the datasets stay under ``--work`` (default ``data_gen/kitchen``, git-ignored) unless
``--ship-datasets``: the repository is kept under the 64 MiB a device run can carry, and this script rebuilds the
same datasets from the same seeds.

    python scripts/make_kitchen_data.py --tasks kitchen-complete kitchen-partial kitchen-mixed
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_locomotion_data import BC_ARGS, NCDPO, sh  # noqa: E402

ASSETS = ROOT / "src" / "ncdpo" / "assets" / "manipulation"
EVAL_SEED = 12345


def probe_subtasks(work: Path, episodes: int) -> dict:
    """Each subtask alone from the reset state, per skill: the demonstrator's success rate and mean length."""
    out = work / "demonstrator.json"
    if out.is_file():
        return json.loads(out.read_text())
    from ncdpo.envs.kitchen import SUBTASKS, KitchenEnv
    from ncdpo.envs.kitchen_demos import DEFAULT_NOISE, SKILLS, run_episode

    env = KitchenEnv("kitchen-complete")
    res: dict = {"noise": DEFAULT_NOISE, "offset": 0.01, "episodes_per_skill": episodes, "subtasks": {}}
    for task in SUBTASKS:
        row = {}
        for skill in SKILLS:
            runs = [run_episode(env, 1000 + s, [task], DEFAULT_NOISE, 0.01, skill) for s in range(episodes)]
            row[skill] = {
                "success": float(np.mean([r["subtasks_done"][task] for r in runs])),
                "length_mean": float(np.mean([len(r["actions"]) for r in runs])),
            }
        res["subtasks"][task] = row
        print(task, {k: v["success"] for k, v in row.items()}, flush=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    return res


def eval_json(path: Path, out: Path, episodes: int, sampled: bool, n_envs: int) -> dict:
    if not out.is_file():
        sh([*NCDPO, "eval", str(path), "--episodes", str(episodes), "--seed", str(EVAL_SEED), "--n-envs", str(n_envs),
            "--json", str(out), *(["--sampled"] if sampled else [])])  # fmt: skip
    return json.loads(out.read_text())


def make_task(task: str, a: argparse.Namespace, probe: dict) -> dict:
    from ncdpo.checkpoint import export_policy
    from ncdpo.data.dataset import load_dataset

    work = Path(a.work) / task
    work.mkdir(parents=True, exist_ok=True)
    demos = work / "demos.hdf5"
    if not demos.is_file():
        t0 = time.time()
        sh([*NCDPO, "demos", task, "--episodes", str(a.episodes), "--seed", str(a.seed), "--workers", str(a.workers),
            "--out", str(demos)])  # fmt: skip
        (work / "demos_wall_s.txt").write_text(f"{time.time() - t0:.0f}\n")
    ds = load_dataset(demos)
    bc_run = work / "bc"
    if not (bc_run / "checkpoints" / "final.safetensors").is_file():
        sh([*NCDPO, "pretrain", "--dataset", str(demos), *BC_ARGS, "--pretrain.steps", str(a.bc_steps),
            "--eval-every", "0", "--out-dir", str(work), "--run-name", "bc", "--overwrite", "--progress", "false",
            "--seed", "1"], work / "bc.log")  # fmt: skip
    det = eval_json(bc_run, work / "bc_eval_deterministic.json", a.eval_episodes, False, a.eval_envs)
    smp = eval_json(bc_run, work / "bc_eval_sampled.json", a.eval_episodes, True, a.eval_envs)
    m, st = ds.meta, ds.stats()
    summary = {
        "task": task,
        "demos": {
            "episodes": st["episodes"],
            "transitions": st["transitions"],
            "success_rate": m["success_rate"],
            "completion_rate": float(np.mean(m["completions"])),
            "noise": m["noise"],
            "offset": m["offset"],
            "mistake": m["mistake"],
            "seed": m["seed"],
            "length_mean": st["length_mean"],
            "wall_s": float((work / "demos_wall_s.txt").read_text()) if (work / "demos_wall_s.txt").is_file() else None,
        },
        "demonstrator_per_subtask": {t: v for t, v in probe["subtasks"].items()},
        "bc": {
            "steps": a.bc_steps,
            "eval_episodes": a.eval_episodes,
            "eval_seed": EVAL_SEED,
            "success_rate_deterministic": det["success_rate"],
            "success_rate_sampled": smp["success_rate"],
            "completion_rate_deterministic": det.get("completion_rate"),
            "completion_rate_sampled": smp.get("completion_rate"),
        },
    }
    dest = ASSETS / task
    dest.mkdir(parents=True, exist_ok=True)
    if a.ship_datasets:
        shutil.copyfile(demos, dest / "demos.hdf5")
    export_policy(bc_run / "checkpoints" / "final.safetensors", dest / "bc.safetensors")
    (dest / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["kitchen-complete", "kitchen-partial", "kitchen-mixed"])
    ap.add_argument("--episodes", type=int, default=200, help="demonstration episodes per task (default: 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bc-steps", type=int, default=20_000)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--eval-envs", type=int, default=8)
    ap.add_argument("--probe-episodes", type=int, default=10, help="seeds per skill and subtask for the probe")
    ap.add_argument("--ship-datasets", action="store_true", help="also copy the datasets into the package")
    ap.add_argument("--work", default=str(ROOT / "data_gen" / "kitchen"))
    a = ap.parse_args()
    Path(a.work).mkdir(parents=True, exist_ok=True)
    probe = probe_subtasks(Path(a.work), a.probe_episodes)
    for task in a.tasks:
        print(json.dumps(make_task(task, a, probe), indent=2), flush=True)


if __name__ == "__main__":
    main()
