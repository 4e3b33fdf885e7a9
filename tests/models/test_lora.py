"""LoRA from scratch: the course's parameter counts, merge/unmerge, and PEFT interchange both ways."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from llmkit.models.config import gpt_preset
from llmkit.models.gpt import GPT, with_qkv_layout
from llmkit.models.lora import (
    LoRALinear,
    count_parameters,
    freeze,
    lora_modules,
    mark_trainable,
    merge_lora,
    remove_lora,
    replace_linear_with_lora,
    unmerge_lora,
)
from llmkit.models.lora_files import load_adapter, save_adapter
from llmkit.models.zoo import load_model, save_model


def _randomise_lora(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * 0.05)


def test_course_parameter_counts_gpt2_small_with_a_two_class_head():
    # GPT-2 small with qkv bias and an untied output head; the head replaced by Linear(768, 2)
    model = GPT(gpt_preset("gpt2-124m", tie_weights=False, split_qkv=True))
    model.lm_head = nn.Linear(768, 2)
    assert count_parameters(model) == 124_441_346
    freeze(model)
    assert count_parameters(model) == 0
    replace_linear_with_lora(model, rank=16, alpha=16)
    assert count_parameters(model) == 2_666_528
    assert len(lora_modules(model)) == 12 * 6 + 1  # q, k, v, attn out, two MLP layers per block; the head


def test_a_fresh_adapter_changes_nothing_and_merge_is_exact():
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    ref = base(x)
    lora = LoRALinear(base, rank=4, alpha=8).eval()
    torch.testing.assert_close(lora(x), ref, rtol=0, atol=0)  # B = 0
    assert not base.weight.requires_grad and lora.lora_A.weight.requires_grad
    with torch.no_grad():
        lora.lora_B.weight.normal_()
    y = lora(x)
    expected = ref + (x @ lora.lora_A.weight.T @ lora.lora_B.weight.T) * 2.0
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    lora.merge()
    torch.testing.assert_close(lora(x), y, rtol=1e-5, atol=1e-5)
    lora.unmerge()
    torch.testing.assert_close(lora(x), y, rtol=1e-5, atol=1e-5)


def test_only_the_adapters_get_gradients():
    model = GPT(gpt_preset("tiny", vocab_size=300))
    freeze(model)
    replace_linear_with_lora(model, rank=2, alpha=4, targets=["c_attn", "c_fc"])
    x = torch.randint(0, 300, (2, 12))
    _, loss = model(x, x)
    loss.mean().backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    assert set(lora_modules(model)) == {f"transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "mlp.c_fc")}


def test_remove_lora_merges_into_plain_linear_layers():
    torch.manual_seed(1)
    model = GPT(gpt_preset("tiny", vocab_size=300)).eval()
    replace_linear_with_lora(model, rank=4, alpha=8)
    _randomise_lora(model)
    x = torch.randint(0, 300, (2, 10))
    ref = model(x)[0]
    merge_lora(model)
    torch.testing.assert_close(model(x)[0], ref, rtol=1e-4, atol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model(x)[0], ref, rtol=1e-4, atol=1e-5)
    remove_lora(model)
    assert not lora_modules(model) and isinstance(model.transformer.h[0].attn.c_attn, nn.Linear)
    torch.testing.assert_close(model(x)[0], ref, rtol=1e-4, atol=1e-5)


def test_split_and_fused_qkv_layouts_compute_the_same_function(tmp_path):
    torch.manual_seed(2)
    fused = GPT(gpt_preset("tiny", vocab_size=300)).eval()
    split = with_qkv_layout(fused, split=True)
    x = torch.randint(0, 300, (2, 10))
    torch.testing.assert_close(split(x)[0], fused(x)[0], rtol=1e-5, atol=1e-5)
    assert count_parameters(split) == count_parameters(fused)
    save_model(split, tmp_path / "m")  # files keep GPT-2's fused layout ...
    back = load_model(tmp_path / "m")
    assert back.config.split_qkv
    torch.testing.assert_close(back(x)[0], fused(x)[0], rtol=1e-5, atol=1e-5)
    from transformers import AutoModelForCausalLM  # ... which transformers reads

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(hf(x).logits, fused(x)[0], rtol=1e-4, atol=1e-4)


def test_adapter_files_round_trip_and_refuse_bad_input(tmp_path):
    torch.manual_seed(3)
    model = GPT(gpt_preset("tiny", vocab_size=300)).eval()
    replace_linear_with_lora(model, rank=4, alpha=8, targets=["c_attn", "c_proj"])
    _randomise_lora(model)
    x = torch.randint(0, 300, (1, 9))
    ref = model(x)[0]
    save_adapter(model, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["target_modules"] == ["c_attn", "c_proj"]
    with pytest.raises(FileExistsError):
        save_adapter(model, tmp_path / "a")
    torch.manual_seed(3)
    fresh = GPT(gpt_preset("tiny", vocab_size=300)).eval()
    load_adapter(fresh, tmp_path / "a")
    torch.testing.assert_close(fresh(x)[0], ref, rtol=1e-5, atol=1e-5)
    # an adapter for another shape does not load silently
    with pytest.raises(ValueError, match="shape"):
        load_adapter(GPT(gpt_preset("tiny", vocab_size=300, n_embd=64)), tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter"):
        load_adapter(fresh, tmp_path / "nowhere")


def test_only_some_c_proj_layers_are_named_in_full(tmp_path):
    model = GPT(gpt_preset("tiny", vocab_size=300))
    replace_linear_with_lora(model, rank=2, alpha=2, targets=["attn.c_proj"])
    save_adapter(model, tmp_path / "a")
    targets = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["target_modules"]
    assert targets == ["transformer.h.0.attn.c_proj", "transformer.h.1.attn.c_proj"]  # "c_proj" would also pick mlp.c_proj


@pytest.fixture
def hf_tiny(tmp_path):
    torch.manual_seed(4)
    ours = GPT(gpt_preset("tiny", vocab_size=300)).eval()
    save_model(ours, tmp_path / "base")
    return ours, tmp_path / "base"


def test_peft_loads_our_adapter_with_the_same_logits(hf_tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ours, base_dir = hf_tiny
    replace_linear_with_lora(ours, rank=4, alpha=16, targets=["c_attn", "c_proj", "c_fc"])
    _randomise_lora(ours, seed=5)
    save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(base_dir), task_type="CAUSAL_LM")
    hf = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    x = torch.randint(0, 300, (2, 16))
    theirs = peft_model(x).logits
    torch.testing.assert_close(ours(x)[0], theirs, rtol=1e-5, atol=1e-5)
    with peft_model.disable_adapter():  # and the adapter really changes the output
        assert not torch.allclose(peft_model(x).logits, theirs, atol=1e-4)


def test_an_adapter_trained_by_peft_loads_into_our_lora(hf_tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    ours, base_dir = hf_tiny
    hf = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True))
    x = torch.randint(0, 300, (2, 16))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # really trained, so B is not zero
        loss = peft_model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    peft_model.eval()
    peft_model.save_pretrained(tmp_path / "peft_adapter")
    load_adapter(ours, tmp_path / "peft_adapter")
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], peft_model(x).logits, rtol=1e-5, atol=1e-5)


def test_peft_wraps_our_split_module_with_a_trained_head(tmp_path):
    """PEFT on our own module (no transformers export): a classifier-like head in
    modules_to_save, LoRA on q/v only (the LoRA paper's choice), both directions."""
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(6)
    ours = GPT(gpt_preset("tiny", vocab_size=300, split_qkv=True, tie_weights=False)).eval()
    ours.lm_head = nn.Linear(128, 3)
    twin = GPT(gpt_preset("tiny", vocab_size=300, split_qkv=True, tie_weights=False)).eval()
    twin.lm_head = nn.Linear(128, 3)
    twin.load_state_dict(ours.state_dict())

    replace_linear_with_lora(ours, rank=4, alpha=8, targets=["q_proj", "v_proj"])
    mark_trainable(ours, ["lm_head"])
    _randomise_lora(ours, seed=7)
    with torch.no_grad():
        ours.lm_head.weight.add_(1.0)  # "trained" head
    assert count_parameters(ours) == 2 * 2 * 4 * (128 + 128) + 128 * 3 + 3
    save_adapter(ours, tmp_path / "a", modules_to_save=["lm_head"])

    x = torch.randint(0, 300, (2, 11))
    wrapped = PeftModel.from_pretrained(twin, tmp_path / "a").eval()
    torch.testing.assert_close(wrapped(x)[0], ours(x)[0], rtol=1e-5, atol=1e-5)

    # and back: PEFT trains on our module, we load what it saved
    torch.manual_seed(8)
    base2 = GPT(gpt_preset("tiny", vocab_size=300, split_qkv=True)).eval()
    copy = GPT(gpt_preset("tiny", vocab_size=300, split_qkv=True)).eval()
    copy.load_state_dict(base2.state_dict())
    pm = get_peft_model(base2, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    pm.save_pretrained(tmp_path / "b")
    load_adapter(copy, tmp_path / "b")
    torch.testing.assert_close(copy(x)[0], pm(x)[0], rtol=1e-5, atol=1e-5)


def test_merging_a_lora_head_tied_to_the_embedding_saves_and_reloads_exactly(tmp_path):
    torch.manual_seed(10)
    model = GPT(gpt_preset("tiny", vocab_size=300)).eval()  # tied head
    replace_linear_with_lora(model, rank=2, alpha=4)  # the head too (the course's "every Linear")
    _randomise_lora(model, seed=11)
    x = torch.randint(0, 300, (2, 10))
    ref = model(x)[0]
    remove_lora(model)  # merges; the head gets its own weight
    save_model(model, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert not back.config.tie_weights
    torch.testing.assert_close(back(x)[0], ref, rtol=1e-4, atol=1e-5)


def test_a_failed_load_leaves_the_model_untouched(tmp_path):
    torch.manual_seed(12)
    src = GPT(gpt_preset("tiny", vocab_size=300))
    replace_linear_with_lora(src, rank=2, alpha=4, targets=["c_fc"])
    save_adapter(src, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    cfg["target_modules"] = ["c_fc", "c_attn"]  # names layers the file has no weights for
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(cfg))
    target = GPT(gpt_preset("tiny", vocab_size=300))
    before = {n: p.clone() for n, p in target.state_dict().items()}
    with pytest.raises(ValueError, match="lacks weights"):
        load_adapter(target, tmp_path / "a")
    assert not lora_modules(target) and all(p.requires_grad for p in target.parameters())
    assert all(torch.equal(before[n], p) for n, p in target.state_dict().items())
    cfg["target_modules"] = ["c_fc"]
    cfg["modules_to_save"] = ["score"]
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not have"):
        load_adapter(target, tmp_path / "a")
    assert not lora_modules(target)


def test_training_through_a_merged_layer_is_refused():
    lora = LoRALinear(nn.Linear(4, 4), rank=2, alpha=2)
    lora.merge()
    with pytest.raises(RuntimeError, match="unmerge"):
        lora(torch.randn(1, 4))
    with torch.no_grad():
        lora(torch.randn(1, 4))  # inference through a merged layer is what merging is for


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_in_place_update_has_the_gradients_of_the_plain_formula(dropout):
    torch.manual_seed(13)
    base = nn.Linear(16, 8)
    lora = LoRALinear(base, rank=4, alpha=8, dropout=dropout)
    with torch.no_grad():
        lora.lora_B.weight.normal_()
    x = torch.randn(3, 5, 16, requires_grad=True)
    params = (x, lora.lora_A.weight, lora.lora_B.weight)
    torch.manual_seed(1)  # the same dropout mask both times
    ours = torch.autograd.grad(lora(x).square().sum(), params)
    torch.manual_seed(1)
    plain = base(x) + lora.lora_B(lora.lora_A(lora.lora_dropout(x))) * lora.scaling
    ref = torch.autograd.grad(plain.square().sum(), params)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_lora_runs_under_autocast_and_trains_in_float32():
    torch.manual_seed(14)
    lora = LoRALinear(nn.Linear(16, 8), rank=4, alpha=8)
    with torch.no_grad():
        lora.lora_B.weight.normal_()
    x = torch.randn(2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lora(x)
    assert y.dtype == torch.bfloat16
    ref = lora.base_layer(x) + lora.lora_B(lora.lora_A(x)) * lora.scaling
    torch.testing.assert_close(y.float(), ref, rtol=3e-2, atol=3e-2)
    y.float().sum().backward()
    assert lora.lora_B.weight.grad is not None and lora.lora_B.weight.grad.dtype == torch.float32
