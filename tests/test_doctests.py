"""The ``>>>`` examples of the docstrings run, and print what they show.

Each module's examples run with its own names and ``llc`` in scope (doctest's convention) and
``ELLIPSIS``; a module whose framework is not installed is skipped. Estimates run with health
warnings silenced: the examples are about the API, the warnings go to stderr anyway.
"""

from __future__ import annotations

import doctest
import importlib
import warnings

import pytest

import llc

MODULES = [
    ("llc.problems._truth", None),
    ("llc.problems._base", "torch"),
    ("llc.calibration", None),
    ("llc.trajectory", None),
    ("llc.backends.torch", "torch"),
    ("llc.backends.jax", "flax"),
    ("llc.backends.tensorflow.keras", "keras"),
]


@pytest.mark.parametrize("name, needs", MODULES, ids=[name for name, _ in MODULES])
def test_docstring_examples_run(name: str, needs: str | None) -> None:
    if needs is not None:
        pytest.importorskip(needs)
    if name.endswith(".jax"):
        pytest.importorskip("equinox")
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [test for test in finder.find(module, extraglobs={"llc": llc}) if test.examples]
    assert tests, f"{name} has no examples"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for test in tests:
            runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed"
