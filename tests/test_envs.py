import gymnasium as gym
import numpy as np
import pytest

from ncdpo.envs.registry import TASKS, done_values, make_env, make_vec_env, task_preset
from ncdpo.envs.wrappers import ActionChunk
from ncdpo.errors import NcdpoError


class CountEnv(gym.Env):
    """Reward = step index; terminates after `length` steps; action bounds [0, 4]."""

    def __init__(self, length=5):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
        self.action_space = gym.spaces.Box(0.0, 4.0, (2,), np.float32)
        self.length, self.t, self.seen = length, 0, []

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1), {}

    def step(self, action):
        self.seen.append(np.array(action))
        self.t += 1
        return np.array([self.t], float), float(self.t), self.t >= self.length, False, {}


def test_action_chunk_executes_rescales_and_stops_at_termination():
    env = ActionChunk(CountEnv(length=5), act_steps=3)
    assert env.action_space.shape == (3, 2)
    env.reset()
    chunk = np.array([[-1.0, 1.0], [0.0, 0.5], [2.0, -3.0]])
    obs, r, term, trunc, info = env.step(chunk)
    assert r == 1 + 2 + 3 and info["env_steps"] == 3 and not term
    seen = np.stack(env.unwrapped.seen)
    assert np.allclose(seen, [[0, 4], [2, 3], [4, 0]])  # [-1, 1] -> [0, 4], clipped outside
    obs, r, term, trunc, info = env.step(chunk)
    assert term and info["env_steps"] == 2 and r == 4 + 5  # stops at the episode's end


def test_registered_locomotion_tasks():
    for tid in ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"):
        assert tid in TASKS and task_preset(tid)
    env = make_env("Hopper-v5", act_steps=2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (11,) and env.action_space.shape == (2, 3)
    env.close()


def test_vector_env_counts_env_steps_and_reports_episodes():
    envs = make_vec_env("Hopper-v5", 3, act_steps=4, max_episode_steps=10)
    envs.reset(seed=0)
    total, episodes = 0, 0
    for _ in range(6):
        _, _, term, trunc, info = envs.step(np.zeros((3, 4, 3), np.float32))
        done = term | trunc
        total += done_values(info, "env_steps", done).sum()
        episodes += int(done.sum())
    # 10-step limit with chunks of 4: 4 + 4 + 2 per episode, two episodes per env in 6 decisions.
    assert total == 3 * 20 and episodes == 6
    envs.close()


def test_unknown_env_id_and_discrete_env_are_clear_errors():
    with pytest.raises(NcdpoError, match="unknown env id 'NoSuchEnv-v0'"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(NcdpoError, match="must have a 1-D Box observation space"):
        make_env("FrozenLake-v1")
    with pytest.raises(NcdpoError, match="discrete actions: act_steps and horizon must be 1"):
        make_env("CartPole-v1", act_steps=2)
    env = make_env("CartPole-v1")  # discrete actions are supported: one action per decision
    env.reset(seed=0)
    assert env.step(np.array([1]))[4]["env_steps"] == 1
    env.close()
