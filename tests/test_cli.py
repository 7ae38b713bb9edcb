import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ncdpo.algos import load_agent
from ncdpo.checkpoint import load_checkpoint
from ncdpo.cli import build_parser, main, resolve_train_config
from ncdpo.training.trainer import Trainer

TIMING = {"wall_s", "charts/SPS", "perf/rollout_s", "perf/update_s", "perf/peak_mem_mb"}


def rows(run_dir):
    with open(Path(run_dir) / "progress.csv") as f:
        return list(csv.DictReader(f))


def cfg_from(argv):
    args, extra = build_parser().parse_known_args(argv)
    return resolve_train_config(args, extra)


def test_smoke_train_eval_plot_through_the_console_script(tmp_path, tiny_args):
    exe = Path(sys.executable).parent / "ncdpo"
    argv = tiny_args(
        "ncdpo", steps=600, name="smoke", extra=["--eval-every", "2", "--eval-episodes", "2", "--tensorboard", "true"]
    )
    r = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "smoke"
    assert (run / "checkpoints" / "final.safetensors").is_file() and (run / "config.json").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    data = rows(run)
    assert int(data[-1]["env_steps"]) >= 600
    assert any(row["eval/return_mean"] for row in data)
    r = subprocess.run(
        [str(exe), "eval", str(run), "--episodes", "2", "--json", str(tmp_path / "ev.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "return" in r.stdout and "over 2 episodes" in r.stdout
    assert len(json.loads((tmp_path / "ev.json").read_text())["returns"]) == 2
    r = subprocess.run(
        [str(exe), "plot", str(run), "--out", str(tmp_path / "c.png")], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c.png").stat().st_size > 1000


@pytest.mark.parametrize("algo", ["ncdpo", "ppo", "dppo"])
def test_ratio_is_one_on_the_first_minibatch_of_every_update(tmp_path, tiny_args, algo):
    assert main(tiny_args(algo, steps=640, name=algo)) == 0
    data = rows(tmp_path / algo)
    assert len(data) >= 5
    for row in data:
        assert float(row["losses/first_minibatch_ratio_dev"]) < 1e-5
    # ...while the policy does change between updates (the invariant is not vacuous).
    assert any(float(row["losses/approx_kl"]) > 0 for row in data)


def test_training_is_reproducible_from_the_seed(tmp_path, tiny_args):
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main(tiny_args("ncdpo", steps=384, name=name, extra=["--seed", seed])) == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]  # noqa: E731
    assert strip(rows(tmp_path / "a")) == strip(rows(tmp_path / "b"))
    assert strip(rows(tmp_path / "a")) != strip(rows(tmp_path / "c"))
    wa = load_checkpoint(tmp_path / "a").tensors
    wb = load_checkpoint(tmp_path / "b").tensors
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("algo", ["ncdpo", "ppo", "dppo"])
def test_checkpoint_round_trip_gives_identical_actions(tmp_path, tiny_args, algo):
    trainer = Trainer(cfg_from(tiny_args(algo, steps=256, name="rt")))
    trainer.run()
    agent, obs_norm, ck = load_agent(tmp_path / "rt")
    assert ck.meta["env_steps"] == trainer.env_steps and ck.config == trainer.cfg
    raw = np.random.default_rng(0).normal(size=(6, 11))
    o1, o2 = trainer.obs_norm(raw), obs_norm(raw)
    assert np.array_equal(o1, o2)
    torch.manual_seed(7)
    a1 = trainer.agent.act(torch.as_tensor(o1))
    torch.manual_seed(7)
    a2 = agent.act(torch.as_tensor(o2))
    assert torch.equal(a1.action, a2.action) and torch.equal(a1.log_prob, a2.log_prob)
    if algo == "ncdpo":
        noise = a1.store["noise"]
        m1 = trainer.agent.policy.chain_mean(torch.as_tensor(o1), noise)
        m2 = agent.policy.chain_mean(torch.as_tensor(o2), noise)
        assert torch.equal(m1, m2)


def test_init_from_checkpoint_starts_from_identical_actions(tmp_path, tiny_args):
    assert main(tiny_args("ncdpo", steps=256, name="pre")) == 0
    agent, _, _ = load_agent(tmp_path / "pre")
    cfg = cfg_from(
        tiny_args(
            "ncdpo", steps=256, name="ft", extra=["--init", str(tmp_path / "pre"), "--env.update-obs-norm", "false"]
        )
    )
    trainer = Trainer(cfg)
    obs = torch.randn(5, 11)
    noise = agent.policy.sample_noise(5)
    assert torch.equal(agent.policy.chain_mean(obs, noise), trainer.agent.policy.chain_mean(obs, noise))


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ncdpo: error:") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_bad_inputs_give_one_line_errors(tmp_path, tiny_args, capsys):
    one_line_error(capsys, tiny_args(extra=["--env", "NoSuchEnv-v0"]), "unknown env id 'NoSuchEnv-v0'")
    one_line_error(capsys, tiny_args(extra=["--ppo.no-such-key", "1"]), "unknown option --ppo.no-such-key")
    one_line_error(capsys, tiny_args(extra=["--ppo.clip-cof", "0.1"]), "did you mean --ppo.clip-coef")
    one_line_error(capsys, tiny_args(extra=["--total-env-steps", "-5"]), "total_env_steps must be positive")
    one_line_error(capsys, tiny_args(extra=["--ppo.gamma", "abc"]), "ppo.gamma")
    one_line_error(capsys, tiny_args(extra=["--horizon", "2", "--act-steps", "4"]), "act_steps")
    one_line_error(capsys, tiny_args(extra=["--diffusion.sampler", "euler"]), "diffusion.sampler", "ddpm")
    one_line_error(capsys, tiny_args(extra=["--env.n-envs", "0"]), "env.n_envs")
    one_line_error(
        capsys, tiny_args("dppo", extra=["--dppo.ft-denoising-steps", "5"]), "dppo.ft_denoising_steps", "chain length 4"
    )
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"ppo": {"not_a_key": 1}}))
    one_line_error(capsys, tiny_args(extra=["--config", str(cfg_file)]), "unknown config key 'ppo.not_a_key'")
    one_line_error(capsys, ["eval", str(tmp_path / "missing")], "checkpoint not found")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    one_line_error(capsys, ["eval", str(bad)], "corrupt")


