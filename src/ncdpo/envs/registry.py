"""Task registry: named tasks with per-task config presets, and construction of (vector) environments.

Any gymnasium env id with a 1-D Box observation space (or a ``Dict`` of uint8 images and 1-D Boxes) and a Box
action space also works, with no preset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from ncdpo.envs.spec import EnvSpec
from ncdpo.envs.wrappers import ActionChunk, DiscreteSteps, WorkerGuard
from ncdpo.errors import NcdpoError


@dataclass(frozen=True)
class Task:
    """A registered task: how to build one env, and the config values it prefers."""

    id: str
    description: str
    make: Callable[..., gym.Env]
    preset: dict[str, Any] = field(default_factory=dict)
    """Dotted config overrides applied before the user's own (e.g. ``{"ppo.gamma": 0.99}``)."""
    vector: str = "sync"
    """How ``env.vector = "auto"`` steps several envs: ``"sync"`` in this process, ``"async"`` one subprocess
    each (for simulators whose step costs far more than a pipe round trip)."""
    multi_agent: bool = False
    """``make`` builds a :class:`~ncdpo.envs.multiagent.MultiAgentEnv`; vector envs of it yield one row per
    (env, agent) (:class:`~ncdpo.envs.multiagent.AgentRows`)."""
    episode_info: tuple[str, ...] = ()
    """Numeric ``info`` entries the env reports at an episode's end besides ``is_success`` (e.g. ``completion``,
    the fraction of subtasks done), logged as ``charts/<name>_rate`` and ``eval/<name>_rate``."""
    recipes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """Per (algo, regime) overrides of :data:`ncdpo.training.resolve.RECIPES` for this task, applied after the
    preset (e.g. a smaller actor lr for fine-tuning on the manipulation tasks)."""


TASKS: dict[str, Task] = {}


def register(task: Task) -> None:
    TASKS[task.id] = task


def _gym_maker(env_id: str) -> Callable[..., gym.Env]:
    def make(**kwargs: Any) -> gym.Env:
        return gym.make(env_id, **kwargs)

    return make


_LOCOMOTION_PRESET = {"env.n_envs": 16, "ppo.gamma": 0.99, "ppo.gae_lambda": 0.95}
for _id, _desc in [
    ("Hopper-v5", "MuJoCo Hopper: 11-D obs, 3-D action, terminates on falling, 1000-step limit"),
    ("Walker2d-v5", "MuJoCo Walker2d: 17-D obs, 6-D action, terminates on falling, 1000-step limit"),
    ("HalfCheetah-v5", "MuJoCo HalfCheetah: 17-D obs, 6-D action, never terminates, 1000-step limit"),
]:
    register(Task(_id, _desc, _gym_maker(_id), dict(_LOCOMOTION_PRESET)))


def _manipulation_maker(task: str, reward: str, cameras: tuple[str, ...] = (), size: int = 0) -> Callable[..., gym.Env]:
    def make(**kwargs: Any) -> gym.Env:
        from ncdpo.envs.manipulation import RobosuiteEnv

        if cameras:
            from ncdpo.envs.render import select_gl_backend

            select_gl_backend()  # before robosuite imports MuJoCo, which reads MUJOCO_GL once
            kwargs["cameras"] = tuple(kwargs.get("cameras") or cameras)
            kwargs["image_size"] = int(kwargs.get("image_size") or size)
        elif "cameras" in kwargs or "image_size" in kwargs:
            raise NcdpoError(f"task '{task}' has no cameras (env.cameras / env.image_size apply to the -image tasks)")
        return RobosuiteEnv(task, reward, **kwargs)

    return make


