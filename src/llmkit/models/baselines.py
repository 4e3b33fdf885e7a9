"""The course's baseline language models, all with ``model(x, y) -> (logits (B, T, V), loss (B, T))``:

- :class:`NGramLM` (in :mod:`llmkit.models.ngram`): counts with Kneser-Ney, backoff or add-k smoothing;
- :class:`NPLM`: Bengio et al. (2003)'s neural probabilistic language model, a fixed window of
  previous tokens -> concatenated embeddings -> tanh layer -> softmax (plus direct connections);
- :class:`LSTMLM`: embedding -> stacked LSTM -> linear head, with optional weight tying.

Each has ``num_parameters()`` and ``sample(context_ids, n_tokens, generator, temperature)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.models.config import LSTMConfig, NPLMConfig
from llmkit.models.ngram import NGramLM

__all__ = ["LSTMLM", "NGramLM", "NPLM"]

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (n_layer, B, n_hidden)


def _per_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    B, T = targets.shape
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none", ignore_index=-100)
    return loss.view(B, T)  # per-token loss; reduce outside


def _draw(logits: torch.Tensor, generator: torch.Generator | None, temperature: float) -> int:
    """One id from (V,) logits: argmax at temperature 0, else a draw from softmax(logits / temperature)."""
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def _context_tensor(context_ids: Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    ids = torch.as_tensor(context_ids, dtype=torch.long, device=device).reshape(1, -1)  # (1, T)
    if ids.shape[1] == 0:
        raise ValueError("sampling needs at least one context token")
    return ids


class NPLM(nn.Module):
    """Bengio et al. (2003): y = b + W x + U tanh(d + H x), x = [C(w_{t-k+1}), ..., C(w_t)].

    Logits at position t predict token t+1 from ``x[:, t-context+1 .. t]``: a causal sliding
    window. Positions before the start of the sequence read a dedicated, learned padding
    embedding (row ``vocab_size`` of the table), so the model can tell "start" from any token.
    """

    def __init__(self, cfg: NPLMConfig):
        super().__init__()
        self.config = cfg
        self.pad_id = cfg.vocab_size
        width = cfg.context * cfg.n_embd
        self.wte = nn.Embedding(cfg.vocab_size + 1, cfg.n_embd)  # C, plus the padding row
        self.hidden = nn.Linear(width, cfg.n_hidden)  # H and d
        self.head = nn.Linear(cfg.n_hidden, cfg.vocab_size)  # U and b
        self.direct = nn.Linear(width, cfg.vocab_size, bias=False) if cfg.direct else None  # W
        self.drop = nn.Dropout(cfg.dropout)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def windows(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, context): the ids each position sees, padding before the start."""
        B, T = idx.shape
        pad = idx.new_full((B, self.config.context - 1), self.pad_id)
        return torch.cat([pad, idx], dim=1).unfold(1, self.config.context, 1)  # (B, T, context)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.drop(self.wte(self.windows(idx)).flatten(2))  # (B, T, context * n_embd)
        h = self.drop(torch.tanh(self.hidden(x)))  # (B, T, n_hidden)
        logits = self.head(h)  # (B, T, V)
        if self.direct is not None:
            logits = logits + self.direct(x)
        return logits, (None if targets is None else _per_token_loss(logits, targets))

    @torch.no_grad()
    def sample(
        self,
        context_ids: Sequence[int] | torch.Tensor,
        n_tokens: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Draw ``n_tokens`` new ids after ``context_ids`` (only the last ``context`` matter): (n_tokens,) long."""
        ids = _context_tensor(context_ids, self.wte.weight.device)
        out = []
        for _ in range(n_tokens):
            logits, _ = self(ids[:, -self.config.context :])  # (1, <=context, V)
            nxt = _draw(logits[0, -1], generator, temperature)
            out.append(nxt)
            ids = torch.cat([ids, ids.new_tensor([[nxt]])], dim=1)
        return torch.tensor(out, dtype=torch.long)


class LSTMLM(nn.Module):
    """Embedding -> dropout -> ``n_layer`` stacked LSTMs -> dropout -> linear head.

    With ``tie_weights`` the head reuses the embedding matrix (its bias stays separate).
    ``forward_with_state`` carries the recurrent state across calls, for generation or
    truncated backpropagation through time.
    """

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        inter_layer = cfg.dropout if cfg.n_layer > 1 else 0.0  # nn.LSTM warns on dropout with one layer
        self.lstm = nn.LSTM(cfg.n_embd, cfg.n_hidden, cfg.n_layer, batch_first=True, dropout=inter_layer)
        self.head = nn.Linear(cfg.n_hidden, cfg.vocab_size)
        # Embeddings ~ N(0, 1/n_embd): unit-norm rows, so a tied head starts with O(1) logits
        # (PyTorch's N(0, 1) makes them ~sqrt(n_hidden) large; Zaremba's U(-0.1, 0.1) stalls small models).
        nn.init.normal_(self.wte.weight, std=cfg.n_embd**-0.5)
        nn.init.zeros_(self.head.bias)
        if cfg.tie_weights:
            self.head.weight = self.wte.weight

    def num_parameters(self) -> int:
        """Unique parameters (a tied head counts once)."""
        return sum(p.numel() for p in self.parameters())

    def forward_with_state(self, idx: torch.Tensor, state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        """(B, T) ids, optional (h, c) -> logits (B, T, V) and the state after the last token."""
        x = self.drop(self.wte(idx))  # (B, T, n_embd)
        out, state = self.lstm(x, state)  # (B, T, n_hidden); h, c: (n_layer, B, n_hidden)
        return self.head(self.drop(out)), state  # (B, T, V)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, _ = self.forward_with_state(idx, state)
        return logits, (None if targets is None else _per_token_loss(logits, targets))

    @torch.no_grad()
    def sample(
        self,
        context_ids: Sequence[int] | torch.Tensor,
        n_tokens: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Draw ``n_tokens`` new ids after ``context_ids``, one LSTM step each: (n_tokens,) long."""
        ids = _context_tensor(context_ids, self.wte.weight.device)
        logits, state = self.forward_with_state(ids)  # read the context once
        out = []
        for _ in range(n_tokens):
            nxt = _draw(logits[0, -1], generator, temperature)
            out.append(nxt)
            logits, state = self.forward_with_state(ids.new_tensor([[nxt]]), state)
        return torch.tensor(out, dtype=torch.long)
