"""Which defaults should a new user's ``ncdpo train --env X`` (from scratch) get? Measured on MuJoCo tasks no
preset covers, 100k env steps, everything else at ncdpo 0.1's defaults, one option changed at a time.

    python benchmarks/defaults.py --tasks InvertedDoublePendulum-v5 Reacher-v5 Swimmer-v5 --seeds 1 2 --steps 100000

Variants (``VARIANTS``): MLP+PPO with its defaults; NCDPO with the defaults of ncdpo 0.1 (epsilon prediction, fixed
exploration std 0.1); NCDPO with x0 prediction only; x0 prediction with a learnable exploration std starting at
1.0 (as ``from_scratch.py`` explores). ``PINNED`` spells out the old defaults the variants build on, so that later
defaults change nothing here. Runs go to ``benchmarks/results/defaults/<task>/<task>__<variant>__s<seed>``; each final
policy is evaluated over ``--episodes`` deterministic episodes (``--eval-seed``); ``table.md`` and ``summary.csv``
hold the finals (mean ± std over seeds), ``<task>/curves.png`` the training return.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

PINNED = [
    "--diffusion.prediction", "epsilon", "--diffusion.sigma-exp", "fixed", "--diffusion.sigma-exp-start", "0.1",
    "--horizon", "1", "--act-steps", "1", "--ppo.actor-lr", "3e-4"
]
VARIANTS = {
    "ppo": ["--algo", "ppo", "--ppo.actor-lr", "3e-4"],
    "ncdpo-eps": ["--algo", "ncdpo", *PINNED],
    "ncdpo-x0": ["--algo", "ncdpo", *PINNED, "--diffusion.prediction", "x0"],
    "ncdpo-x0-std1": [
        "--algo", "ncdpo", *PINNED, "--diffusion.prediction", "x0", "--diffusion.sigma-exp", "learnable",
        "--diffusion.sigma-exp-start", "1.0"
    ],
}


def run_one(task: str, variant: str, seed: int, steps: int, root: Path) -> str:
    args = ["--env", task, *H.run_args(seed, steps), *VARIANTS[variant]]
    return H.run_train(root / task / f"{task}__{variant}__s{seed}", args)


def summarize(
    tasks: list[str], variants: list[str], seeds: list[int], root: Path, steps: int, episodes: int, eval_seed: int
) -> str:
    rows = []
    lines = [
        f"Final policy, {episodes} deterministic episodes (eval seed {eval_seed}), {steps} env steps from "
        "scratch; mean ± std over seeds (per-seed values in summary.csv).",
        "",
        "| task | " + " | ".join(variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for task in tasks:
        cells, runs = [], []
        for v in variants:
            done = [root / task / f"{task}__{v}__s{s}" for s in seeds if H.finished(root / task / f"{task}__{v}__s{s}")]
            finals = [H.evaluate(r, r / "eval.json", episodes, eval_seed)["return_mean"] for r in done]
            rows += [[task, v, r.name.rsplit("__s", 1)[1], f] for r, f in zip(done, finals)]
            cells.append(f"{H.mean_std(finals)} (n={len(finals)})" if finals else "-")
            runs += done
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
        if runs:
            H.plot_curves(runs, root / task / "curves.png", smooth=3, title=f"{task} from scratch, defaults")
    H.write_csv(root / "summary.csv", ["task", "variant", "seed", "final_eval_return"], rows)
    return H.write_table(root / "table.md", lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["InvertedDoublePendulum-v5", "Reacher-v5", "Swimmer-v5"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    H.add_common_args(ap, steps=100_000, episodes=10, out="defaults", jobs=1, seeds=(1, 2))
    args = ap.parse_args()
    root = Path(args.out)
    if not args.summarize:
        jobs = [(t, v, s, args.steps, root) for s in args.seeds for t in args.tasks for v in args.variants]
        H.run_jobs(run_one, jobs, args.jobs, args.address)
    print(summarize(args.tasks, args.variants, args.seeds, root, args.steps, args.episodes, args.eval_seed))


if __name__ == "__main__":
    main()
