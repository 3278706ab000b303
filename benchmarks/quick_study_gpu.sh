#!/usr/bin/env bash
# The quick-preset study on one CUDA machine, inside one device call: every variant of
# benchmarks/quick_study.py trained for its CPU-time budget and evaluated, 16 at a time.
# Usage: bash benchmarks/quick_study_gpu.sh DATA.npz OUT_DIR [BUDGET_S]
set -uo pipefail
data=$1; out=$2; budget=${3:-610}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
# MPS lets the small kernels of several processes share the GPU instead of time-slicing it.
if nvidia-cuda-mps-control -d 2>/dev/null; then echo "MPS on" | tee -a "$out/gpu.txt"; fi
work=/tmp/quick-study
python3 benchmarks/quick_study.py run --data "$data" --times docs/quick-study-cpu-times.json --budget-s "$budget" \
  --device cuda --parallel 16 --finalists 4 --deadline-s 500 --phase2-min-s 170 --adapt-at 75 --eval-s 80 \
  --out "$work" 2>&1 | tee "$out/study.log"
cp "$work"/table.md "$work"/rows.json "$out"/ 2>/dev/null
# Small files of every run (metrics, configs, logs, style grids), then the three best runs' weights.
tar czf "$out/runs.tgz" -C "$work" --exclude='*.pt' --exclude='tensorboard' --exclude='predictor_*' \
  --exclude='interpolation_*' --exclude='embedding.png' --exclude='curves.json' .
best=$(python3 -c "import json,sys; r=json.load(open('$work/rows.json')); r=sorted(r,key=lambda x:(not x['leak_ok'],-x['swap_psnr'])); print(' '.join(f\"{x['variant']}__seed{x['seed']}/checkpoints/last.pt\" for x in r[:3]))" 2>/dev/null)
[ -n "$best" ] && tar czf "$out/best_ckpts.tgz" -C "$work" $best
ls -la "$out"
