"""Model directories: reload exactly, and a GPT directory loads in transformers."""

from __future__ import annotations

import json

import pytest
import torch

from llmkit.models.zoo import build_model, load_model, save_model


def test_gpt_directory_round_trips_and_loads_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = build_model("gpt", "tiny", vocab_size=320).eval()
    save_model(model, tmp_path)
    x = torch.randint(0, 320, (2, 24))
    again = load_model(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        ours = model(x)[0]
        assert torch.equal(again(x)[0], ours)
        assert (hf(x).logits - ours).abs().max().item() <= 1e-4
    assert again.lm_head.weight is again.transformer.wte.weight  # still tied
    assert json.loads((tmp_path / "config.json").read_text())["llmkit"]["kind"] == "gpt"


def test_untied_and_bias_free_gpts_round_trip(tmp_path):
    for i, kw in enumerate([dict(tie_weights=False), dict(bias=False, qkv_bias=False)]):
        torch.manual_seed(i)
        model = build_model("gpt", "tiny", vocab_size=300, **kw).eval()
        save_model(model, tmp_path / str(i))
        x = torch.randint(0, 300, (1, 10))
        assert torch.equal(load_model(tmp_path / str(i))(x)[0], model(x)[0])


def test_errors(tmp_path):
    model = build_model("gpt", "tiny", vocab_size=300)
    save_model(model, tmp_path)
    with pytest.raises(FileExistsError):
        save_model(model, tmp_path)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_model(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("transformer-xl")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="not written by llmkit"):
        load_model(tmp_path)


def test_ngram_directory_round_trips_exactly(tmp_path):
    import numpy as np

    from llmkit.models.zoo import save_counted

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 40, size=5000)
    for smoothing in ("kneser-ney", "backoff", "add-k"):
        model = build_model("ngram", "tiny", vocab_size=40, n=3, smoothing=smoothing).fit(ids)
        save_counted(model, tmp_path / smoothing)
        again = load_model(tmp_path / smoothing)
        x = torch.tensor(rng.integers(0, 40, size=(2, 12)))
        assert torch.equal(again(x)[0], model(x)[0])
        assert again.stored_entries() == model.stored_entries()
    with pytest.raises(FileExistsError):
        save_counted(model, tmp_path / "add-k")
    (tmp_path / "add-k" / "counts.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_model(tmp_path / "add-k")
