# Sourced by the bench/gpu_*.sh scripts on the device machine: installs llc and the
# pure-Python dependencies missing there from the wheels carried in .whl/ into /tmp/site.
# Fetch the wheels here first (git ignores .whl/ through .git/info/exclude; carry it):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp -d .whl array-api-compat==1.16.0 arviz-base==0.8.2 \
#     arviz-stats==0.8.0 xarray-einstats==0.9.1 h5netcdf==1.8.2 xarray==2026.2.0
repo=$(pwd)
out=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
  --target /tmp/site "$repo" || exit 1
export PYTHONPATH=/tmp/site OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
