"""Tuning trials of NCDPO's noise policy (``noise_policy.*``, docs/METHOD.md section 6) on a shipped task.

    python benchmarks/noise_policy.py --task lift --variants factored joint all --steps 50000
    python benchmarks/noise_policy.py --task lift --summarize
    python benchmarks/noise_policy.py --task Hopper-v5 --variants lr1e-4 --steps 1000000 --episodes 20

Each variant is ``ncdpo train --init shipped:TASK --config configs/noise_<family>.yaml`` plus the variant's
overrides (:data:`VARIANTS`), one seed, into ``benchmarks/results/noise_policy/<task>/<variant>__s<seed>``; then its
final policy is evaluated over ``--episodes`` episodes (eval seed 424242) with the deterministic policy, the sampled
one, and the deterministic one acting on the noise policy's mean (``ncdpo eval --noise-mean``). ``table.md`` lists
the three success rates (locomotion: returns), the training episodes' success by blocks of 10 iterations, and where
the noise policy ended (its mean std and mean |mu|). Runs go one at a time (each uses every core through its
subprocess envs) and resume like the other harnesses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

LOCOMOTION = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")


def config_of(task: str) -> Path:
    """The noise-policy recipe of the task's family (``configs/noise_{locomotion,manipulation}.yaml``)."""
    return H.recipe_configs("locomotion" if task in LOCOMOTION else "manipulation")["ncdpo_noise"]


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
    "lr1e-4": ["--noise-policy.lr", "1e-4"],
}
"""Overrides of each variant on top of ``configs/noise_manipulation.yaml`` (which covers every chain noise since the
first two trials; ``factored`` and ``all`` were run when the file covered the initial latent only, ``all`` then
overriding ``--noise-policy.covers all``)."""


def run_one(task: str, variant: str, seed: int, steps: int, out: Path) -> str:
    args = ["--init", f"shipped:{task}", "--config", str(config_of(task)), *VARIANTS[variant]]
    return H.run_train(out / f"{variant}__s{seed}", args + H.run_args(seed, steps, keep=2, threads=False))


def blocks(log: list[dict[str, str]], key: str = "charts/success_rate", size: int = 10) -> str:
    vals = [float(r[key]) for r in log if r.get(key) not in (None, "", "nan")]
    return ", ".join(f"{np.mean(vals[i : i + size]):.2f}" for i in range(0, len(vals), size))


def summarize(task: str, out: Path, episodes: int, n_envs: int, seed: int) -> str:
    lines = [
        f"{task}: final policies over {episodes} episodes (eval seed {seed}); "
        + ("return" if task in LOCOMOTION else "success in %")
        + " (deterministic / sampled / deterministic on the noise policy's mean); training "
        + ("return by 50-iteration blocks." if task in LOCOMOTION else "success by 10-iteration blocks."),
        "",
        "| variant | overrides | env steps | det | smp | det, mean noise | training success | noise std | abs(mu) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for run in sorted(out.glob("*__s*")):
        if not run.is_dir() or not H.finished(run):
            continue
        variant, s = run.name.rsplit("__s", 1)
        # manipulation: success in %; locomotion (no success signal): the mean return
        key, scale, fmt = ("return_mean", 1.0, "{:.0f}") if task in LOCOMOTION else ("success_rate", 100.0, "{:.0f}")
        det = H.evaluate(run, run / "eval_det.json", episodes, seed, False, n_envs)[key]
        smp = H.evaluate(run, run / "eval_smp.json", episodes, seed, True, n_envs)[key]
        mean = H.evaluate(run, run / "eval_mean.json", episodes, seed, False, n_envs, extra=["--noise-mean"])[key]
        log = H.read_log(run)
        last = log[-1]
        over = " ".join(VARIANTS.get(variant, ["?"])) or "-"
        train = blocks(log) if task not in LOCOMOTION else blocks(log, "charts/episodic_return", 50)
        vals = " | ".join(fmt.format(scale * v) for v in (det, smp, mean))
        std, mu = float(last.get("charts/noise_std", "nan")), float(last.get("charts/noise_mean_abs", "nan"))
        cells = [f"{variant} (seed {s})", f"`{over}`", last["env_steps"], vals, train, f"{std:.3f}", f"{mu:.3f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
        rows.append([variant, s, last["env_steps"], det, smp, mean])
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
        H.run_jobs(run_one, jobs, args.jobs, args.address)
    print(summarize(args.task, out, args.episodes, args.eval_envs, args.eval_seed))


if __name__ == "__main__":
    main()
