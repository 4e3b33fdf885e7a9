"""Our BERT against Hugging Face's BertForMaskedLM (parameter count, identical logits with the
same weights, padding and segments), both attention paths, the MLM masking rule's statistics,
the [CLS]/[SEP] input builder, and a short MLM training run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmkit.models.bert import Bert, encode_for_bert, explicit_masked_attention, mask_tokens, mlm_mean, padding_bias
from llmkit.models.config import BERT_PRESETS, BertConfig, bert_preset

TINY = bert_preset("tiny", vocab_size=300, context_length=64)


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: threads gain nothing on their matmuls, and on a busy machine
    OpenMP's waiting threads slow them tenfold. One thread also makes the training run exact."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bert_base_has_exactly_transformers_parameter_count():
    from transformers import BertConfig as HFBertConfig
    from transformers import BertForMaskedLM

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        ours = Bert(bert_preset("bert-base")).num_parameters()
        theirs = sum(p.numel() for p in BertForMaskedLM(HFBertConfig()).parameters())  # no pooler in the MLM model
    assert ours == theirs == 109_514_298


def _copy_into_hf(model: Bert):
    """Build transformers' BertForMaskedLM with the same config and load our state dict: our
    names are HF's, so the name map is the identity (its decoder bias *is* cls.predictions.bias)."""
    from transformers import BertConfig as HFBertConfig
    from transformers import BertForMaskedLM

    c = model.config
    hf = BertForMaskedLM(
        HFBertConfig(
            vocab_size=c.vocab_size, hidden_size=c.n_embd, num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
            intermediate_size=c.inner_dim, max_position_embeddings=c.context_length, type_vocab_size=c.type_vocab_size,
            layer_norm_eps=c.layer_norm_eps, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
    )
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"cls.predictions.decoder.bias"}
    assert torch.equal(hf.cls.predictions.decoder.bias, model.cls.predictions.bias)
    return hf.eval()


def _padded_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, TINY.vocab_size, (3, 24), generator=g)
    mask = torch.ones_like(x)
    mask[1, 17:] = 0  # two rows with right padding, one full
    mask[2, 5:] = 0
    types = torch.zeros_like(x)
    types[0, 10:] = 1
    types[1, 8:17] = 1
    return x, mask, types


def test_logits_equal_hf_bert_with_the_same_weights_padding_and_segments():
    torch.manual_seed(0)
    model = Bert(TINY).eval()
    with torch.no_grad():  # non-trivial LayerNorms and head bias, so a swapped name would show
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    hf = _copy_into_hf(model)
    x, mask, types = _padded_batch()
    with torch.no_grad():
        ours, _ = model(x, attention_mask=mask, token_type_ids=types)
        theirs = hf(input_ids=x, attention_mask=mask, token_type_ids=types).logits
        theirs_eager = _copy_into_hf(model).eval()
        theirs_eager.set_attn_implementation("eager")
        eager = theirs_eager(input_ids=x, attention_mask=mask, token_type_ids=types).logits
    assert ours.shape == (3, 24, TINY.vocab_size)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)  # padded positions too
    torch.testing.assert_close(ours, eager, atol=1e-4, rtol=1e-4)


def test_course_signature_and_per_token_loss_ignores_minus_100():
    torch.manual_seed(0)
    model = Bert(TINY)
    x = torch.randint(0, 300, (2, 16))
    y = torch.full_like(x, -100)
    y[:, ::3] = x[:, ::3]
    logits, loss = model(x, y)
    assert logits.shape == (2, 16, 300) and loss.shape == (2, 16)
    assert torch.all(loss[y == -100] == 0) and torch.all(loss[y != -100] > 0)
    torch.testing.assert_close(mlm_mean(loss, y), F.cross_entropy(logits.view(-1, 300), y.view(-1)))
    logits2, none = model(x)
    assert none is None and torch.equal(logits2, logits)
    assert abs(mlm_mean(loss, y).item() - math.log(300)) < 0.5  # untrained: near the uniform guess


def test_explicit_and_fused_masked_attention_agree_and_padding_gets_zero_weight():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 19, 16) for _ in range(3))
    mask = torch.ones(2, 19, dtype=torch.long)
    mask[1, 11:] = 0
    bias = padding_bias(mask, q.dtype)
    y, w = explicit_masked_attention(q, k, v, bias)
    torch.testing.assert_close(y, F.scaled_dot_product_attention(q, k, v, attn_mask=bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y, F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bool()[:, None, None, :]), atol=1e-5, rtol=1e-5)
    assert w.shape == (2, 4, 19, 19)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 19))
    assert torch.all(w[1, :, :, 11:] == 0) and torch.all(w[1, :, :, :11] > 0)
    future = torch.ones(19, 19, dtype=torch.bool).triu(1)
    assert torch.all(w[0][:, future] > 0)  # bidirectional: every query sees the keys after it


