import math

import numpy as np
import pytest
import torch

from ncdpo.config import DiffusionConfig
from ncdpo.policies.diffusion import DiffusionPolicy, cosine_beta_schedule, gaussian_log_prob


def make_policy(sampler="ddpm", K=8, horizon=4, act_steps=2, **kw):
    torch.manual_seed(0)
    cfg = DiffusionConfig(denoising_steps=K, sampler=sampler, ddim_steps=3, hidden_dim=32, **kw)
    return DiffusionPolicy(obs_dim=5, act_dim=3, horizon=horizon, act_steps=act_steps, cfg=cfg)


def test_cosine_schedule():
    betas = cosine_beta_schedule(20)
    assert betas.shape == (20,)
    assert np.all(betas > 0) and np.all(betas <= 0.999)
    abar = np.cumprod(1 - betas)
    assert np.all(np.diff(abar) < 0) and abar[0] > 0.99 and abar[-1] < 0.01


@pytest.mark.parametrize("sampler,n_chain", [("ddpm", 8), ("ddim", 3)])
def test_shapes_bounds_and_chain_length(sampler, n_chain):
    pol = make_policy(sampler)
    assert pol.n_chain == n_chain
    obs = torch.randn(7, 5)
    a, noise, logp = pol.act(obs)
    assert a.shape == (7, 2, 3) and noise.shape == (7, n_chain, 4, 3) and logp.shape == (7,)
    m = pol.chain_mean(obs, noise)
    assert m.shape == (7, 4, 3)
    # The last step's mean is the clipped x0 prediction: inside the normalised action bounds.
    assert m.abs().max() <= 1.0 + 1e-6
    # Deterministic actions are the mean itself.
    ad, _, _ = pol.act(obs, deterministic=True)
    assert ad.abs().max() <= 1.0 + 1e-6


def test_ddpm_last_step_std_is_zero_and_timesteps_descend():
    pol = make_policy("ddpm")
    assert pol.chain_std[-1] == 0.0
    assert torch.all(pol.chain_std[:-1] > 0)
    assert pol.chain_t.tolist() == list(range(7, -1, -1))
    ddim = make_policy("ddim")
    assert ddim.chain_t.tolist() == sorted(ddim.chain_t.tolist(), reverse=True) and ddim.chain_t[-1] == 0


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_seed_determinism(sampler):
    pol = make_policy(sampler)
    obs = torch.randn(4, 5)
    g1, g2, g3 = (torch.Generator().manual_seed(s) for s in (1, 1, 2))
    a1, n1, _ = pol.act(obs, generator=g1)
    a2, n2, _ = pol.act(obs, generator=g2)
    a3, _, _ = pol.act(obs, generator=g3)
    assert torch.equal(a1, a2) and torch.equal(n1, n2)
    assert not torch.equal(a1, a3)


