"""Training throughput, update time and memory of NCDPO on this machine, measured in one run.

    python benchmarks/throughput.py [--env Hopper-v5] [--iters 5]

1. Raw env steps/s of the vectorised env (16 Hopper envs, SyncVectorEnv) with random actions.
2. Env steps/s of ``ncdpo train`` (rollout + update, K=10) on that same vector env, for the from-scratch
   setting (horizon 1, one action per decision) and the chunked setting (horizon 4, act_steps 4), and the
   ratio to (1).
3. Time of one PPO update (10 epochs over 2048 decisions) with and without gradient checkpointing.
4. Peak memory of one update for K=10 vs K=50, with and without checkpointing, each in a fresh subprocess
   (peak RSS during the update minus RSS before it).
5. NCDPO vs DPPO at the same settings (16 envs, horizon 4, act_steps 4, K = K' = 10, 10 epochs, minibatches of
   256 decisions, i.e. 2560 (decision, step) samples for DPPO): rollout and update seconds per iteration and
   env steps/s (``--algos-only`` runs just this part).

Writes ``benchmarks/results/throughput.csv`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402


def train_sps(
    env_id: str, horizon: int, act_steps: int, iters: int, extra: list[str], algo: str = "ncdpo"
) -> tuple[float, float, float]:
    """(env steps/s, rollout s/iter, update s/iter) of a short training run, first iteration excluded."""
    from ncdpo.cli import build_parser, resolve_train_config
    from ncdpo.training.trainer import train

    with tempfile.TemporaryDirectory() as d:
        n_steps = 128 // act_steps
        argv = [
            "train",
            "--algo",
            algo,
            "--env",
            env_id,
            "--horizon",
            str(horizon),
            "--act-steps",
            str(act_steps),
            "--ppo.n-steps",
            str(n_steps),
            "--env.n-envs",
            "16",
            "--total-env-steps",
            str(16 * 128 * iters),
            "--out-dir",
            d,
            "--run-name",
            "t",
            "--progress",
            "false",
            "--tensorboard",
            "false",
            "--diffusion.prediction",
            "epsilon",  # what these figures were measured with (from scratch the default is now x0; same cost)
            *extra,
        ]
        args, rest = build_parser().parse_known_args(argv)
        rows = H.read_log(train(resolve_train_config(args, rest)))
    steps = int(rows[-1]["env_steps"]) - int(rows[0]["env_steps"])  # iterations 2..N (1 warms up)
    ro = [float(r["perf/rollout_s"]) for r in rows[1:]]
    up = [float(r["perf/update_s"]) for r in rows[1:]]
    return steps / (sum(ro) + sum(up)), float(np.mean(ro)), float(np.mean(up))


MEM_CHILD = r"""
import json, resource, sys, time, torch
from ncdpo.config import TrainConfig
from ncdpo.algos import make_agent
from ncdpo.algos.buffer import RolloutBuffer
from ncdpo.algos.losses import compute_gae
from ncdpo.algos.update import ppo_update
K, ckpt = int(sys.argv[1]), sys.argv[2] == "1"
torch.manual_seed(0)
cfg = TrainConfig()
cfg.diffusion.denoising_steps, cfg.diffusion.grad_checkpoint = K, ckpt
cfg.ppo.update_epochs, cfg.ppo.minibatch_size = 1, 2048
agent = make_agent(cfg, 11, 3)
opt = torch.optim.Adam(agent.parameters(), lr=1e-4)
buf = RolloutBuffer(128, 16, 11, torch.device("cpu"))
for t in range(128):
    obs = torch.randn(16, 11)
    out = agent.act(obs)
    buf.add(t, obs, agent.value(obs).detach(), out.log_prob, out.store, torch.randn(16), torch.zeros(16))
adv, ret = compute_gae(buf.rewards, buf.values, buf.dones, torch.zeros(16), 0.99, 0.95)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
ppo_update(agent, opt, buf, adv, ret, cfg)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": (peak - before) / 1024, "update_s": dt}))
"""


def update_memory(K: int, ckpt: bool) -> dict:
    out = subprocess.check_output([sys.executable, "-c", MEM_CHILD, str(K), "1" if ckpt else "0"], text=True)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--iters", type=int, default=5, help="training iterations per setting (first one excluded)")
    ap.add_argument(
        "--out",
        default="",
        help="CSV to write (default: results/throughput.csv, or throughput_algos.csv with --algos-only)",
    )
    ap.add_argument("--algos-only", action="store_true", help="only the NCDPO vs DPPO comparison (5.)")
    args = ap.parse_args()
    args.out = args.out or str(H.ROOT / "results" / ("throughput_algos.csv" if args.algos_only else "throughput.csv"))
    torch.manual_seed(0)
    rows: list[tuple[str, str, float]] = []
    threads = torch.get_num_threads()
    for algo, extra in (("ncdpo", []), ("dppo", ["--ppo.minibatch-size", "2560", "--dppo.ft-denoising-steps", "10"])):
        sps, ro, up = train_sps(args.env, 4, 4, args.iters, ["--diffusion.denoising-steps", "10", *extra], algo)
        tag = f"{algo},horizon=4,act_steps=4,K=10"
        rows += [
            (tag, "train_env_steps_per_s", sps),
            (tag, "rollout_s_per_iter", ro),
            (tag, "update_s_per_iter", up),
            (tag, "s_per_env_step", 1.0 / sps),
        ]
    for horizon, act in () if args.algos_only else ((1, 1), (4, 4)):
        raw = H.raw_env_sps(args.env, 16, act, decisions=1024 // act, warmup=0)
        sps, ro, up = train_sps(args.env, horizon, act, args.iters, [])
        _, _, up_ck = train_sps(args.env, horizon, act, 3, ["--diffusion.grad-checkpoint", "true"])
        tag = f"horizon={horizon},act_steps={act}"
        rows += [
            (tag, "raw_env_steps_per_s", raw),
            (tag, "ncdpo_train_env_steps_per_s", sps),
            (tag, "ratio_train_to_raw", sps / raw),
            (tag, "rollout_s_per_iter", ro),
            (tag, "update_s_per_iter", up),
            (tag, "update_s_per_iter_grad_checkpoint", up_ck),
        ]
    for K in () if args.algos_only else (10, 50):
        for ck in (False, True):
            m = update_memory(K, ck)
            rows += [
                (f"K={K},grad_checkpoint={ck}", "update_peak_mib", m["peak_mib"]),
                (f"K={K},grad_checkpoint={ck}", "one_epoch_update_s", m["update_s"]),
            ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    H.write_csv(Path(args.out), ["setting", "metric", "value"], rows)
    print(f"{args.env}, 16 envs, torch threads {threads}, maxrss unit KiB->MiB; batch 2048 decisions")
    print("| setting | metric | value |\n|---|---|---|")
    for s, k, v in rows:
        print(f"| {s} | {k} | {v:.3f} |")


if __name__ == "__main__":
    main()
