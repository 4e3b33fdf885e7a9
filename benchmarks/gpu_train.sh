#!/usr/bin/env bash
# GPU training throughput and MFU of llmkit's GPT (gpt2-124m, bf16 autocast, torch.compile),
# with transformers' GPT2LMHeadModel on the same configuration beside it. For a session lent a
# GPU machine; the whole script stays under 8 minutes (each run has its own timeout, and
# later runs are skipped when the budget is short).
#
#   bash benchmarks/gpu_train.sh                                     # on the GPU machine
#   bash benchmarks/gpu_train.sh --device cpu --steps 2 --preset tiny   # CPU smoke test of the code path
#
# Extra arguments go to every benchmarks/gpu_train.py run. Environment: PYTHON (default
# .venv/bin/python if present, else python3), RESULTS (default benchmarks/results), BUDGET_S
# (default 450). JSON results land in $RESULTS/gpu_train_*.json and, when $OUT is set, in $OUT.
set -u
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
RESULTS=${RESULTS:-benchmarks/results}
BUDGET_S=${BUDGET_S:-450}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RESULTS"

echo "== gpu_train.sh: $(date -Is), budget ${BUDGET_S} s, python $PYTHON"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), cores $(nproc)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv || true
fi
"$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "| transformers", transformers.__version__)' || exit 1

status=0
run() {  # run NAME TIMEOUT ARGS...: one gpu_train.py run, skipped when the budget cannot cover its timeout
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - SECONDS))
  if ((left < limit)); then
    echo "-- $name: skipped (${left} s of the budget left, needs up to ${limit} s)"
    return
  fi
  echo "-- $name (timeout ${limit} s)"
  if timeout "$limit" "$PYTHON" benchmarks/gpu_train.py "$@" --json "$RESULTS/gpu_train_$name.json" >/dev/null; then
    [[ -n "${OUT:-}" ]] && cp "$RESULTS/gpu_train_$name.json" "$OUT/" 2>/dev/null
  else
    echo "-- $name: failed or timed out (rc $?)"
    status=1
  fi
}

# The order puts the headline first: llmkit compiled, then HF compiled, then both eager.
run llmkit_compiled 180 --model llmkit --compile auto "$@"
run hf_compiled 180 --model hf --compile auto "$@"
run llmkit_eager 90 --model llmkit --compile off "$@"
run hf_eager 90 --model hf --compile off "$@"
# A larger batch (more work per kernel launch and per optimizer step), if the budget allows.
run llmkit_compiled_b32 150 --model llmkit --compile auto --batch 32 "$@"

"$PYTHON" - "$RESULTS" <<'EOF'
import json, sys
from pathlib import Path

rows = []
for name in ("llmkit_compiled", "hf_compiled", "llmkit_eager", "hf_eager", "llmkit_compiled_b32"):
    p = Path(sys.argv[1]) / f"gpu_train_{name}.json"
    if p.exists():
        rows.append((name, json.loads(p.read_text())))
if not rows:
    sys.exit("no results")
print(f"\n{'run':20s} {'device':28s} {'compile':>7s} {'ms/step':>8s} {'tokens/s':>11s} {'TFLOP/s':>8s} {'MFU':>7s}")
for name, r in rows:
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
    print(f"{name:20s} {r['device'][:28]:28s} {str(r['compile']):>7s} {1e3 * r['step_s_median']:8.1f} {r['tokens_per_s']:11,.0f} {r['achieved_flops'] / 1e12:8.1f} {mfu:>7s}")
by = dict(rows)
for mode in ("compiled", "eager"):
    a, b = by.get(f"llmkit_{mode}"), by.get(f"hf_{mode}")
    if a and b:
        print(f"llmkit / HF tokens/s, {mode}: {a['tokens_per_s'] / b['tokens_per_s']:.2f}x")
EOF
echo "== done in ${SECONDS} s"
exit $status
