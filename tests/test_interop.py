"""Datasets in the formats other tools write (robomimic's own HDF5, D4RL's flat HDF5, LeRobot v2.1 / v3.0 folders),
each built here the way its tool lays it out and trained on through ``ncdpo pretrain``; policies out for deployment
(``ncdpo export --format torchscript | onnx``) that act exactly as ``ncdpo.load_policy``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import ncdpo
from ncdpo.cli import main
from ncdpo.data.dataset import load_dataset
from ncdpo.data.options import ReadOptions
from ncdpo.envs.manipulation import robosuite_available
from ncdpo.errors import NcdpoError

needs_robosuite = pytest.mark.skipif(not robosuite_available(), reason="robosuite is not installed")
LIFT_KEYS = [("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2), ("object", 10)]
SMALL = ["--horizon", "4", "--act-steps", "4", "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "32",
         "--pretrain.steps", "6", "--pretrain.batch-size", "16", "--pretrain.log-every", "3", "--progress", "false",
         "--tensorboard", "false", "--eval-every", "0"]  # fmt: skip
OSC_14 = {"type": "OSC_POSE", "kp": 150, "control_delta": True}  # robosuite 1.4's controller config
OSC_15 = {"type": "BASIC", "body_parts": {"right": {"type": "OSC_POSE", "gripper": {"type": "GRIP"}}}}  # 1.5's
ENV_ARGS_14 = {"env_name": "Lift", "type": 1, "env_version": "1.4.1",
               "env_kwargs": {"robots": ["Panda"], "control_freq": 20, "controller_configs": OSC_14}}  # fmt: skip
ENV_ARGS_15 = {"env_name": "Lift", "type": 1, "env_version": "1.5.1",
               "env_kwargs": {"robots": ["Panda"], "controller_configs": OSC_15}}  # fmt: skip


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------------------------------------- writers
def write_robomimic(path: Path, episodes, keys, env_args, masks=None, empty=None):
    """A file as robomimic's dataset_states_to_obs.py writes it: obs/ and next_obs/ groups (float64 low-dim keys,
    uint8 images), states, actions, rewards, dones (set on every success step), env_args JSON, mask/<filter>."""
    with h5py.File(path, "w") as f:
        g = f.create_group("data")
        g.attrs["total"] = sum(len(e["actions"]) for e in episodes)
        g.attrs["env_args"] = json.dumps(env_args)
        for i, e in enumerate(episodes):
            d = g.create_group(f"demo_{i}")
            T = 0 if empty == i else len(e["actions"])
            d.attrs["num_samples"] = T
            d.attrs["model_file"] = "<mujoco model='base'/>"
            for k in keys:
                v = e["obs"][k][:T]
                v = v if v.dtype == np.uint8 else v.astype(np.float64)
                d.create_dataset(f"obs/{k}", data=v)
                d.create_dataset(f"next_obs/{k}", data=np.concatenate([v[1:], v[-1:]]) if T else v)
            d.create_dataset("states", data=np.zeros((T, 32)))
            d.create_dataset("actions", data=e["actions"][:T].astype(np.float64))
            d.create_dataset("rewards", data=e["rewards"][:T].astype(np.float64))
            d.create_dataset("dones", data=e["dones"][:T].astype(np.int64))
        for name, demos in (masks or {}).items():
            f.create_dataset(f"mask/{name}", data=np.array([f"demo_{i}" for i in demos], dtype="S"))


def lift_episodes(n: int):
    """The first ``n`` shipped Lift demonstrations split into robomimic's keys; a success also sets ``dones`` on
    the steps before the last at which the cube is up (robomimic marks every success step)."""
    src = load_dataset("shipped:lift")
    out = []
    for e in src.episodes[:n]:
        obs, start = {}, 0
        for k, d in LIFT_KEYS:
            obs[k] = e.obs[:, start : start + d]
            start += d
        dones = e.dones.copy()
        if dones[-1]:
            dones[-3:] = True
        out.append({"obs": obs, "actions": e.actions, "rewards": e.rewards, "dones": dones})
    return src, out


def write_d4rl(path: Path, src, extra_timeout_at=None):
    """D4RL's flat HDF5: observations, actions, rewards, terminals, timeouts, plus infos/ and metadata/ groups."""
    obs = np.concatenate([e.obs for e in src.episodes])
    act = np.concatenate([e.actions for e in src.episodes])
    rew = np.concatenate([e.rewards for e in src.episodes])
    term = np.concatenate([e.dones for e in src.episodes])
    tout = np.concatenate([np.eye(1, len(e), len(e) - 1, dtype=bool)[0] & e.truncated for e in src.episodes])
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=obs)
        f.create_dataset("next_observations", data=np.roll(obs, -1, 0))
        f.create_dataset("actions", data=act)
        f.create_dataset("rewards", data=rew)
        f.create_dataset("terminals", data=term)
        f.create_dataset("timeouts", data=tout)
        f.create_dataset("infos/qpos", data=np.zeros((len(obs), 6)))
        f.create_dataset("metadata/algorithm", data="SAC")
    return obs, act, term, tout


