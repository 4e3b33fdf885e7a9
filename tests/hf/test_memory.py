"""Memory estimates against outside truths: the course's numbers, parameter counts of models
really built from the same configs, and peaks measured while training small GPTs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from llmkit.cli.memory import memory
from llmkit.hf.memory import (
    GB,
    count_parameters_from_config,
    inference_memory,
    model_shape,
    parse_size,
    training_memory,
)

# -- the course's numbers -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, gb", [("fp32", 12), ("fp16", 6), ("bf16", 6), ("int8", 3), ("int4", 1.5)])
def test_course_numbers_for_3b(dtype, gb):
    assert inference_memory(parse_size("3B"), dtype) / GB == gb


@pytest.mark.parametrize(
    "text, n", [("3B", 3_000_000_000), ("124M", 124_000_000), ("1.5b", 1_500_000_000), ("7e9", 7_000_000_000), ("350m", 350_000_000), ("1200", 1200), (" 2k ", 2000)]
)
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("junk", ["", "B", "3X", "3BB", "-1B", "three", "1e", "0", "1.2.3M", "nan"])
def test_parse_size_rejects_junk(junk):
    with pytest.raises(ValueError, match="model size"):
        parse_size(junk)


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        inference_memory(10, "fp8")


def test_training_breakdown_per_parameter():
    full32 = training_memory(1000, dtype="fp32")  # 4 weights + 4 grads + 8 AdamW = 16 bytes
    assert (full32.weights, full32.gradients, full32.optimizer, full32.master_weights, full32.total) == (4000, 4000, 8000, 0, 16000)
    mixed = training_memory(1000, dtype="bf16")  # ZeRO's 2 + 2 + 12 = 16 bytes
    assert mixed.total == 16000 and mixed.master_weights == 4000
    qlora = training_memory(1000, dtype="int4", lora_params=10)  # 0.5 per frozen weight, bf16 adapters
    assert qlora.weights == 500 + 20 and qlora.gradients == 20 and qlora.optimizer == 80 and qlora.method == "lora"
    with pytest.raises(ValueError, match="cannot be trained directly"):
        training_memory(1000, dtype="int8")


# -- counting parameters from configs, on the meta device ----------------------------------------


def test_default_gpt2_config_counts_124m(tmp_path):
    from transformers import GPT2Config

    GPT2Config().save_pretrained(tmp_path)
    assert count_parameters_from_config(tmp_path) == 124_439_808  # tied head counted once
    assert count_parameters_from_config(tmp_path / "config.json") == 124_439_808


def test_config_counts_equal_instantiated_models(tmp_path):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    cases = [
        (GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=64), GPT2LMHeadModel),
        (GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=64, tie_word_embeddings=False), GPT2LMHeadModel),
        (BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=500, architectures=["BertModel"]), BertModel),
    ]
    for i, (cfg, cls) in enumerate(cases):
        cfg.save_pretrained(tmp_path / str(i))
        real = sum(p.numel() for p in cls(cfg).parameters())
        assert count_parameters_from_config(tmp_path / str(i)) == real, cls.__name__
    assert count_parameters_from_config(cases[0][0].to_dict()) < count_parameters_from_config(cases[1][0].to_dict())  # untied head


def test_llmkit_model_directory(tmp_path):
    from llmkit.models.lora import replace_linear_with_lora
    from llmkit.models.zoo import build_model, save_model

    model = build_model("gpt", "tiny", vocab_size=300, split_qkv=True)
    save_model(model, tmp_path)
    shape = model_shape(tmp_path)
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    assert (shape.n_layer, shape.d_model, shape.n_head, shape.vocab) == (2, 128, 4, 300)
    replace_linear_with_lora(model, 4, 8, ["q_proj", "v_proj"])
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert shape.lora_parameters(4, ["q_proj", "v_proj"]) == lora


def test_bad_configs(tmp_path):
    with pytest.raises(FileNotFoundError):
        model_shape(tmp_path / "missing.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        model_shape(tmp_path)
    with pytest.raises(ValueError, match="neither a 'model_type'"):
        model_shape({"hidden_size": 3})
    with pytest.raises(ValueError, match="no neural parameters"):
        model_shape({"llmkit": {"kind": "ngram", "config": {}}})


# -- the training estimate against measured peaks --------------------------------------------------

# Run in a fresh interpreter. glibc's mmap threshold is fixed so that every freed tensor goes
# back to the system at once: the resident high-water mark (VmHWM, reset through
# /proc/self/clear_refs, exact, no sampling) is then the peak of live memory, what
# torch.cuda.max_memory_allocated is on a GPU. Left dynamic, the same run measured 464-582 MB
# (heap fragmentation). A tiny warm-up step first loads the code paths backward and AdamW
# touch once (~90 MB of the process, not of the model).
_WORKER = r"""
import gc, json, sys
import torch
from llmkit.models.lora import mark_trainable, replace_linear_with_lora
from llmkit.models.zoo import build_model
from llmkit.training.perf import _release_free_memory

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))

