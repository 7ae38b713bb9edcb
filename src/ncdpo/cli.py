"""Command-line interface: ``ncdpo train | pretrain | collect | demos | eval | export | plot | sweep | tasks``: the
parser and the dispatch (each command's work is in :mod:`ncdpo.commands`).

Every :class:`~ncdpo.config.TrainConfig` field is a ``train`` option (``--ppo.clip-coef 0.1``); ``--env``
and ``--algo`` are the common short forms. User mistakes print one line, ``ncdpo: error: ...``, and exit 2;
``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import typing
from collections.abc import Sequence
from typing import Any

from ncdpo.config import ABLATION_FIELDS, SECTION_ALIASES, TrainConfig, flat_fields, validate
from ncdpo.errors import NcdpoError
from ncdpo.training.resolve import PRETRAIN_RESUME_OVERRIDABLE, RESUME_OVERRIDABLE, resolve_config


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`NcdpoError` (one line) instead of printing usage and exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --ppo.clip must not silently mean --ppo.clip-coef
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        raise NcdpoError(f"{self.prog}: {message} (see {self.prog} --help)")


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


SECTION_TITLES = {
    "": "run",
    "env": "environment (env.*)",
    "ppo": "PPO (ppo.*)",
    "diffusion": "diffusion policy (diffusion.*)",
    "dppo": "DPPO (dppo.*)",
    "mlp": "MLP policy of algo ppo (mlp.*)",
    "critic": "critic (critic.*)",
    "encoder": "image encoders of camera tasks (encoder.*)",
    "noise_policy": "NCDPO's noise policy, an extension beyond the paper (noise_policy.*)",
    "pretrain": "behaviour cloning (pretrain.*)",
}


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per config field, in a help group per section (ablations apart), plus the old names as hidden
    aliases."""
    groups = {key: p.add_argument_group(f"config: {title}") for key, title in SECTION_TITLES.items()}
    ablations = p.add_argument_group(
        "config: ablations and diagnostics (not part of any recipe; see benchmarks/RESULTS.md)"
    )
    for key, (tp, doc, default) in flat_fields().items():
        origin = typing.get_origin(tp)
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": key, "metavar": key.split(".")[-1].upper()}
        if tp is bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        elif origin is tuple:
            kwargs.update(nargs="+")
        elif origin is typing.Literal:
            kwargs["metavar"] = "{" + ",".join(map(str, typing.get_args(tp))) + "}"
        help_text = f"{doc} (default: {default})".replace("%", "%%")  # argparse %-formats help strings
        group = ablations if key in ABLATION_FIELDS else groups[key.rpartition(".")[0].split(".")[0]]
        group.add_argument(_option(key), help=help_text, **kwargs)
        for old in _old_names(key):
            p.add_argument(_option(old), help=argparse.SUPPRESS, **kwargs)
    p.add_argument("--env", dest="env.id", default=argparse.SUPPRESS, metavar="ID", help="short for --env.id")


def _old_names(key: str) -> list[str]:
    """The earlier spellings of a config key (hidden aliases)."""
    section, _, rest = key.partition(".")
    return [f"{s}.{rest}" for s, new in SECTION_ALIASES.items() if rest and new == section]


def _add_run_options(p: argparse.ArgumentParser, what: str, resumable: Sequence[str]) -> None:
    """``--config``, ``--print-config``, ``--resume`` (naming the fields it accepts) and ``--debug``."""
    p.add_argument("--config", metavar="FILE", help="JSON/YAML file of config values (nested or dotted keys)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    allowed = ", ".join(f"--{k.replace('_', '-')}" for k in resumable)
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help=f"continue {what} from its newest checkpoint (config, weights, "
        f"optimiser, normalisers, RNG and env states); only {allowed} may be given with it",
    )
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")


