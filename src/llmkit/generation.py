"""Text generation: sampling (greedy, temperature, top-k, top-p), a KV-cached decode loop,
stop tokens, and streaming text that never splits a UTF-8 character.

Layers, from the bottom:

- :func:`next_token_probs` (the readable full-vocabulary form) and :func:`sample_next` (the
  fast one: it samples inside the top-k / sorted candidates only) turn logits (B, V) into a
  distribution and a choice (B,). Temperature 0 is greedy (argmax).
- :class:`Runner` gives next-token logits step by step. A model with a KV cache
  (``new_kv_cache`` + ``forward_cached``, like :class:`llmkit.models.gpt.GPT`) is prefilled
  once and then fed one token per step; any other model with the course signature
  ``model(x) -> (logits, None)`` (LSTM, NPLM, n-gram baselines) is re-run on the whole
  sequence each step. Both give the same logits (tests hold them to 1e-5).
- :func:`iter_tokens` is the loop: one tensor (B,) of new tokens per step, model in eval
  mode and ``torch.inference_mode`` while it runs (the model's mode is restored after).
- :func:`generate` / :func:`generate_batch` / :func:`generate_tensor` (ids) and
  :func:`generate_text` / :func:`stream` (text) sit on top and handle stop tokens.

Beyond the context length (sliding window): a model with learned absolute positions cannot
reuse cached keys/values once the window slides, because every token then sits at a new
position. So when a sequence would pass ``context_length``, the cache is dropped and every
following step recomputes the last ``context_length`` tokens: exactly what the no-cache path
does, slower (O(T^2) per step) but the same tokens and never an error.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing

import torch
import torch.nn.functional as F
from torch import nn

# -- sampling --------------------------------------------------------------------------


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0) -> None:
    """ValueError unless temperature >= 0, top_k >= 1 (or None) and 0 < top_p <= 1."""
    if not temperature >= 0:  # also catches NaN
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None for no limit), got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0) -> torch.Tensor:
    """The distribution (B, V) that :func:`sample_next` draws from, over the whole vocabulary:
    divide by the temperature, keep the ``top_k`` most likely tokens, then the smallest set
    of them whose probability sums to at least ``top_p``, and renormalise."""
    check_sampling(temperature, top_k, top_p)
    logits = logits.float()
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, logits.topk(top_k, dim=-1).indices, True)
        logits = logits.masked_fill(~keep, float("-inf"))
    probs = logits.softmax(-1)  # (B, V)
    if top_p < 1.0:
        p_sorted, order = probs.sort(dim=-1, descending=True)
        before = p_sorted.cumsum(-1) - p_sorted  # mass of the more likely tokens
        keep_sorted = before < top_p  # the first token always stays (before = 0)
        keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        probs = probs.masked_fill(~keep, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw the next token (B,) from logits (B, V). Same rule as :func:`next_token_probs`,
    but it samples among the top-k (or sorted) candidates only, never building a filtered
    copy of the vocabulary; ``generator`` makes it reproducible."""
    check_sampling(temperature, top_k, top_p)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, V), got shape {tuple(logits.shape)}")
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)  # greedy
    logits = logits / temperature
    V = logits.shape[-1]
    if top_k is not None and top_k < V:
        vals, idx = logits.topk(top_k, dim=-1)  # (B, k), most likely first
    elif top_p < 1.0:
        vals, idx = logits.sort(dim=-1, descending=True)  # (B, V)
    else:
        return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
    probs = vals.softmax(-1)
    if top_p < 1.0:
        before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)  # multinomial renormalises
    choice = torch.multinomial(probs, 1, generator=generator)  # (B, 1): a rank among candidates
    return idx.gather(-1, choice).squeeze(-1)  # (B,) token ids


# -- step-by-step logits ---------------------------------------------------------------


def supports_kv_cache(model) -> bool:
    return callable(getattr(model, "forward_cached", None)) and callable(getattr(model, "new_kv_cache", None))


def model_context_length(model) -> int | None:
    """``model.config.context_length`` or ``model.context_length``; None means unlimited."""
    n = getattr(getattr(model, "config", None), "context_length", None)
    n = getattr(model, "context_length", None) if n is None else n
    return n if isinstance(n, int) else None


