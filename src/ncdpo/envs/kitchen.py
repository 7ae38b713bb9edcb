"""Franka Kitchen (gymnasium-robotics ``FrankaKitchen-v1``) as D4RL's three kitchen tasks.

``kitchen-complete`` and ``kitchen-partial``: microwave, kettle, light switch, slide cabinet; ``kitchen-mixed``:
microwave, kettle, bottom burner, light switch (the tasks differ in their demonstrations, not in the env). The
flat observation is D4RL's 60 numbers, in this order::

    robot   (9)   joint positions of the 7 arm joints and the 2 fingers (with the env's observation noise)
    objects (21)  positions of the kitchen's joints: 4 burner knobs and their flames (8), light switch and light (2),
                  slide cabinet (1), left and right hinge doors (2), microwave door (1), kettle pose (7: xyz, wxyz)
    goal    (30)  the goal configuration of each of the task's four subtasks at its index in robot+objects, 0 elsewhere

The action is the env's: 9 joint velocities in [-1, 1] (x 2 rad/s), 12.5 Hz. A step's reward is the number of goal
subtasks first completed at that step (a subtask counts once: completed ones are removed), so an episode's
return is 0-4; ``info["is_success"]`` is true once all four are done, which ends the episode (``terminated``);
280 steps give ``truncated``. ``info["completion"]`` is the fraction of the four done so far (ReinFlow's
task-completion rate is its final value), ``info["completed"]`` names them.

gymnasium-robotics is a dependency (``make install``); importing this module does not import it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from ncdpo.errors import NcdpoError

TASKS: dict[str, tuple[str, ...]] = {
    "kitchen-complete": ("microwave", "kettle", "light switch", "slide cabinet"),
    "kitchen-partial": ("microwave", "kettle", "light switch", "slide cabinet"),
    "kitchen-mixed": ("microwave", "kettle", "bottom burner", "light switch"),
}
SUBTASKS = ("microwave", "kettle", "light switch", "slide cabinet", "hinge cabinet", "bottom burner", "top burner")
"""Every subtask of the kitchen (the demonstrators script all seven)."""
HORIZON = 280
OBS_DIM = 60
ROBOT, OBJECTS, GOAL = slice(0, 9), slice(9, 30), slice(30, 60)


def _kitchen_module() -> Any:
    import contextlib
    import io

    try:  # its import prints a notice about the Adroit tasks (not used here) to stderr
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics.envs.franka_kitchen.kitchen_env as kitchen_env
    except ImportError as e:
        raise NcdpoError(
            f"the kitchen tasks need gymnasium-robotics (pip install gymnasium-robotics==1.4.2; make install does): {e}"
        ) from None
    return kitchen_env


def element_indices() -> dict[str, np.ndarray]:
    """Each subtask's indices in the 30 robot+object positions (gymnasium-robotics' ``OBS_ELEMENT_INDICES``)."""
    return dict(_kitchen_module().OBS_ELEMENT_INDICES)


def element_goals() -> dict[str, np.ndarray]:
    """Each subtask's goal configuration (``OBS_ELEMENT_GOALS``); a subtask is done within 0.3 of it (L2)."""
    return dict(_kitchen_module().OBS_ELEMENT_GOALS)


def goal_vector(tasks: tuple[str, ...]) -> np.ndarray:
    """The 30-D goal of a set of subtasks (D4RL's: each subtask's goal at its indices, zeros elsewhere)."""
    g = np.zeros(30, np.float32)
    idx, goals = element_indices(), element_goals()
    for t in tasks:
        g[idx[t]] = goals[t]
    return g


