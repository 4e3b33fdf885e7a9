"""Generation: sampling rules, the KV-cached loop against a naive full-recompute reference
and against transformers' GPT-2, stop tokens, and UTF-8-safe streaming (tiny fakes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmkit.generation import (
    Runner,
    generate,
    generate_batch,
    generate_tensor,
    generate_text,
    iter_tokens,
    next_token_probs,
    sample_next,
    stream,
)
from llmkit.models.config import gpt_preset
from llmkit.models.gpt import GPT

V = 300


def _gpt(context_length: int = 128, seed: int = 0, std: float = 0.1) -> GPT:
    """A tiny GPT with seeded random weights; a wide init (std) gives varied, tie-free logits
    instead of the near-uniform ones of GPT-2's 0.02 init."""
    torch.manual_seed(seed)
    model = GPT(gpt_preset("tiny", vocab_size=V, context_length=context_length))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, std)
    return model


class ScriptModel(nn.Module):
    """A fake with the course signature whose logits put all mass on the next id of a
    script: at position t of row b it predicts ``scripts[b][t + 1]`` (the script includes
    the prompt). Counts its calls."""

    def __init__(self, scripts: list[list[int]], vocab_size: int):
        super().__init__()
        self.scripts = torch.tensor(scripts)  # (B, L)
        self.vocab_size = vocab_size
        self.calls = 0

    def forward(self, x, targets=None):
        self.calls += 1
        B, T = x.shape
        nxt = self.scripts[:B, 1:].clone()
        nxt = torch.cat([nxt, nxt[:, -1:].expand(B, max(0, T - nxt.shape[1]))], dim=1)[:, :T]  # (B, T)
        logits = torch.full((B, T, self.vocab_size), -1e4).scatter_(-1, nxt.unsqueeze(-1), 0.0)
        return logits, None


# -- sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-0.5), "temperature must be >= 0"),
        (dict(temperature=float("nan")), "temperature must be >= 0"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(top_k=0), "top_k must be an integer >= 1"),
        (dict(top_k=2.5), "top_k must be an integer >= 1"),
    ],
)
def test_invalid_sampling_arguments_raise(kwargs, match):
    logits = torch.randn(2, 10)
    with pytest.raises(ValueError, match=match):
        sample_next(logits, **kwargs)
    with pytest.raises(ValueError, match=match):
        next_token_probs(logits, **kwargs)
    with pytest.raises(ValueError, match=match):  # checked before the model ever runs
        iter_tokens(_gpt(), [1, 2], 3, **kwargs)


def test_temperature_zero_is_greedy_whatever_top_k_and_top_p():
    logits = torch.randn(64, 50)
    for kw in (dict(), dict(top_k=3), dict(top_p=0.2)):
        assert torch.equal(sample_next(logits, temperature=0, **kw), logits.argmax(-1))
    assert torch.equal(next_token_probs(logits, temperature=0).argmax(-1), logits.argmax(-1))


def test_top_k_never_picks_outside_the_top_k():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 50, generator=g)
    for k in (1, 5, 17):
        picks = sample_next(logits, temperature=2.0, top_k=k, generator=g)  # a hot temperature spreads picks
        allowed = logits.topk(k, dim=-1).indices
        assert (allowed == picks[:, None]).any(-1).all()
    assert torch.equal(sample_next(logits, top_k=1, generator=g), logits.argmax(-1))
    sample_next(logits, top_k=1000, generator=g)  # k above the vocabulary means no limit


