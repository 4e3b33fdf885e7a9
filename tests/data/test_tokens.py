"""Token files and sliding windows."""

from __future__ import annotations

import numpy as np
import pytest

from llmkit.data.tokens import WindowSampler, load_token_files, num_windows, split_documents, write_token_files
from llmkit.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def gpt2():
    return Tokenizer.from_pretrained("gpt2")


def test_write_and_load_round_trip(tmp_path, gpt2):
    texts = [f"document number {i}: " + "word " * i for i in range(25)]
    tf = write_token_files(texts, gpt2, tmp_path / "tok", val_fraction=0.2, corpus_name="t")
    again = load_token_files(tmp_path / "tok")
    assert again.meta == tf.meta and again.meta["dtype"] == "uint16"
    val_docs = [t for t, v in zip(texts, split_documents(len(texts), 0.2)) if v]
    expected_val = [i for t in val_docs for i in gpt2.encode(t) + [50256]]
    assert again.split("val").tolist() == expected_val
    n = again.meta["n_tokens"]
    assert n["train"] + n["val"] == sum(len(gpt2.encode(t)) + 1 for t in texts)


def test_big_vocab_uses_uint32_and_few_documents_split_tokens(tmp_path):
    tok = Tokenizer.from_pretrained("o200k_base")
    tf = write_token_files(["one single document " * 50], tok, tmp_path / "t")
    assert tf.meta["dtype"] == "uint32" and tf.meta["n_tokens"]["val"] > 0 and tf.meta["n_tokens"]["train"] > 0


def test_refuses_overwrite_and_detects_truncation(tmp_path, gpt2):
    write_token_files(["a b c " * 100] * 10, gpt2, tmp_path / "t")
    with pytest.raises(FileExistsError):
        write_token_files(["x"], gpt2, tmp_path / "t")
    with open(tmp_path / "t" / "train.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(ValueError, match="promises"):
        load_token_files(tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="not a token directory"):
        load_token_files(tmp_path / "nope")


def test_windows_slide_with_the_stride():
    data = np.arange(100, dtype=np.uint16)
    assert num_windows(100, 10, 10) == 9 and num_windows(100, 10, 5) == 18 and num_windows(5, 10, 1) == 0
    s = WindowSampler(data, block_size=10, batch_size=3, stride=5, shuffle=False)
    x, y = s.next_batch()
    assert x.tolist()[1] == list(range(5, 15)) and y.tolist()[1] == list(range(6, 16))
    assert x.dtype.is_floating_point is False and x.shape == (3, 10)


def test_sampler_state_resumes_the_same_batches():
    data = np.arange(1000, dtype=np.uint16)
    a = WindowSampler(data, 8, 4, seed=3)
    for _ in range(40):  # past an epoch boundary
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch()[0].tolist() for _ in range(10)]
    b = WindowSampler(data, 8, 4, seed=3)
    b.load_state_dict(state)
    assert [b.next_batch()[0].tolist() for _ in range(10)] == expected
    with pytest.raises(ValueError, match="different data"):
        WindowSampler(data[:500], 8, 4, seed=3).load_state_dict(state)


def test_every_window_once_per_epoch():
    data = np.arange(200, dtype=np.uint16)
    s = WindowSampler(data, 9, 1, seed=0)
    starts = sorted(int(s.next_batch()[0][0, 0]) for _ in range(s.n))
    assert starts == [i * 9 for i in range(s.n)]


def test_too_little_data():
    with pytest.raises(ValueError, match="too few"):
        WindowSampler(np.arange(5, dtype=np.uint16), 8, 1)
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(10, 1.5)
