"""Weight-refined estimates: ``restrict=`` selects the coordinates that move.

The chains then live in the d_V selected coordinates: the sampler's state, noise, drift,
localization and preconditioner are d_V-dimensional, and the loss sees the full parameters
rebuilt by one gather from the moving coordinates and the frozen ones (held at w*). So every
sampler, both chain methods and every backend run a restricted estimate unchanged, and a
vectorized run pays for the frozen coordinates only in the loss's own forward pass.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._backend import Array, Backend
from ._tree import match_leaves

__all__ = ["ComponentMask", "Restriction", "restriction"]


class ComponentMask:
    """A model component as slices of named parameters, usable as ``restrict=`` (it is a
    callable ``(name, array) -> mask``): the framework helpers build them (e.g.
    ``llc.backends.torch.attention_heads``), and ``|`` joins components.

    Parameters
    ----------
    masks
        Parameter name ↦ boolean array of that parameter's shape (the coordinates of the
        component); parameters not named are not part of it.
    """

    def __init__(self, masks: Mapping[str, np.ndarray]) -> None:
        self.masks = {name: np.asarray(mask, dtype=bool) for name, mask in masks.items()}

    def __call__(self, name: str, array: Any) -> Any:
        mask = self.masks.get(name)
        if mask is None:
            return False
        if mask.shape != tuple(np.shape(array)):
            raise ValueError(f"the component's mask of {name!r} has shape {mask.shape}; the "
                             f"parameter has shape {tuple(np.shape(array))}: build the masks "
                             "from the model whose params you pass")
        return mask

    def __or__(self, other: ComponentMask) -> ComponentMask:
        joined = dict(self.masks)
        for name, mask in other.masks.items():
            joined[name] = joined[name] | mask if name in joined else mask
        return ComponentMask(joined)

    @property
    def size(self) -> int:
        """The number of coordinates of the component."""
        return int(sum(mask.sum() for mask in self.masks.values()))

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}: {int(mask.sum())}/{mask.size}"
                          for name, mask in self.masks.items())
        return f"ComponentMask({parts})"


def block_mask(shape: tuple[int, ...], axis: int, start: int, stop: int) -> np.ndarray:
    """A boolean array of ``shape``, True where the index along ``axis`` is in
    ``[start, stop)`` (a head's rows or columns of a projection)."""
    mask = np.zeros(shape, dtype=bool)
    index: list[Any] = [slice(None)] * len(shape)
    index[axis] = slice(start, stop)
    mask[tuple(index)] = True
    return mask


class Restriction:
    """The coordinates a restricted run samples, and the map back to the full parameters.

    Attributes
    ----------
    free
        Boolean mask over the full flat parameters (in the order of ``backend.ravel``).
    center
        w* restricted to the free coordinates (d_V of them).
    unravel
        d_V-vector ↦ the params pytree, the frozen coordinates at w*.
    description
        JSON: per params leaf, its name, the coordinates selected and its size.
    """

    def __init__(self, free: np.ndarray, center: Array, unravel: Callable[[Array], Any],
                 backend: Backend, names: list[str]) -> None:
        free_index = np.flatnonzero(free)
        frozen_index = np.flatnonzero(~free)
        gather = np.empty(free.size, dtype=np.int64)
        gather[free_index] = np.arange(free_index.size)
        gather[frozen_index] = free_index.size + np.arange(frozen_index.size)
        self.free = free
        self._free_index = backend.asarray(free_index, like=center)
        self.center = backend.take(center, self._free_index)
        self._frozen = backend.take(center, backend.asarray(frozen_index, like=center))
        self._gather = backend.asarray(gather, like=center)
        self._unravel_full = unravel
        self._backend = backend
        self.names = names

    def unravel(self, vector: Array) -> Any:
        """The params pytree at the free coordinates ``vector``, the others at w*."""
        xp = self._backend.namespace(vector)
        full = self._backend.take(xp.concat([vector, self._frozen]), self._gather)
        return self._unravel_full(full)

    def hand_written_gradient(self, loss_and_grad: Callable[..., Any]) -> Callable[..., Any]:
        """``loss_and_grad`` of a backend without autodiff, whose gradient is the user's (over
        every coordinate), cut to the free ones."""
        def restricted(vector: Array, batch: Any) -> tuple[Any, Array]:
            loss, grad = loss_and_grad(vector, batch)
            return loss, self._backend.take(grad, self._free_index)

        return restricted

    def description(self, sizes: list[int]) -> str:
        offsets = np.cumsum([0, *sizes])
        return json.dumps([[name, int(self.free[start:stop].sum()), int(stop - start)]
                           for name, start, stop in zip(self.names, offsets[:-1], offsets[1:])])


def restriction(restrict: Any, params: Any, center: Array, unravel: Callable[[Array], Any],
                backend: Backend) -> Restriction:
    """The :class:`Restriction` of ``estimate``'s ``restrict=`` argument.

    ``restrict`` is one of:

    - a **mask pytree** mirroring ``params``: at each leaf ``True``/``False`` (the whole
      leaf) or a boolean array of the leaf's shape (per element: a head's slice of a fused
      QKV matrix); a bool in place of a subtree applies to every leaf below it;
    - **name patterns**: a string or a list of strings matched (``fnmatch``: ``*``, ``?``,
      ``[...]``) against the leaves' dotted names (``"encoder.layers.0.attn.q_proj.weight"``;
      list and tuple positions are numbers), a leaf moving if any pattern matches;
    - a **callable** ``(name, array) -> bool or boolean array`` of the leaf's shape, with the
      leaf's dotted name and its value as a NumPy array.

    Raises
    ------
    TypeError, ValueError
        Naming the path where a mask does not match ``params``, a mask of the wrong shape or
        dtype, or a restriction that selects no coordinate.
    """
    leaves = backend.leaves(params)
    named = _named_leaves(params, backend)
    names = [named.get(id(leaf), f"leaf{index}") for index, leaf in enumerate(leaves)]
    masks: dict[int, Any] = {}
    if callable(restrict) and type(restrict) is not type(params):  # not an Equinox-like mask
        for leaf, name in zip(leaves, names):
            masks[id(leaf)] = restrict(name, backend.to_numpy(leaf))
    elif isinstance(restrict, str) or (isinstance(restrict, Sequence)
                                       and all(isinstance(p, str) for p in restrict)):
        patterns = [restrict] if isinstance(restrict, str) else list(restrict)
        if not patterns:
            raise ValueError("`restrict` is an empty list of name patterns")
        for leaf, name in zip(leaves, names):
            masks[id(leaf)] = any(fnmatch.fnmatchcase(name, p) for p in patterns)
        if not any(masks.values()):
            raise ValueError(f"`restrict` patterns {patterns} match no parameter; the names "
                             f"are {names[:8]}{' ...' if len(names) > 8 else ''}")
    else:
        matched = match_leaves(restrict, params, backend.leaves, "restrict",
                               lambda value: isinstance(value, (bool, np.bool_)), "a bool")
        masks = {leaf: value for leaf, (_, value) in matched.items()}
    flat = []
    for leaf, name in zip(leaves, names):
        shape = tuple(int(n) for n in tuple(leaf.shape))
        mask = masks[id(leaf)]
        if backend.is_array(mask):
            mask = backend.to_numpy(mask)
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"`restrict` for {name!r} must be a bool or a boolean array; got "
                            f"dtype {mask.dtype}")
        if mask.shape not in ((), shape):
            raise ValueError(f"`restrict` for {name!r} has shape {mask.shape}; the parameter "
                             f"has shape {shape}")
        flat.append(np.broadcast_to(mask, shape).reshape(-1))
    free = np.concatenate(flat) if flat else np.zeros(0, dtype=bool)
    if not free.any():
        raise ValueError("`restrict` selects no coordinate: at least one must move")
    return Restriction(free, center, unravel, backend, names)


def _named_leaves(params: Any, backend: Backend, prefix: str = "") -> dict[int, str]:
    """Dotted names of the leaves of dicts, lists and tuples, keyed by ``id(leaf)``; a node
    of another kind (a framework's own pytree) names its leaves by position."""
    if isinstance(params, Mapping):
        names: dict[int, str] = {}
        for key, value in params.items():
            names.update(_named_leaves(value, backend, f"{prefix}{key}."))
        return names
    if isinstance(params, (list, tuple)):
        names = {}
        for index, value in enumerate(params):
            names.update(_named_leaves(value, backend, f"{prefix}{index}."))
        return names
    leaves = backend.leaves(params)
    if len(leaves) == 1 and leaves[0] is params:
        return {id(params): prefix.rstrip(".")}
    return {id(leaf): f"{prefix}{index}" for index, leaf in enumerate(leaves)}

