"""Interop with Hugging Face ``transformers``: export our models, import GPT-2 checkpoints.

- :func:`export_model` turns a trained GPT or BERT (a run or model directory) into a plain
  transformers directory: ``config.json`` (``gpt2`` / ``bert``), ``model.safetensors`` and a
  tokenizer that ``AutoTokenizer`` loads with the same ids, its special tokens named in
  ``tokenizer_config.json``, and, for a chat-tuned run, a Jinja ``chat_template`` that renders
  exactly what :class:`llmkit.chat.ChatTemplate` renders.
- :func:`import_gpt2` reads a GPT-2 checkpoint as transformers writes it (``config.json`` with
  ``model_type: gpt2`` + ``model.safetensors``, a local directory or a hub id) into an llmkit
  model directory that :func:`llmkit.inference.load_pretrained` and ``llmkit generate`` use.

Our GPT already uses GPT-2's parameter names and our BERT those of ``BertForMaskedLM``
(see :mod:`llmkit.models.gpt`, :mod:`llmkit.models.bert`), so weights only need GPT-2's
Conv1D transpose (done by :func:`llmkit.models.zoo.save_model`); the work here is in the
configs, the tokenizer files and refusing what the other side cannot express.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from llmkit._io import atomic_write_text, read_json, staged_dir
from llmkit.inference import model_dir
from llmkit.models.config import BertConfig, GPTConfig
from llmkit.models.gpt import GPT, conv1d_transposed
from llmkit.models.zoo import CONFIG_FILE, WEIGHTS_FILE, load_model, read_model_config, save_model
from llmkit.tokenizer import Tokenizer
from llmkit.tokenizer import files as tok_files

EXPORTABLE_KINDS = ("gpt", "bert")
GENERATION_CONFIG_FILE = "generation_config.json"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
LLMKIT_CHAT_FILE = "chat_template.json"  # what llmkit finetune sft writes beside the model
BERT_SPECIALS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]", "pad_token": "[PAD]"}

# The llmkit-chat-v1 format (llmkit.chat) in Jinja. A turn is the role marker, the
# content, any tool calls as {"name", "arguments"} JSON between the tool-call markers,
# <|end|> and a newline. transformers' ``tojson`` is json.dumps with ensure_ascii=False and
# the default separators, as ours. Arguments given as a JSON string (OpenAI's wire form) are
# written as they are; ours re-serialises them, so the two agree when the string is
# json.dumps-formatted (or, better, when arguments are a dict).
LLMKIT_CHAT_V1 = "llmkit-chat-v1"
CHAT_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|end|>", "<|tool_call|>", "<|/tool_call|>")
CHAT_JINJA = (
    "{%- set roles = {'system': '<|system|>', 'user': '<|user|>', 'assistant': '<|assistant|>', 'tool': '<|tool|>'} -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] not in roles -%}{{ raise_exception('unknown role ' ~ m['role']) }}{%- endif -%}"
    "{{ roles[m['role']] }}"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- elif m['content'] is iterable -%}{%- for p in m['content'] -%}{{ p['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- if m['role'] == 'assistant' and m['tool_calls'] -%}{%- for c in m['tool_calls'] -%}"
    "{%- set f = c['function'] if c['function'] is defined else c -%}"
    "{%- set args = f['arguments'] if f['arguments'] is defined else {} -%}"
    "<|tool_call|>{\"name\": {{ f['name'] | tojson }}, \"arguments\": "
    "{%- if args is string %} {{ args }}{%- else %} {{ args | tojson }}{%- endif -%}"
    "}<|/tool_call|>"
    "{%- endfor -%}{%- endif -%}"
    "<|end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


# -- export ----------------------------------------------------------------------------------------


def export_model(run_or_dir: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``out_dir`` as a plain transformers directory for the GPT (``GPT2LMHeadModel``)
    or BERT (``BertForMaskedLM``) in ``run_or_dir`` (a run directory or a model directory),
    with its tokenizer. ``out_dir`` is built aside and renamed into place; an existing
    non-empty ``out_dir`` is refused unless ``overwrite``. Other kinds are a ValueError."""
    src = model_dir(run_or_dir)
    kind = read_model_config(src)["llmkit"].get("kind")
    if kind not in EXPORTABLE_KINDS:
        raise ValueError(f"{src} holds a {kind!r} model; only gpt and bert export to transformers (it has no {kind} architecture)")
    model = load_model(src)
    if kind == "gpt" and not (model.config.bias and model.config.qkv_bias):
        raise ValueError(f"{src} is a GPT without biases (bias/qkv_bias=False); transformers' GPT-2 always has them, so it cannot be exported")
    tok = Tokenizer.load(src)
    if tok.n_vocab > model.config.vocab_size:
        raise ValueError(f"{src}: the tokenizer has {tok.n_vocab} ids but the model only {model.config.vocab_size}")
    chat = chat_template_for(src, tok)
    with staged_dir(out_dir, overwrite=overwrite, protect=[src]) as tmp:
        save_model(model, tmp)
        config = _hf_gpt_config(tmp, tok) if kind == "gpt" else hf_bert_config(model.config, tok)
        atomic_write_text(tmp / CONFIG_FILE, json.dumps(config, indent=2))
        if kind == "gpt":
            atomic_write_text(tmp / GENERATION_CONFIG_FILE, json.dumps(_generation_config(tok, chat is not None), indent=2))
        _write_hf_tokenizer(tok, tmp, kind=kind, context_length=model.config.context_length, chat_template=chat)
    return Path(out_dir)


