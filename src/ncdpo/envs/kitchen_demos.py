"""Scripted demonstrators for Franka Kitchen's seven subtasks, and D4RL-style datasets made from them.

The controller turns an end-effector target into the env's joint-velocity action through MuJoCo's Jacobian of the
``end_effector`` site: damped least squares on the position error (plus an integral term that takes up the sag of
the position servos) and on the orientation error from the reset orientation, joints at a limit taken out of the
solve, and a null-space pull towards the reset posture. Each subtask is a short script of phases over the kitchen's
handle sites, read from the simulator:

* microwave: grasp the handle, then follow the door's arc (the target stays a few centimetres ahead of the handle,
  tangent to the hinge circle and pulled slightly towards the hinge so the grasp holds);
* kettle: push the kettle from the front, along the hob, onto the top left burner;
* light switch: from the switch's right, push it left;
* slide cabinet: from the handle's left, push it right;
* hinge cabinet: grasp the right door's handle and follow its arc, as the microwave;
* bottom / top burner: from the knob's right and below its axis, sweep left so the fingers turn the knob.

Between subtasks the arm backs away from the kitchen. Imperfection as the robosuite demonstrators' (operator skill
``better`` / ``okay`` / ``worse`` scaling the action noise ``noise`` and the target error ``offset``; ``mistake``: the
probability that a subtask's grasp or push starts off target by 4 cm, which usually fails it), so that datasets hold
failed and partial episodes.

Datasets (``ncdpo demos kitchen-complete | kitchen-partial | kitchen-mixed``), built the way D4RL built its three:

* complete: every episode demonstrates the goal sequence (microwave, kettle, light switch, slide cabinet) in order;
* partial: a third of the episodes demonstrate the goal sequence, the others four subtasks drawn from all seven
  (without the goal's four), so only some episodes solve the task;
* mixed: four subtasks drawn from all seven with at most three of the goal's (microwave, kettle, bottom burner,
  light switch), so no episode does all four.

A drawn sequence keeps its order except that the hinge cabinet goes last: its open door stands in front of the knobs,
the light switch and the slide cabinet.

An episode ends when the goal is done (``terminated``), when the script has run its sequence (a cut episode), or at
280 steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ncdpo.envs.demonstrators import SKILLS, episodes_of, run_in_workers
from ncdpo.envs.kitchen import SUBTASKS, TASKS, KitchenEnv
from ncdpo.errors import NcdpoError

DEFAULT_NOISE = 0.05
"""The operator's action noise std (joint-velocity units, x skill) of ``ncdpo demos kitchen-*``: at 0.1 even the
``okay`` operator fails most sequences; at 0.05 ``better`` / ``okay`` / ``worse`` complete about 100 / 90 / 10% of
kitchen-complete's (measured on 8 episodes each)."""
MICROWAVE_HINGE = np.array([-1.128, 0.455])
RIGHT_DOOR_HINGE = np.array([-0.224, 0.71])
ROT_WEIGHT = 0.3
ROT_GAIN = 6.0
KP = 6.0


