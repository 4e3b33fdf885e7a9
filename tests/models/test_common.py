"""The hand-written cross-entropy equals PyTorch's, values and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmkit.models.common import per_token_cross_entropy


def test_values_and_gradients_equal_torch_cross_entropy():
    torch.manual_seed(0)
    logits = (torch.randn(3, 7, 50) * 4).requires_grad_()
    targets = torch.randint(0, 50, (3, 7))
    targets[0, :3] = -100  # ignored positions
    weights = torch.rand(3, 7)  # a non-uniform upstream gradient
    ours = per_token_cross_entropy(logits, targets)
    (ours * weights).sum().backward()
    g_ours = logits.grad.clone()
    logits.grad = None
    ref = F.cross_entropy(logits.view(-1, 50), targets.view(-1), reduction="none", ignore_index=-100).view(3, 7)
    (ref * weights).sum().backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, logits.grad)
    assert torch.all(ours[0, :3] == 0) and torch.all(g_ours[0, :3] == 0)


def test_gradcheck_in_double():
    logits = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    targets = torch.tensor([0, 5, -100, 2])
    from llmkit.models.common import _PerTokenCrossEntropy

    assert torch.autograd.gradcheck(lambda z: _PerTokenCrossEntropy.apply(z, targets, -100), (logits,))


def test_linear_cross_entropy_equals_the_full_logits_path_in_values_and_gradients():
    from llmkit.models.common import linear_cross_entropy, per_token_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(3, 41, 24, dtype=torch.float64, requires_grad=True)
    w = torch.randn(97, 24, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 97, (3, 41))
    t[1, :7] = -100  # ignored positions: loss 0, no gradient
    for weights in (torch.full((3, 41), 0.25, dtype=torch.float64), torch.rand(3, 41, dtype=torch.float64)):  # a mean, and uneven weights
        ours = linear_cross_entropy(h, w, t, chunk=16)
        ref = per_token_cross_entropy(h @ w.t(), t)
        torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=1e-6, atol=1e-6)
        assert (ours[1, :7] == 0).all()
        g_ours = torch.autograd.grad((ours * weights).sum(), (h, w))
        g_ref = torch.autograd.grad((ref * weights).sum(), (h, w))
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gpt_loss_only_path_matches_the_logits_path():
    from llmkit.models.config import gpt_preset
    from llmkit.models.gpt import GPT

    torch.manual_seed(1)
    model = GPT(gpt_preset("tiny", vocab_size=300))
    x, y = torch.randint(0, 300, (2, 20)), torch.randint(0, 300, (2, 20))
    logits, full = model(x, y)
    none, fused = model(x, y, return_logits=False)
    assert none is None and logits.shape == (2, 20, 300)
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-5)
    g_full = torch.autograd.grad(full.mean(), list(model.parameters()))
    g_fused = torch.autograd.grad(fused.mean(), list(model.parameters()))
    for a, b in zip(g_fused, g_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
