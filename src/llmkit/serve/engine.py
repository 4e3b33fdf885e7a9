"""The serving engine: many requests generated together, token by token (continuous batching).

One background thread owns the model. Each loop turn it admits waiting requests into free
slots (a prefill each: the prompt in one forward pass), then runs one decoding step for every
active request at once: for llmkit's GPT a single batched forward pass over a
:class:`~llmkit.models.attention.SlotKVCache`, whose rows hold pasts of different lengths; a
request that finishes frees its slot for the next one at once, without waiting for the rest
of its batch (the difference between continuous and static batching). Other models (a
transformers causal LM) are stepped one request after another within the turn, with their
own KV caches: interleaved, not batched.

Requests come in through :meth:`Engine.submit` from any thread and read their events from a
:class:`Handle`: text pieces as they are decoded, then a final event with the finish reason
and the token counts. The queue is bounded (:class:`QueueFull` beyond ``max_queue``) and so is
the time a request may wait for a slot (``max_wait``); :meth:`Handle.cancel` (a client that
went away) frees the slot at the next turn.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from llmkit.serve.steppers import ByteDetokenizer, GPTStepper, TextDetokenizer, TransformersStepper  # noqa: F401  (re-exported: the engine's parts)

__all__ = ["ByteDetokenizer", "Engine", "Event", "GPTStepper", "Handle", "QueueFull", "SamplingParams", "TextDetokenizer", "TransformersStepper"]


class QueueFull(RuntimeError):
    """The engine's queue holds ``max_queue`` requests already; try again later."""


@dataclass
class SamplingParams:
    """How one request is generated."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop: Sequence[str] = ()
    """Strings that end the text (not included in it)."""
    stop_tokens: frozenset[int] = frozenset()
    """Token ids that end the text (e.g. <|endoftext|>, <|end|>)."""

    def __post_init__(self) -> None:
        from llmkit.generation import check_sampling

        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if any(not s for s in self.stop):
            raise ValueError("a stop string must not be empty")


@dataclass
class Event:
    """``kind`` "text" (``text``: the next piece) or "done" (``finish_reason``: stop, length,
    cancelled or error; ``error``: why), with the token counts so far."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    params: SamplingParams
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    generated: int = 0
    text: str = ""
    sent: int = 0  # characters of text already sent
    next_token: int | None = None
    slot: int = -1
    generator: torch.Generator | None = None
    detok: object = None
    sink: object = None
    """Called with each event instead of queueing it (from the engine thread), e.g. to hand it
    to an asyncio loop with ``call_soon_threadsafe``."""

    def put(self, ev: Event) -> None:
        if self.sink is not None:
            self.sink(ev)
        else:
            self.events.put(ev)

    def emit_done(self, reason: str, error: str | None = None) -> None:
        self.put(Event("done", finish_reason=reason, prompt_tokens=len(self.prompt), completion_tokens=self.generated, error=error))


class Handle:
    """A submitted request: iterate it for :class:`Event` s; :meth:`cancel` stops it."""

    def __init__(self, request: _Request, engine: Engine):
        self._r = request
        self._engine = engine

    def __iter__(self) -> Iterator[Event]:
        while True:
            ev = self._r.events.get()
            yield ev
            if ev.kind == "done":
                return

    def get(self, timeout: float | None = None) -> Event:
        """The next event (``queue.Empty`` after ``timeout`` seconds)."""
        return self._r.events.get(timeout=timeout)

    def cancel(self) -> None:
        self._r.cancelled.set()
        self._engine._wake()

    def result(self) -> Event:
        """Wait for the end: one "done" event whose ``text`` is the whole generated text."""
        pieces = []
        for ev in self:
            if ev.kind == "text":
                pieces.append(ev.text)
            else:
                ev.text = "".join(pieces)
                return ev
        raise RuntimeError("unreachable")


