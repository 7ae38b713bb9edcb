"""Cooperative multi-agent tasks with discrete actions, made to fit the single-agent PPO core.

Three layers:

* a *backend* drives one simulator (mpe2's ``simple_spread``; Google Research Football's academy scenarios,
  :mod:`ncdpo.envs.football`) and returns per-agent local observations, the global state, per-agent rewards,
  and whether the episode ended;
* :class:`MultiAgentEnv` makes one backend a ``gymnasium.Env`` whose observation is one row per agent,
  ``[local obs, one-hot agent id, global state]`` (shape (n_agents, L + n_agents + S)), whose action is one
  index per agent (``MultiDiscrete``), whose reward is the team reward (the mean over agents) with each
  agent's own in ``info["agent_rewards"]``, and which records the episode's team return in
  ``info["episode"]`` and, where the task defines one, ``info["is_success"]`` (a win) at its end; so
  gymnasium's Sync/Async vector envs, the env snapshots of :mod:`ncdpo.envs.snapshot` and the worker guard
  all work unchanged;
* :class:`AgentRows` flattens a vector of them into ``n_envs * n_agents`` rows, each an independent
  "env" to the PPO core: its observation, its agent's reward, the env's termination. Parameter sharing comes
  for free (one policy acts on every row; the agent id tells agents apart), every agent draws its own chain
  noise, and the centralised critic reads the id and the global state part of the row (:class:`EnvSpec`).
  Env steps, episodes and wins are counted once per env (on the row of agent 0), not once per agent.

Episode semantics: ``terminated`` when the task ends the episode (a goal, the ball lost in GRF);
``truncated`` at the time limit (every ``simple_spread`` episode: 25 steps), where the core bootstraps.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from ncdpo.envs.spec import EnvSpec
from ncdpo.errors import NcdpoError


class Backend:
    """One cooperative multi-agent simulator (see the module docstring)."""

    n_agents: int
    n_actions: int
    local_dim: int
    state_dim: int
    max_steps: int
    has_success: bool = False
    """The task defines success (a win): every episode then reports ``is_success``, a time-limit end as a failure."""

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(local obs (M, L), global state (S,), action mask (M, n) or None)``."""
        raise NotImplementedError

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, bool, float, np.ndarray | None]:
        """``(local, state, rewards (M,), terminated, truncated, success (nan: undefined), mask)``."""
        raise NotImplementedError

    def get_state(self) -> dict[str, Any]:
        """The simulator's full state as numbers and arrays (for checkpoints)."""
        raise NotImplementedError

    def set_state(self, st: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class MPESpread(Backend):
    """mpe2 ``simple_spread_v3`` (discrete actions): N agents cover N landmarks and avoid collisions.

    Each agent's reward is ``(1 - local_ratio) * global + local_ratio * own collisions`` (mpe2's definition);
    the global state is mpe2's ``state()`` (every agent's observation concatenated). No success is defined.
    """

    def __init__(self, n_agents: int = 3, max_cycles: int = 25, local_ratio: float = 0.5) -> None:
        try:
            from mpe2 import simple_spread_v3
        except ImportError:
            raise NcdpoError("task simple_spread needs mpe2: pip install 'ncdpo[multiagent]'") from None
        self.par = simple_spread_v3.parallel_env(
            N=n_agents, max_cycles=max_cycles, local_ratio=local_ratio, continuous_actions=False
        )
        self.raw = self.par.unwrapped
        self.names = list(self.par.possible_agents)
        self.n_agents, self.max_steps = n_agents, max_cycles
        self.n_actions = int(self.par.action_space(self.names[0]).n)
        self.local_dim = int(self.par.observation_space(self.names[0]).shape[0])
        self.state_dim = int(self.raw.state_space.shape[0])

    def _local(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([obs[a] for a in self.names]).astype(np.float32)

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        obs, _ = self.par.reset(seed=seed)
        return self._local(obs), self.raw.state().astype(np.float32), None

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, bool, float, np.ndarray | None]:
        obs, rew, term, trunc, _ = self.par.step({a: int(actions[i]) for i, a in enumerate(self.names)})
        rewards = np.array([rew[a] for a in self.names], np.float64)
        terminated = any(term.values())
        truncated = not terminated and any(trunc.values())
        return self._local(obs), self.raw.state().astype(np.float32), rewards, terminated, truncated, np.nan, None

    def get_state(self) -> dict[str, Any]:
        ents = self.raw.world.entities
        return {
            "steps": int(self.raw.steps),
            "pos": np.stack([e.state.p_pos for e in ents]),
            "vel": np.stack([e.state.p_vel for e in ents]),
            "comm": np.stack([a.state.c for a in self.raw.world.agents]),
            "rng": self.raw.np_random.bit_generator.state,
        }

    def set_state(self, st: dict[str, Any]) -> None:
        ents = self.raw.world.entities
        if len(st["pos"]) != len(ents):
            raise ValueError(f"saved simple_spread state has {len(st['pos'])} entities, this env {len(ents)}")
        self.par.reset(seed=0)  # a fresh env's wrappers refuse to step before a reset; everything is overwritten below
        # between two steps of a running episode every agent is live and the AEC turn is agent 0's
        self.raw.agents = self.names[:]
        for k in ("rewards", "_cumulative_rewards"):
            setattr(self.raw, k, {a: 0.0 for a in self.names})
        self.raw.terminations = {a: False for a in self.names}
        self.raw.truncations = {a: False for a in self.names}
        self.raw.infos = {a: {} for a in self.names}
        self.raw._agent_selector.reinit(self.names)
        self.raw.agent_selection = self.raw._agent_selector.reset()
        self.raw.steps = int(st["steps"])
        for e, p, v in zip(ents, st["pos"], st["vel"]):
            e.state.p_pos, e.state.p_vel = np.array(p, np.float64), np.array(v, np.float64)
        for a, c in zip(self.raw.world.agents, st["comm"]):
            a.state.c = np.array(c, np.float64)
        rng = np.random.default_rng()
        rng.bit_generator.state = st["rng"]
        self.raw.np_random = rng

    def close(self) -> None:
        self.par.close()


class MultiAgentEnv(gym.Env):
    """One multi-agent simulator as a gymnasium env with one observation row per agent (module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, backend: Backend, max_episode_steps: int = 0) -> None:
        self.backend = backend
        b = backend
        self.n_agents, self.n_actions = b.n_agents, b.n_actions
        self.max_episode_steps = max_episode_steps or b.max_steps
        self.row_dim = b.local_dim + b.n_agents + b.state_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (b.n_agents, self.row_dim), np.float32)
        self.action_space = gym.spaces.MultiDiscrete(np.full(b.n_agents, b.n_actions))
        self._ids = np.eye(b.n_agents, dtype=np.float32)
        self.ep_return, self.ep_length = 0.0, 0

    @property
    def spec_rows(self) -> EnvSpec:
        b = self.backend
        return EnvSpec(
            self.row_dim,
            b.n_actions,
            discrete=True,
            n_agents=b.n_agents,
            actor_dim=b.local_dim + b.n_agents,
            critic_start=b.local_dim,
        )

    def _rows(self, local: np.ndarray, state: np.ndarray) -> np.ndarray:
        return np.concatenate([local, self._ids, np.broadcast_to(state, (self.n_agents, state.shape[0]))], axis=1)

    def _info(self, mask: np.ndarray | None, rewards: np.ndarray) -> dict[str, Any]:
        info: dict[str, Any] = {"agent_rewards": rewards}
        if mask is not None:
            info["action_mask"] = np.asarray(mask, bool)
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        local, state, mask = self.backend.reset(seed)
        self.ep_return, self.ep_length = 0.0, 0
        return self._rows(local, state), self._info(mask, np.zeros(self.n_agents))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        actions = np.asarray(action, np.int64).reshape(self.n_agents)
        local, state, rewards, terminated, truncated, success, mask = self.backend.step(actions)
        self.ep_length += 1
        if not terminated and self.ep_length >= self.max_episode_steps:
            truncated = True
        team = float(np.mean(rewards))
        self.ep_return += team
        info = self._info(mask, rewards)
        info["env_steps"] = 1
        if terminated or truncated:
            info["episode"] = {"r": self.ep_return, "l": self.ep_length, "t": 0.0}
            if not np.isnan(success) or self.backend.has_success:
                info["is_success"] = bool(success) if not np.isnan(success) else False
        return self._rows(local, state), team, bool(terminated), bool(truncated), info

    def ncdpo_state(self) -> dict[str, Any]:
        return self.backend.get_state()

    def ncdpo_set_state(self, st: dict[str, Any]) -> None:
        self.backend.set_state(st)

    def close(self) -> None:
        self.backend.close()


class AgentRows(gym.vector.VectorEnv):
    """A vector of :class:`MultiAgentEnv` seen as ``num_envs = n_envs * n_agents`` rows (module docstring).

    Row ``i * n_agents + k`` is agent ``k`` of env ``i``. Per row: observation, the agent's own reward,
    the env's ``terminated`` / ``truncated``; ``info["env_steps"]``, ``final_info["episode"]`` (the team
    return) and ``final_info["is_success"]`` are set on agent 0's row only, so env steps and episodes are
    counted once per env; ``info["action_mask"]`` (rows, n_actions) when the task has illegal actions.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        self.venv = venv
        spec: EnvSpec = venv.get_attr("spec_rows")[0]
        self.ncdpo_spec = spec
        self.n_agents, self.n_copies = spec.n_agents, venv.num_envs
        self.num_envs = venv.num_envs * spec.n_agents
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), np.float32)
        self.single_action_space = gym.spaces.Discrete(spec.act_dim)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.metadata = dict(getattr(venv, "metadata", {}))
        self._reporter = np.zeros(self.num_envs, bool)
        self._reporter[:: self.n_agents] = True

    def _per_row(self, x: np.ndarray) -> np.ndarray:
        """(n_copies,) -> rows: the value on agent 0's row, 0 elsewhere."""
        out = np.zeros(self.num_envs, np.asarray(x).dtype)
        out[:: self.n_agents] = x
        return out

    def _rows_info(self, info: dict, done: np.ndarray | None) -> dict[str, Any]:
        M, R = self.n_agents, self.num_envs
        out: dict[str, Any] = {}
        if "action_mask" in info:
            out["action_mask"] = np.asarray(info["action_mask"], bool).reshape(R, -1)
            out["_action_mask"] = np.ones(R, bool)
        if done is None:
            return out
        out["env_steps"], out["_env_steps"] = self._per_row(np.ones(self.n_copies, np.int64)), np.ones(R, bool)
        fin = info.get("final_info", {})
        final: dict[str, Any] = {}
        if "episode" in fin:
            ep = fin["episode"]
            final["episode"] = {
                "r": self._per_row(np.asarray(ep["r"], np.float64)),
                "l": self._per_row(np.asarray(ep["l"], np.int64)),
                "_r": self._per_row(np.asarray(ep["_r"], bool) & done),
            }
            final["_episode"] = final["episode"]["_r"]
        if "is_success" in fin:
            final["is_success"] = self._per_row(np.asarray(fin["is_success"], bool))
            final["_is_success"] = self._per_row(np.asarray(fin["_is_success"], bool) & done)
        if final:
            out["final_info"] = final
        if done.any():
            fobs = np.empty(R, dtype=object)
            for i in np.nonzero(done)[0]:
                for k in range(M):
                    fobs[i * M + k] = info["final_obs"][i][k]
            out["final_obs"], out["_final_obs"] = fobs, np.repeat(done, M)
        return out

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.venv.reset(seed=seed, options=options)
        return np.asarray(obs, np.float32).reshape(self.num_envs, -1), self._rows_info(info, None)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        a = np.asarray(actions, np.int64).reshape(self.n_copies, self.n_agents)
        obs, _, term, trunc, info = self.venv.step(a)
        done = np.asarray(term, bool) | np.asarray(trunc, bool)
        rewards = np.asarray(info["agent_rewards"], np.float64).reshape(self.n_copies, self.n_agents).copy()
        fin = info.get("final_info", {})
        if done.any():  # the final step's rewards were moved to final_info when the env reset in the same step
            rewards[done] = np.asarray(fin["agent_rewards"], np.float64).reshape(self.n_copies, self.n_agents)[done]
        M = self.n_agents
        return (
            np.asarray(obs, np.float32).reshape(self.num_envs, -1),
            rewards.reshape(-1),
            np.repeat(term, M),
            np.repeat(trunc, M),
            self._rows_info(info, done),
        )

    def close(self, **kwargs: Any) -> None:
        self.venv.close(**kwargs)


def make_simple_spread(max_episode_steps: int = 0, **kwargs: Any) -> MultiAgentEnv:
    return MultiAgentEnv(MPESpread(**kwargs), max_episode_steps)