def test_checkpoint_from_another_architecture_is_a_one_line_error(tmp_path, tiny_args, capsys):
    assert main(tiny_args("ncdpo", steps=128, name="small")) == 0
    init = ["--init", str(tmp_path / "small")]
    one_line_error(
        capsys,
        tiny_args(name="wide", extra=[*init, "--diffusion.hidden-dim", "64"]),
        "does not fit this policy",
        "shape",
    )
    one_line_error(capsys, tiny_args(name="w2d", extra=[*init, "--env", "Walker2d-v5"]), "obs/act dims")
    one_line_error(capsys, tiny_args("ppo", name="ppo", extra=init), "holds a 'ncdpo' policy")
    full = (tmp_path / "small" / "checkpoints" / "final.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full[: len(full) // 2])
    one_line_error(capsys, ["eval", str(cut)], "corrupt")


def test_tasks_lists_the_locomotion_presets(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert all(t in out for t in ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"))


def test_existing_run_folder_is_not_overwritten(tmp_path, tiny_args, capsys):
    assert main(tiny_args("ppo", steps=128, name="keep")) == 0
    before = (tmp_path / "keep" / "checkpoints" / "final.safetensors").read_bytes()
    one_line_error(capsys, tiny_args("ppo", steps=128, name="keep"), "already exists", "--overwrite")
    assert (tmp_path / "keep" / "checkpoints" / "final.safetensors").read_bytes() == before
    assert main(tiny_args("ppo", steps=128, name="keep", extra=["--overwrite"])) == 0


def test_config_layering_preset_file_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("ppo:\n  gamma: 0.95\n  clip_coef: 0.1\ndiffusion.denoising_steps: 20\n")
    cfg = cfg_from(["train", "--config", str(f), "--ppo.clip-coef", "0.3", "--env", "Walker2d-v5"])
    assert cfg.env.id == "Walker2d-v5" and cfg.env.n_envs == 16  # preset
    assert cfg.ppo.gamma == 0.95 and cfg.diffusion.denoising_steps == 20  # file
    assert cfg.ppo.clip_coef == 0.3  # command line wins
    assert cfg_from(["train", "--critic.hidden-dims", "8", "8", "--overwrite"]).critic.hidden_dims == (8, 8)


@pytest.mark.parametrize("command", ["train", "pretrain", "collect", "eval", "demos", "plot", "export", "tasks"])
def test_help_of_every_command_prints(command, capsys):
    # every config field's docstring becomes help text, which argparse %-formats ("99% of" once crashed it)
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ncdpo " + command)
    if command in ("train", "pretrain"):
        assert "--diffusion.logit-scale" in out and "99% of the probability" in " ".join(out.split())


def test_every_config_field_has_a_docstring():
    from ncdpo.config import flat_fields

    missing = [k for k, (_, doc, _) in flat_fields().items() if not doc]
    assert not missing, missing


def test_noise_conditioned_critic_sees_the_rollout_chain_mean(tmp_path, tiny_args):
    """critic.condition_on_mean: V(s, m_old(s, xi)) from the stored mean; the PPO invariants still hold."""
    argv = tiny_args("ncdpo", steps=384, name="cond", extra=["--critic.condition-on-mean", "true"])
    cfg = cfg_from(argv)
    seen = {}

    def spy(trainer, buf):
        agent = trainer.agent
        if not seen:
            obs, store = buf.obs[0], {k: v[0] for k, v in buf.store.items()}
            with torch.no_grad():
                m = agent.policy.chain_mean(obs, store["noise"])[:, : cfg.act_steps]
                seen["mean"] = float((store["mean"] - m).abs().max())
                seen["value"] = float((agent.value(obs, store) - buf.values[0]).abs().max())
                # the value depends on the chain mean, not only on the observation
                shifted = {**store, "mean": store["mean"] + 0.5}
                seen["depends"] = float((agent.value(obs, shifted) - buf.values[0]).abs().max())

    tr = Trainer(cfg, before_update=spy)
    assert tr.agent.critic.net[0].in_features == 11 + cfg.act_steps * 3
    tr.run()
    assert seen["mean"] < 1e-6 and seen["value"] < 1e-6 and seen["depends"] > 1e-4
    for row in rows(tmp_path / "cond"):
        assert float(row["losses/first_minibatch_ratio_dev"]) < 1e-5
    # fine-tuning from that checkpoint inherits the conditioned critic and loads it
    cfg2 = cfg_from(
        [
            "train", "--init", str(tmp_path / "cond"), "--total-env-steps", "64", "--env.n-envs", "2",
            "--ppo.n-steps", "8", "--out-dir", str(tmp_path), "--run-name", "ft", "--progress", "false"
        ]
    )
    assert cfg2.critic.condition_on_mean is True
    Trainer(cfg2)


def test_eval_is_reproducible_from_its_seed(tmp_path):
    """A diffusion policy's chain noise (its initial latent, even in deterministic mode) comes from the eval seed."""
    from ncdpo.cli import main as cli_main

    res = []
    for i, seed in enumerate((5, 5, 6)):
        out = tmp_path / f"e{i}.json"
        assert cli_main(["eval", "shipped:Hopper-v5", "--episodes", "3", "--seed", str(seed), "--json", str(out)]) == 0
        res.append(json.loads(out.read_text())["returns"])
    assert res[0] == res[1] and res[0] != res[2]


def test_learnable_exploration_std_can_have_its_own_lr(tmp_path, tiny_args):
    """diffusion.sigma_exp_lr: the std gets its own Adam group (at fine-tuning's tiny actor lr it stays put
    otherwise); annealing the lrs scales every group."""
    base = [
        "--diffusion.sigma-exp", "learnable", "--ppo.actor-lr", "1e-6", "--ppo.ent-coef", "0.1", "--ppo.target-kl",
        "0"
    ]
    moved = {}
    for name, extra in [("shared", []), ("own", ["--diffusion.sigma-exp-lr", "0.01", "--ppo.anneal-lr", "true"])]:
        tr = Trainer(cfg_from(tiny_args("ncdpo", steps=256, name=name, extra=base + extra)))
        groups = tr.optimizer.param_groups
        sigma = tr.agent.policy.log_sigma_exp
        assert sum(any(q is sigma for q in g["params"]) for g in groups) == 1
        assert len(groups) == (3 if name == "own" else 2)
        tr.run()
        if name == "own":  # annealed like the others: below its base lr at the last iteration
            assert [g["lr"] for g in groups] == pytest.approx(
                [lr * groups[1]["lr"] / 1e-3 for lr in (1e-6, 1e-3, 0.01)]
            )
            assert groups[2]["lr"] < 0.01
        agent, _, _ = load_agent(tmp_path / name / "checkpoints" / "final.safetensors")
        moved[name] = float((agent.policy.sigma_exp().log() - np.log(0.1)).abs().max())
    assert moved["shared"] < 1e-3 and moved["own"] > 1e-2