_MANIPULATION_PRESET = {"env.n_envs": 8, "ppo.gamma": 0.99, "ppo.gae_lambda": 0.95, "env.norm_reward": False}
# configs/finetune_manipulation.yaml's departures from the fine-tuning recipe (RESULTS.md section 6)
_MANIPULATION_RECIPES = {
    ("ncdpo", "finetune"): {
        "ppo.actor_lr": 1e-5,
        "ppo.critic_warmup_iters": 3,
        "ppo.minibatch_size": 128,
        "diffusion.sigma_exp_start": 0.1,
    }
}
for _id, _desc in [
    ("lift", "robosuite Lift, Panda, OSC_POSE 20 Hz: 19-D obs, 7-D action, success ends the episode, 300 steps"),
    ("can", "robosuite PickPlaceCan, Panda, OSC_POSE 20 Hz: 23-D obs, 7-D action, success ends the episode, 300 steps"),
    (
        "square",
        "robosuite NutAssemblySquare, Panda, OSC_POSE 20 Hz: 23-D obs, 7-D action, success ends the episode, 400 steps",
    ),
    (
        "transport",
        "robosuite TwoArmTransport, 2 Pandas, OSC_POSE 20 Hz: 59-D obs, 14-D action, success ends the episode, "
        "800 steps",
    ),
]:
    register(
        Task(
            _id,
            _desc + "; sparse reward",
            _manipulation_maker(_id, "sparse"),
            dict(_MANIPULATION_PRESET),
            "async",
            recipes=_MANIPULATION_RECIPES,
        )
    )
    register(
        Task(
            f"{_id}-dense",
            _desc + "; robosuite's shaped reward",
            _manipulation_maker(_id, "dense"),
            dict(_MANIPULATION_PRESET),
            "async",
            recipes=_MANIPULATION_RECIPES,
        )
    )


# Camera tasks: DPPO's pixel settings (wrist camera for Lift and Can, agentview for Square, the two shoulder
# cameras for Transport), one RGB frame at 84x84 by default (DPPO: 96x96; a frame costs the same to render at
# either size on a CPU, but the encoder's cost grows with the pixels), proprioception beside the images.
IMAGE_CAMERAS = {
    "lift": ("robot0_eye_in_hand",),
    "can": ("robot0_eye_in_hand",),
    "square": ("agentview",),
    "transport": ("shouldercamera0", "shouldercamera1"),
}
IMAGE_SIZE = 84
_IMAGE_PRESET = {**_MANIPULATION_PRESET}
for _id, _cams in IMAGE_CAMERAS.items():
    _what = "robot0/1" if _id == "transport" else "robot0"
    _desc = (
        f"{_id} from cameras: {' + '.join(_cams)} RGB {IMAGE_SIZE}x{IMAGE_SIZE} (uint8) and {_what}'s eef pose and "
        "gripper beside them (privileged: object poses, for a privileged critic); otherwise as "
        f"'{_id}'"
    )
    for _reward, _suffix in (("sparse", ""), ("dense", "-dense")):
        register(
            Task(
                f"{_id}-image{_suffix}",
                _desc + ("; sparse reward" if _reward == "sparse" else "; robosuite's shaped reward"),
                _manipulation_maker(_id, _reward, _cams, IMAGE_SIZE),
                dict(_IMAGE_PRESET),
                "async",
                recipes=_MANIPULATION_RECIPES,
            )
        )


def _kitchen_maker(task: str) -> Callable[..., gym.Env]:
    def make(**kwargs: Any) -> gym.Env:
        from ncdpo.envs.kitchen import KitchenEnv

        return KitchenEnv(task, **kwargs)

    return make


# Franka Kitchen (D4RL's three tasks on gymnasium-robotics' FrankaKitchen-v1); the manipulation preset and recipe
for _id, _what in [
    ("kitchen-complete", "microwave, kettle, light switch, slide cabinet; demonstrations of exactly that sequence"),
    ("kitchen-partial", "microwave, kettle, light switch, slide cabinet; demonstrations of several sequences"),
    ("kitchen-mixed", "microwave, kettle, bottom burner, light switch; no demonstration does all four"),
]:
    register(
        Task(
            _id,
            f"Franka Kitchen (FrankaKitchen-v1): 60-D obs (robot, objects, goal), 9-D joint-velocity action, 12.5 Hz, "
            f"{_what}; reward 1 per subtask first done, success (all four) ends the episode, 280 steps",
            _kitchen_maker(_id),
            dict(_MANIPULATION_PRESET),
            "async",
            episode_info=("completion",),
            recipes=_MANIPULATION_RECIPES,
        )
    )


def _multiagent_maker(name: str) -> Callable[..., gym.Env]:
    def make(**kwargs: Any) -> gym.Env:
        from ncdpo.envs import multiagent

        return getattr(multiagent, name)(**kwargs)

    return make


