"""llmkit: a practical LLM toolkit, offline first. Public API (re-exports only).

Heavy libraries (torch, transformers, peft, sentence-transformers) are imported only by the
functions that need them, so ``import llmkit`` stays fast.
"""

from llmkit.data.corpora import Corpus, CorpusError, Document, load_corpus
from llmkit.tokenizer import BatchEncoding, Tokenizer, get_pattern

__version__ = "0.1.0"

__all__ = ["BatchEncoding", "Corpus", "CorpusError", "Document", "Tokenizer", "get_pattern", "load_corpus", "__version__"]
