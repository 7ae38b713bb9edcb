"""NCDPO's noise policy (``noise_policy.*``, docs/METHOD.md section 6): it starts as N(0, I) exactly, the PPO ratio
is 1 on the first minibatch, the gradient reaches psi and every denoising step, frozen at N(0, I) it is plain NCDPO,
off it changes nothing, and checkpoints, --resume, eval and load_policy carry it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ncdpo.checkpoint import load_checkpoint
from ncdpo.cli import main

TIMING = {"wall_s", "charts/SPS", "perf/rollout_s", "perf/update_s", "perf/peak_mem_mb"}
NOISE = ("--noise-policy.enabled", "true")


def tiny(tmp_path, name, steps=512, extra=()):
    return [
        "train", "--algo", "ncdpo", "--env", "Hopper-v5", "--total-env-steps", str(steps), "--env.n-envs", "2",
        "--horizon", "4", "--act-steps", "2", "--ppo.n-steps", "32", "--ppo.minibatch-size", "16",
        "--ppo.update-epochs", "2", "--diffusion.denoising-steps", "4", "--diffusion.hidden-dim", "32",
        "--critic.hidden-dims", "32", "32", "--noise-policy.hidden-dims", "32", "--out-dir", str(tmp_path),
        "--run-name", name, "--progress", "false", "--tensorboard", "false", "--seed", "3", "--save-every", "1",
        "--keep-checkpoints", "0", "--torch-threads", "1", *extra
    ]  # fmt: skip


def rows(run):
    with open(Path(run) / "progress.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def final(run):
    return load_checkpoint(Path(run) / "checkpoints" / "final.safetensors").tensors


def out_layer(w):
    """The noise policy's output layer (zero at the start) in a checkpoint's tensors."""
    return w[sorted(k for k in w if k.startswith("agent.noise_policy.mean_net.") and k.endswith(".weight"))[-1]]


def agent(extra: dict | None = None, seed: int = 0):
    from ncdpo.algos import make_agent
    from ncdpo.config import TrainConfig, apply_overrides

    values = {"horizon": 4, "act_steps": 2, "diffusion.denoising_steps": 4, "diffusion.hidden_dim": 32}
    cfg = apply_overrides(TrainConfig(), {**values, **(extra or {})})
    torch.manual_seed(seed)
    return make_agent(cfg, 11, 3), cfg


def perturb(noise_policy, seed=1):
    """Move psi away from its N(0, I) start (a state-dependent mean, a smaller std)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        last = noise_policy.mean_net[-1]
        last.weight.copy_(0.1 * torch.randn(last.weight.shape, generator=g))
        noise_policy.log_std.fill_(-0.5)


# ---------------------------------------------------------------------------------------------- the policy
@pytest.mark.parametrize("covers", ["initial", "all"])
def test_starts_as_n01_and_then_acts_exactly_as_plain_ncdpo(covers):
    plain, _ = agent()
    steered, _ = agent({"noise_policy.enabled": True, "noise_policy.covers": covers})
    assert {k: v for k, v in steered.state_dict().items() if k.startswith(("policy.", "critic."))}.keys() == (
        plain.state_dict().keys()
    )
    for k, v in plain.state_dict().items():  # the noise policy is built on the side of the random stream
        assert torch.equal(v, steered.state_dict()[k]), k
    n = steered.noise_policy
    assert n.n_covered == (1 if covers == "initial" else steered.policy.n_chain)
    obs = torch.randn(6, 11)
    assert torch.equal(n.mean(obs), torch.zeros(6, *n.shape)) and torch.equal(n.std(), torch.ones(n.shape))
    for det in (True, False):
        torch.manual_seed(4)
        a = plain.act(obs, det)
        torch.manual_seed(4)
        b = steered.act(obs, det)
        assert torch.equal(a.action, b.action) and torch.equal(a.store["noise"], b.store["noise"])
        assert b.log_prob.shape == (6, 2) and torch.equal(b.log_prob[:, 1], a.log_prob)
        dims = n.n_covered * 4 * 3
        xi = b.store["noise"][:, : n.n_covered]
        want = -0.5 * (xi**2).flatten(1).sum(-1) - 0.5 * dims * np.log(2 * np.pi)
        torch.testing.assert_close(b.log_prob[:, 0], want)


