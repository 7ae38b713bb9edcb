"""What camera observations cost on this CPU: rendering, env throughput, and the pixel update of NCDPO vs DPPO.

    python benchmarks/pixels.py --render                 # ms per frame: size, camera, costly effects on/off
    python benchmarks/pixels.py --throughput --init shipped:lift-image
    python benchmarks/pixels.py --throughput --init shipped:lift-image --settings 96 vit   # a larger setting

``--render`` times :class:`ncdpo.envs.render.CameraRenderer` on Lift's scene (the wrist camera and agentview) at
64, 84 and 96 px, with the scene's shadow, reflection and skybox effects off (what the tasks use) and on (robosuite's
defaults), and one robosuite physics step for comparison.

``--throughput`` measures, in one run, on ``lift`` and ``lift-image`` with 8 subprocess envs and 4 actions per
decision: raw env steps/s with random actions (state; cameras rendered at decision steps; cameras rendered at every
env step), then short NCDPO and DPPO fine-tuning runs of ``--init`` with the manipulation recipe files
(``configs/finetune_manipulation.yaml``, ``configs/dppo_manipulation.yaml``): training env steps/s (ratio to raw),
rollout and update seconds per iteration (the first iteration, which starts the workers, left out) and peak
memory; and the rollout buffer's bytes per 1000 decisions. ``--settings SIZE KIND`` repeats the training part at
another image size / encoder (``conv`` or ``vit``). Results: ``benchmarks/results/pixels/{render,throughput}.{csv,md}``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

OUT = H.REPO / "benchmarks" / "results" / "pixels"
CONFIGS = H.recipe_configs("manipulation")


def render_table(frames: int = 40) -> str:
    import mujoco

    from ncdpo.envs.manipulation import RobosuiteEnv
    from ncdpo.envs.render import CameraRenderer, select_gl_backend

    backend = select_gl_backend()
    env = RobosuiteEnv("lift")
    env.reset(seed=0)
    model, data = env.env.sim.model._model, env.env.sim.data._data
    a = np.zeros(7)
    t0 = time.perf_counter()
    for _ in range(100):
        env.step(a)
    step_ms = (time.perf_counter() - t0) * 10
    rows, lines = [], []
    for size in (64, 84, 96):
        for cam in ("robot0_eye_in_hand", "agentview"):
            for effects in (False, True):
                r = CameraRenderer(model, data, (cam,), size)
                r.render()
                if effects:
                    for f in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                              mujoco.mjtRndFlag.mjRND_SKYBOX):  # fmt: skip
                        r._renderer.scene.flags[f] = True
                t0 = time.perf_counter()
                for _ in range(frames):
                    r.render()
                ms = (time.perf_counter() - t0) / frames * 1000
                r.close()
                rows.append([backend, size, cam, "on" if effects else "off", ms, step_ms])
                lines.append(f"| {size} | {cam} | {'on' if effects else 'off'} | {ms:.1f} |")
    env.close()
    H.write_csv(OUT / "render.csv", ["backend", "size", "camera", "effects", "ms_per_frame", "physics_step_ms"], rows)
    return H.write_table(
        OUT / "render.md",
        [
            f"Render cost per frame on this CPU (MUJOCO_GL={backend}, Mesa llvmpipe; {frames} frames each), Lift's "
            f"scene. One robosuite Lift physics+control step without rendering: {step_ms:.1f} ms.",
            "",
            "| size px | camera | shadows/reflections/skybox | ms per frame |",
            "|---|---|---|---|",
            *lines,
        ],
    )


def train_cost(init: str, algo: str, iters: int, extra: list[str], name: str) -> dict[str, float]:
    run = OUT / "train" / name
    subprocess.check_call(
        [
            *H.NCDPO, "train", "--init", init, "--algo", algo, "--config", str(CONFIGS[algo]), "--total-env-steps",
            str(iters * 2048), "--ppo.critic-warmup-iters", "0", "--progress", "false", "--tensorboard", "false",
            "--save-every", "1000", "--out-dir", str(run.parent), "--run-name", run.name, "--overwrite", *extra
        ],
        stdout=subprocess.DEVNULL,
    )
    return short_run_cost(run)


def short_run_cost(run: Path) -> dict[str, float]:
    """Env steps/s, rollout and update seconds per iteration and peak memory of a short run, its first iteration
    (which starts the subprocess workers) left out."""
    full = H.read_log(run)
    log = full[1:]
    steps = int(log[-1]["env_steps"]) - int(full[0]["env_steps"])
    wall = float(log[-1]["wall_s"]) - float(full[0]["wall_s"])
    return {
        "train_sps": steps / wall,
        "rollout_s": float(np.mean([float(r["perf/rollout_s"]) for r in log])),
        "update_s": float(np.mean([float(r["perf/update_s"]) for r in log])),
        "peak_mem_mb": H.run_cost(log)["peak_mem_mb"],
    }


def buffer_bytes(size: int) -> tuple[int, int]:
    """Bytes per 1000 decisions of lift-image's observations: as stored (uint8 images), and as float32."""
    import torch

    from ncdpo.algos.buffer import RolloutBuffer
    from ncdpo.observations import ObsSpec

    spec = ObsSpec(
        (("object", (10,), "float32"), ("robot0_eef_pos", (3,), "float32"), ("robot0_eef_quat", (4,), "float32"),
         ("robot0_eye_in_hand_image", (size, size, 3), "uint8"), ("robot0_gripper_qpos", (2,), "float32")),
        ("object",),
    )  # fmt: skip
    buf = RolloutBuffer(1, 1, spec.flat_dim, torch.device("cpu"), spec)
    return 1000 * buf.obs_bytes_per_decision(), 1000 * 4 * spec.flat_dim