def test_log_prob_matches_torch_normal():
    pol = make_policy()
    obs = torch.randn(6, 5)
    a, noise, logp = pol.act(obs)
    m = pol.chain_mean(obs, noise)[:, :2]
    ref = torch.distributions.Normal(m, pol.sigma_exp()).log_prob(a).sum((1, 2))
    assert torch.allclose(logp, ref, atol=1e-5)
    assert torch.allclose(pol.log_prob(obs, noise, a), ref, atol=1e-5)
    assert torch.allclose(gaussian_log_prob(a, m, pol.sigma_exp()), ref, atol=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_recomputed_log_prob_equals_stored_across_batch_splits(prediction):
    """The NCDPO invariant behind ratio == 1: recomputing from (s, xi) gives the stored log-prob."""
    pol = make_policy(prediction=prediction)
    obs = torch.randn(64, 5)
    a, noise, logp = pol.act(obs)
    for idx in (torch.arange(64), torch.randperm(64)[:17], torch.tensor([5])):
        assert torch.allclose(pol.log_prob(obs[idx], noise[idx], a[idx]), logp[idx], atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("ckpt", [False, True])
@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_gradient_reaches_every_denoising_step(sampler, ckpt, prediction):
    pol = make_policy(sampler, grad_checkpoint=ckpt, denoised_clip=0.0, prediction=prediction)
    obs = torch.randn(16, 5)
    a, noise, _ = pol.act(obs)
    noise.requires_grad_(True)  # so that the chain's first input x_K is a leaf with a gradient too
    m, latents = pol.chain_mean(obs, noise, return_latents=True)
    for x in latents[1:]:
        x.retain_grad()
    gaussian_log_prob(a, m[:, :2], pol.sigma_exp()).mean().backward()
    assert len(latents) == pol.n_chain
    latents[0] = noise
    for j, x in enumerate(latents):
        if j == 0:
            x = noise
        assert x.grad is not None and x.grad.abs().sum() > 0, f"no gradient at chain step {j}"
    # Per-step parameter probe: the denoiser's gradient changes when any single step is cut off.
    full = [p.grad.clone() for p in pol.denoiser.parameters()]
    for j in range(pol.n_chain):
        pol.zero_grad()
        orig = pol.step_mean

        def cut(x, o, jj, _j=j, _orig=orig):
            out = _orig(x, o, jj)
            return out.detach() if jj == _j else out

        pol.step_mean = cut
        try:
            m2 = pol.chain_mean(obs, noise.detach())
            if m2.requires_grad:  # cutting the last step leaves nothing to differentiate
                gaussian_log_prob(a, m2[:, :2], pol.sigma_exp()).mean().backward()
        finally:
            del pol.step_mean
        changed = any(
            not torch.allclose(g, p.grad if p.grad is not None else torch.zeros_like(g))
            for g, p in zip(full, pol.denoiser.parameters())
        )
        assert changed, f"denoising step {j} contributes no gradient to the denoiser"


def test_gradient_checkpointing_gives_same_gradients():
    grads = []
    for ckpt in (False, True):
        pol = make_policy(grad_checkpoint=ckpt)
        obs = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
        noise = pol.sample_noise(8, torch.Generator().manual_seed(1))
        a = torch.zeros(8, 2, 3)
        pol.log_prob(obs, noise, a).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in pol.denoiser.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_exploration_std_modes():
    fixed = make_policy(sigma_exp="fixed", sigma_exp_start=0.2)
    fixed.set_progress(0.9)
    assert math.isclose(float(fixed.sigma_exp()[0]), 0.2, rel_tol=1e-6)
    lin = make_policy(sigma_exp="linear", sigma_exp_start=0.4, sigma_exp_end=0.1)
    lin.set_progress(0.5)
    assert math.isclose(float(lin.sigma_exp()[0]), 0.25, rel_tol=1e-5)
    learn = make_policy(sigma_exp="learnable", sigma_exp_start=0.3)
    assert any(p is learn.log_sigma_exp for p in learn.parameters())
    obs = torch.randn(4, 5)
    a, noise, _ = learn.act(obs)
    learn.log_prob(obs, noise, a).sum().backward()
    assert learn.log_sigma_exp.grad is not None and learn.log_sigma_exp.grad.abs().sum() > 0


def test_per_dimension_exploration_std():
    """diffusion.sigma_exp_scale multiplies the std per action dimension, in every mode, and the sampled
    actions spread accordingly; a wrong length is a one-line NcdpoError."""
    from ncdpo.errors import NcdpoError

    scale = (1.0, 1.0, 5.0)
    for mode in ("fixed", "linear", "learnable"):
        pol = make_policy(sigma_exp=mode, sigma_exp_start=0.1, sigma_exp_end=0.2, sigma_exp_scale=scale)
        pol.set_progress(1.0)
        base = 0.2 if mode == "linear" else 0.1
        assert torch.allclose(pol.sigma_exp(), base * torch.tensor(scale), rtol=1e-5)
    pol = make_policy(sigma_exp_scale=scale)
    obs = torch.randn(1, 5).expand(4000, 5)
    g = torch.Generator().manual_seed(0)
    a, noise, logp = pol.act(obs, generator=g)
    spread = (a - pol.chain_mean(obs, noise)[:, :2]).std(dim=(0, 1))
    assert torch.allclose(spread, torch.tensor([0.1, 0.1, 0.5]), rtol=0.05)
    assert torch.allclose(logp, pol.log_prob(obs, noise, a), atol=1e-4)
    with pytest.raises(NcdpoError, match="sigma_exp_scale has 2 entries but the action has 3 dimensions"):
        make_policy(sigma_exp_scale=(1.0, 2.0))


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_bc_loss_decreases_on_a_fixed_target(prediction):
    pol = make_policy(horizon=4, act_steps=2, prediction=prediction)
    obs = torch.randn(128, 5)
    target = torch.tanh(obs[:, :3]).unsqueeze(1).repeat(1, 4, 1) * 0.8
    opt = torch.optim.Adam(pol.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = pol.bc_loss(obs, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_x0_prediction_chain_samples_what_it_was_trained_on(sampler):
    """With ``prediction: x0`` the BC loss regresses the clean chunk and the chain (either sampler) turns fresh
    noise into that chunk: the sampler reads the network's output as x0, as training wrote it."""
    pol = make_policy(sampler, horizon=2, act_steps=2, prediction="x0")
    obs = torch.randn(256, 5, generator=torch.Generator().manual_seed(0))
    target = (0.7 * torch.tanh(obs[:, :3])).unsqueeze(1).repeat(1, 2, 1)
    opt = torch.optim.Adam(pol.parameters(), lr=3e-3)
    for _ in range(400):
        loss = pol.bc_loss(obs, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        m = pol.chain_mean(obs, pol.sample_noise(256, torch.Generator().manual_seed(1)))
    assert (m - target).abs().mean() < 0.1
    # an untrained policy is far from it (the check above can fail)
    with torch.no_grad():
        fresh = make_policy(sampler, horizon=2, act_steps=2, prediction="x0").chain_mean(obs, pol.sample_noise(256))
    assert (fresh - target).abs().mean() > 0.3


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_chain_noise_scale_zero_makes_the_chain_a_function_of_the_observation(sampler):
    """The noise-conditioning ablation: with ``chain_noise_scale 0`` every xi is zero, so two rollouts with
    different generators compute the same chain mean; the last step's perturbation still explores; scale 1
    leaves the default draw bit-for-bit unchanged."""
    obs = torch.randn(16, 5)
    pol = make_policy(sampler, chain_noise_scale=0.0)
    a1, xi1, _ = pol.act(obs, generator=torch.Generator().manual_seed(1))
    a2, xi2, _ = pol.act(obs, generator=torch.Generator().manual_seed(2))
    assert torch.count_nonzero(xi1) == 0 and torch.count_nonzero(xi2) == 0
    assert torch.equal(pol.chain_mean(obs, xi1), pol.chain_mean(obs, xi2))
    assert not torch.allclose(a1, a2)  # the sigma_exp perturbation is still drawn
    d1, _, _ = pol.act(obs, deterministic=True, generator=torch.Generator().manual_seed(1))
    d2, _, _ = pol.act(obs, deterministic=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(d1, d2)
    default = make_policy(sampler).sample_noise(4, torch.Generator().manual_seed(3))
    assert torch.equal(default, torch.randn(default.shape, generator=torch.Generator().manual_seed(3)))
    # the NCDPO gradient still reaches the network through the chain
    pol.chain_mean(obs, xi1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pol.denoiser.parameters() if p.dim() > 1)


def test_chain_noise_scale_zero_fixes_the_discrete_policys_logits():
    from ncdpo.policies.categorical import DiscreteDiffusionPolicy

    torch.manual_seed(0)
    obs = torch.randn(32, 6)
    cfg = DiffusionConfig(denoising_steps=4, hidden_dim=32, prediction="x0")
    noisy = DiscreteDiffusionPolicy(6, 5, cfg)
    fixed = DiscreteDiffusionPolicy(
        6, 5, DiffusionConfig(denoising_steps=4, hidden_dim=32, prediction="x0", chain_noise_scale=0.0)
    )
    fixed.load_state_dict(noisy.state_dict())
    lg = [fixed.act(obs, generator=torch.Generator().manual_seed(s))[3] for s in (1, 2)]
    assert torch.equal(lg[0], lg[1])
    lg = [noisy.act(obs, generator=torch.Generator().manual_seed(s))[3] for s in (1, 2)]
    assert not torch.allclose(lg[0], lg[1])


def test_out_init_scale_shrinks_the_denoisers_initial_output():
    """``out_init_scale`` multiplies the output layer's initial weights (same random draw) and zeros its bias;
    1 leaves PyTorch's default initialisation bit-for-bit."""
    ref, same, small = make_policy(), make_policy(out_init_scale=1.0), make_policy(out_init_scale=0.01)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), same.state_dict().values()))
    assert torch.allclose(small.denoiser.out.weight, 0.01 * ref.denoiser.out.weight)
    assert torch.count_nonzero(small.denoiser.out.bias) == 0
    assert torch.equal(small.denoiser.inp.weight, ref.denoiser.inp.weight)
    x, t, obs = torch.randn(64, 12), torch.randint(0, 8, (64,)), torch.randn(64, 5)
    assert small.denoiser(x, t, obs).abs().max() < 0.05 * ref.denoiser(x, t, obs).abs().max()


def test_orthogonal_init_of_the_denoiser():
    pol = make_policy(init="orthogonal")
    lin = [m for m in pol.denoiser.modules() if isinstance(m, torch.nn.Linear)]
    for m in lin:
        w = m.weight if m.weight.shape[0] >= m.weight.shape[1] else m.weight.T
        gain = 1.0 if m is pol.denoiser.out else math.sqrt(2)
        assert torch.allclose(w.T @ w, gain**2 * torch.eye(w.shape[1]), atol=1e-4)
        assert torch.count_nonzero(m.bias) == 0