def test_draws_come_from_the_learned_gaussian_and_its_mean_is_a_function_of_the_state():
    a, _ = agent({"noise_policy.enabled": True})
    perturb(a.noise_policy)
    n = a.noise_policy
    obs = torch.randn(1, 11).repeat(4000, 1)
    xi = a.act(obs).store["noise"]
    with torch.no_grad():
        mu, std = n.mean(obs[:1])[0], n.std()
    np.testing.assert_allclose(xi[:, :1].mean(0), mu, atol=0.05)
    np.testing.assert_allclose(xi[:, :1].std(0), std, rtol=0.06)
    np.testing.assert_allclose(xi[:, 1:].std(0), torch.ones_like(xi[0, 1:]), rtol=0.06)  # uncovered: N(0, I)
    a.noise_mean = True
    torch.manual_seed(0)
    m1 = a.act(obs[:3], True)
    torch.manual_seed(1)
    m2 = a.act(obs[:3], True)
    torch.testing.assert_close(m1.store["noise"][:, :1], mu.expand(3, *mu.shape), rtol=0, atol=1e-6)
    assert torch.equal(m1.store["noise"][:, :1], m2.store["noise"][:, :1])


@pytest.mark.parametrize("ratio", ["factored", "joint"])
def test_gradient_reaches_psi_and_every_denoising_step(ratio):
    # no x0 clip: an untrained denoiser's first steps saturate it, and a saturated clip passes no gradient anyway
    a, _ = agent({"noise_policy.enabled": True, "noise_policy.ratio": ratio, "diffusion.denoised_clip": 0})
    perturb(a.noise_policy)
    obs = torch.randn(8, 11)
    out = a.act(obs)
    pol = a.policy
    lp, _ = a.log_prob_entropy(obs, out.store)
    lp.sum().backward()
    n = a.noise_policy
    assert n.mean_net[-1].weight.grad.abs().sum() > 0 and n.log_std.grad.abs().sum() > 0
    assert n.mean_net[0].weight.grad.abs().sum() > 0
    full = [p.grad.clone() for p in pol.denoiser.parameters()]
    assert all(g.abs().sum() > 0 for g in full)
    for j in range(pol.n_chain):  # cutting any one step's gradient changes the denoiser's: every step contributes
        a.zero_grad()
        orig = pol.step_mean

        def cut(x, o, jj, _j=j, _orig=orig):
            out_ = _orig(x, o, jj)
            return out_.detach() if jj == _j else out_

        pol.step_mean = cut
        try:
            lp2, _ = a.log_prob_entropy(obs, out.store)
            lp2.sum().backward()
        finally:
            del pol.step_mean
        grads = [p.grad if p.grad is not None else torch.zeros_like(g) for g, p in zip(full, pol.denoiser.parameters())]
        assert any(not torch.allclose(g, h) for g, h in zip(full, grads)), f"step {j} contributes no gradient"
    if ratio == "factored":  # two levels: the noise's log-probability moves psi only, the action's theta only
        a.zero_grad()
        lp, _ = a.log_prob_entropy(obs, out.store)
        lp[:, 1].sum().backward(retain_graph=True)
        assert all(p.grad is None or not p.grad.any() for p in n.parameters())
        a.zero_grad()
        lp[:, 0].sum().backward()
        assert all(p.grad is None or not p.grad.any() for p in pol.denoiser.parameters())


def test_std_stays_in_its_bounds():
    from ncdpo.policies.noise import NoisePolicy

    a, cfg = agent({"noise_policy.enabled": True, "noise_policy.std_min": 0.5, "noise_policy.std_max": 1.0})
    n: NoisePolicy = a.noise_policy
    with torch.no_grad():
        n.log_std[:3] = -5.0
        n.log_std[3:6] = 2.0
    a.after_step()
    s = n.std().flatten()
    assert torch.allclose(s[:3], torch.tensor(0.5)) and torch.allclose(s[3:6], torch.tensor(1.0))


