"""A sequence classifier made from a pre-trained language model, the course's way: the
pre-trained LM head is discarded and replaced by a randomly initialised n-class head.

The new head scores every position, (B, T, n_classes); a pooling step picks one score vector
per sequence: the last real token for a decoder (causal attention means only it has seen the
whole text), ``[CLS]`` or the mean over real tokens for an encoder. (A linear head commutes
with picking a position or averaging, so this equals pooling first and scoring after.)

What is trained is a *method*:

- ``head``: the new head only (the backbone is a frozen feature extractor);
- ``last-k``: the head, the last k blocks and (decoder) the final LayerNorm;
- ``full``: everything;
- ``lora``: low-rank adapters on the backbone's linear layers (:mod:`llmkit.models.lora`) and
  the head, which is new and so trained in full (PEFT's ``modules_to_save``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from llmkit.models.bert import Bert, encode_for_bert
from llmkit.models.common import masked_mean
from llmkit.models.gpt import GPT, with_qkv_layout
from llmkit.models.lora import LoRALinear, mark_trainable, matches_targets, replace_linear_with_lora
from llmkit.tokenizer import Tokenizer

METHODS = ("head", "last-k", "full", "lora")
POOLINGS = {"gpt": ("last",), "bert": ("cls", "mean")}
# The backbone's linear layers (the head excluded), by PEFT's suffix rule.
DEFAULT_LORA_TARGETS = {
    "gpt": ["q_proj", "k_proj", "v_proj", "c_proj", "c_fc"],
    "bert": ["query", "key", "value", "dense"],
}


@dataclass
class ClassifierSpec:
    """Everything needed to rebuild a trained classifier (saved as ``classifier.json``)."""

    backbone_kind: str
    backbone_config: dict
    classes: list[str]
    pooling: str = "last"
    method: str = "lora"
    last_k: int = 1
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None
    max_length: int = 128
    head_bias: bool = True
    base: str | None = None
    """The pre-trained model directory (a LoRA classifier needs it to load)."""
    base_sha256: str | None = None
    """Checksum of the base's weights file: a LoRA run refuses a base that has changed."""
    metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone_kind not in POOLINGS:
            raise ValueError(f"a classifier needs a gpt or bert backbone, not {self.backbone_kind!r}")
        if self.pooling not in POOLINGS[self.backbone_kind]:
            raise ValueError(f"pooling {self.pooling!r} does not suit a {self.backbone_kind} backbone; use {' or '.join(POOLINGS[self.backbone_kind])}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if len(self.classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {len(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class names must be unique")
        if self.max_length < 2:
            raise ValueError("max_length must be >= 2")
        if self.last_k < 1:
            raise ValueError("last_k must be >= 1")
        if self.lora_rank < 1 or not self.lora_alpha > 0:
            raise ValueError("lora_rank must be >= 1 and lora_alpha > 0")
        if self.lora_targets is not None and not [t for t in self.lora_targets if t]:
            raise ValueError("lora_targets is empty; leave it out to adapt every linear layer of the backbone")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> list[str]:
        """The LoRA targets; GPT-2's fused ``c_attn`` names its three parts (LoRA splits it)."""
        targets = list(self.lora_targets or DEFAULT_LORA_TARGETS[self.backbone_kind])
        if self.backbone_kind == "gpt" and "c_attn" in targets:
            targets = [t for t in targets if t != "c_attn"] + ["q_proj", "k_proj", "v_proj"]
        return targets


