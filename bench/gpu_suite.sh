#!/usr/bin/env bash
# Run the test suite on a CUDA machine (the device tool's H200): installs llc and the pure-Python
# dependencies missing there from wheels carried in .whl/, then runs every backend case,
# CUDA ones included. Usage on the device: bash bench/gpu_suite.sh  (writes $OUT/gpu_suite.log)
set -uo pipefail
source bench/gpu_setup.sh
cd /tmp
python3 - <<'PY' 2>&1 | tee "$out/gpu_suite.log"
import torch, numpy, xarray, llc
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
print("numpy", numpy.__version__, "xarray", xarray.__version__, "llc", llc.__file__)
PY
python3 -m pytest -q -rs -p no:cacheprovider "$repo/tests" --deselect "$repo/tests/test_import.py::test_wheel_contains_backends" \
  --durations=10 2>&1 | tee -a "$out/gpu_suite.log"
python3 -m llc demo --no-progress 2>&1 | tee -a "$out/gpu_suite.log"
python3 -m llc demo --no-progress --device cuda 2>&1 | tee -a "$out/gpu_suite.log"
