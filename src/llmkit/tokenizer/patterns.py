"""Pre-tokenization patterns of the GPT-2 / GPT-4 / GPT-4o family.

A byte-level BPE never merges across the pieces that its split pattern produces, so the
pattern is half of a tokenizer's identity. Each pattern comes in two spellings:

- ``tiktoken``: the exact string tiktoken uses (with possessive quantifiers such as ``?+``
  and ``++``). Our engines run it with the ``regex`` module, which supports them.
- ``hf``: an equivalent spelling without possessive quantifiers for HF ``tokenizers``,
  whose Oniguruma-based engine splits differently when given the possessive form (ids were
  seen to differ on a third of the chunks of a docs corpus). The tests prove that both
  spellings split the whole pydocs corpus identically.
- ``python`` (optional): an equivalent spelling that the ``regex`` module runs faster, used by
  the pure-Python engine and the trainer. For o200k it adds a lookahead that both word
  alternatives need anyway (a letter or mark after an optional non-letter), so positions
  that cannot start a word skip them at once; tested identical on the whole corpus.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SplitPattern:
    """A named pre-tokenization regex in its tiktoken and HF spellings."""

    name: str
    tiktoken: str
    hf: str
    python: str | None = None

    @property
    def for_regex(self) -> str:
        """The spelling the ``regex`` module should run (``python`` when there is one)."""
        return self.python or self.tiktoken


# GPT-2 / r50k. tiktoken's faster rewrite of the original GPT-2 regex.
GPT2 = SplitPattern(
    name="gpt2",
    tiktoken=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    hf=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
)

# GPT-4 / cl100k_base: case-insensitive contractions, digits in groups of at most three.
GPT4 = SplitPattern(
    name="gpt4",
    tiktoken=(
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
        r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
    hf=(
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
        r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ),
)

_O200K_WORDS = [
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
]
_O200K_REST = [r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+"""]
_O200K = "|".join(_O200K_WORDS + _O200K_REST)
# Both word alternatives need a letter or mark after an optional non-letter: check that first.
_O200K_PY = r"""(?=[^\r\n\p{L}\p{N}]?[\p{L}\p{M}])(?:""" + "|".join(_O200K_WORDS) + ")|" + "|".join(_O200K_REST)

# GPT-4o / o200k_base: case-aware words (CamelCase splits), no possessive quantifiers.
O200K = SplitPattern(name="o200k", tiktoken=_O200K, hf=_O200K, python=_O200K_PY)

_NUMBER_RUNS = (r"\p{N}{1,3}+", r"\p{N}{1,3}", r" ?\p{N}++", r" ?\p{N}+")
DIGITS_SUFFIX = "-digits"


def single_digits(p: SplitPattern) -> SplitPattern:
    """``p`` with every number split into single digits (as LLaMA and PaLM do): ``"2024"``
    becomes ``2 0 2 4`` instead of ``202 4``. A tokenizer trained with ``p`` keeps its ranks
    (each digit is a byte token); its multi-digit tokens just go unused. Small models copy
    and compare numbers far more reliably digit by digit. Named ``<name>-digits``."""
    if p.name.endswith(DIGITS_SUFFIX):
        return p

    def split(rx: str | None) -> str | None:
        if rx is None:
            return None
        for run in _NUMBER_RUNS:
            rx = rx.replace(run, r"\p{N}")
        return rx

    out = SplitPattern(p.name + DIGITS_SUFFIX, split(p.tiktoken), split(p.hf), split(p.python))
    if out.tiktoken == p.tiktoken:
        raise ValueError(f"the split pattern {p.name!r} has no number rule to split into digits")
    return out


GPT4_DIGITS = single_digits(GPT4)

PATTERNS: dict[str, SplitPattern] = {p.name: p for p in (GPT2, GPT4, O200K, GPT4_DIGITS)}


def get_pattern(name: str) -> SplitPattern:
    """Return the pattern called ``name`` (``gpt2``, ``gpt4``, ``o200k`` or ``gpt4-digits``)."""
    try:
        return PATTERNS[name]
    except KeyError:
        raise ValueError(f"unknown split pattern {name!r}; choose one of {', '.join(PATTERNS)}") from None


def pattern_name(regex: str) -> str | None:
    """The name of a known pattern given either spelling, or None for a custom regex."""
    for p in PATTERNS.values():
        if regex in (p.tiktoken, p.hf, p.python):
            return p.name
    return None