def run(c, steps=2):
    torch.manual_seed(0)
    x = torch.randint(0, c["vocab_size"], (c["batch"], c["seq"]))
    model = build_model("gpt", "tiny", vocab_size=c["vocab_size"], context_length=c["seq"], n_layer=c["n_layer"], n_head=c["n_head"], n_embd=c["n_embd"]).train()
    if c.get("rank"):
        replace_linear_with_lora(model, c["rank"], 2 * c["rank"], c["targets"])
        mark_trainable(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _ in range(steps):
        logits, loss = model(x, x)
        del logits
        loss.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

torch.set_num_threads(1)
run(dict(vocab_size=64, batch=1, seq=8, n_layer=1, n_head=2, n_embd=16, rank=2, targets=["c_fc"]))
out = []
for c in json.loads(sys.argv[1]):
    gc.collect(); _release_free_memory()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    run(c)
    out.append(status("VmHWM") - base)
print(json.dumps(out))
"""

# activations dominate (8 layers x 8 x 512 tokens) / weights dominate (29 M parameters)
_ACTS = dict(vocab_size=1024, batch=8, seq=512, n_layer=8, n_head=4, n_embd=128)
_WEIGHTS = dict(vocab_size=32000, batch=2, seq=128, n_layer=4, n_head=8, n_embd=512)
_TARGETS = ["c_attn", "c_proj", "c_fc"]


def _estimate(c: dict) -> float:
    from llmkit.models.config import gpt_preset

    cfg = dict(vocab_size=c["vocab_size"], context_length=c["seq"], n_layer=c["n_layer"], n_head=c["n_head"], n_embd=c["n_embd"])
    shape = model_shape({"llmkit": {"kind": "gpt", "config": vars(gpt_preset("tiny", **cfg))}})  # built on the meta device
    n = shape.n_params
    lora = shape.lora_parameters(c["rank"], c["targets"]) if c.get("rank") else None
    return training_memory(n, dtype="fp32", lora_params=lora, batch=c["batch"], seq=c["seq"], n_layer=c["n_layer"], d_model=c["n_embd"], n_head=c["n_head"], vocab=c["vocab_size"]).total


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to measure peak memory")
def test_training_estimate_within_25_percent_of_measured_peaks():
    cases = [_ACTS, _WEIGHTS, {**_ACTS, "rank": 8, "targets": _TARGETS}, {**_WEIGHTS, "rank": 8, "targets": _TARGETS}]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(cases)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    report = []
    for c, m in zip(cases, measured):
        est = _estimate(c)
        report.append(f"{'LoRA' if c.get('rank') else 'full'} L{c['n_layer']} d{c['n_embd']} V{c['vocab_size']}: estimate {est / 1e6:.0f} MB, measured {m / 1e6:.0f} MB")
    print("\n".join(report))
    for c, m, line in zip(cases, measured, report):
        assert abs(_estimate(c) - m) <= 0.25 * m, line
    assert measured[3] < 0.5 * measured[1]  # LoRA's point: the weight-heavy model trains in under half


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    app.command()(memory)
    app.command("other")(lambda: None)  # two commands, so "memory" is a subcommand as in llmkit
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["memory", *args])


def test_cli_size_table(cli):
    r = cli("3B")
    assert r.exit_code == 0, r.output
    assert "12.00" in r.output and "1.50" in r.output and "10^9" in r.output and "GiB" in r.output
    r = cli("3B", "--dtype", "int4")
    assert r.exit_code == 0 and "1.50" in r.output and "12.00" not in r.output


def test_cli_train_with_config(cli, tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=64).save_pretrained(tmp_path)
    r = cli("--config", str(tmp_path), "--train", "--lora-rank", "4", "--dtype", "fp32", "--dtype", "int4", "--seq", "64")
    assert r.exit_code == 0, r.output
    assert "GPT2LMHeadModel" in r.output and "LoRA r4" in r.output and "full" in r.output and "trainable parameters: full 136,192" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["3Q"], "cannot read '3Q'"),
        (["3B", "--dtype", "fp8"], "unknown dtype 'fp8'"),
        (["--config", "/nonexistent/dir"], "no such config file"),
        ([], "give either SIZE"),
    ],
)
def test_cli_errors_are_one_line(cli, args, message):
    r = cli(*args)
    assert r.exit_code == 1
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def _measured_kv_bytes(model, batch: int, seq: int) -> int:
    import torch

    with torch.no_grad():
        cache = model(torch.randint(0, 100, (batch, seq)), use_cache=True).past_key_values
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa", "gemma3-sliding"])
def test_kv_cache_estimate_is_what_transformers_caches(name):
    """Outside truth: the key and value tensors transformers' DynamicCache holds after a
    forward pass (multi-head, grouped-query with 2 of 8 heads, and Gemma 3's sliding-window
    layers, whose cache is capped)."""
    import transformers as t

    from llmkit.hf.memory import model_shape

    cfg = {
        "gpt2": lambda: t.GPT2Config(vocab_size=100, n_positions=64, n_embd=64, n_layer=3, n_head=4),
        "llama-gqa": lambda: t.LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=8,
                                           num_key_value_heads=2, max_position_embeddings=64),
        "gemma3-sliding": lambda: t.Gemma3TextConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                                                     num_key_value_heads=1, head_dim=32, sliding_window=8, max_position_embeddings=64),
    }[name]()
    model = t.AutoModelForCausalLM.from_config(cfg).eval()
    shape = model_shape(cfg)
    for batch, seq in ((1, 5), (2, 20)):
        assert shape.kv_cache(batch=batch, seq=seq, dtype="fp32") == _measured_kv_bytes(model, batch, seq)
    assert shape.kv_cache(batch=2, seq=20, dtype="bf16") == shape.kv_cache(batch=2, seq=20, dtype="fp32") / 2


def test_memory_cli_kv_cache_table(cli, tmp_path):
    import transformers as t

    cfg = t.LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2)
    cfg.save_pretrained(tmp_path)
    r = cli("--config", str(tmp_path), "--context", "4096", "--batch", "2", "--dtype", "fp16")
    assert r.exit_code == 0, r.output
    kv = 2 * 4 * 2 * 4096 * 2 * 32 * 2  # key+value x layers x batch x tokens x KV heads x head width x bytes
    assert f"{kv / 1e9:,.3f}" in r.output and "4 layers x 2 KV heads x 32 per head" in r.output
    bad = cli("8B", "--context", "4096")
    assert bad.exit_code != 0 and "--context needs --config" in bad.output
