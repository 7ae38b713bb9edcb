"""How much signal is in one NCDPO policy gradient? Cosine between the estimates of two halves of a rollout.

    python benchmarks/grad_snr.py --init shipped:Hopper-v5 --condition-on-mean true --sigma 0.1

Starts fine-tuning from ``--init`` with ``configs/finetune_locomotion.yaml``, trains only the critic for
``--warmup`` iterations, then on the next rollout computes the PPO policy gradient at ratio 1
(``-mean(A * grad log pi)``, normalised advantages) on two random disjoint halves of the decisions and prints
their cosine. Near 0: the gradient is noise at that batch size; it rises with the signal-to-noise ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    from ncdpo.cli import build_parser, resolve_train_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", default="shipped:Hopper-v5")
    ap.add_argument("--condition-on-mean", default="false")
    ap.add_argument("--sigma", default="0.1")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--n-steps", type=int, default=256, help="decisions per env per rollout (16 envs)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    argv = [
        "train", "--init", a.init, "--config", str(ROOT / "configs" / "finetune_locomotion.yaml"),
        "--critic.condition-on-mean", a.condition_on_mean, "--diffusion.sigma-exp", "fixed",
        "--diffusion.sigma-exp-start", a.sigma, "--ppo.critic-warmup-iters", str(a.warmup + 5), "--ppo.n-steps",
        str(a.n_steps), "--out-dir", "/tmp/ncdpo_grad_snr", "--run-name", "snr", "--overwrite", "--progress", "false",
        "--eval-every", "0", "--tensorboard", "false", "--torch-threads", "1", "--seed", str(a.seed)
    ]
    args, extra = build_parser().parse_known_args(argv)
    cfg = resolve_train_config(args, extra)
    cfg.total_env_steps = cfg.env.n_envs * cfg.ppo.n_steps * cfg.act_steps * (a.warmup + 1) - 100
    from ncdpo.training.trainer import Trainer

    calls = []

    def probe(trainer, buf, adv, out):
        agent = trainer.agent
        calls.append(1)
        if len(calls) == a.warmup + 1:
            B = buf.T * buf.N
            flat = lambda x: x.reshape(B, *x.shape[2:])  # noqa: E731
            obs, store, adv_n = flat(buf.obs), {k: flat(v) for k, v in buf.store.items()}, flat(adv)
            adv_n = (adv_n - adv_n.mean()) / adv_n.std()
            params = list(agent.policy.parameters())
            perm = torch.randperm(B)
            grads = []
            for half in (perm[: B // 2], perm[B // 2 :]):
                g = torch.zeros(sum(p.numel() for p in params))
                for i in range(0, len(half), 512):
                    idx = half[i : i + 512]
                    lp, _ = agent.log_prob_entropy(obs[idx], {k: v[idx] for k, v in store.items()})
                    gs = torch.autograd.grad(-(lp * adv_n[idx]).sum() / len(half), params, allow_unused=True)
                    g += torch.cat(
                        [x.flatten() if x is not None else torch.zeros(p.numel()) for x, p in zip(gs, params)]
                    )
                grads.append(g)
            cos = float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0))
            print(
                f"init={a.init} condition_on_mean={a.condition_on_mean} sigma={a.sigma} decisions per half={B // 2} "
                f"critic EV={out['losses/explained_variance']:.3f} cosine(half gradients)={cos:.3f}",
                flush=True,
            )

    Trainer(cfg, after_update=probe).run()


if __name__ == "__main__":
    main()