# ---------------------------------------------------------------------------------------------- runs
@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("--critic.condition-on-mean", "true"),
        ("--noise-policy.covers", "all", "--noise-policy.ratio", "joint", "--critic.condition-on-mean", "true"),
        ("--noise-policy.covers", "all", "--noise-policy.target-kl", "0.001"),
    ],
    ids=["factored", "factored-state-critic", "joint-all", "noise-kl-stop"],
)
def test_runs_reproduce_with_ratio_one_on_the_first_minibatch(tmp_path, extra):
    assert main(tiny(tmp_path, "a", extra=(*NOISE, *extra))) == 0
    assert main(tiny(tmp_path, "b", extra=(*NOISE, *extra))) == 0
    ra = rows(tmp_path / "a")
    assert len(ra) >= 4 and ra == rows(tmp_path / "b")
    devs = [float(r["losses/first_minibatch_ratio_dev"]) for r in ra]
    assert max(devs) < 1e-5, devs
    assert all(float(r["charts/noise_std"]) <= 1.0 for r in ra)
    w = final(tmp_path / "a")
    assert any(k.startswith("agent.noise_policy.") for k in w)
    assert any(k.startswith("agent.state_critic.") for k in w) == ("--critic.condition-on-mean" in extra)
    assert out_layer(w).abs().max() > 0  # the noise policy learned (its output layer started at zero)
    if "joint" not in extra:
        assert "losses/noise_approx_kl" in ra[0] and "losses/noise_clipfrac" in ra[0]


@pytest.mark.parametrize("critic", ["state", "mean"])
def test_frozen_noise_policy_is_plain_ncdpo(tmp_path, critic):
    """One iteration (the same rollout, bit for bit, then one update of 2 epochs x 8 minibatches): the weights after
    the update agree to 1e-6 (the factored loss sums and normalises per column, so the last bits may differ)."""
    crit = ("--critic.condition-on-mean", "true") if critic == "mean" else ()
    assert main(tiny(tmp_path, "plain", steps=100, extra=crit)) == 0
    assert main(tiny(tmp_path, "frozen", steps=100, extra=(*NOISE, "--noise-policy.lr", "0", *crit))) == 0
    ra, rb = rows(tmp_path / "plain"), rows(tmp_path / "frozen")
    assert len(ra) == len(rb) == 1
    for x, y in zip(ra, rb):
        for k, v in x.items():
            if v in ("", "nan"):
                assert y[k] == v, k
            else:
                assert np.isclose(float(y[k]), float(v), rtol=1e-5, atol=1e-6), (k, v, y[k])
    wa, wb = final(tmp_path / "plain"), final(tmp_path / "frozen")
    for k in wa:
        if k.startswith("agent."):
            torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)
    assert not out_layer(wb).any()  # psi stayed at N(0, I)
    assert torch.equal(wb["agent.noise_policy.log_std"], torch.zeros_like(wb["agent.noise_policy.log_std"]))


def test_off_changes_nothing(tmp_path):
    """The reference runs of tests/test_reference.py pin the whole computation; here: off, a run has no noise
    parameters, optimiser groups or log columns, and ``--noise-policy.enabled false`` is the default."""
    assert main(tiny(tmp_path, "default", steps=128)) == 0
    assert main(tiny(tmp_path, "off", steps=128, extra=("--noise-policy.enabled", "false"))) == 0
    assert rows(tmp_path / "default") == rows(tmp_path / "off")
    cols = list(rows(tmp_path / "off")[0])
    assert not [c for c in cols if "noise" in c]
    w = final(tmp_path / "off")
    assert not [k for k in w if "noise_policy" in k or "state_critic" in k]
    ref = Path(__file__).parent / "reference" / "ncdpo_init" / "progress.csv"
    with open(ref, newline="") as f, open(tmp_path / "off" / "progress.csv", newline="") as g:
        assert next(csv.reader(f)) == next(csv.reader(g))