class Runner:
    """Next-token logits (B, V) for a batch of sequences, one step at a time:
    ``prefill(idx (B, T))`` then ``feed(tokens (B,))`` per new token.

    ``use_cache``: None uses the KV cache when the model has one, True requires it, False
    recomputes the whole (windowed) sequence every step. ``max_len`` sizes the cache (the
    longest sequence expected; default the context length). Put the model in eval mode
    first (:func:`iter_tokens` does).
    """

    def __init__(self, model, *, use_cache: bool | None = None, context_length: int | None = None, max_len: int | None = None):
        if use_cache and not supports_kv_cache(model):
            raise ValueError(f"{type(model).__name__} has no KV cache (needs new_kv_cache and forward_cached); use use_cache=False")
        self.model = model
        self.use_cache = supports_kv_cache(model) if use_cache is None else bool(use_cache)
        self.context_length = model_context_length(model) if context_length is None else context_length
        self.max_len = max_len
        self.ids: torch.Tensor | None = None  # (B, T) every token so far
        self.cache = None

    @property
    def cached(self) -> bool:
        """Whether the next step will use the cache (False once the window slides)."""
        return self.cache is not None and self.cache.pos < self.cache.max_len

    def _window(self, ids: torch.Tensor) -> torch.Tensor:
        return ids if self.context_length is None else ids[:, -self.context_length :]

    def _recompute(self) -> torch.Tensor:
        window = self._window(self.ids)
        if supports_kv_cache(self.model):  # a throw-away cache lets the head run on the last position only
            scratch = self.model.new_kv_cache(window.shape[0], max_len=window.shape[1])
            return self.model.forward_cached(window, scratch, last_only=True)[:, -1]  # (B, V)
        logits, _ = self.model(window)  # (B, T, V)
        return logits[:, -1]

    @torch.inference_mode()
    def prefill(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(f"prompt ids must be (B, T) with T >= 1, got shape {tuple(idx.shape)}")
        self.ids = idx
        if not self.use_cache:
            return self._recompute()
        window = self._window(idx)
        size = max(self.max_len or 0, window.shape[1]) if self.max_len else None
        self.cache = self.model.new_kv_cache(idx.shape[0], max_len=size)
        return self.model.forward_cached(window, self.cache, last_only=True)[:, -1]  # (B, V)

    @torch.inference_mode()
    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.ids is None:
            raise RuntimeError("call prefill() before feed()")
        tokens = tokens.reshape(-1, 1).to(self.ids.device)  # (B, 1)
        self.ids = torch.cat([self.ids, tokens], dim=1)
        if self.cached:
            return self.model.forward_cached(tokens, self.cache, last_only=True)[:, -1]  # (B, V)
        self.cache = None  # sliding window from here on (see the module docstring): free it
        return self._recompute()


# -- the loop --------------------------------------------------------------------------


def _device(model) -> torch.device:
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


def _as_batch(prompts, device: torch.device) -> torch.Tensor:
    if isinstance(prompts, torch.Tensor):
        idx = prompts.unsqueeze(0) if prompts.ndim == 1 else prompts
    else:
        first = next(iter(prompts), None)
        single = first is not None and not isinstance(first, (Sequence, torch.Tensor))  # one list of ids
        rows = [[int(t) for t in prompts]] if single else [[int(t) for t in p] for p in prompts]
        if not rows or len({len(r) for r in rows}) != 1:
            raise ValueError("prompts must be a non-empty batch of equal length (pad or group them by length)")
        idx = torch.tensor(rows, dtype=torch.long)
    if idx.ndim != 2 or idx.shape[1] == 0 or idx.shape[0] == 0:
        raise ValueError(f"prompt ids must be (B, T) with B, T >= 1, got shape {tuple(idx.shape)}")
    return idx.to(device=device, dtype=torch.long)


def iter_tokens(
    model,
    prompts,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    use_cache: bool | None = None,
    context_length: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the new tokens (B,) step by step for ``prompts`` ((B, T) tensor, list of equal
    length id lists, or one id list). ``seed`` builds a generator on the model's device
    (or pass ``generator``). Arguments are checked now; the model runs when iterated."""
    check_sampling(temperature, top_k, top_p)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    device = _device(model)
    idx = _as_batch(prompts, device)
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    runner = Runner(model, use_cache=use_cache, context_length=context_length, max_len=idx.shape[1] + max_new_tokens - 1)
    return _loop(runner, idx, max_new_tokens, dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator))


@torch.inference_mode()  # on a generator function torch enters the mode around each step only
def _loop(runner: Runner, idx: torch.Tensor, max_new_tokens: int, sampling: dict) -> Iterator[torch.Tensor]:
    if max_new_tokens == 0:
        return
    model = runner.model
    was_training = model.training if isinstance(model, nn.Module) else None
    if was_training is not None:
        model.eval()
    try:
        logits = runner.prefill(idx)  # (B, V)
        for step in range(max_new_tokens):
            nxt = sample_next(logits, **sampling)  # (B,)
            yield nxt
            if step + 1 < max_new_tokens:  # the last token is never fed back
                logits = runner.feed(nxt)
    finally:
        if was_training is not None:
            model.train(was_training)


# -- ids in, ids out -------------------------------------------------------------------


def generate_batch(
    model, prompts, max_new_tokens: int = 128, *, stop_tokens: Iterable[int] | None = None, include_stop: bool = False, **opts
) -> list[list[int]]:
    """New tokens for each prompt of a batch (equal lengths). A row ends at its first stop
    token (left out unless ``include_stop``); the loop ends when every row has. ``opts``:
    see :func:`iter_tokens`."""
    stops = set(stop_tokens or ())
    tokens = iter_tokens(model, prompts, max_new_tokens, **opts)
    out: list[list[int]] | None = None
    done: list[bool] = []
    with closing(tokens):
        for col in tokens:
            if out is None:
                out, done = [[] for _ in range(col.shape[0])], [False] * col.shape[0]
            for b, t in enumerate(col.tolist()):
                if done[b]:
                    continue
                if t in stops:
                    done[b] = True
                    if not include_stop:
                        continue
                out[b].append(t)
            if all(done):
                break
    return out if out is not None else [[] for _ in range(_as_batch(prompts, torch.device("cpu")).shape[0])]


def generate(model, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int = 128, **opts) -> list[int]:
    """New token ids after one prompt (a list of ids or a 1-D tensor); see :func:`generate_batch`."""
    if isinstance(prompt, torch.Tensor) and prompt.ndim != 1:
        raise ValueError("generate takes one prompt (1-D); use generate_batch for (B, T)")
    return generate_batch(model, [list(map(int, prompt))], max_new_tokens, **opts)[0]


def generate_tensor(model, idx: torch.Tensor, max_new_tokens: int = 128, **opts) -> torch.Tensor:
    """nanoGPT's form: (B, T) -> (B, T + max_new_tokens), prompt included, no stop tokens."""
    cols = list(iter_tokens(model, idx, max_new_tokens, **opts))
    idx = _as_batch(idx, _device(model))
    return torch.cat([idx, torch.stack(cols, dim=1)], dim=1) if cols else idx


# -- text ------------------------------------------------------------------------------


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The ids a text prompt starts generation from (an empty prompt: ``<|endoftext|>``)."""
    ids = tokenizer.encode(prompt)
    if not ids:  # an empty prompt starts from the document separator, as GPT-2 does
        if tokenizer.eot_token is None:
            raise ValueError("empty prompt and the tokenizer has no <|endoftext|> to start from")
        ids = [tokenizer.eot_token]
    return ids


def default_stop_tokens(tokenizer, stop_tokens: Iterable[int] | None) -> set[int]:
    """Text APIs stop at <|endoftext|> by default; pass ``stop_tokens=()`` for no stops."""
    if stop_tokens is None:
        return set() if tokenizer.eot_token is None else {tokenizer.eot_token}
    return set(stop_tokens)


def generate_text(
    model, tokenizer, prompt: str, max_new_tokens: int = 128, *, stop_tokens: Iterable[int] | None = None, include_stop: bool = False, **opts
) -> str:
    """The text generated after ``prompt`` (prompt not included). Stops at ``stop_tokens``
    (default: the tokenizer's <|endoftext|>). ``opts``: see :func:`iter_tokens`."""
    ids = generate(model, encode_prompt(tokenizer, prompt), max_new_tokens, stop_tokens=default_stop_tokens(tokenizer, stop_tokens), include_stop=include_stop, **opts)
    return tokenizer.decode(ids)


def stream(
    model, tokenizer, prompt: str, max_new_tokens: int = 128, *, stop_tokens: Iterable[int] | None = None, include_stop: bool = False, **opts
) -> Iterator[str]:
    """Yield the generated text piece by piece as tokens arrive. Bytes of a character split
    across tokens (emoji, CJK under byte-level BPE) are held back until it is complete, so
    ``"".join(stream(...)) == tokenizer.decode(generated ids)``."""
    stops = default_stop_tokens(tokenizer, stop_tokens)
    tokens = iter_tokens(model, encode_prompt(tokenizer, prompt), max_new_tokens, **opts)  # checks args now
    return _text_pieces(tokens, tokenizer, stops, include_stop)


def _text_pieces(tokens: Iterator[torch.Tensor], tokenizer, stops: set[int], include_stop: bool) -> Iterator[str]:
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # keeps an unfinished character's bytes
    with closing(tokens):
        for col in tokens:
            t = int(col[0])
            stop = t in stops
            if stop and not include_stop:
                break
            piece = utf8.decode(tokenizer.decode_bytes([t]))
            if piece:
                yield piece
            if stop:
                break
    tail = utf8.decode(b"", final=True)  # a character left unfinished becomes U+FFFD, as decode() does
    if tail:
        yield tail


__all__ = [
    "Runner",
    "check_sampling",
    "generate",
    "generate_batch",
    "generate_tensor",
    "generate_text",
    "iter_tokens",
    "model_context_length",
    "next_token_probs",
    "sample_next",
    "stream",
    "supports_kv_cache",
]
