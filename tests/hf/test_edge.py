"""Edge deployment: int8 dynamic quantization (our GPT and transformers' GPT-2) and GGUF export.

Outside truths: PyTorch's own quantized modules (their int8 weights and dequantized values),
the float model's logits, transformers' GPT2LMHeadModel, and the ``gguf`` package's reader
and constants (llama.cpp's names and keys)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from llmkit.cli.edge import gguf as gguf_cmd
from llmkit.cli.edge import quantize as quantize_cmd
from llmkit.data.tokens import write_token_files
from llmkit.hf.gguf_export import export_gguf, read_gguf
from llmkit.hf.quantize import compare_quantized, linear_weight_bytes, quantize_dynamic_int8
from llmkit.models.zoo import build_model, save_model
from llmkit.tokenizer import Tokenizer
from llmkit.tokenizer.files import hf_merges

TEXTS = [
    "def f(x):\n    return {'a': x ** 2}  # square\n",
    "The quick brown fox jumps over the lazy dog. 12345 + 678 = 13023",
    "Hello, world! naïve café, 日本語 — tabs\tand   spaces\n",
] * 8


def _relerr(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(TEXTS, 300, pattern="gpt4")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tok):
    """A run directory: RUN/model (a tiny GPT with 3 spare ids, split q/k/v) + RUN/tokens."""
    d = tmp_path_factory.mktemp("edge-run")
    torch.manual_seed(0)
    model = build_model("gpt", "tiny", vocab_size=tok.n_vocab + 3, context_length=64, n_embd=64, split_qkv=True).eval()
    save_model(model, d / "model")
    tok.save(d / "model")
    write_token_files(TEXTS * 4, tok, d / "tokens", val_fraction=0.5)
    return d, model


def test_int8_gpt_shrinks_linears_4x_and_keeps_logits(tok):
    torch.manual_seed(0)
    model = build_model("gpt", "tiny", vocab_size=tok.n_vocab).eval()
    q = quantize_dynamic_int8(model)
    qlin = [m for m in q.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(qlin) == 4 * 2 + 1  # c_attn, c_proj, c_fc, mlp.c_proj per block + lm_head
    assert all(m.weight().dtype == torch.qint8 for m in qlin)
    assert type(model.lm_head) is torch.nn.Linear  # the original is untouched
    assert linear_weight_bytes(model) == 4 * linear_weight_bytes(q)  # float32 -> int8, per weight
    x = torch.randint(0, tok.n_vocab, (2, 32))
    with torch.no_grad():
        ref, got = model(x)[0], q(x)[0]
    # int8 per-tensor weights + int8 dynamic activations: a few percent of the logits' norm
    assert _relerr(got, ref) < 0.05


def test_int8_transformers_gpt2_quantizes_every_conv1d():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    q = quantize_dynamic_int8(model)
    assert not any(isinstance(m, Conv1D) for m in q.modules())  # converted to Linear, then quantized
    n_q = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in q.modules())
    assert n_q == 4 * cfg.n_layer + 1
    x = torch.randint(0, 300, (2, 32))
    with torch.no_grad():
        ref, got = model(x).logits, q(x).logits
    assert _relerr(got, ref) < 0.05


def test_compare_quantized_table_is_consistent(run):
    _, model = run
    val = np.random.default_rng(0).integers(0, model.config.vocab_size, 4 * 4 * 32 + 1)
    rows = {r["metric"]: r for r in compare_quantized(model, val, block=32, batches=4)}
    assert set(rows) == {"size (MB)", "linear weights (MB)", "tokens/s", "perplexity"}
    assert rows["linear weights (MB)"]["ratio"] == pytest.approx(0.25)
    assert rows["size (MB)"]["ratio"] < 0.6  # the embeddings stay float32
    assert rows["perplexity"]["ratio"] == pytest.approx(1.0, abs=0.03)  # same windows, within 3 %
    assert all(r["int8"] / r["fp32"] == pytest.approx(r["ratio"]) for r in rows.values())
    with pytest.raises(ValueError, match="need"):
        compare_quantized(model, val[:100], block=32, batches=4)
    with pytest.raises(ValueError, match="context length"):
        compare_quantized(model, val, block=65, batches=1)


def _expected_tensors(model) -> dict[str, torch.Tensor]:
    """Written independently of the exporter, from llama.cpp's GPT-2 names: Linear layout
    (out, in), which is HF's Conv1D weight transposed; q|k|v concatenated like c_attn."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    exp = {
        "token_embd.weight": sd["transformer.wte.weight"],
        "position_embd.weight": sd["transformer.wpe.weight"],
        "output_norm.weight": sd["transformer.ln_f.weight"],
        "output_norm.bias": sd["transformer.ln_f.bias"],
        "output.weight": sd["lm_head.weight"],
    }
    for i in range(model.config.n_layer):
        p = f"transformer.h.{i}."
        qkv = [f"{p}attn.{n}_proj" for n in "qkv"]
        exp |= {
            f"blk.{i}.attn_norm.weight": sd[p + "ln_1.weight"],
            f"blk.{i}.attn_norm.bias": sd[p + "ln_1.bias"],
            f"blk.{i}.attn_qkv.weight": torch.cat([sd[n + ".weight"] for n in qkv]),
            f"blk.{i}.attn_qkv.bias": torch.cat([sd[n + ".bias"] for n in qkv]),
            f"blk.{i}.attn_output.weight": sd[p + "attn.c_proj.weight"],
            f"blk.{i}.attn_output.bias": sd[p + "attn.c_proj.bias"],
            f"blk.{i}.ffn_norm.weight": sd[p + "ln_2.weight"],
            f"blk.{i}.ffn_norm.bias": sd[p + "ln_2.bias"],
            f"blk.{i}.ffn_up.weight": sd[p + "mlp.c_fc.weight"],
            f"blk.{i}.ffn_up.bias": sd[p + "mlp.c_fc.bias"],
            f"blk.{i}.ffn_down.weight": sd[p + "mlp.c_proj.weight"],
            f"blk.{i}.ffn_down.bias": sd[p + "mlp.c_proj.bias"],
        }
    return exp