def write_lerobot(root: Path, episodes, version: str, state_dim: int, act_dim: int, images=None, video=False):
    """A LeRobot dataset folder: meta/info.json, per-episode metadata (v2.1: episodes.jsonl; v3.0: parquet), frames
    in parquet (v2.1: one file per episode; v3.0: several episodes per file). ``images``: per episode a (T, H, W, 3)
    uint8 array stored as PNG bytes (LeRobot's 'image' dtype)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    feats = {
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "action": {"dtype": "float32", "shape": [act_dim], "names": None},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if images is not None:
        h, w = images[0].shape[1:3]
        feats["observation.images.cam"] = {"dtype": "video" if video else "image", "shape": [h, w, 3],
                                           "names": ["height", "width", "channel"]}  # fmt: skip
    v3 = version == "v3.0"
    info = {
        "codebase_version": version, "robot_type": "sim", "fps": 20, "total_episodes": len(episodes),
        "total_frames": sum(len(e["actions"]) for e in episodes), "total_tasks": 1, "chunks_size": 1000,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet" if v3
        else "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": None, "features": feats, "splits": {"train": f"0:{len(episodes)}"},
    }  # fmt: skip
    (root / "meta").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    tables, index = [], 0
    for i, e in enumerate(episodes):
        T = len(e["actions"])
        cols = {
            "observation.state": pa.array(list(e["obs"].astype(np.float32)), pa.list_(pa.float32(), state_dim)),
            "action": pa.array(list(e["actions"].astype(np.float32)), pa.list_(pa.float32(), act_dim)),
            "next.reward": pa.array(e["rewards"].astype(np.float32)),
            "next.done": pa.array(e["dones"].astype(bool)),
            "timestamp": pa.array(np.arange(T, dtype=np.float32) / 20),
            "frame_index": pa.array(np.arange(T)),
            "episode_index": pa.array(np.full(T, i)),
            "index": pa.array(np.arange(index, index + T)),
            "task_index": pa.array(np.zeros(T, np.int64)),
        }
        if images is not None:
            enc = []
            for img in images[i]:
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                enc.append({"bytes": buf.getvalue(), "path": None})
            cols["observation.images.cam"] = pa.array(enc, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        tables.append(pa.table(cols))
        index += T
    if v3:  # episodes 0 .. n-2 in file-000 (shuffled rows: the reader orders them), the last in file-001
        first = pa.concat_tables(tables[:-1])
        first = first.take(np.random.default_rng(0).permutation(first.num_rows))
        pq.write_table(first, root / "data" / "chunk-000" / "file-000.parquet")
        pq.write_table(tables[-1], root / "data" / "chunk-000" / "file-001.parquet")
        (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        lengths = [len(e["actions"]) for e in episodes]
        meta = pa.table({"episode_index": pa.array(np.arange(len(episodes))), "length": pa.array(lengths),
                         "data/chunk_index": pa.array(np.zeros(len(episodes), np.int64)),
                         "data/file_index": pa.array([0] * (len(episodes) - 1) + [1])})  # fmt: skip
        pq.write_table(meta, root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    else:
        for i, t in enumerate(tables):
            pq.write_table(t, root / "data" / "chunk-000" / f"episode_{i:06d}.parquet")
        lines = [json.dumps({"episode_index": i, "tasks": ["hop"], "length": len(e["actions"])})
                 for i, e in enumerate(episodes)]  # fmt: skip
        (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
        (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "hop"}) + "\n")


def hopper_episodes(n: int):
    src = load_dataset("shipped:Hopper-v5")
    eps = [{"obs": e.obs, "actions": e.actions, "rewards": e.rewards, "dones": e.dones} for e in src.episodes[:n]]
    return src, eps


# ---------------------------------------------------------------------------------------------- robomimic
@needs_robosuite
def test_robomimic_file_loads_as_the_shipped_data_and_clones_bit_for_bit(tmp_path, capsys):
    """robomimic's own layout of shipped:lift: the same episodes (keys concatenated in the task's order, success
    dones at the end only), and ``ncdpo pretrain`` on it trains exactly the policy the shipped file trains."""
    src, eps = lift_episodes(12)
    path = tmp_path / "low_dim.hdf5"
    write_robomimic(path, eps, [k for k, _ in LIFT_KEYS], ENV_ARGS_14, masks={"train": range(10), "valid": [10, 11]})
    ds = load_dataset(path, ReadOptions(env_id="lift"))
    assert ds.env_id == "lift" and len(ds.episodes) == 12 and ds.meta["controller"] == "OSC_POSE"
    for a, b in zip(src.episodes, ds.episodes):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.dones, b.dones)
        assert a.truncated == b.truncated
    # the same data through the CLI, with the env named by env_args alone, and from the shipped layout
    from ncdpo.data.dataset import Dataset

    Dataset(src.episodes[:12], "lift", src.action_low, src.action_high).save(tmp_path / "ours.hdf5")
    from ncdpo.data.robomimic import save_robomimic  # and back: this package's data in robomimic's layout

    with h5py.File(save_robomimic(load_dataset(tmp_path / "ours.hdf5"), tmp_path / "back.hdf5")) as f:
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "Lift"
        assert f["data/demo_0/obs/object"].shape == (len(src.episodes[0]), 10) and len(f["mask/train"]) == 12
    back = load_dataset(tmp_path / "back.hdf5")
    assert back.env_id == "lift" and all(np.array_equal(a.obs, b.obs) for a, b in zip(src.episodes, back.episodes))
    for name, f in (("rm", path), ("ours", tmp_path / "ours.hdf5")):
        assert main(["pretrain", "--dataset", str(f), "--out-dir", str(tmp_path), "--run-name", name, *SMALL]) == 0
    a, b = ncdpo.load_policy(tmp_path / "rm"), ncdpo.load_policy(tmp_path / "ours")
    assert a.env_id == "lift"
    for k, v in a.agent.policy.state_dict().items():
        assert torch.equal(v, b.agent.policy.state_dict()[k]), k
    # a filter key keeps its demos; robosuite 1.5's composite controller config is accepted too
    write_robomimic(path, eps, [k for k, _ in LIFT_KEYS], ENV_ARGS_15, masks={"train": range(10), "valid": [10, 11]})
    ds = load_dataset(path, ReadOptions(filter_key="valid", env_id="lift"))
    assert len(ds.episodes) == 2 and ds.meta["demos"] == ["demo_10", "demo_11"]
    assert ds.meta["controller"] == "BASIC/OSC_POSE"
    np.testing.assert_array_equal(ds.episodes[1].actions, src.episodes[11].actions)
    args = ["pretrain", "--dataset", str(path), "--dataset-filter", "train", "--out-dir", str(tmp_path),
            "--run-name", "filtered", *SMALL]  # fmt: skip
    assert main(args) == 0
    assert json.loads((tmp_path / "filtered" / "config.json").read_text())["pretrain"]["dataset_filter"] == "train"
    # keys chosen and ordered by flag (here: the same ones spelled out)
    keys = [k for k, _ in LIFT_KEYS]
    ds2 = load_dataset(path, ReadOptions(obs_keys=tuple(keys), env_id="lift"))
    np.testing.assert_array_equal(ds2.episodes[0].obs, src.episodes[0].obs)
    ds3 = load_dataset(path, ReadOptions(obs_keys=("object", "robot0_eef_pos"), env_id="lift"))
    np.testing.assert_array_equal(ds3.episodes[0].obs[:, :10], src.episodes[0].obs[:, 9:19])
    # ... which no longer fits lift's 19 numbers: one line
    capsys.readouterr()
    assert main([*args[:3], "--dataset-obs-keys", "object", "robot0_eef_pos", *args[3:6], "bad", *SMALL]) == 2
    assert "observation dimension 13 but lift has 19" in one_line(capsys)


@needs_robosuite
def test_robomimic_malformed_files_are_one_line(tmp_path, capsys):
    _, eps = lift_episodes(3)
    keys = [k for k, _ in LIFT_KEYS]

    def pretrain(path, *extra):
        capsys.readouterr()
        code = main(["pretrain", "--dataset", str(path), "--out-dir", str(tmp_path), "--run-name", "x",
                     "--overwrite", *extra, *SMALL])  # fmt: skip
        return code, (one_line(capsys) if code else "")

    p = tmp_path / "a.hdf5"
    write_robomimic(p, eps, keys[:3], ENV_ARGS_14)  # no 'object'
    assert pretrain(p)[1].endswith(
        "demo_0 has no observation key 'object' (it has: robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos)"
    )
    write_robomimic(p, eps, keys, ENV_ARGS_14, masks={"train": [0, 1]})
    assert "has no filter key '20_percent' (mask/20_percent; it has: train)" in pretrain(p, "--dataset-filter",
                                                                                         "20_percent")[1]  # fmt: skip
    write_robomimic(p, eps, keys, ENV_ARGS_14, empty=1)
    assert "demo_1 is empty" in pretrain(p)[1]
    write_robomimic(p, eps, keys, dict(ENV_ARGS_14, env_name="PickPlaceCan"))
    assert "recorded on robosuite env 'PickPlaceCan' but lift is robosuite 'Lift'" in pretrain(p, "--env", "lift")[1]
    bad = [dict(e, actions=e["actions"][:, :6]) for e in eps]
    write_robomimic(p, bad, keys, ENV_ARGS_14)
    assert "action dimension 6 but lift has 7" in pretrain(p)[1]
    nan = [dict(e, obs=dict(e["obs"], object=np.where(np.arange(len(e["actions"]))[:, None] == 2, np.nan,
                                                      e["obs"]["object"]))) for e in eps]  # fmt: skip
    write_robomimic(p, nan, keys, ENV_ARGS_14)
    assert "'obs' contains NaN or inf" in pretrain(p)[1]
    with h5py.File(p, "w") as f:  # robosuite's raw demo.hdf5 after robomimic's conversion: states, no obs
        f.create_group("data").attrs["env_args"] = json.dumps(ENV_ARGS_14)
        f.create_dataset("data/demo_0/states", data=np.zeros((5, 32)))
        f.create_dataset("data/demo_0/actions", data=np.zeros((5, 7)))
    assert "states-only robomimic file" in pretrain(p)[1]
    with h5py.File(p, "w") as f:
        f.create_dataset("something", data=np.zeros(3))
    assert "has neither a 'data' group" in pretrain(p, "--env", "lift")[1]
    # a filter or key flag on a format without named keys is refused, not ignored
    from ncdpo.data.dataset import Dataset

    src = load_dataset("shipped:lift")
    Dataset(src.episodes[:2], "lift", src.action_low, src.action_high).save(tmp_path / "ours.hdf5")
    assert "drop --dataset-filter" in pretrain(tmp_path / "ours.hdf5", "--dataset-filter", "train")[1]


def test_robomimic_images_go_into_a_dict_observation(tmp_path, capsys):
    """A robomimic image file (obs/<camera>_image uint8) trains a camera policy; keys renamed with ENV=DATA."""
    from test_vision import IMG_ENV, SIZE

    rng = np.random.default_rng(0)
    eps = []
    for T in (7, 5, 9):
        eps.append({"obs": {"agentview_image": rng.integers(0, 255, (T, SIZE, SIZE, 3), dtype=np.uint8),
                            "pos": rng.uniform(-1, 1, (T, 2))},
                    "actions": rng.uniform(-1, 1, (T, 2)), "rewards": np.zeros(T), "dones": np.zeros(T)})  # fmt: skip
    p = tmp_path / "image.hdf5"
    write_robomimic(p, eps, ["agentview_image", "pos"], {"env_name": "ImageReach", "type": 1, "env_kwargs": {}})
    small = ["--encoder.channels", "8", "--encoder.feature-dim", "16", "--horizon", "2", "--act-steps", "2",
             "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "32", "--pretrain.steps", "4",
             "--pretrain.batch-size", "8", "--progress", "false", "--tensorboard", "false", "--eval-every", "0",
             "--out-dir", str(tmp_path)]  # fmt: skip
    code = main(["pretrain", "--dataset", str(p), "--env", IMG_ENV, "--dataset-obs-keys",
                 "cam_image=agentview_image", "pos", "--run-name", "img", *small])  # fmt: skip
    assert code == 0
    pol = ncdpo.load_policy(tmp_path / "img")
    assert pol.obs_spec.names == ["cam_image", "pos"]
    ds = load_dataset(p, ReadOptions(obs_keys=("cam_image=agentview_image", "pos"), obs_spec=pol.obs_spec))
    img = ds.episodes[2].obs["cam_image"]
    assert img.dtype == np.uint8 and img.shape == (9, SIZE, SIZE, 3)
    np.testing.assert_array_equal(ds.episodes[0].obs["cam_image"], eps[0]["obs"]["agentview_image"])
    assert all(e.truncated for e in ds.episodes)  # robomimic's dones are all 0: cut episodes
    # without the renaming the env's image entry is missing: one line naming it
    capsys.readouterr()
    assert main(["pretrain", "--dataset", str(p), "--env", IMG_ENV, "--run-name", "bad", *small]) == 2
    assert "has no observation key 'cam_image' (it has: agentview_image, pos)" in one_line(capsys)
    with pytest.raises(NcdpoError, match="must be NAME or ENV_NAME=DATASET_KEY"):
        load_dataset(p, ReadOptions(obs_keys=("=pos",), obs_spec=pol.obs_spec))


# ---------------------------------------------------------------------------------------------- D4RL
def test_d4rl_hdf5_keeps_timeouts_and_terminals_apart_and_trains(tmp_path, capsys):
    src = load_dataset("shipped:Hopper-v5")
    src.episodes = src.episodes[:6]
    for i in (1, 3):  # time-limit cuts between terminations
        src.episodes[i].dones[:] = False
        src.episodes[i].truncated = True
    p = tmp_path / "hopper-medium-v2.hdf5"
    write_d4rl(p, src)
    ds = load_dataset(p)
    assert len(ds.episodes) == 6 and ds.meta["source"] == "d4rl"
    for a, b in zip(src.episodes, ds.episodes):
        np.testing.assert_array_equal(a.obs, b.obs)
        assert a.truncated == b.truncated and bool(b.dones[-1]) == (not a.truncated)
    args = ["pretrain", "--dataset", str(p), "--env", "Hopper-v5", "--out-dir", str(tmp_path), "--run-name", "d4rl"]
    assert main([*args, *SMALL]) == 0
    capsys.readouterr()
    assert main([*args, "--overwrite", "--dataset-obs-keys", "observations", *SMALL]) == 2
    assert "D4RL layout" in one_line(capsys)


# ---------------------------------------------------------------------------------------------- LeRobot
@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_folder_trains_through_the_cli(tmp_path, capsys, version):
    src, eps = hopper_episodes(5)
    root = tmp_path / "lerobot_hopper"
    write_lerobot(root, eps, version, 11, 3)
    ds = load_dataset(root, ReadOptions(env_id="Hopper-v5"))
    assert len(ds.episodes) == 5 and ds.meta["codebase_version"] == version
    for a, b in zip(src.episodes, ds.episodes):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        assert a.truncated == b.truncated
    args = ["pretrain", "--dataset", str(root), "--env", "Hopper-v5", "--out-dir", str(tmp_path), "--run-name", "lr"]
    assert main([*args, "--dataset-obs-keys", "observation.state", "--dataset-action-key", "action", *SMALL]) == 0
    assert ncdpo.load_policy(tmp_path / "lr").env_id == "Hopper-v5"
    capsys.readouterr()
    assert main([*args, "--overwrite", "--dataset-obs-keys", "observation.joints", *SMALL]) == 2
    assert "has no feature 'observation.joints' (it has: observation.state, action" in one_line(capsys)


def test_lerobot_images_and_malformed_folders(tmp_path, capsys):
    from test_vision import IMG_ENV, SIZE, ImageReach

    from ncdpo.observations import ObsSpec

    rng = np.random.default_rng(1)
    eps, imgs = [], []
    for T in (4, 6):
        eps.append({"obs": rng.uniform(-1, 1, (T, 2)), "actions": rng.uniform(-1, 1, (T, 2)), "rewards": np.ones(T),
                    "dones": np.eye(1, T, T - 1)[0]})  # fmt: skip
        imgs.append(rng.integers(0, 255, (T, SIZE, SIZE, 3), dtype=np.uint8))
    root = tmp_path / "img"
    write_lerobot(root, eps, "v3.0", 2, 2, images=imgs)
    spec = ObsSpec.from_space(ImageReach().observation_space)
    ds = load_dataset(root, ReadOptions(obs_keys=("cam_image=observation.images.cam", "pos=observation.state"),
                                        obs_spec=spec, env_id=IMG_ENV))  # fmt: skip
    np.testing.assert_array_equal(ds.episodes[1].obs["cam_image"], imgs[1])  # PNG is lossless
    assert not ds.episodes[0].truncated and ds.episodes[0].dones.tolist() == [False, False, False, True]
    small = ["--encoder.channels", "8", "--encoder.feature-dim", "16", "--horizon", "2", "--act-steps", "2",
             "--diffusion.denoising-steps", "3", "--diffusion.hidden-dim", "32", "--pretrain.steps", "3",
             "--pretrain.batch-size", "4", "--progress", "false", "--tensorboard", "false", "--eval-every", "0",
             "--out-dir", str(tmp_path)]  # fmt: skip
    keys = ["cam_image=observation.images.cam", "pos=observation.state"]
    assert main(["pretrain", "--dataset", str(root), "--env", IMG_ENV, "--dataset-obs-keys", *keys, "--run-name",
                 "lr", *small]) == 0  # fmt: skip

    def err(folder, *extra):
        capsys.readouterr()
        assert main(["pretrain", "--dataset", str(folder), "--env", "Hopper-v5", "--out-dir", str(tmp_path),
                     "--run-name", "x", "--overwrite", *extra, *SMALL]) == 2  # fmt: skip
        return one_line(capsys)

    video = tmp_path / "video"
    write_lerobot(video, eps, "v2.1", 2, 2, images=imgs, video=True)
    assert "feature 'observation.images.cam' is video-encoded (MP4)" in err(video, "--dataset-obs-keys",
                                                                            "observation.images.cam")  # fmt: skip
    (tmp_path / "plain").mkdir()
    assert "has no meta/info.json (not a LeRobot dataset)" in err(tmp_path / "plain")
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps(dict(info, codebase_version="v1.6")))
    assert "codebase_version 'v1.6' is not supported" in err(root)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    assert "action dimension 2 but Hopper-v5 has 3" in err(root)
    # the episode metadata and the frames disagree
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    t = pq.read_table(f)
    pq.write_table(t.set_column(1, "length", pa.array([4, 7])), f)
    assert "episode 1 has 6 frames but the episode metadata says 7" in err(root)
    # NaN in a state
    bad = tmp_path / "nan"
    eps[0]["obs"][1, 0] = np.nan
    write_lerobot(bad, eps, "v2.1", 2, 2)
    with pytest.raises(NcdpoError, match="episode 0: 'obs' contains NaN or inf"):
        load_dataset(bad)


# ---------------------------------------------------------------------------------------------- deployment
def _same_actions(src, out, obs, fmt="torchscript", seed=5, noise_mean=False):
    """The exported module given load_policy's noise acts as load_policy (one decision, every executed action)."""
    from ncdpo.deploy import draw_noise, load_deployed

    extra = ["--noise-mean"] if noise_mean else []
    assert main(["export", str(src), "--out", str(out), "--format", fmt, *extra]) == 0
    pol = ncdpo.load_policy(src, seed=seed, noise_mean=noise_mean)
    ref = np.stack([pol.act(obs) for _ in range(pol.act_steps)], 1)
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out))
        desc = json.loads(sess.get_modelmeta().custom_metadata_map["ncdpo.json"])
        noise = draw_noise(desc, len(ref), seed).numpy()
        feed = {"obs": obs.astype(np.float32)} if not isinstance(obs, dict) else {k: v for k, v in obs.items()}
        got = sess.run(None, {**feed, "noise": noise})[0]
    else:
        m, desc = load_deployed(out)
        noise = draw_noise(desc, len(ref), seed)
        t_obs = {k: torch.as_tensor(v) for k, v in obs.items()} if isinstance(obs, dict) else torch.as_tensor(obs)
        got = m(t_obs, noise).numpy()
    assert got.shape == ref.shape == (len(ref), desc["act_steps"], desc["act_dim"])
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)
    return desc


