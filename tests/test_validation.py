"""Bad input of every kind gets one clear line, never a traceback; property-based over config values.

``BAD_INPUTS`` below is the catalogue of hand-written bad inputs (config values, files, CLI arguments);
the hypothesis test adds random values for every config field.
"""

import json
import string

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ncdpo.cli import main
from ncdpo.config import TrainConfig, apply_overrides, flat_fields, validate
from ncdpo.errors import NcdpoError

FIELDS = flat_fields()


def one_line_error(capsys, argv, needle):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert err.startswith("ncdpo: error:") and "\n" not in err and "Traceback" not in err, err
    assert needle.lower() in err.lower(), (needle, err)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad files on disk: checkpoints, datasets and config files."""
    d = tmp_path_factory.mktemp("bad")
    (d / "garbage.safetensors").write_bytes(b"\x00not a checkpoint" * 5)
    (d / "empty.safetensors").write_bytes(b"")
    (d / "bad.yaml").write_text("ppo: [unclosed\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "unknown.json").write_text(json.dumps({"ppo": {"clip": 0.1}}))
    (d / "wrongtype.json").write_text(json.dumps({"ppo": {"gamma": "high"}}))
    (d / "notjson.json").write_text("{not json")
    with h5py.File(d / "shape.hdf5", "w") as f:  # obs of the wrong width for Hopper
        g = f.create_group("data/demo_0")
        g["obs"], g["actions"] = np.zeros((10, 5), np.float32), np.zeros((10, 3), np.float32)
        g["rewards"], g["dones"] = np.zeros(10, np.float32), np.zeros(10, bool)
        f["data"].attrs["env_id"] = "Hopper-v5"
    with h5py.File(d / "nan.hdf5", "w") as f:
        g = f.create_group("data/demo_0")
        obs = np.zeros((10, 11), np.float32)
        obs[3, 2] = np.nan
        g["obs"], g["actions"] = obs, np.zeros((10, 3), np.float32)
        g["rewards"], g["dones"] = np.zeros(10, np.float32), np.zeros(10, bool)
        f["data"].attrs["env_id"] = "Hopper-v5"
    (d / "trunc.hdf5").write_bytes((d / "nan.hdf5").read_bytes()[:300])
    (d / "text.npz").write_text("not an npz")
    (d / "run").mkdir()
    return d


T = ["train", "--env", "Hopper-v5", "--print-config"]
BAD_INPUTS = [
    # config values (command line)
    (T + ["--total-env-steps", "-1"], "total_env_steps must be positive"),
    (T + ["--total-env-steps", "ten"], "total_env_steps"),
    (T + ["--total-env-steps", "1.5"], "must be an integer"),
    (T + ["--horizon", "0"], "horizon must be >= 1"),
    (T + ["--horizon", "2", "--act-steps", "3"], "act_steps must be between 1 and horizon"),
    (T + ["--env.n-envs", "0"], "env.n_envs"),
    (T + ["--ppo.gamma", "1.5"], "ppo.gamma must be in [0, 1]"),
    (T + ["--ppo.gamma", "nan"], "finite"),
    (T + ["--ppo.actor-lr", "inf"], "finite"),
    (T + ["--ppo.actor-lr", "0"], "actor_lr"),
    (T + ["--ppo.clip-coef", "-0.2"], "ppo.clip_coef must be positive"),
    (T + ["--ppo.minibatch-size", "0"], "ppo.minibatch_size"),
    (T + ["--ppo.update-epochs", "0"], "ppo.update_epochs"),
    (T + ["--ppo.max-grad-norm", "0"], "max_grad_norm"),
    (T + ["--ppo.norm-adv", "maybe"], "must be true or false"),
    (T + ["--diffusion.denoising-steps", "0"], "denoising_steps"),
    (T + ["--diffusion.sampler", "euler"], "must be one of ddpm, ddim"),
    (
        T + ["--diffusion.sampler", "ddim", "--diffusion.ddim-steps", "20", "--diffusion.denoising-steps", "10"],
        "ddim_steps",
    ),
    (T + ["--diffusion.time-dim", "15"], "time_dim must be even"),
    (T + ["--diffusion.sigma-exp-start", "0"], "sigma_exp"),
    (T + ["--diffusion.sigma-exp", "adaptive"], "must be one of"),
    (T + ["--diffusion.sigma-exp-lr", "0.01"], "sigma_exp_lr applies to a learnable exploration std only"),
    (T + ["--diffusion.sigma-exp", "learnable", "--diffusion.sigma-exp-lr", "-1"], "sigma_exp_lr must be >= 0"),
    (T + ["--diffusion.sigma-exp-scale", "1", "0"], "sigma_exp_scale entries must be positive"),
    (T + ["--diffusion.chain-noise-scale", "-1"], "chain_noise_scale must be >= 0"),
    (T + ["--diffusion.out-init-scale", "-0.1"], "out_init_scale must be >= 0"),
    (
        T + ["--diffusion.sigma-exp", "learnable", "--diffusion.sigma-exp-scale", "1", "20"],
        "sigma_exp_start * sigma_exp_scale must lie in",
    ),
    (
        T + ["--algo", "dppo", "--diffusion.denoising-steps", "5", "--dppo.ft-denoising-steps", "6"],
        "dppo.ft_denoising_steps",
    ),
    (T + ["--dppo.gamma-denoise", "0"], "gamma_denoise"),
    (T + ["--critic.hidden-dims", "0", "64"], "critic.hidden_dims"),
    (T + ["--algo", "sac"], "algo"),
    (T + ["--save-every", "0"], "save_every"),
    (T + ["--eval-episodes", "0"], "eval_episodes"),
    (T + ["--pretrain.ema-decay", "1.0"], "ema_decay"),
    (T + ["--env.clip-obs", "-1"], "env.clip_obs"),
    (T + ["--device", "tpu"], "device"),
    # unknown options and keys
    (T + ["--ppo.clip", "0.1"], "unknown option --ppo.clip"),
    (T + ["--ppo.clip-cof", "0.1"], "did you mean --ppo.clip-coef"),
    (["train", "--env", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
    (["train", "--env", "FrozenLake-v1"], "1-D Box observation space"),
    (
        ["train", "--env", "CartPole-v1", "--horizon", "4", "--act-steps", "2"],
        "discrete actions: act_steps and horizon must be 1",
    ),
    (
        ["train", "--env", "simple_spread", "--algo", "dppo", "--dppo.ft-denoising-steps", "2"],
        "dppo supports single-agent tasks",
    ),
    # files: config files, checkpoints, datasets, run folders
    (lambda d: T + ["--config", str(d / "bad.yaml")], "bad.yaml"),
    (lambda d: T + ["--config", str(d / "list.yaml")], "list.yaml"),
    (lambda d: T + ["--config", str(d / "unknown.json")], "unknown config key 'ppo.clip'"),
    (lambda d: T + ["--config", str(d / "wrongtype.json")], "ppo.gamma"),
    (lambda d: T + ["--config", str(d / "notjson.json")], "notjson.json"),
    (lambda d: T + ["--config", str(d / "missing.yaml")], "missing.yaml"),
    (lambda d: ["eval", str(d / "garbage.safetensors")], "corrupt"),
    (lambda d: ["eval", str(d / "empty.safetensors")], "corrupt"),
    (lambda d: ["eval", str(d / "nothing.safetensors")], "checkpoint not found"),
    (lambda d: ["eval", str(d / "run")], "no checkpoint in run folder"),
    (lambda d: ["train", "--init", str(d / "garbage.safetensors"), "--print-config"], "corrupt"),
    (lambda d: ["train", "--resume", str(d / "run")], "no checkpoint"),
    (lambda d: ["pretrain", "--resume", str(d / "nope")], "does not exist"),
    (lambda d: ["pretrain", "--dataset", str(d / "shape.hdf5"), "--pretrain.steps", "1"], "obs"),
    (lambda d: ["pretrain", "--dataset", str(d / "nan.hdf5"), "--pretrain.steps", "1"], "nan"),
    (lambda d: ["pretrain", "--dataset", str(d / "trunc.hdf5"), "--pretrain.steps", "1"], "trunc.hdf5"),
    (lambda d: ["pretrain", "--dataset", str(d / "text.npz"), "--pretrain.steps", "1"], "text.npz"),
    (lambda d: ["pretrain", "--dataset", str(d / "none.hdf5"), "--pretrain.steps", "1"], "none.hdf5"),
    (lambda d: ["pretrain", "--dataset", "shipped:NoTask-v0", "--pretrain.steps", "1"], "NoTask-v0"),
    (lambda d: ["plot", str(d / "run"), "--out", str(d / "c.png")], "progress.csv"),
    # CLI arguments
    (["eval", "shipped:Hopper-v5", "--episodes", "2", "--frobnicate"], "unknown argument --frobnicate"),
    (["collect", "shipped:Hopper-v5", "--out", "/nonexistent-dir/x.txt", "--episodes", "1"], "x.txt"),
    (["collect", "shipped:Hopper-v5", "--out", "x.hdf5"], "exactly one of --episodes"),
]


@pytest.mark.parametrize("case", range(len(BAD_INPUTS)))
def test_every_bad_input_is_one_clear_line(case, files, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, needle = BAD_INPUTS[case]
    one_line_error(capsys, argv(files) if callable(argv) else argv, needle)


def test_the_catalogue_is_large():
    assert len(BAD_INPUTS) >= 50


junk = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(alphabet=string.printable, max_size=12),
    st.lists(st.integers(min_value=-5, max_value=600), max_size=3),
    st.none(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(FIELDS)), value=junk)
def test_any_value_for_any_field_is_accepted_or_a_one_line_error(key, value):
    try:
        cfg = validate(apply_overrides(TrainConfig(), {key: value}))
    except NcdpoError as e:
        msg = str(e)
        assert "\n" not in msg and key.split(".")[-1] in msg, (key, value, msg)
        return
    # accepted: the value is stored with the field's type and the config stays valid
    got = cfg
    for part in key.split("."):
        got = getattr(got, part)
    assert got is not None


@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(sorted(FIELDS)), value=st.text(alphabet=string.ascii_letters + string.digits + "-.", max_size=8)
)
def test_cli_never_shows_a_traceback_for_a_config_value(key, value):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", f"--{key.replace('_', '-')}", value, "--print-config"])
    assert code in (0, 2)
    if code == 2:
        e = err.getvalue().strip()
        assert e.startswith("ncdpo: error:") and "\n" not in e, e