def _hf_gpt_config(staged: Path, tok: Tokenizer) -> dict:
    """The GPT-2 config that :func:`save_model` wrote, without our ``llmkit`` section and with
    the tokenizer's ids (GPT-2's defaults, 50256, would point outside a smaller vocabulary)."""
    config = json.loads((staged / CONFIG_FILE).read_text(encoding="utf-8"))
    config.pop("llmkit")
    eot = tok.eot_token
    config.update(bos_token_id=eot, eos_token_id=eot, pad_token_id=tok.special_tokens.get("<|pad|>"))
    return config


def _generation_config(tok: Tokenizer, chat: bool) -> dict:
    """Where ``model.generate`` stops: ``<|endoftext|>``, and ``<|end|>`` for a chat model."""
    eos = [i for i in (tok.special_tokens.get("<|end|>") if chat else None, tok.eot_token) if i is not None]
    return {"bos_token_id": tok.eot_token, "eos_token_id": eos[0] if len(eos) == 1 else (eos or None), "pad_token_id": tok.pad_token_id}


def hf_bert_config(c: BertConfig, tok: Tokenizer | None = None) -> dict:
    """Our :class:`BertConfig` as transformers' ``BertConfig`` (``BertForMaskedLM``): exact
    GELU, absolute positions, the MLM decoder tied to the word embeddings."""
    pad = tok.special_tokens.get("[PAD]", 0) if tok is not None else 0
    return {
        "model_type": "bert",
        "architectures": ["BertForMaskedLM"],
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "intermediate_size": c.inner_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.dropout,
        "max_position_embeddings": c.context_length,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.layer_norm_eps,
        "initializer_range": 0.02,
        "pad_token_id": pad,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def chat_template_for(model_directory: str | os.PathLike, tok: Tokenizer) -> str | None:
    """The Jinja chat template for a chat-tuned model directory (one with llmkit's
    ``chat_template.json``), else None. Unknown template formats are a ValueError, never a
    silently wrong template."""
    path = Path(model_directory) / LLMKIT_CHAT_FILE
    if not path.is_file():
        return None
    meta = read_json(path, missing=f"{path} is missing")
    if not isinstance(meta, dict) or meta.get("template") != LLMKIT_CHAT_V1:
        raise ValueError(f"{path} describes the chat template {meta.get('template') if isinstance(meta, dict) else None!r}; only {LLMKIT_CHAT_V1} exports to Jinja")
    missing = [t for t in CHAT_MARKERS if t not in tok.special_tokens]
    if missing or meta.get("turn_separator", "\n") != "\n":
        raise ValueError(f"{path} does not match its tokenizer (missing chat tokens {missing}) or has another turn separator")
    return CHAT_JINJA


def hf_tokenizer_config(tok: Tokenizer, *, kind: str = "gpt", context_length: int | None = None, chat_template: str | None = None) -> dict:
    """``tokenizer_config.json`` for ``PreTrainedTokenizerFast``: the named special tokens
    (``<|endoftext|>`` as bos/eos, ``<|pad|>``; BERT's ``[CLS]``/``[SEP]``/``[MASK]``/``[PAD]``),
    every other special token as an extra one (kept whole, dropped by ``skip_special_tokens``),
    the context length and the chat template."""
    eot = tok_files.ENDOFTEXT
    named = {"bos_token": eot, "eos_token": eot} if eot in tok.special_tokens else {}
    if "<|pad|>" in tok.special_tokens:
        named["pad_token"] = "<|pad|>"
    if kind == "bert":
        named.update({k: v for k, v in BERT_SPECIALS.items() if v in tok.special_tokens})
    extra = [s for s, _ in sorted(tok.special_tokens.items(), key=lambda kv: kv[1]) if s not in named.values()]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length or 1_000_000_000,
        **named,
        "additional_special_tokens": extra,  # transformers 5 reads it as extra_special_tokens
    }
    if kind == "bert":
        config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    if chat_template is not None:
        config["chat_template"] = chat_template
    return config


