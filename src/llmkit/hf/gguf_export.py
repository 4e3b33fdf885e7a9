"""Our GPT as a GGUF file (llama.cpp's format), written with the ``gguf`` package.

The file uses llama.cpp's ``gpt2`` architecture: its tensor names come from
``gguf.TENSOR_NAMES`` and its metadata keys from ``gguf.Keys`` through ``gguf.GGUFWriter``.

Tensor layout. llama.cpp's GPT-2 converter (``convert_hf_to_gguf.py``, ``GPT2Model``)
transposes Hugging Face's ``Conv1D`` weights, ``(in, out)``, to ``(out, in)``: the layout of an
``nn.Linear`` weight, which is what our GPT already stores, so our matrices are written as
they are (numpy shape ``(out, in)``; GGUF lists dims fastest first, so the file's shape reads
``(in, out)``). Per block:

    ln_1.{weight,bias}            -> blk.N.attn_norm.{weight,bias}
    attn.c_attn.{weight,bias}     -> blk.N.attn_qkv.{weight,bias}   (q_proj|k_proj|v_proj concatenated when split)
    attn.c_proj.{weight,bias}     -> blk.N.attn_output.{weight,bias}
    ln_2.{weight,bias}            -> blk.N.ffn_norm.{weight,bias}
    mlp.c_fc.{weight,bias}        -> blk.N.ffn_up.{weight,bias}
    mlp.c_proj.{weight,bias}      -> blk.N.ffn_down.{weight,bias}

plus ``token_embd``, ``position_embd``, ``output_norm`` and ``output`` (``lm_head``; written
even when tied to ``token_embd``, as llama.cpp's converter does). llama.cpp's GPT-2 requires
every bias; a model built without biases gets zero biases, which compute the same function.

Tokenizer: ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE), tokens spelled in GPT-2's
byte-to-unicode alphabet (as in ``tokenizer.json``), special tokens typed CONTROL, ids the model
has beyond the tokenizer as ``[PAD{i}]`` UNUSED, and the merges of our ``tokenizer.json``
(:func:`llmkit.tokenizer.files.hf_merges`). ``tokenizer.ggml.pre`` names llama.cpp's
pre-tokenizer for our split patterns (gpt2 -> ``gpt-2``, gpt4/cl100k -> ``llama-bpe``,
o200k -> ``gpt-4o``); a custom pattern has no llama.cpp equivalent and is left out.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from llmkit._io import atomic_write_with, refuse_overwrite
from llmkit.inference import model_dir
from llmkit.models.zoo import load_model, read_model_config
from llmkit.tokenizer import Tokenizer
from llmkit.tokenizer.files import hf_merges, token_to_string

DTYPES = ("f32", "f16")
PRE_TOKENIZERS = {"gpt2": "gpt-2", "gpt4": "llama-bpe", "o200k": "gpt-4o", "gpt4-digits": "qwen2"}  # qwen2: gpt4's split, digits one by one


def _tensor_name(kind, bid: int | None = None) -> str:
    import gguf

    name = gguf.TENSOR_NAMES[kind]
    return name.format(bid=bid) if bid is not None else name


def _bias(linear: torch.nn.Module, n: int) -> torch.Tensor:
    return linear.bias if getattr(linear, "bias", None) is not None else torch.zeros(n)


def _qkv(attn: torch.nn.Module, n_embd: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not attn.split_qkv:
        return attn.c_attn.weight, _bias(attn.c_attn, 3 * n_embd)
    parts = (attn.q_proj, attn.k_proj, attn.v_proj)
    return torch.cat([p.weight for p in parts]), torch.cat([_bias(p, n_embd) for p in parts])


def gguf_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """llama.cpp GPT-2 tensor name -> our weight (layout as in the module docstring)."""
    from gguf import MODEL_TENSOR as T

    c, tr = model.config, model.transformer
    out = {
        _tensor_name(T.TOKEN_EMBD) + ".weight": tr.wte.weight,
        _tensor_name(T.POS_EMBD) + ".weight": tr.wpe.weight,
        _tensor_name(T.OUTPUT_NORM) + ".weight": tr.ln_f.weight,
        _tensor_name(T.OUTPUT_NORM) + ".bias": _bias(tr.ln_f, c.n_embd),
        _tensor_name(T.OUTPUT) + ".weight": model.lm_head.weight,
    }
    for i, b in enumerate(tr.h):
        qkv_w, qkv_b = _qkv(b.attn, c.n_embd)
        layers = {
            T.ATTN_NORM: (b.ln_1.weight, _bias(b.ln_1, c.n_embd)),
            T.ATTN_QKV: (qkv_w, qkv_b),
            T.ATTN_OUT: (b.attn.c_proj.weight, _bias(b.attn.c_proj, c.n_embd)),
            T.FFN_NORM: (b.ln_2.weight, _bias(b.ln_2, c.n_embd)),
            T.FFN_UP: (b.mlp.c_fc.weight, _bias(b.mlp.c_fc, 4 * c.n_embd)),
            T.FFN_DOWN: (b.mlp.c_proj.weight, _bias(b.mlp.c_proj, c.n_embd)),
        }
        for kind, (w, bias) in layers.items():
            out[_tensor_name(kind, i) + ".weight"] = w
            out[_tensor_name(kind, i) + ".bias"] = bias
    return {k: v.detach().float().cpu() for k, v in out.items()}


def gguf_vocab(tok: Tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """``(tokens, token types, merges)`` for ``tokenizer.ggml.*``, ``vocab_size`` tokens long."""
    from gguf import TokenType

    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [int(TokenType.UNUSED)] * vocab_size
    for t, i in tok.ranks.items():
        tokens[i], types[i] = token_to_string(t), int(TokenType.NORMAL)
    for s, i in tok.special_tokens.items():
        tokens[i], types[i] = s, int(TokenType.CONTROL)
    merges = [f"{a} {b}" for a, b in hf_merges(dict(tok.ranks))]
    return tokens, types, merges


def _write(path: Path, model, tok: Tokenizer, name: str, dtype: str) -> None:
    import gguf

    c = model.config
    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
    w.add_name(name)
    w.add_context_length(c.context_length)
    w.add_embedding_length(c.n_embd)
    w.add_feed_forward_length(4 * c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_head_count(c.n_head)
    w.add_layer_norm_eps(c.layer_norm_eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, types, merges = gguf_vocab(tok, c.vocab_size)
    w.add_tokenizer_model("gpt2")
    if tok.pattern.name in PRE_TOKENIZERS:
        w.add_tokenizer_pre(PRE_TOKENIZERS[tok.pattern.name])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if tok.eot_token is not None:  # GPT-2 uses <|endoftext|> for both
        w.add_bos_token_id(tok.eot_token)
        w.add_eos_token_id(tok.eot_token)
    for tname, t in gguf_tensors(model).items():
        a = t.numpy()
        w.add_tensor(tname, a.astype(np.float16) if dtype == "f16" and a.ndim == 2 else a)  # llama.cpp keeps 1-D tensors f32
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def export_gguf(run_or_dir: str | os.PathLike, path: str | os.PathLike, *, dtype: str = "f32", overwrite: bool = False) -> Path:
    """Write the GPT in ``run_or_dir`` (a run or model directory) with its tokenizer to the
    GGUF file ``path`` (temporary file + rename). ``dtype`` f16 stores the matrices as f16
    (1-D tensors stay f32, as llama.cpp does). An existing ``path`` is refused unless
    ``overwrite``; other model kinds are a ValueError."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    src = model_dir(run_or_dir)
    kind = read_model_config(src)["llmkit"].get("kind")
    if kind != "gpt":
        raise ValueError(f"{src} holds a {kind!r} model; only gpt exports to GGUF (llama.cpp's gpt2 architecture)")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name such as model.gguf")
    refuse_overwrite([path], overwrite)
    model, tok = load_model(src), Tokenizer.load(src)
    if tok.n_vocab > model.config.vocab_size:
        raise ValueError(f"{src}: the tokenizer has {tok.n_vocab} ids but the model only {model.config.vocab_size}")
    atomic_write_with(path, lambda tmp: _write(tmp, model, tok, src.parent.name if src.name == "model" else src.name, dtype))
    return path


def read_gguf(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """``(metadata key -> value, tensor name -> numpy array)`` of a GGUF file, read with
    ``gguf.GGUFReader``. Arrays keep the numpy shape they were written with."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    try:
        reader = gguf.GGUFReader(path)
    except ValueError as e:
        raise ValueError(f"{path} is not a valid GGUF file: {e}") from None
    meta = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    return meta, tensors
