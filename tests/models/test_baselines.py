"""The baselines: n-gram LMs against hand counts and plain dict-based references, NPLM and
LSTM against the course's signature, causality, parameter formulas and a learning check."""

from __future__ import annotations

import inspect
import math
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmkit.models.baselines import LSTMLM, NPLM, NGramLM
from llmkit.models.config import (
    LSTM_PRESETS,
    NGRAM_PRESETS,
    NPLM_PRESETS,
    LSTMConfig,
    NGramConfig,
    NPLMConfig,
    lstm_preset,
    ngram_preset,
    nplm_preset,
)

V = 12


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread is faster and steadier on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _corpus(n_tokens: int = 400, seed: int = 0) -> list[int]:
    """A skewed random corpus over V ids that leaves some ids and many pairs unseen."""
    rng = np.random.default_rng(seed)
    p = np.array([8, 6, 5, 4, 3, 3, 2, 2, 1, 1, 0, 0], dtype=float)
    return rng.choice(V, size=n_tokens, p=p / p.sum()).tolist()


def _ngram(corpus, **kw) -> NGramLM:
    return NGramLM(NGramConfig(vocab_size=kw.pop("vocab_size", V), **kw)).fit(corpus)


def _all_contexts(n: int) -> list[tuple[int, ...]]:
    """Every full context of n-1 ids, plus the shorter ones a sequence starts with."""
    out = [()]
    for length in range(1, n):
        out += [tuple(int(t) for t in c) for c in np.ndindex(*(V,) * length)]
    return out


# -- plain references: the textbook formulas with Python dicts ---------------------------------
class _Reference:
    """Interpolated Kneser-Ney or absolute-discount backoff, written as the formulas read."""

    def __init__(self, tokens: list[int], n: int, D: float, kind: str):
        self.n, self.D, self.kind = n, D, kind
        grams = [Counter(tuple(tokens[i : i + m]) for i in range(len(tokens) - m + 1)) for m in range(n + 2)]
        self.followers: dict[tuple, dict[int, int]] = {}  # context -> {token: count used at its order}
        for m in range(1, n + 1):
            for g in grams[m]:
                if kind == "kneser-ney" and m < n:  # continuation count: distinct left neighbours
                    c = sum(1 for big in grams[m + 1] if big[1:] == g)
                else:
                    c = grams[m][g]
                if c:
                    self.followers.setdefault(g[:-1], {})[g[-1]] = c

    @lru_cache(maxsize=None)
    def p(self, w: int, h: tuple) -> float:
        lower = 1.0 / V if len(h) == 0 else self.p(w, h[1:])
        f = self.followers.get(h, {})
        total = sum(f.values())
        if total == 0:
            return lower
        if self.kind == "kneser-ney":
            return max(f.get(w, 0) - self.D, 0) / total + self.D * len(f) / total * lower
        if w in f:
            return (f[w] - self.D) / total
        alpha = self.D * len(f) / total
        lower_seen = sum(1.0 / V if len(h) == 0 else self.p(u, h[1:]) for u in f)
        return alpha * lower / (1 - lower_seen)


