"""Environment wrappers: action chunking over normalised actions."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from ncdpo.errors import EnvWorkerError


def to_bounds(a: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """A normalised action in [-1, 1] (clipped there first) mapped affinely onto ``[low, high]``, as float64."""
    a = np.clip(np.asarray(a, np.float64), -1.0, 1.0)
    return low + (a + 1.0) * 0.5 * (high - low)


class ActionChunk(gym.Wrapper):
    """Execute a chunk of ``act_steps`` normalised actions per step.

    A camera env (one with ``cameras`` and ``render_images``, e.g. robosuite's) renders its cameras only for the
    observation the chunk returns, not on the steps inside it.

    The wrapped env's action space becomes ``Box(-1, 1, (act_steps, act_dim))``. Each action is clipped to
    [-1, 1] and mapped affinely onto the inner env's bounds, then executed in order; rewards are summed; the
    chunk stops early when the inner episode terminates or is truncated. ``info["env_steps"]`` is the number
    of inner env steps actually executed, so budgets count real simulator steps.
    """

    def __init__(self, env: gym.Env, act_steps: int) -> None:
        super().__init__(env)
        box = env.action_space
        assert isinstance(box, gym.spaces.Box)
        self.act_steps = act_steps
        self._low = box.low.astype(np.float64)
        self._high = box.high.astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_steps, *box.shape), np.float32)

    @property
    def action_low(self) -> np.ndarray:
        """The inner env's lower action bounds (what -1 maps onto), float64."""
        return self._low

    @property
    def action_high(self) -> np.ndarray:
        """The inner env's upper action bounds (what +1 maps onto), float64."""
        return self._high

    def to_env_action(self, a: np.ndarray) -> np.ndarray:
        """One normalised action of the chunk in the inner env's units and dtype."""
        return to_bounds(a, self._low, self._high).astype(self.env.action_space.dtype)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        total = 0.0
        inner = self.env.unwrapped
        lazy = hasattr(inner, "render_images") and bool(getattr(inner, "cameras", ()))
        last = self.act_steps - 1
        try:
            for i in range(self.act_steps):
                if lazy:  # a camera env renders only the observation the chunk returns
                    inner.render_images = i == last
                obs, r, terminated, truncated, info = self.env.step(self.to_env_action(action[i]))
                total += float(r)
                if terminated or truncated:
                    break
            if lazy and i < last:
                obs = inner.current_obs()
        finally:
            if lazy:
                inner.render_images = True
        info = dict(info)
        info["env_steps"] = i + 1
        return obs, total, terminated, truncated, info


class DiscreteSteps(gym.Wrapper):
    """For a discrete-action env (one action per decision, no chunking): the action as a plain int, and
    ``info["env_steps"] = 1`` as :class:`ActionChunk` reports it."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, r, terminated, truncated, info = self.env.step(int(np.asarray(action).reshape(-1)[0]))
        info = dict(info)
        info["env_steps"] = 1
        return obs, float(r), terminated, truncated, info


class WorkerGuard(gym.Wrapper):
    """Re-raise any exception of the wrapped env as :class:`EnvWorkerError` naming the env id, the worker
    index in the vector env and its seed, so a crash deep in a simulator is reported as one clear line."""

    def __init__(self, env: gym.Env, env_id: str, index: int) -> None:
        super().__init__(env)
        self.env_id, self.index, self.seed = env_id, index, None

    def _fail(self, what: str, e: Exception) -> EnvWorkerError:
        first = str(e).splitlines()[0] if str(e) else ""
        return EnvWorkerError(
            f"env {self.env_id} (worker {self.index}, seed {self.seed}) raised {type(e).__name__} in {what}: {first}"
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        if seed is not None:
            self.seed = seed
        try:
            return self.env.reset(seed=seed, options=options)
        except Exception as e:
            raise self._fail("reset", e) from e

    def step(self, action):  # type: ignore[override]
        try:
            return self.env.step(action)
        except Exception as e:
            raise self._fail("step", e) from e

    @property
    def privileged_keys(self) -> tuple[str, ...]:
        """The keys of a dict observation that only a privileged critic reads (the inner env's, else none)."""
        return tuple(getattr(self.env.unwrapped, "privileged_keys", ()))

    @property
    def ncdpo_snapshot(self) -> list[dict[str, Any]]:
        """This env's full state (see :mod:`ncdpo.envs.snapshot`); assigning a snapshot restores it. An
        attribute, so that AsyncVectorEnv's ``get_attr`` / ``set_attr`` reach it inside each worker."""
        from ncdpo.envs.snapshot import stack_state

        return stack_state(self)

    @ncdpo_snapshot.setter
    def ncdpo_snapshot(self, layers: list[dict[str, Any]]) -> None:
        from ncdpo.envs.snapshot import set_stack_state

        set_stack_state(self, layers)