def throughput(init: str, iters: int, settings: list[tuple[int, str]], decisions: int) -> str:
    rows, lines = [], []
    raw_state = H.raw_env_sps("lift", 8, act_steps=4, decisions=decisions, vector="async")
    raw_img = H.raw_env_sps("lift-image", 8, act_steps=4, decisions=decisions, vector="async")
    # cameras rendered at every env step: act_steps 1, a decision (and an observation) per step
    raw_every = H.raw_env_sps("lift-image", 8, act_steps=1, decisions=decisions * 4, vector="async")
    lines += [
        "Raw env steps/s, 8 subprocess envs, random actions, 4 actions per decision:",
        "",
        "| task | cameras rendered | env steps/s |",
        "|---|---|---|",
        f"| lift | none (state) | {raw_state:.0f} |",
        f"| lift-image | at decision steps (every 4 env steps) | {raw_img:.0f} |",
        f"| lift-image | at every env step | {raw_every:.0f} |",
        "",
        f"Training from {init} ({iters} iterations of 2048 env steps; the first left out), the manipulation recipe "
        "files, same rollout for both algorithms:",
        "",
        "| image px | encoder | algo | train env steps/s | ratio to raw | rollout s / iter | update s / iter | "
        "peak memory MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, kind in settings:
        for algo in ("ncdpo", "dppo"):
            name = f"{algo}_{size}_{kind}"
            if (size, kind) == (84, "conv"):
                c = train_cost(init, algo, iters, [], name)
            else:
                c = train_cost_fresh(algo, iters, size, kind, name)
            ratio = c["train_sps"] / raw_img
            rows.append([size, kind, algo, raw_state, raw_img, raw_every, c["train_sps"], ratio, c["rollout_s"],
                         c["update_s"], c["peak_mem_mb"]])  # fmt: skip
            lines.append(
                f"| {size} | {kind} | {algo} | {c['train_sps']:.0f} | {ratio:.2f} | {c['rollout_s']:.1f} | "
                f"{c['update_s']:.1f} | {c['peak_mem_mb']:.0f} |"
            )
    stored, as_float = buffer_bytes(84)
    lines += ["", f"Rollout buffer, lift-image at 84 px: {stored / 2**20:.1f} MiB of observations per 1000 decisions "
              f"(images uint8; {as_float / 2**20:.1f} MiB as float32)."]  # fmt: skip
    H.write_csv(
        OUT / "throughput.csv",
        ["image_px", "encoder", "algo", "raw_state_sps", "raw_image_sps", "raw_image_every_step_sps", "train_sps",
         "ratio_to_raw_image", "rollout_s_per_iter", "update_s_per_iter", "peak_mem_mb"],
        rows,
    )  # fmt: skip
    return H.write_table(OUT / "throughput.md", lines)


def train_cost_fresh(algo: str, iters: int, size: int, kind: str, name: str) -> dict[str, float]:
    """The same recipe on a policy of another image size or encoder, built fresh (BC weights do not fit it)."""
    run = OUT / "train" / name
    cmd = [
        *H.NCDPO, "train", "--env", "lift-image", "--algo", algo, "--config", str(CONFIGS[algo]), "--horizon", "4",
        "--act-steps", "4", "--diffusion.denoising-steps", "10", "--diffusion.hidden-dim", "256",
        "--diffusion.num-blocks", "2", "--env.image-size", str(size), "--encoder.kind", kind, "--total-env-steps",
        str(iters * 2048), "--ppo.critic-warmup-iters", "0", "--progress", "false", "--tensorboard", "false",
        "--save-every", "1000", "--out-dir", str(run.parent), "--run-name", run.name, "--overwrite"
    ]  # fmt: skip
    subprocess.check_call(cmd, stdout=subprocess.DEVNULL)
    return short_run_cost(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--init", default="shipped:lift-image", help="the pixel BC policy the training runs start from")
    ap.add_argument("--iters", type=int, default=3, help="training iterations per measurement (the first dropped)")
    ap.add_argument("--decisions", type=int, default=60, help="vector-env decisions per raw measurement")
    ap.add_argument("--settings", nargs="*", default=[], help="extra SIZE KIND pairs, e.g. 96 vit")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.render:
        print(render_table())
    if a.throughput:
        extra = [(int(a.settings[i]), a.settings[i + 1]) for i in range(0, len(a.settings), 2)]
        print(throughput(a.init, a.iters, [(84, "conv"), *extra], a.decisions))


if __name__ == "__main__":
    main()