class KitchenEnv(gym.Env):
    """One of D4RL's kitchen tasks on ``FrankaKitchen-v1`` (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, task: str = "kitchen-complete", max_episode_steps: int = 0) -> None:
        if task not in TASKS:
            raise NcdpoError(f"unknown kitchen task '{task}' (known: {', '.join(TASKS)})")
        mod = _kitchen_module()
        self.task, self.goal_tasks = task, TASKS[task]
        self.horizon = int(max_episode_steps) if max_episode_steps > 0 else HORIZON
        self.env = mod.KitchenEnv(
            tasks_to_complete=list(self.goal_tasks), terminate_on_tasks_completed=True, remove_task_when_completed=True
        )
        self.goal = goal_vector(self.goal_tasks)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (9,), np.float32)
        self.t = 0
        self.completed: list[str] = []

    # ---------------------------------------------------------------- the task
    def _obs(self, raw: dict[str, Any]) -> np.ndarray:
        o = raw["observation"]
        return np.concatenate([o[0:9], o[18:39], self.goal]).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        n = len(self.goal_tasks)
        return {
            "is_success": len(self.completed) == n,
            "completion": len(self.completed) / n,
            "completed": list(self.completed),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        raw, _ = self.env.reset(seed=seed)
        self.t, self.completed = 0, []
        return self._obs(raw), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        raw, reward, _, _, info = self.env.step(np.asarray(action, np.float64))
        self.t += 1
        new = [t for t in info["step_task_completions"] if t not in self.completed]
        self.completed += sorted(new, key=self.goal_tasks.index)
        out = self._info()
        terminated = bool(out["is_success"])
        truncated = self.t >= self.horizon and not terminated
        return self._obs(raw), float(len(new)), terminated, truncated, out

    # ---------------------------------------------------------------- what demonstrators and tests read
    @property
    def sim(self) -> tuple[Any, Any]:
        """The MuJoCo ``(model, data)``."""
        return self.env.model, self.env.data

    def subtask_done(self, name: str) -> bool:
        """Whether subtask ``name`` (any of :data:`SUBTASKS`) is within 0.3 of its goal now (noise-free state)."""
        idx, goals = element_indices(), element_goals()
        return bool(np.linalg.norm(self.env.data.qpos[idx[name]] - goals[name]) < 0.3)

    # ---------------------------------------------------------------- snapshots (bitwise resume)
    def ncdpo_state(self) -> dict[str, Any]:
        import mujoco

        m, d = self.sim
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(m, spec), np.float64)
        mujoco.mj_getState(m, d, buf, spec)
        robot = self.env.robot_env
        return {
            "mujoco": buf,
            "last_robot_qpos": np.array(robot._last_robot_qpos, copy=True),
            "robot_rng": robot.np_random.bit_generator.state,
            "rng": self.np_random.bit_generator.state,
            "to_complete": sorted(self.env.tasks_to_complete),
            "episode_completions": list(self.env.episode_task_completions),
            "t": self.t,
            "completed": list(self.completed),
        }

    def ncdpo_set_state(self, st: dict[str, Any]) -> None:
        import mujoco

        m, d = self.sim
        mujoco.mj_setState(m, d, np.asarray(st["mujoco"], np.float64), mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(m, d)
        robot = self.env.robot_env
        robot._last_robot_qpos = np.array(st["last_robot_qpos"], copy=True)
        robot.np_random.bit_generator.state = st["robot_rng"]
        self.np_random.bit_generator.state = st["rng"]
        self.env.tasks_to_complete = set(st["to_complete"])
        self.env.episode_task_completions[:] = list(st["episode_completions"])
        self.t, self.completed = int(st["t"]), list(st["completed"])


# ---------------------------------------------------------------------------------------------- Minari's D4RL kitchen
def task_for_goal(goal_tasks: set[str], hint: str = "") -> str:
    """The kitchen task whose goal is ``goal_tasks`` (complete and partial share one goal: ``hint``, a dataset id or
    env id naming ``partial`` picks partial)."""
    matches = [t for t, g in TASKS.items() if set(g) == set(goal_tasks)]
    if not matches:
        raise NcdpoError(f"no kitchen task has the goal {sorted(goal_tasks)} (tasks: {', '.join(TASKS)})")
    return next((t for t in matches if t.split("-")[1] in hint), matches[0])


def from_gymnasium_episode(observation: np.ndarray, actions: np.ndarray, task: str) -> dict[str, Any]:
    """One episode recorded on ``FrankaKitchen-v1`` (its 59-D ``observation`` entry, T+1 rows, and T actions; Minari's
    ``D4RL/kitchen/*`` layout: 450-step episodes, no termination, completed subtasks kept) as this package's task:
    the 60-D observation, the reward recomputed (1 for each goal subtask on the step it is first done), and the
    episode ending on the step all four are done (``terminated``) or cut where the recording ends."""
    o = np.asarray(observation, np.float64)
    a = np.asarray(actions, np.float32)
    T = len(a)
    if o.ndim != 2 or o.shape[1] != 59 or len(o) != T + 1:
        raise NcdpoError(
            f"a kitchen episode's observations have shape {o.shape} for {T} actions; FrankaKitchen-v1's are (T+1, 59)"
        )
    goal_tasks = TASKS[task]
    goal = goal_vector(goal_tasks)
    idx, goals = element_indices(), element_goals()
    pos = np.concatenate([o[:, 0:9], o[:, 18:39]], axis=1)  # robot and object positions, D4RL's first 30 numbers
    done_at: dict[str, int] = {}
    for name in goal_tasks:
        close = np.linalg.norm(pos[1:, idx[name]] - goals[name], axis=1) < 0.3  # after action t
        hits = np.nonzero(close)[0]
        if len(hits):
            done_at[name] = int(hits[0])
    end = max(done_at.values()) + 1 if len(done_at) == len(goal_tasks) else T
    rewards = np.zeros(end, np.float32)
    for t in done_at.values():
        if t < end:
            rewards[t] += 1.0
    terminated = len(done_at) == len(goal_tasks)
    dones = np.zeros(end, bool)
    dones[-1] = terminated
    obs = np.concatenate([pos[:end], np.tile(goal, (end, 1))], axis=1).astype(np.float32)
    return {"obs": obs, "actions": a[:end], "rewards": rewards, "dones": dones, "truncated": not terminated}
