"""Write the reference runs that pin "behaviour unchanged" (tests/test_reference.py compares against them).

    python tests/reference/make_reference.py          # (re)writes tests/reference/*.json and */progress.csv

Each run is a short ``ncdpo train`` / ``ncdpo pretrain`` on Hopper-v5 whose *every* config field is spelled out
on the command line (the resolved config of a small base command, turned into one flag per field), so a later
change of a default cannot change what the run computes. The files committed beside this script were written
at the commit before the architecture refactor (issue 27: 26beed8, the parent of the commit that adds them); the
script runs on that code and on today's. Regenerating them is only right when a change is *meant* to change results
(a base command resolved today also takes today's regime recipes; runs.json keeps the full command lines).

Also writes ``shipped_actions.json``: for every shipped checkpoint, the actions its policy takes for fixed
observations and a fixed torch seed (deterministic and sampled).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY = [
    "--env.n-envs", "4", "--ppo.n-steps", "16", "--ppo.update-epochs", "2", "--ppo.minibatch-size", "32",
    "--env.max-episode-steps", "100", "--eval-every", "2", "--eval-episodes", "2", "--seed", "3"
]
BASES: dict[str, list[str]] = {
    # NCDPO from scratch, with the fine-tuning recipe's options switched on so that their code paths are pinned
    "ncdpo_scratch": [
        "train", "--algo", "ncdpo", "--env", "Hopper-v5", "--horizon", "4", "--act-steps", "2",
        "--diffusion.denoising-steps", "5", "--diffusion.hidden-dim", "64", "--diffusion.prediction", "x0",
        "--critic.condition-on-mean", "true", "--diffusion.sigma-exp", "learnable", "--diffusion.sigma-exp-lr",
        "0.01", "--ppo.critic-warmup-iters", "1", "--ppo.target-kl", "0.05", "--total-env-steps", "384", *TINY
    ],
    # NCDPO fine-tuning the shipped BC policy (the --init path)
    "ncdpo_init": [
        "train", "--init", "shipped:Hopper-v5", "--config", "configs/finetune_locomotion.yaml", "--total-env-steps",
        "768", *TINY, "--ppo.critic-warmup-iters", "1"
    ],
    "ppo_scratch": [
        "train", "--algo", "ppo", "--env", "Hopper-v5", "--total-env-steps", "192", "--ppo.anneal-lr", "true", *TINY
    ],
    "dppo_init": [
        "train", "--algo", "dppo", "--init", "shipped:Hopper-v5", "--config", "configs/dppo_locomotion.yaml",
        "--total-env-steps", "768", *TINY, "--ppo.minibatch-size", "160"
    ],
    # the discrete, multi-agent path (shared actor, centralised critic, value normalisation)
    "ncdpo_spread": [
        "train", "--algo", "ncdpo", "--env", "simple_spread", "--diffusion.prediction", "x0",
        "--diffusion.denoising-steps", "4", "--diffusion.hidden-dim", "64", "--total-env-steps", "600",
        "--env.n-envs", "2", "--ppo.n-steps", "50", "--ppo.update-epochs", "2", "--ppo.minibatch-size", "100",
        "--eval-every", "2", "--eval-episodes", "2", "--seed", "3"
    ],
    "ppo_spread": [
        "train", "--algo", "ppo", "--env", "simple_spread", "--total-env-steps", "600", "--env.n-envs", "2",
        "--ppo.n-steps", "50", "--ppo.update-epochs", "2", "--ppo.minibatch-size", "100", "--eval-every", "2",
        "--eval-episodes", "2", "--seed", "3"
    ],
    "pretrain": [
        "pretrain", "--dataset", "shipped:Hopper-v5", "--horizon", "4", "--act-steps", "2",
        "--diffusion.denoising-steps", "5", "--diffusion.hidden-dim", "64", "--pretrain.steps", "300",
        "--pretrain.log-every", "50", "--pretrain.warmup-steps", "50", "--eval-every", "150", "--eval-episodes", "2",
        "--env.max-episode-steps", "100", "--seed", "3"
    ],
}
# not part of what a run computes
RUN_ONLY = {"out_dir", "run_name", "overwrite", "progress", "tensorboard", "device", "torch_threads"}


def explicit_argv(base: list[str]) -> list[str]:
    """``base`` resolved by the CLI, then written back as one flag per config field (empty tuples cannot be
    flags; they are the default)."""
    import inspect

    from ncdpo.cli import build_parser, resolve_train_config
    from ncdpo.config import flatten_nested, to_dict

    args, extra = build_parser().parse_known_args(base)
    kwargs = {}
    if "default_env" in inspect.signature(resolve_train_config).parameters:  # ncdpo before the refactor
        from ncdpo.data.dataset import load_dataset

        kwargs["default_env"] = load_dataset(vars(args)["pretrain.dataset"]).env_id if base[0] == "pretrain" else None
    cfg = resolve_train_config(args, extra, command=base[0], **kwargs)
    out = [base[0]]
    for key, value in flatten_nested(to_dict(cfg)).items():
        if key in RUN_ONLY or value == [] or value == ():
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        elif isinstance(value, bool):
            out += [flag, "true" if value else "false"]
        else:
            out += [flag, str(value)]
    return out + ["--progress", "false", "--tensorboard", "false", "--device", "cpu", "--torch-threads", "1"]


def run(name: str, argv: list[str], out_dir: Path) -> Path:
    from ncdpo.cli import main

    full = [*argv, "--out-dir", str(out_dir), "--run-name", name]
    rc = main(full)
    if rc != 0:
        raise SystemExit(f"{name}: exit {rc}")
    return out_dir / name


def shipped_actions() -> dict:
    import numpy as np
    import torch

    try:
        from ncdpo.algos import load_agent
    except ImportError:  # ncdpo before the refactor
        from ncdpo.algos.core import load_agent

    from ncdpo.shipped import available

    out = {}
    for task in available():
        agent, obs_norm, ck = load_agent(f"shipped:{task}")
        rng = np.random.default_rng(0)
        obs = rng.normal(size=(3, ck.obs_dim)).astype(np.float32)
        entry = {"obs": obs.tolist()}
        for mode, det in (("deterministic", True), ("sampled", False)):
            torch.manual_seed(7)
            with torch.no_grad():
                a = agent.act(torch.as_tensor(obs_norm(obs)), det).action
            entry[mode] = a.numpy().astype(np.float64).tolist()
        out[task] = entry
    return out


def main() -> None:
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    torch_threads_note = "runs use --torch-threads 1"
    manifest = {"note": torch_threads_note, "runs": {}}
    with tempfile.TemporaryDirectory() as d:
        for name, base in BASES.items():
            argv = explicit_argv(base)
            run_dir = run(name, argv, Path(d))
            (HERE / name).mkdir(exist_ok=True)
            shutil.copyfile(run_dir / "progress.csv", HERE / name / "progress.csv")
            manifest["runs"][name] = argv
            print(f"{name}: {len(argv)} args", flush=True)
    (HERE / "runs.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (HERE / "shipped_actions.json").write_text(json.dumps(shipped_actions()) + "\n")


if __name__ == "__main__":
    main()