def test_gguf_roundtrip_tensors_and_metadata(run, tok, tmp_path):
    import gguf

    d, model = run
    path = export_gguf(d, tmp_path / "m.gguf")
    meta, tensors = read_gguf(path)
    exp = _expected_tensors(model)
    assert set(tensors) == set(exp)
    for name, t in exp.items():
        assert tensors[name].dtype == np.float32
        np.testing.assert_array_equal(tensors[name], t.numpy(), err_msg=name)
    c, arch = model.config, "gpt2"
    assert meta[gguf.Keys.General.ARCHITECTURE] == arch
    assert meta[gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch)] == c.context_length
    assert meta[gguf.Keys.LLM.EMBEDDING_LENGTH.format(arch=arch)] == c.n_embd
    assert meta[gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)] == c.n_layer
    assert meta[gguf.Keys.LLM.FEED_FORWARD_LENGTH.format(arch=arch)] == 4 * c.n_embd
    assert meta[gguf.Keys.Attention.HEAD_COUNT.format(arch=arch)] == c.n_head
    assert meta[gguf.Keys.Attention.LAYERNORM_EPS.format(arch=arch)] == pytest.approx(c.layer_norm_eps)
    assert meta[gguf.Keys.General.FILE_TYPE] == gguf.LlamaFileType.ALL_F32
    assert meta[gguf.Keys.Tokenizer.MODEL] == "gpt2"
    tokens, types = meta[gguf.Keys.Tokenizer.LIST], meta[gguf.Keys.Tokenizer.TOKEN_TYPE]
    assert len(tokens) == len(types) == c.vocab_size == tok.n_vocab + 3
    eot = tok.eot_token
    assert tokens[eot] == "<|endoftext|>" and types[eot] == gguf.TokenType.CONTROL
    assert meta[gguf.Keys.Tokenizer.BOS_ID] == meta[gguf.Keys.Tokenizer.EOS_ID] == eot
    assert types[-3:] == [gguf.TokenType.UNUSED] * 3
    assert sum(t == gguf.TokenType.NORMAL for t in types) == len(tok.ranks)
    # the tokens and merges are those of our HF tokenizer.json, which transformers loads
    hf = tok.to_hf()
    assert all(tokens[i] == s for s, i in hf.get_vocab().items())
    assert meta[gguf.Keys.Tokenizer.MERGES] == [f"{a} {b}" for a, b in hf_merges(dict(tok.ranks))]
    assert meta[gguf.Keys.Tokenizer.PRE] == "llama-bpe"  # llama.cpp's name for the gpt4 split


