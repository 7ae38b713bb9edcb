"""The scripted demonstrators' plans: one list of :class:`~ncdpo.envs.demonstrators.Phase` per arm and task,
read from the simulator's privileged state at the start of an episode (see :mod:`ncdpo.envs.demonstrators`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from ncdpo.envs.demonstrators import Phase, _wrap_yaw


def object_pos(dem: Any) -> np.ndarray:
    obs = dem.env.last_raw_obs
    return np.asarray(obs["cube_pos"] if dem.env.task == "lift" else obs["Can_pos"], np.float64)


def plan(dem: Any) -> list[Phase]:
    if dem.env.task == "square":
        return plan_square(dem)
    obj = object_pos(dem)
    g = obj + dem.grasp_offset
    if dem.env.task == "lift":
        z = 0.035 if dem.slip == "early" else -0.005  # "early": the fingers close above the cube
        return [
            Phase("approach", g + [0, 0, 0.08], -1.0, tol=0.015),
            Phase("descend", g + [0, 0, z], -1.0, tol=0.008),
            Phase("grasp", g + [0, 0, z], 1.0, tol=1.0, min_steps=8),
            Phase("lift", g + [0, 0, 0.20], 1.0, tol=0.01, max_steps=200),
        ]
    rs = dem.env.env
    goal = rs.target_bin_placements[rs.object_to_id["can"]].astype(np.float64)
    carry_z = max(obj[2], goal[2]) + 0.20
    z = 0.08 if dem.slip == "early" else 0.0
    mid = np.array([(g[0] + goal[0]) / 2, (g[1] + goal[1]) / 2, carry_z])
    drop = (
        [Phase("carry", mid, 1.0, tol=0.035), Phase("drop", mid, -1.0, tol=1.0, min_steps=10)]
        if dem.slip == "drop"
        else []
    )
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


def plan_square(dem: Any) -> list[Phase]:
    """Grasp the square nut by its handle (fingers across it), carry it over its peg keeping the handle's
    offset, lower it around the peg and let go."""
    rs = dem.env.env
    site = rs.sim.model.site_name2id(rs.nuts[0].important_sites["handle"])
    peg = rs.sim.data.body_xpos[rs.peg1_body_id].astype(np.float64)
    table = float(rs.table_offset[2])
    obs = dem.env.last_raw_obs
    d = rs.sim.data.site_xpos[site] - np.asarray(obs["SquareNut_pos"], np.float64)
    yaw = float(np.arctan2(d[1], d[0]))  # the handle points along the nut's x axis
    yaw = _wrap_yaw(yaw)
    off = dem.grasp_offset
    z = 0.03 if dem.slip == "early" else 0.0

    def handle(dz: float):  # the handle as it is now (the nut settles on the table after reset)
        return lambda: rs.sim.data.site_xpos[site].astype(np.float64) + off + [0, 0, dz]

    def lift_to(z: float):
        return lambda: np.append(rs.sim.data.site_xpos[site][:2], table + z)

    def over_peg(z: float):  # the gripper where the nut, as it hangs now, is centred over the peg
        def target() -> np.ndarray:
            o = dem.env.last_raw_obs
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


def plan_transport(dem: Any) -> list[list[Phase]]:
    """Two scripts (robot 0, robot 1) that wait for each other at the hand-over (module docstring)."""
    g = _transport_geometry(dem)
    return [_transport_robot0(g), _transport_robot1(g)]


def _transport_geometry(dem: Any) -> SimpleNamespace:
    """Where things are at reset, and the moving targets (closures over the simulator state) both scripts use."""
    rs = dem.env.env
    d = rs.sim.data
    pay = rs.sim.model.body_name2id("payload_root")
    trash_id = rs.sim.model.body_name2id("trash_main")
    obs = dem.env.last_raw_obs
    target_bin = np.asarray(obs["target_bin_pos"], np.float64)
    trash_bin = np.asarray(obs["trash_bin_pos"], np.float64)
    lid = np.asarray(obs["lid_handle_pos"], np.float64) + dem.grasp_offset
    trash = d.body_xpos[trash_id].astype(np.float64) + dem.grasp_offset
    off = dem.grasp_offset

    def axis() -> np.ndarray:  # the hammer handle's axis (its body z), pointing toward robot 1 (+y)
        z = d.body_xmat[pay].reshape(3, 3)[:, 2].astype(np.float64)
        return z if z[1] >= 0 else -z

    def across() -> float:  # the yaw that puts the fingers (world x at reset) across the handle
        a = axis()
        return _wrap_yaw(float(np.arctan2(a[1], a[0])) - np.pi / 2)

    def handle(s: float, dz: float = 0.0, o: Any = 0.0):  # a point on the handle, s metres from its centre, + o
        return lambda: d.body_xpos[pay].astype(np.float64) + s * axis() + o + [0, 0, dz]

    def over_bin(z: float):  # robot 1's gripper where the hammer, as it hangs, is centred over the target bin
        def target() -> np.ndarray:
            rel = dem.arms[1].eef() - d.body_xpos[pay]
            return np.array([target_bin[0] + rel[0], target_bin[1] + rel[1], z])

        return target

    def phase(i: int) -> str:
        return dem.arm_phase(i).name

    yaw = across()
    s0, s1 = -0.06, 0.06  # robot 0 holds the handle's half nearer to it, robot 1 the other
    at = np.array([0.0, 0.0, 1.0])  # the handle's centre at the hand-over, over the gap between the tables
    home0, home1 = np.array([0.0, -0.35, 1.05]), np.array([0.0, 0.35, 1.05])
    lid_down = np.array([-0.2, lid[1], 0.9])  # the lid goes on the table beside the start bin
    trash_drop = trash_bin + [-0.05, -0.05, 0.2]
    ham = handle(s0, o=off)()
    z_grasp = 0.03 if dem.slip == "early" else 0.0
    top = target_bin[2] + 0.25
    drop = dem.slip == "drop"
    return SimpleNamespace(
        d=d,
        pay=pay,
        target_bin=target_bin,
        trash_bin=trash_bin,
        lid=lid,
        trash=trash,
        off=off,
        axis=axis,
        across=across,
        handle=handle,
        over_bin=over_bin,
        phase=phase,
        yaw=yaw,
        s0=s0,
        s1=s1,
        at=at,
        home0=home0,
        home1=home1,
        lid_down=lid_down,
        trash_drop=trash_drop,
        ham=ham,
        z_grasp=z_grasp,
        top=top,
        drop=drop,
    )


def _transport_robot0(g: SimpleNamespace) -> list[Phase]:
    """Robot 0: the lid onto the table, then the hammer out of the start bin and over to robot 1."""
    return [
        Phase("lid_approach", g.lid + [0, 0, 0.08], -1.0, tol=0.015),
        Phase("lid_descend", g.lid, -1.0, tol=0.008),
        Phase("lid_grasp", g.lid, 1.0, tol=1.0, min_steps=8),
        Phase("lid_lift", g.lid + [0, 0, 0.2], 1.0, tol=0.03),
        Phase("lid_carry", g.lid_down + [0, 0, 0.1], 1.0, tol=0.03),
        Phase("lid_lower", g.lid_down, 1.0, tol=0.02),
        Phase("lid_release", g.lid_down, -1.0, tol=1.0, min_steps=8),
        Phase("lid_retreat", g.lid_down + [0, 0, 0.15], -1.0, tol=0.03),
        Phase("home", g.home0, -1.0, tol=0.02, min_steps=15),
        Phase("hammer_approach", g.handle(g.s0, 0.2, g.off), -1.0, tol=0.015, yaw=g.yaw),
        Phase("hammer_descend", g.handle(g.s0, g.z_grasp, g.off), -1.0, tol=0.008, yaw=g.yaw),
        Phase("hammer_grasp", g.handle(g.s0, g.z_grasp, g.off), 1.0, tol=1.0, min_steps=10, yaw=g.yaw),
        Phase("hammer_lift", np.array([g.ham[0], g.ham[1], 1.08]), 1.0, tol=0.03, yaw=g.yaw),
        Phase("home_holding", g.home0, 1.0, tol=0.02, min_steps=15, vmax=0.5),
        Phase("hand_over", g.at + [0, g.s0, 0], 1.0, tol=0.01, max_steps=150, vmax=0.4),
        Phase("hold", g.at + [0, g.s0, 0], 1.0, tol=1.0, max_steps=800, until=lambda: g.phase(1) == "hold"),
        Phase("release", g.at + [0, g.s0, 0], -1.0, tol=1.0, min_steps=10),
        Phase("retreat", g.at + [0, g.s0 - 0.15, 0.1], -1.0, tol=0.01, max_steps=800),
    ]


def _transport_robot1(g: SimpleNamespace) -> list[Phase]:
    """Robot 1: the trash into the trash bin, then the hammer from robot 0 into the target bin."""
    return [
        Phase("trash_approach", g.trash + [0, 0, 0.17], -1.0, tol=0.015),
        Phase("trash_descend", g.trash, -1.0, tol=0.008),
        Phase("trash_grasp", g.trash, 1.0, tol=1.0, min_steps=8),
        Phase("trash_lift", np.append(g.trash[:2], 1.0), 1.0, tol=0.03),
        Phase("trash_carry", g.trash_drop, 1.0, tol=0.03),
        Phase("trash_release", g.trash_drop, -1.0, tol=1.0, min_steps=8),
        Phase("home", g.home1, -1.0, tol=0.02, min_steps=15),
        Phase("wait", g.at + [0, 0.15, 0.06], -1.0, tol=0.02, max_steps=800, until=lambda: g.phase(0) == "hold"),
        Phase("hammer_approach", g.handle(g.s1, 0.06), -1.0, tol=0.01, yaw=g.across),
        Phase("hammer_descend", g.handle(g.s1), -1.0, tol=0.008, yaw=g.across),
        Phase("hammer_grasp", g.handle(g.s1), 1.0, tol=1.0, min_steps=10, yaw=g.across),
        Phase("hold", g.handle(g.s1), 1.0, tol=1.0, max_steps=800, until=lambda: g.phase(0) == "retreat"),
        Phase("hammer_lift", g.at + [0, g.s1, 0.1], 1.0, tol=0.02, vmax=0.3),
        *(
            [
                Phase("carry", lambda: (g.at + [0, g.s1, 0.1] + g.over_bin(g.top)()) / 2, 1.0, tol=0.03, vmax=0.3),
                Phase("drop", lambda: (g.at + [0, g.s1, 0.1] + g.over_bin(g.top)()) / 2, -1.0, tol=1.0, min_steps=10),
            ]
            if g.drop
            else []
        ),
        Phase("carry", g.over_bin(g.top), float(-1.0 if g.drop else 1.0), tol=0.02, max_steps=200, vmax=0.3),
        Phase("lower", g.over_bin(g.top - 0.05), float(-1.0 if g.drop else 1.0), tol=0.02),
        Phase("release", g.over_bin(g.top - 0.05), -1.0, tol=1.0, min_steps=12),
        Phase("retreat", g.target_bin + [0, -0.1, 0.35], -1.0, tol=0.01, max_steps=800),
    ]
