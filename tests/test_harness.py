"""The benchmark harnesses' shared runner (resume with the harness's budget) and the multi-agent harness's
per-task tables, on tiny runs."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _harness import finished, resumable, run_train  # noqa: E402

TINY = [
    "--algo", "ppo", "--env", "Pendulum-v1", "--seed", "0", "--env.n-envs", "2", "--ppo.n-steps", "16",
    "--ppo.minibatch-size", "32", "--ppo.update-epochs", "1", "--save-every", "1", "--progress", "false",
    "--torch-threads", "1"
]


def last_env_steps(run: Path) -> int:
    with open(run / "progress.csv") as f:
        return int(list(csv.DictReader(f))[-1]["env_steps"])


def test_run_train_starts_skips_and_continues_with_the_harness_budget(tmp_path):
    run = tmp_path / "r"
    assert run_train(run, [*TINY, "--total-env-steps", "64"]).endswith(" s") and finished(run)  # "<name>: N s"
    assert last_env_steps(run) == 64
    assert run_train(run, [*TINY, "--total-env-steps", "64"]).endswith("done already")
    # interrupted: the final checkpoint is missing, periodic ones are there
    (run / "checkpoints" / "final.safetensors").unlink()
    assert resumable(run) and not finished(run)
    run_train(run, [*TINY, "--total-env-steps", "128"])  # a rerun with a larger budget extends the run
    assert finished(run) and last_env_steps(run) == 128
    log = (tmp_path / "r.log").read_text()
    assert "resuming" in log


def test_run_train_reports_a_failed_run(tmp_path):
    with pytest.raises(SystemExit, match="failed"):
        run_train(tmp_path / "bad", [*TINY[:3], "NoSuchEnv-v0", *TINY[4:], "--total-env-steps", "64"])


def test_multiagent_harness_writes_a_table_per_task(tmp_path):
    pytest.importorskip("mpe2")
    import multiagent

    multiagent.run_one("simple_spread", "ppo", 1, 3200, tmp_path)
    md = multiagent.summarize(["simple_spread"], ["ppo"], [1], 3200, tmp_path, episodes=2)
    task_dir = tmp_path / "simple_spread"
    assert (task_dir / "table.md").read_text() in md and "| ppo | 1 |" in md
    with open(task_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["task"] == "simple_spread" and rows[0]["final_det_win"] == "nan"
    assert (task_dir / "curves.png").is_file() and not (task_dir / "win_rate.png").exists()  # no wins in MPE


def test_manipulation_harness_keeps_every_tasks_results(tmp_path):
    """Summarising one task rewrites only that task's table; the joined table keeps the others (it once dropped
    them)."""
    import manipulation

    for task, det in (("square", "0.3"), ("lift", "0.6")):
        (tmp_path / task).mkdir()
        with open(tmp_path / task / "summary.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(manipulation.SUMMARY_HEADER)
            w.writerow([task, "ncdpo", 1, det, det, 0.5, 0.5, 100, 10.0])
        row = f"| {task} | 50 | 50 | 50 | ncdpo | 100 | 1 | {float(det) * 100:.0f} ± 0 | 0 ± 0 | 0 | 10 |"
        (tmp_path / task / "table.md").write_text("\n".join([*manipulation.table_header(50), row]) + "\n")
    (tmp_path / "stray").mkdir()  # a folder without results is not a task
    md = manipulation.merge_tables(tmp_path, 50)
    assert md.index("| lift |") < md.index("| square |") and "stray" not in md  # lift, can, square, transport order
    assert md == (tmp_path / "table.md").read_text()
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], r["success_det"]) for r in rows] == [("lift", "0.6"), ("square", "0.3")]


def test_harness_tables_every_seed_on_disk(tmp_path):
    from _harness import seeds_on_disk

    for name in ("t__ncdpo__s1", "t__ncdpo__s4", "t__ppo__s2", "t__ncdpo__s3x", "u__ncdpo__s5"):
        (tmp_path / name).mkdir()
    (tmp_path / "t__ncdpo__s7").write_text("")  # a file, not a run
    assert seeds_on_disk(tmp_path, "t", ["ncdpo", "ppo"], [3, 1]) == [1, 2, 3, 4]
    assert seeds_on_disk(tmp_path, "t", ["ppo"], []) == [2]


def test_noise_entropy_separates_chain_noise_from_the_categorical_draw(tmp_path, capsys):
    """``benchmarks/noise_entropy.py``: the MLP's marginal and per-noise entropies are one number; a freshly
    initialised epsilon-predicting chain's noise picks its action (marginal entropy above the per-noise one, the
    most likely action changes with the noise), an x0-predicting one's hardly does."""
    pytest.importorskip("mpe2")
    import noise_entropy

    from ncdpo.cli import main

    base = [
        "train", "--env", "simple_spread", "--total-env-steps", "50", "--env.n-envs", "2", "--ppo.n-steps", "25",
        "--ppo.minibatch-size", "50", "--ppo.update-epochs", "1", "--diffusion.denoising-steps", "4",
        "--diffusion.hidden-dim", "32", "--gaussian.hidden-dims", "16", "--out-dir", str(tmp_path), "--progress",
        "false", "--tensorboard", "false", "--torch-threads", "1"
    ]
    for name, extra in {
        "mlp": ["--algo", "ppo"],
        "eps": ["--algo", "ncdpo", "--diffusion.prediction", "epsilon"],  # from scratch the default is x0
        "x0": ["--algo", "ncdpo", "--diffusion.prediction", "x0"],
        "xi0": [
            "--algo", "ncdpo", "--diffusion.chain-noise-scale", "0", "--diffusion.init", "orthogonal",
            "--diffusion.out-init-scale", "0.01"
        ],
    }.items():
        assert main([*base, *extra, "--run-name", name]) == 0
    out = tmp_path / "h.csv"
    assert (
        noise_entropy.main(
            [str(tmp_path / n) for n in ("mlp", "eps", "x0", "xi0")]
            + ["--states", "60", "--noises", "16", "--n-envs", "2", "--csv", str(out)]
        )
        == 0
    )
    with open(out) as f:
        rows = {
            Path(r["run"]).name: {k: float(v) for k, v in r.items() if k not in ("run",)} for r in csv.DictReader(f)
        }
    assert rows["mlp"]["per_noise_entropy"] == rows["mlp"]["marginal_entropy"] and rows["mlp"]["argmax_agree"] == 1.0
    assert (
        rows["eps"]["marginal_entropy"] > rows["eps"]["per_noise_entropy"] + 0.3 and rows["eps"]["argmax_agree"] < 0.8
    )
    assert rows["x0"]["argmax_agree"] > rows["eps"]["argmax_agree"]
    # the saved run keeps chain_noise_scale 0: its chain ignores the noise, like the MLP
    assert rows["xi0"]["per_noise_entropy"] == pytest.approx(rows["xi0"]["marginal_entropy"], abs=1e-6)
    assert rows["xi0"]["argmax_agree"] == 1.0
    assert all(r["states"] == 60 for r in rows.values())

    # the same ablation at evaluation time: `ncdpo eval --chain-noise-scale 0` on a run trained with noise
    res = tmp_path / "fixed.json"
    assert (
        main(
            [
                "eval", str(tmp_path / "eps"), "--chain-noise-scale", "0", "--episodes", "2", "--n-envs", "2",
                "--json", str(res)
            ]
        )
        == 0
    )
    assert json.loads(res.read_text())["chain_noise_scale"] == 0.0
    assert main(["eval", str(tmp_path / "mlp"), "--chain-noise-scale", "0", "--episodes", "1"]) == 2
    assert "applies to NCDPO checkpoints only" in capsys.readouterr().err