class Controller:
    """End-effector position (and reset orientation) -> the 9-D joint-velocity action."""

    def __init__(self, env: KitchenEnv) -> None:
        import mujoco

        self.mj = mujoco
        self.m, self.d = env.sim
        self.site = mujoco.mj_name2id(self.m, mujoco.mjtObj.mjOBJ_SITE, "end_effector")
        self.rest = self.d.qpos[:7].copy()
        self.R0 = self.d.site_xmat[self.site].reshape(3, 3).copy()
        self.integral = np.zeros(3)

    def ee(self) -> np.ndarray:
        return self.d.site_xpos[self.site].copy()

    def hand(self, turn: float) -> np.ndarray:
        """The reset hand orientation turned by ``turn`` rad about the world y axis (the approach direction): 0 level,
        pi/2 upright (fingers above and below instead of left and right)."""
        c, s = np.cos(turn), np.sin(turn)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]) @ self.R0

    def rotation_error(self, turn: float) -> float:
        """Angle (rad) between the hand and orientation ``turn``."""
        E = self.hand(turn) @ self.d.site_xmat[self.site].reshape(3, 3).T
        return float(np.arccos(np.clip((np.trace(E) - 1.0) / 2.0, -1.0, 1.0)))

    def action(self, target: np.ndarray, grip: float, R: np.ndarray | None = None, vmax: float = 0.8) -> np.ndarray:
        """The action towards ``target`` with the hand at orientation ``R`` (None: the reset orientation)."""
        mj, m, d = self.mj, self.m, self.d
        err = np.asarray(target, np.float64) - self.ee()
        # integral action: always on the height (the position servos sag under gravity), and near the target only
        # across (no wind-up on the way)
        near = np.linalg.norm(err) < 0.06
        self.integral[:2] = np.clip(self.integral[:2] + 0.3 * err[:2], -0.25, 0.25) if near else self.integral[:2] * 0.8
        self.integral[2] = np.clip(self.integral[2] + 0.3 * err[2], -0.25, 0.25)
        v = KP * err + self.integral
        n = np.linalg.norm(v)
        if n > vmax:
            v *= vmax / n
        q = np.zeros(4)
        R_des = self.R0 if R is None else R
        mj.mju_mat2Quat(q, (R_des @ d.site_xmat[self.site].reshape(3, 3).T).flatten())
        w = np.zeros(3)
        mj.mju_quat2Vel(w, q, 1.0)
        jp, jr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        mj.mj_jacSite(m, d, jp, jr, self.site)
        J0 = np.vstack([jp, ROT_WEIGHT * jr])[:, :7]  # position first: the orientation rows weigh less
        lo, hi, qn = m.jnt_range[:7, 0], m.jnt_range[:7, 1], d.qpos[:7]
        free = np.ones(7, bool)
        for _ in range(3):  # joints pushed into a limit leave the solve
            J = J0 * free
            JJ = J @ J.T + 0.05**2 * np.eye(6)
            dq = J.T @ np.linalg.solve(JJ, np.concatenate([v, ROT_WEIGHT * ROT_GAIN * w]))
            dq += (np.eye(7) - J.T @ np.linalg.solve(JJ, J)) @ (0.5 * (self.rest - qn)) * free
            blocked = ((qn < lo + 0.05) & (dq < 0)) | ((qn > hi - 0.05) & (dq > 0))
            if not (blocked & free).any():
                break
            free &= ~blocked
        a = np.empty(9)
        # the env scales actions by 2 rad/s; its position servos realise about 60% of a commanded velocity in a
        # step, hence the 1.6; scaled as a whole into [-1, 1] so the direction is kept
        dq = 1.6 * dq * free / 2.0
        a[:7] = dq / max(1.0, float(np.abs(dq).max()))
        a[7:] = grip
        return a


Step = tuple[np.ndarray, float, float, float]
"""One step's (end-effector target, gripper command: 1 open, -1 closed, hand turn about the approach axis in rad
(0 level, pi/2 upright), top speed in m/s)."""
UPRIGHT = np.pi / 2
LIFT = 0.01
FAST, SLOW = 1.2, 0.3


