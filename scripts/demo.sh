#!/usr/bin/env bash
# The README's main job: a real NCDPO training run on Hopper-v5 (MuJoCo) with the shipped default config,
# then an evaluation of the final checkpoint and its learning curve. About 5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
STEPS=${STEPS:-60000}
$BIN/ncdpo train --algo ncdpo --env Hopper-v5 --total-env-steps "$STEPS" --horizon 4 --act-steps 4 \
  --out-dir runs --run-name demo --overwrite --eval-every 5 --eval-episodes 5
$BIN/ncdpo eval runs/demo --episodes 10
$BIN/ncdpo plot runs/demo --out runs/demo/curves.png --y eval/return_mean
echo "learning curve: runs/demo/curves.png; TensorBoard: $BIN/tensorboard --logdir runs"