def _write_hf_tokenizer(tok: Tokenizer, d: Path, *, kind: str, context_length: int, chat_template: str | None) -> None:
    """Our tokenizer files (tiktoken + llmkit + HF), then the HF config for ``kind``; a BERT
    tokenizer gets a post-processor that adds ``[CLS] a [SEP] (b [SEP])`` as
    :func:`llmkit.models.bert.encode_for_bert` does."""
    tok.save(d, overwrite=True)
    if kind == "bert" and all(s in tok.special_tokens for s in ("[CLS]", "[SEP]")):
        atomic_write_text(d / HF_TOKENIZER_FILE, _bert_tokenizer_json(tok))
    config = hf_tokenizer_config(tok, kind=kind, context_length=context_length, chat_template=chat_template)
    atomic_write_text(d / HF_TOKENIZER_CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False))


def _bert_tokenizer_json(tok: Tokenizer) -> str:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.processors import TemplateProcessing

    hf = HFTokenizer.from_str(tok.to_hf_json())
    cls, sep = tok.special_tokens["[CLS]"], tok.special_tokens["[SEP]"]
    hf.post_processor = TemplateProcessing(
        single="[CLS] $A:0 [SEP]:0", pair="[CLS] $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return hf.to_str(pretty=False)


# -- import ----------------------------------------------------------------------------------------

_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # the same tanh approximation, as our MLP uses


def gpt_config_from_hf(config: Mapping) -> GPTConfig:
    """Our :class:`GPTConfig` for a transformers GPT-2 ``config.json``; a ValueError naming
    the first GPT-2 feature our GPT does not have."""
    if config.get("model_type") != "gpt2":
        raise ValueError(f"model_type is {config.get('model_type')!r}; only gpt2 checkpoints import")
    refusals = {
        "scale_attn_by_inverse_layer_idx": (False, "attention scaled by 1/layer"),
        "reorder_and_upcast_attn": (False, "reordered, upcast attention"),
        "scale_attn_weights": (True, "unscaled attention (scale_attn_weights=false)"),
        "add_cross_attention": (False, "cross-attention"),
    }
    for key, (ours, what) in refusals.items():
        if bool(config.get(key, ours)) != ours:
            raise ValueError(f"the checkpoint uses {what} ({key}={config[key]}), which llmkit's GPT does not support")
    act = config.get("activation_function", "gelu_new")
    if act not in _TANH_GELUS:
        raise ValueError(f"the checkpoint uses activation {act!r}; llmkit's GPT has GPT-2's tanh GELU ({' or '.join(_TANH_GELUS)})")
    n_embd = int(config.get("n_embd", 768))
    if config.get("n_inner") not in (None, 4 * n_embd):
        raise ValueError(f"the checkpoint's MLP is {config['n_inner']} wide; llmkit's GPT uses 4 * n_embd = {4 * n_embd}")
    try:
        return GPTConfig(
            vocab_size=int(config.get("vocab_size", 50257)),
            context_length=int(config.get("n_positions", 1024)),
            n_layer=int(config.get("n_layer", 12)),
            n_head=int(config.get("n_head", 12)),
            n_embd=n_embd,
            dropout=float(config.get("resid_pdrop", 0.1)),
            layer_norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
            tie_weights=bool(config.get("tie_word_embeddings", True)),
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad GPT-2 config: {e}") from None


def import_gpt2(
    hf_dir: str | os.PathLike, out_dir: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None, overwrite: bool = False
) -> Path:
    """Write an llmkit model directory (weights, config, tokenizer) for the GPT-2 checkpoint
    ``hf_dir``: a local directory as transformers writes it, or a hub id (downloaded then).
    The tokenizer is ``tokenizer`` (a named encoding or tokenizer directory) when given, else
    the checkpoint's own (GPT-2 byte-level BPE files), else GPT-2's when the vocabulary has
    its 50,257 ids; otherwise a ValueError asks for one."""
    src = resolve_checkpoint(hf_dir)
    cfg = gpt_config_from_hf(read_json(src / CONFIG_FILE, missing=f"{src} is not a transformers checkpoint: missing {CONFIG_FILE}"))
    tok = Tokenizer.from_pretrained(tokenizer) if tokenizer is not None else _checkpoint_tokenizer(src, cfg.vocab_size)
    if tok.n_vocab > cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tok.n_vocab} ids but the model only {cfg.vocab_size}; pass the checkpoint's tokenizer")
    model = GPT(cfg)
    load_gpt2_weights(model, read_safetensors(src))
    with staged_dir(out_dir, overwrite=overwrite, protect=[src]) as tmp:
        save_model(model.eval(), tmp, extra={"imported_from": str(hf_dir), "tokenizer": tok.name})
        tok.save(tmp)
    return Path(out_dir)


def resolve_checkpoint(name: str | os.PathLike) -> Path:
    """A local checkpoint directory, or the snapshot of the hub repository ``name`` (only
    its config, safetensors and tokenizer files are fetched)."""
    p = Path(name)
    if p.is_dir():
        return p
    if p.exists() or os.path.isabs(name) or str(name).startswith(".") or str(name).count("/") > 1:
        raise FileNotFoundError(f"{name} is not a checkpoint directory")
    from huggingface_hub import snapshot_download

    patterns = [CONFIG_FILE, "*.safetensors", "model.safetensors.index.json", HF_TOKENIZER_FILE, "vocab.json", "merges.txt"]
    try:
        return Path(snapshot_download(str(name), allow_patterns=patterns))
    except Exception as e:  # offline, unknown repo, gated, ...: one line for the user
        raise OSError(f"{name} is neither a local directory nor a downloadable hub repository ({type(e).__name__})") from None


def read_safetensors(d: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` or of the shards its index names. Pickled
    weights (``pytorch_model.bin``) are refused: loading them can run code."""
    from safetensors.torch import load_file

    index = d / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index, missing=f"{index} is missing").get("weight_map", {}).values()))
    elif (d / WEIGHTS_FILE).is_file():
        shards = [WEIGHTS_FILE]
    else:
        pickled = " (it has pytorch_model.bin; re-save it with safe_serialization=True)" if (d / "pytorch_model.bin").exists() else ""
        raise FileNotFoundError(f"{d} has no {WEIGHTS_FILE}{pickled}")
    sd: dict[str, torch.Tensor] = {}
    for shard in shards:
        try:
            sd.update(load_file(d / shard))
        except Exception as e:
            raise ValueError(f"{d / shard} is corrupt or missing ({str(e).splitlines()[0][:100]})") from None
    return sd


def load_gpt2_weights(model: GPT, sd: Mapping[str, torch.Tensor]) -> GPT:
    """Load a transformers GPT-2 state dict (``GPT2LMHeadModel`` or the bare ``GPT2Model``
    names of the original checkpoints) into ``model``: Conv1D weights transposed, the causal
    mask buffers of old checkpoints dropped, a tied head taken from the embedding."""
    ours: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")) and value.ndim != 1:
            continue  # old checkpoints saved the causal mask
        if not key.startswith(("transformer.", "lm_head.")):
            key = "transformer." + key
        ours[key] = value.float()
    ours = conv1d_transposed(ours)
    if model.config.tie_weights:
        ours.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and model.config.tie_weights)]
    if missing or unexpected:
        raise ValueError(f"the weights do not fit the GPT-2 config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def _checkpoint_tokenizer(d: Path, vocab_size: int) -> Tokenizer:
    tok = read_hf_bpe_tokenizer(d)
    if tok is not None:
        return tok
    if vocab_size == 50257:
        return Tokenizer.from_pretrained("gpt2")
    raise ValueError(f"{d} has no tokenizer files llmkit reads and its {vocab_size}-id vocabulary is not GPT-2's; pass --tokenizer (tokenizer=...)")


def read_hf_bpe_tokenizer(d: str | os.PathLike) -> Tokenizer | None:
    """The byte-level BPE tokenizer in ``d``: llmkit's own files, ``tokenizer.json`` or
    ``vocab.json`` + ``merges.txt`` with GPT-2's pre-tokenizer; None when ``d`` has none. A
    BPE whose merge order differs from its id order is a ValueError (llmkit's BPE merges by
    id rank, so it would encode differently)."""
    d = Path(d)
    if (d / "tokenizer.tiktoken").is_file():
        return Tokenizer.load(d)
    if (d / HF_TOKENIZER_FILE).is_file():
        spec = read_json(d / HF_TOKENIZER_FILE, missing="")
        model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
        if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space"):
            raise ValueError(f"{d / HF_TOKENIZER_FILE} is not GPT-2's byte-level BPE; pass --tokenizer (tokenizer=...)")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        specials = {t["content"]: t["id"] for t in spec.get("added_tokens", []) if t.get("special", True)}
        return _tokenizer_from_bpe(d.name, model.get("vocab", {}), merges, specials, d / HF_TOKENIZER_FILE)
    if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        vocab = read_json(d / "vocab.json", missing="")
        lines = [ln for ln in (d / "merges.txt").read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#version")]
        return _tokenizer_from_bpe(d.name, vocab, [tuple(ln.split(" ")) for ln in lines], {}, d / "merges.txt")
    return None


def _tokenizer_from_bpe(name: str, vocab: Mapping[str, int], merges: list[tuple], added: Mapping[str, int], where: Path) -> Tokenizer:
    """Ranks from a byte-level vocab whose merge i makes id 256 + i (GPT-2's files do). The
    special tokens are the ``added`` ones, and any vocab entry beyond the merges (GPT-2's
    ``<|endoftext|>`` in ``vocab.json``)."""
    n_ranks = 256 + len(merges)
    special_ids = {**{s: i for s, i in vocab.items() if i >= n_ranks}, **added}
    try:
        ranks = {tok_files.string_to_token(s): i for s, i in vocab.items() if s not in special_ids}
    except KeyError:
        raise ValueError(f"{where}: the vocabulary is not byte-level; pass --tokenizer (tokenizer=...)") from None
    for i, m in enumerate(merges):
        if len(m) != 2 or vocab.get(m[0] + m[1]) != 256 + i:
            raise ValueError(f"{where}: merge {i} {m!r} does not make id {256 + i}; llmkit's rank-ordered BPE cannot reproduce it, pass --tokenizer")
    if len(ranks) != n_ranks:
        raise ValueError(f"{where}: {len(ranks)} ordinary tokens for 256 bytes + {len(merges)} merges; pass --tokenizer")
    return Tokenizer(ranks, "gpt2", special_ids, name=name)


__all__ = [
    "CHAT_JINJA", "EXPORTABLE_KINDS", "chat_template_for", "export_model", "gpt_config_from_hf", "hf_bert_config",
    "hf_tokenizer_config", "import_gpt2", "load_gpt2_weights", "read_hf_bpe_tokenizer", "read_safetensors", "resolve_checkpoint",
]
