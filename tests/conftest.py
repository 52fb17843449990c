"""Shared fixtures. ``backend`` runs a test once per backend case, e.g. ``torch-cpu-float32``.

Select cases with the environment variable ``LLC_TEST_BACKENDS`` (comma-separated prefixes
such as ``numpy,torch-cpu``); by default every installed framework on every available device
runs. A case whose framework or device is missing is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import llc
from llc._tree import tree_map

os.environ.setdefault("OMP_NUM_THREADS", "1")

if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401  (import torch before tensorflow: docs/design.md §6)
if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)  # the float64 cases; float32 arrays stay float32


@dataclass(frozen=True)
class BackendCase:
    """One backend, device and dtype under test."""

    name: str
    device: str
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.name}-{self.device.split(':')[0]}-{self.dtype}"

    @property
    def backend(self) -> llc.Backend:
        return llc.get_backend(self.name)

    def asarray(self, tree: Any) -> Any:
        """A NumPy pytree as this case's framework arrays (floats in ``dtype``)."""

        def convert(leaf: Any) -> Any:
            array = np.asarray(leaf)
            dtype = self.dtype if np.issubdtype(array.dtype, np.floating) else None
            return self.backend.from_numpy(array, dtype=dtype, device=self.device)

        return tree_map(convert, tree)

    def to_numpy(self, tree: Any) -> Any:
        return tree_map(lambda leaf: self.backend.to_numpy(leaf), tree)

    def problem(self, problem: Any, n: int, seed: int = 0) -> tuple[Any, Any, Any]:
        """``(loss_fn, params, data)`` of a known-λ problem in this backend."""
        return problem.in_backend(self.name, n, seed, dtype=self.dtype, device=self.device)


def _cuda_available(framework: str) -> bool:
    if importlib.util.find_spec(framework) is None:
        return False
    if framework == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if framework == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    import torch

    return torch.cuda.is_available()


ALL_CASES = [
    BackendCase("numpy", "cpu", "float64"),
    BackendCase("torch", "cpu", "float64"),
    BackendCase("torch", "cpu", "float32"),
    BackendCase("torch", "cuda", "float32"),
    BackendCase("torch", "cuda", "float64"),
    BackendCase("jax", "cpu", "float64"),
    BackendCase("jax", "cpu", "float32"),
    BackendCase("jax", "cuda", "float64"),
    BackendCase("tensorflow", "cpu", "float64"),
    BackendCase("tensorflow", "cpu", "float32"),
    BackendCase("tensorflow", "cuda", "float32"),
]


def _selected(case: BackendCase) -> bool:
    wanted = os.environ.get("LLC_TEST_BACKENDS", "").strip()
    if not wanted:
        return True
    return any(case.id.startswith(prefix.strip()) for prefix in wanted.split(",") if prefix.strip())


def _params(cases: list[BackendCase]) -> list[Any]:
    params = []
    for case in cases:
        marks = []
        if importlib.util.find_spec(case.name) is None:
            marks.append(pytest.mark.skip(reason=f"{case.name} is not installed"))
        elif case.device.startswith("cuda") and not _cuda_available(case.name):
            marks.append(pytest.mark.skip(reason="no CUDA device"))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


SELECTED = [case for case in ALL_CASES if _selected(case)]


@pytest.fixture(params=_params(SELECTED))
def backend(request: pytest.FixtureRequest) -> BackendCase:
    """Every selected backend case."""
    return request.param


@pytest.fixture(params=_params([c for c in SELECTED if c.dtype == "float64"]))
def backend64(request: pytest.FixtureRequest) -> BackendCase:
    """Selected backend cases in float64 (exact and statistical tests)."""
    return request.param