# MAPPO's MPE settings (Yu et al. 2022): value normalisation, entropy bonus 0.01, lr 7e-4, 25-step episodes
_MPE_PRESET = {
    "env.n_envs": 16,
    "ppo.n_steps": 100,
    "ppo.gamma": 0.99,
    "ppo.gae_lambda": 0.95,
    "ppo.update_epochs": 10,
    "ppo.minibatch_size": 1600,
    "ppo.actor_lr": 7e-4,
    "ppo.critic_lr": 7e-4,
    "ppo.ent_coef": 0.01,
    "ppo.norm_value": True,
    "env.norm_reward": False,
    "ppo.max_grad_norm": 10.0,
}
register(
    Task(
        "simple_spread",
        "mpe2 simple_spread_v3: 3 agents cover 3 landmarks; 18-D local obs, 54-D global state, "
        "5 discrete actions each, team reward, 25-step episodes (truncated)",
        _multiagent_maker("make_simple_spread"),
        dict(_MPE_PRESET),
        multi_agent=True,
        # the one task measured to do better from scratch with epsilon prediction (RESULTS section 7: -20.10 vs -20.93)
        recipes={("ncdpo", "scratch"): {"diffusion.prediction": "epsilon"}},
    )
)


def _grf_maker(task: str) -> Callable[..., gym.Env]:
    def make(**kwargs: Any) -> gym.Env:
        from ncdpo.envs.football import make_grf

        return make_grf(task, **kwargs)

    return make


# MAPPO's GRF settings where they fit this machine: value normalisation, entropy 0.01, lr 5e-4, 200-step rollouts
_GRF_PRESET = {
    "env.n_envs": 8,
    "ppo.n_steps": 200,
    "ppo.gamma": 0.99,
    "ppo.gae_lambda": 0.95,
    "ppo.update_epochs": 10,
    "ppo.minibatch_size": 1600,
    "ppo.actor_lr": 5e-4,
    "ppo.critic_lr": 5e-4,
    "ppo.ent_coef": 0.01,
    "ppo.norm_value": True,
    "env.norm_reward": False,
    "ppo.max_grad_norm": 10.0,
}
for _id, _desc in [
    ("grf-3v1", "Google Research Football academy_3_vs_1_with_keeper: 3 agents"),
    ("grf-pass-shoot", "Google Research Football academy_pass_and_shoot_with_keeper: 2 agents"),
    ("grf-counterattack", "Google Research Football academy_counterattack_easy: 4 agents"),
]:
    register(
        Task(
            _id,
            _desc + ", simple115v2 obs, 19 actions each, MAPPO's scoring+checkpoint reward, a goal is a "
            "win; needs scripts/setup_gfootball.sh",
            _grf_maker(_id),
            dict(_GRF_PRESET),
            "async",
            multi_agent=True,
        )
    )


def episode_info_keys(env_id: str) -> tuple[str, ...]:
    """The task's :attr:`Task.episode_info` entries (none for an unregistered env)."""
    task = TASKS.get(env_id)
    return task.episode_info if task is not None else ()


def task_preset(env_id: str) -> dict[str, Any]:
    """The preset of a registered task, or ``{}`` for a plain gymnasium id."""
    return dict(TASKS[env_id].preset) if env_id in TASKS else {}


def task_recipe(env_id: str, algo: str, regime: str) -> dict[str, Any]:
    """A registered task's own overrides of the (algo, regime) recipe, or ``{}``."""
    return dict(TASKS[env_id].recipes.get((algo, regime), {})) if env_id in TASKS else {}


def is_multi_agent(env_id: str) -> bool:
    return env_id in TASKS and TASKS[env_id].multi_agent


def env_kwargs(env_cfg: Any) -> dict[str, Any]:
    """The env constructor options an :class:`~ncdpo.config.EnvConfig` sets (cameras and image size, where
    given; empty for the defaults)."""
    out: dict[str, Any] = {}
    if getattr(env_cfg, "cameras", ()):
        out["cameras"] = tuple(env_cfg.cameras)
    if getattr(env_cfg, "image_size", 0):
        out["image_size"] = int(env_cfg.image_size)
    return out


