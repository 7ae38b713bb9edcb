"""One place that resolves a run's config, for the CLI, the Python API and sweeps alike.

Values are layered, each layer over the one before: the dataclass defaults, the task preset
(:mod:`ncdpo.envs.registry`), an ``--init`` checkpoint's policy architecture, task and observation
normalisation (:data:`INHERITED_FIELDS`), a ``--config`` file, then the command line (or the API's keyword
values). A resumed run keeps its own config; only :data:`RESUME_OVERRIDABLE` fields may change.
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
RESUME_OVERRIDABLE = (
    "total_env_steps",
    "progress",
    "eval_every",
    "eval_episodes",
    "save_every",
    "keep_checkpoints",
    "tensorboard",
    "torch_threads",
)
PRETRAIN_RESUME_OVERRIDABLE = (
    "pretrain.steps",
    "progress",
    "eval_every",
    "eval_episodes",
    "save_every",
    "keep_checkpoints",
    "tensorboard",
    "torch_threads",
)

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
)


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
    if ck.meta.get("kind") == "pretrain":
        out["env.update_obs_norm"] = False
    return out


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
            from ncdpo.data.dataset import load_dataset

            default_env = load_dataset(ds_path).env_id or default_env
    from ncdpo.envs.registry import task_preset

    inherited = init_values(str(cli.get("init", file_values.get("init", ""))))
    env_id = cli.get("env.id", file_values.get("env.id", inherited.get("env.id", default_env)))
    cfg = apply_overrides(TrainConfig(), task_preset(str(env_id)), source="task preset")
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