def pool(scores: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, n) per-position scores -> (B, n): ``last`` real token, ``cls`` (position 0) or
    ``mean`` over real tokens. ``attention_mask`` (B, T) is 1 on real tokens, right-padded."""
    if how == "cls":
        return scores[:, 0]
    if how == "mean":
        return masked_mean(scores, attention_mask)
    last = attention_mask.sum(1).clamp(min=1) - 1  # (B,)
    return scores[torch.arange(scores.shape[0], device=scores.device), last]


class SequenceClassifier(nn.Module):
    """``clf(idx, attention_mask) -> class logits (B, n_classes)``. Unlike the language models
    it takes no targets: one label per sequence is not the per-token ``(x, y)`` of the LM
    signature; the loss is ``F.cross_entropy(clf(idx, mask), labels)``."""

    def __init__(self, backbone: nn.Module, num_classes: int, pooling: str, head_bias: bool = True):
        super().__init__()
        kind = "gpt" if isinstance(backbone, GPT) else "bert" if isinstance(backbone, Bert) else None
        if kind is None:
            raise ValueError(f"a classifier needs a GPT or BERT backbone, not {type(backbone).__name__}")
        self.kind, self.pooling = kind, pooling
        self.model = backbone
        head = nn.Linear(backbone.config.n_embd, num_classes, bias=head_bias)  # fresh, randomly initialised
        if kind == "gpt":
            backbone.lm_head = head  # the pre-trained LM head is discarded
        else:
            backbone.cls = nn.ModuleDict(dict(predictions=head))

    @property
    def head_name(self) -> str:
        return "model.lm_head" if self.kind == "gpt" else "model.cls.predictions"

    @property
    def head(self) -> nn.Module:
        return self.get_submodule(self.head_name)

    def blocks(self) -> nn.ModuleList:
        return self.model.transformer.h if self.kind == "gpt" else self.model.bert.encoder.layer

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        if self.kind == "gpt":
            scores, _ = self.model(idx)  # (B, T, n); causal, so right padding cannot leak into real positions
        else:
            scores, _ = self.model(idx, attention_mask=attention_mask)  # (B, T, n)
        return pool(scores, attention_mask, self.pooling)  # (B, n)


def build_classifier(backbone: nn.Module, spec: ClassifierSpec) -> SequenceClassifier:
    """Wrap ``backbone`` (consumed) with a fresh head and set what ``spec.method`` trains.
    For LoRA on a GPT the q/k/v projection is split first, so each of W_q, W_k, W_v gets its
    own adapter (the course's and the LoRA paper's layout; the function is unchanged)."""
    if spec.method == "lora" and isinstance(backbone, GPT):
        backbone = with_qkv_layout(backbone, split=True)
    clf = SequenceClassifier(backbone, spec.num_classes, spec.pooling, spec.head_bias)
    set_trainable(clf, spec)
    return clf


def set_trainable(clf: SequenceClassifier, spec: ClassifierSpec) -> SequenceClassifier:
    if spec.method == "full":
        for p in clf.parameters():
            p.requires_grad_(True)
        return clf
    if spec.method == "lora":
        replace_linear_with_lora(clf, spec.lora_rank, spec.lora_alpha, backbone_targets(clf, spec.targets), spec.lora_dropout)
        return mark_trainable(clf, [clf.head_name])
    mark_trainable(clf, [clf.head_name])  # head (and, for last-k, the top of the stack)
    if spec.method == "last-k":
        blocks = clf.blocks()
        if spec.last_k > len(blocks):
            raise ValueError(f"last_k={spec.last_k} but the backbone has {len(blocks)} blocks")
        top = list(blocks[-spec.last_k:]) + ([clf.model.transformer.ln_f] if clf.kind == "gpt" else [])
        for m in top:
            for p in m.parameters():
                p.requires_grad_(True)
    return clf


def backbone_targets(clf: SequenceClassifier, targets: Sequence[str]) -> list[str]:
    """Full names of the backbone's Linear layers that ``targets`` select (never the head);
    a selection that finds nothing is an error naming the layers there are."""
    names = [n for n, m in clf.named_modules() if isinstance(m, nn.Linear) and not n.startswith(clf.head_name)]
    chosen = [n for n in names if matches_targets(n, targets)]
    if not chosen:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ValueError(f"LoRA targets {list(targets)} match no linear layer of the backbone; it has {', '.join(leaves)}")
    return chosen


def lora_parameter_count(model: nn.Module, rank: int, targets: Sequence[str] | None = None) -> int:
    """Trainable parameters LoRA of ``rank`` would add on the Linear layers ``targets`` select
    (all of them when None), without changing the model: r * (in + out) per layer."""
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear) and not name.endswith((".lora_A", ".lora_B")):
            if matches_targets(name, targets):
                total += rank * (m.in_features + m.out_features)
    return total


def parameter_table(clf: SequenceClassifier, spec: ClassifierSpec, ranks: Sequence[int] = (8, 16)) -> list[tuple[str, int]]:
    """What each method would train on this classifier (``clf`` must not carry LoRA layers
    yet): the course's counts (full, frozen, LoRA on every Linear including the head) and
    llmkit's methods."""
    total = sum(p.numel() for p in clf.parameters())
    head = sum(p.numel() for p in clf.head.parameters())
    top = sum(p.numel() for m in list(clf.blocks()[-spec.last_k:]) for p in m.parameters())
    if clf.kind == "gpt":
        top += sum(p.numel() for p in clf.model.transformer.ln_f.parameters())
    rows = [("full fine-tuning (--method full)", total), ("frozen (nothing trainable)", 0), ("the new head only (--method head)", head), (f"last {spec.last_k} block(s) + head (--method last-k)", top + head)]
    for r in ranks:
        rows.append((f"LoRA r={r} on every Linear layer, head included (the course)", lora_parameter_count(clf, r)))
        backbone = lora_parameter_count(clf, r, backbone_targets(clf, spec.targets))
        rows.append((f"LoRA r={r} on the backbone + the new head trained (--method lora)", backbone + head))
    return rows


def encode_texts(tok: Tokenizer, texts: Sequence[str], kind: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(ids, attention_mask)``, each (B, T). Texts longer than ``max_length``
    tokens keep their beginning. A decoder sees the raw tokens (an empty text becomes one
    padding token: ``<|pad|>``, else ``<|endoftext|>``, else id 0); an encoder gets
    ``[CLS] text [SEP]``."""
    if kind == "bert":
        enc = encode_for_bert(tok, list(texts), max_length=max_length)
        return enc["input_ids"], enc["attention_mask"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = [tok.encode_ordinary(t)[:max_length] or [pad] for t in texts]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


@torch.no_grad()
def predict_proba(clf: SequenceClassifier, tok: Tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 32) -> torch.Tensor:
    """Class probabilities (N, n_classes) for ``texts``, in eval mode, batch by batch."""
    was_training = clf.training
    clf.eval()
    device = next(clf.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = encode_texts(tok, texts[i : i + batch_size], clf.kind, max_length)
        out.append(torch.softmax(clf(ids.to(device), mask.to(device)).float(), dim=-1).cpu())
    clf.train(was_training)
    return torch.cat(out) if out else torch.empty(0, clf.head.out_features)


def pipeline_output(probs: torch.Tensor, classes: Sequence[str]) -> list[dict]:
    """The course's pipeline shape: ``[{'label': 'positive', 'score': 0.98}, ...]``, one per text."""
    best = probs.argmax(dim=-1)
    return [{"label": classes[int(b)], "score": round(float(p[b]), 4)} for p, b in zip(probs, best)]