def make_env(
    env_id: str, act_steps: int = 1, max_episode_steps: int = 0, options: dict[str, Any] | None = None
) -> gym.Env:
    """One env: the task, episode statistics on raw rewards, then action chunking (continuous actions).

    A discrete-action env executes one action per decision (``act_steps`` must be 1); a multi-agent task's
    env keeps its own episode statistics (the team return) and has no chunking. ``options``: constructor
    options of the task (:func:`env_kwargs`: cameras, image size).
    """
    maker = TASKS[env_id].make if env_id in TASKS else _gym_maker(env_id)
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps > 0 else {}
    if options:
        if env_id not in TASKS:
            raise NcdpoError(f"env '{env_id}' takes no options ({', '.join(options)}); they apply to the -image tasks")
        kwargs.update(options)
    try:
        env = maker(**kwargs)
    except gym.error.Error as e:
        known = ", ".join(sorted(TASKS))
        raise NcdpoError(f"unknown env id '{env_id}': {e} (registered tasks: {known})") from None
    if is_multi_agent(env_id):
        if act_steps != 1:
            env.close()
            raise NcdpoError(
                f"task '{env_id}' has discrete actions: act_steps and horizon must be 1 (got act_steps={act_steps})"
            )
        return env
    space = env.observation_space
    if isinstance(space, gym.spaces.Dict):
        from ncdpo.observations import ObsSpec

        try:
            ObsSpec.from_space(space)
        except NcdpoError as e:
            env.close()
            raise NcdpoError(f"env '{env_id}': {e}; no encoder handles it") from None
    elif not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        env.close()
        raise NcdpoError(
            f"env '{env_id}' must have a 1-D Box observation space or a Dict of uint8 images (H, W, 3) and 1-D "
            f"Boxes; no encoder handles {space}"
        )
    if isinstance(env.action_space, gym.spaces.Discrete):
        if act_steps != 1:
            env.close()
            raise NcdpoError(
                f"env '{env_id}' has discrete actions: act_steps and horizon must be 1 (got act_steps={act_steps})"
            )
        return DiscreteSteps(gym.wrappers.RecordEpisodeStatistics(env))
    if not isinstance(env.action_space, gym.spaces.Box):
        raise NcdpoError(
            f"env '{env_id}' has a {type(env.action_space).__name__} action space; a Box or Discrete "
            "action space is required"
        )
    env = gym.wrappers.RecordEpisodeStatistics(env)
    return ActionChunk(env, act_steps)


def vector_mode(env_id: str, vector: str = "auto") -> str:
    """``"sync"``, ``"async"`` or ``"ray"``: ``vector`` itself, or for ``"auto"`` the task's preference."""
    if vector != "auto":
        return vector
    return TASKS[env_id].vector if env_id in TASKS else "sync"


def make_vec_env(
    env_id: str,
    n_envs: int,
    act_steps: int = 1,
    max_episode_steps: int = 0,
    vector: str = "auto",
    options: dict[str, Any] | None = None,
    ray_cpus: float = 1.0,
) -> SyncVectorEnv | AsyncVectorEnv:
    """``n_envs`` chunked envs stepped in lock-step; finished envs reset in the same step (final obs in info).

    ``vector``: ``"sync"`` steps them in this process (gymnasium SyncVectorEnv), ``"async"`` in one
    subprocess each (AsyncVectorEnv, started with ``spawn``), ``"ray"`` in one Ray actor each of ``ray_cpus``
    CPUs (:class:`~ncdpo.envs.ray_vector.RayVectorEnv`, on the cluster this process is connected to, else a local
    instance), ``"auto"`` as the task prefers. ``options``: the task's constructor options (:func:`env_kwargs`).
    """
    mode = vector_mode(env_id, vector)
    venv: Any
    if _has_cameras(env_id):
        from ncdpo.envs.render import select_gl_backend

        select_gl_backend()  # before any worker starts, so that every one inherits the backend
    if mode == "ray":
        from ncdpo.envs.ray_vector import RayVectorEnv

        make_env(env_id, act_steps, max_episode_steps, options).close()  # a bad id fails fast, in this process
        makers = [_AsyncMaker(env_id, act_steps, max_episode_steps, i, options) for i in range(n_envs)]
        venv = RayVectorEnv(makers, env_id, num_cpus=ray_cpus)
    elif mode == "sync" or n_envs == 1:
        # fail fast, with a clear message, in this process
        make_env(env_id, act_steps, max_episode_steps, options).close()
        fns = [
            lambda i=i: WorkerGuard(make_env(env_id, act_steps, max_episode_steps, options), env_id, i)
            for i in range(n_envs)
        ]
        venv = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    else:
        # AsyncVectorEnv builds the first env in this process to read its spaces, so a bad id fails fast here
        fns = [_AsyncMaker(env_id, act_steps, max_episode_steps, i, options) for i in range(n_envs)]
        venv = AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn", shared_memory=False)
    if is_multi_agent(env_id):
        from ncdpo.envs.multiagent import AgentRows

        return AgentRows(venv)  # type: ignore[return-value]
    return venv