def test_torchscript_and_onnx_act_as_load_policy(tmp_path, tiny_args):
    src = load_dataset("shipped:lift")
    obs = np.stack([e.obs[5] for e in src.episodes[:6]])
    desc = _same_actions("shipped:lift", tmp_path / "lift.pt", obs)
    assert desc["env_id"] == "lift" and desc["noise_shape"] == [10, 4, 7] and desc["obs"] == {"type": "vector",
                                                                                             "dim": 19}  # fmt: skip
    _same_actions("shipped:lift", tmp_path / "lift.onnx", obs, "onnx")
    # a different batch size than the one traced, and a different noise gives different actions
    from ncdpo.deploy import load_deployed

    m, _ = load_deployed(tmp_path / "lift.pt")
    one = m(torch.as_tensor(obs[:1]), torch.zeros(1, 10, 4, 7))
    assert one.shape == (1, 4, 7) and not torch.allclose(one, m(torch.as_tensor(obs[:1]), torch.ones(1, 10, 4, 7)))
    # DPPO, the Gaussian MLP and NCDPO with a noise policy (sampled and on its mean), on Hopper
    hop = load_dataset("shipped:Hopper-v5").episodes[0].obs[:4]
    for algo, extra in (("dppo", []), ("ppo", []), ("ncdpo", ["--noise-policy.enabled", "true"])):
        assert main(tiny_args(algo, steps=128, name=algo, extra=extra)) == 0
        d = _same_actions(tmp_path / algo, tmp_path / f"{algo}.pt", hop)
        assert d["algo"] == algo
    _same_actions(tmp_path / "ncdpo", tmp_path / "mean.pt", hop, noise_mean=True)
    _same_actions(tmp_path / "dppo", tmp_path / "dppo.onnx", hop, "onnx")