def test_checkpoint_resume_eval_and_load_policy_carry_the_noise_policy(tmp_path, capsys):
    from ncdpo import load_policy

    extra = (*NOISE, "--critic.condition-on-mean", "true")
    assert main(tiny(tmp_path, "ref", extra=extra)) == 0
    assert main(tiny(tmp_path, "run", extra=extra)) == 0
    ck = tmp_path / "run" / "checkpoints"
    for p in ck.glob("*.safetensors"):  # as if killed after iteration 3
        if p.name == "final.safetensors" or int(p.stem.split("_")[1]) > 3:
            p.unlink()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert rows(tmp_path / "run") == rows(tmp_path / "ref")
    wa, wb = final(tmp_path / "ref"), final(tmp_path / "run")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    # eval samples the learned noise; --noise-mean acts with its mean
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--n-envs", "2", "--json", str(tmp_path / "s.json")]) == 0
    mean_json = ["--noise-mean", "--json", str(tmp_path / "m.json")]
    assert main(["eval", str(run), "--episodes", "2", "--n-envs", "2", *mean_json]) == 0
    assert "noise policy's mean" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["noise_mean"] is True
    assert "noise_mean" not in json.loads((tmp_path / "s.json").read_text())

    pol = load_policy(run, seed=0)
    assert pol.agent.noise_policy is not None and not pol.agent.noise_mean
    torch.testing.assert_close(pol.agent.noise_policy.log_std, wa["agent.noise_policy.log_std"], rtol=0, atol=0)
    obs = np.random.default_rng(0).normal(size=(3, 11)).astype(np.float32)
    drawn = [load_policy(run, seed=s).act(obs) for s in (0, 1)]
    assert not np.allclose(drawn[0], drawn[1])  # deterministic actions still depend on the drawn noise
    # with the noise policy's mean and the other noise at zero, the deterministic action is a function of the state
    means = []
    for s in (0, 1):
        p = load_policy(run, seed=s, noise_mean=True)
        p.agent.policy.cfg.chain_noise_scale = 0.0
        means.append(p.act(obs))
    np.testing.assert_array_equal(means[0], means[1])

    # --init from it keeps the noise policy (its weights and settings)
    init = ("--init", str(ck / "final.safetensors"), "--noise-policy.lr", "0")
    assert main(tiny(tmp_path, "init", steps=128, extra=init)) == 0
    ck2 = load_checkpoint(tmp_path / "init" / "checkpoints" / "final.safetensors")
    assert ck2.config.noise_policy.enabled and ck2.config.critic.condition_on_mean
    assert torch.equal(ck2.tensors["agent.noise_policy.log_std"], wa["agent.noise_policy.log_std"])
    assert torch.equal(out_layer(ck2.tensors), out_layer(wa))


def test_nonsense_settings_are_one_line_errors(tmp_path, capsys):
    cases = [
        (("--algo", "dppo", "--dppo.ft-denoising-steps", "2", *NOISE), "noise_policy.enabled applies to algo ncdpo"),
        ((*NOISE, "--diffusion.chain-noise-scale", "0"), "chain_noise_scale 1"),
        ((*NOISE, "--noise-policy.std-init", "2"), "noise_policy.std_init must lie in"),
        ((*NOISE, "--noise-policy.lr", "-1"), "noise_policy.lr must be >= 0"),
        ((*NOISE, "--noise-policy.ratio", "both"), "must be one of factored, joint"),
    ]
    for extra, msg in cases:
        assert main(tiny(tmp_path, "bad", extra=extra)) != 0
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    assert main(["eval", "shipped:lift", "--episodes", "1", "--noise-mean"]) != 0
    assert "has none" in capsys.readouterr().err


def test_help_names_the_noise_policy(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "noise policy" in out and "--noise-policy.enabled" in out and "--noise-policy.covers" in out


def test_camera_observations_with_the_noise_policy(tmp_path):
    """Dict observations: the noise policy reads the actor's encoder features, the state critic has its own encoder;
    with the random-shift augmentation the ratio is still 1 on the first minibatch, and runs reproduce."""
    from test_vision import tiny as pixel_run

    extra = (*NOISE, "--critic.condition-on-mean", "true", "--noise-policy.hidden-dims", "16")
    assert main(pixel_run(tmp_path, "ncdpo", "a", extra=extra)) == 0
    assert main(pixel_run(tmp_path, "ncdpo", "b", extra=extra)) == 0
    ra = rows(tmp_path / "a")
    assert len(ra) == 6 and ra == rows(tmp_path / "b")
    assert max(float(r["losses/first_minibatch_ratio_dev"]) for r in ra) < 1e-5
    w = final(tmp_path / "a")
    assert any(k.startswith("agent.state_critic.encoder.") for k in w)
    assert out_layer(w).abs().max() > 0
