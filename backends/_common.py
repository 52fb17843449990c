"""Helpers shared by the adapters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


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


# ---- batches of the one-liners (from_module, from_flax, from_equinox, from_keras) -------

def split_last(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """The default ``unpack``: ``(inputs..., targets)``."""
    if isinstance(batch, Mapping):
        raise TypeError(
            f"the batches are dicts (keys {sorted(map(str, batch))}); say how one "
            "maps to the model's inputs and targets with `unpack=`, e.g. "
            "unpack=next_token() with causal_lm_loss for a causal language model, or "
            "unpack=lambda b: ((b['x'],), {}, b['y'])")
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            "a batch must be a tuple (inputs..., targets) of at least two arrays "
            f"(got {type(batch).__name__}); for token sequences whose targets are the next "
            "tokens pass unpack=next_token()")
    *inputs, targets = batch
    return tuple(inputs), {}, targets


def unpack_checked(unpack: Callable[[Any], Any]) -> Callable[[Any], tuple[tuple[Any, ...],
                                                                    dict[str, Any], Any]]:
    def split(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        unpacked = unpack(batch)
        if not (isinstance(unpacked, tuple) and len(unpacked) == 3
                and isinstance(unpacked[0], (tuple, list)) and isinstance(unpacked[1], Mapping)):
            raise TypeError("`unpack(batch)` must return (args, kwargs, targets): a tuple of "
                            "positional inputs, a dict of keyword inputs and the targets; got "
                            f"{type(unpacked).__name__}")
        return tuple(unpacked[0]), dict(unpacked[1]), unpacked[2]

    return split


def next_token(tokens: str | int = "input_ids", *, mask: str | None = "attention_mask",
               mask_argument: str | None = "attention_mask", keyword: str | None = None
               ) -> Callable[[Any], tuple[tuple[Any, ...], dict[str, Any], Any]]:
    """An ``unpack`` for causal language models (any framework's arrays): inputs are the tokens but
    the last, targets the tokens but the first (predict token t + 1 from tokens ≤ t).

    Parameters
    ----------
    tokens
        Where the token ids are: a key of a dict batch (default ``"input_ids"``) or an index
        of a tuple batch; a batch that is one tensor is the tokens themselves.
    mask
        The key of a 0/1 padding mask in a dict batch (default ``"attention_mask"``; ignored
        when absent). Its shifted copy travels with the targets, so that
        :func:`causal_lm_loss` averages over the real tokens only.
    mask_argument
        The model's keyword for the (shortened) mask, e.g. Hugging Face's
        ``"attention_mask"``; None passes no mask to the model.
    keyword
        Pass the inputs as this keyword (e.g. ``"input_ids"``) instead of positionally.

    Returns
    -------
    callable
        ``unpack(batch) -> (args, kwargs, targets)`` with ``targets`` the next tokens, or
        ``(next tokens, their mask)`` when the batch has a mask.
    """
    def unpack(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        if isinstance(batch, Mapping):
            if tokens not in batch:
                raise KeyError(f"next_token: the batch has no {tokens!r}; its keys are "
                               f"{sorted(map(str, batch))} (pass tokens=...)")
            ids = batch[tokens]
            padding = batch.get(mask) if mask is not None else None
        elif isinstance(batch, (tuple, list)):
            ids = batch[tokens if isinstance(tokens, int) else 0]
            padding = None
        else:
            ids, padding = batch, None
        if len(getattr(ids, "shape", ())) < 2 or ids.shape[1] < 2:
            raise ValueError("next_token: the tokens must be a tensor (batch, length ≥ 2); got "
                             f"{getattr(ids, 'shape', type(ids).__name__)}")
        kwargs: dict[str, Any] = {}
        if keyword is None:
            args: tuple[Any, ...] = (ids[:, :-1],)
        else:
            args, kwargs[keyword] = (), ids[:, :-1]
        if padding is None:
            return args, kwargs, ids[:, 1:]
        if mask_argument is not None:
            kwargs[mask_argument] = padding[:, :-1]
        return args, kwargs, (ids[:, 1:], padding[:, 1:])

    return unpack


def check_reduction(reduction: Any) -> None:
    """``reduction`` of a ``causal_lm_loss``: ``"mean"`` or ``"none"``."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"`reduction` must be 'mean' or 'none'; got {reduction!r}")


def heads_along_an_axis(parts: list[tuple[str, tuple[int, ...], int]], num_heads: int,
                        prefix: str) -> dict[str, Any]:
    """Per-head :class:`llc.ComponentMask` objects of an attention whose projections keep the
    heads on an axis of their own (Flax's ``MultiHeadDotProductAttention``, Keras's
    ``MultiHeadAttention``: query/key/value kernels (E, H, d), biases (H, d), output kernel
    (H, d, E)). ``parts`` are (parameter name, shape, head axis); the output bias is shared
    and is not part of any head."""
    from llc._restrict import ComponentMask, block_mask

    for name, shape, axis in parts:
        if shape[axis] != num_heads:
            raise ValueError(f"{name!r} has shape {shape}: expected {num_heads} heads on axis "
                             f"{axis}")
    return {f"{prefix}head{head}": ComponentMask({name: block_mask(shape, axis, head, head + 1)
                                                  for name, shape, axis in parts})
            for head in range(num_heads)}