def test_model_outputs_agree_on_both_attention_paths():
    torch.manual_seed(0)
    model = Bert(TINY).eval()
    x, mask, types = _padded_batch(1)
    with torch.no_grad():
        fast, _ = model(x, attention_mask=mask, token_type_ids=types)
        slow, _ = model(x, attention_mask=mask, token_type_ids=types, return_weights=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    weights = model.attention_weights(x, mask, types)
    assert len(weights) == TINY.n_layer and weights[0].shape == (3, TINY.n_head, 24, 24)
    assert all(torch.all(w[2, :, :, 5:] == 0) for w in weights)


def test_padding_invariance_real_tokens_ignore_appended_padding():
    torch.manual_seed(0)
    model = Bert(TINY).eval()
    x = torch.randint(0, 300, (2, 10))
    types = torch.tensor([[0] * 6 + [1] * 4, [0] * 10])
    with torch.no_grad():
        short, _ = model(x, attention_mask=torch.ones_like(x), token_type_ids=types)
        for extra in (1, 7, 30):
            xp = torch.cat([x, torch.randint(0, 300, (2, extra))], dim=1)  # padding ids don't matter
            mp = torch.cat([torch.ones_like(x), torch.zeros(2, extra, dtype=torch.long)], dim=1)
            tp = torch.cat([types, torch.zeros(2, extra, dtype=torch.long)], dim=1)
            long, _ = model(xp, attention_mask=mp, token_type_ids=tp)
            torch.testing.assert_close(long[:, :10], short, atol=1e-5, rtol=1e-5)
        # and without a mask the same padding does change them: the mask is what protects them
        unmasked, _ = model(xp, token_type_ids=tp)
        assert not torch.allclose(unmasked[:, :10], short, atol=1e-3)


def test_segments_matter_and_all_padding_row_stays_finite():
    torch.manual_seed(0)
    model = Bert(TINY).eval()
    x = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x, token_type_ids=torch.ones_like(x))
        empty, _ = model(x, attention_mask=torch.zeros_like(x))
    assert not torch.allclose(a, b)
    assert torch.isfinite(empty).all()


# -- masking ---------------------------------------------------------------------------------
V, MASK, CLS, SEP, PAD = 1000, 3, 1, 2, 0


