"""How far a Transport policy gets: the fraction of episodes that reach each sub-task.

    python benchmarks/transport_progress.py RUN_OR_CHECKPOINT --episodes 8 [--sampled] [--json out.json]

Success on ``transport`` needs all of: the lid off the start bin, the trash in the trash bin, the hammer out of
the start bin, across the gap between the tables and into the target bin. A success rate of 0 says nothing
about which of these a policy does; this runs ``--episodes`` episodes (reset seeds ``--seed``, ``--seed`` + 1,
..., one env, the policy's own action chunks) and records per episode whether, at any step,

* ``lid_off``: the lid's handle rose above 1.02 m or moved more than 10 cm sideways,
* ``trash_binned``: the trash touched the trash bin's floor (robosuite's own test),
* ``hammer_lifted``: the hammer rose above 0.95 m (out of the start bin),
* ``hammer_past_middle``: the hammer was over robot 1's half of the workspace (y > 0) and above the floor,
* ``hammer_in_target``: the hammer touched the target bin's floor,
* ``success``: the episode ended in success.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="a run folder or checkpoint trained on transport")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--sampled", action="store_true", help="sample the chain's last step (default: deterministic)")
    ap.add_argument(
        "--seed", type=int, default=1000, help="reset seed of the first episode (torch is seeded with it too)"
    )
    ap.add_argument("--json", default="", help="also write the per-episode flags and the fractions here")
    a = ap.parse_args()

    import torch

    from ncdpo.algos import load_agent
    from ncdpo.checkpoint import atomic_write_text
    from ncdpo.envs.registry import make_vec_env
    from ncdpo.training.evaluation import decide

    torch.set_num_threads(1)  # one env: more threads only spin on a shared machine
    torch.manual_seed(a.seed)
    agent, obs_norm, ck = load_agent(a.path, "cpu")
    if ck.meta.get("env_id") != "transport":
        sys.exit(f"transport_progress: {a.path} was trained on '{ck.meta.get('env_id')}', not 'transport'")
    envs = make_vec_env("transport", 1, ck.config.act_steps, 0, "sync")
    inner = envs.envs[0].unwrapped
    rows = []
    for ep in range(a.episodes):
        obs, _ = envs.reset(seed=a.seed + ep)
        start_lid = np.asarray(inner.last_raw_obs["lid_handle_pos"], np.float64).copy()
        f = dict.fromkeys(
            ("lid_off", "trash_binned", "hammer_lifted", "hammer_past_middle", "hammer_in_target", "success"), False
        )
        while True:
            with torch.no_grad():
                out = decide(agent, obs_norm, obs, not a.sampled)
            obs, _, term, trunc, _ = envs.step(out.action.numpy())
            o = inner.last_raw_obs
            lid, pay = o["lid_handle_pos"], o["payload_pos"]
            f["lid_off"] |= bool(lid[2] > 1.02 or np.hypot(*(lid[:2] - start_lid[:2])) > 0.1)
            f["trash_binned"] |= bool(o["trash_in_trash_bin"])
            f["hammer_lifted"] |= bool(pay[2] > 0.95)
            f["hammer_past_middle"] |= bool(pay[1] > 0.0 and pay[2] > 0.5)
            f["hammer_in_target"] |= bool(o["payload_in_target_bin"])
            if term[0] or trunc[0]:
                if term[0]:  # success ends the episode on the step both contacts hold (the observation may lag)
                    f["success"] = f["trash_binned"] = f["hammer_in_target"] = True
                break
        rows.append(f)
        print(ep, " ".join(f"{k}={int(v)}" for k, v in f.items()), flush=True)
    frac = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print(json.dumps(frac))
    if a.json:
        atomic_write_text(
            Path(a.json),
            json.dumps(
                {
                    "path": str(a.path),
                    "episodes": a.episodes,
                    "seed": a.seed,
                    "mode": "sampled" if a.sampled else "deterministic",
                    "fractions": frac,
                    "per_episode": rows,
                },
                indent=2,
            )
            + "\n",
        )


if __name__ == "__main__":
    main()
