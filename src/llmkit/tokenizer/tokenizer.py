"""The :class:`Tokenizer`: one byte-level BPE (ranks + split pattern + special tokens) with a
choice of engine, batch encoding, and the artefact directory format.

A tokenizer directory holds:
- ``tokenizer.tiktoken``: tiktoken's rank file (base64 token, space, rank; id == rank);
- ``llmkit_tokenizer.json``: name, split pattern (both spellings) and special tokens;
- ``tokenizer.json`` + ``tokenizer_config.json``: the same tokenizer for HF ``tokenizers``/
  ``transformers`` (``PreTrainedTokenizerFast(tokenizer_file=...)``, ``AutoTokenizer``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

from llmkit._io import atomic_write_bytes, refuse_overwrite
from llmkit.tokenizer import files
from llmkit.tokenizer.batch import BatchEncoding, Padding, assemble
from llmkit.tokenizer.bpe import ENGINES, AllowedSpecial
from llmkit.tokenizer.patterns import PATTERNS, SplitPattern, get_pattern

RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "llmkit_tokenizer.json"
HF_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"
FORMAT = "llmkit-tokenizer"
FORMAT_VERSION = 1
EngineName = Literal["python", "fast"]


class Tokenizer:
    """A byte-level BPE tokenizer. Ids of ordinary tokens equal their ranks; special tokens
    have ids of their own and are recognised in text only when a caller allows them."""

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: SplitPattern | str,
        special_tokens: dict[str, int] | None = None,
        *,
        name: str = "custom",
        engine: EngineName = "fast",
    ):
        self.pattern = get_pattern(pattern) if isinstance(pattern, str) and pattern in PATTERNS else pattern
        if isinstance(self.pattern, str):
            self.pattern = SplitPattern("custom", self.pattern, self.pattern)
        self.ranks = ranks
        self.special_tokens = dict(special_tokens or {})
        self.name = name
        _validate(ranks, self.special_tokens)
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; choose 'python' or 'fast'")
        self.engine_name: EngineName = engine
        split = self.pattern.for_regex if engine == "python" else self.pattern.tiktoken  # same pieces, tested
        self._engine = ENGINES[engine](ranks, split, self.special_tokens)
        self._decoder: dict[int, bytes] = {r: t for t, r in ranks.items()}
        self._decoder.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike, *, engine: EngineName = "fast") -> Tokenizer:
        """Load a named encoding (``gpt2``, ``r50k_base``, ``cl100k_base``, ``o200k_base``)
        or a tokenizer directory written by :meth:`save`."""
        key = str(name_or_dir)
        if key in files.NAMED_ENCODINGS:
            spec = files.load_named(key)
            return cls(spec.ranks, spec.pattern, spec.special_tokens, name=spec.name, engine=engine)
        path = Path(key)
        if (path / RANKS_FILE).is_file():
            return cls.load(path, engine=engine)
        raise FileNotFoundError(
            f"unknown tokenizer {key!r}: neither a named encoding ({', '.join(files.NAMED_ENCODINGS)}) "
            f"nor a directory containing {RANKS_FILE}"
        )

    @classmethod
    def from_merges(cls, merges: Sequence[tuple[int, int]], pattern: SplitPattern | str, special_tokens: Sequence[str] = (), **kw) -> Tokenizer:
        """Build from a merge list (merge i makes id 256 + i); special tokens get the ids
        after the last merge, in the order given."""
        vocab = {i: bytes([i]) for i in range(256)}
        for i, (a, b) in enumerate(merges):
            vocab[256 + i] = vocab[a] + vocab[b]
        ranks = {t: i for i, t in vocab.items()}
        if len(ranks) != len(vocab):
            raise ValueError("merges produce a duplicate token")
        specials = {s: len(vocab) + k for k, s in enumerate(dict.fromkeys(special_tokens))}
        return cls(ranks, pattern, specials, **kw)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        pattern: str = "gpt4",
        special_tokens: Sequence[str] = (files.ENDOFTEXT,),
        name: str = "llmkit-bpe",
        engine: EngineName = "fast",
        workers: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tokenizer:
        """Train a byte-level BPE on ``texts``. ``vocab_size`` counts every id: the 256
        bytes, the merges, and the special tokens (which come last)."""
        from llmkit.tokenizer.trainer import train_bpe

        specials = list(dict.fromkeys(special_tokens))
        n_merges = merges_for(vocab_size, specials)
        split = get_pattern(pattern)
        result = train_bpe(texts, n_merges, split.for_regex, specials, workers=workers, progress=progress)
        # Build from ranks, not merges: should two merges ever spell the same bytes, the
        # trainer keeps the lower id and the later one is left as an unused gap.
        first_special = 256 + len(result.merges)
        return cls(result.ranks, split, {s: first_special + k for k, s in enumerate(specials)}, name=name, engine=engine)

    def add_special_tokens(self, names: Sequence[str]) -> Tokenizer:
        """A copy with ``names`` added as special tokens after the last id (names it already
        has keep their ids), e.g. ``["[CLS]", "[SEP]", "[MASK]", "[PAD]"]`` for an encoder."""
        specials = dict(self.special_tokens)
        for n in dict.fromkeys(names):
            if not n:
                raise ValueError("a special token cannot be empty")
            if n not in specials:
                specials[n] = max([*self.ranks.values(), *specials.values()]) + 1
        return Tokenizer(self.ranks, self.pattern, specials, name=self.name, engine=self.engine_name)

    def with_pattern(self, pattern: SplitPattern | str) -> Tokenizer:
        """The same ranks and special tokens with another split pattern (a name or a
        :class:`SplitPattern`), e.g. ``tok.with_pattern(single_digits(tok.pattern))``."""
        return Tokenizer(self.ranks, get_pattern(pattern) if isinstance(pattern, str) else pattern, self.special_tokens,
                         name=self.name, engine=self.engine_name)

    def with_engine(self, engine: EngineName) -> Tokenizer:
        """The same tokenizer run by another engine."""
        return Tokenizer(self.ranks, self.pattern, self.special_tokens, name=self.name, engine=engine)

    # -- the contract ----------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        """One more than the largest id (tiktoken's meaning)."""
        return max([*self.ranks.values(), *self.special_tokens.values()]) + 1

    @property
    def eot_token(self) -> int | None:
        return self.special_tokens.get(files.ENDOFTEXT)

    @property
    def pad_token_id(self) -> int | None:
        """``<|pad|>`` if present, else ``<|endoftext|>`` (GPT-2 practice), else None."""
        return self.special_tokens.get("<|pad|>", self.eot_token)

    def encode(self, text: str, *, allowed_special: AllowedSpecial = ()) -> list[int]:
        """Encode ``text``. Special-token strings inside the text are ordinary text unless
        listed in ``allowed_special`` (or ``"all"``)."""
        return self._engine.encode(text, allowed_special)

    def encode_ordinary(self, text: str) -> list[int]:
        return self._engine.encode_ordinary(text)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        try:
            return b"".join(self._decoder[i] for i in ids)
        except KeyError as e:
            raise ValueError(f"unknown token id {e.args[0]} (vocabulary has {self.n_vocab} ids)") from None

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        """Decode ids to text; bytes that are not valid UTF-8 become U+FFFD by default."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_tokens_bytes(self, ids: Sequence[int]) -> list[bytes]:
        """The bytes of each token, for showing token boundaries."""
        return [self.decode_bytes([i]) for i in ids]

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        allowed_special: AllowedSpecial = (),
        padding: Padding = False,
        truncation: bool = False,
        max_length: int | None = None,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
        pad_id: int | None = None,
        padding_side: Literal["right", "left"] = "right",
    ) -> BatchEncoding:
        """Encode many texts (the fast engine uses all cores), then truncate or cut into
        overlapping windows, and pad; see :mod:`llmkit.tokenizer.batch`."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of strings, not one string")
        encoded = self._engine.encode_batch(list(texts), allowed_special)
        return assemble(
            encoded,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=return_overflowing_tokens,
            pad_id=self.pad_token_id if pad_id is None else pad_id,
            padding_side=padding_side,
        )

    # -- interop ---------------------------------------------------------------------
    def to_tiktoken(self):
        """A ``tiktoken.Encoding`` with the same ranks, pattern and special tokens."""
        import tiktoken

        return tiktoken.Encoding(self.name, pat_str=self.pattern.tiktoken, mergeable_ranks=self.ranks, special_tokens=self.special_tokens)

    def to_hf_json(self) -> str:
        """HF ``tokenizers`` JSON for the same tokenizer (see :func:`files.hf_tokenizer_json`)."""
        return files.hf_tokenizer_json(self.ranks, self.pattern, self.special_tokens)

    def to_hf(self):
        """A ``transformers.PreTrainedTokenizerFast`` giving the same ids."""
        from tokenizers import Tokenizer as HFTokenizer
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(self.to_hf_json()), **self._hf_special_kwargs())

    def _hf_special_kwargs(self) -> dict[str, str]:
        kw = {}
        if files.ENDOFTEXT in self.special_tokens:
            kw = {"bos_token": files.ENDOFTEXT, "eos_token": files.ENDOFTEXT}
        if "<|pad|>" in self.special_tokens:
            kw["pad_token"] = "<|pad|>"
        return kw

    # -- files -----------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, *, overwrite: bool = False, hf: bool = True) -> Path:
        """Write the tokenizer directory (each file atomically). Refuses to replace
        existing files unless ``overwrite``."""
        d = Path(directory)
        names = [RANKS_FILE, META_FILE] + ([HF_FILE, HF_CONFIG_FILE] if hf else [])
        refuse_overwrite([d / n for n in names], overwrite)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "pattern": {"name": self.pattern.name, "regex": self.pattern.tiktoken, "hf_regex": self.pattern.hf},
            "special_tokens": self.special_tokens,
            "n_vocab": self.n_vocab,
            "n_ranks": len(self.ranks),
        }
        payloads = {RANKS_FILE: files.format_tiktoken(self.ranks), META_FILE: json.dumps(meta, indent=2, ensure_ascii=False).encode()}
        if hf:
            cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False, "model_max_length": 1_000_000_000, **self._hf_special_kwargs()}
            payloads[HF_FILE] = self.to_hf_json().encode()
            payloads[HF_CONFIG_FILE] = json.dumps(cfg, indent=2).encode()
        for n, data in payloads.items():  # build everything first, then write
            atomic_write_bytes(d / n, data)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, *, engine: EngineName = "fast") -> Tokenizer:
        d = Path(directory)
        for n in (RANKS_FILE, META_FILE):
            if not (d / n).is_file():
                raise FileNotFoundError(f"{d} is not a tokenizer directory: missing {n}")
        try:
            ranks = files.parse_tiktoken((d / RANKS_FILE).read_bytes())
            meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{d} is not a tokenizer directory: missing {Path(e.filename).name}") from None
        except (ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"{d}: corrupt tokenizer files ({e})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{d / META_FILE} is not an llmkit tokenizer file")
        try:
            p = meta["pattern"]
            pattern = PATTERNS.get(p.get("name")) or SplitPattern(p.get("name", "custom"), p["regex"], p.get("hf_regex", p["regex"]))
            tok = cls(ranks, pattern, meta.get("special_tokens", {}), name=meta.get("name", d.name), engine=engine)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{d / META_FILE} is corrupt (bad or missing field {e})") from None
        if meta.get("n_ranks", len(ranks)) != len(ranks) or meta.get("n_vocab", tok.n_vocab) != tok.n_vocab:
            raise ValueError(f"{d / RANKS_FILE} holds {len(ranks)} tokens but {META_FILE} promises {meta.get('n_ranks')}: the files are truncated or mixed up")
        return tok

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, n_vocab={self.n_vocab}, pattern={self.pattern.name!r}, engine={self.engine_name!r})"


def merges_for(vocab_size: int, special_tokens: Sequence[str]) -> int:
    """How many merges a vocabulary of ``vocab_size`` ids holds beside the 256 bytes and
    the special tokens; ValueError when it cannot hold them."""
    n = vocab_size - 256 - len(set(special_tokens))
    if n < 0:
        raise ValueError(f"vocab size {vocab_size} is too small: it must hold 256 bytes + {len(set(special_tokens))} special tokens")
    return n


def _validate(ranks: dict[bytes, int], specials: dict[str, int]) -> None:
    if any(not isinstance(s, str) or not s for s in specials):
        raise ValueError("special tokens must be non-empty strings")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"ranks lack {len(missing)} single bytes (e.g. {missing[0]}); a byte-level BPE needs all 256")
    if len(set(ranks.values())) != len(ranks):
        raise ValueError("ranks are not unique")
    clash = set(specials.values()) & set(ranks.values())
    if clash:
        raise ValueError(f"special token ids collide with ordinary ids: {sorted(clash)[:5]}")


__all__ = ["Tokenizer", "BatchEncoding"]
