#!/usr/bin/env bash
# Issue 19, item 2: the shipped colour models fine-tuned on a mix of real pairs (PolyU-train) and synthetic noise
# on their clean halves (Gaussian, Poisson-Gaussian, demosaiced camera noise, JPEG after the noise), on this CPU
# in bf16, one thread each, one model after another. Each run resumes from its checkpoint when started again.
#
#   bash benchmarks/colour_mixed.sh [MODEL ...]      # default: every shipped colour model
#   SET=balanced bash benchmarks/colour_mixed.sh MODEL ...   # the second round's configs (*_colour_balanced.json:
#                                    # 40 % synthetic, the best epoch chosen by real and synthetic validation alike)
#
# Runs land in results/train_cpu_<SET>/<model>_colour (SET default: mixed); then `python benchmarks/ship_models.py`
# ships the best epochs that pass the bench (see benchmarks/records/models_colour_mixed_cpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
SET=${SET:-mixed}
OUT=${OUT:-results/train_cpu_$SET}
export OMP_NUM_THREADS=1
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(mwcnn unet rednet pridnet resnet_5x5_bn_3x3 sparse_resnet_5x5_bn_3x3 sparse_resnet_4x5_bn_3x3)
fi
mkdir -p "$OUT"
for model in "${models[@]}"; do
  "$BIN/bdn" train --model-directory "$OUT/${model}_colour" \
    --pipeline-config "benchmarks/configs/cpu/${model}_colour_$SET.json" --no-progress \
    >> "$OUT/${model}_colour.log" 2>&1
done
