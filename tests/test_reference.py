"""Behaviour unchanged: same-seed runs reproduce the reference runs written before the architecture refactor.

``tests/reference/make_reference.py`` wrote them (``runs.json``: the full command lines, every config field given
explicitly; ``*/progress.csv``: what they logged; ``shipped_actions.json``: the shipped policies' actions for
fixed observations and a fixed seed). Wall-clock and memory columns aside, every column must be there and every
value must agree. On the machine that wrote them the runs are bitwise identical (``NCDPO_REFERENCE_EXACT=1``
checks that); elsewhere floating-point libraries may differ in the last bits, so by default values must agree
to a relative 1e-4 (any change of what a run computes moves them far more).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ncdpo.cli import main

REF = Path(__file__).resolve().parent / "reference"
RUNS = json.loads((REF / "runs.json").read_text())["runs"]
TIMING = {"wall_s", "charts/SPS", "perf/rollout_s", "perf/update_s", "perf/peak_mem_mb"}
EXACT = os.environ.get("NCDPO_REFERENCE_EXACT") == "1"


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


# Columns that measure floating-point error itself (the first minibatch's |ratio - 1|: 0 up to the last bits of the
# log-probabilities): a CPU with other vector instructions moves them by an ulp, so both must be float error (< 1e-5)
FLOAT_ERROR = {"losses/first_minibatch_ratio_dev"}


def same(a: str, b: str, column: str = "") -> bool:
    if EXACT or a == b:
        return a == b
    if a == "" or b == "":
        return False
    if column in FLOAT_ERROR:
        return float(a) < 1e-5 and float(b) < 1e-5
    return math.isclose(float(a), float(b), rel_tol=1e-4, abs_tol=1e-6)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_run_reproduces_the_reference(name, tmp_path):
    argv = [*RUNS[name], "--out-dir", str(tmp_path), "--run-name", name]
    cwd = os.getcwd()
    os.chdir(REF.parents[1])  # the recorded command lines name configs/ relative to the repository
    try:
        assert main(argv) == 0
    finally:
        os.chdir(cwd)
    ref_cols, ref_rows = read(REF / name / "progress.csv")
    cols, rows = read(tmp_path / name / "progress.csv")
    assert cols == ref_cols
    assert len(rows) == len(ref_rows)
    for i, (row, ref) in enumerate(zip(rows, ref_rows)):
        bad = [(k, row[k], ref[k]) for k in ref_cols if k not in TIMING and not same(row[k], ref[k], k)]
        assert not bad, f"{name} row {i + 1}: (column, now, reference) {bad[:4]}"


def test_shipped_checkpoints_give_the_reference_actions():
    from ncdpo.algos import load_agent

    ref = json.loads((REF / "shipped_actions.json").read_text())
    assert ref
    for task, entry in ref.items():
        agent, obs_norm, _ = load_agent(f"shipped:{task}")
        obs = np.asarray(entry["obs"], np.float32)
        for mode, det in (("deterministic", True), ("sampled", False)):
            torch.manual_seed(7)
            with torch.no_grad():
                a = agent.act(torch.as_tensor(obs_norm(obs)), det).action.numpy()
            want = np.asarray(entry[mode])
            if EXACT:
                assert np.array_equal(a.astype(np.float64), want), (task, mode)
            else:
                np.testing.assert_allclose(a, want, rtol=0, atol=1e-5, err_msg=f"{task} {mode}")
