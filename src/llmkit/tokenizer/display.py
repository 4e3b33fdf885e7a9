"""Token boundaries as text pieces, for the course's ``'hello world' -> ['he', 'll', 'o', ...]`` view."""

from __future__ import annotations

from collections.abc import Sequence

from llmkit.tokenizer.tokenizer import Tokenizer


def token_pieces(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """The text of each token. A character split across tokens is shown whole on the
    token that completes it, and as '' on the tokens before, so that the pieces always
    join back to the decoded text."""
    pieces: list[str] = []
    pending = b""
    for b in tokenizer.decode_tokens_bytes(ids):
        pending += b
        try:
            pieces.append(pending.decode("utf-8"))
            pending = b""
        except UnicodeDecodeError as e:
            if e.reason == "unexpected end of data" and len(pending) - e.start < 4:
                ok = pending[: e.start].decode("utf-8")
                pieces.append(ok)
                pending = pending[e.start :]
            else:
                pieces.append(pending.decode("utf-8", errors="replace"))
                pending = b""
    if pending:
        pieces[-1] += pending.decode("utf-8", errors="replace")
    return pieces
