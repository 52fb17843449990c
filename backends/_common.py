"""Helpers shared by the adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from llc._tree import tree_flatten


def scaled_sum(terms: tuple[tuple[Any, Any], ...]) -> Any:
    """``c₀·x₀ + c₁·x₁ + …`` as one expression (for frameworks whose compiler fuses it); a
    coefficient that is the number 1 costs no multiplication."""
    total = None
    for coefficient, array in terms:
        scaled = array if _is_one(coefficient) else coefficient * array
        total = scaled if total is None else total + scaled
    if total is None:
        raise ValueError("linear_combination needs at least one (coefficient, array) term")
    return total


def _is_one(coefficient: Any) -> bool:
    return isinstance(coefficient, (int, float)) and not isinstance(coefficient, bool) \
        and coefficient == 1


class StackedRows:
    """A :class:`~llc._backend.RowBuffer` for frameworks whose arrays are immutable (JAX,
    TensorFlow): it keeps each row's 0-d arrays and stacks each column once, in
    :meth:`to_numpy` (one device-to-host copy per column)."""

    def __init__(self, stack: Callable[[list[Any]], Any], to_numpy: Callable[[Any], Any],
                 num_rows: int, num_columns: int) -> None:
        self._stack, self._to_numpy = stack, to_numpy
        self._shape = (num_rows, num_columns)
        self._rows: dict[int, list[Any]] = {}

    def set(self, index: int, values: list[Any]) -> None:
        self._rows[index] = list(values)

    def to_numpy(self) -> np.ndarray:
        table = np.full(self._shape, np.nan)
        for column in range(self._shape[1]):
            rows = [index for index, values in self._rows.items() if len(values) > column]
            if rows:
                stacked = self._stack([self._rows[index][column] for index in rows])
                table[rows, column] = np.asarray(self._to_numpy(stacked), dtype=np.float64)
        return table


def leaf_paths(tree: Any) -> list[str]:
    """Readable paths of the leaves of ``tree`` (``"['layer.weight']"``, ``"[0][1]"``)."""
    paths: list[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{path}[{key!r}]")
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                visit(value, f"{path}[{index}]")
        else:
            paths.append(path or "<root>")

    visit(tree, "")
    assert len(paths) == len(tree_flatten(tree)[0])
    return paths


def check_floating(
    leaves: list[Any],
    paths: list[str],
    is_floating: Callable[[Any], bool],
    numel: Callable[[Any], int],
) -> None:
    """Raise ``TypeError`` naming the first non-floating or empty leaf of ``params``."""
    for leaf, path in zip(leaves, paths):
        if not is_floating(leaf):
            raise TypeError(
                f"`params` leaf {path} has dtype {leaf.dtype}; expected a floating-point "
                "array (sample only the model's real-valued parameters)"
            )
    if sum(numel(leaf) for leaf in leaves) == 0:
        raise ValueError("`params` has no elements: expected at least one parameter")
