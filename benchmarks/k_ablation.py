"""NCDPO's robustness to the number of denoising steps K: fine-tuning from BC policies with K in {5, 10, 20, 50}.

    python benchmarks/k_ablation.py --task Hopper-v5 --ks 5 10 20 50 --ddim --steps 300000 --seeds 1 2 3 --jobs 2

For each K, a behaviour-cloned policy is pre-trained on the shipped medium dataset with exactly the shipped
recipe except K (``ncdpo pretrain``, 20k steps, seed 1; K=10 is the shipped checkpoint itself). The DDIM
variant fine-tunes the K=20 policy with a 5-step DDIM sampler (eta 1). Every variant is then fine-tuned with
``configs/finetune_locomotion.yaml`` for ``--steps`` env steps and each seed. Resumable like the other
harnesses; writes ``summary.csv``, ``table.md`` (final deterministic return per variant, spread across
variants relative to their mean, time per update) and ``curves.png`` under
``benchmarks/results/k_ablation/<task>/``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

CONFIG = H.REPO / "configs" / "finetune_locomotion.yaml"
LEGACY_SEED = 424242  # the eval seed of results written before they recorded it
BC_ARGS = [
    "--horizon", "4", "--act-steps", "4", "--diffusion.hidden-dim", "256", "--diffusion.num-blocks", "2",
    "--pretrain.steps", "20000", "--seed", "1", "--torch-threads", "1", "--progress", "false"
]


def bc_checkpoint(task: str, k: int, out: Path) -> str:
    if k == 10:
        return f"shipped:{task}"
    run = out / f"bc_K{k}"
    if not (run / "checkpoints" / "final.safetensors").is_file():
        with open(out / f"bc_K{k}.log", "w") as log:
            subprocess.check_call(
                [
                    *H.NCDPO, "pretrain", "--dataset", f"shipped:{task}", "--diffusion.denoising-steps", str(k),
                    *BC_ARGS, "--out-dir", str(out), "--run-name", f"bc_K{k}", "--overwrite"
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    return str(run)


def variants(task: str, ks: list[int], ddim: bool, out: Path) -> dict[str, tuple[str, list[str]]]:
    v = {f"K{k}": (bc_checkpoint(task, k, out), []) for k in ks}
    if ddim:
        v["K20-ddim5"] = (
            bc_checkpoint(task, 20, out),
            ["--diffusion.sampler", "ddim", "--diffusion.ddim-steps", "5", "--diffusion.ddim-eta", "1.0"],
        )
    return v


def run_one(name: str, init: str, extra: list[str], seed: int, steps: int, out: Path) -> str:
    args = ["--init", init, "--config", str(CONFIG), *extra, *H.run_args(seed, steps)]
    return H.run_train(out / f"{name}__s{seed}", args)


def summarize(task: str, names: list[str], seeds: list[int], out: Path, episodes: int, eval_seed: int) -> str:
    rows, means, runs = [], {}, []
    lines = [
        f"NCDPO fine-tuning on {task}, deterministic evaluation of the final policy over {episodes} episodes "
        "(mean ± std over seeds).",
        "",
        "| variant | final return | seeds | update s / iter | wall s / run |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        finals, upd, walls = [], [], []
        for seed in seeds:
            run = out / f"{name}__s{seed}"
            if not H.finished(run):
                continue
            ev = H.evaluate(run, run / "eval.json", episodes, eval_seed, legacy_seed=LEGACY_SEED)
            c = H.run_cost(H.read_log(run))
            finals.append(ev["return_mean"])
            upd.append(c["update_s"])
            walls.append(c["wall_s"])
            rows.append([name, seed, ev["return_mean"], c["env_steps"], upd[-1], walls[-1]])
            runs.append(run)
        if finals:
            means[name] = float(np.mean(finals))
            lines.append(
                f"| {name} | {H.mean_std(finals)} | {len(finals)} | {np.mean(upd):.2f} | {np.mean(walls):.0f} |"
            )
    if len(means) > 1:
        vals = np.asarray(list(means.values()))
        lines += [
            "",
            "Spread of the variants' mean final return: (max - min) / mean = "
            f"{(vals.max() - vals.min()) / vals.mean():.2f}",
        ]
    H.write_csv(
        out / "summary.csv", ["variant", "seed", "final_eval_return", "env_steps", "update_s_per_iter", "wall_s"], rows
    )
    if runs:
        H.plot_curves(
            runs,
            out / "curves.png",
            y="eval/return_mean",
            title=f"{task}: NCDPO fine-tuning vs K, mean ± std over seeds",
        )
    return H.write_table(out / "table.md", lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="Hopper-v5")
    ap.add_argument("--ks", nargs="+", type=int, default=[5, 10, 20, 50])
    ap.add_argument("--ddim", action="store_true", help="also the K=20 policy with a 5-step DDIM sampler")
    H.add_common_args(ap, steps=300_000, episodes=20, out="k_ablation")
    a = ap.parse_args()
    out = Path(a.out) / a.task
    out.mkdir(parents=True, exist_ok=True)
    if a.summarize:
        names = [f"K{k}" for k in a.ks] + (["K20-ddim5"] if a.ddim else [])
    else:
        v = variants(a.task, a.ks, a.ddim, out)
        names = list(v)
        # Longest runs first (update cost grows with K; DDIM-5 costs like K5), so the pool's tail is short.
        cost = {n: 5 if "ddim" in n else int(n[1:]) for n in names}
        jobs = sorted(((n, s) for s in a.seeds for n in names), key=lambda j: -cost[j[0]])
        H.run_jobs(run_one, [(n, *v[n], s, a.steps, out) for n, s in jobs], a.jobs, a.address)
    print(summarize(a.task, names, a.seeds, out, a.episodes, a.eval_seed))


if __name__ == "__main__":
    main()
