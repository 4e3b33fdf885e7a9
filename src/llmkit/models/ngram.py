"""Count-based n-gram language models over token ids: the Markov chain (n=2) and its smoothed
generalisations, behind the course's ``model(x, y) -> (logits, loss)`` signature.

The course's picture is a dense table: V^(n-1) contexts x V next tokens (``dense_size()``,
1.3e14 cells for a GPT-2 trigram). Almost all cells are zero, so storage is sparse
(``stored_entries()``). Order m (1..n) keeps the sorted int64 keys of the m-grams seen in the
corpus, ``key = id(context) * V + token``, where ``id(context)`` is the (m-1)-gram's index in
order m-1's key array (the empty context has id 0). Chaining ids keeps every key below
(#distinct contexts) * V, so any n fits in int64; a context is found with one
``np.searchsorted`` per token, and because keys sort by context, each context's entries are one
contiguous slice. Fitting is a handful of ``np.unique`` calls (about a second per million tokens).

Smoothing (P_0 is uniform 1/V; h' is h without its first token; c(h.) = sum_w c(hw)):

- ``kneser-ney``, interpolated (Chen & Goodman 1998), recursive down to the uniform:
      P_m(w|h) = max(c(hw) - D, 0) / c(h.) + D * N1+(h.) / c(h.) * P_{m-1}(w|h')
  c is the raw count at the top order and the continuation count N1+(.hw) (distinct left
  neighbours) below it. An unseen context (c(h.) = 0) uses P_{m-1}(w|h') alone. With
  ``modified=True`` D depends on the count (D1, D2, D3+ from counts of counts).
- ``backoff``: absolute-discount backoff, i.e. Katz (1987)'s normalized backoff with absolute
  discounting in place of Good-Turing. Unlike "stupid backoff" it sums to 1:
      P_m(w|h) = (c(hw) - D) / c(h.)            if c(hw) > 0
               = beta(h) * P_{m-1}(w|h')          otherwise,
      beta(h)  = (D * N1+(h.) / c(h.)) / (1 - sum_{w: c(hw) > 0} P_{m-1}(w|h'))
  with raw counts at every order; a context followed by all V tokens is not discounted.
- ``add-k``: P(w|h) = (c(hw) + k) / (c(h.) + kV) at the longest order available; k=1 is
  Laplace, k=0 maximum likelihood (unseen tokens get probability 0, log-probability -inf).

A context shorter than n-1 tokens (the start of a sequence) is predicted by the order it fills
(for Kneser-Ney that is the lower order's continuation distribution, as in the recursion).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmkit.models.config import NGramConfig

_CHUNK_CELLS = 1 << 22  # float64 cells per dense block in forward (32 MiB)


@dataclass
class _Order:
    """The stored statistics of one order m (context length m-1)."""

    keys: np.ndarray  # (K_m,) int64, sorted: id(context) * V + token
    counts: np.ndarray  # (K_m,) int64: raw counts, or continuation counts below the top (kneser-ney)
    start: np.ndarray  # (K_{m-1} + 1,) entries of context c are [start[c], start[c + 1])
    value: np.ndarray  # (K_m,) float64: the entry's own term (added for kn/add-k, set for backoff)
    scale: np.ndarray  # (K_{m-1},) float64: weight of the lower order (of the uniform for add-k)
    seen: np.ndarray  # (K_{m-1},) bool: the context has a positive count after it
    discounts: np.ndarray  # (4,) discount of a count 0, 1, 2, 3+ (add-k: zeros)


@dataclass
class _Grams:
    keys: np.ndarray  # (K,) sorted unique m-gram keys
    counts: np.ndarray  # (K,) occurrences
    first: np.ndarray  # (K,) position of the first occurrence
    pid: np.ndarray  # (N - m + 1,) key index of the m-gram starting at each position


def _as_ids(ids: Sequence[int] | np.ndarray | torch.Tensor, vocab_size: int) -> np.ndarray:
    arr = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got {arr.min()}..{arr.max()}")
    return arr


def _count_ngrams(tok: np.ndarray, n: int, V: int) -> list[_Grams]:
    """Distinct m-grams for m = 1..n, each keyed by its (m-1)-prefix's index (see module doc)."""
    pid = np.zeros(len(tok), dtype=np.int64)  # every position starts the empty 0-gram, id 0
    out = []
    for m in range(1, n + 1):
        L = max(len(tok) - m + 1, 0)
        key = pid[:L] * V + tok[m - 1 : m - 1 + L]  # (L,)
        keys, first, pid, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        out.append(_Grams(keys, counts, first, pid.reshape(-1)))
    return out