class Script:
    """One demonstration: the subtasks' phases in sequence, each step's target read from the simulator."""

    def __init__(
        self,
        env: KitchenEnv,
        ctl: Controller,
        sequence: list[str],
        rng: np.random.Generator,
        offset: float,
        slips: set[str],
    ) -> None:
        self.env, self.ctl, self.rng = env, ctl, rng
        self.sequence, self.offset, self.slips = sequence, offset, slips
        self.steps = self._run()

    # ---------------------------------------------------------------- helpers
    def site(self, name: str) -> np.ndarray:
        return self.env.sim[1].site(name).xpos.copy()

    def ee(self) -> np.ndarray:
        return self.env.sim[1].site("end_effector").xpos.copy()

    def _err(self, task: str) -> np.ndarray:
        e = self.rng.normal(0.0, self.offset, 3) if self.offset > 0 else np.zeros(3)
        if task in self.slips:  # the operator's mistake: starting well off target
            e += np.array([0.0, 0.0, 0.04]) * (1 if self.rng.random() < 0.5 else -1)
        return e

    def move(
        self,
        target: Callable[[], np.ndarray] | np.ndarray,
        grip: float,
        tol: float,
        limit: int,
        hand: float = 0.0,
        speed: float = FAST,
    ) -> Iterator[Step]:
        for _ in range(limit):
            t = target() if callable(target) else target
            if np.linalg.norm(self.ee() - t) < tol and self.ctl.rotation_error(hand) < 0.25:
                return
            yield t, grip, hand, speed

    def hold(self, target: np.ndarray, grip: float, n: int, hand: float = 0.0) -> Iterator[Step]:
        for _ in range(n):
            yield target, grip, hand, FAST

    def until(
        self,
        step: Callable[[], np.ndarray],
        grip: float,
        done: Callable[[], bool],
        limit: int,
        extra: int = 3,
        hand: float = 0.0,
        speed: float = SLOW,
    ) -> Iterator[Step]:
        for _ in range(limit):
            if done():
                break
            yield step(), grip, hand, speed
        for _ in range(extra):  # a little further, so the subtask stays done
            yield step(), grip, hand, speed

    def retreat(self) -> Iterator[Step]:
        p = self.ee()  # back away from the kitchen before the next subtask
        yield from self.move(np.array([p[0], min(p[1] - 0.08, 0.4), max(p[2], 1.95)]), 1.0, 0.05, 12)

    # ---------------------------------------------------------------- subtasks
    def microwave(self) -> Iterator[Step]:
        yield from self._door("microhandle_site", MICROWAVE_HINGE, -1, "microwave", 0.07, -0.03)

    def hinge_cabinet(self) -> Iterator[Step]:
        yield from self._door("hinge_site2", RIGHT_DOOR_HINGE, 1, "hinge cabinet", 0.11, -0.03)

    def _door(self, handle: str, hinge: np.ndarray, sign: int, task: str, ahead: float, inward: float):
        e = self._err(task)
        h0 = self.site(handle) + e
        yield from self.move(h0 + [0.0, -0.15, 0.0], 1.0, 0.05, 50)
        yield from self.move(h0, 1.0, 0.02, 30)
        yield from self.hold(h0, -1.0, 4)
        z = h0[2]

        def follow() -> np.ndarray:
            h = self.site(handle)
            rn = (h[:2] - hinge) / np.linalg.norm(h[:2] - hinge)
            tang = sign * np.array([-rn[1], rn[0]])
            return np.array([*(h[:2] + ahead * tang + inward * rn), z])

        yield from self.until(follow, -1.0, lambda: self.env.subtask_done(task), 90)
        p = self.ee()
        yield from self.hold(p, 1.0, 3)  # let go
        yield from self.move(p + [0.0, -0.12, 0.0], 1.0, 0.03, 15)

    def kettle(self) -> Iterator[Step]:
        # the hand turned upright (fingers above and below the handle), hooked under the handle, then the kettle
        # is slid onto the top left burner (lifting it tilts it, which the goal's orientation does not allow)
        h = self.site("kettle_site") + self._err("kettle")
        up = UPRIGHT
        yield from self.move(h + [0.0, -0.15, 0.0], 1.0, 0.05, 50, up)
        yield from self.move(h + [0.0, 0.02, 0.0], 1.0, 0.02, 30, up)
        yield from self.hold(h + [0.0, 0.02, 0.0], -1.0, 4, up)
        goal = np.array([-0.22, 0.78, h[2] + LIFT])  # slid across the hob at the handle's height, nearly level
        yield from self.until(lambda: goal, -1.0, lambda: self.env.subtask_done("kettle"), 60, extra=8, hand=up)
        p = self.ee()  # open the fingers around the handle, and slide them off it backwards
        yield from self.hold(p, 1.0, 3, up)
        yield from self.move(p + [0.0, -0.15, 0.0], 1.0, 0.05, 10, up)

    def light_switch(self) -> Iterator[Step]:
        # between the burner knobs below and above: the fingers at the lever's height, pushing it left
        s = self.site("light_site") + self._err("light switch") + [0.0, 0.0, 0.008]
        yield from self.move(s + [0.08, -0.2, 0.0], -1.0, 0.05, 50)
        yield from self.move(s + [0.08, 0.0, 0.0], -1.0, 0.015, 30, speed=SLOW)
        end = s + [-0.15, -0.01, 0.0]
        yield from self.until(lambda: end, -1.0, lambda: self.env.subtask_done("light switch"), 40)
        yield from self.move(self.ee() + [0.0, -0.12, 0.0], -1.0, 0.03, 15)

    def slide_cabinet(self) -> Iterator[Step]:
        s = self.site("slide_site") + self._err("slide cabinet")
        yield from self.move(s + [-0.1, -0.15, 0.0], -1.0, 0.05, 50)
        yield from self.move(s + [-0.1, 0.0, 0.0], -1.0, 0.02, 30)
        end = s + [0.4, 0.0, 0.0]
        yield from self.until(lambda: end, -1.0, lambda: self.env.subtask_done("slide cabinet"), 50)
        yield from self.move(self.ee() + [0.0, -0.15, 0.0], -1.0, 0.03, 15)

    def _burner(self, site: str, task: str) -> Iterator[Step]:
        # grasp the knob's bar (the fingers either side of it), then turn the hand about the approach axis, which
        # is the knob's axis, as a person turns a knob
        s = self.site(site) + self._err(task) + [0.0, -0.02, 0.0]
        yield from self.move(s + [0.0, -0.12, 0.0], 1.0, 0.04, 50)
        yield from self.move(s, 1.0, 0.015, 30, speed=SLOW)
        yield from self.hold(s, -1.0, 4)
        for k in range(1, 13):  # turn in steps to 1.2 rad, stopping once the burner is on
            if self.env.subtask_done(task):
                break
            yield from self.hold(s, -1.0, 2, hand=0.1 * k)
        turn = 0.1 * k
        yield from self.hold(s, 1.0, 3, hand=turn)
        yield from self.move(s + [0.0, -0.12, 0.0], 1.0, 0.04, 15, hand=turn)

    def bottom_burner(self) -> Iterator[Step]:
        yield from self._burner("knob2_site", "bottom burner")

    def top_burner(self) -> Iterator[Step]:
        yield from self._burner("knob4_site", "top burner")

    def _run(self) -> Iterator[Step]:
        for task in self.sequence:
            yield from getattr(self, task.replace(" ", "_"))()
            yield from self.retreat()