def _corpus(B=256, T=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (B, T), generator=g)
    ids[:, 0] = CLS
    ids[:, T // 2] = SEP
    lengths = torch.randint(T // 2 + 6, T + 1, (B,), generator=g)
    ids[torch.arange(T)[None, :] >= lengths[:, None]] = PAD
    return ids


def test_mask_tokens_statistics_80_10_10_of_15_percent():
    ids = _corpus()
    special = torch.isin(ids, torch.tensor([CLS, SEP, PAD]))
    inputs, labels = mask_tokens(ids, mask_id=MASK, vocab_size=V, special_ids=[CLS, SEP, PAD], generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    n = (~special).sum().item()  # ~ 26k eligible positions: 3 sigma of 15 % is ~0.7 %
    assert abs(chosen.sum().item() / n - 0.15) < 0.01
    assert not chosen[special].any()  # CLS, SEP and padding are never chosen
    assert torch.equal(inputs[special], ids[special]) and torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # only chosen positions change
    c = chosen.sum().item()
    masked = (inputs == MASK) & chosen
    kept = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~kept
    assert abs(masked.sum().item() / c - 0.8) < 0.02
    # a random draw equal to the original id counts as kept: 0.1 * 1/996 of positions
    assert abs(kept.sum().item() / c - 0.1) < 0.015 and abs(replaced.sum().item() / c - 0.1) < 0.015
    assert not torch.isin(inputs[replaced], torch.tensor([CLS, SEP, PAD, MASK])).any()
    assert inputs[replaced].min() >= 0 and inputs[replaced].max() < V
    assert not (inputs == MASK)[~chosen].any()


def test_mask_tokens_is_seeded_and_leaves_its_input_alone():
    ids = _corpus(B=8, T=64)
    before = ids.clone()
    run = lambda seed: mask_tokens(ids, mask_id=MASK, vocab_size=V, special_ids=[CLS, SEP, PAD], generator=torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(ids, before)
    none = mask_tokens(ids, mask_id=MASK, vocab_size=V, special_ids=[PAD], prob=0.0)
    assert torch.equal(none[0], ids) and torch.all(none[1] == -100)
    with pytest.raises(TypeError):
        mask_tokens(ids.int(), mask_id=MASK, vocab_size=V)


# -- inputs from a Tokenizer -----------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_tok():
    from llmkit.tokenizer import Tokenizer

    return Tokenizer.from_pretrained("gpt2").add_special_tokens(["[CLS]", "[SEP]", "[MASK]", "[PAD]"])


def test_encode_for_bert_pairs_padding_truncation(bert_tok):
    cls, sep, mask, pad = (bert_tok.special_tokens[n] for n in ("[CLS]", "[SEP]", "[MASK]", "[PAD]"))
    a, b = "The cat sat on the mat.", "It was [MASK] happy."
    enc = encode_for_bert(bert_tok, [a, "Hi"], [b, "there"], max_length=64)
    ea, eb = bert_tok.encode(a), bert_tok.encode(b)
    assert mask not in eb  # "[MASK]" typed in the text is ordinary text
    row = [cls, *ea, sep, *eb, sep]
    assert enc["input_ids"][0].tolist() == row and enc["attention_mask"][0].sum() == len(row)
    assert enc["token_type_ids"][0].tolist() == [0] * (len(ea) + 2) + [1] * (len(eb) + 1)
    short = [cls, *bert_tok.encode("Hi"), sep, *bert_tok.encode("there"), sep]
    assert enc["input_ids"][1].tolist() == short + [pad] * (len(row) - len(short))
    assert enc["attention_mask"][1].tolist() == [1] * len(short) + [0] * (len(row) - len(short))
    assert enc["token_type_ids"][1, len(short):].eq(0).all()
    assert bert_tok.decode(enc["input_ids"][0, 1 : len(ea) + 1].tolist()) == a

    single = encode_for_bert(bert_tok, [a * 20], max_length=16, padding="max_length")
    assert single["input_ids"].shape == (1, 16) and single["input_ids"][0, 0] == cls and single["input_ids"][0, -1] == sep
    assert single["input_ids"][0, 1:-1].tolist() == bert_tok.encode(a * 20)[:14]  # the tail is cut
    pair = encode_for_bert(bert_tok, [a * 20], ["x"], max_length=16)
    assert pair["input_ids"][0].tolist()[-3:] == [sep, bert_tok.encode("x")[0], sep] and pair["input_ids"].shape == (1, 16)
    with pytest.raises(ValueError, match="no \\[CLS\\]"):
        from llmkit.tokenizer import Tokenizer

        encode_for_bert(Tokenizer.from_pretrained("gpt2"), ["x"])
    with pytest.raises(TypeError):
        encode_for_bert(bert_tok, "one string")


def test_encoded_batch_runs_through_the_model(bert_tok):
    enc = encode_for_bert(bert_tok, ["a first sentence", "b"], ["and a second", "c"])
    model = Bert(bert_preset("tiny", vocab_size=bert_tok.n_vocab)).eval()
    logits, _ = model(enc["input_ids"], attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"])
    assert logits.shape == (*enc["input_ids"].shape, bert_tok.n_vocab)


# -- training --------------------------------------------------------------------------------
def test_mlm_training_on_a_repetitive_corpus_reduces_the_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    vocab, T = 40, 16
    model = Bert(BertConfig(vocab_size=vocab, context_length=T, n_layer=2, n_head=4, n_embd=64))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    # eight "sentences" repeated over and over: a masked id is recoverable from the others
    corpus = torch.randint(4, vocab, (8, T), generator=g)
    corpus[:, 0] = 1  # [CLS]
    losses = []
    for _ in range(200):
        ids = corpus[torch.randint(0, 8, (16,), generator=g)]
        inputs, labels = mask_tokens(ids, mask_id=3, vocab_size=vocab, special_ids=[0, 1, 2], generator=g)
        _, loss = model(inputs, labels)
        loss = mlm_mean(loss, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert first > 3.0 and last < 0.3 * first, (first, last)  # ln(40) = 3.7 -> about 0.25


def test_config_errors_and_presets():
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="unknown BERT preset"):
        bert_preset("roberta")
    with pytest.raises(ValueError, match="unknown BertConfig fields"):
        bert_preset("tiny", n_layers=3)
    with pytest.raises(ValueError, match="context length"):
        Bert(TINY)(torch.zeros(1, TINY.context_length + 1, dtype=torch.long))
    assert set(BERT_PRESETS) >= {"tiny", "small", "bert-base"}
    base = bert_preset("bert-base")
    assert (base.n_layer, base.n_head, base.n_embd, base.inner_dim, base.context_length) == (12, 12, 768, 3072, 512)
    assert base == BertConfig()
