"""A pre-training run directory, from corpus to trained model.

``RUN/`` holds everything needed to continue or use the run:

- ``run.json``: what was asked (model kind, preset, overrides, corpus, tokenizer, TrainConfig);
- ``tokenizer/``: a copy of the tokenizer; ``tokens/``: the corpus tokenized once;
- ``checkpoints/``, ``metrics.jsonl``, ``loss.png`` (from the loop);
- ``model/``: the final model directory (config.json + model.safetensors + tokenizer files).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from llmkit._io import atomic_write_text
from llmkit.training.loop import TrainConfig

RUN_FILE = "run.json"
BERT_SPECIALS = ("[CLS]", "[SEP]", "[MASK]", "[PAD]")


@dataclass
class RunSpec:
    """What a run trains on and with."""

    model: str = "gpt"
    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)
    corpus: str = "pydocs"
    tokenizer: str = "gpt2"
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        d = json.loads(text)
        known = {f.name for f in fields(TrainConfig)}
        d["train"] = TrainConfig(**{k: v for k, v in d["train"].items() if k in known})
        return cls(**d)


def steps_for_tokens(tokens: int, cfg: TrainConfig, block_size: int) -> int:
    """Optimizer steps needed to see about ``tokens`` training tokens."""
    return max(1, math.ceil(tokens / (cfg.batch_size * block_size)))


def prepare_run(spec: RunSpec, run_dir: str | os.PathLike, *, force: bool = False, log=print, docs=None) -> Path:
    """Create ``run_dir`` (tokenizer copy, token files, run.json). Refuses an existing run
    unless ``force`` (then it starts over). ``docs``: an already loaded Corpus to use
    instead of loading ``spec.corpus``."""
    import shutil

    from llmkit.data.corpora import load_corpus
    from llmkit.data.tokens import write_token_files
    from llmkit.models.zoo import build_model
    from llmkit.tokenizer import Tokenizer

    run = Path(run_dir)
    if (run / RUN_FILE).exists() and not force:
        raise FileExistsError(f"{run} already holds a run; use --resume to continue it or --force to start over")
    build_model(spec.model, spec.preset, vocab_size=2, **spec.overrides) if spec.model != "ngram" else None  # validate early
    tok = Tokenizer.from_pretrained(spec.tokenizer)
    if spec.model == "bert":
        tok = tok.add_special_tokens(BERT_SPECIALS)
    if force and run.exists():
        for sub in ("checkpoints", "tokens", "model", "tokenizer"):
            shutil.rmtree(run / sub, ignore_errors=True)
        for f in ("metrics.jsonl", "loss.png", RUN_FILE):
            (run / f).unlink(missing_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    tok.save(run / "tokenizer", overwrite=True)
    docs = docs if docs is not None else load_corpus(spec.corpus)
    log(f"tokenizing {docs.name}: {len(docs)} documents, {docs.nbytes / 1e6:.1f} MB")
    tf = write_token_files(docs.texts(), tok, run / "tokens", corpus_name=docs.name, tokenizer_ref=spec.tokenizer, overwrite=True)
    log(f"{tf.meta['n_tokens']['train']:,} training and {tf.meta['n_tokens']['val']:,} validation tokens")
    block = spec.train.block_size or 64
    if spec.model != "ngram" and tf.meta["n_tokens"]["train"] < block + 1:
        shutil.rmtree(run, ignore_errors=True)  # nothing trainable: leave no half-made run behind
        raise ValueError(f"the corpus has {tf.meta['n_tokens']['train']} training tokens, too few for one window of {block} + 1")
    atomic_write_text(run / RUN_FILE, spec.to_json())
    return run


def load_spec(run_dir: str | os.PathLike) -> RunSpec:
    p = Path(run_dir) / RUN_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run: missing {RUN_FILE}")
    try:
        return RunSpec.from_json(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{p} is corrupt ({type(e).__name__}: {e})") from None


def train_run(run_dir: str | os.PathLike, *, resume: bool = False, log=print, progress=None) -> list[dict]:
    """Build the model that run.json describes and train it (or continue from the latest
    checkpoint); the final model is saved to ``RUN/model``."""
    import torch

    from llmkit.data.tokens import load_token_files
    from llmkit.models.zoo import COUNTED_KINDS, build_model, save_model
    from llmkit.tokenizer import Tokenizer
    from llmkit.training.loop import train

    run = Path(run_dir)
    spec = load_spec(run)
    tf = load_token_files(run / "tokens")
    if spec.model in COUNTED_KINDS:
        return fit_counted(run, spec, tf, log)
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model, spec.preset, vocab_size=tf.vocab_size, **spec.overrides)
    objective = _objective(spec, Tokenizer.load(run / "tokenizer"))
    records = train(model, tf.split("train"), tf.split("val"), spec.train, run, resume=resume, log=log, progress=progress, objective=objective)
    if int(os.environ.get("RANK", "0")) == 0:
        save_model(model, run / "model", overwrite=True, extra={"tokenizer": spec.tokenizer, "corpus": spec.corpus})
        Tokenizer.load(run / "tokenizer").save(run / "model", overwrite=True)
    return records


def _objective(spec: RunSpec, tok):
    from llmkit.training.objectives import CAUSAL, mlm_objective

    if spec.model != "bert":
        return CAUSAL
    return mlm_objective(tok.special_tokens["[MASK]"], tok.n_vocab, [tok.special_tokens[s] for s in BERT_SPECIALS])


def fit_counted(run: Path, spec: RunSpec, tf, log=print, max_eval_tokens: int = 200_000) -> list[dict]:
    """Fit an n-gram model by counting the training tokens, score the validation tokens
    and record one metrics line; ``RUN/model`` holds its count arrays."""
    import time

    from llmkit.models.zoo import build_model, save_counted
    from llmkit.tokenizer import Tokenizer
    from llmkit.training.loop import MetricsLog

    t0 = time.perf_counter()
    model = build_model(spec.model, spec.preset, vocab_size=tf.vocab_size, **spec.overrides).fit(tf.split("train"))
    seconds = time.perf_counter() - t0
    val = tf.split("val")[:max_eval_tokens]
    rec = {"step": 1, "fit_seconds": seconds, "stored_entries": model.stored_entries(), "dense_size": model.dense_size()}
    if len(val) > 1:
        nll = -float(model.log_likelihood(val).mean())
        rec.update({"loss": nll, "val_loss": nll, "val_ppl": math.exp(min(nll, 50.0)), "val_bits_per_token": nll / math.log(2)})
    log(f"fitted {spec.model} ({model.stored_entries():,} stored entries of a dense {model.dense_size():.3g}) in {seconds:.1f} s")
    metrics = MetricsLog(run / "metrics.jsonl", keep_until_step=None)
    metrics.write(rec)
    save_counted(model, run / "model", overwrite=True)
    Tokenizer.load(run / "tokenizer").save(run / "model", overwrite=True)
    return [rec]
