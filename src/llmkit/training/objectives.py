"""Training objectives: how a batch of windows becomes inputs and targets, and how the
per-token loss is averaged.

- ``causal``: predict the next token (GPT, LSTM, NPLM); mean over every position.
- ``mlm``: BERT's masked-LM rule (15 % of tokens; 80 % [MASK], 10 % random, 10 % kept);
  mean over the masked positions only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Objective:
    name: str
    prepare: Callable[[torch.Tensor, torch.Tensor, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]]
    """``(x, y_next, generator) -> (inputs, targets)``; generator None means the global RNG."""

    def reduce(self, loss: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss over the positions that have a target (``-100`` marks none)."""
        return loss.float().sum() / (targets != -100).sum().clamp(min=1)

    def count(self, targets: torch.Tensor) -> int:
        return int((targets != -100).sum())


CAUSAL = Objective("causal", lambda x, y, g: (x, y))


def mlm_objective(mask_id: int, vocab_size: int, special_ids: Iterable[int]) -> Objective:
    from llmkit.models.bert import mask_tokens

    specials = tuple(special_ids)

    def prepare(x: torch.Tensor, y: torch.Tensor, g: torch.Generator | None):
        return mask_tokens(x, mask_id=mask_id, vocab_size=vocab_size, special_ids=specials, generator=g)

    return Objective("mlm", prepare)
