"""Packaging: the core imports no framework; the wheel ships the adapters."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_llc_loads_no_framework() -> None:
    code = (
        "import sys, llc, llc.samplers, llc.result, llc.posterior, llc.problems\n"
        "heavy = [m for m in ('torch', 'jax', 'tensorflow', 'keras', 'flax') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "clean"


def test_wheel_contains_backends(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("local_learning_coefficient-*.whl")  # "llc" on PyPI is another
    names = set(zipfile.ZipFile(wheel).namelist())
    (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
    assert "Name: local-learning-coefficient" in zipfile.ZipFile(wheel).read(metadata).decode()
    entry_points = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    assert "llc = llc.cli:main" in zipfile.ZipFile(wheel).read(entry_points[0]).decode()
    for expected in ("llc/__init__.py", "llc/py.typed", "llc/backends/__init__.py",
                     "llc/backends/numpy.py", "llc/backends/torch.py",
                     "llc/problems/__init__.py", "llc/samplers/__init__.py",
                     "llc/samplers/sgnht.py", "llc/_engine/runner.py", "llc/plots/estimate.py",
                     "llc/backends/tensorflow/keras.py"):
        assert expected in names, expected
    assert not any(name.startswith("backends/") for name in names)
