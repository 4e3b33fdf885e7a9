"""Pieces shared by the models."""

from __future__ import annotations

import torch
from torch import nn


def init_gpt_style(m: nn.Module, std: float = 0.02) -> None:
    """GPT-2/BERT initialisation for one module (use with ``model.apply``): N(0, std)
    weights for linear layers and embeddings, zero biases, LayerNorm at the identity."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, mean=0.0, std=std)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
    if isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class _PerTokenCrossEntropy(torch.autograd.Function):
    """Cross-entropy per row, ``logsumexp(z) - z[y]``, with a hand-written backward
    ``softmax(z) - onehot(y)``. Same values and gradients as ``F.cross_entropy(...,
    reduction="none")``, with less memory traffic on big vocabularies: no log-softmax tensor
    is written in the forward pass and no zero-filled gradient is scattered into in the
    backward pass (on a (8, 256, 50304) batch that is ~0.4 GB written per pass)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:  # (N, V), (N,)
        valid = targets != ignore_index
        safe = torch.where(valid, targets, 0)
        lse = torch.logsumexp(logits, dim=-1)  # (N,)
        picked = logits.gather(1, safe[:, None]).squeeze(1)  # (N,)
        ctx.save_for_backward(logits, safe, valid)
        return torch.where(valid, lse - picked, torch.zeros_like(lse))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, safe, valid = ctx.saved_tensors
        scale = torch.where(valid, grad_out, torch.zeros_like(grad_out))[:, None]  # (N, 1)
        grad = torch.softmax(logits, dim=-1)  # (N, V): one fused pass
        grad.mul_(scale)
        grad.scatter_add_(1, safe[:, None], -scale)
        return grad, None, None


def per_token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Per-token loss (B, T) from logits (B, T, V) and targets (B, T); positions whose target
    is ``ignore_index`` get loss 0 and no gradient. Computed in float32."""
    B, T, V = logits.shape
    return _PerTokenCrossEntropy.apply(logits.reshape(B * T, V).float(), targets.reshape(B * T), ignore_index).view(B, T)


class _LinearCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of ``h W^T`` without ever holding the (N, V) logits: rows go
    through in chunks, and each chunk's gradients are formed in the forward pass while its
    logits are at hand (upstream gradient 1 per token), so nothing is recomputed. The backward
    pass scales them by the real upstream gradient: exact per row for ``h``; for ``W`` exact
    when that gradient is the same for every counted token (a mean), else ``W``'s gradient is
    recomputed chunk by chunk."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, ignore_index: int, chunk: int) -> torch.Tensor:  # (N, C), (V, C), (N,)
        N = h.shape[0]
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        valid = targets != ignore_index
        safe = torch.where(valid, targets, 0)
        loss = torch.empty(N, dtype=torch.float32, device=h.device)
        lse = torch.empty(N, dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h, dtype=torch.float32) if want_h else None
        grad_w = torch.zeros_like(w, dtype=torch.float32) if want_w else None
        for i in range(0, N, chunk):
            hc = h[i : i + chunk]
            z = (hc @ w.t()).float()  # (n, V): the only logits alive at a time
            lse_c = torch.logsumexp(z, dim=-1)
            rows = torch.arange(z.shape[0], device=z.device)
            loss[i : i + chunk] = torch.where(valid[i : i + chunk], lse_c - z[rows, safe[i : i + chunk]], 0.0)
            lse[i : i + chunk] = lse_c
            if want_h or want_w:
                p = z.sub_(lse_c[:, None]).exp_()  # softmax, in place
                p[rows, safe[i : i + chunk]] -= 1.0
                p.mul_(valid[i : i + chunk, None])  # ignored tokens: no gradient
                if want_h:
                    grad_h[i : i + chunk] = p @ w.float()
                if want_w:
                    grad_w.addmm_(p.t(), hc.float())
        ctx.save_for_backward(h, w, safe, valid, lse, grad_h, grad_w)
        ctx.chunk = chunk
        return torch.where(valid, loss, torch.zeros_like(loss))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        h, w, safe, valid, lse, grad_h, grad_w = ctx.saved_tensors
        g = g.float()
        gh = gw = None
        if ctx.needs_input_grad[0]:
            gh = (grad_h * g[:, None]).to(h.dtype)
        if ctx.needs_input_grad[1]:
            counted = g[valid]
            if counted.numel() == 0:
                gw = torch.zeros_like(w)
            elif bool((counted == counted[0]).all()):  # a mean over tokens: one scale for all
                gw = (grad_w * counted[0]).to(w.dtype)
            else:
                gw = _recompute_grad_w(h, w, safe, valid, lse, g, ctx.chunk).to(w.dtype)
        return gh, gw, None, None, None


def _recompute_grad_w(h, w, safe, valid, lse, g, chunk: int) -> torch.Tensor:
    out = torch.zeros_like(w, dtype=torch.float32)
    for i in range(0, h.shape[0], chunk):
        hc = h[i : i + chunk]
        p = (hc @ w.t()).float().sub_(lse[i : i + chunk, None]).exp_()
        rows = torch.arange(p.shape[0], device=p.device)
        p[rows, safe[i : i + chunk]] -= 1.0
        p.mul_((g[i : i + chunk] * valid[i : i + chunk])[:, None])
        out.addmm_(p.t(), hc.float())
    return out


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100, chunk: int = 256) -> torch.Tensor:
    """Per-token loss ``cross_entropy(h @ weight.T, targets)`` (shape of ``targets``) for
    hidden states ``h`` (..., C) and an output matrix ``weight`` (V, C), computed ``chunk`` rows
    at a time: the same values and gradients as :func:`per_token_cross_entropy` on the full
    logits, with a peak of ``chunk x V`` logits instead of ``N x V`` (on gpt2-124m at batch 8 x
    128 that is 51 MB instead of 206 MB, and another 206 MB of their gradient)."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    C = h.shape[-1]
    loss = _LinearCrossEntropy.apply(h.reshape(-1, C), weight, targets.reshape(-1), ignore_index, chunk)
    return loss.view(targets.shape)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, T, C) over the positions where ``mask`` (B, T) is 1: (B, C). A row
    with no position counts as one, giving zeros."""
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)
