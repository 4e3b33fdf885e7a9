"""``llmkit speedrun``: the whole course end to end on the embedded default data.

Each stage is a function ``(ctx) -> dict`` of results. A finished stage writes
``stages/<name>.json`` (atomically) with its results and the settings it ran with; a rerun
with the same settings skips it, so an interrupted speedrun resumes where it stopped. After
every stage ``report.md`` is rewritten from the finished stages' results. Later course
stages (pre-training, fine-tuning, serving, RAG, agents) add themselves to ``STAGES``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmkit._io import atomic_write_text


@dataclass(frozen=True)
class SpeedrunConfig:
    """Settings of one speedrun. ``quick`` shrinks every stage to a ~2-minute run."""

    out_dir: Path = Path("runs/speedrun")
    quick: bool = False
    corpus: str = "pydocs"
    vocab_size: int = 8192
    pattern: str = "gpt4"
    quick_corpus_bytes: int = 600_000
    quick_vocab_size: int = 1024
    pretrain_steps: int = 500
    quick_pretrain_steps: int = 40
    compare_budget: int = 300_000
    quick_compare_budget: int = 6_000
    classify_per_class: int = 2000
    quick_classify_per_class: int = 150
    classify_steps: int = 300
    classify_hf_steps: int = 150
    quick_classify_steps: int = 40
    agent_steps: int = 1500
    quick_agent_steps: int = 40

    @property
    def effective_vocab_size(self) -> int:
        return self.quick_vocab_size if self.quick else self.vocab_size


@dataclass
class Context:
    """What stages share: the config, a logger, a progress factory and earlier results."""

    config: SpeedrunConfig
    log: Callable[[str], None] = print
    progress: Callable[[str, int], tuple] | None = None
    results: dict[str, dict] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.config.out_dir


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    run: Callable[[Context], dict]
    report: Callable[[dict], str]
    settings: Callable[[SpeedrunConfig], dict]
    outputs: tuple[str, ...] = ()
    """Files (relative to the run directory) the stage makes; a stage whose outputs are gone is redone."""


def corpus_of(ctx: Context):
    from llmkit.data.corpora import load_corpus

    docs = load_corpus(ctx.config.corpus)
    return docs.head(ctx.config.quick_corpus_bytes) if ctx.config.quick else docs


def _split(docs) -> tuple[list[str], list[str]]:
    """Train on nine documents in ten; every tenth is held out for measuring (the same rule
    as the token files' validation split)."""
    from llmkit.data.tokens import split_documents

    texts = docs.texts()
    is_val = split_documents(len(texts), 0.1)
    held = [t for t, v in zip(texts, is_val) if v]
    return [t for t, v in zip(texts, is_val) if not v], held or texts[-1:]


# -- stage: corpus -------------------------------------------------------------------
def run_corpus(ctx: Context) -> dict:
    docs = corpus_of(ctx)
    words = sum(len(t.split()) for t in docs.texts())
    return {"name": docs.name, "documents": len(docs), "bytes": docs.nbytes, "words": words, "first_ids": [d.id for d in docs.documents[:5]]}


def report_corpus(r: dict) -> str:
    return (
        f"Corpus `{r['name']}`: {r['documents']:,} documents, {r['bytes'] / 1e6:.2f} MB, {r['words']:,} words "
        f"(first documents: {', '.join('`' + i + '`' for i in r['first_ids'])})."
    )


# -- stage: tokenizer ----------------------------------------------------------------
def run_tokenizer(ctx: Context) -> dict:
    from llmkit.tokenizer import Tokenizer

    docs = corpus_of(ctx)
    train, _ = _split(docs)
    vocab = ctx.config.effective_vocab_size
    t0 = time.perf_counter()
    if ctx.progress:
        bar, update = ctx.progress("merging", vocab - 257)
        with bar:
            tok = Tokenizer.train(train, vocab, pattern=ctx.config.pattern, progress=update)
    else:
        tok = Tokenizer.train(train, vocab, pattern=ctx.config.pattern)
    seconds = time.perf_counter() - t0
    tok.save(ctx.out / "tokenizer", overwrite=True)
    lengths = [len(t) for t, r in sorted(tok.ranks.items(), key=lambda kv: kv[1]) if r >= 256]
    from llmkit import viz

    viz.token_length_by_rank(ctx.out / "token_length_by_rank.png", lengths, title=f"BPE merges on {docs.name}")
    longest = sorted(tok.ranks, key=len, reverse=True)[:8]
    sample = "hello world"
    return {
        "n_vocab": tok.n_vocab,
        "pattern": ctx.config.pattern,
        "seconds": seconds,
        "dir": str(ctx.out / "tokenizer"),
        "longest_tokens": [t.decode("utf-8", "replace") for t in longest],
        "sample": sample,
        "sample_pieces": [tok.decode([i]) for i in tok.encode(sample)],
    }


def report_tokenizer(r: dict) -> str:
    return (
        f"Trained a {r['n_vocab']:,}-token byte-level BPE (`{r['pattern']}` split pattern) in {r['seconds']:.1f} s, "
        f"saved to `{r['dir']}` (tiktoken + HF files). `{r['sample']!r}` -> {r['sample_pieces']}. "
        f"Longest tokens: {', '.join(repr(t) for t in r['longest_tokens'][:5])}.\n\n"
        "![token length by merge rank](token_length_by_rank.png)"
    )


# -- stage: tokenizer stats ----------------------------------------------------------
def run_tokenizer_stats(ctx: Context) -> dict:
    from llmkit import viz
    from llmkit.tokenizer import Tokenizer
    from llmkit.tokenizer.stats import COMPARE_WITH, compare

    docs = corpus_of(ctx)
    _, held = _split(docs)
    ours = Tokenizer.load(ctx.out / "tokenizer")
    ours.name = f"ours ({ours.n_vocab})"
    rows = [r.as_dict() for r in compare([ours, *COMPARE_WITH], held)]
    title = f"compression on held-out {docs.name} documents"
    viz.bar_chart(ctx.out / "bytes_per_token.png", [r["tokenizer"] for r in rows], [r["bytes_per_token"] for r in rows], title=title, ylabel="bytes per token")
    return {"rows": rows, "corpus": docs.name, "held_out_documents": len(held)}


def report_tokenizer_stats(r: dict) -> str:
    lines = [
        f"Measured on the {r['held_out_documents']} held-out documents of `{r['corpus']}` (every tenth; "
        "our tokenizer never saw them). More bytes per token means shorter sequences for the model.",
        "",
        "| tokenizer | vocab | tokens | bytes/token | tokens/word |", "|---|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['tokenizer']} | {row['n_vocab']:,} | {row['n_tokens']:,} | {row['bytes_per_token']:.3f} | {row['tokens_per_word']:.3f} |")
    return "\n".join(lines) + "\n\n![bytes per token](bytes_per_token.png)"


def _tok_settings(c: SpeedrunConfig) -> dict:
    return {"quick": c.quick, "corpus": c.corpus, "vocab_size": c.effective_vocab_size, "pattern": c.pattern}


def _lm_stages() -> list[Stage]:
    from llmkit import speedrun_finetune as ft
    from llmkit import speedrun_hf as hf
    from llmkit import speedrun_lm as lm
    from llmkit import speedrun_agents as ag
    from llmkit import speedrun_rag as rag

    def pre(c: SpeedrunConfig) -> dict:
        return {**_tok_settings(c), "steps": c.quick_pretrain_steps if c.quick else c.pretrain_steps}

    def cmp(c: SpeedrunConfig) -> dict:
        return {**_tok_settings(c), "budget": c.quick_compare_budget if c.quick else c.compare_budget}

    def cls(c: SpeedrunConfig) -> dict:
        from llmkit.speedrun_finetune import classify_settings

        return {**pre(c), "classify": classify_settings(c)}

    return [
        Stage("pretrain", "4. GPT pre-training", lm.run_pretrain, lm.report_pretrain, pre, ("pretrain/model/model.safetensors", "pretrain/loss.png")),
        Stage("samples", "5. Samples from the pre-trained GPT", lm.run_samples, lm.report_samples, pre),
        Stage("attention", "6. Attention inside the GPT", lm.run_attention, lm.report_attention, pre, ("attention.png",)),
        Stage("compare", "7. n-gram vs NPLM vs LSTM vs GPT on the same tokens", lm.run_compare, lm.report_compare, cmp, ("compare/compare.png",)),
        Stage("classify", "8. Sentiment classification: full fine-tuning vs LoRA, and MiniLM + PEFT LoRA", ft.run_classify, ft.report_classify, cls,
              ("classify/full/confusion.png", "classify/lora/confusion.png", "classify/minilm-lora/confusion.png")),
        Stage("hf", "9. Hugging Face: export, pipeline, memory", hf.run_hf, hf.report_hf, pre, ("hf/gpt/model.safetensors",)),
        Stage("rag", "10. Retrieval-augmented answers over pydocs", rag.run_rag, rag.report_rag, lambda c: {"quick": c.quick, **rag.rag_settings(c)},
              ("rag/index/meta.json",)),
        Stage("agents", "11. A tool-using model: calculator and rag_search", ag.run_agents, ag.report_agents,
              lambda c: {**pre(c), "rag": rag.rag_settings(c), "agents": ag.agent_settings(c)}, ("agent/model/model.safetensors",)),
    ]


STAGES: list[Stage] = [
    Stage("corpus", "1. Corpus", run_corpus, report_corpus, lambda c: {"quick": c.quick, "corpus": c.corpus}),
    Stage("tokenizer", "2. Tokenizer training", run_tokenizer, report_tokenizer, _tok_settings, ("tokenizer/tokenizer.tiktoken", "token_length_by_rank.png")),
    Stage("tokenizer_stats", "3. Tokenizer compression vs gpt2 / cl100k_base / o200k_base", run_tokenizer_stats, report_tokenizer_stats, _tok_settings, ("bytes_per_token.png",)),
    *_lm_stages(),
]


def _stage_file(ctx: Context, stage: Stage) -> Path:
    return ctx.out / "stages" / f"{stage.name}.json"


def _load_done(ctx: Context, stage: Stage) -> dict | None:
    p = _stage_file(ctx, stage)
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if rec.get("settings") != stage.settings(ctx.config):
        return None
    return rec if all((ctx.out / o).exists() for o in stage.outputs) else None


def write_report(ctx: Context) -> Path:
    mode = "quick" if ctx.config.quick else "full"
    parts = [f"# llmkit speedrun ({mode})\n"]
    for stage in STAGES:
        if stage.name in ctx.results:
            r = ctx.results[stage.name]
            parts.append(f"## {stage.title}\n\n{stage.report(r['results'])}\n\n_{r['seconds']:.1f} s_\n")
    path = ctx.out / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path


def run_speedrun(config: SpeedrunConfig, *, log: Callable[[str], None] = print, progress=None, restart: bool = False, only: list[str] | None = None) -> Path:
    """Run (or resume) every stage and return the path of ``report.md``."""
    from llmkit.tokenizer.tokenizer import merges_for

    merges_for(config.effective_vocab_size, ["<|endoftext|>"])  # a vocabulary too small fails before any work
    names = [s.name for s in STAGES]
    for n in only or []:
        if n not in names:
            raise ValueError(f"unknown stage {n!r}; stages are {', '.join(names)}")
    ctx = Context(config, log=log, progress=progress)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        done = None if restart else _load_done(ctx, stage)
        if done is not None:
            log(f"[skip] {stage.title} (done in an earlier run)")
            ctx.results[stage.name] = done
            continue
        if only and stage.name not in only:
            continue
        log(f"[run ] {stage.title}")
        t0 = time.perf_counter()
        results = stage.run(ctx)
        rec = {"settings": stage.settings(config), "results": results, "seconds": time.perf_counter() - t0}
        atomic_write_text(_stage_file(ctx, stage), json.dumps(rec, indent=2, ensure_ascii=False))
        ctx.results[stage.name] = rec
        log(f"[done] {stage.title} in {rec['seconds']:.1f} s")
        write_report(ctx)
    return write_report(ctx)


def config_dict(c: SpeedrunConfig) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(c).items()}
