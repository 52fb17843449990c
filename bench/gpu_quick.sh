#!/usr/bin/env bash
# The CUDA cases only (about 4 minutes on the H200): estimate, inputs, long runs, torch, and
# the DLN known-λ test on torch-cuda-float64 and float32, then the demo on cuda.
# Usage on the device: bash bench/gpu_quick.sh  (writes $OUT/gpu_quick.log)
set -uo pipefail
source bench/gpu_setup.sh
export LLC_TEST_BACKENDS=torch-cuda
cd /tmp
python3 -m pytest -q -rs -p no:cacheprovider -W ignore::UserWarning \
  "$repo/tests/test_estimate.py" "$repo/tests/test_inputs.py" "$repo/tests/test_long_runs.py" \
  "$repo/tests/test_torch.py" "$repo/tests/test_known_lambda.py" \
  -k "cuda and not rrr and not regular or float32" --durations=5 2>&1 | tee "$out/gpu_quick.log"
python3 -m llc demo --no-progress --device cuda 2>&1 | tee -a "$out/gpu_quick.log"
