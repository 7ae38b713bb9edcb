"""The trainer's named steps and hooks, the rollout buffer's flattening into a typed Batch."""

from __future__ import annotations

import torch

from ncdpo.algos.buffer import Batch, RolloutBuffer
from ncdpo.cli import build_parser, resolve_train_config
from ncdpo.training.trainer import Trainer


def test_buffer_flattens_to_one_sample_per_decision():
    buf = RolloutBuffer(3, 2, 4, torch.device("cpu"))
    for t in range(3):
        obs = torch.full((2, 4), float(t))
        buf.add(
            t,
            obs,
            torch.tensor([t, 10.0 + t]),
            torch.zeros(2),
            {"noise": obs[:, :1] + 0.5},
            torch.ones(2),
            torch.zeros(2),
        )
    adv = torch.arange(6.0).reshape(3, 2)
    b = buf.batch(adv, adv + 1)
    assert isinstance(b, Batch) and len(b) == 6
    assert b.values.tolist() == [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]  # (t, env) row-major, as the advantages
    assert b.advantages.tolist() == list(range(6)) and b.store["noise"].shape == (6, 1)
    idx = torch.tensor([5, 0])
    assert b.minibatch_store(idx)["noise"].flatten().tolist() == [2.5, 0.5]


def test_update_hooks_see_every_iteration(tmp_path, tiny_args):
    args, extra = build_parser().parse_known_args(tiny_args("ncdpo", steps=384, name="hooks"))
    seen = []
    tr = Trainer(
        resolve_train_config(args, extra),
        before_update=lambda t, buf: seen.append(("before", t.iteration, buf.T * buf.N)),
        after_update=lambda t, buf, adv, m: seen.append(("after", t.iteration, adv.shape, "losses/approx_kl" in m)),
    )
    tr.run()
    iters = tr.iteration
    assert iters >= 2 and len(seen) == 2 * iters
    assert seen[0] == ("before", 1, tr.cfg.ppo.n_steps * tr.n_rows)
    assert seen[1] == ("after", 1, (tr.cfg.ppo.n_steps, tr.n_rows), True)