def _has_cameras(env_id: str) -> bool:
    return env_id in TASKS and "-image" in env_id


class _AsyncMaker:
    """A picklable env constructor for AsyncVectorEnv workers."""

    def __init__(
        self, env_id: str, act_steps: int, max_episode_steps: int, index: int, options: dict[str, Any] | None = None
    ) -> None:
        self.args = (env_id, act_steps, max_episode_steps, index)
        self.options = options

    def __call__(self) -> gym.Env:
        import signal

        # Ctrl-C in a terminal signals the whole process group: the training process handles it (finishes the
        # iteration, checkpoints, closes these workers); a worker that died of it would lose the episode state
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        env_id, act_steps, max_episode_steps, index = self.args
        return WorkerGuard(make_env(env_id, act_steps, max_episode_steps, self.options), env_id, index)


def env_spec(envs: Any) -> EnvSpec:
    """The :class:`EnvSpec` of a vector env made by :func:`make_vec_env`."""
    if hasattr(envs, "ncdpo_spec"):
        return envs.ncdpo_spec
    space = envs.single_observation_space
    obs: dict[str, Any] | None = None
    if isinstance(space, gym.spaces.Dict):
        from ncdpo.observations import ObsSpec

        try:
            privileged = tuple(envs.get_attr("privileged_keys")[0])
        except AttributeError:
            privileged = ()
        spec = ObsSpec.from_space(space, privileged)
        obs_dim, obs = spec.flat_dim, spec.to_dict()
    else:
        obs_dim = int(np.prod(space.shape))
    space = envs.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        return EnvSpec(obs_dim, int(space.n), discrete=True, obs=obs)
    return EnvSpec(obs_dim, int(space.shape[-1]), obs=obs)


def env_dims(envs: Any) -> tuple[int, int]:
    """(obs_dim, act_dim) of a vector env made by :func:`make_vec_env` (act_dim: the number of actions if discrete)."""
    spec = env_spec(envs)
    return spec.obs_dim, spec.act_dim


def action_mask(info: dict, n_rows: int) -> np.ndarray | None:
    """The legal-action mask (n_rows, n_actions) an env reported in ``info["action_mask"]``, or None."""
    m = info.get("action_mask")
    if m is None:
        return None
    m = np.asarray(m, bool)
    return m if m.shape[0] == n_rows else None


def done_values(info: dict, key: str, done: np.ndarray, default: float = 0.0) -> np.ndarray:
    """Per-env values of ``key`` from the step's info: from ``final_info`` for envs that just finished."""
    n = done.shape[0]
    out = np.full(n, default, np.float64)
    if key in info:
        m = info[f"_{key}"]
        out[m] = info[key][m]
    fin = info.get("final_info", {})
    if key in fin:
        m = fin[f"_{key}"] & done
        out[m] = fin[key][m]
    return out


def episode_stats(info: dict, done: np.ndarray) -> list[tuple[float, int]]:
    """(return, length) of each episode that ended in this step, from RecordEpisodeStatistics."""
    ep = info.get("final_info", {}).get("episode")
    if ep is None:
        return []
    idx = np.nonzero(ep["_r"] & done)[0]
    return [(float(ep["r"][i]), int(ep["l"][i])) for i in idx]


def action_bounds(env_id: str, options: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) action bounds of ``env_id``'s raw action space."""
    env = make_env(env_id, options=options)
    try:
        if not isinstance(env, ActionChunk):
            raise NcdpoError(f"env '{env_id}' has discrete actions: no action bounds")
        inner = env.env.action_space  # below the chunking wrapper
        return inner.low.astype(np.float32), inner.high.astype(np.float32)
    finally:
        env.close()
