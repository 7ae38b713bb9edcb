"""Google Research Football academy scenarios as a multi-agent backend (:class:`~ncdpo.envs.multiagent.Backend`).

Needs ``gfootball==2.10.2`` (built by ``scripts/setup_gfootball.sh``; not part of the core install). The env
runs headless with the ``simple115v2`` representation: each controlled player's observation is 115 numbers
(positions and directions of both teams and the ball, ball ownership, the active player, the game mode); the
global state is agent 0's observation (they differ only in the active-player one-hot). Actions: GRF's 19
default actions per player. Reward: ``scoring,checkpoints`` by default, as MAPPO's GRF runs: +1 when the left
team scores, -1 when it concedes, plus GRF's checkpoint reward, +0.1 per agent for each of 10 distance rings
around the opponent's goal that the agent first reaches while controlling the ball (the rings not yet collected
are paid on a goal, so an episode that ends in a goal pays each agent 2 in all). ``rewards="scoring"`` gives the
sparse reward alone. Agents' rewards can differ; the team reward is their mean. An episode ends on a goal, the
ball going out of play, a change of possession, or the scenario's time limit (``game_duration`` steps, reported
as ``truncated``); it is a win (``is_success``) when the left team scored. The engine's random seed of each
episode, and with it the order in which the engine processes the two teams, is drawn from this env's own
generator, so a seeded run is reproducible (``test_grf_same_seed_same_game`` pins it).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from ncdpo.envs.multiagent import Backend, MultiAgentEnv
from ncdpo.errors import NcdpoError

SCENARIOS = {
    "grf-3v1": ("academy_3_vs_1_with_keeper", 3),
    "grf-pass-shoot": ("academy_pass_and_shoot_with_keeper", 2),
    "grf-counterattack": ("academy_counterattack_easy", 4),
}


class GRFAcademy(Backend):
    has_success = True

    def __init__(self, scenario: str, n_agents: int, rewards: str = "scoring,checkpoints") -> None:
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import gfootball.env as football_env
        except ImportError:
            raise NcdpoError("the GRF tasks need gfootball: bash scripts/setup_gfootball.sh") from None
        self.env = football_env.create_environment(
            env_name=scenario,
            representation="simple115v2",
            rewards=rewards,
            render=False,
            write_video=False,
            write_goal_dumps=False,
            write_full_episode_dumps=False,
            number_of_left_players_agent_controls=n_agents,
            logdir=os.path.join(tempfile.gettempdir(), "ncdpo_gfootball"),
            # gfootball's constructor plays a first episode: without a seed it draws one from Python's unseeded
            # global `random`, and that seed's parity fixed the team processing order for the env's lifetime,
            # so two runs with the same seed differed (measured: from their first iteration)
            other_config_options={"game_engine_random_seed": 0},
        )
        self.core = self.env.unwrapped
        self.n_agents, self.n_actions = n_agents, int(self.env.action_space.nvec[0])
        self.local_dim = self.state_dim = 115
        self.max_steps = int(self.core._config.ScenarioConfig().game_duration)
        self.rng = np.random.default_rng(0)
        self.steps, self.score = 0, 0.0

    def _seed_engine(self, seed: int) -> None:
        """The engine's seed for the next game and, by gfootball's own rule (the seed's parity), the order in
        which it processes the two teams; both come from this env's generator."""
        self.core._config._values["game_engine_random_seed"] = seed
        self.core._config._values["reverse_team_processing"] = bool(seed % 2)

    def _out(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs = np.asarray(obs, np.float32).reshape(self.n_agents, -1)
        return obs, obs[0].copy()

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray, None]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._seed_engine(int(self.rng.integers(0, 2**31 - 1)))
        self.steps, self.score = 0, 0.0
        local, state = self._out(self.env.reset())
        return local, state, None

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, bool, float, None]:
        obs, reward, done, info = self.env.step([int(a) for a in actions])
        self.steps += 1
        self.score += float(info.get("score_reward", 0))
        rewards = np.broadcast_to(np.asarray(reward, np.float64).reshape(-1), (self.n_agents,)).copy()
        truncated = bool(done) and self.score == 0 and self.steps >= self.max_steps
        terminated = bool(done) and not truncated
        local, state = self._out(obs)
        return local, state, rewards, terminated, truncated, (float(self.score > 0) if done else np.nan), None

    def get_state(self) -> dict[str, Any]:
        # through the wrapper chain, so the checkpoint wrapper's collected rings are saved with the engine
        return {
            "engine": np.frombuffer(self.env.get_state(), np.uint8).copy(),
            "steps": self.steps,
            "score": self.score,
            "rng": self.rng.bit_generator.state,
            "seed": int(self.core._config._values.get("game_engine_random_seed", 0)),
        }

    def set_state(self, st: dict[str, Any]) -> None:
        self._seed_engine(int(st["seed"]))
        self.env.reset()  # the engine accepts a state only once a game runs
        self.env.set_state(np.asarray(st["engine"], np.uint8).tobytes())
        self.steps, self.score = int(st["steps"]), float(st["score"])
        # gfootball keeps its own step count outside the engine state and writes a dump when it reads 1, which
        # fails if that same step ends the game: restore it too
        self.core._env._step_count = self.steps
        self.rng.bit_generator.state = st["rng"]

    def close(self) -> None:
        self.env.close()


def make_grf(task: str, max_episode_steps: int = 0, **kwargs: Any) -> MultiAgentEnv:
    scenario, n_agents = SCENARIOS[task]
    return MultiAgentEnv(GRFAcademy(scenario, n_agents, **kwargs), max_episode_steps)