@pytest.mark.parametrize("top_p, support", [(1e-6, {0}), (0.4, {0}), (0.75, {0, 1}), (0.85, {0, 1, 2}), (0.99, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, support):
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # ranked: id 1 (.5), 3 (.3), 2 (.15), 0 (.05)
    ranked = [1, 3, 2, 0]
    expected = {ranked[i] for i in support}
    logits = probs.log().expand(3000, 4)
    p = next_token_probs(logits, top_p=top_p)
    assert set(p[0].nonzero().flatten().tolist()) == expected
    torch.testing.assert_close(p.sum(-1), torch.ones(3000))
    picks = sample_next(logits, top_p=top_p, generator=torch.Generator().manual_seed(1))
    assert set(picks.tolist()) == expected  # 3000 draws hit every kept id, never another


def test_fast_sampler_draws_from_the_naive_distribution():
    g = torch.Generator().manual_seed(0)
    row = torch.randn(1, 40, generator=g) * 2
    kw = dict(temperature=0.7, top_k=10, top_p=0.9)
    expected = next_token_probs(row, **kw)[0]
    picks = sample_next(row.expand(40_000, 40), generator=g, **kw)
    freq = torch.bincount(picks, minlength=40).float() / picks.numel()
    assert torch.all((freq > 0) == (expected > 0))
    assert (freq - expected).abs().max() < 0.015


# -- the KV cache -------------------------------------------------------------------------


def test_forward_cached_matches_full_forward_for_chunks_on_both_attention_paths():
    model = _gpt().eval()
    x = torch.randint(0, V, (2, 30))
    with torch.no_grad():
        full, _ = model(x)
        for return_weights in (False, True):
            cache = model.new_kv_cache(2)
            parts = [model.forward_cached(x[:, a:b], cache, return_weights=return_weights) for a, b in ((0, 11), (11, 12), (12, 30))]
            torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
            assert cache.pos == 30
        with pytest.raises(ValueError, match="context length"):
            model.forward_cached(torch.zeros(1, 129, dtype=torch.long), model.new_kv_cache(1, max_len=200))


def test_cached_logits_equal_full_recompute_step_by_step_past_the_context():
    model = _gpt(context_length=24).eval()
    prompt = torch.randint(0, V, (3, 10))
    fed = torch.randint(0, V, (3, 30))  # teacher-forced: both runners see the same tokens
    cached, full = Runner(model, max_len=40), Runner(model, use_cache=False)
    a, b = cached.prefill(prompt), full.prefill(prompt)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    used_cache = []
    for t in range(fed.shape[1]):
        used_cache.append(cached.cached)
        a, b = cached.feed(fed[:, t]), full.feed(fed[:, t])
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # 10 + 14 = 24 positions fit the context; then the window slides and the cache is dropped
    assert used_cache == [True] * 14 + [False] * 16 and cached.cache is None


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=0.9, top_k=40, top_p=0.95, seed=7), dict(temperature=1.3, seed=3)])
def test_cache_and_no_cache_give_the_same_tokens_beyond_the_context(sampling):
    model = _gpt(context_length=32)
    prompts = torch.randint(0, V, (3, 12))
    out = generate_tensor(model, prompts, 60, use_cache=True, **sampling)  # 72 tokens: window slides
    ref = generate_tensor(model, prompts, 60, use_cache=False, **sampling)
    assert out.shape == (3, 72) and torch.equal(out, ref)
    assert len(set(out[0, 12:].tolist())) > 5  # not a degenerate repetition


def _naive_generate(model, idx, n, context_length, **sampling):
    """The reference: re-run the whole (windowed) sequence for every token."""
    g = torch.Generator().manual_seed(sampling.pop("seed")) if "seed" in sampling else None
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(idx[:, -context_length:])
            idx = torch.cat([idx, sample_next(logits[:, -1], generator=g, **sampling)[:, None]], dim=1)
    return idx


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=0.8, top_p=0.9, seed=11)])
def test_engine_matches_a_naive_loop(sampling):
    model = _gpt(context_length=20)
    prompts = torch.randint(0, V, (2, 8))
    assert torch.equal(generate_tensor(model, prompts, 30, **sampling), _naive_generate(model, prompts, 30, 20, **dict(sampling)))