# -- n-gram ------------------------------------------------------------------------------------
def test_bigram_mle_and_laplace_match_hand_counts():
    corpus = [0, 1, 2, 0, 1, 3, 0, 1, 2]  # c(0 1)=3, c(1 2)=2, c(1 3)=1, c(2 0)=1, c(3 0)=1; V=5
    mle = _ngram(corpus, vocab_size=5, smoothing="add-k", k=0.0)
    p = mle.logprobs((1,)).exp()
    assert p.tolist() == pytest.approx([0, 0, 2 / 3, 1 / 3, 0])
    assert mle.logprobs((0,)).exp().tolist() == pytest.approx([0, 1, 0, 0, 0])
    assert mle.logprobs((2,)).exp().tolist() == pytest.approx([1, 0, 0, 0, 0])  # the final 2 has no follower
    assert mle.logprobs((4,)).exp().tolist() == pytest.approx([0.2] * 5)  # unseen context: uniform

    lap = _ngram(corpus, vocab_size=5, smoothing="add-k", k=1.0)  # (c + 1) / (c(h) + V)
    assert lap.logprobs((1,)).exp().tolist() == pytest.approx([1 / 8, 1 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert lap.logprobs((0,)).exp().tolist() == pytest.approx([1 / 8, 4 / 8, 1 / 8, 1 / 8, 1 / 8])
    # The first position has no context: the add-1 unigram, (c(w) + 1) / (9 + 5).
    assert lap.logprobs(()).exp().tolist() == pytest.approx([4 / 14, 4 / 14, 3 / 14, 2 / 14, 1 / 14])
    # Through the model signature: logits are log-probs, per-token loss is -log P.
    x, y = torch.tensor([[0, 1, 4]]), torch.tensor([[1, 2, 0]])
    _, loss = lap(x, y)
    assert loss[0].tolist() == pytest.approx([-math.log(4 / 8), -math.log(3 / 8), -math.log(1 / 5)])


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("kind", ["kneser-ney", "backoff"])
def test_discounted_models_match_the_plain_reference(n, kind):
    corpus = _corpus()
    model = _ngram(corpus, n=n, smoothing=kind, discount=0.75)
    ref = _Reference(corpus, n, 0.75, kind)
    for h in _all_contexts(n):
        expected = [ref.p(w, h) for w in range(V)]
        assert model.logprobs(h).exp().tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12), h


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("cfg", [dict(smoothing="kneser-ney"), dict(smoothing="kneser-ney", modified=True), dict(smoothing="backoff"), dict(smoothing="add-k", k=0.5)])
def test_distributions_sum_to_one_for_seen_and_unseen_contexts(n, cfg):
    corpus = _corpus(2000)
    model = _ngram(corpus, n=n, **cfg)
    seen = {tuple(corpus[i : i + n - 1]) for i in range(len(corpus) - n + 1)}
    contexts = _all_contexts(n)
    assert any(h not in seen for h in contexts if len(h) == n - 1) or n == 1
    for h in contexts:
        p = model.logprobs(h).exp()
        assert p.dtype == torch.float64 and float(p.sum()) == pytest.approx(1.0, abs=1e-12), h
        assert bool((p > 0).all()), h  # smoothing leaves no zero


def test_modified_kneser_ney_estimates_discounts_per_count():
    corpus = _corpus(5000)
    model = _ngram(corpus, n=3, smoothing="kneser-ney", modified=True)
    top = Counter(Counter(tuple(corpus[i : i + 3]) for i in range(len(corpus) - 2)).values())
    Y = top[1] / (top[1] + 2 * top[2])  # Chen & Goodman (1998), from the trigram counts of counts
    expected = [0, 1 - 2 * Y * top[2] / top[1], 2 - 3 * Y * top[3] / top[2], 3 - 4 * Y * top[4] / top[3]]
    assert model.orders[2].discounts.tolist() == pytest.approx(expected)
    assert 0 < expected[1] < 1 and 0 < expected[2] < 2 and 0 < expected[3] < 3 and len(set(expected)) == 4
    # With V = 12 the lower orders' continuation counts are all large (no count of 1):
    # degenerate statistics fall back to the plain ``discount``.
    for order in model.orders[:2]:
        assert (np.bincount(order.counts, minlength=5)[1:5] == 0).any()
        assert (order.discounts == [0, 0.75, 0.75, 0.75]).all()
    assert (_ngram(corpus, n=3).orders[2].discounts == [0, 0.75, 0.75, 0.75]).all()  # plain: one D


@pytest.mark.parametrize("kind", ["kneser-ney", "backoff", "add-k"])
def test_ngram_signature_dense_and_sparse_paths_agree(kind):
    corpus = _corpus(1000)
    model = _ngram(corpus, n=3, smoothing=kind)
    x = torch.tensor([corpus[:20], corpus[500:520]])
    y = torch.tensor([corpus[1:21], corpus[501:521]])
    logits, loss = model(x, y)
    assert logits.shape == (2, 20, V) and loss.shape == (2, 20)
    assert model(x)[1] is None
    assert torch.allclose(loss, F.cross_entropy(logits.view(-1, V), y.view(-1), reduction="none").view(2, 20), atol=1e-5)
    assert torch.allclose(loss, -logits.gather(-1, y[..., None])[..., 0])  # logits are log-probs
    assert torch.allclose(logits[0, 5].double(), model.logprobs(corpus[4:6]), atol=1e-6)
    ll = model.log_likelihood(corpus[:21])  # the sparse path, no V-wide rows
    assert torch.allclose(-ll.float(), loss[0], atol=1e-5)
    assert model.perplexity(corpus[:21]) == pytest.approx(math.exp(float(loss[0].double().mean())), rel=1e-5)
    assert model.num_parameters() == model.stored_entries() and not list(model.parameters())


def test_dense_and_stored_sizes():
    corpus = [0, 1, 2, 0, 1, 3, 0, 1, 2]
    model = _ngram(corpus, vocab_size=5, n=2)
    assert model.dense_size() == 5**2
    assert model.stored_entries() == 4 + 5  # distinct unigrams {0,1,2,3} + distinct bigrams
    tri = _ngram(corpus, vocab_size=50257, n=3)
    assert tri.dense_size() == 50257**3  # V^(n-1) contexts x V tokens: the "very large matrix"
    assert tri.stored_entries() == 4 + 5 + 6 == tri.num_parameters()  # + 012 120 201 013 130 301
    assert "stored=15" in repr(tri) and "dense=1.27e+14" in repr(tri)


def test_kneser_ney_beats_laplace_on_held_out_python_source():
    import argparse

    from llmkit.tokenizer import Tokenizer

    ids = Tokenizer.from_pretrained("gpt2").encode(inspect.getsource(argparse))
    cut = int(0.9 * len(ids))
    train, test = ids[:cut], ids[cut:]
    ppl = {}
    for name, cfg in {
        "add-1": dict(n=2, smoothing="add-k", k=1.0),
        "backoff": dict(n=2, smoothing="backoff"),
        "kn2": dict(n=2),
        "kn3": dict(n=3),
        "mkn3": dict(n=3, modified=True),
    }.items():
        ppl[name] = _ngram(train, vocab_size=50257, **cfg).perplexity(test)
    assert ppl["kn2"] < ppl["add-1"] / 10  # add-1 spreads most mass over 50k unseen tokens
    assert ppl["backoff"] < ppl["add-1"] / 10
    assert ppl["kn3"] < ppl["kn2"] and ppl["mkn3"] < ppl["kn2"]


def test_ngram_sampling_follows_the_chain_and_is_seeded():
    cycle = [0, 1, 2, 3] * 10
    mle = _ngram(cycle, vocab_size=5, smoothing="add-k", k=0.0)
    assert mle.sample([0], 6, temperature=0).tolist() == [1, 2, 3, 0, 1, 2]
    assert mle.sample([2], 5, torch.Generator().manual_seed(0)).tolist() == [3, 0, 1, 2, 3]  # no other choice
    kn = _ngram(_corpus(), n=3)
    a = kn.sample([1, 2], 30, torch.Generator().manual_seed(7))
    b = kn.sample([1, 2], 30, torch.Generator().manual_seed(7))
    assert a.dtype == torch.long and a.shape == (30,) and a.equal(b) and int(a.max()) < V


def test_ngram_input_errors():
    with pytest.raises(RuntimeError, match="fit"):
        NGramLM(NGramConfig(vocab_size=V)).logprobs(())
    with pytest.raises(ValueError, match="token ids"):
        NGramLM(NGramConfig(vocab_size=V)).fit([0, V])
    with pytest.raises(ValueError, match="smoothing"):
        NGramConfig(smoothing="stupid")


# -- NPLM and LSTM -----------------------------------------------------------------------------
def _nplm(**kw) -> NPLM:
    torch.manual_seed(0)
    return NPLM(NPLMConfig(**{"vocab_size": 20, "context": 3, "n_embd": 8, "n_hidden": 16, **kw})).eval()


def _lstm(**kw) -> LSTMLM:
    torch.manual_seed(0)
    return LSTMLM(LSTMConfig(**{"vocab_size": 20, "n_embd": 16, "n_hidden": 16, "n_layer": 2, **kw})).eval()


@pytest.mark.parametrize("make", [_nplm, _lstm])
def test_neural_signature_and_per_token_loss(make):
    model = make()
    x, y = torch.randint(0, 20, (3, 9)), torch.randint(0, 20, (3, 9))
    logits, loss = model(x, y)
    assert logits.shape == (3, 9, 20) and loss.shape == (3, 9)
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 20), y.reshape(-1), reduction="none").view(3, 9))
    again, none = model(x)
    assert none is None and torch.equal(again, logits)


