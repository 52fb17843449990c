#!/usr/bin/env bash
# torch's vectorized chains on CUDA (device tool; about 3 minutes): the vectorized-against-
# sequential tests on torch-cuda, then bench.torch_chains on the GPU (which decides whether
# chain_method="auto" should vectorize torch chains there; on this project's CPU it does not).
# Usage on the device: bash bench/gpu_torch_chains.sh  (writes $OUT/gpu_torch_chains.log)
set -uo pipefail
source bench/gpu_setup.sh
export LLC_TEST_BACKENDS=torch-cuda
cd /tmp
timeout 150 python3 -m pytest -q -x -rs -p no:cacheprovider -W ignore::UserWarning \
  "$repo/tests/test_vectorized.py" 2>&1 | tee "$out/gpu_torch_chains.log"
cd "$repo"
timeout 400 python3 -m bench.torch_chains --device cuda --repeats 2 --step-repeats 3 2>&1 \
  | tee -a "$out/gpu_torch_chains.log"
