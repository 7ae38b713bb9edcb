"""Scripted demonstrators for the manipulation tasks, with adjustable noise and imperfection.

A demonstrator is a small state machine over phases (approach above the object, descend, close the
gripper, lift, carry, lower, release, retreat). Each phase has a target gripper pose, read from the
simulator's privileged state (object poses, the target bin); the action moves the end effector towards it
with the OSC_POSE controller (a proportional step, clipped to the controller's [-1, 1] range) and keeps the
gripper pointing down, turned to the object's yaw where that matters.

Imperfection, robomimic "multi-human"-like: every episode draws an operator from three skill levels
(``better``, ``okay``, ``worse``, scale 0.5, 1 and 2) that multiplies

* ``noise``: the std of Gaussian noise added to the arm part of every action, and
* ``offset``: the std (metres) of a horizontal error in where the operator grasps,

* ``mistake``: the probability that the operator makes one of the mistakes people make: closing the
  gripper above the object instead of around it (``early``), or, on Can, letting go of the can half way
  to the bin (``drop``),

and a speed in [0.6, 1]. Noise and grasp errors are zero-mean, so cloning averages much of them away; the
mistakes are a distinct mode of behaviour in the same states, which a diffusion policy reproduces. A
dataset keeps the failed episodes, so a policy cloned from it is clearly imperfect. ``noise=0, offset=0,
mistake=0`` is the clean expert.

Demonstrators exist for ``lift``, ``can``, ``square`` (and their ``-dense`` variants) and ``transport``;
``square`` grasps the nut by its handle with the fingers across it and places it by keeping the nut, as it
hangs, centred over the peg. ``transport`` runs one script per arm, synchronised at the hand-over: robot 0
lifts the lid off the start bin and puts it on the table, robot 1 meanwhile moves the trash cube from the
target bin into the trash bin; robot 0 then picks the hammer out of the start bin by its handle and holds
it out over the gap between the tables, handle along the line between the robots; robot 1 grasps the
handle's other half, robot 0 lets go, and robot 1 carries the hammer over the target bin and drops it in.
Each arm returns to its reset pose between sub-tasks (there the controller's null-space posture term
pulls the joints back; without it the wrist drifts into a joint limit). Its mistakes: robot 0 closes its
gripper above the hammer (``early``), or robot 1 lets go of the hammer half way to the target bin
(``drop``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ncdpo.errors import NcdpoError

SKILLS = {"better": 0.5, "okay": 1.0, "worse": 2.0}
DEMO_TASKS = ("lift", "can", "square", "transport")
_POS_SCALE = 0.05  # OSC_POSE: an action of 1 moves the position goal 5 cm
_ROT_SCALE = 0.5  # ... and turns the orientation goal 0.5 rad
_GAIN = 2.5  # proportional gain on the position error (in units of the controller step)


@dataclass
class Phase:
    name: str
    target: Any
    """Gripper target position (world frame), or a function of nothing returning it (re-read every step)."""
    grip: float
    """Gripper command: -1 open, 1 closed."""
    tol: float = 0.01
    """The phase ends when the position error is below this (metres) ..."""
    min_steps: int = 0
    """... and at least this many steps were spent in it."""
    max_steps: int = 60
    """The phase ends after this many steps in any case."""
    yaw: Any = 0.0
    """Turn of the gripper about the vertical axis relative to the reset pose (radians), or a function of
    nothing returning it."""
    until: Callable[[], bool] | None = None
    """The phase also waits for this condition (the other arm's progress, on ``transport``)."""
    vmax: float = 1.0
    """Largest position command (in the controller's [-1, 1] units): a slower carry keeps a held object."""


class _Arm:
    """One arm's end effector and how a world-frame motion maps onto its OSC_POSE action (robosuite reads
    the deltas in the robot's base frame; the two ``transport`` robots are turned by +-90 degrees)."""

    def __init__(self, env: Any, i: int) -> None:
        from scipy.spatial.transform import Rotation

        self.env, self.i = env, i
        rs = env.env
        body = rs.sim.model.body_name2id(rs.robots[i].robot_model.root_body)
        mat = rs.sim.data.body_xmat[body].reshape(3, 3).copy()
        self.base = None if np.allclose(mat, np.eye(3)) else Rotation.from_matrix(mat)
        self.down = _rotation(env.last_raw_obs[f"robot{i}_eef_quat"])  # the reset pose points the gripper down

    def eef(self) -> np.ndarray:
        return np.asarray(self.env.last_raw_obs[f"robot{self.i}_eef_pos"], np.float64)

    def to_base(self, v: np.ndarray) -> np.ndarray:
        return v if self.base is None else self.base.inv().apply(v)


@dataclass
class Demonstrator:
    """Scripted policy for one episode of a manipulation task; call :meth:`act` once per control step."""

    env: Any
    """The :class:`~ncdpo.envs.manipulation.RobosuiteEnv` (its robosuite env gives the privileged state)."""
    rng: np.random.Generator
    """The episode's generator (operator, grasp error, mistake, action noise)."""
    noise: float = 0.1
    """Std of the Gaussian noise on the arm part of each action, before the skill scale."""
    offset: float = 0.01
    """Std (metres) of the horizontal grasp error, before the skill scale."""
    mistake: float = 0.2
    """Probability of a mistake in the episode, before the skill scale."""
    skill: str = field(default="")
    """The episode's operator (drawn from :data:`SKILLS` when empty)."""

    def __post_init__(self) -> None:
        if self.env.task not in DEMO_TASKS:
            raise NcdpoError(
                f"no scripted demonstrator for task '{self.env.task}' (available: {', '.join(DEMO_TASKS)})"
            )
        if not self.skill:
            self.skill = str(self.rng.choice(list(SKILLS)))
        s = SKILLS[self.skill]
        self.noise_std = self.noise * s
        self.grasp_offset = np.append(self.rng.normal(0.0, self.offset * s, 2), 0.0)
        self.speed = float(self.rng.uniform(0.6, 1.0))
        self.slip = (
            ""  # the episode's mistake, if any: "early" (closes above the object) or "drop" (lets go in transit)
        )
        if self.rng.random() < min(1.0, self.mistake * s):
            self.slip = "drop" if self.env.task in ("can", "transport") and self.rng.random() < 0.5 else "early"
        self.arms = [_Arm(self.env, i) for i in range(getattr(self.env, "n_robots", 1))]
        self.down = self.arms[0].down
        from ncdpo.envs import demo_plans

        plans = demo_plans.plan_transport(self) if self.env.task == "transport" else [demo_plans.plan(self)]
        self.plans: list[list[Phase]] = plans
        """One list of phases per arm."""
        self.phase_k = [0] * len(plans)
        self.steps_k = [0] * len(plans)

    # ------------------------------------------------------------------------------------------ acting
    @property
    def phases(self) -> list[Phase]:
        """Arm 0's phases."""
        return self.plans[0]

    @property
    def phase(self) -> Phase:
        """Arm 0's current phase."""
        return self.arm_phase(0)

    def arm_phase(self, i: int) -> Phase:
        return self.plans[i][self.phase_k[i]]

    def act(self) -> np.ndarray:
        """The action for the current observation (``env.last_raw_obs``), in the env's [-1, 1] units: per
        arm, 3 position and 3 orientation deltas and a gripper command."""
        return np.concatenate([self._act_arm(i) for i in range(len(self.plans))]).astype(np.float32)

    def _act_arm(self, i: int) -> np.ndarray:
        arm, plan = self.arms[i], self.plans[i]
        obs = self.env.last_raw_obs
        eef = arm.eef()
        ph = plan[self.phase_k[i]]
        err = _target(ph) - eef
        done = np.linalg.norm(err) < ph.tol and self.steps_k[i] >= ph.min_steps and (ph.until is None or ph.until())
        if (done or self.steps_k[i] >= ph.max_steps) and self.phase_k[i] < len(plan) - 1:
            self.phase_k[i] += 1
            self.steps_k[i] = 0
            ph = plan[self.phase_k[i]]
            err = _target(ph) - eef
        self.steps_k[i] += 1
        pos = np.clip(arm.to_base(err) / _POS_SCALE * _GAIN * self.speed, -1.0, 1.0)
        if ph.vmax < 1.0 and np.abs(pos).max() > ph.vmax:
            pos = pos * (ph.vmax / np.abs(pos).max())
        from scipy.spatial.transform import Rotation

        yaw = ph.yaw() if callable(ph.yaw) else ph.yaw
        target_rot = Rotation.from_euler("z", yaw) * arm.down
        rot_err = (target_rot * _rotation(obs[f"robot{i}_eef_quat"]).inv()).as_rotvec()
        rot = np.clip(arm.to_base(rot_err) / _ROT_SCALE, -1.0, 1.0)
        a = np.concatenate([pos, rot])
        if self.noise_std > 0:
            a = a + self.rng.normal(0.0, self.noise_std, a.shape)
        return np.clip(np.append(a, ph.grip), -1.0, 1.0)


def _wrap_yaw(yaw: float) -> float:
    """The gripper is symmetric: a turn of at most 90 degrees either way reaches any finger direction."""
    return (yaw + np.pi / 2) % np.pi - np.pi / 2


def _target(ph: Phase) -> np.ndarray:
    return np.asarray(ph.target() if callable(ph.target) else ph.target, np.float64)


def _rotation(quat_xyzw: np.ndarray) -> Any:
    from scipy.spatial.transform import Rotation

    return Rotation.from_quat(np.asarray(quat_xyzw, np.float64))


# ---------------------------------------------------------------------------------------------- datasets
def run_episode(
    env: Any, seed: int, noise: float, offset: float, skill: str = "", mistake: float = 0.0
) -> dict[str, Any]:
    """One demonstrator episode on ``env`` reset with ``seed``: observations, actions, rewards, success."""
    env.reset(seed=seed)
    demo = Demonstrator(env, np.random.default_rng(seed), noise, offset, mistake, skill)
    obs_l, act_l, rew_l = [], [], []
    obs = env.current_obs()
    while True:
        a = demo.act()
        obs_l.append(obs)
        act_l.append(a)
        obs, r, terminated, truncated, info = env.step(a)
        rew_l.append(r)
        if terminated or truncated:
            break
    from ncdpo.observations import obs_stack

    return {
        "obs": obs_stack(obs_l) if isinstance(obs_l[0], dict) else np.asarray(obs_l, np.float32),
        "actions": np.asarray(act_l, np.float32),
        "rewards": np.asarray(rew_l, np.float32),
        "terminated": bool(terminated),
        "success": bool(info["is_success"]),
        "skill": demo.skill,
        "slip": demo.slip,
        "seed": seed,
    }


def _worker(args: tuple[str, list[int], float, float, str, float]) -> list[dict[str, Any]]:
    from ncdpo.envs.registry import TASKS

    task, seeds, noise, offset, skill, mistake = args
    env = TASKS[task].make()
    try:
        return [run_episode(env, s, noise, offset, skill, mistake) for s in seeds]
    finally:
        env.close()


def run_in_workers(worker: Callable[[Any], list[dict[str, Any]]], parts: list[Any]) -> list[dict[str, Any]]:
    """``worker(part)`` for every part, in this process (one part) or one spawned process each; the episodes
    sorted by their reset seed, so the result does not depend on the number of parts."""
    if len(parts) == 1:
        results = worker(parts[0])
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(len(parts), mp_context=mp.get_context("spawn")) as ex:
            results = [r for part in ex.map(worker, parts) for r in part]
    return sorted(results, key=lambda r: r["seed"])


def episodes_of(results: list[dict[str, Any]]) -> list[Any]:
    """Demonstration results as :class:`~ncdpo.data.dataset.Episode` s (``dones`` on a terminated episode's last step,
    any other episode cut)."""
    from ncdpo.data.dataset import Episode

    eps = []
    for r in results:
        dones = np.zeros(len(r["actions"]), bool)
        dones[-1] = r["terminated"]
        eps.append(Episode(r["obs"], r["actions"], r["rewards"], dones, not r["terminated"]))
    return eps


def collect_demos(
    task: str,
    episodes: int,
    noise: float = 0.1,
    offset: float = 0.01,
    seed: int = 0,
    workers: int = 1,
    skill: str = "",
    mistake: float = 0.2,
) -> Any:
    """``episodes`` demonstrator episodes (reset seeds ``seed``, ``seed + 1``, ...) as a :class:`Dataset`.

    Episodes run in ``workers`` processes; the result does not depend on how many.
    """
    from ncdpo.data.dataset import Dataset
    from ncdpo.envs.registry import TASKS

    if task not in TASKS or task.split("-")[0] not in DEMO_TASKS:
        raise NcdpoError(
            f"no scripted demonstrator for task '{task}' (available: {', '.join(DEMO_TASKS)} and their -dense variants)"
        )
    if episodes < 1:
        raise NcdpoError(f"--episodes must be >= 1 (got {episodes})")
    if noise < 0 or offset < 0:
        raise NcdpoError(f"--noise and --offset must be >= 0 (got {noise}, {offset})")
    if not 0 <= mistake <= 1:
        raise NcdpoError(f"--mistake must be a probability in [0, 1] (got {mistake})")
    if skill and skill not in SKILLS:
        raise NcdpoError(f"--skill must be one of {', '.join(SKILLS)} (got '{skill}')")
    seeds = [seed + i for i in range(episodes)]
    workers = max(1, min(workers, episodes))
    results = run_in_workers(
        _worker, [(task, seeds[i::workers], noise, offset, skill, mistake) for i in range(workers)]
    )
    eps = episodes_of(results)
    act_dim = eps[0].actions.shape[1]  # the OSC_POSE controller's actions are in [-1, 1]
    meta = {
        "source": "scripted demonstrator",
        "task": task,
        "noise": noise,
        "offset": offset,
        "mistake": mistake,
        "seed": seed,
        "skill": skill or "mixed",
        "successes": [r["success"] for r in results],
        "skills": [r["skill"] for r in results],
        "slips": [r["slip"] for r in results],
        "success_rate": float(np.mean([r["success"] for r in results])),
    }
    return Dataset(eps, task, -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32), meta)
