"""The Hugging Face stage of ``llmkit speedrun``: export the pre-trained GPT to a transformers
directory, generate through ``transformers.pipeline`` and check it writes what llmkit writes,
and print the memory table (inference per dtype; training, full versus LoRA)."""

from __future__ import annotations

from dataclasses import asdict

DTYPES = ("fp32", "fp16", "int8", "int4")
PROMPTS = ("The json module", "def ")


def _memory_rows(name: str, config: dict, batch: int, seq: int, rank: int) -> dict:
    from llmkit.hf.memory import inference_memory, model_shape, training_memory

    shape = model_shape(config)
    dims = dict(batch=batch, seq=seq, n_layer=shape.n_layer, d_model=shape.d_model, n_head=shape.n_head, vocab=shape.vocab)
    full = training_memory(shape.n_params, dtype="fp32", **dims)
    lora = training_memory(shape.n_params, dtype="fp32", lora_params=shape.lora_parameters(rank), **dims)
    return {"model": name, "params": shape.n_params, "inference_gb": {d: inference_memory(shape.n_params, d) / 1e9 for d in DTYPES},
            "full_gb": full.total / 1e9, "lora_gb": lora.total / 1e9, "lora_trainable": lora.trainable}


def run_hf(ctx) -> dict:
    import os

    from llmkit.generation import generate_text
    from llmkit.hf.convert import export_model
    from llmkit.inference import load_pretrained, model_dir
    from llmkit.models.config import gpt_preset
    from llmkit.models.zoo import read_model_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = ctx.out / "hf" / "gpt"
    export_model(ctx.out / "pretrain", out, overwrite=True)
    gen = pipeline("text-generation", model=str(out), device="cpu")
    model, tok, _ = load_pretrained(ctx.out / "pretrain")
    samples = []
    for p in PROMPTS:
        theirs = gen(p, max_new_tokens=20, do_sample=False)[0]["generated_text"]
        ours = p + generate_text(model, tok, p, 20, temperature=0.0)
        samples.append({"prompt": p, "pipeline": theirs, "llmkit": ours, "same": theirs == ours})
    rows = [_memory_rows("this speedrun's GPT", read_model_config(model_dir(ctx.out / "pretrain")), 8, 128, 8),
            _memory_rows("gpt2-124m", {"llmkit": {"kind": "gpt", "config": asdict(gpt_preset("gpt2-124m"))}}, 8, 128, 8)]
    return {"dir": str(out), "samples": samples, "memory": rows}


def report_hf(r: dict) -> str:
    lines = [f"The pre-trained GPT exported with `llmkit hf export` to `{r['dir']}` (a `GPT2LMHeadModel` and a "
             "`PreTrainedTokenizerFast`), then run by `transformers.pipeline(\"text-generation\")`, greedy, 20 new tokens:", ""]
    for s in r["samples"]:
        verdict = "the same text as llmkit's own `generate`" if s["same"] else f"differs from llmkit's `{s['llmkit']!r}`"
        lines.append(f"- `{s['pipeline']!r}`: {verdict}")
    lines += ["", "`llmkit memory` for these models (GB = 10^9 bytes; training in fp32, batch 8 x 128, AdamW, LoRA r = 8 on "
              "every linear layer but the head; activations by Korthikanti et al. 2022):", "",
              "| model | parameters | " + " | ".join(f"weights {d}" for d in DTYPES) + " | train full | train LoRA |",
              "|---|---:|" + "---:|" * (len(DTYPES) + 2)]
    for m in r["memory"]:
        weights = " | ".join(f"{m['inference_gb'][d]:.3f}" for d in DTYPES)
        lines.append(f"| {m['model']} | {m['params']:,} | {weights} | {m['full_gb']:.2f} | {m['lora_gb']:.2f} |")
    return "\n".join(lines)
