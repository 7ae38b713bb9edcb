"""Typed training configuration.

A run is fully described by one :class:`TrainConfig`. Every field carries a docstring (shown by
``ncdpo train --help``) and can be overridden from the command line as ``--section.field VALUE`` (for
example ``--ppo.clip-coef 0.1`` or ``--diffusion.denoising-steps 20``) or from a JSON/YAML file given with
``--config FILE``. Values are layered: dataclass defaults, then the task preset (see
:mod:`ncdpo.envs.registry`), then the config file, then command-line flags.

Validation happens in :func:`validate`; every problem is reported as a one-line :class:`NcdpoError`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import re
import textwrap
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from ncdpo.errors import NcdpoError

ALGOS = ("ncdpo", "ppo", "dppo")


@dataclass
class EnvConfig:
    """Environment and vectorisation."""

    id: str = "Hopper-v5"
    """Task id: a registered task (``ncdpo tasks`` lists them) or any gymnasium env id with a Box action space."""
    n_envs: int = 16
    """Number of environments stepped in lock-step."""
    vector: str = "auto"
    """``sync``: all envs in this process (SyncVectorEnv); ``async``: one subprocess per env (AsyncVectorEnv, for
    slow simulators such as robosuite); ``ray``: one Ray actor per env, on this machine or a Ray cluster's nodes
    (``env.ray_address``); ``auto``: as the task prefers (async for the manipulation tasks)."""
    ray_address: str = ""
    """``env.vector ray``: the Ray cluster to run the env actors on (``HOST:PORT`` of ``ray start --head``, or
    ``auto``); empty: ``RAY_ADDRESS`` if set, else a Ray instance started on this machine."""
    ray_cpus: float = 1.0
    """``env.vector ray``: CPUs each env actor reserves on the cluster."""
    max_episode_steps: int = 0
    """Episode limit in env steps; 0 keeps the env's own limit."""
    norm_obs: bool = True
    """Normalise observations with running mean/std statistics (saved in checkpoints)."""
    update_obs_norm: bool = True
    """Update the observation statistics during training (off keeps those of ``--init``'s checkpoint)."""
    norm_reward: bool = True
    """Scale rewards by the running std of the discounted return (as gymnasium's NormalizeReward)."""
    clip_obs: float = 10.0
    """Clip normalised observations to [-clip_obs, clip_obs]."""
    cameras: tuple[str, ...] = ()
    """Camera tasks (``*-image``): the cameras rendered, by MuJoCo name (empty: the task's own, e.g.
    ``robot0_eye_in_hand`` for lift-image); each becomes a ``<camera>_image`` observation entry."""
    image_size: int = 0
    """Camera tasks: the square image size in pixels (0: the task's, 84)."""


