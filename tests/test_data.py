"""Datasets (format, readers, validation, chunking), collection, behaviour cloning and --init loading."""

import json

import h5py
import numpy as np
import pytest
import torch

from ncdpo.algos import load_agent
from ncdpo.cli import build_parser, main, resolve_train_config
from ncdpo.config import DiffusionConfig
from ncdpo.data.dataset import Dataset, Episode, load_dataset, make_chunks
from ncdpo.errors import NcdpoError
from ncdpo.policies.diffusion import DiffusionPolicy
from ncdpo.training.trainer import Trainer

LO, HI = -np.ones(3, np.float32), np.ones(3, np.float32)


def episode(T, obs_dim=11, act_dim=3, terminated=True, seed=0):
    rng = np.random.default_rng(seed)
    dones = np.zeros(T, bool)
    dones[-1] = terminated
    return Episode(
        rng.normal(size=(T, obs_dim)).astype(np.float32),
        rng.uniform(-1, 1, (T, act_dim)).astype(np.float32),
        rng.normal(size=T).astype(np.float32),
        dones,
        not terminated,
    )


def small_dataset():
    return Dataset(
        [episode(5, seed=1), episode(3, terminated=False, seed=2), episode(7, seed=3)],
        "Hopper-v5",
        LO,
        HI,
        {"note": "test"},
    )


def test_hdf5_round_trip_keeps_everything(tmp_path):
    ds = small_dataset()
    path = ds.save(tmp_path / "d.hdf5")
    with h5py.File(path) as f:  # robomimic-like layout
        assert sorted(f["data"].keys()) == ["demo_0", "demo_1", "demo_2"]
        assert set(f["data/demo_0"].keys()) == {"obs", "actions", "rewards", "dones"}
        assert f["data"].attrs["env_id"] == "Hopper-v5" and f["data"].attrs["total"] == 15
    back = load_dataset(path)
    assert back.env_id == "Hopper-v5" and back.meta == {"note": "test"} and back.n_transitions == 15
    for a, b in zip(ds.episodes, back.episodes):
        for k in ("obs", "actions", "rewards", "dones"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
        assert a.truncated == b.truncated
    assert back.stats()["episodes"] == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_npz_flat_arrays_split_into_episodes(tmp_path):
    n = 10
    terminals = np.zeros(n, bool)
    terminals[3] = True
    timeouts = np.zeros(n, bool)
    timeouts[6] = True
    np.savez(
        tmp_path / "d.npz",
        observations=np.zeros((n, 11), np.float32),
        actions=np.zeros((n, 3), np.float32),
        rewards=np.arange(n, dtype=np.float32),
        terminals=terminals,
        timeouts=timeouts,
        env_id="Hopper-v5",
    )
    ds = load_dataset(tmp_path / "d.npz")
    assert [len(e) for e in ds.episodes] == [4, 3, 3]
    assert ds.episodes[0].dones[-1] and not ds.episodes[1].dones.any() and ds.episodes[1].truncated
    assert ds.env_id == "Hopper-v5"


def test_minari_local_dataset(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    import gymnasium as gym
    from minari.data_collector.episode_buffer import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = gym.make("Pendulum-v1", max_episode_steps=20)
    buffers = []
    for s in range(3):
        obs, _ = env.reset(seed=s)
        ep = {"observations": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
        for _ in range(20):
            a = env.action_space.sample()
            obs, r, term, trunc, _ = env.step(a)
            for k, v in zip(
                ("observations", "actions", "rewards", "terminations", "truncations"), (obs, a, r, term, trunc)
            ):
                ep[k].append(v)
            if term or trunc:
                break
        buffers.append(EpisodeBuffer(id=s, **{k: np.asarray(v) for k, v in ep.items()}))
    minari.create_dataset_from_buffers("ncdpo/pendulum-test-v0", buffers, env=env, algorithm_name="random")
    ds = load_dataset("minari:ncdpo/pendulum-test-v0")
    assert len(ds.episodes) == 3 and ds.obs_dim == 3 and ds.act_dim == 1 and ds.n_transitions == 60
    assert ds.action_high[0] == pytest.approx(2.0)
    with pytest.raises(NcdpoError, match="cannot be loaded locally"):
        load_dataset("minari:ncdpo/absent-v0")
    del minari


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: setattr(e, "actions", e.actions[:-1]), "lengths disagree"),
        (lambda e: setattr(e, "obs", e.obs[:, :, None]), "must be 2-D"),
        (lambda e: e.obs.__setitem__((1, 2), np.nan), "'obs' contains NaN"),
        (lambda e: e.rewards.__setitem__(0, np.inf), "'rewards' contains NaN"),
        (lambda e: e.dones.__setitem__(0, True), "'dones' is set before the last step"),
    ],
)
def test_invalid_episodes_are_rejected_on_save_and_load(tmp_path, mutate, message):
    ds = small_dataset()
    mutate(ds.episodes[1])
    with pytest.raises(NcdpoError, match=message):
        ds.save(tmp_path / "bad.hdf5")
    # Written by hand (bypassing save's validation), the loader catches it too.
    with h5py.File(tmp_path / "bad.hdf5", "w") as f:
        for i, e in enumerate(ds.episodes):
            for k, v in (("obs", e.obs), ("actions", e.actions), ("rewards", e.rewards), ("dones", e.dones)):
                f.create_dataset(f"data/demo_{i}/{k}", data=v)
    with pytest.raises(NcdpoError, match=message):
        load_dataset(tmp_path / "bad.hdf5")


