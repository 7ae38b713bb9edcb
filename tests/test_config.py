"""Config hygiene: overrides never change the caller's config, old names keep working, help groups."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ncdpo.cli import build_parser, main
from ncdpo.config import TrainConfig, apply_overrides, canonical_key, flat_fields, from_dict, to_dict


@pytest.mark.parametrize("key", sorted(k for k in flat_fields() if "." in k))
def test_apply_overrides_leaves_the_callers_config_alone(key):
    """Every section is copied (dppo.* and pretrain.* used to be changed in place)."""
    base = TrainConfig()
    before = to_dict(base)
    tp, _, default = flat_fields()[key]
    if tp in (bool, int, float, str):
        value = {
            bool: lambda: not default,
            int: lambda: default + 3,
            float: lambda: default + 0.25,
            str: lambda: default + "x",
        }[tp]()
    else:  # tuples and literals: a value other than the default
        if isinstance(default, tuple):
            value = ["x"] if tp.__args__[0] is str else [7]
        else:
            value = next(v for v in tp.__args__ if v != default)
    new = apply_overrides(base, {key: value})
    assert to_dict(base) == before
    section, leaf = key.rsplit(".", 1)
    assert getattr(getattr(new, section), leaf) != getattr(getattr(base, section), leaf)


def test_the_mlp_sections_old_name_is_an_alias_everywhere(tmp_path):
    assert canonical_key("gaussian.hidden-dims") == "mlp.hidden_dims"
    args, extra = build_parser().parse_known_args(["train", "--gaussian.hidden-dims", "8", "8"])
    from ncdpo.cli import resolve_train_config

    assert resolve_train_config(args, extra).mlp.hidden_dims == (8, 8)
    f = tmp_path / "c.yaml"
    f.write_text("gaussian:\n  activation: relu\n")
    args, extra = build_parser().parse_known_args(["train", "--config", str(f)])
    assert resolve_train_config(args, extra).mlp.activation == "relu"
    saved = to_dict(TrainConfig())  # a checkpoint or config.json written before the rename
    saved["gaussian"] = saved.pop("mlp") | {"init_log_std": -0.5}
    assert from_dict(saved).mlp.init_log_std == -0.5


def test_help_lists_new_names_and_ablations_apart_and_hides_old_names(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--mlp.hidden-dims" in out and "--gaussian.hidden-dims" not in out
    ablations = out[out.index("config: ablations") :]
    assert "--diffusion.chain-noise-scale" in ablations and "--diffusion.prediction" not in ablations


def test_print_config_round_trips(capsys):
    assert main(["train", "--env", "Hopper-v5", "--print-config"]) == 0
    cfg = from_dict(json.loads(capsys.readouterr().out))
    assert dataclasses.is_dataclass(cfg) and cfg.env.id == "Hopper-v5"


def resolved(*argv: str):
    from ncdpo.cli import resolve_train_config

    args, extra = build_parser().parse_known_args(list(argv))
    return resolve_train_config(args, extra, command=argv[0])


def test_each_regime_gets_its_measured_recipe():
    scratch = resolved("train", "--env", "InvertedPendulum-v5")
    assert scratch.diffusion.prediction == "x0" and scratch.diffusion.sigma_exp == "fixed"
    assert resolved(
        "train", "--env", "InvertedPendulum-v5", "--diffusion.prediction", "epsilon"
    ).diffusion.prediction == ("epsilon")
    ft = resolved("train", "--init", "shipped:Hopper-v5")
    assert ft.diffusion.prediction == "epsilon"  # the checkpoint's own
    assert (ft.diffusion.sigma_exp, ft.diffusion.sigma_exp_start, ft.ppo.actor_lr) == ("learnable", 0.3, 1e-4)
    assert ft.critic.condition_on_mean and ft.ppo.critic_warmup_iters == 5 and ft.ppo.target_kl == 0.05
    lift = resolved("train", "--init", "shipped:lift")
    assert (lift.ppo.actor_lr, lift.diffusion.sigma_exp_start, lift.ppo.minibatch_size) == (1e-5, 0.1, 128)
    dppo = resolved("train", "--algo", "dppo", "--init", "shipped:Hopper-v5")
    assert (dppo.ppo.clip_coef, dppo.critic.hidden_dims, dppo.critic.activation) == (0.01, (256, 256, 256), "mish")
    assert resolved("train", "--env", "simple_spread").diffusion.prediction == "epsilon"  # its own measured recipe
    bc = resolved("pretrain", "--dataset", "shipped:Hopper-v5")
    assert (bc.diffusion.prediction, bc.horizon, bc.act_steps, bc.diffusion.num_blocks) == ("epsilon", 4, 4, 2)
    assert resolved("train", "--algo", "ppo", "--env", "Hopper-v5") == resolved(
        "train", "--algo", "ppo", "--env", "Hopper-v5", "--diffusion.prediction", "epsilon"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("--init", "shipped:Hopper-v5", "--config", "configs/finetune_locomotion.yaml"),
        ("--init", "shipped:lift", "--config", "configs/finetune_manipulation.yaml"),
        ("--algo", "dppo", "--init", "shipped:Hopper-v5", "--config", "configs/dppo_locomotion.yaml"),
        ("--algo", "dppo", "--init", "shipped:lift", "--config", "configs/dppo_manipulation.yaml"),
    ],
)
def test_the_shipped_configs_mean_what_they_meant_before_the_recipes(argv, monkeypatch):
    """Every recipe value a shipped config relies on is set by the config itself: the recipes change nothing there."""
    import ncdpo.envs.registry as registry
    import ncdpo.training.resolve as resolve

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    now = resolved("train", *argv)
    monkeypatch.setattr(resolve, "RECIPES", {})
    monkeypatch.setattr(registry, "task_recipe", lambda *a: {})
    before = resolved("train", *argv)
    assert to_dict(now) == to_dict(before)