class NGramLM(nn.Module):
    """An n-gram LM. ``fit(ids)`` counts; ``model(x, y) -> (log-probs (B, T, V), loss (B, T))``.

    It has no trainable parameters: ``num_parameters()`` is the number of stored count entries.
    ``logits`` are normalized log-probabilities, so ``F.cross_entropy(logits, y)`` is the NLL.
    """

    def __init__(self, cfg: NGramConfig):
        super().__init__()
        self.config = cfg
        self.orders: list[_Order] = []  # orders[m - 1] holds order m
        self._p1: np.ndarray | None = None  # (V,) the full order-1 distribution (context-free)

    # -- fitting ------------------------------------------------------------------------
    def fit(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> NGramLM:
        """Count the n-grams of one token sequence (replacing earlier counts); returns self."""
        cfg, V = self.config, self.config.vocab_size
        tok = _as_ids(ids, V)
        if tok.size == 0:
            raise ValueError("cannot fit an n-gram model on an empty sequence")
        grams = _count_ngrams(tok, cfg.n, V)
        self.orders = []
        for m in range(1, cfg.n + 1):
            g = grams[m - 1]
            counts = g.counts
            if cfg.smoothing == "kneser-ney" and m < cfg.n:  # N1+(. h w): distinct left neighbours
                up = grams[m]
                counts = np.bincount(g.pid[up.first + 1], minlength=len(g.keys))
            suffix = grams[m - 2].pid[g.first + 1] if m >= 2 else None  # id of (h', w) at order m-1
            self.orders.append(self._make_order(m, g.keys, counts, suffix))
        self._p1 = self._order1()
        return self

    def _discount_table(self, counts: np.ndarray) -> np.ndarray:
        """One order's discounts for counts 0, 1, 2, 3+ (0 for a zero count: it has nothing to give)."""
        D = self.config.discount
        d = np.array([0.0, D, D, D])
        if self.config.modified:
            n1, n2, n3, n4 = (np.count_nonzero(counts == r) for r in (1, 2, 3, 4))
            if min(n1, n2, n3, n4) > 0:  # Chen & Goodman (1998), eq. 26
                Y = n1 / (n1 + 2 * n2)
                est = np.array([1 - 2 * Y * n2 / n1, 2 - 3 * Y * n3 / n2, 3 - 4 * Y * n4 / n3])
                d[1:] = np.clip(est, 0.05, np.array([1.0, 2.0, 3.0]) - 0.05)  # keep 0 < D_r < r
        return d

    def _make_order(self, m: int, keys: np.ndarray, counts: np.ndarray, suffix: np.ndarray | None) -> _Order:
        cfg, V = self.config, self.config.vocab_size
        n_ctx = 1 if m == 1 else len(self.orders[m - 2].keys)
        ctx = keys // V  # (K_m,) sorted context ids
        start = np.searchsorted(ctx, np.arange(n_ctx + 1))
        total = np.bincount(ctx, weights=counts, minlength=n_ctx)  # c(h.)
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        if cfg.smoothing == "add-k":
            denom = total + cfg.k * V  # c(h.) + kV; 0 only for an unseen context with k = 0
            inv = 1.0 / np.where(denom > 0, denom, 1.0)
            value = counts * inv[ctx]  # c(hw) / (c(h.) + kV)
            scale = np.where(denom > 0, cfg.k * V * inv, 1.0)  # times the uniform 1/V: k / (c(h.) + kV)
            return _Order(keys, counts, start, value, scale, seen, np.zeros(4))
        table = self._discount_table(counts)
        d = table[np.minimum(counts, 3)]  # (K_m,)
        if cfg.smoothing == "backoff":
            distinct = np.bincount(ctx, weights=counts > 0, minlength=n_ctx)
            d = np.where(distinct[ctx] >= V, 0.0, d)  # nothing unseen to give the mass to
        value = np.where(counts > 0, (counts - d) / safe[ctx], 0.0)
        gamma = np.bincount(ctx, weights=d, minlength=n_ctx) / safe  # mass left for the lower order
        if cfg.smoothing == "kneser-ney":
            return _Order(keys, counts, start, value, np.where(seen, gamma, 1.0), seen, table)
        if m == 1:  # lower order is the uniform: mass of the seen tokens is N1+(.) / V
            lower_seen = distinct / V
        else:
            lower_seen = np.bincount(ctx, weights=self.orders[m - 2].value[suffix], minlength=n_ctx)
        beta = gamma / np.maximum(1.0 - lower_seen, 1e-300)
        return _Order(keys, counts, start, value, np.where(seen, beta, 1.0), seen, table)

    def _order1(self) -> np.ndarray:
        V = self.config.vocab_size
        o = self.orders[0]
        p = np.full((1, V), 1.0 / V)
        if o.seen[0]:
            self._apply(o, p, np.zeros(1, dtype=np.int64))
        return p[0]

    # -- the two query paths --------------------------------------------------------------
    def _find(self, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ids of the contexts ``hist`` (P, L) at order L (``ok`` False where not stored or padded)."""
        V = self.config.vocab_size
        idx = np.zeros(len(hist), dtype=np.int64)
        ok = (hist >= 0).all(axis=1)
        for j in range(hist.shape[1]):
            keys = self.orders[j].keys
            if keys.size == 0:
                return idx, np.zeros_like(ok)
            key = idx * V + hist[:, j]
            pos = np.minimum(np.searchsorted(keys, key), keys.size - 1)
            ok &= keys[pos] == key
            idx = np.where(ok, pos, 0)
        return idx, ok

    def _apply(self, o: _Order, probs: np.ndarray, cid: np.ndarray) -> None:
        """Turn rows of ``probs`` (P, V) holding P_{m-1} (the uniform for add-k) into P_m."""
        V = self.config.vocab_size
        probs *= o.scale[cid][:, None]
        s = o.start[cid]
        lens = o.start[cid + 1] - s
        ends = np.cumsum(lens)
        flat = np.repeat(s - (ends - lens), lens) + np.arange(ends[-1] if len(ends) else 0)
        rows, cols = np.repeat(np.arange(len(cid)), lens), o.keys[flat] % V
        if self.config.smoothing == "backoff":
            probs[rows, cols] = o.value[flat]
        else:
            probs[rows, cols] += o.value[flat]  # (row, col) pairs are distinct

    def _dense_probs(self, ctx: np.ndarray) -> np.ndarray:
        """P(. | context) for each row of ``ctx`` (P, n-1), -1 = before the start: (P, V) float64."""
        V, n = self.config.vocab_size, self.config.n
        probs = np.tile(self._p1, (len(ctx), 1))  # (P, V)
        for m in range(2, n + 1):
            o, hist = self.orders[m - 1], ctx[:, n - m :]  # the last m-1 tokens
            cid, ok = self._find(hist)
            ok[ok] = o.seen[cid[ok]]
            if self.config.smoothing == "add-k":  # no interpolation: restart from the uniform
                probs[(hist >= 0).all(axis=1)] = 1.0 / V
            rows = np.flatnonzero(ok)
            block = probs[rows]
            self._apply(o, block, cid[rows])
            probs[rows] = block
        return probs

    def _token_probs(self, ctx: np.ndarray, target: np.ndarray) -> np.ndarray:
        """P(target | context) for each row, without touching the vocabulary: (P,) float64."""
        V, n, how = self.config.vocab_size, self.config.n, self.config.smoothing
        p = self._p1[target]
        for m in range(2, n + 1):
            o, hist = self.orders[m - 1], ctx[:, n - m :]
            cid, ok = self._find(hist)
            ok[ok] = o.seen[cid[ok]]
            key = cid * V + target
            pos = np.minimum(np.searchsorted(o.keys, key), max(o.keys.size - 1, 0))
            hit = ok & (o.keys[pos] == key) if o.keys.size else np.zeros_like(ok)
            own = np.where(hit, o.value[pos] if o.keys.size else 0.0, 0.0)
            scale = o.scale[cid] if o.scale.size else np.ones(len(cid))
            if how == "add-k":
                p = np.where((hist >= 0).all(axis=1), 1.0 / V, p)
                p = np.where(ok, scale / V + own, p)
            elif how == "kneser-ney":
                p = np.where(ok, scale * p + own, p)
            else:
                p = np.where(ok, np.where(hit, own, scale * p), p)
        return p

    def _contexts(self, x: np.ndarray) -> np.ndarray:
        """(B, T) ids -> (B * T, n-1) contexts ending at each position, -1 before the start."""
        B, T = x.shape
        c = self.config.n - 1
        padded = np.concatenate([np.full((B, max(c - 1, 0)), -1, dtype=np.int64), x], axis=1)
        if c == 0:
            return np.zeros((B * T, 0), dtype=np.int64)
        return np.lib.stride_tricks.sliding_window_view(padded, c, axis=1).reshape(B * T, c)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted statistics as named arrays (for safetensors): ``order{m}.{field}``."""
        self._check_fitted()
        return {f"order{m}.{f.name}": np.ascontiguousarray(getattr(o, f.name)) for m, o in enumerate(self.orders, 1) for f in fields(_Order)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> NGramLM:
        """Restore what :meth:`to_arrays` gave; returns self."""
        try:
            self.orders = [_Order(**{f.name: arrays[f"order{m}.{f.name}"] for f in fields(_Order)}) for m in range(1, self.config.n + 1)]
        except KeyError as e:
            raise ValueError(f"the saved n-gram statistics lack {e.args[0]}") from None
        self._p1 = self._order1()
        return self

    def _check_fitted(self) -> None:
        if self._p1 is None:
            raise RuntimeError("the n-gram model has no counts yet: call fit(ids) first")

    # -- public API -----------------------------------------------------------------------
    def logprobs(self, context: Sequence[int] | torch.Tensor = ()) -> torch.Tensor:
        """log P(. | context): (V,) float64. Only the last n-1 tokens of ``context`` matter."""
        self._check_fitted()
        c = self.config.n - 1
        ids = _as_ids(context, self.config.vocab_size)[-c:] if c else np.zeros(0, dtype=np.int64)
        row = np.concatenate([np.full(c - len(ids), -1, dtype=np.int64), ids])[None]  # (1, n-1)
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(self._dense_probs(row)[0]))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._check_fitted()
        B, T = idx.shape
        V = self.config.vocab_size
        ctx = self._contexts(_as_ids(idx, V).reshape(B, T))  # (B*T, n-1)
        out = torch.empty(B * T, V, dtype=torch.get_default_dtype())
        step = max(1, _CHUNK_CELLS // V)
        with np.errstate(divide="ignore"):
            for i in range(0, B * T, step):
                out[i : i + step] = torch.from_numpy(np.log(self._dense_probs(ctx[i : i + step])))
        logits = out.view(B, T, V).to(idx.device)  # (B, T, V) log-probabilities
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none", ignore_index=-100)
        return logits, loss.view(B, T)  # per-token loss; reduce outside

    def log_likelihood(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """log P(ids[t+1] | ids[:t+1]) for t = 0..N-2, computed without the V-wide rows: (N-1,) float64.
        The same numbers as ``forward(ids[None, :-1], ids[None, 1:])``'s negated loss."""
        self._check_fitted()
        tok = _as_ids(ids, self.config.vocab_size)
        ctx = self._contexts(tok[None, :-1])
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(self._token_probs(ctx, tok[1:])))

    def perplexity(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> float:
        """exp(mean negative log-likelihood) of ``ids[1:]`` (each token given the ones before)."""
        return float(torch.exp(-self.log_likelihood(ids).mean()))

    @torch.no_grad()
    def sample(
        self,
        context_ids: Sequence[int] | torch.Tensor,
        n_tokens: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Draw ``n_tokens`` new ids after ``context_ids``: (n_tokens,) long.
        ``temperature`` rescales log-probabilities; 0 picks the most probable token."""
        hist = [int(t) for t in _as_ids(context_ids, self.config.vocab_size)]
        out = []
        for _ in range(n_tokens):
            logp = self.logprobs(hist)
            if temperature == 0:
                nxt = int(torch.argmax(logp))
            else:
                nxt = int(torch.multinomial(torch.softmax(logp / temperature, dim=0), 1, generator=generator))
            hist.append(nxt)
            out.append(nxt)
        return torch.tensor(out, dtype=torch.long)

    def dense_size(self) -> int:
        """Cells of the course's dense table: V^(n-1) contexts x V tokens = V^n."""
        return self.config.vocab_size**self.config.n

    def stored_entries(self) -> int:
        """(context, token) count entries actually stored, over all orders 1..n."""
        return sum(len(o.keys) for o in self.orders)

    def num_parameters(self) -> int:
        """No trainable parameters; the model's size is its stored count entries."""
        return self.stored_entries()

    def extra_repr(self) -> str:
        c = self.config
        return f"n={c.n}, smoothing={c.smoothing}, stored={self.stored_entries():,}, dense={float(self.dense_size()):.3g}"
