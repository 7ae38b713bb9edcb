#!/usr/bin/env python
"""Regenerate the shipped locomotion demonstrations and behaviour-cloned checkpoints, D4RL style.

For each task this runs, with ncdpo's own commands (each step is skipped when its output exists, so the
script resumes after an interruption):

1. ``ncdpo train --algo ppo`` for ``--expert-steps`` env steps, evaluating and checkpointing every
   ``--eval-every`` iterations and keeping every checkpoint: the last one is the *expert*.
2. The *medium* policy: training stopped early (D4RL: a policy at about a third to a half of the expert).
   Among the periodic checkpoints up to the first whose logged evaluation return reaches ``--medium-frac``
   (default 0.4) of the expert's final evaluation return, the one closest to that target.
3. ``ncdpo collect`` of ``--transitions`` env steps from the medium policy -> ``medium.hdf5``, the same from
   the expert -> ``expert.hdf5``, and their union -> ``medium_expert.hdf5`` (as D4RL's). Actions are the
   policy's mean plus Gaussian noise of std ``--action-noise`` (default 0.1): PPO's own std at the medium
   checkpoint is 0.4-0.7, which makes a dataset mostly of noise whose return does not match the policy's
   (on HalfCheetah the sampled medium policy scored 1543 against 907 for its mean).
4. ``ncdpo pretrain`` of the diffusion policy on ``medium.hdf5`` -> ``medium_bc.safetensors``.

The shipped copies (``medium.hdf5``, ``medium_bc.safetensors``, ``summary.json``) go to
``src/ncdpo/assets/locomotion/<task>/``; everything else (expert runs, the larger datasets) stays under
``--work`` (default ``data_gen/``, git-ignored).

    python scripts/make_locomotion_data.py --tasks Hopper-v5 Walker2d-v5 HalfCheetah-v5
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
NCDPO = [sys.executable, "-m", "ncdpo.cli"]
ASSETS = ROOT / "src" / "ncdpo" / "assets" / "locomotion"

# Diffusion policy used for every shipped checkpoint (DPPO's locomotion shape with K=10).
BC_ARGS = [
    "--horizon", "4", "--act-steps", "4", "--diffusion.denoising-steps", "10", "--diffusion.hidden-dim", "256",
    "--diffusion.num-blocks", "2"
]


def sh(cmd: list[str], log: Path | None = None) -> None:
    print("+", " ".join(cmd[2:] if cmd[:2] == NCDPO[:2] else cmd), flush=True)
    if log is None:
        subprocess.check_call(cmd)
    else:
        with open(log, "w") as f:
            subprocess.check_call(cmd, stdout=f, stderr=subprocess.STDOUT)


def eval_json(path: Path, out: Path, episodes: int) -> dict:
    if not out.is_file():
        sh([*NCDPO, "eval", str(path), "--episodes", str(episodes), "--seed", "12345", "--json", str(out)])
    return json.loads(out.read_text())


def make_task(task: str, a: argparse.Namespace) -> dict:
    from ncdpo.checkpoint import export_policy
    from ncdpo.data.dataset import Dataset, load_dataset

    work = Path(a.work) / task
    work.mkdir(parents=True, exist_ok=True)
    expert_run = work / "expert"
    if not (expert_run / "checkpoints" / "final.safetensors").is_file():
        sh(
            [
                *NCDPO, "train", "--algo", "ppo", "--env", task, "--seed", str(a.seed), "--total-env-steps",
                str(a.expert_steps), "--out-dir", str(work), "--run-name", "expert", "--overwrite", "--eval-every",
                str(a.eval_every), "--save-every", str(a.eval_every), "--keep-checkpoints", "0", "--eval-episodes",
                "5", "--progress", "false", "--torch-threads", "1"
            ],
            work / "expert.log",
        )
    expert = eval_json(expert_run, work / "expert_eval.json", 10)

    # The medium policy: stop early, at the checkpoint closest to medium_frac x expert before it is passed.
    target = a.medium_frac * expert["return_mean"]
    with open(expert_run / "progress.csv") as f:
        evals = [
            (int(r["iteration"]), float(r["eval/return_mean"])) for r in csv.DictReader(f) if r["eval/return_mean"]
        ]
    have = [(it, r) for it, r in evals if (expert_run / "checkpoints" / f"iter_{it:06d}.safetensors").is_file()]
    first = next((i for i, (_, r) in enumerate(have) if r >= target), len(have) - 1)
    it, _ = min(have[: first + 1], key=lambda x: abs(x[1] - target))
    medium_ck = expert_run / "checkpoints" / f"iter_{it:06d}.safetensors"
    medium = eval_json(medium_ck, work / "medium_eval.json", 10)

    for name, ck in (("medium", medium_ck), ("expert", expert_run)):
        if not (work / f"{name}.hdf5").is_file():
            sh(
                [
                    *NCDPO, "collect", str(ck), "--out", str(work / f"{name}.hdf5"), "--transitions",
                    str(a.transitions), "--seed", str(a.seed), "--deterministic", "--action-noise",
                    str(a.action_noise)
                ]
            )
    if not (work / "medium_expert.hdf5").is_file():
        m, e = load_dataset(work / "medium.hdf5"), load_dataset(work / "expert.hdf5")
        cut = m.meta.get("cut_episodes", []) + [len(m.episodes) + i for i in e.meta.get("cut_episodes", [])]
        Dataset(
            m.episodes + e.episodes,
            task,
            m.action_low,
            m.action_high,
            {"parts": ["medium", "expert"], "cut_episodes": cut},
        ).save(work / "medium_expert.hdf5")

    bc_run = work / "medium_bc"
    if not (bc_run / "checkpoints" / "final.safetensors").is_file():
        sh(
            [
                *NCDPO, "pretrain", "--dataset", str(work / "medium.hdf5"), *BC_ARGS, "--pretrain.steps",
                str(a.bc_steps), "--eval-every", str(a.bc_steps // 4), "--eval-episodes", "10", "--out-dir",
                str(work), "--run-name", "medium_bc", "--overwrite", "--progress", "false", "--seed", str(a.seed),
                "--torch-threads", "1"
            ],
            work / "medium_bc.log",
        )
    bc = eval_json(bc_run, work / "medium_bc_eval.json", 20)

    stats = {n: load_dataset(work / f"{n}.hdf5").stats() for n in ("medium", "expert", "medium_expert")}
    summary = {
        "task": task,
        "expert_env_steps": a.expert_steps,
        "expert_return": expert["return_mean"],
        "expert_return_std": expert["return_std"],
        "medium_iteration": it,
        "medium_return": medium["return_mean"],
        "collect": {"deterministic": True, "action_noise": a.action_noise, "transitions": a.transitions},
        "datasets": stats,
        "bc_return": bc["return_mean"],
        "bc_return_std": bc["return_std"],
        "bc_steps": a.bc_steps,
    }
    dest = ASSETS / task
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "medium.hdf5", dest / "medium.hdf5")
    export_policy(
        bc_run / "checkpoints" / "final.safetensors", dest / "medium_bc.safetensors"
    )  # without training state
    (dest / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
    ap.add_argument("--expert-steps", type=int, default=1_000_000)
    ap.add_argument("--eval-every", type=int, default=20, help="iterations between expert evaluations/checkpoints")
    ap.add_argument("--medium-frac", type=float, default=0.4)
    ap.add_argument("--transitions", type=int, default=20_000, help="env steps per collected dataset")
    ap.add_argument(
        "--action-noise",
        type=float,
        default=0.1,
        help="std of the Gaussian noise added to the policy mean when collecting",
    )
    ap.add_argument("--bc-steps", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default=str(ROOT / "data_gen"))
    a = ap.parse_args()
    for task in a.tasks:
        s = make_task(task, a)
        d = s["datasets"]["medium"]
        print(
            f"{task}: expert {s['expert_return']:.0f}, medium policy {s['medium_return']:.0f}, medium dataset "
            f"{d['complete_return_mean']:.0f} ± {d['complete_return_std']:.0f} over complete episodes "
            f"({d['transitions']} transitions), BC {s['bc_return']:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
