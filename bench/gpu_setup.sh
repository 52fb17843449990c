# Sourced by the bench/gpu_*.sh scripts on the device machine: installs llc and the
# pure-Python dependencies missing there from the wheels carried in .whl/ into /tmp/site.
repo=$(pwd)
out=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
  --target /tmp/site "$repo" || exit 1
export PYTHONPATH=/tmp/site OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
