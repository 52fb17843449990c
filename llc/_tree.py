"""Minimal pytrees for plain Python containers (dict, list, tuple, namedtuple).

Backends whose frameworks have their own pytree registry (JAX) use that instead;
NumPy and PyTorch parameters are plain containers of arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TreeDef", "tree_builder", "tree_flatten", "tree_unflatten", "tree_map"]


@dataclass(frozen=True)
class TreeDef:
    """Structure of a container tree: node kind, keys or type, and children."""

    kind: str  # "leaf", "dict", "list", "tuple", "namedtuple"
    meta: Any = None  # (mapping type, keys) for dicts, the class for namedtuples
    children: tuple["TreeDef", ...] = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(child.num_leaves for child in self.children)


def tree_flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    """Return the leaves of ``tree`` in a fixed order and its structure.

    Dicts keep their insertion order (``nn.Module.named_parameters`` order).
    ``None`` is a leaf; containers are ``dict``, ``list``, ``tuple`` and namedtuples.
    """
    leaves: list[Any] = []
    return leaves, _flatten_into(tree, leaves)


# The recursions are module-level functions, not closures: a closure that calls itself is a
# reference cycle, which would keep every step's arrays alive until the garbage collector ran.
def _flatten_into(node: Any, leaves: list[Any]) -> TreeDef:
    if isinstance(node, Mapping):
        keys = tuple(node.keys())
        return TreeDef("dict", (type(node), keys),
                       tuple(_flatten_into(node[k], leaves) for k in keys))
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return TreeDef("namedtuple", type(node), tuple(_flatten_into(v, leaves) for v in node))
    if isinstance(node, (list, tuple)):
        kind = "list" if isinstance(node, list) else "tuple"
        return TreeDef(kind, None, tuple(_flatten_into(v, leaves) for v in node))
    leaves.append(node)
    return TreeDef("leaf")


def tree_unflatten(treedef: TreeDef, leaves: list[Any]) -> Any:
    """Inverse of :func:`tree_flatten`."""
    return _build(treedef, iter(leaves))


def tree_builder(treedef: TreeDef) -> Callable[[list[Any]], Any]:
    """``leaves -> tree_unflatten(treedef, leaves)``, with a shortcut for the most common tree,
    a plain dict of arrays (a sampler step pays the rebuild on every gradient)."""
    if treedef.kind == "dict" and treedef.meta[0] is dict \
            and all(child.kind == "leaf" for child in treedef.children):
        keys = treedef.meta[1]
        return lambda leaves: dict(zip(keys, leaves))
    return lambda leaves: tree_unflatten(treedef, leaves)


def _build(node: TreeDef, leaves: Iterator[Any]) -> Any:
    if node.kind == "leaf":
        return next(leaves)
    children = [_build(child, leaves) for child in node.children]
    if node.kind == "dict":
        mapping_type, keys = node.meta
        values = dict(zip(keys, children))
        return values if mapping_type is dict else mapping_type(values)
    if node.kind == "namedtuple":
        return node.meta(*children)
    if node.kind == "list":
        return children
    return tuple(children)


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leafwise to ``tree`` and trees of the same structure."""
    leaves, treedef = tree_flatten(tree)
    others = [tree_flatten(other)[0] for other in rest]
    return tree_unflatten(treedef, [fn(*args) for args in zip(leaves, *others)])
