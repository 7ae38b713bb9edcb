"""How much does each denoising step's latent move the chain's output? A probe of NCDPO's back-propagation.

    python benchmarks/chain_sensitivity.py shipped:lift shipped:can shipped:square shipped:Hopper-v5

For a diffusion-policy checkpoint, draws ``--states`` observations from the demonstrations it ships with (or
``--dataset``), one chain noise xi per state, and prints per chain step j (first to last) the root-mean-square
singular value of the Jacobian d m(s, xi) / d x_j, where x_j is the latent fed to step j: ||J||_F / sqrt(dim m),
estimated with ``--probes`` random projections. Values well above 1 would mean the chain amplifies perturbations
(and back-propagated gradients) on the way out; values below 1 mean it contracts them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def main() -> None:
    from ncdpo.algos import load_agent
    from ncdpo.data.dataset import load_dataset
    from ncdpo.shipped import asset_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="run dirs, checkpoint files or shipped:<task>")
    ap.add_argument("--dataset", default="", help="observations from this dataset (default: the shipped task's)")
    ap.add_argument("--states", type=int, default=64)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for path in a.checkpoints:
        torch.manual_seed(a.seed)
        agent, norm, ck = load_agent(path)
        pol = agent.policy
        if not hasattr(pol, "chain_mean"):
            sys.exit(f"{path} does not hold a diffusion policy")
        if a.dataset:
            data = Path(a.dataset)
        else:
            folder = asset_dir(ck.config.env.id)
            data = next(p for p in (folder / "demos.hdf5", folder / "medium.hdf5") if p.is_file())
        obs_all = np.concatenate([e.obs for e in load_dataset(data).episodes])
        pick = np.random.default_rng(a.seed).choice(len(obs_all), a.states)
        obs = torch.as_tensor(norm(obs_all[pick]), dtype=torch.float32)
        noise = pol.sample_noise(obs.shape[0], None).requires_grad_(True)
        m, latents = pol.chain_mean(obs, noise, return_latents=True)
        rms = []
        for x in latents:
            sq = 0.0
            for _ in range(a.probes):
                (g,) = torch.autograd.grad(m, x, torch.randn_like(m), retain_graph=True)
                sq += (g**2).sum(1).mean().item() / a.probes
            rms.append((sq / m[0].numel()) ** 0.5)
        print(f"{path} ({ck.config.env.id}): " + " ".join(f"{r:.2f}" for r in rms), flush=True)


if __name__ == "__main__":
    main()
