"""Task registry: named tasks with per-task config presets, and construction of (vector) environments.

Any gymnasium env id with a 1-D Box observation space and a Box action space also works, with no preset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from ncdpo.envs.wrappers import ActionChunk, WorkerGuard
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


def _manipulation_maker(task: str, reward: str) -> Callable[..., gym.Env]:
    def make(**kwargs: Any) -> gym.Env:
        from ncdpo.envs.manipulation import RobosuiteEnv

        return RobosuiteEnv(task, reward, **kwargs)

    return make


_MANIPULATION_PRESET = {"env.n_envs": 8, "ppo.gamma": 0.99, "ppo.gae_lambda": 0.95, "env.norm_reward": False}
for _id, _desc in [
    ("lift", "robosuite Lift, Panda, OSC_POSE 20 Hz: 19-D obs, 7-D action, success ends the episode, 300 steps"),
    ("can", "robosuite PickPlaceCan, Panda, OSC_POSE 20 Hz: 23-D obs, 7-D action, success ends the episode, 300 steps"),
    ("square", "robosuite NutAssemblySquare, Panda, OSC_POSE 20 Hz: 23-D obs, 7-D action, success ends the episode, 400 steps"),
    ("transport", "robosuite TwoArmTransport, 2 Pandas, OSC_POSE 20 Hz: 59-D obs, 14-D action, success ends the episode, 800 steps"),
]:
    register(Task(_id, _desc + "; sparse reward", _manipulation_maker(_id, "sparse"), dict(_MANIPULATION_PRESET), "async"))
    register(Task(f"{_id}-dense", _desc + "; robosuite's shaped reward", _manipulation_maker(_id, "dense"),
                  dict(_MANIPULATION_PRESET), "async"))


def task_preset(env_id: str) -> dict[str, Any]:
    """The preset of a registered task, or ``{}`` for a plain gymnasium id."""
    return dict(TASKS[env_id].preset) if env_id in TASKS else {}


def make_env(env_id: str, act_steps: int = 1, max_episode_steps: int = 0) -> gym.Env:
    """One env: the task, episode statistics on raw rewards, then action chunking."""
    maker = TASKS[env_id].make if env_id in TASKS else _gym_maker(env_id)
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps > 0 else {}
    try:
        env = maker(**kwargs)
    except gym.error.Error as e:
        known = ", ".join(sorted(TASKS))
        raise NcdpoError(f"unknown env id '{env_id}': {e} (registered tasks: {known})") from None
    if not isinstance(env.action_space, gym.spaces.Box):
        raise NcdpoError(f"env '{env_id}' has a {type(env.action_space).__name__} action space; a Box action space is required")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise NcdpoError(f"env '{env_id}' must have a 1-D Box observation space (got {env.observation_space})")
    env = gym.wrappers.RecordEpisodeStatistics(env)
    return ActionChunk(env, act_steps)


def vector_mode(env_id: str, vector: str = "auto") -> str:
    """``"sync"`` or ``"async"``: ``vector`` itself, or for ``"auto"`` the task's preference."""
    if vector != "auto":
        return vector
    return TASKS[env_id].vector if env_id in TASKS else "sync"


def make_vec_env(env_id: str, n_envs: int, act_steps: int = 1, max_episode_steps: int = 0,
                 vector: str = "auto") -> SyncVectorEnv | AsyncVectorEnv:
    """``n_envs`` chunked envs stepped in lock-step; finished envs reset in the same step (final obs in info).

    ``vector``: ``"sync"`` steps them in this process (gymnasium SyncVectorEnv), ``"async"`` in one
    subprocess each (AsyncVectorEnv, started with ``spawn``), ``"auto"`` as the task prefers.
    """
    mode = vector_mode(env_id, vector)
    if mode == "sync" or n_envs == 1:
        make_env(env_id, act_steps, max_episode_steps).close()  # fail fast, with a clear message, in this process
        fns = [lambda i=i: WorkerGuard(make_env(env_id, act_steps, max_episode_steps), env_id, i) for i in range(n_envs)]
        return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    # AsyncVectorEnv builds the first env in this process to read its spaces, so a bad id fails fast here
    fns = [_AsyncMaker(env_id, act_steps, max_episode_steps, i) for i in range(n_envs)]
    return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn", shared_memory=False)


class _AsyncMaker:
    """A picklable env constructor for AsyncVectorEnv workers."""

    def __init__(self, env_id: str, act_steps: int, max_episode_steps: int, index: int) -> None:
        self.args = (env_id, act_steps, max_episode_steps, index)

    def __call__(self) -> gym.Env:
        import signal

        # Ctrl-C in a terminal signals the whole process group: the training process handles it (finishes the
        # iteration, checkpoints, closes these workers); a worker that died of it would lose the episode state
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        env_id, act_steps, max_episode_steps, index = self.args
        return WorkerGuard(make_env(env_id, act_steps, max_episode_steps), env_id, index)


def env_dims(envs: SyncVectorEnv | AsyncVectorEnv) -> tuple[int, int]:
    """(obs_dim, act_dim) of a vector env made by :func:`make_vec_env`."""
    return int(np.prod(envs.single_observation_space.shape)), int(envs.single_action_space.shape[-1])


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


def action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) action bounds of ``env_id``'s raw action space."""
    env = make_env(env_id)
    try:
        inner = env.env.action_space  # below the chunking wrapper
        return inner.low.astype(np.float32), inner.high.astype(np.float32)
    finally:
        env.close()
