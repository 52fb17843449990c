"""The :class:`Problem` interface shared by every test problem, and small helpers."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from llc._backend import array_namespace

from ._truth import _as_int

__all__ = ["Problem", "namespace"]

Params = dict[str, Any]
Batch = tuple[Any, ...]


def namespace(x: Any) -> Any:
    """Array-API namespace of ``x`` through llc's adapters (NumPy, PyTorch, ...)."""
    return array_namespace(x)


def first_leaf(params: Params) -> Any:
    """The first array of a params dict (the one whose namespace the loss uses)."""
    if not isinstance(params, dict) or not params:
        raise TypeError(f"`params` must be a non-empty dict of arrays, got {type(params).__name__}")
    return next(iter(params.values()))


def check_n(n: int) -> int:
    """``n`` as a positive Python int (number of samples)."""
    return _as_int(n, "n", minimum=1)


def check_seed(seed: int) -> int:
    """``seed`` as a non-negative Python int."""
    return _as_int(seed, "seed", minimum=0)


class Problem(abc.ABC):
    r"""A model with data and a known learning coefficient λ at a known parameter point.

    Every problem works in NumPy float64 on the host: :meth:`sample_data` draws a dataset,
    :meth:`minimizer` returns the parameter point :math:`w^*` at which λ̂ is to be measured
    (an exact critical point of the empirical loss :math:`L_n`), and :attr:`true_lambda` is
    the learning coefficient there. :meth:`loss` and :meth:`loss_and_grad` are written
    against the array-API namespace of the parameters, so the same code runs on NumPy arrays,
    PyTorch tensors and JAX arrays (converted elsewhere).

    The loss is the mean per-sample negative log-likelihood up to an additive constant,

    .. math::

        L_n(w) = -\frac1n \sum_{i=1}^n \log p(y_i \mid x_i, w) + \text{const}.
    """

    @property
    @abc.abstractmethod
    def true_lambda(self) -> float:
        """The learning coefficient λ at :meth:`minimizer`'s point (exact, closed form)."""

    @property
    @abc.abstractmethod
    def num_params(self) -> int:
        """Number of scalar parameters d (so a regular model would have λ = d/2)."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short identifier, e.g. ``"rrr_M5_H3_N5_r2"``."""

    @property
    @abc.abstractmethod
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each entry of the params dict, in order."""

    @abc.abstractmethod
    def sample_data(self, n: int, seed: int) -> tuple[np.ndarray, ...]:
        """A dataset of ``n`` samples: float64 arrays sharing the leading dimension ``n``.

        Uses ``np.random.default_rng(seed)`` only; the global NumPy RNG is never touched.
        """

    @abc.abstractmethod
    def minimizer(self, data: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        """The parameter point :math:`w^*` for ``data`` (float64 arrays, keyed like params)."""

    @abc.abstractmethod
    def loss(self, params: Params, batch: Batch) -> Any:
        """Mean per-sample loss of ``batch`` at ``params`` (a 0-d array of their framework)."""

    @abc.abstractmethod
    def loss_and_grad(self, params: Params, batch: Batch) -> tuple[Any, Params]:
        """:meth:`loss` and its analytic gradient (a dict shaped like ``params``)."""

    def setup(self, n: int, seed: int = 0) -> tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        """``(data, params)`` = ``(sample_data(n, seed), minimizer(data))``, NumPy float64."""
        data = self.sample_data(n, seed)
        return data, self.minimizer(data)

    def in_backend(self, backend: str, n: int, seed: int = 0, *, dtype: str = "float64",
                   device: str | None = None) -> tuple[Any, Any, tuple[Any, ...]]:
        """``(loss_fn, params, data)`` of :meth:`setup` in an installed backend.

        Floating arrays take ``dtype``; every array goes to ``device`` (the framework's
        default when ``None``). ``loss_fn`` is :meth:`loss` for backends with automatic
        differentiation and :meth:`loss_and_grad` for NumPy.

        Examples
        --------
        >>> problem = llc.problems.LinearRegression(4, 3)
        >>> loss_fn, params, data = problem.in_backend("torch", 10_000)
        >>> result = llc.estimate(loss_fn, params, data, step_size=3e-5)
        >>> result.attrs["backend"], result.attrs["dtype"]
        ('torch', 'float64')
        """
        from llc._backend import get_backend
        from llc._tree import tree_map

        adapter = get_backend(backend)
        data, params = self.setup(n, seed)

        def convert(leaf: np.ndarray) -> Any:
            floating = np.issubdtype(leaf.dtype, np.floating)
            return adapter.from_numpy(leaf, dtype=dtype if floating else None, device=device)

        loss_fn = self.loss if adapter.has_autodiff else self.loss_and_grad
        return loss_fn, tree_map(convert, params), tree_map(convert, data)

    def random_params(self, seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
        """Standard normal parameters times ``scale`` (for tests and initialisation)."""
        rng = np.random.default_rng(check_seed(seed))
        return {key: scale * rng.standard_normal(shape) for key, shape in self.param_shapes.items()}

    def _repr_fields(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"
