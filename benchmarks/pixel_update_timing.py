"""The pixel update alone, timed on a device: the image encoder plus one NCDPO or DPPO update on a saved batch of
rollout frames. Needs torch and numpy only (no simulator), so it runs on a GPU machine as it is.

    python benchmarks/pixel_update_timing.py --device cpu --threads 16
    python benchmarks/pixel_update_timing.py --device cuda

The batch is one iteration of the manipulation recipe (8 envs x 64 decisions = 512 decisions) of lift-image
observations: the wrist-camera frames of ``benchmarks/results/pixels/frames_lift_image_84.npz`` (23 frames from
lift-image demonstrations, tiled), random proprioception, and the chain noise (NCDPO) or chain (DPPO) the policy
draws for them. The agents have the shipped pixel policy's architecture (K = 10, horizon 4, 4 executed actions,
residual MLP 256 x 2 blocks, conv encoder) and the recipe's update settings (:data:`RECIPES`, checked against
``configs/*_manipulation.yaml`` by the tests). Each update (random-shift augmentation with log pi_old recomputed,
then ``update_epochs`` passes of minibatches) is run ``--repeats`` times after one warm-up; the CSV row holds the
mean seconds per update and the peak memory.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

FRAMES = ROOT / "benchmarks" / "results" / "pixels" / "frames_lift_image_84.npz"
POLICY = {"horizon": 4, "act_steps": 4, "diffusion.denoising_steps": 10, "diffusion.hidden_dim": 256,
          "diffusion.num_blocks": 2}  # fmt: skip
# the update settings of configs/finetune_manipulation.yaml and configs/dppo_manipulation.yaml
RECIPES = {
    "ncdpo": {"ppo.update_epochs": 5, "ppo.minibatch_size": 128, "ppo.target_kl": 0.0, "critic.condition_on_mean": True,
              "diffusion.sigma_exp": "learnable", "diffusion.sigma_exp_start": 0.1},
    "dppo": {"ppo.update_epochs": 10, "ppo.minibatch_size": 1280, "ppo.clip_coef": 0.01, "ppo.max_grad_norm": 1000.0,
             "ppo.target_kl": 0.0, "critic.hidden_dims": (256, 256, 256), "critic.activation": "mish",
             "dppo.ft_denoising_steps": 10},
}  # fmt: skip
# target_kl 0 here (the recipes' KL stop would end an update early on random advantages and time less work)
N_ENVS, N_STEPS = 8, 64


def make_config(algo: str, size: int, kind: str):
    from ncdpo.config import TrainConfig, apply_overrides

    values = {**POLICY, **RECIPES[algo], "algo": algo, "env.image_size": size, "encoder.kind": kind}
    return apply_overrides(TrainConfig(), values)


def obs_spec(size: int):
    from ncdpo.observations import ObsSpec

    return ObsSpec(
        (("object", (10,), "float32"), ("robot0_eef_pos", (3,), "float32"), ("robot0_eef_quat", (4,), "float32"),
         ("robot0_eye_in_hand_image", (size, size, 3), "uint8"), ("robot0_gripper_qpos", (2,), "float32")),
        ("object",),
    )  # fmt: skip


def frames(size: int, n: int) -> np.ndarray:
    f = np.load(FRAMES)["frames"] if FRAMES.is_file() else np.random.default_rng(0).integers(0, 256, (32, 84, 84, 3))
    f = f.astype(np.uint8)
    if f.shape[1] != size:  # nearest-neighbour resize: the update's cost does not depend on the pixels' content
        idx = np.minimum((np.arange(size) * f.shape[1] / size).astype(int), f.shape[1] - 1)
        f = f[:, idx][:, :, idx]
    return np.resize(f, (n, size, size, 3))


def time_update(algo: str, device: torch.device, size: int, kind: str, repeats: int) -> dict[str, float]:
    from ncdpo.algos import make_agent
    from ncdpo.algos.buffer import RolloutBuffer
    from ncdpo.algos.losses import compute_gae
    from ncdpo.algos.update import ppo_update
    from ncdpo.envs.spec import EnvSpec

    torch.manual_seed(0)
    cfg = make_config(algo, size, kind)
    spec = obs_spec(size)
    env = EnvSpec(spec.flat_dim, 7, obs=spec.to_dict())
    agent = make_agent(cfg, spec.flat_dim, 7, env).to(device)
    opt = torch.optim.Adam(
        [{"params": agent.actor_parameters(), "lr": 1e-5}, {"params": agent.critic.parameters(), "lr": 1e-3}], eps=1e-5
    )
    buf = RolloutBuffer(N_STEPS, N_ENVS, spec.flat_dim, device, spec)
    imgs = torch.as_tensor(frames(size, N_STEPS * N_ENVS), device=device).view(N_STEPS, N_ENVS, size, size, 3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in range(N_STEPS):
            obs = {k: torch.randn(N_ENVS, *s, generator=g).to(device) for k, s, d in spec.keys if d != "uint8"}
            obs["robot0_eye_in_hand_image"] = imgs[t]
            out = agent.act(obs)
            v = agent.value(obs, out.store)
            rew = torch.randn(N_ENVS, generator=g).to(device)
            buf.add(t, obs, v, out.log_prob, out.store, rew, torch.zeros(N_ENVS, device=device))
        adv, ret = compute_gae(buf.rewards, buf.values, buf.dones, torch.zeros(N_ENVS, device=device), 0.99, 0.95)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    ppo_update(agent, opt, buf, adv, ret, cfg)  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        ppo_update(agent, opt, buf, adv, ret, cfg)
    sync()
    s = (time.perf_counter() - t0) / repeats
    if device.type == "cuda":
        mem = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        import resource

        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s_per_update": s, "peak_mem_mb": mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--algos", nargs="+", default=["ncdpo", "dppo"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[84])
    ap.add_argument("--kinds", nargs="+", default=["conv"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    rows = []
    for size in a.sizes:
        for kind in a.kinds:
            for algo in a.algos:
                r = time_update(algo, device, size, kind, a.repeats)
                row = [device.type, name, torch.get_num_threads(), torch.__version__, size, kind, algo,
                       r["s_per_update"], r["peak_mem_mb"]]  # fmt: skip
                rows.append(row)
                print(f"{device.type} ({name}, {row[2]} threads) {size}px {kind} {algo}: {r['s_per_update']:.2f} s "
                      f"per update, peak {r['peak_mem_mb']:.0f} MB", flush=True)  # fmt: skip
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        new = not out.is_file()
        with open(out, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["device", "name", "threads", "torch", "image_px", "encoder", "algo", "s_per_update",
                            "peak_mem_mb"])  # fmt: skip
            w.writerows(rows)


if __name__ == "__main__":
    main()
