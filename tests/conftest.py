
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tiny_args(tmp_path):
    """CLI arguments for a tiny but real Hopper training run."""

    def make(algo="ncdpo", steps=512, name="run", extra=()):
        return [
            "train", "--algo", algo, "--env", "Hopper-v5", "--total-env-steps", str(steps), "--env.n-envs", "2",
            "--ppo.n-steps", "64", "--ppo.minibatch-size", "32", "--ppo.update-epochs", "2",
            "--diffusion.denoising-steps", "4", "--diffusion.hidden-dim", "32", "--critic.hidden-dims", "32", "32",
            "--gaussian.hidden-dims", "16", "--out-dir", str(tmp_path), "--run-name", name, "--progress", "false",
            "--tensorboard", "false", "--seed", "3", *(["--dppo.ft-denoising-steps", "2"] if algo == "dppo" else []),
            *extra
        ]

    return make