def build_parser() -> _Parser:
    parser = _Parser(
        prog="ncdpo", description="Fine-tune diffusion policies with NCDPO (PPO through every denoising step)."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    tr = sub.add_parser(
        "train",
        help="train a policy (ncdpo, dppo or ppo) on a task",
        usage="ncdpo train [--env ID] [--algo ALGO] [--init CHECKPOINT] [--config FILE] "
        "[--SECTION.FIELD VALUE ...] | --resume RUN_DIR",
    )
    _add_run_options(tr, "a run", RESUME_OVERRIDABLE)
    _add_config_options(tr)

    pt = sub.add_parser(
        "pretrain",
        help="behaviour-clone a diffusion policy on a dataset",
        usage="ncdpo pretrain --dataset FILE [--env ID] [--config FILE] [--SECTION.FIELD VALUE ...] | --resume RUN_DIR",
    )
    _add_run_options(pt, "a pretrain run", PRETRAIN_RESUME_OVERRIDABLE)
    _add_config_options(pt)
    pt.add_argument(
        "--dataset",
        dest="pretrain.dataset",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="short for --pretrain.dataset",
    )
    for short in ("dataset_obs_keys", "dataset_filter", "dataset_action_key"):
        pt.add_argument(
            _option(short),
            dest=f"pretrain.{short}",
            default=argparse.SUPPRESS,
            metavar="KEY" if short != "dataset_filter" else "NAME",
            nargs="+" if short == "dataset_obs_keys" else None,
            help=f"short for --pretrain.{short.replace('_', '-')}",
        )

    co = sub.add_parser("collect", help="roll out a saved policy into a dataset file")
    co.add_argument("path", metavar="RUN_OR_CHECKPOINT")
    co.add_argument("--out", required=True, metavar="FILE", help="dataset file to write (.hdf5)")
    co.add_argument("--episodes", type=int, default=0, help="number of complete episodes")
    co.add_argument("--transitions", type=int, default=0, help="number of env steps (instead of --episodes)")
    co.add_argument(
        "--action-noise",
        type=float,
        default=0.0,
        help="std of extra Gaussian noise on the normalised action (default: 0)",
    )
    co.add_argument(
        "--deterministic", action="store_true", help="no exploration noise of the policy itself (default: sampled)"
    )
    co.add_argument("--seed", type=int, default=0, help="seed of the envs and noise (default: 0)")
    co.add_argument("--n-envs", type=int, default=8, help="envs stepped side by side (default: 8)")
    co.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    co.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")

    de = sub.add_parser(
        "demos",
        help="record scripted demonstrations of a manipulation task (lift, can, square, transport, kitchen-complete, "
        "kitchen-partial, kitchen-mixed) into a dataset file",
    )
    de.add_argument(
        "task",
        metavar="TASK",
        help="lift, can, square or transport (or a -dense or -image variant), or kitchen-complete, kitchen-partial, "
        "kitchen-mixed (D4RL's three datasets' compositions)",
    )
    de.add_argument("--out", required=True, metavar="FILE", help="dataset file to write (.hdf5)")
    de.add_argument("--episodes", type=int, default=100, help="number of episodes, successful or not (default: 100)")
    de.add_argument(
        "--noise",
        type=float,
        default=None,
        help="std of the operator's action noise, scaled by skill (default: 0.1; kitchen: 0.05, its actions being "
        "joint velocities)",
    )
    de.add_argument(
        "--offset",
        type=float,
        default=0.01,
        help="std in metres of the operator's grasp error, scaled by skill (default: 0.01)",
    )
    de.add_argument(
        "--mistake",
        type=float,
        default=0.2,
        help="probability of a mistake (closing above the object; on Can "
        "and transport also dropping it half way), scaled by skill (default: 0.2)",
    )
    de.add_argument(
        "--skill", default="", help="one operator for all episodes: better, okay or worse (default: drawn per episode)"
    )
    de.add_argument(
        "--seed", type=int, default=0, help="reset seed of the first episode; episode i uses seed + i (default: 0)"
    )
    de.add_argument("--workers", type=int, default=1, help="processes (default: 1); the data do not depend on it")
    de.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    de.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")

    ev = sub.add_parser("eval", help="evaluate a run folder or checkpoint")
    ev.add_argument("path", metavar="RUN_OR_CHECKPOINT")
    ev.add_argument("--episodes", type=int, default=10, help="number of episodes (default: 10)")
    ev.add_argument("--sampled", action="store_true", help="sample the exploration noise (default: deterministic)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the evaluation envs and noise (default: 0)")
    ev.add_argument("--n-envs", type=int, default=16, help="envs stepped side by side (default: 16)")
    ev.add_argument("--device", default="cpu", help="device (default: cpu)")
    ev.add_argument(
        "--chain-noise-scale",
        type=float,
        default=None,
        metavar="S",
        help="NCDPO only: multiply the chain noise by S (0: the noise-free path of the chain); "
        "default: as the checkpoint was trained",
    )
    ev.add_argument(
        "--noise-mean",
        action="store_true",
        help="NCDPO with a noise policy: act with its mean mu_psi(s) instead of drawing the chain noise from it",
    )
    ev.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    ev.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")

    ex = sub.add_parser(
        "export",
        help="write a checkpoint's policy without its training state (a small file to share), or as a self-contained "
        "TorchScript / ONNX module for deployment",
    )
    ex.add_argument("path", metavar="RUN_OR_CHECKPOINT")
    ex.add_argument("--out", required=True, metavar="FILE", help="file to write (.safetensors, .pt or .onnx)")
    ex.add_argument(
        "--format",
        choices=("safetensors", "torchscript", "onnx"),
        default="safetensors",
        help="safetensors: a checkpoint for ncdpo (eval, train --init); torchscript / onnx: module(obs, noise) -> "
        "actions in env units, normalisation and action bounds inside, runs with torch (or an ONNX runtime) alone "
        "(default: safetensors)",
    )
    ex.add_argument(
        "--noise-mean",
        action="store_true",
        help="torchscript/onnx of an NCDPO policy with a noise policy: act with its mean mu_psi(s)",
    )
    ex.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    ex.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")

    pl = sub.add_parser("plot", help="plot learning curves of run folders to a PNG")
    pl.add_argument("runs", nargs="+", metavar="RUN")
    pl.add_argument("--out", default="curves.png", help="output PNG (default: curves.png)")
    pl.add_argument("--x", default="env_steps", help="x column (default: env_steps)")
    pl.add_argument("--y", default="charts/episodic_return", help="y column (default: charts/episodic_return)")
    pl.add_argument("--no-group", action="store_true", help="one line per run instead of mean ± std per seed group")
    pl.add_argument("--smooth", type=int, default=1, help="moving-average window in points (default: 1)")
    pl.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")

    sw = sub.add_parser(
        "sweep",
        help="run a grid of training runs (tasks x algos x values x seeds) on Ray, locally or on a cluster",
        description="Run the trials of a sweep spec (YAML; see ncdpo.sweep) as Ray tasks: locally (Ray started "
        "on this machine, sized to its cores) or on the cluster at --address. A trial whose worker dies is "
        "retried from its newest checkpoint; --resume continues an interrupted sweep.",
    )
    sw.add_argument("target", metavar="SPEC_OR_DIR", help="a sweep spec file, or (with --resume) a sweep folder")
    sw.add_argument("--address", default="", help="HOST:PORT of a running Ray cluster (ray start --head); "
                    "default: start Ray on this machine")  # fmt: skip
    sw.add_argument("--resume", action="store_true", help="continue the sweep: skip finished trials, resume the rest")
    sw.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")

    tk = sub.add_parser("tasks", help="list the registered tasks and their presets")
    tk.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    return parser


def resolve_train_config(args: argparse.Namespace, extra: Sequence[str] = (), command: str = "train") -> TrainConfig:
    """The config of a new ``train`` / ``pretrain`` run from parsed arguments (see
    :func:`ncdpo.training.resolve.resolve_config`); an unknown option is a one-line error with a suggestion."""
    if extra:
        unknown = extra[0]
        opts = [_option(k) for k in flat_fields()]
        close = difflib.get_close_matches(unknown.split("=")[0], opts, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise NcdpoError(f"unknown option {unknown} for ncdpo {command}{hint}")
    cli = {k: v for k, v in vars(args).items() if "." in k or k in flat_fields()}
    return resolve_config(cli, args.config, command)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if extra and args.command not in ("train", "pretrain"):
            raise NcdpoError(f"unknown argument {extra[0]} for ncdpo {args.command} (see ncdpo {args.command} --help)")
        from ncdpo import commands

        if args.command in ("train", "pretrain"):
            return getattr(commands, f"cmd_{args.command}")(args, extra)
        return getattr(commands, f"cmd_{args.command}")(args)
    except NcdpoError as e:
        if debug:
            raise
        print(f"ncdpo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ncdpo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main", "resolve_train_config", "validate"]