@pytest.mark.parametrize("make", [_nplm, _lstm])
def test_neural_models_are_causal(make):
    model = make()
    x = torch.randint(0, 20, (2, 12))
    logits, _ = model(x)
    for t in range(11):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randint(0, 20, (2, 11 - t))
        assert torch.allclose(model(x2)[0][:, : t + 1], logits[:, : t + 1]), t


def test_nplm_sees_exactly_its_window():
    model = _nplm(context=3)
    x = torch.randint(0, 20, (1, 10))
    logits, _ = model(x)
    x2 = x.clone()
    x2[0, :4] = (x2[0, :4] + 1) % 20  # only positions 0..3 change
    changed = (model(x2)[0] - logits).abs().amax(-1)[0] > 0
    assert changed.tolist() == [True] * 6 + [False] * 4  # logits at t use x[t-2 .. t]
    assert model.windows(torch.tensor([[5, 6]])).tolist() == [[[20, 20, 5], [20, 5, 6]]]  # pad id = V


@pytest.mark.parametrize("direct", [True, False])
def test_nplm_parameter_count_formula(direct):
    V, k, m, h = 20, 3, 8, 16
    # C (V+1 rows incl. padding), H and d, U and b, and W when direct (Bengio et al. 2003, sec. 2)
    expected = (V + 1) * m + (k * m * h + h) + (h * V + V) + (V * k * m if direct else 0)
    assert _nplm(direct=direct).num_parameters() == expected