def _hf_copy(model: GPT):
    """GPT2LMHeadModel with our config and weights (Conv1D weights are transposed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    cfg = GPT2Config(vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = GPT2LMHeadModel(cfg)
    sd = {k: v.t() if any(k.endswith(f"{m}.weight") for m in ("c_attn", "c_proj", "c_fc")) else v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    hf.load_state_dict(sd, strict=False)
    hf.generation_config.eos_token_id = None  # never stop early: compare all tokens
    return hf.eval()


def test_greedy_equals_transformers_generate_with_the_same_weights():
    model = _gpt()
    hf = _hf_copy(model)
    x = torch.randint(1, V, (2, 9))
    theirs = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=40)
    ours = generate_tensor(model, x, 40, temperature=0)
    assert torch.equal(ours, theirs)
    assert generate(model, x[1], 40, temperature=0) == theirs[1, 9:].tolist()


# -- the loop's contract -------------------------------------------------------------------


def test_seed_reproduces_and_generator_is_honoured():
    model = _gpt()
    p = [5, 6, 7]
    a, b = generate(model, p, 20, seed=1), generate(model, p, 20, seed=1)
    assert a == b and len(a) == 20 and a != generate(model, p, 20, seed=2)
    assert generate(model, p, 20, generator=torch.Generator().manual_seed(1)) == a
    with pytest.raises(ValueError, match="seed or generator"):
        generate(model, p, 2, seed=1, generator=torch.Generator())


def test_mode_is_restored_and_grad_mode_does_not_leak_between_steps():
    model = _gpt().train()
    tokens = iter_tokens(model, [1, 2, 3], 5, seed=0)
    next(tokens)
    assert not model.training and torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    tokens.close()
    assert model.training
    generate(model, [1, 2], 3, temperature=0)
    assert model.training


def test_stop_tokens_end_each_row_and_the_loop():
    scripts = [[1, 2, 10, 11, 99, 12, 13, 14, 15], [3, 4, 20, 21, 22, 23, 99, 24, 25]]
    fake = ScriptModel(scripts, vocab_size=100)
    out = generate_batch(fake, [s[:2] for s in scripts], 50, stop_tokens={99})
    assert out == [[10, 11], [20, 21, 22, 23]]
    assert fake.calls == 5  # prefill + 4 feeds: the loop ended when the last row stopped
    assert generate_batch(fake, [s[:2] for s in scripts], 50, stop_tokens=[99], include_stop=True) == [[10, 11, 99], [20, 21, 22, 23, 99]]
    assert generate_batch(fake, [s[:2] for s in scripts], 3) == [[10, 11, 99], [20, 21, 22]]  # max_new_tokens
    assert generate_batch(fake, [s[:2] for s in scripts], 0) == [[], []]


def test_baseline_models_use_the_no_cache_path():
    class Bigram(nn.Module):  # course signature, no cache, no context limit
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 50)

        def forward(self, x, targets=None):
            return self.emb(x), None

    torch.manual_seed(0)
    m = Bigram()
    out = generate(m, [1, 2], 10, temperature=0)
    ids = [1, 2]
    for _ in range(10):
        ids.append(int(m.emb.weight[ids[-1]].argmax()))
    assert out == ids[2:]
    with pytest.raises(ValueError, match="no KV cache"):
        generate(m, [1], 2, use_cache=True)
    with pytest.raises(ValueError, match="equal length"):
        generate_batch(_gpt(), [[1, 2], [3]], 2)


# -- text ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    from llmkit.tokenizer.tokenizer import Tokenizer

    return Tokenizer.from_pretrained("gpt2")


def _splits_a_character(tok, ids) -> bool:
    def ok(b):
        try:
            b.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    return any(not ok(tok.decode_bytes([i])) for i in ids)


def test_stream_never_splits_a_character(gpt2_tokenizer):
    tok = gpt2_tokenizer
    prompt = tok.encode("Say:")
    text = " héllo 🙂🎉 世界 naïve — ok"
    ids = tok.encode(text)
    assert _splits_a_character(tok, ids)  # the test means something: some tokens are partial UTF-8
    fake = ScriptModel([prompt + ids + [tok.eot_token]], vocab_size=tok.n_vocab)
    pieces = list(stream(fake, tok, "Say:", 100, temperature=0.8, seed=0))
    assert "".join(pieces) == text == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces) and len(pieces) > 5
    assert generate_text(fake, tok, "Say:", 100) == text  # stops at <|endoftext|> by default
    assert generate_text(fake, tok, "Say:", 100, stop_tokens=()).startswith(text + "<|endoftext|>")
    assert "".join(stream(fake, tok, "Say:", 100, include_stop=True)) == text + "<|endoftext|>"


def test_stream_cut_inside_a_character_matches_decode(gpt2_tokenizer):
    tok = gpt2_tokenizer
    prompt = tok.encode("x")
    ids = tok.encode("a🙂b")
    cut = next(n for n in range(1, len(ids)) if _splits_a_character(tok, ids[n - 1 : n]))  # ends mid-emoji
    fake = ScriptModel([prompt + ids], vocab_size=tok.n_vocab)
    pieces = list(stream(fake, tok, "x", cut, temperature=0))
    assert "".join(pieces) == tok.decode(ids[:cut]) and pieces[-1].endswith("\ufffd")


def test_text_api_on_a_real_tiny_gpt(gpt2_tokenizer):
    tok = gpt2_tokenizer
    torch.manual_seed(0)
    model = GPT(gpt_preset("tiny", vocab_size=tok.n_vocab))
    ids = generate(model, tok.encode("Hello"), 12, seed=0, stop_tokens={tok.eot_token})
    pieces = list(stream(model, tok, "Hello", 12, seed=0))
    assert "".join(pieces) == tok.decode(ids) == generate_text(model, tok, "Hello", 12, seed=0)
    assert isinstance(generate_text(model, tok, "", 3, seed=0), str)  # empty prompt starts at <|endoftext|>