def test_torchscript_of_a_camera_policy_and_bad_exports(tmp_path, capsys):
    """A dict observation (shipped:lift-image: eye-in-hand camera and proprioception) exports too; the module
    runs in a fresh process with torch alone (no ncdpo import)."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    pol = ncdpo.load_policy("shipped:lift-image")
    obs = {k: (rng.integers(0, 255, (3, *s), dtype=np.uint8) if d == "uint8" else rng.normal(size=(3, *s)))
           for k, s, d in pol.obs_spec.keys}  # fmt: skip
    obs = {k: v if v.dtype == np.uint8 else v.astype(np.float32) for k, v in obs.items()}
    desc = _same_actions("shipped:lift-image", tmp_path / "img.pt", obs)
    assert desc["obs"]["type"] == "dict" and ["robot0_eye_in_hand_image", [84, 84, 3], "uint8"] in desc["obs"]["keys"]
    code = (
        "import json, torch\n"
        f"m = torch.jit.load({str(tmp_path / 'img.pt')!r}, _extra_files=(x := {{'ncdpo.json': ''}}))\n"
        "d = json.loads(x['ncdpo.json'])\n"
        "obs = {k: torch.zeros(2, *s, dtype=torch.uint8 if t == 'uint8' else torch.float32) for k, s, t in "
        "d['obs']['keys']}\n"
        "a = m(obs, torch.zeros(2, *d['noise_shape']))\n"
        "import sys; assert 'ncdpo' not in sys.modules\n"
        "print(tuple(a.shape), bool(((a >= -1) & (a <= 1)).all()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(2,", "4,", "7)", "True"]
    capsys.readouterr()
    assert main(["export", "shipped:lift", "--out", str(tmp_path / "x.pt"), "--format", "torchscript",
                 "--noise-mean"]) == 2  # fmt: skip
    assert "needs an NCDPO policy with a noise policy" in one_line(capsys)
    (tmp_path / "junk.pt").write_bytes(b"not a module")
    from ncdpo.deploy import load_deployed

    with pytest.raises(NcdpoError, match="is not a TorchScript policy"):
        load_deployed(tmp_path / "junk.pt")
