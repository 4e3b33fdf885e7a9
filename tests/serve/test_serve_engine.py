"""The batching engine, against the naive reference: each request generated alone (llmkit's
own ``generate`` for our GPT, transformers' ``generate`` for a transformers model)."""

from __future__ import annotations

import queue

import pytest
import torch

from llmkit.generation import encode_prompt, generate_text
from llmkit.inference import load_pretrained
from llmkit.models.attention import SlotKVCache
from llmkit.serve.engine import ByteDetokenizer, Engine, GPTStepper, QueueFull, SamplingParams, TextDetokenizer, TransformersStepper
from serve_testutils import tiny_run

PROMPTS = ["The quick", "def f(x):", "Hello, world", "x", "return x ** 2 and", "café", "12345 fox"]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    model, tok, _ = load_pretrained(tiny_run(tmp_path_factory.mktemp("run")))
    return model.eval(), tok


def _engine(gpt, slots=3, **kw):
    model, tok = gpt
    return Engine(GPTStepper(model, slots), lambda: ByteDetokenizer(tok.decode_bytes), max_batch=slots, **kw)


def test_slot_cache_decodes_rows_of_different_lengths_like_each_alone(gpt):
    model, _ = gpt
    c = model.config
    prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [42]]
    slots = SlotKVCache(c.n_layer, 4, c.n_head, c.head_dim, c.context_length)
    alone, last = [], []
    with torch.no_grad():
        for slot, p in zip([2, 0, 3], prompts):
            one = model.new_kv_cache(1, len(p) + 5)
            model.forward_cached(torch.tensor([p]), one, last_only=True)
            slots.fill(slot, one)
            alone.append(one)
            last.append(p[-1])
        for _ in range(5):  # feed the same next tokens both ways: the logits must agree row by row
            slots.select([2, 0, 3])
            batched = model.forward_cached(torch.tensor([[t] for t in last]), slots, last_only=True)[:, -1]
            singles = torch.cat([model.forward_cached(torch.tensor([[t]]), one, last_only=True)[:, -1] for t, one in zip(last, alone)])
            assert torch.allclose(batched, singles, atol=1e-5)
            last = [int(x) for x in singles.argmax(-1)]
    assert slots.lengths.tolist() == [12, 0, 8, 6]


def test_batched_greedy_text_equals_each_request_alone(gpt):
    model, tok = gpt
    eng = _engine(gpt, slots=3)
    try:
        handles = [eng.submit(encode_prompt(tok, p), SamplingParams(max_tokens=20, temperature=0)) for p in PROMPTS]
        results = [h.result() for h in handles]
    finally:
        eng.close()
    for p, r in zip(PROMPTS, results):
        assert r.text == generate_text(model, tok, p, 20, temperature=0.0, stop_tokens=())
        assert r.finish_reason == "length" and r.completion_tokens == 20 and r.prompt_tokens == len(encode_prompt(tok, p))
    assert eng.max_active_seen == 3
    assert eng.steps < 20 * len(PROMPTS) / 2  # requests shared decoding steps (alone: 19 each)


def test_a_finished_request_frees_its_slot_for_a_waiting_one_at_once(gpt):
    _, tok = gpt
    eng = _engine(gpt, slots=2)
    try:
        long = eng.submit(encode_prompt(tok, "The quick"), SamplingParams(max_tokens=40, temperature=0))
        shorts = [eng.submit(encode_prompt(tok, p), SamplingParams(max_tokens=3, temperature=0)) for p in PROMPTS]
        assert all(h.result().completion_tokens == 3 for h in shorts)
        assert long.result().completion_tokens == 40
    finally:
        eng.close()
    assert eng.steps < 40 + 3  # the short ones ran beside the long one (continuous batching), not after it


def test_seeded_sampling_does_not_depend_on_the_company(gpt):
    _, tok = gpt
    eng = _engine(gpt, slots=4)
    params = SamplingParams(max_tokens=15, temperature=1.0, top_p=0.9, seed=7)
    try:
        alone = eng.submit(encode_prompt(tok, "The"), params).result().text
        others = [eng.submit(encode_prompt(tok, p), SamplingParams(max_tokens=15, temperature=1.0, seed=i)) for i, p in enumerate(PROMPTS)]
        crowded = eng.submit(encode_prompt(tok, "The"), params).result().text
        [h.result() for h in others]
    finally:
        eng.close()
    assert alone == crowded


