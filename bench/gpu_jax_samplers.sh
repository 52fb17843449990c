#!/usr/bin/env bash
# CUDA cases of the JAX adapter and of the samplers (device tool; about 2 minutes).
set -uo pipefail
repo=$(pwd)
out=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
  --target /tmp/site "$repo" || exit 1
export PYTHONPATH=/tmp/site OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 LLC_TEST_BACKENDS=jax-cuda,torch-cuda
cd /tmp
timeout 140 python3 -m pytest -q -x -rs -p no:cacheprovider -W ignore::UserWarning \
  "$repo/tests/test_estimate.py" "$repo/tests/test_samplers.py" -k "cuda" 2>&1 | tee "$out/gpu_jax.log"
