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

Demonstrators exist for ``lift``, ``can`` and ``square`` (and their ``-dense`` variants); ``square``
grasps the nut by its handle with the fingers across it and places it by keeping the nut, as it hangs,
centred over the peg. None for ``transport`` (two arms, a lid, a hand-over and a trash bin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncdpo.errors import NcdpoError

SKILLS = {"better": 0.5, "okay": 1.0, "worse": 2.0}
DEMO_TASKS = ("lift", "can", "square")
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
    yaw: float = 0.0
    """Turn of the gripper about the vertical axis relative to the reset pose (radians)."""


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
            raise NcdpoError(f"no scripted demonstrator for task '{self.env.task}' (available: {', '.join(DEMO_TASKS)})")
        if not self.skill:
            self.skill = str(self.rng.choice(list(SKILLS)))
        s = SKILLS[self.skill]
        self.noise_std = self.noise * s
        self.grasp_offset = np.append(self.rng.normal(0.0, self.offset * s, 2), 0.0)
        self.speed = float(self.rng.uniform(0.6, 1.0))
        self.slip = ""  # the episode's mistake, if any: "early" (closes above the object) or "drop" (lets go in transit)
        if self.rng.random() < min(1.0, self.mistake * s):
            self.slip = "drop" if self.env.task == "can" and self.rng.random() < 0.5 else "early"
        obs = self.env.last_raw_obs
        self.down = _rotation(obs["robot0_eef_quat"])  # the reset pose points the gripper down
        self.phase_i, self.steps_in_phase = 0, 0
        self.phases = self._plan()

    # ------------------------------------------------------------------------------------------ plans
    def _object(self) -> np.ndarray:
        obs = self.env.last_raw_obs
        return np.asarray(obs["cube_pos"] if self.env.task == "lift" else obs["Can_pos"], np.float64)

    def _plan(self) -> list[Phase]:
        if self.env.task == "square":
            return self._plan_square()
        obj = self._object()
        g = obj + self.grasp_offset
        if self.env.task == "lift":
            z = 0.035 if self.slip == "early" else -0.005  # "early": the fingers close above the cube
            return [
                Phase("approach", g + [0, 0, 0.08], -1.0, tol=0.015),
                Phase("descend", g + [0, 0, z], -1.0, tol=0.008),
                Phase("grasp", g + [0, 0, z], 1.0, tol=1.0, min_steps=8),
                Phase("lift", g + [0, 0, 0.20], 1.0, tol=0.01, max_steps=200),
            ]
        rs = self.env.env
        goal = rs.target_bin_placements[rs.object_to_id["can"]].astype(np.float64)
        carry_z = max(obj[2], goal[2]) + 0.20
        z = 0.08 if self.slip == "early" else 0.0
        mid = np.array([(g[0] + goal[0]) / 2, (g[1] + goal[1]) / 2, carry_z])
        drop = [Phase("carry", mid, 1.0, tol=0.035), Phase("drop", mid, -1.0, tol=1.0, min_steps=10)] if self.slip == "drop" else []
        return [
            Phase("approach", g + [0, 0, 0.08], -1.0, tol=0.015),
            Phase("descend", g + [0, 0, z], -1.0, tol=0.008),
            Phase("grasp", g + [0, 0, z], 1.0, tol=1.0, min_steps=8),
            Phase("lift", np.array([g[0], g[1], carry_z]), 1.0, tol=0.03),
            *drop,
            Phase("carry", np.array([goal[0], goal[1], carry_z]), float(-1.0 if drop else 1.0), tol=0.035, max_steps=100),
            Phase("lower", np.array([goal[0], goal[1], goal[2] + 0.15]), 1.0, tol=0.035),
            Phase("settle", np.array([goal[0], goal[1], goal[2] + 0.15]), 1.0, tol=1.0, min_steps=4),
            Phase("release", np.array([goal[0], goal[1], goal[2] + 0.15]), -1.0, tol=1.0, min_steps=12),
            # up and back towards the robot (the target compartment is near the edge of the arm's reach)
            Phase("retreat", np.array([goal[0] - 0.1, goal[1] - 0.1, goal[2] + 0.25]), -1.0, tol=0.01, max_steps=200),
        ]

    def _plan_square(self) -> list[Phase]:
        """Grasp the square nut by its handle (fingers across it), carry it over its peg keeping the handle's
        offset, lower it around the peg and let go."""
        rs = self.env.env
        site = rs.sim.model.site_name2id(rs.nuts[0].important_sites["handle"])
        peg = rs.sim.data.body_xpos[rs.peg1_body_id].astype(np.float64)
        table = float(rs.table_offset[2])
        obs = self.env.last_raw_obs
        d = rs.sim.data.site_xpos[site] - np.asarray(obs["SquareNut_pos"], np.float64)
        yaw = float(np.arctan2(d[1], d[0]))  # the handle points along the nut's x axis
        yaw = (yaw + np.pi / 2) % np.pi - np.pi / 2  # the gripper is symmetric: turn at most 90 degrees
        off = self.grasp_offset
        z = 0.03 if self.slip == "early" else 0.0

        def handle(dz: float):  # the handle as it is now (the nut settles on the table after reset)
            return lambda: rs.sim.data.site_xpos[site].astype(np.float64) + off + [0, 0, dz]

        def lift_to(z: float):
            return lambda: np.append(rs.sim.data.site_xpos[site][:2], table + z)

        def over_peg(z: float):  # the gripper where the nut, as it hangs now, is centred over the peg
            def target() -> np.ndarray:
                o = self.env.last_raw_obs
                rel = np.asarray(o["robot0_eef_pos"], np.float64) - np.asarray(o["SquareNut_pos"], np.float64)
                return np.array([peg[0] + rel[0], peg[1] + rel[1], table + z])
            return target

        return [
            Phase("approach", handle(0.08), -1.0, tol=0.015, yaw=yaw),
            Phase("descend", handle(z), -1.0, tol=0.01, max_steps=30, yaw=yaw),
            Phase("grasp", handle(z), 1.0, tol=1.0, min_steps=10, yaw=yaw),
            Phase("lift", lift_to(0.25), 1.0, tol=0.03, yaw=yaw),
            Phase("carry", over_peg(0.25), 1.0, tol=0.012, max_steps=80, yaw=yaw),
            Phase("lower", over_peg(0.035), 1.0, tol=0.01, max_steps=40, yaw=yaw),
            Phase("release", over_peg(0.035), -1.0, tol=1.0, min_steps=12, yaw=yaw),
            Phase("retreat", over_peg(0.25), -1.0, tol=0.01, max_steps=200, yaw=yaw),
        ]

    # ------------------------------------------------------------------------------------------ acting
    @property
    def phase(self) -> Phase:
        return self.phases[self.phase_i]

    def act(self) -> np.ndarray:
        """The action for the current observation (``env.last_raw_obs``), in the env's [-1, 1] units."""
        obs = self.env.last_raw_obs
        eef = np.asarray(obs["robot0_eef_pos"], np.float64)
        ph = self.phase
        err = _target(ph) - eef
        done = np.linalg.norm(err) < ph.tol and self.steps_in_phase >= ph.min_steps
        if (done or self.steps_in_phase >= ph.max_steps) and self.phase_i < len(self.phases) - 1:
            self.phase_i += 1
            self.steps_in_phase = 0
            ph = self.phase
            err = _target(ph) - eef
        self.steps_in_phase += 1
        pos = np.clip(err / _POS_SCALE * _GAIN * self.speed, -1.0, 1.0)
        from scipy.spatial.transform import Rotation

        target_rot = Rotation.from_euler("z", ph.yaw) * self.down
        rot_err = (target_rot * _rotation(obs["robot0_eef_quat"]).inv()).as_rotvec()
        rot = np.clip(rot_err / _ROT_SCALE, -1.0, 1.0)
        arm = np.concatenate([pos, rot])
        if self.noise_std > 0:
            arm = arm + self.rng.normal(0.0, self.noise_std, arm.shape)
        return np.clip(np.append(arm, ph.grip), -1.0, 1.0).astype(np.float32)


def _target(ph: Phase) -> np.ndarray:
    return np.asarray(ph.target() if callable(ph.target) else ph.target, np.float64)


def _rotation(quat_xyzw: np.ndarray) -> Any:
    from scipy.spatial.transform import Rotation

    return Rotation.from_quat(np.asarray(quat_xyzw, np.float64))


# ---------------------------------------------------------------------------------------------- datasets
def run_episode(env: Any, seed: int, noise: float, offset: float, skill: str = "", mistake: float = 0.0) -> dict[str, Any]:
    """One demonstrator episode on ``env`` reset with ``seed``: observations, actions, rewards, success."""
    env.reset(seed=seed)
    demo = Demonstrator(env, np.random.default_rng(seed), noise, offset, mistake, skill)
    obs_l, act_l, rew_l = [], [], []
    obs = env._flat(env.last_raw_obs)
    while True:
        a = demo.act()
        obs_l.append(obs)
        act_l.append(a)
        obs, r, terminated, truncated, info = env.step(a)
        rew_l.append(r)
        if terminated or truncated:
            break
    return {"obs": np.asarray(obs_l, np.float32), "actions": np.asarray(act_l, np.float32),
            "rewards": np.asarray(rew_l, np.float32), "terminated": bool(terminated), "success": bool(info["is_success"]),
            "skill": demo.skill, "slip": demo.slip, "seed": seed}


def _worker(args: tuple[str, list[int], float, float, str, float]) -> list[dict[str, Any]]:
    from ncdpo.envs.registry import TASKS

    task, seeds, noise, offset, skill, mistake = args
    env = TASKS[task].make()
    try:
        return [run_episode(env, s, noise, offset, skill, mistake) for s in seeds]
    finally:
        env.close()


def collect_demos(task: str, episodes: int, noise: float = 0.1, offset: float = 0.01, seed: int = 0,
                  workers: int = 1, skill: str = "", mistake: float = 0.2) -> Any:
    """``episodes`` demonstrator episodes (reset seeds ``seed``, ``seed + 1``, ...) as a :class:`Dataset`.

    Episodes run in ``workers`` processes; the result does not depend on how many.
    """
    from ncdpo.data.dataset import Dataset, Episode
    from ncdpo.envs.registry import TASKS

    if task not in TASKS or task.split("-")[0] not in DEMO_TASKS:
        raise NcdpoError(f"no scripted demonstrator for task '{task}' (available: {', '.join(DEMO_TASKS)} and their -dense variants)")
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
    parts = [(task, seeds[i::workers], noise, offset, skill, mistake) for i in range(workers)]
    if workers == 1:
        results = _worker(parts[0])
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            results = [r for part in ex.map(_worker, parts) for r in part]
    results.sort(key=lambda r: r["seed"])
    eps = []
    for r in results:
        dones = np.zeros(len(r["actions"]), bool)
        dones[-1] = r["terminated"]
        eps.append(Episode(r["obs"], r["actions"], r["rewards"], dones, not r["terminated"]))
    act_dim = eps[0].actions.shape[1]  # the OSC_POSE controller's actions are in [-1, 1]
    meta = {"source": "scripted demonstrator", "task": task, "noise": noise, "offset": offset, "mistake": mistake,
            "seed": seed, "skill": skill or "mixed", "successes": [r["success"] for r in results],
            "skills": [r["skill"] for r in results], "slips": [r["slip"] for r in results], "success_rate": float(np.mean([r["success"] for r in results]))}
    return Dataset(eps, task, -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32), meta)