def test_gguf_names_the_digit_split_pre_tokenizer(run, tok, tmp_path):
    """A --split-digits tokenizer (gpt4's split, numbers digit by digit) is llama.cpp's qwen2 pre-tokenizer."""
    import gguf
    import shutil

    d, _ = run
    digits = tmp_path / "run"
    shutil.copytree(d / "model", digits / "model")
    tok.with_pattern("gpt4-digits").save(digits / "model", overwrite=True)
    meta, _ = read_gguf(export_gguf(digits, tmp_path / "d.gguf"))
    assert meta[gguf.Keys.Tokenizer.PRE] == "qwen2"


def test_gguf_f16_and_refusals(run, tmp_path):
    import gguf

    d, model = run
    path = export_gguf(d, tmp_path / "h.gguf", dtype="f16")
    meta, tensors = read_gguf(path)
    assert meta[gguf.Keys.General.FILE_TYPE] == gguf.LlamaFileType.MOSTLY_F16
    assert tensors["blk.0.ffn_up.weight"].dtype == np.float16 and tensors["blk.0.ffn_up.bias"].dtype == np.float32
    np.testing.assert_array_equal(tensors["token_embd.weight"], model.transformer.wte.weight.detach().half().numpy())
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        export_gguf(d, path)
    assert path.read_bytes() == before
    export_gguf(d, path, overwrite=True)  # f32 now
    assert read_gguf(path)[0][gguf.Keys.General.FILE_TYPE] == gguf.LlamaFileType.ALL_F32
    assert [p.name for p in tmp_path.iterdir()] == ["h.gguf"]  # no temporary file left behind
    with pytest.raises(ValueError, match="dtype"):
        export_gguf(d, tmp_path / "x.gguf", dtype="q4")
    bert = tmp_path / "bert"
    save_model(build_model("bert", "tiny", vocab_size=64), bert)
    with pytest.raises(ValueError, match="only gpt"):
        export_gguf(bert, tmp_path / "b.gguf")
    not_gguf = tmp_path / "n.gguf"
    not_gguf.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a valid GGUF"):
        read_gguf(not_gguf)


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    app.command("quantize")(quantize_cmd)
    app.command("gguf")(gguf_cmd)
    return app


def test_cli_quantize_and_gguf(cli, run, tmp_path):
    d, _ = run
    r = CliRunner().invoke(cli, ["quantize", str(d), "--batches", "1", "--block", "16"])
    assert r.exit_code == 0, r.output
    for word in ("size (MB)", "tokens/s", "perplexity", "0.250x"):
        assert word in r.output
    out = tmp_path / "m.gguf"
    r = CliRunner().invoke(cli, ["gguf", str(d), "-o", str(out), "--dtype", "f16"])
    assert r.exit_code == 0 and out.is_file(), r.output
    r = CliRunner().invoke(cli, ["gguf", str(d), "-o", str(out)])
    assert r.exit_code == 1 and "already exists" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["gguf", str(d), "-o", str(out), "--force"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["quantize", str(d / "model")])
    assert r.exit_code == 1 and "--tokens" in r.output
    r = CliRunner().invoke(cli, ["quantize", str(d), "--block", "1000"])
    assert r.exit_code == 1 and "context length" in r.output and "Traceback" not in r.output
