"""Per-leaf step sizes: a ``step_size`` pytree matching ``params`` as per-coordinate steps."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._backend import Backend

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
    steps: dict[int, float] = {}
    _assign(step_size, params, backend, "step_size", steps)
    leaves = backend.leaves(params)
    flat = []
    for leaf in leaves:
        size = math.prod(int(n) for n in tuple(leaf.shape))
        flat.append(np.full(size, steps[id(leaf)], dtype=np.float64))
    return np.concatenate(flat) if flat else np.zeros(0)


def _assign(step: Any, node: Any, backend: Backend, path: str, steps: dict[int, float]) -> None:
    if _is_number(step):
        value = float(step)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"`{path}` must be a finite step > 0; got {step!r}")
        for leaf in backend.leaves(node):
            steps[id(leaf)] = value
        return
    if isinstance(node, Mapping):
        if not isinstance(step, Mapping):
            raise TypeError(f"`{path}` must be a number or a dict with the keys "
                            f"{sorted(map(str, node))}; got {type(step).__name__}")
        if set(step) != set(node):
            missing = sorted(map(str, set(node) - set(step)))
            extra = sorted(map(str, set(step) - set(node)))
            raise ValueError(f"`{path}` must have the keys of the params here"
                             + (f"; missing {missing}" if missing else "")
                             + (f"; not in params: {extra}" if extra else ""))
        for key in node:
            _assign(step[key], node[key], backend, f"{path}[{key!r}]", steps)
        return
    if isinstance(node, (list, tuple)):
        if not isinstance(step, (list, tuple)) or len(step) != len(node):
            raise ValueError(f"`{path}` must be a number or a {type(node).__name__} of "
                             f"{len(node)} steps, as the params here; got {step!r:.80}")
        for index, (child_step, child) in enumerate(zip(step, node)):
            _assign(child_step, child, backend, f"{path}[{index}]", steps)
        return
    leaves = backend.leaves(node)
    step_leaves = [] if isinstance(step, (str, bytes)) else backend.leaves(step)
    if len(step_leaves) != len(leaves) or not all(_is_number(s) for s in step_leaves):
        raise TypeError(f"`{path}` must be a positive number (one step for this params leaf) "
                        f"or a pytree of the params' structure with a number per leaf; got "
                        f"{type(step).__name__}")
    for leaf, value in zip(leaves, step_leaves):
        _assign(value, leaf, backend, path, steps)


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
