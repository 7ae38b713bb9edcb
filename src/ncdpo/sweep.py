"""``ncdpo sweep SPEC.yaml``: a grid of training runs (tasks x algorithms x config values x seeds) as Ray tasks.

A sweep is a folder ``<out>/<name>/`` holding ``sweep.json`` (the spec it was started with and its trials), one
ordinary run folder per trial (``<task>__<algo>[__<key>=<value>...]__s<seed>``, with ``<trial>.log`` beside it),
and at the end ``summary.csv``, ``table.md`` and ``curves_<task>.png``.

- **Where**: Ray, started on this machine sized to its cores, or the cluster at ``--address`` (``ray start --head``
  on one node, ``ray start --address HEAD:6379`` on the others; the sweep folder must be on a filesystem every node
  sees). Each trial reserves ``cpus_per_trial`` CPUs.
- **Worker loss**: each trial is a Ray task that runs ``ncdpo train`` as a child process which dies with the task's
  worker (Linux ``PR_SET_PDEATHSIG``). Ray retries a task whose worker died (``max_retries``); the retry continues the
  run from its newest checkpoint with ``ncdpo train --resume``, which is bitwise the run it would have been.
- **Resume**: ``ncdpo sweep SPEC.yaml --resume`` (or ``ncdpo sweep SWEEP_DIR --resume``) skips the finished trials
  and continues the interrupted ones.
- **Progress**: a table of every trial (state, env steps, latest training return) every ``progress_every`` seconds.

The spec (YAML or JSON; every key but ``tasks`` optional)::

    name: hopper-4              # the sweep folder's name (default: the spec file's stem)
    out: runs/sweeps            # where the sweep folder goes
    tasks: [Hopper-v5]          # env ids (--env)
    algos: [ncdpo, ppo]         # --algo
    seeds: [1, 2]               # --seed
    init: shipped:{task}        # --init of every trial ({task} and {algo} are filled in)
    config: configs/finetune_locomotion.yaml   # --config of every trial (may use {task} and {algo})
    set: {total_env_steps: 20000}              # config values of every trial (dotted keys)
    grid: {ppo.actor_lr: [1.0e-4, 3.0e-4]}     # more axes: every combination of these values is a trial
    eval_episodes: 10           # the final policy's evaluation per trial (0: none)
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncdpo.errors import NcdpoError

NCDPO = [sys.executable, "-m", "ncdpo.cli"]


@dataclass
class SweepSpec:
    """What a sweep runs (the keys of its YAML file)."""

    tasks: list[str]
    """Env ids, one ``--env`` each."""
    name: str = ""
    """The sweep folder's name (default: the spec file's stem)."""
    out: str = "runs/sweeps"
    """The folder the sweep folder goes into (relative paths: from the current directory)."""
    algos: list[str] = field(default_factory=lambda: ["ncdpo"])
    """``--algo`` values."""
    seeds: list[int] = field(default_factory=lambda: [1])
    """``--seed`` values."""
    init: str = ""
    """``--init`` of every trial (``{task}`` and ``{algo}`` are filled in; empty: train from scratch)."""
    config: str = ""
    """``--config`` file of every trial (``{task}`` / ``{algo}`` filled in; relative to the spec file's folder if it
    is there, else to the current directory)."""
    set: dict[str, Any] = field(default_factory=dict)
    """Config values of every trial, by dotted key (``ppo.actor_lr``, ``total_env_steps``)."""
    grid: dict[str, list[Any]] = field(default_factory=dict)
    """More axes, dotted key -> values: every combination is a trial (times tasks, algos and seeds)."""
    eval_episodes: int = 10
    """Episodes of the final policy's evaluation per trial (``eval.json`` in its run folder; 0: none)."""
    eval_seed: int = 424242
    """The evaluation seed."""
    cpus_per_trial: float = 1.0
    """CPUs each trial reserves (its ``--torch-threads`` too, rounded down, at least 1)."""
    max_retries: int = 3
    """How often a trial whose worker died is retried (each retry resumes from the newest checkpoint)."""
    progress_every: float = 30.0
    """Seconds between two progress tables."""


def _spec_error(path: str | Path, msg: str) -> NcdpoError:
    return NcdpoError(f"sweep spec {path}: {msg}")


