"""Evaluate a diffusion policy with its chain noise scaled (the ``diffusion.chain_noise_scale`` ablation).

    python benchmarks/eval_fixed_noise.py shipped:lift --scale 0 --episodes 50 --seed 424242 [--sampled] [--json F]

``ncdpo eval`` runs a checkpoint exactly as it was saved; this runs the same evaluation with every chain noise xi
multiplied by ``--scale`` (0: the chain starts from x_K = 0 and adds no intermediate noise, so the policy is a
function of the observation, plus the last step's perturbation when ``--sampled``). It answers "how good is the
noise-free path of this policy?" before fine-tuning it with ``--diffusion.chain-noise-scale``.
"""
import argparse
import json

import torch

from ncdpo.algos.core import evaluate, load_agent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--scale", type=float, default=0.0, help="multiplier on every chain noise (default 0)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sampled", action="store_true", help="sample the last step / the categorical draw")
    ap.add_argument("--n-envs", type=int, default=8)
    ap.add_argument("--json", default="", help="also write the result here")
    a = ap.parse_args(argv)
    if a.scale < 0:
        ap.error(f"--scale must be >= 0 (got {a.scale})")
    torch.set_num_threads(1)
    agent, norm, ck = load_agent(a.path)
    if ck.config.algo != "ncdpo":
        ap.error(f"{a.path} holds a {ck.config.algo} policy; only NCDPO's draws its chain noise up front")
    agent.policy.cfg.chain_noise_scale = a.scale
    cfg = ck.config
    res = evaluate(agent, norm, cfg.env.id, a.episodes, cfg.act_steps, not a.sampled, a.seed,
                   cfg.env.max_episode_steps, max_envs=a.n_envs, vector=cfg.env.vector)
    mode = "sampled" if a.sampled else "deterministic"
    print(f"{cfg.env.id} {a.path} chain_noise_scale {a.scale} ({mode}, {a.episodes} episodes, seed {a.seed}): "
          f"return {res['return_mean']:.3f} ± {res['return_std']:.3f}, success {res['success_rate']:.2f}")
    if a.json:
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in res.items()}
        clean["successes"] = [None if x != x else x for x in res["successes"]]
        with open(a.json, "w") as f:
            json.dump({"checkpoint": str(ck.path), "chain_noise_scale": a.scale, "mode": mode, **clean}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