@dataclass
class PPOConfig:
    """The shared PPO core: rollout length, GAE, clipped surrogate and optimisation."""

    n_steps: int = 128
    """Policy decisions per environment per iteration (one decision executes ``act_steps`` env steps)."""
    gamma: float = 0.99
    """Discount factor per policy decision (a decision executes ``act_steps`` env steps: 0.99 with 4 of them
    discounts like 0.9975 per env step)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    update_epochs: int = 10
    """Passes over the rollout per iteration."""
    minibatch_size: int = 256
    """Decisions per minibatch (DPPO: (decision, fine-tuned denoising step) samples, ``dppo.ft_denoising_steps``
    of them per decision)."""
    clip_coef: float = 0.2
    """PPO ratio clipping range."""
    clip_vloss: bool = False
    """Clip the value loss around the old value estimate."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient (only policies with a learnable std have a non-constant entropy)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clipping threshold."""
    target_kl: float = 0.0
    """Stop the epoch loop early when the approximate KL exceeds this (0 disables)."""
    actor_lr: float = 3e-4
    """Learning rate of the policy (actor)."""
    critic_lr: float = 1e-3
    """Learning rate of the critic V(s)."""
    anneal_lr: bool = False
    """Anneal both learning rates linearly to zero over the run."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    critic_warmup_iters: int = 0
    """Iterations at the start that update only the critic (useful when fine-tuning with a fresh critic)."""
    norm_value: bool = False
    """Value normalisation (MAPPO's ValueNorm): the critic learns returns standardised by their running
    mean and std, and its output is mapped back before GAE."""


@dataclass
class DiffusionConfig:
    """The diffusion policy used by NCDPO (docs/METHOD.md section 1)."""

    denoising_steps: int = 10
    """K, the number of DDPM training/denoising steps."""
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    """Reverse sampler: DDPM (all K steps) or DDIM (``ddim_steps`` of them)."""
    ddim_steps: int = 5
    """Number of DDIM steps (a uniform sub-sequence of the K training steps)."""
    ddim_eta: float = 1.0
    """DDIM eta (0 = deterministic intermediate steps, 1 = DDPM-like noise)."""
    hidden_dim: int = 256
    """Width of the residual MLP denoiser."""
    num_blocks: int = 1
    """Number of residual blocks (two linear layers each) in the denoiser."""
    time_dim: int = 16
    """Size of the sinusoidal denoising-step embedding."""
    activation: Literal["silu", "relu", "mish", "tanh"] = "silu"
    """Activation of the denoiser."""
    init: Literal["default", "orthogonal"] = "default"
    """Initialisation of the denoiser's linear layers: PyTorch's default, or orthogonal with gain sqrt(2) and zero
    biases (the MLP baselines', CleanRL/SB3 style; the output layer gain 1). Only matters for training from scratch."""
    out_init_scale: float = 1.0
    """Multiplier on the initial weights of the denoiser's output layer, whose bias then starts at zero (1: PyTorch's
    default initialisation, unchanged). Small values (0.01, like the MLP baselines' orthogonal gain) start a
    policy trained from scratch with near-zero outputs; it has no effect on a policy loaded from a checkpoint."""
    prediction: Literal["epsilon", "x0"] = "epsilon"
    """What the denoiser predicts: the noise (epsilon, docs/METHOD.md and DPPO's default) or the clean action x0
    (DPPO's ``predict_epsilon: False``). Same chain, same NCDPO gradient; x0 prediction starts a randomly
    initialised policy near a noise-independent one (the last step's mean is the network's output, not the
    noise passed through), which is what training from scratch wants (RESULTS.md sections 1 and 7)."""
    denoised_clip: float = 1.0
    """Clip the predicted clean action x0 to [-c, c] in each step (0 disables)."""
    clip_last_step: bool = True
    """Also clip x0 in the last step (keeps the mean in bounds; off lets gradients pass where it saturates)."""
    min_chain_std: float = 0.0
    """Floor on the std of the intermediate denoising steps (0 keeps the DDPM posterior std)."""
    chain_noise_scale: float = 1.0
    """Multiplier on the chain noise xi drawn when acting (1: the diffusion policy as defined). 0 fixes the
    initial latent and every intermediate noise at zero, so the chain is a deterministic function of the
    observation and only the last step's perturbation (or the categorical draw) explores: an ablation of
    the noise conditioning, not NCDPO. Training (BC loss) is unaffected; DPPO ignores it."""
    sigma_exp: Literal["fixed", "linear", "learnable"] = "fixed"
    """How the exploration std of the last step evolves: fixed, linearly annealed, or learned."""
    sigma_exp_start: float = 0.1
    """Exploration std of the last step at the start (and throughout when fixed)."""
    sigma_exp_end: float = 0.1
    """Exploration std at the end of a linear schedule."""
    sigma_exp_min: float = 0.01
    """Lower bound of a learnable exploration std."""
    sigma_exp_max: float = 1.0
    """Upper bound of a learnable exploration std."""
    sigma_exp_scale: tuple[float, ...] = ()
    """Per-action-dimension multipliers of the exploration std (empty: 1 for every dimension). E.g. robosuite's
    gripper acts on the sign of its action only, which a std of 0.1 around a saturated +-1 never flips:
    ``1 1 1 1 1 1 5`` explores it with std 0.5. With a learnable std the products are the initial values."""
    sigma_exp_lr: float = 0.0
    """Learning rate of a learnable exploration std (0: the actor's). Fine-tuning runs use actor lrs of 1e-5,
    at which Adam moves the std by about 1e-5 per step, so it cannot follow ``ppo.ent_coef`` or the advantages."""
    grad_checkpoint: bool = False
    """Recompute each denoising step in the backward pass (memory independent of K, ~1.3x compute)."""
    logit_scale: float = 4.0
    """Discrete actions: the logits are this times the chain's output, which lies in [-denoised_clip,
    denoised_clip] (4 lets one of 19 actions take more than 99% of the probability)."""


@dataclass
class DPPOConfig:
    """The DPPO baseline (Ren et al. 2025; docs/METHOD.md section 3): PPO over the denoising steps of the chain."""

    ft_denoising_steps: int = 10
    """K', the last denoising steps that are fine-tuned; the earlier ones run the frozen pre-trained denoiser
    (at most the chain length: K for DDPM, ``ddim_steps`` for DDIM)."""
    min_sampling_std: float = 0.1
    """Floor on the std of every denoising step when sampling (the exploration noise)."""
    min_logprob_std: float = 0.1
    """Floor on the std of the fine-tuned steps' Gaussians in the log-probability."""
    gamma_denoise: float = 0.99
    """Discount along the chain: the advantage of fine-tuned step k is scaled by gamma_denoise^(K'-k-1)."""
    clip_coef_base: float = 0.001
    """PPO clip of the first fine-tuned step; it grows exponentially to ``ppo.clip_coef`` at the last one."""
    clip_coef_rate: float = 3.0
    """Rate of that exponential clip schedule."""
    randn_clip: float = 3.0
    """Clip of the standard-normal noise of each denoising step."""


@dataclass
class MLPConfig:
    """The MLP policy of the MLP+PPO baseline: Gaussian for continuous actions, categorical for discrete ones
    (``gaussian.*``, its name before 0.2, is an alias)."""

    hidden_dims: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the mean network."""
    activation: Literal["tanh", "relu", "silu"] = "tanh"
    """Activation of the mean network."""
    init_log_std: float = 0.0
    """Initial value of the state-independent log-std (continuous actions)."""


GaussianConfig = MLPConfig  # the section's name before 0.2


@dataclass
class CriticConfig:
    """The critic V(s), shared by every algorithm."""

    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes."""
    activation: Literal["tanh", "relu", "silu", "mish"] = "tanh"
    """Activation."""
    condition_on_mean: bool = False
    """NCDPO only: the critic also sees ``m_theta_old(s, xi)``, the chain's mean of the executed actions
    computed at rollout time, i.e. it is the value of the noise-augmented state (s, xi). It stays an
    unbiased baseline (xi is drawn before the last step's exploration noise) and it takes out of the
    advantage the spread of actions caused by the chain noise, which V(s) leaves in (choice; helps
    fine-tuning a behaviour-cloned policy whose chain spread is much larger than ``sigma_exp``)."""
    privileged: bool = False
    """Dict observations: the critic reads every low-dim entry, including the privileged simulator state
    (e.g. ``object``), through an MLP and no image encoder, while the actor reads only the cameras and
    proprioception (an asymmetric actor-critic)."""


@dataclass
class EncoderConfig:
    """Image encoders (dict observations with cameras): one per camera, its features concatenated with the
    low-dim entries; the actor's encoder is part of the policy, the critic has its own."""

    kind: Literal["conv", "vit"] = "conv"
    """``conv``: a DrQ-style conv stack (4 layers of 3x3 convolutions, the first two with stride 2, then a
    linear layer, LayerNorm and tanh); ``vit``: DPPO's small ViT (patches, transformer blocks, a linear
    projection of all patch tokens)."""
    feature_dim: int = 64
    """Features per camera."""
    channels: int = 32
    """conv: channels of every conv layer."""
    patch: int = 8
    """vit: patch size in pixels (must divide the image size)."""
    embed_dim: int = 128
    """vit: token width."""
    depth: int = 1
    """vit: transformer blocks."""
    heads: int = 4
    """vit: attention heads."""
    aug_pad: int = 4
    """Random-shift augmentation (DrQ's): images shifted by up to this many pixels, edges repeated, in
    behaviour cloning (every minibatch) and in the RL update (one shift per decision per iteration, with
    log pi_old and V_old recomputed on the shifted images so the ratio starts at 1); 0 turns it off."""


@dataclass
class NoisePolicyConfig:
    """NCDPO's noise policy (an extension beyond the paper, docs/METHOD.md section 6): the chain noise xi is drawn
    from a learned, state-conditioned Gaussian ``N(mu_psi(s), diag(sigma_psi)^2)`` instead of ``N(0, I)``, and PPO
    treats ``(xi, a)`` as the action, so the choice of noise (the behaviour mode it picks) gets credit. It starts as
    ``N(0, I)`` exactly (zero-initialised mean, std 1): the fine-tuning starts from the BC policy unchanged."""

    enabled: bool = False
    """Learn the noise policy psi beside the denoiser (algo ncdpo only; off: NCDPO as the paper states it)."""
    covers: Literal["initial", "all"] = "initial"
    """Which part of xi the noise policy draws: ``initial``, the initial latent x_K only (the rest stays N(0, I));
    ``all``, every noise of the chain (the initial latent and each step's)."""
    ratio: Literal["factored", "joint"] = "factored"
    """``factored``: a two-level decision, each level with its own PPO ratio, clip and advantage: first the
    noise (its advantage has a critic of the state alone, V(s), as baseline), then the action given the noise
    (the plain NCDPO term, with the run's critic). ``joint``: one ratio of ``pi(xi, a | s)`` (the plainest form;
    the last step's Gaussian dominates it)."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the mean network mu_psi(s)."""
    activation: Literal["tanh", "relu", "silu"] = "tanh"
    """Activation of the mean network."""
    std_init: float = 1.0
    """Initial std sigma_psi of every covered noise dimension (1: the BC policy's own N(0, I))."""
    std_min: float = 0.05
    """Lower bound of sigma_psi (a learned, state-independent std per noise dimension, kept in its bounds after
    every optimiser step)."""
    std_max: float = 1.0
    """Upper bound of sigma_psi (above 1 the chain starts from latents wider than the denoiser was trained on)."""
    lr: float = 1e-3
    """Adam learning rate of the noise policy (its own parameter group and gradient-norm clip; 0 freezes it at
    its initial N(0, I), which is plain NCDPO)."""
    clip_coef: float = 0.2
    """PPO clip of the noise level's ratio (``ratio: factored``)."""
    target_kl: float = 0.0
    """Stop updating the noise policy for the rest of an iteration once its approximate KL exceeds 1.5x this
    (``ratio: factored``; 0: only ``ppo.target_kl``, which stops both levels)."""


@dataclass
class PretrainConfig:
    """Behaviour cloning of the diffusion policy on a dataset (``ncdpo pretrain``)."""

    dataset: str = ""
    """Dataset: a .hdf5 file (this package's layout, robomimic's own, or D4RL's flat one), a .npz of D4RL's arrays,
    a LeRobot dataset folder (v2.x or v3.0), ``minari:DATASET_ID`` or ``shipped:TASK``."""
    dataset_obs_keys: tuple[str, ...] = ()
    """robomimic / LeRobot: the observation keys to read, in order (a flat observation concatenates them);
    ``ENV_NAME=DATASET_KEY`` reads a key into a differently named env entry. Default: robomimic, the task's
    robomimic low-dim keys (a camera task: its entries); LeRobot, ``observation.state``."""
    dataset_filter: str = ""
    """robomimic: train only on the demos of the filter key ``mask/<name>`` (e.g. ``train``); "" = every demo."""
    dataset_action_key: str = ""
    """robomimic / LeRobot: the action entry ("" = ``actions`` / ``action``)."""
    steps: int = 20_000
    """Gradient steps."""
    batch_size: int = 256
    """Action chunks per gradient step."""
    lr: float = 1e-3
    """Peak learning rate (AdamW), after a linear warm-up, then cosine decay to ``lr_min``."""
    lr_min: float = 1e-5
    """Final learning rate of the cosine schedule."""
    warmup_steps: int = 500
    """Linear learning-rate warm-up steps."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    ema_decay: float = 0.995
    """Decay of the exponential moving average of the weights; the EMA weights are saved and evaluated."""
    log_every: int = 500
    """Log the loss every this many steps."""


@dataclass
class TrainConfig:
    """A complete training run."""

    algo: Literal["ncdpo", "ppo", "dppo"] = "ncdpo"
    """Algorithm: ``ncdpo`` (diffusion policy, PPO through the whole chain), ``ppo`` (Gaussian MLP) or
    ``dppo`` (diffusion policy, PPO over the denoising steps)."""
    seed: int = 1
    """Seed of torch, numpy and the environments: the whole run is reproducible from it on CPU."""
    total_env_steps: int = 1_000_000
    """Training budget in environment steps (inner steps, not policy decisions)."""
    horizon: int = 1
    """Length of the predicted action chunk."""
    act_steps: int = 1
    """Actions of the chunk executed per decision (1 <= act_steps <= horizon)."""
    out_dir: str = "runs"
    """Folder under which the run folder is created."""
    run_name: str = ""
    """Name of the run folder; empty means ``{env}__{algo}__s{seed}``."""
    overwrite: bool = False
    """Allow writing into an existing run folder (its contents are replaced)."""
    init: str = ""
    """Checkpoint whose policy (and normaliser) weights initialise this run."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (cuda when available)."""
    torch_threads: int = 0
    """Threads for torch on CPU; 0 leaves torch's default."""
    save_every: int = 10
    """Write a checkpoint every this many iterations (and always at the end); for pretrain, every this many
    evaluations."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept (older ones are deleted); 0 keeps them all."""
    eval_every: int = 0
    """Evaluate the policy every this many iterations, or pretrain gradient steps (0 disables periodic evaluation)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    eval_deterministic: bool = True
    """Evaluate without the exploration noise of the last step."""
    tensorboard: bool = True
    """Write TensorBoard event files next to the CSV log."""
    progress: bool = True
    """Show a progress bar."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Environment settings."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO settings."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """Diffusion policy settings (algos ncdpo and dppo)."""
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    """DPPO settings (algo dppo)."""
    mlp: MLPConfig = field(default_factory=MLPConfig)
    """MLP policy settings (algo ppo)."""
    critic: CriticConfig = field(default_factory=CriticConfig)
    """Critic settings."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Image encoder settings (tasks with cameras)."""
    noise_policy: NoisePolicyConfig = field(default_factory=NoisePolicyConfig)
    """NCDPO's noise policy: learn where to draw the chain noise (an extension beyond the paper; off by default)."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """Behaviour-cloning settings (``ncdpo pretrain`` only)."""


# ----------------------------------------------------------------------------------------------------
# Introspection: field docstrings, flattening, overrides.


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal following each field)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flat_fields(cls: type = TrainConfig, prefix: str = "") -> dict[str, tuple[Any, str, Any]]:
    """Map every leaf field's dotted name to (type, docstring, default)."""
    out: dict[str, tuple[Any, str, Any]] = {}
    hints, docs, default = _hints(cls), field_docs(cls), cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(flat_fields(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (tp, docs.get(f.name, ""), getattr(default, f.name))
    return out


def coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` (a string from the CLI, or a JSON/YAML value) to the field's type, or raise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    try:
        if origin is Literal:
            if value not in args:
                raise ValueError(f"must be one of {', '.join(map(str, args))}")
            return value
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("must be true or false")
        if tp is int:
            if isinstance(value, bool):
                raise ValueError("must be an integer")
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                v = float(value.replace("_", ""))  # accept 1e6 and 1_000_000
                if not v.is_integer():
                    raise ValueError("must be an integer")
                return int(v)
            if isinstance(value, int):
                return value
            raise ValueError("must be an integer")
        if tp is float:
            if isinstance(value, bool):
                raise ValueError("must be a number")
            v = float(value)
            if not math.isfinite(v):
                raise ValueError(f"must be a finite number, not {v}")
            return v
        if tp is str:
            if not isinstance(value, str):
                raise ValueError("must be a string")
            return value
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(coerce(name, args[0], v) for v in value)
    except (TypeError, ValueError) as e:
        msg = str(e) if str(e).startswith("must") else f"cannot read {value!r} as {getattr(tp, '__name__', tp)}"
        raise NcdpoError(f"config {name}: {msg} (got {value!r})") from None
    raise NcdpoError(f"config {name}: unsupported type {tp}")


# Sections that were renamed: the old names keep working everywhere (command line, config files, the configs saved in
# checkpoints), as hidden aliases of the new ones.
SECTION_ALIASES = {"gaussian": "mlp"}

# Fields that are ablations or diagnostics of the method, not part of any recipe (``--help`` lists them apart).
ABLATION_FIELDS = (
    "diffusion.init",
    "diffusion.out_init_scale",
    "diffusion.clip_last_step",
    "diffusion.min_chain_std",
    "diffusion.chain_noise_scale",
)


def canonical_key(key: str) -> str:
    """A dotted config key in its current spelling: dashes as underscores, old names mapped to new ones."""
    key = key.replace("-", "_").lstrip("_")
    section, dot, rest = key.partition(".")
    if dot and section in SECTION_ALIASES:
        key = f"{SECTION_ALIASES[section]}.{rest}"
    return key


def copy_config(cfg: Any) -> Any:
    """A copy of a config whose nested sections are copies too (changing it leaves ``cfg`` alone)."""
    changes = {
        f.name: copy_config(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if dataclasses.is_dataclass(getattr(cfg, f.name))
    }
    return dataclasses.replace(cfg, **changes)


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], source: str = "override") -> TrainConfig:
    """Return a copy of ``cfg`` with dotted-key ``overrides`` applied (types coerced, unknown keys rejected);
    ``cfg`` itself is left as it was."""
    leaves = flat_fields()
    cfg = copy_config(cfg)
    for raw_key, value in overrides.items():
        key = canonical_key(raw_key)
        if key not in leaves:
            close = [k for k in leaves if k.split(".")[-1] == key.split(".")[-1]]
            hint = f"; did you mean {close[0]}?" if close else ""
            raise NcdpoError(f"unknown config key '{raw_key}' ({source}){hint}")
        tp = leaves[key][0]
        obj = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, leaf, coerce(key, tp, value))
    return cfg


def flatten_nested(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"ppo": {"gamma": 0.9}}`` -> ``{"ppo.gamma": 0.9}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_nested(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML file of (nested or dotted) config keys."""
    p = Path(path)
    if not p.is_file():
        raise NcdpoError(f"config file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise NcdpoError(f"config file {p} cannot be parsed: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise NcdpoError(f"config file {p} must hold a mapping of keys to values")
    return flatten_nested(data)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as a nested, JSON-serialisable dict."""
    return dataclasses.asdict(cfg)


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`to_dict` (unknown keys rejected)."""
    return apply_overrides(TrainConfig(), flatten_nested(d), source="saved config")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Reject impossible values with a one-line error naming the field."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise NcdpoError(f"invalid config: {msg}")

    need(cfg.algo in ALGOS, f"algo must be one of {', '.join(ALGOS)} (got {cfg.algo!r})")
    need(cfg.total_env_steps > 0, f"total_env_steps must be positive (got {cfg.total_env_steps})")
    need(cfg.horizon >= 1, f"horizon must be >= 1 (got {cfg.horizon})")
    need(
        1 <= cfg.act_steps <= cfg.horizon,
        f"act_steps must be between 1 and horizon={cfg.horizon} (got {cfg.act_steps})",
    )
    need(cfg.env.n_envs >= 1, f"env.n_envs must be >= 1 (got {cfg.env.n_envs})")
    need(cfg.env.max_episode_steps >= 0, "env.max_episode_steps must be >= 0")
    need(
        cfg.env.vector in ("auto", "sync", "async", "ray"),
        f"env.vector must be auto, sync, async or ray (got {cfg.env.vector!r})",
    )
    need(
        re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device) is not None,
        f"device must be auto, cpu, cuda, cuda:N or mps (got {cfg.device!r})",
    )
    need(cfg.env.clip_obs > 0, f"env.clip_obs must be positive (got {cfg.env.clip_obs})")
    need(cfg.ppo.vf_coef >= 0, f"ppo.vf_coef must be >= 0 (got {cfg.ppo.vf_coef})")
    need(cfg.save_every >= 1, f"save_every must be >= 1 (got {cfg.save_every})")
    need(cfg.eval_every >= 0, "eval_every must be >= 0")
    need(cfg.eval_episodes >= 1, f"eval_episodes must be >= 1 (got {cfg.eval_episodes})")
    p = cfg.ppo
    need(p.n_steps >= 1, f"ppo.n_steps must be >= 1 (got {p.n_steps})")
    need(0.0 <= p.gamma <= 1.0, f"ppo.gamma must be in [0, 1] (got {p.gamma})")
    need(0.0 <= p.gae_lambda <= 1.0, f"ppo.gae_lambda must be in [0, 1] (got {p.gae_lambda})")
    need(p.update_epochs >= 1, f"ppo.update_epochs must be >= 1 (got {p.update_epochs})")
    need(p.minibatch_size >= 1, f"ppo.minibatch_size must be >= 1 (got {p.minibatch_size})")
    need(p.clip_coef > 0, f"ppo.clip_coef must be positive (got {p.clip_coef})")
    need(p.actor_lr > 0, f"ppo.actor_lr must be positive (got {p.actor_lr})")
    need(p.critic_lr > 0, f"ppo.critic_lr must be positive (got {p.critic_lr})")
    need(p.max_grad_norm > 0, "ppo.max_grad_norm must be positive")
    need(p.target_kl >= 0, "ppo.target_kl must be >= 0")
    need(p.critic_warmup_iters >= 0, "ppo.critic_warmup_iters must be >= 0")
    need(cfg.keep_checkpoints >= 0, "keep_checkpoints must be >= 0")
    b = cfg.pretrain
    need(b.steps >= 1, f"pretrain.steps must be >= 1 (got {b.steps})")
    need(b.batch_size >= 1, f"pretrain.batch_size must be >= 1 (got {b.batch_size})")
    need(b.lr > 0, f"pretrain.lr must be positive (got {b.lr})")
    need(0 <= b.lr_min <= b.lr, f"pretrain.lr_min must be in [0, pretrain.lr={b.lr}] (got {b.lr_min})")
    need(b.warmup_steps >= 0, f"pretrain.warmup_steps must be >= 0 (got {b.warmup_steps})")
    need(b.weight_decay >= 0, f"pretrain.weight_decay must be >= 0 (got {b.weight_decay})")
    need(b.log_every >= 1, f"pretrain.log_every must be >= 1 (got {b.log_every})")
    need(0.0 <= b.ema_decay < 1.0, f"pretrain.ema_decay must be in [0, 1) (got {b.ema_decay})")
    d = cfg.diffusion
    need(d.denoising_steps >= 1, f"diffusion.denoising_steps must be >= 1 (got {d.denoising_steps})")
    need(
        d.sampler != "ddim" or 1 <= d.ddim_steps <= d.denoising_steps,
        f"diffusion.ddim_steps must be between 1 and denoising_steps={d.denoising_steps} (got {d.ddim_steps})",
    )
    need(0.0 <= d.ddim_eta, "diffusion.ddim_eta must be >= 0")
    need(d.hidden_dim >= 1, f"diffusion.hidden_dim must be >= 1 (got {d.hidden_dim})")
    need(d.num_blocks >= 0, f"diffusion.num_blocks must be >= 0 (got {d.num_blocks})")
    need(d.time_dim >= 2, f"diffusion.time_dim must be >= 2 (got {d.time_dim})")
    need(d.time_dim % 2 == 0, f"diffusion.time_dim must be even (got {d.time_dim})")
    need(d.sigma_exp_start > 0, f"diffusion.sigma_exp_start must be positive (got {d.sigma_exp_start})")
    need(d.sigma_exp_end > 0, f"diffusion.sigma_exp_end must be positive (got {d.sigma_exp_end})")
    need(
        0 < d.sigma_exp_min <= d.sigma_exp_start <= d.sigma_exp_max,
        "diffusion.sigma_exp_start must lie in [sigma_exp_min, sigma_exp_max] with sigma_exp_min > 0",
    )
    need(
        all(x > 0 for x in d.sigma_exp_scale),
        f"diffusion.sigma_exp_scale entries must be positive (got {list(d.sigma_exp_scale)})",
    )
    need(
        d.sigma_exp != "learnable"
        or all(d.sigma_exp_min <= d.sigma_exp_start * x <= d.sigma_exp_max for x in d.sigma_exp_scale),
        "diffusion.sigma_exp_start * sigma_exp_scale must lie in [sigma_exp_min, sigma_exp_max] for a learnable std",
    )
    need(d.sigma_exp_lr >= 0, f"diffusion.sigma_exp_lr must be >= 0 (got {d.sigma_exp_lr})")
    need(
        d.sigma_exp_lr == 0 or d.sigma_exp == "learnable",
        f"diffusion.sigma_exp_lr applies to a learnable exploration std only (diffusion.sigma_exp is '{d.sigma_exp}')",
    )
    need(d.min_chain_std >= 0, f"diffusion.min_chain_std must be >= 0 (got {d.min_chain_std})")
    need(d.out_init_scale >= 0, f"diffusion.out_init_scale must be >= 0 (got {d.out_init_scale})")
    need(d.chain_noise_scale >= 0, f"diffusion.chain_noise_scale must be >= 0 (got {d.chain_noise_scale})")
    need(d.logit_scale > 0, f"diffusion.logit_scale must be positive (got {d.logit_scale})")
    need(d.denoised_clip >= 0, f"diffusion.denoised_clip must be >= 0 (got {d.denoised_clip})")
    n_chain = d.ddim_steps if d.sampler == "ddim" else d.denoising_steps
    q = cfg.dppo
    if cfg.algo == "dppo":
        need(
            1 <= q.ft_denoising_steps <= n_chain,
            f"dppo.ft_denoising_steps (K') must be between 1 and the chain length {n_chain} (got "
            f"{q.ft_denoising_steps})",
        )
    need(q.min_sampling_std > 0, f"dppo.min_sampling_std must be positive (got {q.min_sampling_std})")
    need(q.min_logprob_std > 0, f"dppo.min_logprob_std must be positive (got {q.min_logprob_std})")
    need(0 < q.gamma_denoise <= 1, f"dppo.gamma_denoise must be in (0, 1] (got {q.gamma_denoise})")
    need(q.clip_coef_base > 0, f"dppo.clip_coef_base must be positive (got {q.clip_coef_base})")
    need(q.clip_coef_rate > 0, f"dppo.clip_coef_rate must be positive (got {q.clip_coef_rate})")
    need(q.randn_clip > 0, f"dppo.randn_clip must be positive (got {q.randn_clip})")
    need(all(h >= 1 for h in cfg.mlp.hidden_dims), "mlp.hidden_dims must be positive")
    need(all(h >= 1 for h in cfg.critic.hidden_dims), "critic.hidden_dims must be positive")
    need(cfg.env.image_size == 0 or 8 <= cfg.env.image_size <= 1024, "env.image_size must be 0 or in [8, 1024]")
    e = cfg.encoder
    need(e.kind in ("conv", "vit"), f"encoder.kind must be conv or vit (got {e.kind!r})")
    need(e.feature_dim >= 1, f"encoder.feature_dim must be >= 1 (got {e.feature_dim})")
    need(e.channels >= 1, f"encoder.channels must be >= 1 (got {e.channels})")
    need(e.patch >= 1, f"encoder.patch must be >= 1 (got {e.patch})")
    need(e.embed_dim >= 1 and e.heads >= 1, "encoder.embed_dim and encoder.heads must be >= 1")
    need(e.embed_dim % e.heads == 0, f"encoder.embed_dim ({e.embed_dim}) must be a multiple of encoder.heads")
    need(e.depth >= 0, f"encoder.depth must be >= 0 (got {e.depth})")
    need(e.aug_pad >= 0, f"encoder.aug_pad must be >= 0 (got {e.aug_pad})")
    n = cfg.noise_policy
    need(all(h >= 1 for h in n.hidden_dims), "noise_policy.hidden_dims must be positive")
    need(
        0 < n.std_min <= n.std_init <= n.std_max,
        f"noise_policy.std_init must lie in [std_min, std_max] with std_min > 0 (got {n.std_min}, {n.std_init}, "
        f"{n.std_max})",
    )
    need(n.lr >= 0, f"noise_policy.lr must be >= 0 (got {n.lr})")
    need(n.clip_coef > 0, f"noise_policy.clip_coef must be positive (got {n.clip_coef})")
    need(n.target_kl >= 0, f"noise_policy.target_kl must be >= 0 (got {n.target_kl})")
    if n.enabled:
        need(cfg.algo == "ncdpo", f"noise_policy.enabled applies to algo ncdpo (got algo {cfg.algo})")
        need(
            d.chain_noise_scale == 1.0,
            "noise_policy.enabled needs diffusion.chain_noise_scale 1 in training (the noise policy draws the noise; "
            "ncdpo eval --chain-noise-scale scales its spread)",
        )
    return cfg