def load_spec(path: str | Path) -> SweepSpec:
    """The :class:`SweepSpec` of a YAML/JSON file; an unknown key, a config key that is no config field, or a value
    of the wrong kind is a one-line error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise NcdpoError(f"no sweep spec at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _spec_error(path, f"not valid YAML: {first}") from None
    spec = spec_from_dict(raw, path)
    if not spec.name:
        spec.name = path.stem
    if spec.config and not Path(spec.config).is_absolute() and (path.parent / spec.config.split("{")[0]).exists():
        spec.config = str((path.parent / spec.config).resolve())
    return spec


def spec_from_dict(raw: Any, where: str | Path = "<dict>") -> SweepSpec:
    """A :class:`SweepSpec` from a mapping, every key and config field checked (see :func:`load_spec`)."""
    from ncdpo.config import ALGOS, canonical_key, flat_fields

    if not isinstance(raw, dict):
        raise _spec_error(where, "must be a mapping of sweep keys (tasks, algos, seeds, set, grid, ...)")
    keys = [f.name for f in dataclasses.fields(SweepSpec)]
    for k in raw:
        if k not in keys:
            close = difflib.get_close_matches(str(k), keys, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise _spec_error(where, f"unknown sweep key '{k}' (keys: {', '.join(keys)}){hint}")
    if "tasks" not in raw:
        raise _spec_error(where, "'tasks' is missing (a list of env ids)")

    def str_list(k: str) -> list[str]:
        v = raw[k]
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            raise _spec_error(where, f"'{k}' must be a non-empty list of names (got {v!r})")
        return list(v)

    kw: dict[str, Any] = {"tasks": str_list("tasks")}
    if "algos" in raw:
        kw["algos"] = str_list("algos")
        bad = [a for a in kw["algos"] if a not in ALGOS]
        if bad:
            raise _spec_error(where, f"unknown algo '{bad[0]}' (one of {', '.join(ALGOS)})")
    if "seeds" in raw:
        s = raw["seeds"]
        s = [s] if isinstance(s, int) else s
        if not isinstance(s, list) or not s or not all(isinstance(x, int) and not isinstance(x, bool) for x in s):
            raise _spec_error(where, f"'seeds' must be a non-empty list of integers (got {raw['seeds']!r})")
        kw["seeds"] = list(s)
    for k in ("name", "out", "init", "config"):
        if k in raw and raw[k] is not None:
            if not isinstance(raw[k], str):
                raise _spec_error(where, f"'{k}' must be a string (got {raw[k]!r})")
            kw[k] = raw[k]
    leaves = flat_fields()

    def config_key(k: Any, section: str) -> str:
        key = canonical_key(str(k))
        if key not in leaves:
            close = difflib.get_close_matches(key, list(leaves), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise _spec_error(where, f"'{section}' names '{k}', which is not a config field{hint}")
        if key in ("seed", "algo", "env.id", "init", "out_dir", "run_name"):
            raise _spec_error(where, f"'{section}' cannot set '{k}': the sweep sets it per trial")
        return key

    for section in ("set", "grid"):
        v = raw.get(section) or {}
        if not isinstance(v, dict):
            raise _spec_error(where, f"'{section}' must be a mapping of config keys")
        kw[section] = {config_key(k, section): x for k, x in v.items()}
    for k, vals in kw["grid"].items():
        if not isinstance(vals, list) or not vals:
            raise _spec_error(where, f"grid values of '{k}' must be a non-empty list (got {vals!r})")
    both = set(kw["set"]) & set(kw["grid"])
    if both:
        raise _spec_error(where, f"'{sorted(both)[0]}' is in both 'set' and 'grid'")
    for k, tp in (("eval_episodes", int), ("eval_seed", int), ("max_retries", int)):
        if k in raw:
            if not isinstance(raw[k], int) or isinstance(raw[k], bool) or raw[k] < 0:
                raise _spec_error(where, f"'{k}' must be a non-negative integer (got {raw[k]!r})")
            kw[k] = raw[k]
    for k in ("cpus_per_trial", "progress_every"):
        if k in raw:
            if not isinstance(raw[k], int | float) or isinstance(raw[k], bool) or raw[k] <= 0:
                raise _spec_error(where, f"'{k}' must be a positive number (got {raw[k]!r})")
            kw[k] = float(raw[k])
    return SweepSpec(**kw)


# ---------------------------------------------------------------------------------------------- trials
@dataclass
class Trial:
    """One run of a sweep: its folder and the ``ncdpo train`` options of a fresh start."""

    name: str
    run_dir: str
    train_args: list[str]
    task: str
    algo: str
    seed: int
    values: dict[str, Any]
    """The grid values of this trial."""
    eval_episodes: int = 0
    eval_seed: int = 424242


def _cli_value(v: Any) -> list[str]:
    if isinstance(v, bool):
        return ["true" if v else "false"]
    if isinstance(v, list | tuple):
        return [x for item in v for x in _cli_value(item)]
    return [str(v)]


def _value_tag(v: Any) -> str:
    text = ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
    return text.replace("/", "_").replace(" ", "")


def make_trials(spec: SweepSpec, sweep_dir: str | Path) -> list[Trial]:
    """Every (task, algo, grid combination, seed) of ``spec``, in that order."""
    from ncdpo.cli import _option

    sweep_dir = Path(sweep_dir)
    grid_keys = list(spec.grid)
    combos = list(itertools.product(*(spec.grid[k] for k in grid_keys))) if grid_keys else [()]
    threads = max(1, int(spec.cpus_per_trial))
    out = []
    for task, algo, combo, seed in itertools.product(spec.tasks, spec.algos, combos, spec.seeds):
        values = dict(zip(grid_keys, combo))
        tag = "".join(f"__{k}={_value_tag(v)}" for k, v in values.items())
        name = f"{task.replace('/', '_').replace(':', '_')}__{algo}{tag}__s{seed}"
        args = ["--env", task, "--algo", algo, "--seed", str(seed)]
        if spec.init:
            args += ["--init", spec.init.format(task=task, algo=algo)]
        if spec.config:
            args += ["--config", spec.config.format(task=task, algo=algo)]
        fixed = {"progress": False, "torch_threads": threads, **spec.set, **values}
        for k, v in fixed.items():
            args += [_option(k), *_cli_value(v)]
        out.append(
            Trial(name, str(sweep_dir / name), args, task, algo, seed, values, spec.eval_episodes, spec.eval_seed)
        )
    return out


def check_trials(trials: Sequence[Trial]) -> dict[str, int]:
    """Make each task's env once and resolve each distinct trial config (all but the seed) as ``ncdpo train``
    would, so a wrong env id, a nonsense value or a missing checkpoint is one line before anything runs; the env-step
    budget of every trial."""
    from ncdpo.cli import build_parser, resolve_train_config
    from ncdpo.envs.registry import make_env

    for task in dict.fromkeys(t.task for t in trials):
        try:
            make_env(task).close()
        except NcdpoError as e:
            raise NcdpoError(f"sweep task {task}: {e}") from None
    budgets: dict[tuple, int] = {}
    for t in trials:
        key = _config_key(t)
        if key in budgets:
            continue
        args, extra = build_parser().parse_known_args(["train", *t.train_args])
        try:
            budgets[key] = int(resolve_train_config(args, extra).total_env_steps)
        except NcdpoError as e:
            raise NcdpoError(f"sweep trial {t.name}: {e}") from None
    return {t.name: budgets[_config_key(t)] for t in trials}


def _config_key(t: Trial) -> tuple:
    """What sets a trial's config apart from another's: all but the seed."""
    return (t.task, t.algo, tuple(sorted((k, str(v)) for k, v in t.values.items())))


# ---------------------------------------------------------------------------------------------- running one
class TrialInterrupted(Exception):
    """The trial's training process was killed (a signal): Ray retries the task, which resumes the run."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the process that started it dies (a killed Ray worker takes its run)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_cli(cmd: Sequence[str], log_path: str | Path, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` with its output appended to ``log_path``; the child dies with this process (Linux)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        return subprocess.call(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )


def run_finished(run: Path) -> bool:
    return (run / "checkpoints" / "final.safetensors").is_file()


def run_resumable(run: Path) -> bool:
    ck = run / "checkpoints"
    return ck.is_dir() and any(ck.glob("iter_*.safetensors"))


def train_or_resume(run: str | Path, train_args: Sequence[str], log_path: str | Path | None = None) -> int:
    """Start the run ``run`` with ``ncdpo train TRAIN_ARGS``, or continue it from its newest checkpoint
    (``--resume``, with the ``--total-env-steps`` of ``train_args``), or nothing where it is finished; the exit
    status (0 where it was finished)."""
    run = Path(run)
    if run_finished(run):
        return 0
    train_args = list(train_args)
    if run_resumable(run):
        i = train_args.index("--total-env-steps") if "--total-env-steps" in train_args else -1
        budget = train_args[i : i + 2] if i >= 0 else []
        cmd = [*NCDPO, "train", "--resume", str(run), "--progress", "false", *budget]
    else:
        cmd = [*NCDPO, "train", *train_args, "--out-dir", str(run.parent), "--run-name", run.name, "--overwrite"]
    return run_cli(cmd, log_path or run.parent / f"{run.name}.log")


def _last_error(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    errs = [ln.removeprefix("ncdpo: error: ") for ln in lines if ln.startswith("ncdpo: error:")]
    return (errs[-1] if errs else lines[-1] if lines else "(empty log)")[:300]


def run_trial(trial: dict[str, Any]) -> dict[str, Any]:
    """One trial, in a Ray worker: train (or resume, or skip) and evaluate. Records the worker's pid and the attempt
    in ``<trial>.trial.json`` beside the run folder; a training process killed by a signal raises
    :class:`TrialInterrupted` (retried)."""
    t = Trial(**trial)
    run = Path(t.run_dir)
    run.parent.mkdir(parents=True, exist_ok=True)
    info_path = run.parent / f"{t.name}.trial.json"  # beside the run: a fresh start (--overwrite) clears the run
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"attempts": 0}
    info.update(attempts=info["attempts"] + 1, pid=os.getpid(), node=os.uname().nodename, started=time.time())
    info_path.write_text(json.dumps(info) + "\n")
    log_path = run.parent / f"{t.name}.log"
    t0 = time.time()
    rc = train_or_resume(run, t.train_args, log_path)
    if rc < 0:
        raise TrialInterrupted(f"{t.name}: training killed by signal {-rc}")
    if rc != 0 and not run_finished(run):
        return {"name": t.name, "status": "failed", "error": _last_error(log_path), "wall_s": time.time() - t0}
    ev = run / "eval.json"
    if t.eval_episodes > 0 and not ev.is_file():
        # in this worker (no second interpreter start): ncdpo eval, its output into the trial's log
        import contextlib

        from ncdpo.cli import main

        argv = ["eval", str(run), "--episodes", str(t.eval_episodes), "--seed", str(t.eval_seed), "--json", str(ev)]
        with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            rc = main(argv)
        if rc != 0:
            return {"name": t.name, "status": "failed", "error": _last_error(log_path), "wall_s": time.time() - t0}
    return {"name": t.name, "status": "done", "wall_s": time.time() - t0, "attempts": info["attempts"]}