# ---------------------------------------------------------------------------------------------- sequences
def sequences(task: str, episodes: int, rng: np.random.Generator) -> list[list[str]]:
    """The subtask sequence of each episode of a ``task`` dataset (see the module docstring)."""
    goal = list(TASKS[task])
    if task == "kitchen-complete":
        return [list(goal) for _ in range(episodes)]
    out = []
    for i in range(episodes):
        if task == "kitchen-partial" and i % 3 == 0:
            out.append(list(goal))
            continue
        while True:
            seq = [str(s) for s in rng.choice(SUBTASKS, 4, replace=False)]
            if sum(s in goal for s in seq) < 4:
                # the open right hinge door stands in front of the knobs, the light switch and the slide cabinet,
                # so an operator leaves it for last
                out.append(sorted(seq, key=lambda t: t == "hinge cabinet"))
                break
    return out


def run_episode(
    env: KitchenEnv, seed: int, sequence: list[str], noise: float, offset: float, skill: str = "", mistake: float = 0.0
) -> dict[str, Any]:
    """One demonstration on ``env`` reset with ``seed``: observations, actions, rewards, what it completed."""
    rng = np.random.default_rng(seed)
    skill = skill or str(rng.choice(list(SKILLS)))
    scale = SKILLS[skill]
    slips = {t for t in sequence if rng.random() < mistake * scale}
    obs, _ = env.reset(seed=seed)
    ctl = Controller(env)
    script = Script(env, ctl, sequence, rng, offset * scale, slips)
    obs_l, act_l, rew_l = [], [], []
    terminated = truncated = False
    info: dict[str, Any] = {"completed": [], "is_success": False}
    done_sub: dict[str, bool] = {}
    for target, grip, hand, speed in script.steps:
        a = ctl.action(target, grip, ctl.hand(hand), speed)
        a[:7] = np.clip(a[:7] + rng.normal(0.0, noise * scale, 7), -1.0, 1.0)
        obs_l.append(obs)
        act_l.append(a.astype(np.float32))
        obs, r, terminated, truncated, info = env.step(a)
        rew_l.append(r)
        for t in SUBTASKS:
            done_sub[t] = done_sub.get(t, False) or env.subtask_done(t)
        if terminated or truncated:
            break
    return {
        "obs": np.asarray(obs_l, np.float32),
        "actions": np.asarray(act_l, np.float32),
        "rewards": np.asarray(rew_l, np.float32),
        "terminated": bool(terminated),
        "success": bool(info["is_success"]),
        "completion": len(info["completed"]) / 4,
        "sequence": list(sequence),
        "subtasks_done": {t: bool(done_sub.get(t, False)) for t in sequence},
        "skill": skill,
        "slips": sorted(slips),
        "seed": seed,
    }


