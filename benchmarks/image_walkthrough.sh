#!/bin/bash
# The README's "Your own image model" walkthrough, run as a user would: a T = 1000 U-Net on 14x14 MNIST,
# written as a plain DDPMPipeline folder, scored, shortcut fine-tuned to 10 steps, exported, sampled by
# diffusers alone. About 25 minutes on one CPU core. Scores: benchmarks/results/image_walkthrough/*.json.
#
#     bash benchmarks/image_walkthrough.sh [WORK_DIR]      # default /tmp/fewstep-walkthrough
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/benchmarks/results/image_walkthrough
WORK=${1:-/tmp/fewstep-walkthrough}
mkdir -p "$WORK" "$OUT" && cd "$WORK"
# shellcheck source=benchmarks/_walkthrough_env.sh
source "$ROOT/benchmarks/_walkthrough_env.sh"
# shellcheck disable=SC2086
if [ ! -f runs/mnist14/checkpoints/pretrain.safetensors ]; then  # a rerun in the same WORK_DIR keeps the pretraining
  fewstep pretrain $M --set model.kind=unet --set model.channels=16 --set model.channel_mult=[1,2] \
    --set model.norm_groups=4 --set schedule.kind=linear --set schedule.T=1000 --set pretrain.steps=4000 \
    --set pretrain.batch_size=64 --set pretrain.lr=1e-3 --set pretrain.ema_decay=0.995 --run-dir runs/mnist14 --quiet
fi
rm -rf pipelines runs/mnist14-sft
fewstep export --checkpoint runs/mnist14/checkpoints/pretrain.safetensors --scheduler ddpm --out pipelines/mnist14-ddpm
fewstep evaluate --checkpoint pipelines/mnist14-ddpm $M --out "$OUT/ddpm1000.json" --quiet
fewstep evaluate --checkpoint pipelines/mnist14-ddpm $M $FAST --set evaluate.repeats=3 --out "$OUT/fastdpm10.json" --quiet
fewstep finetune --checkpoint pipelines/mnist14-ddpm $M $FAST $SFT --set finetune.iterations=300 \
  --set finetune.lr_generator=2e-6 --run-dir runs/mnist14-sft --quiet
fewstep evaluate --checkpoint runs/mnist14-sft/checkpoints/finetune.safetensors $M --set evaluate.repeats=3 \
  --out "$OUT/sft10.json" --quiet
fewstep export --checkpoint runs/mnist14-sft/checkpoints/finetune.safetensors --out pipelines/mnist14-sft
python - <<'PY'
import numpy as np
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("pipelines/mnist14-sft", trust_remote_code=True)
images = pipe(batch_size=500, generator=torch.Generator().manual_seed(0), output_type="np").images
print(type(pipe).__name__, type(pipe.scheduler).__name__, len(pipe.scheduler.timesteps), "steps", images.shape)
np.save("diffusers_samples.npy", images.transpose(0, 3, 1, 2) * 2 - 1)
PY
fewstep evaluate --samples diffusers_samples.npy $M --out "$OUT/sft10_diffusers.json" --quiet
cp runs/mnist14-sft/figures/samples.png runs/mnist14-sft/figures/finetune_fid.png "$OUT/"
cp runs/mnist14-sft/metrics.jsonl "$OUT/finetune_metrics.jsonl"
