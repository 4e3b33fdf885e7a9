"""Our GPT against Hugging Face's GPT-2: parameter counts, and identical logits with shared weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmkit.models.attention import explicit_attention
from llmkit.models.config import GPT_PRESETS, GPTConfig, gpt_preset
from llmkit.models.gpt import GPT

TINY = gpt_preset("tiny", vocab_size=300)


def test_gpt2_124m_has_exactly_transformers_parameter_count():
    from transformers import GPT2Config, GPT2LMHeadModel

    ours = GPT(gpt_preset("gpt2-124m")).num_parameters()
    theirs = sum(p.numel() for p in GPT2LMHeadModel(GPT2Config()).parameters())
    assert ours == theirs == 124_439_808


def _copy_into_hf(model: GPT):
    """Build GPT2LMHeadModel with the same config and copy our weights in (Conv1D is transposed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    sd = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue
        transposed = any(k.endswith(f"{m}.weight") for m in ("c_attn", "c_proj", "c_fc"))
        sd[k] = v.t() if transposed else v
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all("lm_head" in m or "attn.bias" in m or "masked_bias" in m for m in missing)
    return hf.eval()


def test_logits_equal_hf_gpt2_with_the_same_weights():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    hf = _copy_into_hf(model)
    x = torch.randint(0, TINY.vocab_size, (3, 40))
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    assert ours.shape == (3, 40, TINY.vocab_size)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_course_signature_and_per_token_loss():
    torch.manual_seed(0)
    model = GPT(TINY)
    x = torch.randint(0, 300, (2, 16))
    y = torch.randint(0, 300, (2, 16))
    logits, loss = model(x, y)
    assert logits.shape == (2, 16, 300) and loss.shape == (2, 16)
    torch.testing.assert_close(loss.mean(), F.cross_entropy(logits.view(-1, 300), y.view(-1)))
    logits2, none = model(x)
    assert none is None and torch.equal(logits2, logits)
    # an untrained model is near the uniform guess: loss ~ ln(V)
    assert abs(loss.mean().item() - torch.log(torch.tensor(300.0)).item()) < 0.5


def test_explicit_and_fused_attention_agree():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 33, 16) for _ in range(3))
    y, w = explicit_attention(q, k, v)
    torch.testing.assert_close(y, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=1e-5)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 33))
    assert torch.all(w.triu(1) == 0)  # no token attends to the future


def test_model_outputs_agree_on_both_attention_paths():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    x = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        fast, _ = model(x)
        slow, _ = model(x, return_weights=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    weights = model.attention_weights(x)
    assert len(weights) == TINY.n_layer and weights[0].shape == (2, TINY.n_head, 20, 20)


def test_causality_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    x = torch.randint(0, 300, (1, 12))
    x2 = x.clone()
    x2[0, 8:] = (x2[0, 8:] + 1) % 300
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0][:, :8], model(x2)[0][:, :8])


def test_untied_head_and_no_bias_change_the_count():
    tied = GPT(TINY).num_parameters()
    untied = GPT(gpt_preset("tiny", vocab_size=300, tie_weights=False)).num_parameters()
    assert untied - tied == 300 * TINY.n_embd
    assert GPT(gpt_preset("tiny", vocab_size=300, bias=False, qkv_bias=False)).num_parameters() < tied


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="unknown GPT preset"):
        gpt_preset("gpt5")
    with pytest.raises(ValueError, match="unknown GPTConfig fields"):
        gpt_preset("tiny", n_layers=3)
    with pytest.raises(ValueError, match="context length"):
        GPT(TINY)(torch.zeros(1, TINY.context_length + 1, dtype=torch.long))
    assert set(GPT_PRESETS) >= {"tiny", "small", "gpt2-124m", "gpt2-355m"}
