"""The README's examples run and print what the README says."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_torch_quickstart_runs_healthy() -> None:
    torch = pytest.importorskip("torch")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "torch_quickstart.py")],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if torch.__version__.startswith("2.13.0"):  # the pinned build: the README's exact numbers
        assert "λ̂ = 11.09 ± 0.27 (MCSE)" in out.stdout
    else:
        assert "λ̂ = 1" in out.stdout
    assert "health: no findings" in out.stdout
    readme = (ROOT / "README.md").read_text()
    assert (ROOT / "examples" / "torch_quickstart.py").read_text().split('"""', 2)[2].strip() \
        in readme


def test_jax_quickstart_runs_healthy() -> None:
    jax = pytest.importorskip("jax")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "jax_quickstart.py")],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if jax.__version__ == "0.10.2":  # the pinned build: the README's exact numbers
        assert "λ̂ = 7.275 ± 0.11 (MCSE)" in out.stdout
    assert "health: no findings" in out.stdout
    readme = (ROOT / "README.md").read_text()
    assert (ROOT / "examples" / "jax_quickstart.py").read_text().split('"""', 2)[2].strip() \
        in readme
