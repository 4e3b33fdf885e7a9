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
