#!/usr/bin/env bash
# Furman & Lau's larger DLN classes on one GPU (bench/dln_scale.py): 2 models of the 100K
# and 1M classes, the paper's step and step_size="auto" (about 10 minutes on an H100).
# Usage on the device: bash bench/gpu_dln_scale.sh  (writes $OUT/gpu_dln_scale.log and plots)
set -uo pipefail
source bench/gpu_setup.sh
cd "$repo"
for size in 100K 1M; do
  python3 -m bench.dln_scale --size "$size" --models 2 --device cuda \
    --plot "$out/dln_scale_${size}.png" 2>&1 | tee -a "$out/gpu_dln_scale.log"
done
