#!/usr/bin/env python
"""Issue 30's check: a BC policy cloned from a robomimic-layout copy of ``shipped:lift`` succeeds as the shipped one.

    python benchmarks/interop_bc.py            # ~10 min on 2 cores

1. ``save_robomimic`` writes the shipped Lift demonstrations in robomimic's own layout (``obs/<key>`` groups,
   ``env_args``, ``mask/train``).
2. ``ncdpo pretrain --dataset <that file>`` with the shipped recipe (``scripts/make_manipulation_data.py``: K=10,
   horizon 4, 10k steps, seed 1), the env taken from ``env_args`` alone.
3. ``ncdpo eval`` of both policies with the shipped summary's protocol (50 episodes, eval seed 12345, 8 envs),
   deterministic and sampled, and the largest weight difference between the two policies.

Results: ``benchmarks/results/interop/`` (``summary.json``, eval JSON, the run's ``progress.csv`` and config).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
from make_locomotion_data import BC_ARGS  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "interop"
NCDPO = [sys.executable, "-m", "ncdpo.cli"]


def main() -> None:
    import torch

    import ncdpo
    from ncdpo.data.dataset import load_dataset
    from ncdpo.data.robomimic import save_robomimic
    from ncdpo.shipped import asset_dir

    work = ROOT / "data_gen" / "interop"
    work.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    rm = save_robomimic(load_dataset("shipped:lift"), work / "lift_robomimic.hdf5")
    shipped = json.loads((asset_dir("lift") / "summary.json").read_text())["bc"]
    run = work / "bc"
    t0 = time.time()
    if not (run / "checkpoints" / "final.safetensors").is_file():
        subprocess.run([*NCDPO, "pretrain", "--dataset", str(rm), *BC_ARGS, "--pretrain.steps", str(shipped["steps"]),
                        "--eval-every", "0", "--out-dir", str(work), "--run-name", "bc", "--overwrite", "--progress",
                        "false", "--seed", "1"], check=True)  # fmt: skip
    bc_s = time.time() - t0
    res: dict[str, dict[str, float]] = {"copy": {}, "shipped": {}}
    for which, policy in (("copy", str(run)), ("shipped", "shipped:lift")):
        for mode, extra in (("deterministic", []), ("sampled", ["--sampled"])):
            out = OUT / f"{which}_eval_{mode}.json"
            if not out.is_file():  # the shipped summary's protocol: 50 episodes, seed 12345, 8 subprocess envs
                n, seed = str(shipped["eval_episodes"]), str(shipped["eval_seed"])
                cmd = [*NCDPO, "eval", policy, "--episodes", n, "--seed", seed, "--n-envs", "8", "--json", str(out)]
                subprocess.run([*cmd, *extra], check=True)
            res[which][mode] = json.loads(out.read_text())["success_rate"]
    a, b = ncdpo.load_policy(run), ncdpo.load_policy("shipped:lift")
    sa, sb = a.agent.policy.state_dict(), b.agent.policy.state_dict()
    diff = max(float((sa[k] - sb[k]).abs().max()) for k in sa if sa[k].dtype.is_floating_point)
    summary = {
        "dataset": "robomimic-layout copy of shipped:lift (benchmarks/interop_bc.py)",
        "env_from_dataset": a.env_id,
        "bc_steps": shipped["steps"],
        "eval_episodes": shipped["eval_episodes"],
        "eval_seed": shipped["eval_seed"],
        "robomimic_copy": {"det": res["copy"]["deterministic"], "smp": res["copy"]["sampled"]},
        "shipped_evaluated_here": {"det": res["shipped"]["deterministic"], "smp": res["shipped"]["sampled"]},
        "shipped_summary_json": {"det": shipped["success_rate_deterministic"], "smp": shipped["success_rate_sampled"]},
        "max_abs_weight_difference": diff,
        "bc_wall_s": round(bc_s, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name in ("progress.csv", "config.json"):
        shutil.copyfile(run / name, OUT / name)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
