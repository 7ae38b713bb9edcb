import torch

from ncdpo.algos.losses import clipped_policy_loss, compute_gae, value_loss


def test_gae_against_hand_computed_case():
    g, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])  # the episode ends with transition 1
    last_value = torch.tensor([2.0])
    adv, ret = compute_gae(rewards, values, dones, last_value, g, lam)
    d2 = 3.0 + g * 2.0 - 1.5
    d1 = 2.0 - 1.0  # no bootstrap across the episode end
    d0 = 1.0 + g * 1.0 - 0.5
    expected = torch.tensor([[d0 + g * lam * d1], [d1], [d2]])
    assert torch.allclose(adv, expected)
    assert torch.allclose(ret, expected + values)


def test_gae_lambda_one_is_discounted_return_minus_value():
    rewards = torch.ones(4, 1)
    values = torch.zeros(4, 1)
    adv, _ = compute_gae(rewards, values, torch.zeros(4, 1), torch.zeros(1), 0.5, 1.0)
    assert torch.allclose(adv[:, 0], torch.tensor([1.875, 1.75, 1.5, 1.0]))


def test_clipped_loss_sign_and_clipping():
    old = torch.zeros(4)
    # Positive advantage: the loss falls as the log-prob rises, until the ratio passes 1 + clip.
    new = torch.tensor([0.0, 0.05, 0.5, -0.5], requires_grad=True)
    adv = torch.ones(4)
    out = clipped_policy_loss(new, old, adv, clip=0.2)
    out.loss.backward()
    g = new.grad
    assert g[0] < 0 and g[1] < 0  # inside the clip range: push log-prob up
    assert g[2] == 0  # ratio e^0.5 > 1.2: clipped, no gradient
    assert g[3] < 0  # ratio below 1 - clip with A > 0: the unclipped term is the min, still pushed up
    assert torch.isclose(out.clipfrac, torch.tensor(0.5))
    # Negative advantage mirrors it.
    new2 = torch.tensor([0.0, -0.5, 0.5], requires_grad=True)
    out2 = clipped_policy_loss(new2, torch.zeros(3), -torch.ones(3), clip=0.2)
    out2.loss.backward()
    assert new2.grad[0] > 0 and new2.grad[1] == 0 and new2.grad[2] > 0
    # ratio == 1 everywhere: loss is -mean(A), approx_kl 0.
    out3 = clipped_policy_loss(torch.zeros(3), torch.zeros(3), torch.tensor([1.0, 2.0, 3.0]), 0.2)
    assert torch.isclose(out3.loss, torch.tensor(-2.0)) and out3.approx_kl == 0


def test_value_loss_clipping():
    new, old, ret = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([3.0])
    assert torch.isclose(value_loss(new, old, ret, None), torch.tensor(0.5))
    # Clipped prediction 0.2 is further from the return: the max picks it.
    assert torch.isclose(value_loss(new, old, ret, 0.2), torch.tensor(0.5 * 2.8**2))