# -- the engine --------------------------------------------------------------------------------------
class Engine:
    """Generate for many requests at once on one model. ``detokenizer()`` makes a fresh
    :class:`ByteDetokenizer` / :class:`TextDetokenizer` per request (tokens back to text).

        engine = Engine(GPTStepper(model, 8), lambda: ByteDetokenizer(tokenizer.decode_bytes), max_batch=8)
        print(engine.submit(ids, SamplingParams(max_tokens=20, temperature=0)).result().text)
    """

    def __init__(self, stepper, detokenizer, *, max_batch: int = 8, max_queue: int = 64, max_wait: float = 60.0):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self.stepper = stepper
        self.detokenizer = detokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_wait = max_wait
        self.context_length = stepper.context_length
        self._waiting: deque[_Request] = deque()
        self._active: dict[int, _Request] = {}
        self._free = list(range(max_batch))[::-1]
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._stop = False
        self.steps = 0
        """Decoding steps run so far (each serves every active request once)."""
        self.max_active_seen = 0
        self._thread = threading.Thread(target=self._loop, name="llmkit-engine", daemon=True)
        self._thread.start()

    # -- client side
    def submit(self, prompt: Sequence[int], params: SamplingParams, sink=None) -> Handle:
        """Queue a request; :class:`QueueFull` when ``max_queue`` are waiting; ValueError when
        the prompt plus ``max_tokens`` do not fit the context window. With ``sink``, events go
        to ``sink(event)`` (called on the engine thread) instead of the handle."""
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) + params.max_tokens > self.context_length:
            raise ValueError(f"the prompt ({len(prompt)} tokens) plus max_tokens ({params.max_tokens}) exceed the model's context window of "
                             f"{self.context_length} tokens")
        r = _Request(prompt, params, sink=sink)
        with self._lock:
            if self._stop:
                raise RuntimeError("the engine is stopped")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (the queue holds {self.max_queue}); retry shortly")
            self._waiting.append(r)
            self._work.notify()
        return Handle(r, self)

    def load(self) -> dict[str, int]:
        with self._lock:
            return {"waiting": len(self._waiting), "active": len(self._active), "slots": self.max_batch}

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stop = True
            self._work.notify()
        self._thread.join(timeout)

    def _wake(self) -> None:
        with self._lock:
            self._work.notify()

    # -- engine thread
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._waiting and not self._active:
                    self._work.wait()
                if self._stop:
                    break
                admitted = []
                now = time.monotonic()
                while self._waiting and self._free:
                    r = self._waiting.popleft()
                    if r.cancelled.is_set():
                        r.emit_done("cancelled")
                    elif now - r.submitted > self.max_wait:
                        r.emit_done("error", f"waited over {self.max_wait:g} s for a free slot")
                    else:
                        r.slot = self._free.pop()
                        admitted.append(r)
                for r in list(self._waiting):  # requests still waiting: drop the cancelled and the too old
                    if r.cancelled.is_set():
                        self._waiting.remove(r)
                        r.emit_done("cancelled")
                    elif now - r.submitted > self.max_wait:
                        self._waiting.remove(r)
                        r.emit_done("error", f"waited over {self.max_wait:g} s for a free slot")
            try:
                for r in admitted:
                    self._prefill(r)
                self._step()
            except Exception as e:  # a model failure ends the affected requests, never the engine thread
                for r in list(self._active.values()):
                    self._finish(r, "error", f"{type(e).__name__}: {e}")
        for r in [*self._waiting, *self._active.values()]:
            r.emit_done("error", "the server is shutting down")

    def _prefill(self, r: _Request) -> None:
        p = r.params
        if p.seed is not None:
            r.generator = torch.Generator(device=self.stepper.device).manual_seed(p.seed)
        r.detok = self.detokenizer()
        logits = self.stepper.prefill(r.slot, r.prompt)
        self._active[r.slot] = r
        self.max_active_seen = max(self.max_active_seen, len(self._active))
        self._take(r, logits[None])

    def _step(self) -> None:
        for r in [r for r in self._active.values() if r.cancelled.is_set()]:
            self._finish(r, "cancelled")
        if not self._active:
            return
        slots = list(self._active)
        logits = self.stepper.decode(slots, [self._active[s].next_token for s in slots])  # (B, V)
        self.steps += 1
        greedy = logits.argmax(-1).tolist()  # one call for every greedy row; sampled rows draw their own below
        for s, row, g in zip(slots, logits, greedy):
            self._take(self._active[s], row[None], g)

    def _take(self, r: _Request, logits: torch.Tensor, greedy: int | None = None) -> None:
        """Sample the next token from ``logits`` (1, V) (``greedy``: its argmax, if known),
        record it, and finish ``r`` when done."""
        from llmkit.generation import sample_next

        p = r.params
        if p.temperature == 0 and greedy is not None:
            t = greedy
        else:
            t = int(sample_next(logits, p.temperature, p.top_k, p.top_p, generator=r.generator)[0])
        if t in p.stop_tokens:
            return self._finish(r, "stop")
        r.generated += 1
        r.next_token = t
        r.text += r.detok.add(t)
        cut = _stop_at(r.text, p.stop)
        if cut is not None:
            r.text = r.text[:cut]
            return self._finish(r, "stop")
        self._send(r, _safe_end(r.text, p.stop))
        if r.generated >= p.max_tokens or len(r.prompt) + r.generated >= self.context_length:
            self._finish(r, "length")

    def _send(self, r: _Request, upto: int) -> None:
        if upto > r.sent:
            r.put(Event("text", r.text[r.sent : upto], prompt_tokens=len(r.prompt), completion_tokens=r.generated))
            r.sent = upto

    def _finish(self, r: _Request, reason: str, error: str | None = None) -> None:
        if reason != "error":
            r.text += r.detok.flush() if r.detok is not None and reason != "cancelled" else ""
            self._send(r, len(r.text))
        r.emit_done(reason, error)
        if self._active.get(r.slot) is r:
            del self._active[r.slot]
            self.stepper.free(r.slot)
            with self._lock:
                self._free.append(r.slot)


def _stop_at(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _safe_end(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` can be sent: all but a tail that could still grow into a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return len(text) - hold
