"""Byte-level BPE tokenization: train, encode/decode with two engines, load and save."""

from llmkit.tokenizer.batch import BatchEncoding
from llmkit.tokenizer.patterns import PATTERNS, SplitPattern, get_pattern
from llmkit.tokenizer.tokenizer import Tokenizer

__all__ = ["Tokenizer", "BatchEncoding", "SplitPattern", "PATTERNS", "get_pattern"]
