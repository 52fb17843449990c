#!/usr/bin/env bash
# Issue 20's GPU check: the DLN scale benchmark's 1M class (bench/dln_scale.py) with one
# chain per visible GPU, the chains split over the GPUs by torchrun (one process per GPU,
# nccl), at the paper's step and with step_size="auto"; prints λ̂, error, seconds and each
# chain's λ̂ (docs/scale.md). About 10 minutes on one H100 for 2 models (50k steps each run).
# Usage on the device: bash bench/gpu_scale.sh  (writes $OUT/gpu_scale.log)
set -uo pipefail
source bench/gpu_setup.sh
cd "$repo"
gpus=$(python3 -c "import torch; print(max(torch.cuda.device_count(), 1))")
python3 -m torch.distributed.run --standalone --nproc-per-node="$gpus" -m bench.dln_scale \
  --size 1M --models 2 --device cuda --chains 1 2>&1 | tee "$out/gpu_scale.log"