def test_stop_strings_cut_the_text_and_never_leak_into_the_stream(gpt):
    model, tok = gpt
    full = generate_text(model, tok, "The quick", 24, temperature=0.0, stop_tokens=())
    stop = full[6:9]
    eng = _engine(gpt)
    try:
        h = eng.submit(encode_prompt(tok, "The quick"), SamplingParams(max_tokens=24, temperature=0, stop=[stop, "never there"]))
        events = list(h)
    finally:
        eng.close()
    text = "".join(e.text for e in events if e.kind == "text")
    assert text == full[: full.find(stop)] and events[-1].finish_reason == "stop"


def test_a_stop_token_ends_the_reply(gpt):
    model, tok = gpt
    from llmkit.generation import generate

    ids = encode_prompt(tok, "The quick")
    greedy = generate(model, ids, 6, temperature=0.0)
    stopper = greedy[2]  # the third generated token
    eng = _engine(gpt)
    try:
        r = eng.submit(ids, SamplingParams(max_tokens=20, temperature=0, stop_tokens=frozenset([stopper]))).result()
    finally:
        eng.close()
    assert r.finish_reason == "stop" and r.completion_tokens == greedy.index(stopper)
    assert r.text == tok.decode(greedy[: greedy.index(stopper)])


def test_cancel_frees_the_slot_and_bounds_hold(gpt):
    _, tok = gpt
    eng = _engine(gpt, slots=1, max_queue=2)
    try:
        ids = encode_prompt(tok, "The quick")
        running = eng.submit(ids, SamplingParams(max_tokens=50, temperature=0))
        first = running.get(timeout=10)
        assert first.kind == "text"
        waiting = [eng.submit(ids, SamplingParams(max_tokens=5, temperature=0)) for _ in range(2)]
        with pytest.raises(QueueFull):
            eng.submit(ids, SamplingParams(max_tokens=5, temperature=0))
        running.cancel()
        last = None
        for ev in running:
            last = ev
        assert last.finish_reason == "cancelled" and last.completion_tokens < 50
        assert all(w.result().completion_tokens == 5 for w in waiting)  # the freed slot served them
        with pytest.raises(ValueError, match="context window of 64 tokens"):
            eng.submit(ids, SamplingParams(max_tokens=62, temperature=0))
        assert eng.load() == {"waiting": 0, "active": 0, "slots": 1}
    finally:
        eng.close()


def test_a_request_that_waits_too_long_is_told_so(gpt):
    _, tok = gpt
    eng = _engine(gpt, slots=1, max_wait=0.0)
    try:
        ids = encode_prompt(tok, "The")
        a = eng.submit(ids, SamplingParams(max_tokens=30, temperature=0))
        b = eng.submit(ids, SamplingParams(max_tokens=30, temperature=0))
        results = [a.result(), b.result()]
    finally:
        eng.close()
    assert any(r.finish_reason == "error" and "waited over" in r.error for r in results)


def test_byte_detokenizer_holds_a_split_character_until_whole():
    data = "é日".encode()
    pieces = [bytes([b]) for b in data]
    d = ByteDetokenizer(lambda ids: pieces[ids[0]])
    out = [d.add(i) for i in range(len(pieces))]
    assert out == ["", "é", "", "", "日"] and d.flush() == ""


def test_transformers_model_in_the_engine_equals_its_generate(tmp_path, gpt):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmkit.hf.convert import export_model

    run = tiny_run(tmp_path / "run", seed=3)
    out = export_model(run, tmp_path / "hf")
    model, hf_tok = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    eng = Engine(TransformersStepper(model, 3), lambda: TextDetokenizer(hf_tok), max_batch=3)
    try:
        prompts = PROMPTS[:4]
        handles = [eng.submit(hf_tok(p)["input_ids"], SamplingParams(max_tokens=12, temperature=0)) for p in prompts]
        results = [h.result() for h in handles]
    finally:
        eng.close()
    for p, r in zip(prompts, results):
        ids = hf_tok(p, return_tensors="pt")
        ref = model.generate(**ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
        assert r.text == hf_tok.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_events_can_go_to_a_sink_instead(gpt):
    _, tok = gpt
    eng = _engine(gpt)
    got: queue.SimpleQueue = queue.SimpleQueue()
    try:
        eng.submit(encode_prompt(tok, "The"), SamplingParams(max_tokens=4, temperature=0), sink=got.put)
        events = []
        while not events or events[-1].kind != "done":
            events.append(got.get(timeout=10))
    finally:
        eng.close()
    assert events[-1].completion_tokens == 4
