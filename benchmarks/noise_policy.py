"""Tuning trials of NCDPO's noise policy (``noise_policy.*``, docs/METHOD.md section 6) on a manipulation task.

    python benchmarks/noise_policy.py --task lift --variants factored joint all --steps 50000
    python benchmarks/noise_policy.py --task lift --summarize

Each variant is ``ncdpo train --init shipped:TASK --config configs/noise_manipulation.yaml`` plus the variant's
overrides (:data:`VARIANTS`), one seed, into ``benchmarks/results/noise_policy/<task>/<variant>__s<seed>``; then its
final policy is evaluated over ``--episodes`` episodes (eval seed 424242) with the deterministic policy, the sampled
one, and the deterministic one acting on the noise policy's mean (``ncdpo eval --noise-mean``). ``table.md`` lists
the three success rates, the training episodes' success by blocks of 10 iterations, and where the noise policy
ended (its mean std and mean |mu|). Runs go one at a time (each uses every core through its subprocess envs) and
resume like the other harnesses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

CONFIG = H.REPO / "configs" / "noise_manipulation.yaml"
VARIANTS: dict[str, list[str]] = {
    "factored": ["--noise-policy.covers", "initial"],
    "joint": ["--noise-policy.ratio", "joint"],
    "all": [],
    "frozen": ["--noise-policy.lr", "0"],
    "lr3e-3": ["--noise-policy.lr", "3e-3"],
    "lr3e-4": ["--noise-policy.lr", "3e-4"],
    "kl": ["--noise-policy.target-kl", "0.05"],
    "nokl": ["--ppo.target-kl", "0"],
    "epochs10": ["--ppo.update-epochs", "10"],
}
"""Overrides of each variant on top of ``configs/noise_manipulation.yaml`` (which covers every chain noise since the
first two trials; ``factored`` and ``all`` were run when the file covered the initial latent only, ``all`` then
overriding ``--noise-policy.covers all``)."""


def run_one(task: str, variant: str, seed: int, steps: int, out: Path) -> str:
    args = ["--init", f"shipped:{task}", "--config", str(CONFIG), *VARIANTS[variant]]
    return H.run_train(out / f"{variant}__s{seed}", args + H.run_args(seed, steps, keep=2, threads=False))


def blocks(log: list[dict[str, str]], key: str = "charts/success_rate", size: int = 10) -> str:
    vals = [float(r[key]) for r in log if r.get(key) not in (None, "", "nan")]
    return ", ".join(f"{np.mean(vals[i : i + size]):.2f}" for i in range(0, len(vals), size))


def summarize(task: str, out: Path, episodes: int, n_envs: int, seed: int) -> str:
    lines = [
        f"{task}: final policies over {episodes} episodes (eval seed {seed}); success in % (deterministic / sampled /"
        " deterministic on the noise policy's mean); training success by 10-iteration blocks.",
        "",
        "| variant | overrides | env steps | det | smp | det, mean noise | training success | noise std | abs(mu) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for run in sorted(out.glob("*__s*")):
        if not run.is_dir() or not H.finished(run):
            continue
        variant, s = run.name.rsplit("__s", 1)
        det = H.evaluate(run, run / "eval_det.json", episodes, seed, False, n_envs)["success_rate"]
        smp = H.evaluate(run, run / "eval_smp.json", episodes, seed, True, n_envs)["success_rate"]
        mean = H.evaluate(run, run / "eval_mean.json", episodes, seed, False, n_envs, extra=["--noise-mean"])
        log = H.read_log(run)
        last = log[-1]
        over = " ".join(VARIANTS.get(variant, ["?"])) or "-"
        lines.append(
            f"| {variant} (seed {s}) | `{over}` | {last['env_steps']} | {100 * det:.0f} | {100 * smp:.0f} | "
            f"{100 * mean['success_rate']:.0f} | {blocks(log)} | {float(last.get('charts/noise_std', 'nan')):.3f} | "
            f"{float(last.get('charts/noise_mean_abs', 'nan')):.3f} |"
        )
        rows.append([variant, s, last["env_steps"], det, smp, mean["success_rate"]])
    H.write_csv(out / "summary.csv", ["variant", "seed", "env_steps", "det", "smp", "det_noise_mean"], rows)
    return H.write_table(out / "table.md", lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="lift")
    ap.add_argument("--variants", nargs="+", default=["all"], choices=sorted(VARIANTS))
    ap.add_argument("--eval-envs", type=int, default=8)
    H.add_common_args(ap, steps=50_000, episodes=50, out="noise_policy", jobs=1, seeds=(1,))
    args = ap.parse_args()
    out = Path(args.out) / args.task
    if not args.summarize:
        jobs = [(args.task, v, s, args.steps, out) for s in args.seeds for v in args.variants]
        H.run_jobs(run_one, jobs, args.jobs)
    print(summarize(args.task, out, args.episodes, args.eval_envs, args.eval_seed))


if __name__ == "__main__":
    main()
