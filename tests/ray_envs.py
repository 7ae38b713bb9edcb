"""Envs for tests/test_ray.py that Ray actors build by id (``ray_envs:FaultyHopper-v0``: gymnasium imports this
module in the actor, which registers them; the test puts this folder on the actors' PYTHONPATH)."""

import gymnasium as gym


class Faulty(gym.Wrapper):
    """Hopper that raises at its ``at``-th step."""

    def __init__(self, at: int = 100) -> None:
        super().__init__(gym.make("Hopper-v5"))
        self.at, self.n = at, 0

    def step(self, action):
        self.n += 1
        if self.n == self.at:
            raise RuntimeError("simulator exploded")
        return self.env.step(action)


if "FaultyHopper-v0" not in gym.registry:
    gym.register("FaultyHopper-v0", entry_point=Faulty, max_episode_steps=1000)
