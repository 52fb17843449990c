"""Per-leaf step sizes: a ``step_size`` pytree matching ``params`` as per-coordinate steps."""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

import numpy as np

from ._backend import Backend
from ._tree import match_leaves

__all__ = ["is_per_leaf", "per_coordinate_steps", "describe_per_leaf"]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_per_leaf(step_size: Any) -> bool:
    """``step_size`` is neither a number nor a string (``"auto"``): a per-leaf pytree."""
    return not _is_number(step_size) and not isinstance(step_size, str)


def per_coordinate_steps(step_size: Any, params: Any, backend: Backend) -> np.ndarray:
    """The flat per-coordinate steps (in the order of ``backend.ravel(params)``) of a per-leaf
    ``step_size``.

    ``step_size`` mirrors ``params``: a dict with the same keys, a list or tuple of the same
    length, down to one positive number per leaf; a number in place of a subtree applies to
    every leaf below it (``{"encoder": 1e-5, "head": 1e-4}`` for two sub-dicts). A params node
    of another kind (a framework's own pytree, e.g. an Equinox module) takes a number, or a
    pytree of the same kind whose leaves are the numbers.

    Raises
    ------
    TypeError, ValueError
        Naming the path where ``step_size`` does not match ``params``, or the bad value.
    """
    matched = match_leaves(step_size, params, backend.leaves, "step_size", _is_number,
                           "a number")
    flat = []
    for leaf in backend.leaves(params):
        path, value = matched[id(leaf)]
        if not _is_number(value):
            raise TypeError(f"`{path}` must be a positive number (one step for this params "
                            f"leaf) or a pytree of the params' structure with a number per "
                            f"leaf; got {type(value).__name__}")
        step = float(value)
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"`{path}` must be a finite step > 0; got {value!r}")
        size = math.prod(int(n) for n in tuple(leaf.shape))
        flat.append(np.full(size, step, dtype=np.float64))
    return np.concatenate(flat) if flat else np.zeros(0)


def describe_per_leaf(steps: np.ndarray, sizes: list[int]) -> str:
    """JSON of the step per leaf (in the params' leaf order): a number where the leaf has one
    step, ``[min, max]`` where it varies within the leaf."""
    described: list[Any] = []
    offsets = np.cumsum([0, *sizes])
    for start, stop in zip(offsets[:-1], offsets[1:]):
        piece = steps[start:stop]
        low, high = float(piece.min()), float(piece.max())
        described.append(low if low == high else [low, high])
    return json.dumps(described)