# ---------------------------------------------------------------------------------------------- Ray
def start_ray(address: str = "", num_cpus: float | None = None) -> bool:
    """Connect to the Ray cluster at ``address`` or start a local instance of ``num_cpus`` CPUs (default: this
    machine's cores); True where this call started or joined it (the caller shuts it down)."""
    import ray

    from ncdpo.envs.ray_vector import ensure_ray

    if ray.is_initialized():
        return False
    ensure_ray(address, num_cpus or float(os.cpu_count() or 1))
    return True


def run_jobs(
    fn: Callable[..., str], jobs: Iterable[tuple], n_jobs: int, address: str = "", max_retries: int = 3
) -> None:
    """``fn(*job)`` for every job as Ray tasks, ``n_jobs`` at a time on a local Ray instance (or one CPU each on the
    cluster at ``address``), printing each one's message in job order; a task whose worker died is retried. What
    the benchmark harness runs its jobs with."""
    import ray

    jobs = list(jobs)
    if not jobs:
        return
    started = start_ray(address, max(1, n_jobs))
    # locally, n_jobs at a time whatever the core count (a job may use every core through subprocess envs)
    cpus = 1.0 if address else float(ray.cluster_resources().get("CPU", 1)) / max(1, n_jobs)
    try:
        task = ray.remote(_call_job).options(
            num_cpus=cpus, max_retries=max_retries, retry_exceptions=[TrialInterrupted]
        )
        refs = [task.remote(fn, job) for job in jobs]
        for ref in refs:
            try:
                print(ray.get(ref), flush=True)
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if e.cause is not None else e
                raise SystemExit(str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)) from None
    finally:
        if started:
            ray.shutdown()


def _call_job(fn: Callable[..., str], job: tuple) -> str:
    try:
        return fn(*job)
    except SystemExit as e:  # a failed run: an error the driver reports (Ray would take an exit for a dead worker)
        raise RuntimeError(str(e.code)) from None


# ---------------------------------------------------------------------------------------------- the sweep
def sweep_dir_of(spec: SweepSpec) -> Path:
    return Path(spec.out) / spec.name