def test_bad_files_give_one_line_errors(tmp_path, capsys):
    path = small_dataset().save(tmp_path / "d.hdf5")
    data = path.read_bytes()
    (tmp_path / "trunc.hdf5").write_bytes(data[: len(data) // 2])
    with pytest.raises(NcdpoError, match="truncated or corrupt|damaged"):
        load_dataset(tmp_path / "trunc.hdf5")
    with pytest.raises(NcdpoError, match="not found"):
        load_dataset(tmp_path / "absent.hdf5")
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(NcdpoError, match="unknown file type"):
        load_dataset(tmp_path / "d.csv")
    np.savez(tmp_path / "x.npz", observations=np.zeros((4, 11)), rewards=np.zeros(4))
    with pytest.raises(NcdpoError, match="lacks array 'actions'"):
        load_dataset(tmp_path / "x.npz")
    # Action dimension that does not fit the env, through the CLI: one line, exit 2.
    wrong = Dataset([episode(20, act_dim=2)], "", -np.ones(2, np.float32), np.ones(2, np.float32))
    wrong.save(tmp_path / "wrong.hdf5")
    code = main(
        [
            "pretrain", "--dataset", str(tmp_path / "wrong.hdf5"), "--env", "Hopper-v5", "--out-dir", str(tmp_path),
            "--progress", "false"
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "action dimension 2 but Hopper-v5 has 3" in err and len(err.splitlines()) == 1


def test_chunks_never_cross_episode_boundaries():
    e1 = Episode(
        np.zeros((3, 1), np.float32),
        np.array([[0.1], [0.2], [0.3]], np.float32),
        np.zeros(3, np.float32),
        np.array([0, 0, 1], bool),
    )
    e2 = Episode(
        np.ones((2, 1), np.float32),
        np.array([[-0.5], [-0.6]], np.float32),
        np.zeros(2, np.float32),
        np.array([0, 1], bool),
    )
    ds = Dataset([e1, e2], "", -np.ones(1, np.float32), np.ones(1, np.float32))
    obs, chunks = make_chunks(ds, horizon=3)
    assert obs.shape == (5, 1) and chunks.shape == (5, 3, 1)
    np.testing.assert_allclose(
        chunks[:, :, 0],
        [[0.1, 0.2, 0.3], [0.2, 0.3, 0.3], [0.3, 0.3, 0.3], [-0.5, -0.6, -0.6], [-0.6, -0.6, -0.6]],
        rtol=1e-6,
    )
    # Actions are normalised by the env's bounds.
    ds2 = Dataset([e1], "", -2 * np.ones(1, np.float32), 2 * np.ones(1, np.float32))
    np.testing.assert_allclose(make_chunks(ds2, 1)[1][:, 0, 0], [0.05, 0.1, 0.15], rtol=1e-6)


def test_bc_keeps_both_modes_of_a_bimodal_target():
    """One observation, two equally likely actions (+0.7 and -0.7): a diffusion policy keeps both modes."""
    torch.manual_seed(0)
    cfg = DiffusionConfig(denoising_steps=10, hidden_dim=64, num_blocks=1)
    pol = DiffusionPolicy(obs_dim=2, act_dim=1, horizon=1, act_steps=1, cfg=cfg)
    opt = torch.optim.Adam(pol.parameters(), lr=2e-3)
    obs = torch.zeros(256, 2)
    losses = []
    for _ in range(1500):
        sign = torch.randint(0, 2, (256, 1, 1)) * 2 - 1
        loss = pol.bc_loss(obs, 0.7 * sign.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-100:]) < 0.6 * np.mean(losses[:100])
    with torch.no_grad():
        a = pol.act(torch.zeros(2000, 2), deterministic=True, generator=torch.Generator().manual_seed(1))[0].flatten()
    near_pos = ((a - 0.7).abs() < 0.2).float().mean()
    near_neg = ((a + 0.7).abs() < 0.2).float().mean()
    assert near_pos > 0.3 and near_neg > 0.3 and near_pos + near_neg > 0.85
    # A Gaussian fitted to the same data puts its mean between the modes, where no demonstration acts.
    assert ((a.abs() < 0.2).float().mean()) < 0.05


def test_collect_pretrain_then_finetune_from_the_checkpoint(tmp_path, tiny_args, capsys):
    assert main(tiny_args("ppo", steps=256, name="expert")) == 0
    out = tmp_path / "demo.hdf5"
    assert (
        main(
            [
                "collect", str(tmp_path / "expert"), "--out", str(out), "--episodes", "4", "--action-noise", "0.1",
                "--n-envs", "2"
            ]
        )
        == 0
    )
    assert "4 episodes" in capsys.readouterr().out
    ds = load_dataset(out)
    assert len(ds.episodes) == 4 and ds.env_id == "Hopper-v5" and ds.meta["action_noise"] == 0.1
    assert all(e.dones[-1] or e.truncated for e in ds.episodes)
    assert main(["collect", str(tmp_path / "expert"), "--out", str(out), "--episodes", "1"]) == 2  # no silent overwrite

    bc = [
        "pretrain", "--dataset", str(out), "--horizon", "4", "--act-steps", "2", "--pretrain.steps", "60",
        "--pretrain.warmup-steps", "10", "--pretrain.log-every", "20", "--diffusion.denoising-steps", "4",
        "--diffusion.hidden-dim", "32", "--diffusion.prediction", "x0", "--out-dir", str(tmp_path), "--run-name",
        "bc", "--progress", "false", "--tensorboard", "false", "--eval-every", "30", "--eval-episodes", "1"
    ]
    assert main(bc) == 0
    log = (tmp_path / "bc" / "progress.csv").read_text().splitlines()
    assert log[0].startswith("step,") and [r.split(",")[0] for r in log[1:]] == ["20", "30", "40", "60"]
    ck = tmp_path / "bc" / "checkpoints" / "final.safetensors"

    # Fine-tuning inherits the checkpoint's architecture, task and frozen dataset statistics...
    args, extra = build_parser().parse_known_args(
        [
            "train", "--init", str(ck), "--total-env-steps", "64", "--env.n-envs", "2", "--ppo.n-steps", "8",
            "--out-dir", str(tmp_path), "--run-name", "ft", "--progress", "false", "--tensorboard", "false"
        ]
    )
    cfg = resolve_train_config(args, extra)
    assert (cfg.env.id, cfg.horizon, cfg.act_steps, cfg.diffusion.denoising_steps, cfg.diffusion.hidden_dim) == (
        "Hopper-v5",
        4,
        2,
        4,
        32,
    )
    assert cfg.env.update_obs_norm is False and cfg.diffusion.prediction == "x0"
    # ... and acts exactly as the pre-trained policy for the same observation and noise.
    bc_agent, bc_norm, _ = load_agent(ck)
    tr = Trainer(cfg)
    obs = torch.as_tensor(bc_norm(np.random.default_rng(0).normal(size=(5, 11))))
    np.testing.assert_array_equal(tr.obs_norm(np.ones((2, 11))), bc_norm(np.ones((2, 11))))
    noise = bc_agent.policy.sample_noise(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            tr.agent.policy.chain_mean(obs, noise), bc_agent.policy.chain_mean(obs, noise), rtol=0, atol=0
        )
    tr.run()
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["init"] == str(ck)
    # overriding what the weights mean is refused, not silently loaded
    args, extra = build_parser().parse_known_args(
        [
            "train", "--init", str(ck), "--diffusion.prediction", "epsilon", "--out-dir", str(tmp_path), "--run-name",
            "ft2"
        ]
    )
    with pytest.raises(NcdpoError, match="predicts 'x0' but this run sets diffusion.prediction 'epsilon'"):
        Trainer(resolve_train_config(args, extra))


def test_critic_warmup_leaves_the_policy_untouched(tmp_path, tiny_args):
    cfg = resolve_train_config(
        *build_parser().parse_known_args(tiny_args("ncdpo", steps=128, extra=["--ppo.critic-warmup-iters", "1"]))
    )
    tr = Trainer(cfg)
    before = {k: v.clone() for k, v in tr.agent.state_dict().items()}
    tr.run()
    after = tr.agent.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("policy."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("critic."))


def test_shipped_names_resolve_or_fail_clearly(tmp_path, monkeypatch):
    import ncdpo.shipped as shipped

    monkeypatch.setattr(shipped, "ASSETS", tmp_path)
    monkeypatch.setattr(shipped, "MANIPULATION_ASSETS", tmp_path / "none")
    (tmp_path / "Hopper-v5").mkdir()
    small_dataset().save(tmp_path / "Hopper-v5" / "medium.hdf5")
    (tmp_path / "Hopper-v5" / "medium_bc.safetensors").write_bytes(b"x")
    assert load_dataset("shipped:Hopper-v5").n_transitions == 15
    assert shipped.resolve("shipped:Hopper-v5", "checkpoint").name == "medium_bc.safetensors"
    assert shipped.available() == ["Hopper-v5"]
    with pytest.raises(NcdpoError, match="no shipped checkpoint for 'Ant-v5' \\(shipped: Hopper-v5\\)"):
        shipped.resolve("shipped:Ant-v5", "checkpoint")
    assert str(shipped.resolve("runs/x", "checkpoint")) == "runs/x"


@pytest.mark.parametrize("task", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
def test_shipped_assets_load_and_act(task, capsys):
    import ncdpo.shipped as shipped

    assert task in shipped.available()
    ds = load_dataset(f"shipped:{task}")
    summary = json.loads((shipped.ASSETS / task / "summary.json").read_text())
    assert ds.env_id == task and ds.n_transitions == summary["datasets"]["medium"]["transitions"]
    assert abs(ds.stats()["return_mean"] - summary["datasets"]["medium"]["return_mean"]) < 1e-3
    agent, _, ck = load_agent(f"shipped:{task}")
    assert ck.meta["kind"] == "pretrain" and ck.config.env.id == task and ck.obs_dim == ds.obs_dim
    assert main(["eval", f"shipped:{task}", "--episodes", "1"]) == 0
    assert task in capsys.readouterr().out
