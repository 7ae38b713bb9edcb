"""What the benchmark scripts share: running one ``ncdpo train`` run so that a harness can be rerun at will.

A run is skipped when finished, continued with ``ncdpo train --resume`` when interrupted after a checkpoint,
and started afresh otherwise; its console output is appended to ``<run>.log``. A continued run takes the
harness's ``--total-env-steps``, so rerunning a harness with another budget shortens or extends the unfinished
runs (for runs whose schedules depend on the budget, such as ``--ppo.anneal-lr``, that is not the same as a fresh
run with the new budget).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

NCDPO = [sys.executable, "-m", "ncdpo.cli"]


def finished(run: Path) -> bool:
    """A run counts as done when its final checkpoint, or (in a clone without checkpoints) its evaluation
    (``eval.json``, or ``eval_det.json`` for the manipulation harness), exists."""
    return (run / "checkpoints" / "final.safetensors").is_file() or any(
        (run / f).is_file() for f in ("eval.json", "eval_det.json")
    )


def resumable(run: Path) -> bool:
    """An interrupted run with a checkpoint that ``ncdpo train --resume`` can continue."""
    ck = run / "checkpoints"
    return ck.is_dir() and any(ck.glob("iter_*.safetensors"))


def run_train(run: Path, train_args: list[str]) -> str:
    """Skip, continue or start the run ``run`` (``train_args``: the ``ncdpo train`` options of a fresh start)."""
    if finished(run):
        return f"{run.name}: done already"
    if resumable(run):
        # the harness's budget wins, so a rerun with another --steps shortens or extends an interrupted run
        budget = train_args[train_args.index("--total-env-steps") :][:2] if "--total-env-steps" in train_args else []
        cmd = [*NCDPO, "train", "--resume", str(run), "--progress", "false", *budget]
    else:
        cmd = [*NCDPO, "train", *train_args, "--out-dir", str(run.parent), "--run-name", run.name, "--overwrite"]
    t0 = time.time()
    run.parent.mkdir(parents=True, exist_ok=True)
    log_path = run.parent / f"{run.name}.log"
    with open(log_path, "a") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0 and not finished(run):  # (a resume that found the run complete restores its final checkpoint)
        raise SystemExit(f"{run.name} failed (exit {rc}); see {log_path}")
    return f"{run.name}: {time.time() - t0:.0f} s"


def eval_json(target: str, res: Path, episodes: int, seed: int, extra: list[str] = ()) -> dict:
    """``ncdpo eval TARGET`` over ``episodes`` episodes with ``seed``, cached in the JSON file ``res``."""
    if not res.is_file():
        subprocess.check_call(
            [*NCDPO, "eval", target, "--episodes", str(episodes), "--seed", str(seed), "--json", str(res), *extra],
            stdout=subprocess.DEVNULL,
        )
    return json.loads(res.read_text())


def seeds_on_disk(task_dir: Path, task: str, algos: list[str], seeds: list[int]) -> list[int]:
    """``seeds`` and every other seed with a run folder of one of ``algos`` in ``task_dir``, in order (so a table's
    rows do not depend on how the harness was called)."""
    found = {
        int(m.group(1))
        for a in algos
        for d in task_dir.glob(f"{task}__{a}__s*")
        if d.is_dir() and (m := re.fullmatch(rf"{re.escape(task)}__{re.escape(a)}__s(\d+)", d.name))
    }
    return sorted(found | set(seeds))
