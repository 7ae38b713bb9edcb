"""Robot manipulation tasks on robosuite: ``lift``, ``can``, ``square``, ``transport``.

Each task is a plain gymnasium env around a headless robosuite env (no renderer, no cameras) with
robomimic's settings: Panda arm(s), the OSC_POSE controller (delta end-effector position and orientation
plus a gripper command, all in [-1, 1]) at 20 Hz, and robomimic's low-dimensional observation, concatenated
in a fixed order (:attr:`RobosuiteEnv.obs_layout`)::

    robot{i}_eef_pos (3), robot{i}_eef_quat (4, xyzw), robot{i}_gripper_qpos (2)  for each robot i, then
    object (robosuite's "object-state": the task's object poses and their relations to the gripper(s))

**Success ends the episode**: ``terminated=True`` on the step the task is solved and ``info["is_success"]``
true on that step (false on every other step). The time limit (robomimic's: 300 control steps for Lift
and Can, 400 for Square, 800 for Transport) gives ``truncated=True``. The default reward is sparse, 1 on the
success step and 0 otherwise; the ``-dense`` variants use robosuite's shaped reward (in [0, 1] per step)
and, on success, add 1 for each step left in the episode, so that finishing early never pays less than
dawdling near the goal.

robosuite is an optional dependency (``pip install -e '.[manipulation]'`` plus ``robosuite==1.5.2``
installed with ``--no-deps``; see the README). Importing this module does not import robosuite.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from ncdpo.errors import NcdpoError


@dataclass(frozen=True)
class ManipulationSpec:
    """How a task maps onto robosuite."""

    env_name: str
    """robosuite environment class name."""
    robots: tuple[str, ...]
    """One robot name per arm."""
    horizon: int
    """Episode limit in control steps (robomimic's)."""
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    """Further robosuite constructor arguments."""


SPECS: dict[str, ManipulationSpec] = {
    "lift": ManipulationSpec("Lift", ("Panda",), 300),
    "can": ManipulationSpec("PickPlaceCan", ("Panda",), 300),
    "square": ManipulationSpec("NutAssemblySquare", ("Panda",), 400),
    "transport": ManipulationSpec("TwoArmTransport", ("Panda", "Panda"), 800, (("env_configuration", "opposed"),)),
}


def base_task(env_id: str) -> str | None:
    """The robosuite task an env id runs (``lift-image-dense`` -> ``lift``), or None for other envs."""
    base = env_id.removesuffix("-dense").removesuffix("-image")
    return base if base in SPECS else None


def robomimic_lowdim_keys(task: str) -> list[str]:
    """robomimic's low-dimensional observation keys of a task, in this package's flat order (robot by robot,
    then ``object``)."""
    base = base_task(task)
    if base is None:
        raise NcdpoError(f"'{task}' is not a robosuite task")
    keys = []
    for i in range(len(SPECS[base].robots)):
        keys += [f"robot{i}_eef_pos", f"robot{i}_eef_quat", f"robot{i}_gripper_qpos"]
    return keys + ["object"]


_ROBOSUITE_HINT = (
    "robosuite is not installed; install the manipulation extra: "
    "pip install -e '.[manipulation]' && pip install --no-deps robosuite==1.5.2 (see the README)"
)


def import_robosuite() -> Any:
    """Import robosuite quietly (its import-time warnings about optional parts are not ours to show)."""
    logging.disable(logging.WARNING)
    try:
        import robosuite
    except ImportError as e:
        raise NcdpoError(f"{_ROBOSUITE_HINT} ({e})") from None
    finally:
        logging.disable(logging.NOTSET)
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    return robosuite


def robosuite_available() -> bool:
    try:
        import_robosuite()
    except NcdpoError:
        return False
    return True


class RobosuiteEnv(gym.Env):
    """A robosuite task as a gymnasium env (see the module docstring for observations, rewards and episode ends)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: str,
        reward: str = "sparse",
        max_episode_steps: int = 0,
        cameras: tuple[str, ...] = (),
        image_size: int = 84,
    ) -> None:
        if task not in SPECS:
            raise NcdpoError(f"unknown manipulation task '{task}' (known: {', '.join(SPECS)})")
        if reward not in ("sparse", "dense"):
            raise NcdpoError(f"reward must be 'sparse' or 'dense' (got '{reward}')")
        suite = import_robosuite()
        from robosuite.controllers import load_composite_controller_config

        spec = SPECS[task]
        self.task, self.reward_type = task, reward
        self.horizon = int(max_episode_steps) if max_episode_steps > 0 else spec.horizon
        controller = load_composite_controller_config(controller="BASIC")
        # the BASIC composite config lists parts (torso, head, base, legs, left arm) a Panda does not have
        controller["body_parts"] = {k: v for k, v in controller["body_parts"].items() if k in ("right", "left")}
        if len(spec.robots) == 1:
            controller["body_parts"].pop("left", None)
        robots = list(spec.robots) if len(spec.robots) > 1 else spec.robots[0]
        self.env = suite.make(
            spec.env_name,
            robots=robots,
            controller_configs=controller,
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
            use_object_obs=True,
            reward_shaping=(reward == "dense"),
            reward_scale=1.0,
            control_freq=20,
            horizon=10**9,
            ignore_done=True,
            hard_reset=False,
            seed=0,  # the model itself is randomised once at construction (Lift's cube size): the same in every env
            **dict(spec.env_kwargs),
        )
        self.n_robots = len(spec.robots)
        obs = self.env.reset()
        layout: list[tuple[str, int]] = []
        for i in range(self.n_robots):
            layout += [(f"robot{i}_eef_pos", 3), (f"robot{i}_eef_quat", 4), (f"robot{i}_gripper_qpos", 2)]
        layout.append(("object-state", int(np.asarray(obs["object-state"]).shape[0])))
        self.obs_layout: list[tuple[str, slice]] = []
        start = 0
        for name, n in layout:
            self.obs_layout.append((name, slice(start, start + n)))
            start += n
        self.cameras = tuple(cameras)
        self.render_images = True
        """Render the cameras on the next step (:class:`~ncdpo.envs.wrappers.ActionChunk` turns it off for the
        steps inside a chunk whose observation nobody reads)."""
        if self.cameras:
            from ncdpo.envs.render import CameraRenderer

            self.renderer = CameraRenderer(self.env.sim.model._model, self.env.sim.data._data, self.cameras, image_size)
            box = {
                name: gym.spaces.Box(-np.inf, np.inf, (sl.stop - sl.start,), np.float32) for name, sl in self.obs_layout
            }
            box["object"] = box.pop("object-state")
            for cam in self.cameras:
                box[f"{cam}_image"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
            self.observation_space = gym.spaces.Dict(box)
        else:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (start,), np.float32)
        low, high = self.env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.t = 0
        self.last_raw_obs: dict[str, np.ndarray] = obs

    # -------------------------------------------------------------------------------------------- API
    privileged_keys = ("object",)
    """Of a camera task's observation: the simulator's object poses, which only a privileged critic reads."""

    def observe(self, obs: dict[str, np.ndarray]) -> Any:
        """Keep ``obs`` (robosuite's) as the latest raw observation and return this env's: flattened in
        :attr:`obs_layout` order, or with cameras a dict of robomimic's low-dim keys (``robot0_eef_pos``, ...,
        ``object``) and one ``<camera>_image`` per camera (rendered only if :attr:`render_images`)."""
        self.last_raw_obs = obs
        if not self.cameras:
            return np.concatenate([np.asarray(obs[name], np.float32).reshape(-1) for name, _ in self.obs_layout])
        out = {
            ("object" if name == "object-state" else name): np.asarray(obs[name], np.float32).reshape(-1)
            for name, _ in self.obs_layout
        }
        if self.render_images:
            out.update({f"{cam}_image": img for cam, img in self.renderer.render().items()})
        return out

    def current_obs(self) -> Any:
        """The observation of the current state, cameras rendered."""
        self.render_images = True
        return self.observe(self.last_raw_obs)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:  # robosuite's placement samplers and robot init noise share this one generator
            self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self.t = 0
        self.render_images = True
        return self.observe(self.env.reset()), {"is_success": False}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, r, _, _ = self.env.step(np.asarray(action, np.float64))
        self.t += 1
        success = bool(self.env._check_success())
        truncated = self.t >= self.horizon and not success
        if self.reward_type == "sparse":
            reward = 1.0 if success else 0.0
        else:
            reward = float(r) + (float(self.horizon - self.t) if success else 0.0)
        return self.observe(obs), reward, success, truncated, {"is_success": success}

    def close(self) -> None:
        renderer = getattr(self, "renderer", None)
        if renderer is not None:
            renderer.close()
        env = getattr(self, "env", None)
        if env is not None:
            env.close()

    # -------------------------------------------------------------------------------------------- resume
    def _stateful(self) -> dict[str, Any]:
        """robosuite objects whose plain attributes carry state from step to step: the env (counters), each
        robot, its composite and part controllers (goals, references), grippers (the Panda gripper integrates
        its command) and the observables (last sampled values and sampling clocks)."""
        e = self.env
        objs: dict[str, Any] = {"env": e}
        for i, r in enumerate(e.robots):
            objs[f"robot{i}"] = r
            objs[f"robot{i}.composite"] = r.composite_controller
            for name, c in r.composite_controller.part_controllers.items():
                objs[f"robot{i}.controller.{name}"] = c
            for name, g in r.gripper.items():
                objs[f"robot{i}.gripper.{name}"] = g
        for name, ob in e._observables.items():
            objs[f"observable.{name}"] = ob
        return objs

    def ncdpo_state(self) -> dict[str, Any]:
        """Everything the next steps depend on: the MuJoCo integration state, robosuite's generator, and the
        numeric attributes of the robosuite objects that persist between steps (:meth:`_stateful`)."""
        import mujoco

        e = self.env
        model, data = e.sim.model._model, e.sim.data._data
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(model, spec), np.float64)
        mujoco.mj_getState(model, data, buf, spec)
        attrs = {
            name: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(obj).items() if _plain(v)}
            for name, obj in self._stateful().items()
        }
        cache = {k: np.array(v) for k, v in e._obs_cache.items()}  # values some observables compute from others
        return {
            "mujoco": buf,
            "t": self.t,
            "rng": {"__generator__": e.rng.bit_generator.state},
            "attrs": attrs,
            "obs_cache": cache,
            "obs": {k: np.array(v) for k, v in self.last_raw_obs.items()},
        }

    def ncdpo_set_state(self, st: dict[str, Any]) -> None:
        import mujoco

        e = self.env
        model, data = e.sim.model._model, e.sim.data._data
        mujoco.mj_setState(model, data, np.asarray(st["mujoco"], np.float64), mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(model, data)
        self.t = int(st["t"])
        e.rng.bit_generator.state = st["rng"]["__generator__"]
        objs = self._stateful()
        for name, attrs in st["attrs"].items():
            for k, v in attrs.items():
                setattr(objs[name], k, v.copy() if isinstance(v, np.ndarray) else v)
        e._obs_cache = {k: np.array(v) for k, v in st["obs_cache"].items()}
        self.last_raw_obs = {k: np.asarray(v) for k, v in st["obs"].items()}


def _plain(v: Any) -> bool:
    """A numeric value or string (not a structure, a simulator handle or a callable)."""
    return isinstance(v, (bool, int, float, str, np.ndarray, np.generic)) and not (
        isinstance(v, np.ndarray) and v.dtype == object
    )
