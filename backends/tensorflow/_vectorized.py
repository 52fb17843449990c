"""Vectorized chains in TensorFlow: ``tf.vectorized_map`` over the chains, a
``tf.while_loop`` over the steps, and the one private TensorFlow internal llc uses (pfor's
helpers, fenced in :func:`_pfor_module` with pfor's own conversion as the fallback)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from ._compile import _function
from ._devices import _device_of

# ---- vectorized chains ---------------------------------------------------------------------

# The stateless random ops that llc's keys go through (fold_in, normal, permutation,
# integers). pfor has no batched kernel for them (one seed per op): with a different seed per
# chain it runs each in a tf.while_loop over the chains, tens of µs per op and step on a CPU,
# which made 2 chains of a small model cost 2-3x more per step than with the ops unrolled.
# They are marked so that pfor unrolls them instead (one op per chain, the same numbers), see
# _per_chain_converter.
_RANDOM_OPS = frozenset({"StatelessRandomGetKeyCounter", "StatelessRandomNormalV2",
                         "StatelessRandomUniformFullIntV2", "StatelessRandomUniformIntV2",
                         "StatelessShuffle"})
_THROUGH_OPS = _RANDOM_OPS | {"Pack", "Mul", "AddV2"}  # between those ops and the result


@functools.cache
def _pfor_module() -> Any:
    """TensorFlow's pfor module if it has the (private) helpers the per-chain converter uses,
    else ``None``: the random ops then keep pfor's own while-loop conversion."""
    try:
        from tensorflow.python.ops.parallel_for import pfor
    except ImportError:  # pragma: no cover - layout of another TensorFlow version
        return None
    helpers = ("_create_op", "wrap", "_fallback_converter")
    return pfor if all(hasattr(pfor, name) for name in helpers) else None


def _per_chain_converter(pfor_input: Any) -> Any:
    """pfor conversion of a stateless random op with per-chain inputs: the op once per chain,
    on that chain's inputs, stacked; the same numbers as pfor's while loop, without the loop.

    The number of chains is the static leading dimension of the stacked inputs; where it is
    unknown (inside a branch that only some chains take), pfor's while loop is used.
    """
    pfor = _pfor_module()
    try:
        inputs = [(tensor, stacked) for tensor, stacked, _ in pfor_input.inputs]
        lengths = {tensor.shape[0] for tensor, stacked in inputs if stacked}
        if len(lengths) != 1 or None in lengths:
            return pfor._fallback_converter(pfor_input)
        dtypes = [output.dtype for output in pfor_input.outputs]
        per_chain = [
            pfor._create_op(pfor_input.op_type,
                            [tensor[chain] if stacked else tensor for tensor, stacked in inputs],
                            dtypes, attrs=pfor_input.op.node_def.attr).outputs
            for chain in range(lengths.pop())]
    except (AttributeError, TypeError, ValueError):  # pfor internals of another TF version
        return pfor._fallback_converter(pfor_input)
    return [pfor.wrap(tf.stack(list(outputs)), True) for outputs in zip(*per_chain)]


def _unrolled_under_pfor(result: tf.Tensor) -> tf.Tensor:
    """``result``, with the stateless random ops that produced it marked for
    :func:`_per_chain_converter` (graph mode; pfor reads an op's ``pfor_converter``).

    Nothing changes outside ``tf.vectorized_map``: the marks only choose how pfor converts.
    """
    if tf.executing_eagerly() or _pfor_module() is None:
        return result
    pending, seen = [(result.op, 0)], set()
    while pending:
        op, depth = pending.pop()
        if op.type not in _THROUGH_OPS or depth > 4 or op.name in seen:
            continue
        seen.add(op.name)
        if op.type in _RANDOM_OPS:
            op.pfor_converter = _per_chain_converter
        if op.type != "StatelessRandomGetKeyCounter":  # not into the ops that made the seed
            pending.extend((tensor.op, depth + 1) for tensor in op.inputs)
    return result


def _placement(tree: Any) -> str:
    """The device to run a compiled block on: the first accelerator among the tensors of
    ``tree`` (the params and data; keys live on the CPU), else the first tensor's device."""
    devices = [_device_of(leaf) for leaf in tf.nest.flatten(tree)
               if isinstance(leaf, (tf.Tensor, tf.Variable))]
    devices = [device for device in devices if device]
    for device in devices:
        if (tf.DeviceSpec.from_string(device).device_type or "CPU").upper() != "CPU":
            return device
    return devices[0] if devices else ""


