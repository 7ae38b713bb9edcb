#!/usr/bin/env bash
# The README's main job: NCDPO fine-tunes the shipped behaviour-cloned Hopper-v5 diffusion policy (MuJoCo),
# printing its evaluation return before and after and writing the learning curve. ~10 minutes on 2 CPU cores.
#   STEPS=... to change the budget (env steps), CK=... to start from another checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CK=${CK:-shipped:Hopper-v5}
STEPS=${STEPS:-1000000}
EPISODES=${EPISODES:-20}
mkdir -p runs
start=$(date +%s)
echo "== before: the behaviour-cloned policy ($CK)"
$BIN/ncdpo eval "$CK" --episodes "$EPISODES" --seed 7 --json runs/demo_before.json
echo "== NCDPO fine-tuning for $STEPS env steps"
$BIN/ncdpo train --init "$CK" --config configs/finetune_locomotion.yaml --total-env-steps "$STEPS" \
  --out-dir runs --run-name demo --overwrite
echo "== after"
$BIN/ncdpo eval runs/demo --episodes "$EPISODES" --seed 7 --json runs/demo/after.json
mv runs/demo_before.json runs/demo/before.json
$BIN/ncdpo plot runs/demo --out runs/demo/curves.png --y eval/return_mean
$BIN/python - "$start" <<'PY'
import json, sys, time
b, a = (json.load(open(f"runs/demo/{n}.json")) for n in ("before", "after"))
print(f"Hopper fine-tuning: return {b['return_mean']:.1f} ± {b['return_std']:.1f} before -> "
      f"{a['return_mean']:.1f} ± {a['return_std']:.1f} after ({len(a['returns'])} deterministic episodes each); "
      f"wall time {time.time() - float(sys.argv[1]):.0f} s")
PY
echo "learning curve: runs/demo/curves.png; TensorBoard: $BIN/tensorboard --logdir runs"
