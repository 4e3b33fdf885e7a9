#!/usr/bin/env bash
# End-to-end GPU smoke test of the user-facing commands on CUDA (for a session lent a GPU
# machine; about 3 minutes): tokenizer training, GPT pre-training with bf16 autocast and
# torch.compile, resume, generation, classification fine-tuning (full and LoRA) and chat
# tuning on cuda. It checks that each command succeeds and prints its key numbers; the
# numbers are not benchmarks.
#
#   bash benchmarks/gpu_smoke.sh            # on the GPU machine (python3 with torch + CUDA)
#
# Packages the machine lacks (llmkit's data and tokenizer packages) can travel as wheels in
# .whl/ (see the device notes); they are installed into /tmp/site when present.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEV=${DEVICE:-cuda}   # DEVICE=cpu runs the same commands on a CPU (slow; for checking the script)
COMPILE=--compile; [[ $DEV == cpu ]] && COMPILE=""
# sizes (smaller ones check the script itself on a CPU: PRESET=tiny STEPS=6 FT_STEPS=4 DEVICE=cpu)
PRESET=${PRESET:-small} STEPS=${STEPS:-60} FT_STEPS=${FT_STEPS:-80}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
W=$(mktemp -d)
llmkit() { "$PY" -m llmkit.cli.main "$@"; }
fails=0
step() {  # step NAME COMMAND...: run, time, report
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name"
  if "$@"; then echo "-- $name: ok in $((SECONDS - t0)) s"; else echo "-- $name: FAILED (rc $?)"; fails=$((fails + 1)); fi
}
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
step tokenizer llmkit tokenizer train --corpus src --vocab-size 2048 -o "$W/tok"
step pretrain llmkit train --model gpt --preset "$PRESET" --corpus src --tokenizer "$W/tok" -o "$W/gpt" --steps "$STEPS" --batch-size 32 --eval-every $((STEPS / 2)) --ckpt-every $((STEPS / 2)) --log-every $((STEPS / 3)) --device "$DEV" $COMPILE
step metrics "$PY" - "$W/gpt" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
last = [r for r in recs if "val_loss" in r][-1]
print({k: last.get(k) for k in ("step", "loss", "val_loss", "val_bits_per_token", "tokens_per_s", "mfu")})
assert last["loss"] < recs[0]["loss"], "the loss did not fall"
PY
step generate llmkit generate "$W/gpt" "def " -n 30 --seed 1
step classify_full llmkit finetune classify --base "$W/gpt" --data bbc -o "$W/bbc_full" --method full --steps "$FT_STEPS" --batch-size 32 --max-length 128 --device "$DEV"
step classify_lora llmkit finetune classify --base "$W/gpt" --data bbc -o "$W/bbc_lora" --method lora --steps "$FT_STEPS" --batch-size 32 --max-length 128 --device "$DEV"
step classify_use llmkit classify "$W/bbc_lora" "The central bank raised interest rates again as inflation climbed"
step sft llmkit finetune sft "$W/gpt" -o "$W/chat" --steps $((FT_STEPS / 2)) --batch-size 16 --n-arith 300 --n-qa 0 --device "$DEV"
echo "== done: $fails failed"
exit $((fails > 0))