@pytest.mark.parametrize("tie", [True, False])
def test_lstm_parameter_count_formula(tie):
    V, E, H, L = 20, 16, 16, 2
    lstm = sum(4 * H * ((E if layer == 0 else H) + H) + 8 * H for layer in range(L))  # W_ih, W_hh, b_ih, b_hh
    expected = V * E + lstm + (0 if tie else H * V) + V
    assert _lstm(tie_weights=tie).num_parameters() == expected


def test_lstm_state_passing_matches_one_pass_and_seeded_sampling():
    model = _lstm()
    x = torch.randint(0, 20, (2, 10))
    full, _ = model(x)
    a, state = model.forward_with_state(x[:, :6])
    b, _ = model.forward_with_state(x[:, 6:], state)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-6)
    s1 = model.sample([1, 2, 3], 12, torch.Generator().manual_seed(3))
    s2 = model.sample([1, 2, 3], 12, torch.Generator().manual_seed(3))
    assert s1.equal(s2) and s1.shape == (12,)
    assert _nplm().sample([4], 5, temperature=0).shape == (5,)


@pytest.mark.parametrize("make", [_nplm, _lstm])
def test_neural_models_learn_a_repetitive_sequence(make):
    model = make().train()
    seq = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6] * 9)  # each id is predictable from the previous two
    x, y = seq[None, :-1], seq[None, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    with torch.no_grad():
        final = float(model.eval()(x, y)[1].mean())
    assert final < 0.1 * math.log(20)


# -- configs and presets ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "presets", "cls"),
    [(ngram_preset, NGRAM_PRESETS, NGramConfig), (nplm_preset, NPLM_PRESETS, NPLMConfig), (lstm_preset, LSTM_PRESETS, LSTMConfig)],
)
def test_presets_are_data_with_overrides(make, presets, cls):
    assert {"tiny", "small"} <= set(presets)
    for name in presets:
        cfg = make(name, vocab_size=300)
        assert isinstance(cfg, cls) and cfg.vocab_size == 300
    with pytest.raises(ValueError, match="unknown"):
        make("no-such-preset")
    with pytest.raises(ValueError, match="fields"):
        make("tiny", no_such_field=1)


def test_config_validation():
    with pytest.raises(ValueError, match="tie_weights"):
        LSTMConfig(n_embd=32, n_hidden=64, tie_weights=True)
    LSTMConfig(n_embd=32, n_hidden=64, tie_weights=False)
    with pytest.raises(ValueError, match="discount"):
        NGramConfig(discount=1.0)
    with pytest.raises(ValueError):
        NPLMConfig(context=0)
