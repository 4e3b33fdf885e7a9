"""The training loop: schedule, learning, metrics, checkpoints and bit-for-bit resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from llmkit.models.zoo import build_model
from llmkit.training import checkpoint as ckpt
from llmkit.training.loop import TrainConfig, lr_at, make_optimizer, train


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def _data(n=6000, vocab=64, seed=0):
    rng = np.random.default_rng(seed)
    pattern = rng.integers(0, vocab, size=37)
    return np.tile(pattern, n // 37 + 1)[:n].astype(np.uint16)  # a repeating sequence: learnable


def _cfg(**kw):
    base = dict(steps=60, batch_size=8, block_size=32, lr=3e-3, min_lr=3e-4, warmup_steps=5, eval_every=20, log_every=5, ckpt_every=20, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_learns_and_logs_metrics(tmp_path):
    torch.manual_seed(0)
    model = build_model("gpt", "tiny", vocab_size=64, dropout=0.1)
    data = _data()
    records = train(model, data, data[:2000], _cfg(), tmp_path)
    first, last = records[0], records[-1]
    assert last["loss"] < first["loss"] / 3 and last["val_loss"] < math.log(64) / 3
    for key in ("step", "loss", "lr", "tokens", "tokens_per_s", "bits_per_token", "val_loss", "val_ppl", "val_bits_per_token", "mfu"):
        assert key in last
    assert last["val_bits_per_token"] == pytest.approx(last["val_loss"] / math.log(2))
    assert last["val_ppl"] == pytest.approx(math.exp(last["val_loss"]))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(5, 61, 5))
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000040", "step_00000060"]


def test_optimizer_state_survives_safetensors_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model("gpt", "tiny", vocab_size=64)
    opt = make_optimizer(model, _cfg())
    x = torch.randint(0, 64, (2, 16))
    model(x, x)[1].mean().backward()
    opt.step()
    ckpt.save_checkpoint(tmp_path, 1, model, opt, {"sampler": {}})
    model2 = build_model("gpt", "tiny", vocab_size=64)
    opt2 = make_optimizer(model2, _cfg())
    ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), model2, opt2)
    sa, sb = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert all(torch.equal(sa[k][n], sb[k][n]) for n in sa[k])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))


def test_in_process_resume_matches_an_uninterrupted_run(tmp_path):
    data = _data()
    torch.manual_seed(1)
    full = train(build_model("gpt", "tiny", vocab_size=64, dropout=0.1), data, data[:1000], _cfg(), tmp_path / "a")
    torch.manual_seed(1)
    train(build_model("gpt", "tiny", vocab_size=64, dropout=0.1), data, data[:1000], _cfg(steps=60), tmp_path / "b")
    # make b look killed after step 40: drop its last checkpoint and later metrics
    import shutil

    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000060")
    (tmp_path / "b" / "checkpoints" / "latest.json").write_text(json.dumps({"step": 40, "dir": "step_00000040"}))
    torch.manual_seed(999)  # a different fresh init: resume must overwrite everything
    resumed = train(build_model("gpt", "tiny", vocab_size=64, dropout=0.1), data, data[:1000], _cfg(), tmp_path / "b", resume=True)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]
    assert [r.get("val_loss") for r in resumed] == [r.get("val_loss") for r in full]


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(build_model("gpt", "tiny", vocab_size=64), _data(), None, _cfg(), tmp_path, resume=True)


def _llmkit(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "llmkit.cli.main", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _losses(run):
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_same_loss_curve(tmp_path, small_corpus, small_tokenizer):
    common = ["--model", "gpt", "--preset", "tiny", "--corpus", str(small_corpus), "--tokenizer", str(small_tokenizer),
              "--steps", "150", "--batch-size", "4", "--block-size", "32", "--log-every", "1", "--ckpt-every", "7",
              "--eval-every", "50", "--device", "cpu"]
    ref = _llmkit("train", "-o", str(tmp_path / "ref"), *common)
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    victim = _llmkit("train", "-o", str(tmp_path / "run"), *common)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a few checkpoints exist and training is mid-way
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 40:
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = len(metrics.read_text().splitlines())
    assert 40 <= killed_at < 150, "the run must be killed mid-way"
    resumed = _llmkit("train", "-o", str(tmp_path / "run"), "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resumed from step_" in err
    assert _losses(tmp_path / "run") == _losses(tmp_path / "ref")


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, small_corpus, small_tokenizer):
    common = ["--model", "gpt", "--preset", "tiny", "--corpus", str(small_corpus), "--tokenizer", str(small_tokenizer),
              "--steps", "12", "--batch-size", "8", "--block-size", "32", "--log-every", "1", "--eval-every", "6", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = _llmkit("train", "-o", str(tmp_path / "one"), *common, env=env)
    two = _llmkit("train", "-o", str(tmp_path / "two"), *common, "--nproc", "2", env=env)
    for p in (one, two):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-4)
    from llmkit.models.zoo import load_model

    a, b = load_model(tmp_path / "one" / "model"), load_model(tmp_path / "two" / "model")
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-3, msg=n)


@pytest.mark.slow
def test_torch_compile_gives_the_same_losses(tmp_path):
    data = _data()
    runs = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = build_model("gpt", "tiny", vocab_size=64)
        runs.append(train(model, data, None, _cfg(steps=4, log_every=1, compile=compile_), tmp_path / str(compile_)))
    np.testing.assert_allclose([r["loss"] for r in runs[1]], [r["loss"] for r in runs[0]], rtol=1e-4)