def _worker(args: tuple[str, list[tuple[int, list[str]]], float, float, str, float]) -> list[dict[str, Any]]:
    task, jobs, noise, offset, skill, mistake = args
    env = KitchenEnv(task)
    try:
        return [run_episode(env, s, seq, noise, offset, skill, mistake) for s, seq in jobs]
    finally:
        env.close()


def collect_kitchen_demos(
    task: str,
    episodes: int,
    noise: float = DEFAULT_NOISE,
    offset: float = 0.01,
    seed: int = 0,
    workers: int = 1,
    skill: str = "",
    mistake: float = 0.2,
) -> Any:
    """``episodes`` demonstrations of a kitchen task's dataset (reset seeds ``seed``, ``seed + 1``, ...) as a
    :class:`~ncdpo.data.dataset.Dataset`; the result does not depend on ``workers``."""
    from ncdpo.data.dataset import Dataset

    if task not in TASKS:
        raise NcdpoError(f"unknown kitchen task '{task}' (known: {', '.join(TASKS)})")
    if episodes < 1:
        raise NcdpoError(f"--episodes must be >= 1 (got {episodes})")
    if noise < 0 or offset < 0 or not 0 <= mistake <= 1:
        raise NcdpoError(
            f"--noise and --offset must be >= 0 and --mistake in [0, 1] (got {noise}, {offset}, {mistake})"
        )
    if skill and skill not in SKILLS:
        raise NcdpoError(f"--skill must be one of {', '.join(SKILLS)} (got '{skill}')")
    seqs = sequences(task, episodes, np.random.default_rng(seed))
    jobs = [(seed + i, seqs[i]) for i in range(episodes)]
    workers = max(1, min(workers, episodes))
    results = run_in_workers(_worker, [(task, jobs[i::workers], noise, offset, skill, mistake) for i in range(workers)])
    eps = episodes_of(results)
    meta = {
        "source": "scripted kitchen demonstrator",
        "task": task,
        "noise": noise,
        "offset": offset,
        "mistake": mistake,
        "seed": seed,
        "skill": skill or "mixed",
        "successes": [r["success"] for r in results],
        "completions": [r["completion"] for r in results],
        "sequences": [r["sequence"] for r in results],
        "subtasks_done": [r["subtasks_done"] for r in results],
        "skills": [r["skill"] for r in results],
        "slips": [r["slips"] for r in results],
        "success_rate": float(np.mean([r["success"] for r in results])),
    }
    low, high = -np.ones(9, np.float32), np.ones(9, np.float32)
    return Dataset(eps, task, low, high, meta)
