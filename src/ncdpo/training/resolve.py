"""One place that resolves a run's config, for the CLI, the Python API and sweeps alike.

Values are layered, each layer over the one before: the dataclass defaults (the method as docs/METHOD.md
states it), the measured recipe of the run's regime (:data:`RECIPES`: from scratch, fine-tuning with
``--init``, or behaviour cloning), the task preset and the task's own recipe overrides
(:mod:`ncdpo.envs.registry`), an ``--init`` checkpoint's policy architecture, task and observation
normalisation (:data:`INHERITED_FIELDS`), a ``--config`` file, then the command line (or the API's keyword
values). A fully specified config is therefore never changed by a default. A resumed run keeps its own
config; only :data:`RESUME_OVERRIDABLE` fields may change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ncdpo.config import (
    TrainConfig,
    apply_overrides,
    canonical_key,
    flat_fields,
    flatten_nested,
    load_config_file,
    to_dict,
    validate,
)
from ncdpo.errors import NcdpoError

# Fields that may change when a run is resumed: they do not alter what the run has computed so far.
_RUN_ONLY = (
    "progress",
    "eval_every",
    "eval_episodes",
    "save_every",
    "keep_checkpoints",
    "tensorboard",
    "torch_threads",
)
RESUME_OVERRIDABLE = ("total_env_steps", "env.ray_address", "env.ray_cpus", *_RUN_ONLY)  # (where the actors run)
PRETRAIN_RESUME_OVERRIDABLE = ("pretrain.steps", *_RUN_ONLY)

# The measured recipe of each (algo, regime), on top of the dataclass defaults (benchmarks/RESULTS.md):
# - from scratch, NCDPO: x0 prediction. A random epsilon-predicting chain passes its noise through to the action;
#   an x0-predicting one starts noise-independent like an MLP (RESULTS section 1 "defaults", Hopper, GRF).
# - fine-tuning, NCDPO: configs/finetune_locomotion.yaml's recipe (learnable exploration std from 0.3, actor lr
#   1e-4, 5 epochs, a critic warm-up, target KL 0.05, a critic conditioned on the chain mean); the manipulation
#   tasks override a few values (registry). With std 0.1 and V(s) the locomotion policies did not improve.
# - fine-tuning, DPPO: the settings of DPPO's fine-tuning configs that configs/dppo_*.yaml share.
# - behaviour cloning: the shipped BC policies' recipe (scripts/make_locomotion_data.py: action chunks of 4, all
#   executed, a 2-block denoiser; epsilon prediction and K = 10 are the dataclass defaults).
RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("ncdpo", "scratch"): {"diffusion.prediction": "x0"},
    ("ncdpo", "finetune"): {
        "ppo.n_steps": 64,
        "ppo.update_epochs": 5,
        "ppo.actor_lr": 1e-4,
        "ppo.critic_warmup_iters": 5,
        "ppo.target_kl": 0.05,
        "critic.condition_on_mean": True,
        "diffusion.sigma_exp": "learnable",
        "diffusion.sigma_exp_start": 0.3,
    },
    ("dppo", "finetune"): {
        "ppo.clip_coef": 0.01,
        "ppo.actor_lr": 1e-4,
        "ppo.target_kl": 1.0,
        "ppo.max_grad_norm": 1000.0,
        "critic.hidden_dims": (256, 256, 256),
        "critic.activation": "mish",
    },
    ("ncdpo", "pretrain"): {"horizon": 4, "act_steps": 4, "diffusion.num_blocks": 2},
}

# Fields a run started with ``--init CHECKPOINT`` takes from the checkpoint (the policy's architecture, its
# task and its observation normalisation) unless the config file or the command line sets them.
INHERITED_FIELDS = (
    "algo",
    "env.id",
    "horizon",
    "act_steps",
    "env.norm_obs",
    "env.clip_obs",
    "diffusion.denoising_steps",
    "diffusion.sampler",
    "diffusion.ddim_steps",
    "diffusion.ddim_eta",
    "diffusion.hidden_dim",
    "diffusion.num_blocks",
    "diffusion.time_dim",
    "diffusion.activation",
    "diffusion.denoised_clip",
    "diffusion.clip_last_step",
    "diffusion.prediction",
    "diffusion.logit_scale",
    "mlp.hidden_dims",
    "mlp.activation",
    "critic.hidden_dims",
    "critic.activation",
    "critic.condition_on_mean",
    "critic.privileged",
    "env.cameras",
    "env.image_size",
    "encoder.kind",
    "encoder.feature_dim",
    "encoder.channels",
    "encoder.patch",
    "encoder.embed_dim",
    "encoder.depth",
    "encoder.heads",
)

NOISE_POLICY_INHERITED = (
    "noise_policy.enabled",
    "noise_policy.covers",
    "noise_policy.hidden_dims",
    "noise_policy.activation",
)
"""Inherited from an ``--init`` checkpoint that has a noise policy (one without keeps the run's own settings)."""


def init_values(path: str) -> dict[str, Any]:
    """Config values inherited from an ``--init`` checkpoint (empty without one).

    A behaviour-cloned checkpoint also freezes the observation statistics (they are the dataset's), so
    ``env.update_obs_norm`` defaults to false when fine-tuning it.
    """
    if not path:
        return {}
    from ncdpo.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    flat = flatten_nested(to_dict(ck.config))
    out = {k: flat[k] for k in INHERITED_FIELDS}
    if flat.get("noise_policy.enabled"):  # a fine-tuned noise policy goes on with the policy it steers
        out.update({k: flat[k] for k in NOISE_POLICY_INHERITED})
    if ck.meta.get("kind") == "pretrain":
        out["env.update_obs_norm"] = False
    if not ck.meta.get("critic_trained", True):  # no critic to load: the run's own recipe chooses it
        out = {k: v for k, v in out.items() if not k.startswith("critic.")}
    return out


def regime_of(command: str, init: str) -> str:
    """``"pretrain"`` (behaviour cloning), ``"finetune"`` (``--init``) or ``"scratch"``."""
    return "pretrain" if command == "pretrain" else "finetune" if init else "scratch"


def resolve_config(
    values: Mapping[str, Any] | None = None, config_file: str | None = None, command: str = "train"
) -> TrainConfig:
    """The validated config of a new run: defaults, task preset, ``--init`` checkpoint, ``config_file``, then
    ``values`` (dotted keys, e.g. ``{"env.id": "Hopper-v5", "ppo.gamma": 0.99}``).

    For ``command="pretrain"`` the env defaults to the one the dataset was recorded on.
    """
    cli = {canonical_key(k): v for k, v in (values or {}).items()}
    file_values = {canonical_key(k): v for k, v in (load_config_file(config_file) if config_file else {}).items()}
    default_env = TrainConfig().env.id
    if command == "pretrain":
        ds_path = cli.get("pretrain.dataset", file_values.get("pretrain.dataset", ""))
        if ds_path:
            from ncdpo.data.dataset import dataset_env_id

            default_env = dataset_env_id(ds_path) or default_env
    from ncdpo.envs.registry import task_preset, task_recipe

    init = str(cli.get("init", file_values.get("init", "")))
    inherited = init_values(init)

    def given(key: str, default: Any) -> str:
        return str(cli.get(key, file_values.get(key, inherited.get(key, default))))

    env_id, algo, regime = given("env.id", default_env), given("algo", TrainConfig().algo), regime_of(command, init)
    cfg = apply_overrides(TrainConfig(), RECIPES.get((algo, regime), {}), source=f"{algo} {regime} recipe")
    cfg = apply_overrides(cfg, task_preset(env_id), source="task preset")
    cfg = apply_overrides(cfg, task_recipe(env_id, algo, regime), source=f"task {env_id} {regime} recipe")
    cfg = apply_overrides(cfg, inherited, source="--init checkpoint")
    cfg = apply_overrides(cfg, {"env.id": env_id}, source="env")
    cfg = apply_overrides(cfg, file_values, source=f"config file {config_file}")
    cfg = apply_overrides(cfg, cli, source="command line")
    return validate(cfg)


def resume_overrides(
    given: Mapping[str, Any], allowed: Sequence[str], config_file: str | None = None
) -> dict[str, Any]:
    """The config values given with ``--resume``: only ``allowed`` fields (and no config file) may be."""
    leaves = flat_fields()
    given = {canonical_key(k): v for k, v in given.items() if canonical_key(k) in leaves}
    fixed = [k for k in given if k not in allowed]
    if fixed or config_file:
        what = f"--{fixed[0].replace('_', '-')}" if fixed else "--config"
        raise NcdpoError(
            f"{what} cannot be changed when resuming (the run keeps its own config); "
            f"allowed with --resume: {', '.join('--' + k.replace('_', '-') for k in allowed)}"
        )
    return given
