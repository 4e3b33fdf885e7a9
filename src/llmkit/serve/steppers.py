"""The model side of the serving engine (:mod:`llmkit.serve.engine`): detokenizers turn a
request's tokens back into text piece by piece; steppers run the model (``prefill`` one prompt
into a slot, ``decode`` one token for each active slot, ``free`` a slot; they name their
``device`` and ``context_length``)."""

from __future__ import annotations

import codecs
import inspect

import torch

__all__ = ["ByteDetokenizer", "GPTStepper", "TextDetokenizer", "TransformersStepper"]


# -- detokenizers: tokens back to text, piece by piece ------------------------------------------------
class ByteDetokenizer:
    """For byte-level tokenizers (llmkit's): each token's bytes through an incremental UTF-8
    decoder, which holds back a character split across tokens until it is whole."""

    def __init__(self, decode_bytes):
        self.decode_bytes = decode_bytes
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token: int) -> str:
        return self.utf8.decode(self.decode_bytes([token]))

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


class TextDetokenizer:
    """For any tokenizer with ``decode(ids)`` (transformers'): decode all tokens so far and
    return what is new, holding back while the text ends in an unfinished character (U+FFFD)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.done = 0  # characters already returned

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        new, self.done = text[self.done :], len(text)
        return new

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        new, self.done = text[self.done :], len(text)
        return new


# -- steppers: the model side (prefill, decode, free; device, context_length) ------------------------
class GPTStepper:
    """llmkit's GPT: prefill one prompt with a one-row KV cache, copy it into a slot of a
    :class:`SlotKVCache`, decode all active slots in one batched forward pass."""

    batched = True

    def __init__(self, model, slots: int):
        from llmkit.models.attention import SlotKVCache

        c = model.config
        w = model.transformer.wte.weight
        self.model = model
        self.device = w.device
        self.context_length = c.context_length
        self.cache = SlotKVCache(c.n_layer, slots, c.n_head, c.head_dim, c.context_length, device=w.device, dtype=w.dtype)

    @torch.no_grad()
    def prefill(self, slot: int, ids: list[int]) -> torch.Tensor:
        one = self.model.new_kv_cache(1, len(ids))
        logits = self.model.forward_cached(torch.tensor([ids], device=self.device), one, last_only=True)[:, -1]  # (1, V)
        self.cache.fill(slot, one)
        return logits[0]

    @torch.no_grad()
    def decode(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        self.cache.select(slots)
        x = torch.tensor(tokens, device=self.device)[:, None]  # (B, 1)
        return self.model.forward_cached(x, self.cache, last_only=True)[:, -1]  # (B, V)

    def free(self, slot: int) -> None:
        self.cache.free(slot)


class TransformersStepper:
    """A transformers causal LM: each slot keeps its own cache; decoding steps them in turn."""

    batched = False

    def __init__(self, model, slots: int):
        self.model = model
        cfg = model.config
        self.context_length = next((int(getattr(cfg, n)) for n in ("max_position_embeddings", "n_positions", "n_ctx") if getattr(cfg, n, None)), 2048)
        self.past: dict[int, object] = {}
        self.device = next(model.parameters()).device
        self._new_api = "cache" in inspect.signature(model.forward).parameters

    def _forward(self, ids: list[list[int]], past):
        """(logits, cache): transformers 5 names the cache ``cache``, 4 ``past_key_values``."""
        x = torch.tensor(ids, device=self.device)
        if self._new_api:
            out = self.model(x, cache=past, use_cache=True)
            return out.logits, out.cache
        out = self.model(x, past_key_values=past, use_cache=True)
        return out.logits, out.past_key_values

    @torch.no_grad()
    def prefill(self, slot: int, ids: list[int]) -> torch.Tensor:
        logits, self.past[slot] = self._forward([ids], None)
        return logits[0, -1]

    @torch.no_grad()
    def decode(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        rows = []
        for s, t in zip(slots, tokens):
            logits, self.past[s] = self._forward([[t]], self.past[s])
            rows.append(logits[0, -1])
        return torch.stack(rows)

    def free(self, slot: int) -> None:
        self.past.pop(slot, None)
