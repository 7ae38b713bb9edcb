"""NCDPO vs MLP+MAPPO on cooperative multi-agent tasks with discrete actions, at the same env-step budget.

    python benchmarks/multiagent.py --tasks simple_spread --algos ncdpo ppo --seeds 1 2 3 --steps 500000 --jobs 2
    python benchmarks/multiagent.py --tasks grf-3v1 grf-pass-shoot --seeds 1 2 3 --steps 300000 --jobs 2
    python benchmarks/multiagent.py --tasks simple_spread --raw-throughput

Both algorithms run on the same MAPPO-style core (shared actor with agent id, centralised critic on the global
state, value normalisation, the task's preset); "ppo" is the categorical MLP (MLP+MAPPO), "ncdpo" the discrete
diffusion policy. Each (task, algo, seed) run is an ordinary ``ncdpo train`` subprocess under
``benchmarks/results/multiagent/<task>/``, resumable like the other harnesses. When done, each final policy is
evaluated over ``--episodes`` episodes with the most likely action (deterministic) and with sampled actions;
``<task>/summary.csv``, ``<task>/table.md`` (team return at fixed step counts; win rate where the task defines
success), ``<task>/curves.png`` and ``<task>/win_rate.png`` are written. ``--raw-throughput`` measures the raw
vector env with random actions (env steps/s) for the ratio to training's env steps/s.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

LEGACY_SEED = 777  # the eval seed of the tables in RESULTS section 7 (results written before they recorded it)
COMMON = ["--torch-threads", "1", "--save-every", "10", "--keep-checkpoints", "1", "--progress", "false"]
_DIFF = ["--diffusion.denoising-steps", "5", "--diffusion.hidden-dim", "128", "--ppo.actor-lr", "3e-4"]
# label -> (algo, its own options); everything else is the task's preset (ncdpo tasks)
VARIANTS = {
    "ppo": ("ppo", ["--mlp.hidden-dims", "64", "64"]),
    # the paper's epsilon-predicting chain (pinned: from scratch the default is now x0)
    "ncdpo": ("ncdpo", [*_DIFF, "--diffusion.prediction", "epsilon"]),
    # the same with NCDPO's noise policy (docs/METHOD.md section 6): the chain's initial latent drawn from a learned
    # N(mu_psi(s), sigma_psi^2), its own PPO ratio and advantage
    "ncdpo-noise": ("ncdpo", [*_DIFF, "--diffusion.prediction", "epsilon", "--noise-policy.enabled", "true"]),
    # logits bounded to [-2, 2] instead of [-4, 4]: the policy stays closer to uniform (GRF tuning, RESULTS section 7)
    "ncdpo-ls2": ("ncdpo", [*_DIFF, "--diffusion.logit-scale", "2", "--diffusion.prediction", "epsilon"]),
    # the denoiser predicts x0, not the noise: from a random init the logits start near-uniform and independent of
    # the chain noise, instead of a noise-picked random action per draw (RESULTS section 7)
    "ncdpo-x0": ("ncdpo", [*_DIFF, "--diffusion.prediction", "x0"]),
    # x0, and the denoiser initialised like the MLP baselines: orthogonal (gain sqrt 2), output layer scaled to 0.01
    # (simple_spread tuning, benchmarks/results/multiagent_tuning/README.md)
    "ncdpo-x0-orth": (
        "ncdpo",
        [
            *_DIFF,
            "--diffusion.prediction",
            "x0",
            "--diffusion.init",
            "orthogonal",
            "--diffusion.out-init-scale",
            "0.01",
        ],
    ),
}


def run_dir(out: Path, task: str, algo: str, seed: int) -> Path:
    return out / task / f"{task}__{algo}__s{seed}"


def run_one(task: str, algo: str, seed: int, steps: int, out: Path) -> str:
    name, extra = VARIANTS[algo]
    return H.run_train(
        run_dir(out, task, algo, seed),
        ["--algo", name, "--env", task, "--seed", str(seed), "--total-env-steps", str(steps), *COMMON, *extra],
    )


def summarize(
    tasks: list[str],
    algos: list[str],
    seeds: list[int],
    steps: int,
    out: Path,
    episodes: int,
    eval_seed: int = H.EVAL_SEED,
) -> str:
    marks = sorted({steps // 4, steps // 2, 3 * steps // 4, steps})
    lines: list[str] = []
    # the table covers every variant and seed on disk, so summarising a new variant keeps the earlier ones
    algos = [*algos, *(v for v in VARIANTS if v not in algos)]
    for task in tasks:
        task_seeds = H.seeds_on_disk(out / task, task, algos, seeds)
        table: dict[str, list[list[float]]] = {}
        rows = []
        has_success = False
        for algo in algos:
            for seed in task_seeds:
                run = run_dir(out, task, algo, seed)
                if not H.finished(run):
                    continue
                log = H.read_log(run)
                det = H.evaluate(run, run / "eval.json", episodes, eval_seed, legacy_seed=LEGACY_SEED)
                smp = H.evaluate(run, run / "eval_sampled.json", episodes, eval_seed, True, legacy_seed=LEGACY_SEED)
                for res in (det, smp):  # (no success rate: null in the JSON)
                    res["success_rate"] = math.nan if res.get("success_rate") is None else float(res["success_rate"])
                has_success = has_success or not math.isnan(det["success_rate"])
                vals = [H.value_at(log, m, "charts/episodic_return") for m in marks]
                sps = float(np.mean([float(r["charts/SPS"]) for r in log]))
                rec = [
                    *vals,
                    det["return_mean"],
                    smp["return_mean"],
                    det["success_rate"],
                    smp["success_rate"],
                    sps,
                    float(log[-1]["wall_s"]),
                ]
                table.setdefault(algo, []).append(rec)
                rows.append([task, algo, seed, *rec])
        task_lines = [
            f"### {task}",
            "",
            f"Team return of training episodes (mean ± std over seeds; each value averages "
            f"the last 5 iterations before the mark); final policy over {episodes} episodes, most likely "
            "action (det.) and sampled.",
            "",
            "| algo | seeds | "
            + " | ".join(f"{m // 1000}k" for m in marks)
            + " | final det. | final sampled |"
            + (" win det. | win sampled |" if has_success else "")
            + " env steps/s | wall s / run |",
            "|" + "---|" * (len(marks) + 6 + (2 if has_success else 0)),
        ]
        for algo, recs in table.items():
            a = np.asarray(recs, np.float64)
            cells = [H.mean_std(a[:, i], 2) for i in range(len(marks) + 2)]
            if has_success:
                cells += [H.mean_std(a[:, i], 0, 100, "%") for i in (len(marks) + 2, len(marks) + 3)]
            cells += [f"{a[:, -2].mean():.0f}", f"{a[:, -1].mean():.0f}"]
            task_lines.append(f"| {algo} | {len(recs)} | " + " | ".join(cells) + " |")
        task_lines.append("")
        lines += task_lines
        runs = [
            run_dir(out, task, a, s)
            for a in algos
            for s in task_seeds
            if (run_dir(out, task, a, s) / "progress.csv").is_file()
        ]
        if not runs:
            continue
        title = f"{task}: NCDPO vs MLP+MAPPO, mean ± std over seeds"
        H.plot_curves(runs, out / task / "curves.png", smooth=5, title=title)
        if has_success:
            H.plot_curves(
                runs,
                out / task / "win_rate.png",
                y="charts/success_rate",
                smooth=5,
                title=f"{task}: win rate of training episodes",
            )
        # each task has its own table, so harness calls for different tasks never overwrite each other's
        H.write_csv(
            out / task / "summary.csv",
            [
                "task",
                "algo",
                "seed",
                *[f"return@{m}" for m in marks],
                "final_det_return",
                "final_sampled_return",
                "final_det_win",
                "final_sampled_win",
                "train_env_steps_per_s",
                "wall_s",
            ],
            rows,
        )
        H.write_table(out / task / "table.md", task_lines)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["simple_spread"])
    ap.add_argument("--algos", nargs="+", default=["ncdpo", "ppo"], choices=sorted(VARIANTS))
    ap.add_argument("--raw-throughput", action="store_true", help="only measure the raw env's env steps/s")
    H.add_common_args(ap, steps=500_000, episodes=50, out="multiagent")
    a = ap.parse_args()
    out = Path(a.out)
    if a.raw_throughput:
        from ncdpo.envs.registry import task_preset

        for task in a.tasks:
            n = int(task_preset(task).get("env.n_envs", 16))
            sps = H.raw_env_sps(task, n, seconds=20.0, warmup=10)
            print(f"{task}: raw vector env ({n} envs, random actions, 20 s): {sps:.0f} env steps/s", flush=True)
        return
    if not a.summarize:
        jobs = [(t, al, s, a.steps, out) for t in a.tasks for s in a.seeds for al in a.algos]
        H.run_jobs(run_one, jobs, a.jobs, a.address)
    print(summarize(a.tasks, a.algos, a.seeds, a.steps, out, a.episodes, a.eval_seed))


if __name__ == "__main__":
    main()
