"""Ray on one machine, measured in one run: a sweep vs the same runs one after another, and Ray env actors vs
subprocess envs.

    python benchmarks/ray_scaling.py                       # both parts (about 15 minutes on 2 cores)
    python benchmarks/ray_scaling.py --part vector --vector-tasks lift Hopper-v5

1. **Sweep**: ``--runs`` NCDPO fine-tunings of ``shipped:Hopper-v5`` (``configs/finetune_locomotion.yaml``, seeds
   1..runs, ``--steps`` env steps each), first one after another with ``ncdpo train`` (torch's default threads),
   then as one ``ncdpo sweep`` (Ray started here, one CPU and one torch thread per trial, as many at once as there
   are cores). Wall-clock seconds of each and their ratio; the sweep's trials are checked to have the budget.
2. **Env actors**: raw env steps/s (random actions, ``act_steps`` 4) of ``--n-envs`` envs stepped by
   ``--env.vector async`` (one subprocess each) and ``ray`` (one Ray actor each), and the overhead per vector
   step, ``1/sps_ray - 1/sps_async`` times the env steps of one vector step.

Writes ``benchmarks/results/ray/ray_scaling.csv`` and ``table.md`` (raw run folders under ``--work``, not kept).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402


def sweep_vs_sequential(runs: int, steps: int, work: Path) -> list[list]:
    config = H.REPO / "configs" / "finetune_locomotion.yaml"
    seq = work / "sequential"
    t0 = time.perf_counter()
    for seed in range(1, runs + 1):
        subprocess.check_call(
            [*H.NCDPO, "train", "--init", "shipped:Hopper-v5", "--config", str(config), "--seed", str(seed),
             "--total-env-steps", str(steps), "--eval-every", "0", "--progress", "false", "--tensorboard", "false",
             "--out-dir", str(seq), "--run-name", f"s{seed}", "--overwrite"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    t_seq = time.perf_counter() - t0
    spec = work / "hopper.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"out": str(work), "name": "sweep", "tasks": ["Hopper-v5"], "algos": ["ncdpo"],
             "seeds": list(range(1, runs + 1)), "init": "shipped:{task}", "config": str(config),
             "set": {"total_env_steps": steps, "eval_every": 0, "tensorboard": False}, "eval_episodes": 0,
             "progress_every": 60}
        )
    )  # fmt: skip
    import shutil

    shutil.rmtree(work / "sweep", ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.check_call([*H.NCDPO, "sweep", str(spec)], stdout=subprocess.DEVNULL)
    t_sweep = time.perf_counter() - t0
    for seed in range(1, runs + 1):
        last = float(H.read_log(work / "sweep" / f"Hopper-v5__ncdpo__s{seed}")[-1]["env_steps"])
        assert last >= steps, (seed, last)
    print(f"{runs} Hopper runs of {steps} env steps: one after another {t_seq:.0f} s, sweep {t_sweep:.0f} s")
    return [
        ["sweep", "Hopper-v5", runs, steps, "one after another", round(t_seq, 1), ""],
        ["sweep", "Hopper-v5", runs, steps, "ncdpo sweep", round(t_sweep, 1), round(t_seq / t_sweep, 2)],
    ]


def vector_sps(tasks: list[str], n_envs: int, decisions: int) -> list[list]:
    rows = []
    for task in tasks:
        sps = {v: H.raw_env_sps(task, n_envs, act_steps=4, decisions=decisions, vector=v) for v in ("async", "ray")}
        overhead_ms = (1 / sps["ray"] - 1 / sps["async"]) * n_envs * 4 * 1000
        print(f"{task}: async {sps['async']:.0f}, ray {sps['ray']:.0f} env steps/s; {overhead_ms:+.2f} ms per step")
        rows.append(["vector", task, n_envs, decisions, "async", round(sps["async"], 1), ""])
        rows.append(["vector", task, n_envs, decisions, "ray", round(sps["ray"], 1), round(overhead_ms, 2)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "sweep", "vector"], default="all")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=32_768, help="env steps per Hopper run (default 32768: 8 iterations)")
    ap.add_argument("--vector-tasks", nargs="+", default=["lift", "Hopper-v5"])
    ap.add_argument("--n-envs", type=int, default=8)
    ap.add_argument("--decisions", type=int, default=200, help="vector steps per throughput measurement")
    ap.add_argument("--work", default="/tmp/ncdpo_ray_scaling")
    ap.add_argument("--out", default=str(H.ROOT / "results" / "ray"))
    a = ap.parse_args()
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[list] = []
    if a.part in ("all", "sweep"):
        rows += sweep_vs_sequential(a.runs, a.steps, work)
    if a.part in ("all", "vector"):
        rows += vector_sps(a.vector_tasks, a.n_envs, a.decisions)
    header = ["part", "task", "runs_or_envs", "steps_or_decisions", "mode", "wall_s_or_env_steps_per_s", "ratio_or_ms"]
    name = "ray_scaling.csv" if a.part == "all" else f"ray_scaling_{a.part}.csv"
    H.write_csv(out / name, header, rows)
    lines = [
        "| part | task | runs / envs | steps / decisions | mode | wall s / env steps/s | speed-up / ms per step |",
        "|---|---|---|---|---|---|---|",
        *("| " + " | ".join(map(str, r)) + " |" for r in rows),
    ]
    print(H.write_table(out / name.replace(".csv", ".md"), lines))


if __name__ == "__main__":
    main()
