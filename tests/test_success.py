"""Success semantics: an env's ``info["is_success"]`` on the final step of an episode becomes the success rate
of ``ncdpo eval`` and ``charts/success_rate`` / ``eval/success_rate`` in training logs."""

import csv
import json

import gymnasium as gym
import numpy as np

from ncdpo.cli import main


class Reach(gym.Env):
    """A point on a line: reach x >= 1 (success, terminated) within 30 steps (else truncated, failure)."""

    observation_space = gym.spaces.Box(-5.0, 5.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-0.5, 0.5)), 0
        return np.array([self.x, 0.0], np.float32), {}

    def step(self, action):
        self.x += 0.1 * float(np.clip(action[0], -1, 1))
        self.t += 1
        success = self.x >= 1.0
        info = {"is_success": success}
        return np.array([self.x, self.t / 30], np.float32), float(success), success, False, info


gym.register("ncdpo-test/Reach-v0", entry_point=Reach, max_episode_steps=30)


def test_success_rate_in_eval_and_training_logs(tmp_path, capsys):
    argv = [
        "train", "--algo", "ppo", "--env", "ncdpo-test/Reach-v0", "--total-env-steps", "1024", "--env.n-envs", "2",
        "--ppo.n-steps", "64", "--out-dir", str(tmp_path), "--run-name", "r", "--progress", "false", "--tensorboard",
        "false", "--eval-every", "2", "--eval-episodes", "6", "--gaussian.init-log-std", "0.5"
    ]
    assert main(argv) == 0
    with open(tmp_path / "r" / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["charts/success_rate"]) for r in rows if r["charts/success_rate"]]
    assert rates and all(0.0 <= x <= 1.0 for x in rates)
    assert any(r["eval/success_rate"] for r in rows)
    # ncdpo eval reports the rate and each episode's outcome
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r"), "--episodes", "5", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "e.json").read_text())
    assert "success rate" in out and len(res["successes"]) == 5 and 0.0 <= res["success_rate"] <= 1.0
    assert res["success_rate"] == np.mean(res["successes"])


class Constant:
    """A stand-in agent that always pushes the point one way."""

    def __init__(self, direction: float) -> None:
        import torch

        self.direction, self.p = direction, torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self.p])

    def act(self, obs, deterministic=True):
        import torch

        from ncdpo.algos.base import ActOutput

        a = torch.full((obs.shape[0], 1, 1), self.direction)
        return ActOutput(a, torch.zeros(obs.shape[0]), {})


def test_success_is_read_from_the_final_step_and_truncation_is_failure():
    from ncdpo.policies.common import ObsNormalizer
    from ncdpo.training.evaluation import evaluate

    norm = ObsNormalizer(2, enabled=False)
    right = evaluate(Constant(1.0), norm, "ncdpo-test/Reach-v0", 8, 1, seed=0)
    left = evaluate(Constant(-1.0), norm, "ncdpo-test/Reach-v0", 8, 1, seed=0)
    assert right["success_rate"] == 1.0 and right["length_mean"] < 30  # success terminated the episodes early
    assert left["success_rate"] == 0.0 and left["length_mean"] == 30  # time limit: failure


def test_envs_without_is_success_report_no_success_rate(tmp_path, capsys):
    assert main(["eval", "shipped:Hopper-v5", "--episodes", "1", "--json", str(tmp_path / "h.json")]) == 0
    assert "success rate" not in capsys.readouterr().out
    assert json.loads((tmp_path / "h.json").read_text())["success_rate"] is None