class TensorFlowTransforms:
    """The vectorized runner's transformations in TensorFlow (:class:`llc.ChainTransforms`).

    ``vmap`` is ``tf.vectorized_map`` (pfor: the graph of one chain rewritten into batched
    ops; the stateless random ops run once per chain, unrolled), ``scan`` a ``tf.while_loop``
    writing each step's outputs to ``tf.TensorArray`` objects, ``cond`` is ``tf.cond`` and
    ``jit`` is ``tf.function`` with ``reduce_retracing``: a block is traced once, and once
    more (with an unknown number of steps) the first time a block of another length comes.
    """

    def vmap(self, fn: Callable[..., Any], in_axes: tuple[int | None, ...]) -> Callable[..., Any]:
        """``fn`` mapped over axis 0 of the arguments whose ``in_axes`` entry is 0; the others
        are shared by every chain (pfor sees them as loop invariants)."""
        if any(axis not in (0, None) for axis in in_axes):
            raise ValueError(f"`in_axes` entries must be 0 or None; got {in_axes}")

        def mapped(*args: Any) -> Any:
            batched = tuple(arg for arg, axis in zip(args, in_axes) if axis == 0)

            def one_chain(elements: tuple[Any, ...]) -> Any:
                items = iter(elements)
                return fn(*(next(items) if axis == 0 else arg
                            for arg, axis in zip(args, in_axes)))

            # An op pfor cannot batch runs in a while loop over the chains (pfor logs a
            # warning naming it): slower, still correct.
            return tf.vectorized_map(one_chain, batched, fallback_to_while_loop=True)

        return mapped

    def scan(self, body: Callable[[Any, Any], tuple[Any, Any]], carry: Any, xs: tf.Tensor
             ) -> tuple[Any, Any]:
        """``body(carry, x)`` over the rows of ``xs`` in a ``tf.while_loop``; the per-row
        outputs stacked along a new axis 0.

        ``body`` is traced once, as a concrete function (its outputs' structure, dtypes and
        shapes size the ``TensorArray`` objects), and that function is called in the loop.
        """

        def spec(tensor: tf.Tensor) -> tf.TensorSpec:
            return tf.TensorSpec(tensor.shape, tensor.dtype)

        step = _function(body, autograph=False).get_concrete_function(
            tf.nest.map_structure(spec, carry), tf.TensorSpec(xs.shape[1:], xs.dtype))
        length = tf.shape(xs)[0]
        outputs = tf.nest.map_structure(
            lambda y: tf.TensorArray(y.dtype, size=length, element_shape=y.shape),
            step.structured_outputs[1])

        def loop(index: tf.Tensor, carry: Any, outputs: Any) -> tuple[Any, Any, Any]:
            carry, ys = step(carry, xs[index])
            outputs = tf.nest.map_structure(lambda array, y: array.write(index, y), outputs, ys)
            return index + 1, carry, outputs

        _, carry, outputs = tf.while_loop(lambda index, *_: index < length, loop,
                                          (tf.constant(0), carry, outputs))
        return carry, tf.nest.map_structure(lambda array: array.stack(), outputs)

    def cond(self, pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
        """``tf.cond``; pfor keeps a predicate shared by all chains as one ``tf.cond``."""
        return tf.cond(pred, true_fn, false_fn)

    def jit(self, fn: Callable[..., Any], donate_argnums: tuple[int, ...] = ()
            ) -> Callable[..., Any]:
        """``fn`` as a ``tf.function`` run on the arguments' accelerator, if any.

        ``reduce_retracing`` relaxes only what changes between calls (the number of steps of
        a block): the chains, params and data keep static shapes, and minibatches have the
        static ``batch_size``, so ``loss_fn`` still sees exact shapes. The result carries
        ``experimental_get_tracing_count()``, the number of traces so far, and
        ``get_concrete_function(*args)``, the traced program for ``args``.
        """
        compiled = _function(fn, autograph=False, reduce_retracing=True)

        def placed(method: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any) -> Any:
                device = _placement(args)
                with tf.device(device) if device else contextlib.nullcontext():
                    return method(*args)
            return call

        run = placed(compiled)
        run.get_concrete_function = placed(  # type: ignore[attr-defined]
            compiled.get_concrete_function)
        run.experimental_get_tracing_count = (  # type: ignore[attr-defined]
            compiled.experimental_get_tracing_count)
        return run

    def worthwhile(self, num_chains: int, like: Any) -> bool:
        return True  # one compiled program per block beats a dispatch per chain and step


class _Replicated:
    """A tree copied once to each of some devices (:func:`over_devices`' ``replicate``)."""

    def __init__(self, tree: Any, devices: tuple[str, ...]) -> None:
        self.copies = {}
        for device in devices:
            with tf.device(device):
                self.copies[device] = tf.nest.map_structure(tf.identity, tree)


def over_devices(fn: Callable[..., Any], devices: tuple[str, ...],
                 in_axes: tuple[int | None, ...], out_axes: tuple[int, ...]
                 ) -> Callable[..., Any]:
    """``fn`` as one ``tf.function`` placed on each device in turn (``tf.device``) over its
    consecutive share of the chains — TensorFlow's per-device placement of chain groups: the
    calls are dispatched one device after another (asynchronous on accelerators), and the
    outputs joined along ``out_axes``. ``replicate(tree)`` copies ``tree`` to every device
    once; such an argument is then read on each device from its own copy."""
    if any(axis not in (0, None) for axis in in_axes):
        raise ValueError(f"`in_axes` entries must be 0 or None; got {in_axes}")
    compiled = _function(fn, autograph=False, reduce_retracing=True)

    def call(*args: Any) -> Any:
        chains = next(int(tf.nest.flatten(arg)[0].shape[0])
                      for arg, axis in zip(args, in_axes) if axis == 0)
        share = chains // len(devices)
        outputs = []
        for index, device in enumerate(devices):
            part = slice(index * share, (index + 1) * share)
            with tf.device(device):
                outputs.append(compiled(*(
                    arg.copies[device] if isinstance(arg, _Replicated)
                    else tf.nest.map_structure(lambda x: x[part], arg) if axis == 0 else arg
                    for arg, axis in zip(args, in_axes))))
        return tuple(tf.nest.map_structure(lambda *parts, axis=axis: tf.concat(parts, axis),
                                           *[output[position] for output in outputs])
                     for position, axis in enumerate(out_axes))

    call.replicate = lambda tree: _Replicated(tree, devices)  # type: ignore[attr-defined]
    return call


