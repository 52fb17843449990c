"""NumPy adapter: the reference backend. NumPy has no autodiff, so the user supplies the
gradient: ``loss_fn(params, batch)`` returns ``(loss, grads)`` with ``grads`` shaped like
``params``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import array_api_compat.numpy as np_namespace
import numpy as np

from llc import _rng
from llc._backend import BackendBase
from llc._tree import tree_flatten, tree_unflatten

from ._common import check_floating, leaf_paths

_GENERATORS = threading.local()


class NumpyBackend(BackendBase):
    """Adapter for NumPy arrays (CPU, any floating dtype). Eager, with llc's host keys and
    no global generator of its own to isolate (the core isolates NumPy's and Python's):
    :class:`~llc._backend.BackendBase`'s defaults."""

    name = "numpy"
    has_autodiff = False

    # ---- arrays -------------------------------------------------------------------------
    def is_array(self, obj: Any) -> bool:
        return isinstance(obj, (np.ndarray, np.generic))

    def namespace(self, x: Any) -> Any:
        return np_namespace

    def asarray(self, x: Any, *, like: np.ndarray) -> np.ndarray:
        array = np.asarray(x)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(like.dtype, copy=False)
        return array

    def from_numpy(self, x: Any, *, dtype: str | None = None, device: str | None = None
                   ) -> np.ndarray:
        if device not in (None, "cpu"):
            raise ValueError(f"the NumPy backend runs on the CPU only; got device={device!r}")
        return np.array(x, dtype=dtype, copy=True)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.array(x, copy=True)

    def stack(self, xs: list[Any]) -> np.ndarray:
        return np.stack(xs)

    def take(self, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        return x[indices]

    def row_buffer(self, num_rows: int, num_columns: int) -> _HostRows:
        return _HostRows(num_rows, num_columns)

    def linear_combination(self, *terms: tuple[Any, np.ndarray], reuse: int | None = None
                           ) -> np.ndarray:
        first = terms[0][1]
        if reuse is not None and terms[reuse][1].dtype == first.dtype \
                and terms[reuse][1].flags.writeable:
            (first_coefficient, total) = terms[reuse]
            rest = list(terms[:reuse] + terms[reuse + 1:])
            np.multiply(total, first_coefficient, out=total, dtype=first.dtype)
        else:
            (first_coefficient, first), *rest = terms
            total = np.multiply(first, first_coefficient, dtype=first.dtype)
        scratch = np.empty_like(total) if rest else None
        for coefficient, array in rest:  # one scratch buffer instead of a temporary per term
            np.multiply(array, coefficient, out=scratch, dtype=first.dtype)
            total += scratch
        return total

    def describe(self, x: np.ndarray) -> dict[str, str]:
        return {"device": "cpu", "dtype": str(x.dtype)}

    # ---- params -------------------------------------------------------------------------
    def data_like(self, params: Any) -> np.ndarray:
        return np.zeros((), np.result_type(*tree_flatten(params)[0]))

    def ravel(self, params: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
        leaves, treedef = tree_flatten(params)
        check_floating(
            [np.asarray(leaf) for leaf in leaves],
            leaf_paths(params),
            lambda leaf: np.issubdtype(leaf.dtype, np.floating),
            lambda leaf: leaf.size,
        )
        arrays = [np.asarray(leaf) for leaf in leaves]
        dtype = np.result_type(np.float32, *arrays)  # the sampling state: at least float32
        shapes = [array.shape for array in arrays]
        sizes = [math.prod(shape) for shape in shapes]
        offsets = np.cumsum([0, *sizes])
        flat = np.concatenate([array.astype(dtype, copy=False).ravel() for array in arrays])

        def unravel(vector: np.ndarray) -> Any:
            views = []
            for start, stop, shape, array in zip(offsets[:-1], offsets[1:], shapes, arrays):
                view = vector[start:stop].reshape(shape)
                if view.dtype != array.dtype:
                    view = view.astype(array.dtype)
                view.flags.writeable = False  # loss_fn must not write into the sampler's state
                views.append(view)
            return tree_unflatten(treedef, views)

        return flat, unravel

    # ---- loss and grad ------------------------------------------------------------------
    def value_and_grad(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        def loss_and_grad(flat: np.ndarray, batch: Any) -> tuple[np.ndarray, np.ndarray]:
            params = unravel(flat)
            output = loss_fn(params, batch)
            if not (isinstance(output, tuple) and len(output) == 2):
                raise TypeError(
                    "`loss_fn` must return (loss, grads) with the NumPy backend, which has no "
                    f"automatic differentiation; got {type(output).__name__}. Write the "
                    "gradient by hand, or pass PyTorch/JAX/TensorFlow params to differentiate "
                    "automatically"
                )
            loss, grads = output
            grad_leaves = _aligned_leaves(grads, params)
            grad = np.concatenate([_real(g, "grads").ravel() for g in grad_leaves])
            return _as_scalar(loss), grad.astype(flat.dtype, copy=False)

        return loss_and_grad

    def value(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        loss_and_grad = self.value_and_grad(loss_fn, unravel)
        return lambda flat, batch: loss_and_grad(flat, batch)[0]

    # ---- rng ----------------------------------------------------------------------------
    def _generator(self, key: int) -> np.random.Generator:
        # One PCG64 per thread whose 128-bit state and stream are set from the key: the
        # same stream for the same key, in about a fifth of the time of default_rng(key),
        # which runs a SeedSequence per call (once per chain and step).
        generator = getattr(_GENERATORS, "generator", None)
        if generator is None:
            generator = _GENERATORS.generator = np.random.Generator(np.random.PCG64())
        # the key is already a SplitMix64 output; two more give the other words
        second, third = _rng.fold_in(key, 1), _rng.fold_in(key, 2)
        generator.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": key << 64 | second, "inc": (third << 64 | key) | 1},
            "has_uint32": 0,
            "uinteger": 0,
        }
        return generator

    def normal(self, key: int, like: np.ndarray) -> np.ndarray:
        if like.dtype in (np.float32, np.float64):
            return self._generator(key).standard_normal(like.shape, dtype=like.dtype)
        return self._generator(key).standard_normal(like.shape).astype(like.dtype)

    def permutation(self, key: int, n: int, like: np.ndarray) -> np.ndarray:
        return self._generator(key).permutation(n)

    def integers(self, key: int, n: int, size: int, like: np.ndarray) -> np.ndarray:
        return self._generator(key).integers(0, n, size)


class _HostRows:
    """A float64 table on the host, written in place."""

    def __init__(self, num_rows: int, num_columns: int) -> None:
        self._table = np.full((num_rows, num_columns), np.nan)

    def set(self, index: int, values: list[Any]) -> None:
        self._table[index, :len(values)] = values

    def to_numpy(self) -> np.ndarray:
        return self._table.copy()


def _real(value: Any, what: str) -> np.ndarray:
    """``value`` as a real NumPy array, refusing what would silently change its meaning."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(
            f"`loss_fn` returned {what} of dtype {array.dtype}; expected real numbers"
        )
    return array


def _as_scalar(loss: Any) -> np.ndarray:
    if loss is None or isinstance(loss, (str, bytes, bool, np.bool_)):
        raise TypeError(f"`loss_fn` must return a real scalar loss; got {type(loss).__name__}")
    value = _real(loss, "a loss")
    if value.ndim != 0 and value.size != 1:
        raise ValueError(
            "`loss_fn` must return a scalar loss (the mean over the batch); got shape "
            f"{value.shape}"
        )
    return value.astype(np.float64, copy=False).reshape(())


def _aligned_leaves(grads: Any, params: Any) -> list[Any]:
    """The leaves of ``grads`` in the order of ``params``' leaves, matched by key.

    Raises
    ------
    ValueError
        If the structure, the keys or a shape differ from ``params``.
    """
    leaves: list[Any] = []
    _align_into(grads, params, "", leaves)
    return leaves


def _align_into(grad: Any, param: Any, path: str, leaves: list[Any]) -> None:
    # a module-level recursion, not a closure: a self-referencing closure is a reference
    # cycle that would keep each step's gradients alive until the garbage collector ran
    if isinstance(param, Mapping):
        if not isinstance(grad, Mapping) or set(grad) != set(param):
            got = sorted(map(str, grad)) if isinstance(grad, Mapping) else type(grad).__name__
            raise ValueError(
                f"`loss_fn` returned grads whose structure or shapes differ from `params`: "
                f"at {path or '<root>'} expected keys {sorted(map(str, param))}, got {got}"
            )
        for key in param:
            _align_into(grad[key], param[key], f"{path}[{key!r}]", leaves)
    elif isinstance(param, (list, tuple)):
        if not isinstance(grad, (list, tuple)) or len(grad) != len(param):
            raise ValueError(
                "`loss_fn` returned grads whose structure or shapes differ from `params` "
                f"at {path or '<root>'}"
            )
        for index, (g, p) in enumerate(zip(grad, param)):
            _align_into(g, p, f"{path}[{index}]", leaves)
    else:
        if grad is None or np.shape(grad) != np.shape(param):
            raise ValueError(
                f"`loss_fn` returned grads whose structure or shapes differ from `params`: "
                f"at {path or '<root>'} expected shape {np.shape(param)}, got "
                f"{None if grad is None else np.shape(grad)}"
            )
        leaves.append(grad)


backend = NumpyBackend()
