"""The language-model stages of ``llmkit speedrun``: pre-train a GPT with the tokenizer the
run just trained, sample from it, look at its attention, and compare the model ladder."""

from __future__ import annotations

from llmkit.training.loop import TrainConfig

# The speedrun's GPT: small enough to learn something in a few minutes on 2 CPU cores.
GPT_OVERRIDES = dict(n_layer=4, n_head=4, n_embd=256, context_length=128)
PROMPTS = ("The json module", "def ", "Return the")


def _train_config(ctx) -> TrainConfig:
    q = ctx.config.quick
    steps = ctx.config.quick_pretrain_steps if q else ctx.config.pretrain_steps
    return TrainConfig(steps=steps, batch_size=8 if q else 16, block_size=64 if q else 128, lr=2e-3, min_lr=2e-4,
                       warmup_steps=max(1, steps // 10), eval_every=max(1, steps // 4), eval_batches=8,
                       log_every=max(1, steps // 20), ckpt_every=max(1, steps // 4), device="cpu")


def run_pretrain(ctx) -> dict:
    from llmkit.speedrun import corpus_of
    from llmkit.training.checkpoint import latest_checkpoint
    from llmkit.training.run import RUN_FILE, RunSpec, prepare_run, train_run

    run = ctx.out / "pretrain"
    spec = RunSpec(model="gpt", preset="tiny", overrides=dict(GPT_OVERRIDES), corpus=ctx.config.corpus,
                   tokenizer=str(ctx.out / "tokenizer"), train=_train_config(ctx))
    resume = (run / RUN_FILE).exists() and latest_checkpoint(run) is not None and (run / RUN_FILE).read_text() == spec.to_json()
    if not resume:  # a fresh start (or settings changed): prepare from scratch
        prepare_run(spec, run, force=True, log=ctx.log, docs=corpus_of(ctx))
    else:
        ctx.log("resuming the interrupted pre-training from its latest checkpoint")
    if ctx.progress:
        bar, update = ctx.progress("pre-training", spec.train.steps)
        with bar:
            records = train_run(run, resume=resume, log=ctx.log, progress=lambda d, t, rec: update(d, t))
    else:
        records = train_run(run, resume=resume, log=ctx.log)
    from llmkit.models.zoo import load_model

    model = load_model(run / "model")
    last = [r for r in records if "val_loss" in r][-1]
    first = records[0]
    return {"dir": str(run), "params": model.num_parameters(), "steps": spec.train.steps, "tokens": last["tokens"],
            "first_loss": first["loss"], "final": last, "overrides": GPT_OVERRIDES}


def report_pretrain(r: dict) -> str:
    f = r["final"]
    return (
        f"A {r['params']:,}-parameter GPT ({r['overrides']}) trained for {r['steps']} steps on {r['tokens']:,} tokens: "
        f"training loss {r['first_loss']:.2f} -> {f['loss']:.2f}; validation {f['val_loss']:.3f} nats/token = "
        f"**{f['val_bits_per_token']:.3f} bits/token**, perplexity {f['val_ppl']:.1f} "
        f"(at {f['tokens_per_s']:,.0f} tokens/s). The run directory `{r['dir']}` resumes with "
        f"`llmkit train -o {r['dir']} --resume`.\n\n![loss curve](pretrain/loss.png)"
    )


def run_samples(ctx) -> dict:
    from llmkit.generation import generate_text
    from llmkit.inference import load_pretrained

    model, tok, _ = load_pretrained(ctx.out / "pretrain")
    samples = []
    for i, p in enumerate(PROMPTS):
        greedy = generate_text(model, tok, p, 40, temperature=0.0)
        sampled = generate_text(model, tok, p, 40, temperature=0.8, top_k=50, seed=i)
        samples.append({"prompt": p, "greedy": greedy, "sampled": sampled})
    return {"samples": samples}


def report_samples(r: dict) -> str:
    parts = ["Greedy and sampled (temperature 0.8, top-k 50, seeded) continuations of 40 tokens:\n"]
    for s in r["samples"]:
        parts.append(f"- prompt `{s['prompt']!r}`\n\n  ```text\n  greedy : {s['prompt'] + s['greedy']!r}\n  sampled: {s['prompt'] + s['sampled']!r}\n  ```")
    return "\n".join(parts)


def run_attention(ctx) -> dict:
    from llmkit import viz
    from llmkit.inference import attention_map, load_pretrained

    model, tok, _ = load_pretrained(ctx.out / "pretrain")
    text = "def add(a, b):\n    return a + b"
    layer, head = model.config.n_layer - 1, 0
    w, labels = attention_map(model, tok, text, layer, head)
    viz.attention_heatmap(ctx.out / "attention.png", w.numpy(), labels, title=f"GPT layer {layer}, head {head}")
    top = [labels[int(w[i].argmax())] for i in range(len(labels))]
    return {"text": text, "layer": layer, "head": head, "tokens": labels, "most_attended": top}


def report_attention(r: dict) -> str:
    pairs = ", ".join(f"{a!r}->{b!r}" for a, b in list(zip(r["tokens"], r["most_attended"]))[-6:])
    return (f"Attention weights of layer {r['layer']}, head {r['head']} on `{r['text']!r}` (row = query, column = key; "
            f"causal, so the upper triangle is zero). Most attended key per query (last six): {pairs}.\n\n![attention](attention.png)")


def run_compare(ctx) -> dict:
    from dataclasses import asdict

    from llmkit.training.compare import compare_models

    budget = ctx.config.quick_compare_budget if ctx.config.quick else ctx.config.compare_budget
    rows = compare_models(ctx.out / "pretrain" / "tokens", ctx.out / "compare", budget_tokens=budget, block_size=64,
                          batch_size=8 if ctx.config.quick else 16, log=ctx.log)
    return {"budget": budget, "rows": [asdict(r) for r in rows]}


def report_compare(r: dict) -> str:
    lines = [f"Each model learns from the same {r['budget']:,} training tokens (the same windows: the neural models "
             "train on them, the n-gram model counts them); all are scored on the same validation windows.", "",
             "| model | parameters | train s | val loss | bits/token | perplexity |", "|---|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['parameters']:,} | {row['train_seconds']:.1f} | {row['val_loss']:.3f} | "
                     f"{row['val_bits_per_token']:.3f} | {row['val_ppl']:,.1f} |")
    return "\n".join(lines) + "\n\n![compare](compare/compare.png)"