def _progress_row(path: Path) -> dict[str, float]:
    """The last row of a run's progress.csv (empty where it has none yet)."""
    try:
        with open(path / "progress.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    if not rows:
        return {}
    out = {}
    for k, v in rows[-1].items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def progress_table(trials: Sequence[Trial], states: dict[str, str], budget: dict[str, int]) -> str:
    """One line per trial: state, env steps (of the budget), latest training return."""
    counts = {s: sum(1 for t in trials if states[t.name] == s) for s in ("done", "running", "queued", "failed")}
    head = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    width = max(len(t.name) for t in trials)
    lines = [f"sweep: {len(trials)} trials: {head}"]
    for t in trials:
        row = _progress_row(Path(t.run_dir))
        steps = int(row.get("env_steps", 0))
        total = budget.get(t.name, 0)
        ret = row.get("charts/episodic_return", math.nan)
        frac = f"{steps:>9,}/{total:,}" if total else f"{steps:>9,}"
        lines.append(f"  {t.name:<{width}}  {states[t.name]:<7}  {frac} env steps  return {ret:9.2f}")
    return "\n".join(lines)


def open_sweep(target: str | Path, resume: bool) -> tuple[SweepSpec, Path]:
    """The spec and folder of ``ncdpo sweep TARGET``: a spec file (a new sweep, or with ``resume`` the one it
    started) or a sweep folder (``resume`` only)."""
    target = Path(target)
    if target.is_dir():
        saved = target / "sweep.json"
        if not saved.is_file():
            raise NcdpoError(f"{target} is not a sweep folder (no sweep.json)")
        if not resume:
            raise NcdpoError(f"{target} is a sweep folder: continue it with ncdpo sweep {target} --resume")
        try:
            return spec_from_dict(json.loads(saved.read_text())["spec"], saved), target
        except (json.JSONDecodeError, KeyError, TypeError):
            raise NcdpoError(f"{saved} is damaged (not a sweep record)") from None
    spec = load_spec(target)
    folder = sweep_dir_of(spec)
    saved = folder / "sweep.json"
    if saved.is_file():
        if not resume:
            raise NcdpoError(
                f"sweep folder {folder} exists: add --resume to continue it, or give the spec another name"
            )
        try:
            old = json.loads(saved.read_text())["spec"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise NcdpoError(f"{saved} is damaged (not a sweep record)") from None
        new = dataclasses.asdict(spec)
        diff = [k for k in new if k not in ("progress_every", "max_retries") and old.get(k) != new[k]]
        if diff:
            raise NcdpoError(
                f"{target} differs from the spec sweep {folder} was started with ('{diff[0]}'); "
                f"resume with the same spec or start a new sweep (another name)"
            )
    elif resume:
        raise NcdpoError(f"nothing to resume: no sweep folder {folder}")
    return spec, folder


def run_sweep(target: str | Path, address: str = "", resume: bool = False, echo: Callable[[str], None] = print) -> int:
    """Run (or continue) a sweep and write its tables; 0 when every trial finished, 1 otherwise."""
    import ray

    spec, folder = open_sweep(target, resume)
    trials = make_trials(spec, folder)
    budget = check_trials(trials)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"spec": dataclasses.asdict(spec), "trials": [t.name for t in trials]}
    (folder / "sweep.json").write_text(json.dumps(record, indent=2) + "\n")
    states = {t.name: "queued" for t in trials}
    for t in trials:
        if run_finished(Path(t.run_dir)) and (t.eval_episodes == 0 or (Path(t.run_dir) / "eval.json").is_file()):
            states[t.name] = "done"
    todo = [t for t in trials if states[t.name] != "done"]
    echo(f"sweep {folder}: {len(trials)} trials, {len(trials) - len(todo)} done already")
    failures: dict[str, str] = {}
    started, t_start = False, time.time()
    if todo:
        started = start_ray(address)
        try:
            task = ray.remote(run_trial).options(
                num_cpus=spec.cpus_per_trial, max_retries=spec.max_retries, retry_exceptions=[TrialInterrupted]
            )
            refs = {task.remote(dataclasses.asdict(t)): t for t in todo}
            pending = list(refs)
            last = 0.0
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for ref in ready:
                    t = refs[ref]
                    try:
                        res = ray.get(ref)
                    except (
                        ray.exceptions.RayTaskError,
                        ray.exceptions.RayActorError,
                        ray.exceptions.WorkerCrashedError,
                    ) as e:
                        res = {"status": "failed", "error": _short(e)}
                    states[t.name] = res["status"]
                    if res["status"] == "failed":
                        failures[t.name] = res.get("error", "")
                        echo(f"  failed: {t.name}: {failures[t.name]}")
                    else:
                        echo(f"  done: {t.name} ({res.get('wall_s', 0):.0f} s, attempt {res.get('attempts', 1)})")
                for t in todo:
                    if states[t.name] == "queued" and _started_since(folder / f"{t.name}.trial.json", t_start):
                        states[t.name] = "running"
                if time.time() - last >= spec.progress_every or not pending:
                    echo(progress_table(trials, states, budget))
                    last = time.time()
        except KeyboardInterrupt:
            echo(f"sweep interrupted: continue it with ncdpo sweep {folder} --resume")
            raise
        finally:
            if started:
                ray.shutdown()
    summarize_sweep(trials, folder, echo)
    if failures:
        name, err = next(iter(failures.items()))
        echo(f"{len(failures)} of {len(trials)} trials failed (first: {name}: {err})")
        return 1
    return 0


def _started_since(info_path: Path, t: float) -> bool:
    """Whether the trial recorded in ``info_path`` was (re)started after ``t`` (a sweep's start)."""
    try:
        return float(json.loads(info_path.read_text())["started"]) >= t - 1.0
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _short(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip()
    return (text.splitlines()[0] if text else type(cause).__name__)[:300]


# ---------------------------------------------------------------------------------------------- tables, curves
def _mean_std(xs: Sequence[float], scale: float = 1.0) -> str:
    import numpy as np

    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return "-"
    a = np.asarray(xs, float) * scale
    return f"{a.mean():.2f} ± {a.std():.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def trial_result(t: Trial) -> dict[str, Any]:
    """The figures of a finished trial: budget used, wall time, final training return (mean of the last 5
    iterations), evaluation return / success / completion (eval.json)."""
    from ncdpo.logger import read_csv

    run = Path(t.run_dir)
    out: dict[str, Any] = {"trial": t.name, "task": t.task, "algo": t.algo, "seed": t.seed, **t.values}
    p = run / "progress.csv"
    if p.is_file():
        cols = read_csv(p)
        rets = [r for r in cols.get("charts/episodic_return", []) if math.isfinite(r)]
        out["env_steps"] = int(cols["env_steps"][-1]) if cols.get("env_steps") else 0
        out["wall_s"] = round(cols["wall_s"][-1], 1) if cols.get("wall_s") else math.nan
        out["train_return"] = sum(rets[-5:]) / len(rets[-5:]) if rets else math.nan
    ev = run / "eval.json"
    if ev.is_file():
        d = json.loads(ev.read_text())
        out["eval_return"] = d.get("return_mean", math.nan)
        for k in ("success_rate", "completion_rate"):
            if d.get(k) is not None:
                out[f"eval_{k}"] = d[k]
    return out


def summarize_sweep(trials: Sequence[Trial], folder: Path, echo: Callable[[str], None] = print) -> str:
    """``summary.csv`` (one row per finished trial), ``table.md`` (mean ± std over seeds per task, algo and grid
    values) and ``curves_<task>.png`` (training return, mean ± std over seeds); the table is returned and echoed."""
    from ncdpo.plotting import plot_runs

    done = [t for t in trials if run_finished(Path(t.run_dir))]
    rows = [trial_result(t) for t in done]
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(folder / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols or ["trial"])
        w.writeheader()
        w.writerows(rows)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for t, r in zip(done, rows):
        groups.setdefault((t.task, t.algo, tuple((k, str(v)) for k, v in t.values.items())), []).append(r)
    has = {k: any(k in r for r in rows) for k in ("eval_return", "eval_success_rate", "eval_completion_rate")}
    head = [
        "task",
        "algo",
        "values",
        "seeds",
        "env steps",
        "train return",
        *(k.replace("_", " ") for k in has if has[k]),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (task, algo, values), rs in groups.items():
        cells = [task, algo, ", ".join(f"{k}={v}" for k, v in values) or "-", str(len(rs))]
        cells += [
            str(int(sum(r.get("env_steps", 0) for r in rs) / len(rs))),
            _mean_std([r.get("train_return") for r in rs]),
        ]
        cells += [_mean_std([r.get(k) for r in rs]) for k in has if has[k]]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (folder / "table.md").write_text(table)
    for task in dict.fromkeys(t.task for t in done):
        runs = [Path(t.run_dir) for t in done if t.task == task]
        try:
            plot_runs(runs, folder / f"curves_{task.replace('/', '_')}.png", title=f"{task}: training return")
        except NcdpoError as e:  # a run without any finished episode: no curve, the table stands
            echo(f"no curves for {task}: {e}")
    echo(table.rstrip())
    return table
