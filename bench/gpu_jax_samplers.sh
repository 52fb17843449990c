#!/usr/bin/env bash
# CUDA cases of the JAX adapter (per-step and vectorized chains) and of the samplers
# (device tool; about 2 minutes).
set -uo pipefail
source bench/gpu_setup.sh
export LLC_TEST_BACKENDS=jax-cuda,torch-cuda
cd /tmp
timeout 140 python3 -m pytest -q -x -rs -p no:cacheprovider -W ignore::UserWarning \
  "$repo/tests/test_estimate.py" "$repo/tests/test_samplers.py" "$repo/tests/test_vectorized.py" \
  -k "cuda" 2>&1 | tee "$out/gpu_jax.log"
