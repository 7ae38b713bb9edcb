#!/usr/bin/env python
"""How much of a discrete diffusion policy's randomness comes from the chain noise xi, and how much from the
categorical draw the PPO update sees.

NCDPO's discrete policy is ``pi(a | s, xi) = softmax(logit_scale * m_theta(s, xi))``. Its entropy term and its
ratio see only the per-noise distribution; the agent actually acts with the *marginal*
``pi(a | s) = E_xi pi(a | s, xi)``. For each checkpoint, this rolls the policy (sampled actions) in the task's
vector env to collect states, then draws ``--noises`` chain noises per state and prints:

- ``per-noise H``: mean over states and noises of the entropy of ``pi(. | s, xi)`` (what ``losses/entropy`` logs);
- ``marginal H``: mean over states of the entropy of ``E_xi pi(. | s, xi)`` (what the agent acts with);
- ``argmax agree``: mean over states of the share of noises whose most likely action is the state's modal one
  (1.0: the deterministic policy does not depend on xi).

For the MLP (categorical) policy the per-noise and the marginal entropies are the same number.

    python benchmarks/noise_entropy.py benchmarks/results/multiagent/simple_spread/simple_spread__ncdpo__s1 \
        benchmarks/results/multiagent/simple_spread/simple_spread__ppo__s1 --states 2000
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ncdpo.algos import load_agent  # noqa: E402
from ncdpo.envs.registry import action_mask, make_vec_env  # noqa: E402
from ncdpo.policies.categorical import categorical_entropy  # noqa: E402
from ncdpo.training.evaluation import decide  # noqa: E402


def collect_states(
    agent, obs_norm, env_id: str, n_states: int, n_envs: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalised observations (and masks) met by the sampled policy, about ``n_states`` rows."""
    envs = make_vec_env(env_id, n_envs, 1, 0, "sync")
    try:
        obs, info = envs.reset(seed=seed)
        rows, masks = [], []
        while sum(len(r) for r in rows) < n_states:
            mask = action_mask(info, len(obs))
            rows.append(torch.as_tensor(obs_norm(obs), dtype=torch.float32))
            if mask is not None:
                masks.append(torch.as_tensor(mask))
            with torch.no_grad():
                out = decide(agent, obs_norm, obs, False, mask)
            obs, _, _, _, info = envs.step(out.action.cpu().numpy())
    finally:
        envs.close()
    return torch.cat(rows)[:n_states], (torch.cat(masks)[:n_states] if masks else None)


@torch.no_grad()
def noise_stats(
    agent, obs: torch.Tensor, mask: torch.Tensor | None, n_noises: int, gen: torch.Generator
) -> dict[str, float]:
    policy = agent.policy
    x = agent.actor_obs(obs)
    if not hasattr(policy, "sample_noise"):  # the MLP: no chain noise
        h = float(categorical_entropy(policy.logits(x, mask)).mean())
        return {"per_noise_entropy": h, "marginal_entropy": h, "argmax_agree": 1.0}
    probs, ents, arg = [], [], []
    for _ in range(n_noises):
        lg = policy.logits(x, policy.sample_noise(x.shape[0], gen), mask)
        probs.append(torch.softmax(lg, -1))
        ents.append(categorical_entropy(lg))
        arg.append(lg.argmax(-1))
    p = torch.stack(probs).mean(0)
    marginal = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    a = torch.stack(arg)  # (noises, states)
    n_act = p.shape[-1]
    counts = torch.stack([(a == k).sum(0) for k in range(n_act)], -1)  # (states, actions)
    return {
        "per_noise_entropy": float(torch.stack(ents).mean()),
        "marginal_entropy": float(marginal.mean()),
        "argmax_agree": float((counts.max(-1).values.float() / n_noises).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders or checkpoints of discrete-action policies")
    ap.add_argument("--states", type=int, default=2000, help="rows (agent observations) to measure on")
    ap.add_argument("--noises", type=int, default=64, help="chain noises drawn per state")
    ap.add_argument("--n-envs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", default="", help="also write the rows here")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    out = []
    print(f"{'run':<60} {'per-noise H':>11} {'marginal H':>10} {'argmax agree':>12}")
    for run in a.runs:
        agent, obs_norm, ck = load_agent(run)
        if not agent.discrete:
            raise SystemExit(f"error: {run} is not a discrete-action policy")
        obs, mask = collect_states(agent, obs_norm, ck.config.env.id, a.states, a.n_envs, a.seed)
        st = noise_stats(agent, obs, mask, a.noises, torch.Generator().manual_seed(a.seed + 1))
        print(f"{run:<60} {st['per_noise_entropy']:>11.3f} {st['marginal_entropy']:>10.3f} {st['argmax_agree']:>12.3f}")
        out.append({"run": run, "states": len(obs), "noises": a.noises, **{k: f"{v:.4f}" for k, v in st.items()}})
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(out[0]))
            w.writeheader()
            w.writerows(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
