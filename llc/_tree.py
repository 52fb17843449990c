"""Minimal pytrees for plain Python containers (dict, list, tuple, namedtuple).

Backends whose frameworks have their own pytree registry (JAX) use that instead;
NumPy and PyTorch parameters are plain containers of arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TreeDef", "match_leaves", "tree_builder", "tree_flatten", "tree_unflatten",
           "tree_map"]


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


def match_leaves(spec: Any, params: Any, leaves: Callable[[Any], list[Any]], path: str,
                 is_whole: Callable[[Any], bool], whole: str) -> dict[int, tuple[str, Any]]:
    """Pair a ``spec`` that mirrors ``params`` with the params' leaves:
    ``id(leaf) -> (path of its spec value, value)`` for every leaf.

    ``spec`` has the keys of every dict and the length of every list or tuple of ``params``,
    down to one value per leaf; a value for which ``is_whole`` holds stands for the whole
    subtree below it. A node of another kind (a framework's own pytree) takes such a value,
    or a pytree whose ``leaves`` pair one by one with its own. ``leaves`` is the backend's
    flattening; ``whole`` names the whole-subtree values in messages ("a number").

    Raises
    ------
    TypeError, ValueError
        Naming the path where ``spec`` does not mirror ``params``.
    """
    matched: dict[int, tuple[str, Any]] = {}

    def visit(value: Any, node: Any, here: str) -> None:
        if is_whole(value):
            for leaf in leaves(node):
                matched[id(leaf)] = (here, value)
        elif isinstance(node, Mapping):
            if not isinstance(value, Mapping):
                raise TypeError(f"`{here}` must be {whole} or a dict with the keys "
                                f"{sorted(map(str, node))}; got {type(value).__name__}")
            if set(value) != set(node):
                missing = sorted(map(str, set(node) - set(value)))
                extra = sorted(map(str, set(value) - set(node)))
                raise ValueError(f"`{here}` must have the keys of the params here"
                                 + (f"; missing {missing}" if missing else "")
                                 + (f"; not in params: {extra}" if extra else ""))
            for key in node:
                visit(value[key], node[key], f"{here}[{key!r}]")
        elif isinstance(node, (list, tuple)):
            if not isinstance(value, (list, tuple)) or len(value) != len(node):
                raise ValueError(f"`{here}` must be {whole} or a {type(node).__name__} of "
                                 f"{len(node)} entries, as the params here; got "
                                 f"{type(value).__name__}")
            for index, (child_value, child) in enumerate(zip(value, node)):
                visit(child_value, child, f"{here}[{index}]")
        else:
            node_leaves = leaves(node)
            if len(node_leaves) == 1 and node_leaves[0] is node:
                matched[id(node)] = (here, value)  # one leaf: its value, checked by the caller
                return
            value_leaves = [] if isinstance(value, (str, bytes)) else leaves(value)
            if len(value_leaves) != len(node_leaves):
                raise TypeError(f"`{here}` must be {whole} or a pytree of the params' "
                                f"structure with one per leaf; got {type(value).__name__}")
            for leaf, leaf_value in zip(node_leaves, value_leaves):
                matched[id(leaf)] = (here, leaf_value)

    visit(spec, params, path)
    return matched
