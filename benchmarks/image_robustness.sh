#!/bin/bash
# Two follow-ups on the image walkthrough's model (run benchmarks/image_walkthrough.sh first, same WORK_DIR):
#  1. the generator learning rate that diverged (1e-5, five times the walkthrough's), now with the divergence
#     back-off (finetune.divergence_retries, default 3): the run goes back to its last checkpoint at half the rate;
#  2. the frozen-network mode (finetune.train=table: policy gradient on the 10 steps' a, b, s only) for the same
#     training seconds as the walkthrough's 300 network iterations.
# About 30 minutes on one CPU core. Scores: benchmarks/results/image_walkthrough/{backoff,table_mode}*.
#
#     bash benchmarks/image_robustness.sh [WORK_DIR]      # default /tmp/fewstep-walkthrough
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/benchmarks/results/image_walkthrough
WORK=${1:-/tmp/fewstep-walkthrough}
cd "$WORK"
# shellcheck source=benchmarks/_walkthrough_env.sh
source "$ROOT/benchmarks/_walkthrough_env.sh"
SFT="$SFT --set finetune.max_kl=0"  # measured without the trust region the images preset now has: the back-off is what's shown
# shellcheck disable=SC2086
fewstep finetune --checkpoint pipelines/mnist14-ddpm $M $FAST $SFT --set finetune.iterations=300 \
  --set finetune.lr_generator=1e-5 --run-dir runs/mnist14-sft-backoff --quiet
fewstep evaluate --checkpoint runs/mnist14-sft-backoff/checkpoints/finetune.safetensors $M --set evaluate.repeats=3 \
  --out "$OUT/backoff_lr1e-5.json" --quiet
cp runs/mnist14-sft-backoff/metrics.jsonl "$OUT/backoff_lr1e-5_metrics.jsonl"
# table mode: time 10 iterations, then run as many as fit in the network run's training seconds
fewstep finetune --checkpoint pipelines/mnist14-ddpm $M $FAST $SFT --set finetune.train=table \
  --set finetune.iterations=10 --set finetune.eval_every=1000 --run-dir runs/mnist14-table-probe --quiet
ITERS=$(python - <<'PY'
import json
def seconds(path):
    return [r for r in map(json.loads, open(path)) if r.get("stage") == "finetune" and "seconds" in r][-1]["seconds"]
print(round(seconds("runs/mnist14-sft/metrics.jsonl") / (seconds("runs/mnist14-table-probe/metrics.jsonl") / 10)))
PY
)
echo "table mode: $ITERS iterations"
fewstep finetune --checkpoint pipelines/mnist14-ddpm $M $FAST $SFT --set finetune.train=table \
  --set finetune.iterations="$ITERS" --set finetune.eval_every=$((ITERS / 6)) --run-dir runs/mnist14-table --quiet
fewstep evaluate --checkpoint runs/mnist14-table/checkpoints/finetune.safetensors $M --set evaluate.repeats=3 \
  --out "$OUT/table_mode.json" --quiet
cp runs/mnist14-table/metrics.jsonl "$OUT/table_mode_metrics.jsonl"
