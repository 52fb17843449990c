"""TensorFlow adapter: params are a dict (or list/tuple) of ``tf.Tensor`` or ``tf.Variable``.

Gradients come from ``tf.GradientTape`` on the flat parameter vector, whose pieces
(``tf.split`` + ``tf.reshape``) are handed to ``loss_fn``; the loss, its gradient and the
sampler's whole step are compiled with ``tf.function`` (:meth:`TensorFlowBackend.compile`).
With array data the chains run vectorized (:class:`TensorFlowTransforms`): each block of steps
of all chains is one ``tf.function``, the chains batched by ``tf.vectorized_map``. Keys are
shape-[2] ``int64`` seeds of TensorFlow's stateless Philox generator, so noise and minibatch
order are pure functions of (seed, chain, step), and no global random state is read or
written. Noise, minibatches and the sampler state live on the params' device (CPU or GPU).

The user's ``tf.Variable`` objects are read once (a copy of their values is w*) and never
assigned. :func:`from_keras` is the one-line path from a Keras 3 model. TensorFlow has no
array-API namespace of its own: :data:`namespace` is a small one (what llc's samplers and
built-in problems use, plus common elementwise functions), returned by
``llc.array_namespace(tensor)``.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import inspect
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import tensorflow as tf

from llc import _rng
from llc._programs import program_cache
from llc._tree import tree_flatten, tree_unflatten

from ._common import (StackedRows, check_floating, check_reduction, leaf_paths, next_token,
                      scaled_sum, split_last, unpack_checked)

__all__ = ["backend", "causal_lm_loss", "from_keras", "namespace", "next_token"]

# "auto_select" is Philox on CPU and GPU (ThreeFry on TPU) and gives the same numbers as
# alg="philox", which costs ~0.6 ms more per eager call in TF 2.21.
_ALG = "auto_select"
_MASK64 = (1 << 64) - 1


# ---- the array-API namespace ---------------------------------------------------------------

def _like(value: Any, other: tf.Tensor) -> tf.Tensor:
    """``value`` as a tensor; Python scalars take ``other``'s dtype (array-API promotion)."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return tf.convert_to_tensor(value)
    return tf.convert_to_tensor(value, dtype=tf.convert_to_tensor(other).dtype)


class _Linalg:
    """``xp.linalg`` of :class:`TensorFlowNamespace`."""

    @staticmethod
    def vector_norm(x: tf.Tensor, /, *, axis: int | tuple[int, ...] | None = None,
                    keepdims: bool = False, ord: float = 2) -> tf.Tensor:
        """The ``ord``-norm over ``axis`` (all elements when ``None``)."""
        magnitude = tf.abs(x)
        if ord == 2:
            return tf.sqrt(tf.reduce_sum(magnitude * magnitude, axis=axis, keepdims=keepdims))
        if ord == 1:
            return tf.reduce_sum(magnitude, axis=axis, keepdims=keepdims)
        if ord == math.inf:
            return tf.reduce_max(magnitude, axis=axis, keepdims=keepdims)
        if ord == -math.inf:
            return tf.reduce_min(magnitude, axis=axis, keepdims=keepdims)
        power = tf.reduce_sum(magnitude ** ord, axis=axis, keepdims=keepdims)
        return power ** (1.0 / ord)

    @staticmethod
    def matrix_transpose(x: tf.Tensor, /) -> tf.Tensor:
        """Swap the last two axes."""
        return tf.linalg.matrix_transpose(x)


class TensorFlowNamespace:
    """A small array-API namespace for ``tf.Tensor`` (array-api-compat does not cover TF).

    It holds what llc's core and built-in problems call, with array-API signatures, and a few
    common functions for hand-written losses: reductions (``sum``, ``mean``, ``max``,
    ``min``), ``matmul``, ``matrix_transpose``, ``permute_dims``, ``reshape``,
    ``expand_dims``, ``squeeze``, ``stack``, ``concat``, ``where``, ``clip``, ``maximum``,
    ``minimum``, elementwise functions, ``zeros_like``/``ones_like``, ``astype``,
    ``asarray`` and ``linalg.vector_norm``. It is not a complete array-API implementation;
    ``tf.experimental.numpy`` is only NumPy-like. Python scalars in binary functions take the
    tensor argument's dtype.
    """

    linalg = _Linalg()
    float16, float32, float64 = tf.float16, tf.float32, tf.float64
    int32, int64, bool = tf.int32, tf.int64, tf.bool

    def __repr__(self) -> str:
        return "<llc.backends.tensorflow.namespace>"

    # reductions
    @staticmethod
    def sum(x: tf.Tensor, /, *, axis: int | tuple[int, ...] | None = None, dtype: Any = None,
            keepdims: builtins.bool = False) -> tf.Tensor:
        return tf.reduce_sum(x if dtype is None else tf.cast(x, dtype), axis=axis,
                             keepdims=keepdims)

    @staticmethod
    def mean(x: tf.Tensor, /, *, axis: int | tuple[int, ...] | None = None,
             keepdims: builtins.bool = False) -> tf.Tensor:
        return tf.reduce_mean(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def max(x: tf.Tensor, /, *, axis: int | tuple[int, ...] | None = None,
            keepdims: builtins.bool = False) -> tf.Tensor:
        return tf.reduce_max(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def min(x: tf.Tensor, /, *, axis: int | tuple[int, ...] | None = None,
            keepdims: builtins.bool = False) -> tf.Tensor:
        return tf.reduce_min(x, axis=axis, keepdims=keepdims)

    # linear algebra and shapes
    @staticmethod
    def matmul(x1: tf.Tensor, x2: tf.Tensor, /) -> tf.Tensor:
        """Matrix product with the array-API rules for 1-d operands and batch broadcasting."""
        vector1, vector2 = x1.shape.rank == 1, x2.shape.rank == 1
        if vector1 and vector2:
            return tf.tensordot(x1, x2, 1)
        if vector1:
            return tf.squeeze(tf.linalg.matmul(tf.expand_dims(x1, 0), x2), -2)
        if vector2:
            return tf.squeeze(tf.linalg.matmul(x1, tf.expand_dims(x2, -1)), -1)
        return tf.linalg.matmul(x1, x2)

    @staticmethod
    def matrix_transpose(x: tf.Tensor, /) -> tf.Tensor:
        return tf.linalg.matrix_transpose(x)

    @staticmethod
    def permute_dims(x: tf.Tensor, /, axes: Sequence[int]) -> tf.Tensor:
        return tf.transpose(x, perm=list(axes))

    @staticmethod
    def reshape(x: tf.Tensor, /, shape: Sequence[int], *,
                copy: builtins.bool | None = None) -> tf.Tensor:
        return tf.reshape(x, shape)

    @staticmethod
    def expand_dims(x: tf.Tensor, /, *, axis: int = 0) -> tf.Tensor:
        return tf.expand_dims(x, axis)

    @staticmethod
    def squeeze(x: tf.Tensor, /, axis: int | tuple[int, ...]) -> tf.Tensor:
        return tf.squeeze(x, axis)

    @staticmethod
    def stack(arrays: Sequence[tf.Tensor], /, *, axis: int = 0) -> tf.Tensor:
        return tf.stack(list(arrays), axis=axis)

    @staticmethod
    def concat(arrays: Sequence[tf.Tensor], /, *, axis: int | None = 0) -> tf.Tensor:
        if axis is None:
            return tf.concat([tf.reshape(array, [-1]) for array in arrays], 0)
        return tf.concat(list(arrays), axis)

    # selection and elementwise
    @staticmethod
    def where(condition: tf.Tensor, x1: Any, x2: Any, /) -> tf.Tensor:
        reference = x1 if isinstance(x1, (tf.Tensor, tf.Variable)) else x2
        return tf.where(condition, _like(x1, reference), _like(x2, reference))

    @staticmethod
    def clip(x: tf.Tensor, /, min: Any = None, max: Any = None) -> tf.Tensor:
        if min is not None:
            x = tf.maximum(x, _like(min, x))
        if max is not None:
            x = tf.minimum(x, _like(max, x))
        return x

    @staticmethod
    def maximum(x1: Any, x2: Any, /) -> tf.Tensor:
        reference = x1 if isinstance(x1, (tf.Tensor, tf.Variable)) else x2
        return tf.maximum(_like(x1, reference), _like(x2, reference))

    @staticmethod
    def minimum(x1: Any, x2: Any, /) -> tf.Tensor:
        reference = x1 if isinstance(x1, (tf.Tensor, tf.Variable)) else x2
        return tf.minimum(_like(x1, reference), _like(x2, reference))

    abs = staticmethod(tf.abs)
    exp = staticmethod(tf.exp)
    expm1 = staticmethod(tf.math.expm1)
    log = staticmethod(tf.math.log)
    log1p = staticmethod(tf.math.log1p)
    sqrt = staticmethod(tf.sqrt)
    square = staticmethod(tf.square)
    tanh = staticmethod(tf.tanh)
    sign = staticmethod(tf.sign)
    isfinite = staticmethod(tf.math.is_finite)
    isnan = staticmethod(tf.math.is_nan)

    # creation and conversion
    @staticmethod
    def arange(start: int, /, stop: int | None = None, step: int = 1, *, dtype: Any = None,
               device: Any = None) -> tf.Tensor:
        return tf.range(start, stop, step, dtype=dtype or tf.int64)

    @staticmethod
    def zeros_like(x: tf.Tensor, /, *, dtype: Any = None) -> tf.Tensor:
        return tf.zeros_like(x, dtype=dtype)

    @staticmethod
    def ones_like(x: tf.Tensor, /, *, dtype: Any = None) -> tf.Tensor:
        return tf.ones_like(x, dtype=dtype)

    @staticmethod
    def astype(x: tf.Tensor, dtype: Any, /, *, copy: builtins.bool = True) -> tf.Tensor:
        return tf.cast(x, dtype)

    @staticmethod
    def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None,
                copy: builtins.bool | None = None) -> tf.Tensor:
        return tf.convert_to_tensor(obj, dtype=dtype)


#: The namespace returned by ``llc.array_namespace(tensor)`` for TensorFlow tensors.
namespace = TensorFlowNamespace()


# ---- devices -------------------------------------------------------------------------------

def _device_of(x: Any) -> str:
    """``x``'s device name, or ``""`` inside a ``tf.function`` (no placement known yet)."""
    try:
        return x.device or ""
    except (AttributeError, RuntimeError):
        return ""


def _on(x: Any) -> contextlib.AbstractContextManager[Any]:
    """A ``tf.device`` scope on ``x``'s device (nothing inside a ``tf.function``)."""
    device = _device_of(x)
    return tf.device(device) if device else contextlib.nullcontext()


def _tf_device(device: str) -> str:
    """A TensorFlow device name for ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"gpu:0"``, ..."""
    text = str(device)
    if text.startswith("/"):
        return text
    name, _, index = text.partition(":")
    kind = {"cuda": "GPU", "gpu": "GPU", "cpu": "CPU"}.get(name.lower())
    if kind is None or not (index or "0").isdigit():
        raise ValueError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    return f"/{kind}:{index or 0}"


def _describe_device(device: str) -> str:
    if not device:
        return "cpu"
    spec = tf.DeviceSpec.from_string(device)
    if (spec.device_type or "CPU").upper() == "CPU":
        return "cpu"
    return f"cuda:{spec.device_index or 0}"


# ---- the adapter ---------------------------------------------------------------------------

def _is_keras_variable(obj: Any) -> bool:
    """A Keras 3 variable of the TensorFlow backend (``model.trainable_variables``)."""
    keras = sys.modules.get("keras")
    variable = getattr(keras, "Variable", None)
    return (keras is not None and variable is not None and isinstance(obj, variable)
            and keras.backend.backend() == "tensorflow")


def _value(leaf: Any) -> tf.Tensor:
    """The value of a tensor or variable, on its device (a snapshot: later assignments to a
    variable do not show in it)."""
    if isinstance(leaf, tf.Tensor):
        return leaf
    with _on(leaf):
        return tf.identity(tf.convert_to_tensor(leaf))


def _promote(dtypes: list[tf.DType]) -> tf.DType:
    """The widest floating dtype; float16 with bfloat16 gives float32."""
    widest = max(dtype.size for dtype in dtypes)
    candidates = {dtype for dtype in dtypes if dtype.size == widest}
    return candidates.pop() if len(candidates) == 1 else tf.float32


def _as_int64(value: int) -> int:
    """An integer reduced mod 2**64 into the range of a signed int64."""
    value = int(value) & _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


class _Unravel:
    """A flat vector back to the params' pytree (views cast to each leaf's dtype); equal to
    every other of the same structure, shapes and dtypes, so that the programs keyed by it
    are reused."""

    def __init__(self, treedef: Any, shapes: list[list[int]], dtypes: list[Any],
                 dtype: Any) -> None:
        self.treedef, self.shapes, self.dtypes, self.dtype = treedef, shapes, dtypes, dtype
        self.sizes = [math.prod(shape) for shape in shapes]
        self._key = (treedef, tuple(map(tuple, shapes)), tuple(d.name for d in dtypes),
                     dtype.name)

    def __call__(self, vector: tf.Tensor) -> Any:
        pieces = tf.split(vector, self.sizes) if len(self.sizes) > 1 else [vector]
        views = []
        for piece, shape, leaf_dtype in zip(pieces, self.shapes, self.dtypes):
            piece = tf.reshape(piece, shape)
            views.append(piece if leaf_dtype == self.dtype else tf.cast(piece, leaf_dtype))
        return tree_unflatten(self.treedef, views)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unravel) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)


def _function(fn: Callable[..., Any], **options: Any) -> Any:
    """``tf.function`` with exact shapes: a loss may read static shapes (``x.shape[0]``).

    It retraces once per distinct batch shape: one for array data (a fixed ``batch_size``)
    and at most two more for the chunks of the loss at w*; ``reduce_retracing`` would give
    ``loss_fn`` unknown batch dimensions (``None``) instead. ``fn`` is wrapped in a
    ``functools.partial`` because TensorFlow counts traces per code object across all
    ``tf.function`` objects: each ``llc.estimate`` call builds new functions from the same
    code, and after a few calls (checkpoints of one training run) TensorFlow would warn about
    "excessive retracing" that is none.
    """
    return tf.function(functools.partial(fn), **options)


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


class TensorFlowBackend:
    """Adapter for ``tf.Tensor`` and ``tf.Variable`` parameters on one device (CPU or GPU)."""

    name = "tensorflow"
    reuses_programs = True  # llc._programs: compiled steps and blocks outlive a call
    has_autodiff = True
    chain_transforms = TensorFlowTransforms()  # vectorized chains for array data

    # ---- arrays -------------------------------------------------------------------------
    def is_array(self, obj: Any) -> bool:
        return isinstance(obj, (tf.Tensor, tf.Variable)) or _is_keras_variable(obj)

    def namespace(self, x: Any) -> TensorFlowNamespace:
        return namespace

    def asarray(self, x: Any, *, like: tf.Tensor) -> tf.Tensor:
        with _on(like):
            tensor = _value(x) if self.is_array(x) else tf.convert_to_tensor(np.asarray(x))
            if tensor.dtype.is_floating and tensor.dtype != like.dtype:
                tensor = tf.cast(tensor, like.dtype)
            device = _device_of(like)
            if device and _describe_device(_device_of(tensor)) != _describe_device(device):
                tensor = tf.identity(tensor)  # a copy on like's device
            return tensor

    def from_numpy(self, x: Any, *, dtype: str | None = None, device: str | None = None
                   ) -> tf.Tensor:
        array = np.array(x, copy=True)  # TF may share a NumPy buffer: never the caller's
        scope = tf.device(_tf_device(device)) if device is not None else contextlib.nullcontext()
        with scope:
            tensor = tf.identity(tf.convert_to_tensor(array))
            return tf.cast(tensor, dtype) if dtype is not None else tensor

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.array(_value(x).numpy(), copy=True)

    def stack(self, xs: list[tf.Tensor]) -> tf.Tensor:
        with _on(xs[0]):
            return tf.stack(xs)

    def row_buffer(self, num_rows: int, num_columns: int) -> StackedRows:
        return StackedRows(self.stack, self.to_numpy, num_rows, num_columns)

    def take(self, x: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        with _on(x):
            return tf.gather(x, indices)

    def linear_combination(self, *terms: tuple[Any, tf.Tensor], reuse: int | None = None
                           ) -> tf.Tensor:
        return scaled_sum(terms)

    def describe(self, x: Any) -> dict[str, str]:
        return {"device": _describe_device(_device_of(x)), "dtype": x.dtype.name}

    # ---- params -------------------------------------------------------------------------
    def leaves(self, params: Any) -> list[Any]:
        # llc's own container rules (dicts in insertion order), not tf.nest (sorted keys):
        # the flat vector then has the same order as with NumPy and PyTorch params.
        return tree_flatten(params)[0]

    def ravel(self, params: Any) -> tuple[tf.Tensor, Callable[[tf.Tensor], Any]]:
        leaves, treedef = tree_flatten(params)
        values = [_value(leaf) for leaf in leaves]
        check_floating(
            [SimpleNamespace(dtype=value.dtype.name, value=value) for value in values],
            leaf_paths(params),
            lambda info: info.value.dtype.is_floating,
            lambda info: info.value.shape.num_elements(),
        )
        devices = {_describe_device(_device_of(value)) for value in values}
        if len(devices) > 1:
            raise ValueError(f"`params` are spread over devices {sorted(devices)}; expected "
                             "all on one device")
        dtypes = [value.dtype for value in values]
        dtype = _promote(dtypes)
        shapes = [value.shape.as_list() for value in values]
        with _on(values[0]):
            flat = tf.concat([tf.reshape(tf.cast(value, dtype), [-1]) for value in values], 0)
            flat = tf.identity(flat)  # a copy that shares nothing with the user's arrays

        return flat, _Unravel(treedef, shapes, dtypes, dtype)

    # ---- loss and grad ------------------------------------------------------------------
    def value_and_grad(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        """``f(flat, batch) -> (loss, grad)`` by ``tf.GradientTape``, compiled by ``tf.function``.

        ``loss_fn`` is traced (AutoGraph on), not run eagerly per step: Python side effects
        in it run at tracing only, and it must not call ``.numpy()`` on its tensors. The
        function is kept per (``loss_fn``, parameter structure) and reused by later calls.
        """
        return program_cache(self).get(("value_and_grad", loss_fn, unravel),
                                       lambda: self._value_and_grad(loss_fn, unravel))

    def _value_and_grad(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):

        def loss_and_grad(flat: tf.Tensor, batch: Any) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(flat)
                loss = _check_loss(loss_fn(unravel(flat), batch), flat.dtype)
            grad = tape.gradient(loss, flat)
            if grad is None:
                raise TypeError(
                    "`loss_fn` does not use the `params` it is given (the gradient is "
                    "disconnected or not differentiable); compute the loss from the `params` "
                    "argument with differentiable TensorFlow operations, e.g. through "
                    "llc.backends.tensorflow.from_keras"
                )
            return loss, tf.convert_to_tensor(grad)

        return _function(loss_and_grad)

    def value(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        return program_cache(self).get(("value", loss_fn, unravel),
                                       lambda: self._value(loss_fn, unravel))

    def _value(self, loss_fn: Callable[..., Any], unravel: Callable[..., Any]):
        def loss_only(flat: tf.Tensor, batch: Any) -> tf.Tensor:
            return _check_loss(loss_fn(unravel(flat), batch), flat.dtype)

        return _function(loss_only)

    def compile(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """``step(..., key, state, batch, diagnose)`` compiled with ``tf.function``.

        ``diagnose`` is static: one traced function per value (``functools.partial``), so a
        run with array data traces two graphs (one per flag); an iterable whose last batch is
        shorter adds one per flag. The keys, states and batches are tensors of fixed shapes
        and dtypes, so nothing else retraces. The result carries
        ``experimental_get_tracing_count()``, the number of traces so far.
        """
        traced = {flag: _function(functools.partial(step, diagnose=flag), autograph=False)
                  for flag in (False, True)}
        position = list(inspect.signature(step).parameters).index("diagnose")

        def compiled(*args: Any, diagnose: bool = False) -> Any:
            if len(args) > position:  # ``diagnose`` given by position
                args, diagnose = args[:position], args[position]
            with _on(args[-2][0]):  # the state, second to last; its first field the position
                return traced[bool(diagnose)](*args)

        compiled.experimental_get_tracing_count = lambda: sum(  # type: ignore[attr-defined]
            function.experimental_get_tracing_count() for function in traced.values())
        return compiled

    # ---- rng ----------------------------------------------------------------------------
    def key(self, seed: int) -> tf.Tensor:
        """The stateless seed ``[make_key(seed), 0]`` (int64): 63 bits mixed by SplitMix64,
        so every seed in ``[0, 2**64)`` gives its own stream. The stateless ops scramble a
        seed into Philox's key and counter."""
        with tf.device("/CPU:0"):
            return tf.constant([_rng.make_key(seed), 0], dtype=tf.int64)

    def split(self, key: tf.Tensor, num: int) -> list[tf.Tensor]:
        return tf.unstack(tf.random.experimental.stateless_split(key, num, alg=_ALG), num=num)

    def fold_in(self, key: tf.Tensor, data: int) -> tf.Tensor:
        if isinstance(data, (tf.Tensor, tf.Variable)):  # a traced step index
            data = tf.cast(data, tf.int64)
        else:
            data = tf.constant(_as_int64(data), dtype=tf.int64)
        return _unrolled_under_pfor(
            tf.random.experimental.stateless_fold_in(key, data, alg=_ALG))

    def normal(self, key: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
        with _on(like):
            return _unrolled_under_pfor(tf.random.stateless_normal(
                tf.shape(like), seed=key, dtype=like.dtype, alg=_ALG))

    def permutation(self, key: tf.Tensor, n: int, like: tf.Tensor) -> tf.Tensor:
        with _on(like):
            return _unrolled_under_pfor(tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=key, alg=_ALG))

    def integers(self, key: tf.Tensor, n: int, size: int, like: tf.Tensor) -> tf.Tensor:
        with _on(like):
            return _unrolled_under_pfor(tf.random.stateless_uniform(
                (size,), seed=key, minval=0, maxval=n, dtype=tf.int64, alg=_ALG))

    @contextlib.contextmanager
    def isolated_global_rng(self, seed: int) -> Iterator[None]:
        """Touches nothing: llc's own randomness is stateless.

        TensorFlow's global seed (``tf.random.set_seed``) cannot be set and restored without
        side effects: setting it clears the kernel caches of the stateful random ops, which
        restarts the user's random streams. A ``tf.data`` shuffle takes its seed when the
        dataset is built, before ``llc.estimate`` runs; pass ``seed=`` to it.
        """
        yield


def _check_loss(loss: Any, dtype: tf.DType) -> tf.Tensor:
    """``loss`` as a 0-d tensor of ``dtype`` (the params' flat dtype), or a clear error."""
    if not isinstance(loss, tf.Tensor):
        raise TypeError(
            f"`loss_fn` must return a TensorFlow scalar tensor; got {type(loss).__name__}")
    if loss.shape.num_elements() != 1:
        raise ValueError(
            "`loss_fn` must return a scalar loss (the mean over the batch); got shape "
            f"{tuple(loss.shape.as_list()) if loss.shape.rank is not None else 'unknown'}"
        )
    if not loss.dtype.is_floating:
        raise TypeError(f"`loss_fn` must return a floating-point loss; got dtype {loss.dtype.name}")
    return tf.cast(tf.reshape(loss, ()), dtype)


# ---- Keras ---------------------------------------------------------------------------------

def from_keras(
    model: Any,
    loss: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    *,
    training: bool = False,
    unpack: Callable[[Any], tuple[tuple[Any, ...], dict[str, Any], Any]] | None = None,
) -> tuple[Callable[[dict[str, tf.Tensor], Any], tf.Tensor], dict[str, tf.Tensor]]:
    """``(loss_fn, params)`` for a built Keras 3 model (TensorFlow backend) and a loss.

    ``loss_fn(params, batch)`` runs the model statelessly,
    ``model.stateless_call(trainable, non_trainable, *batch[:-1], training=training)``, with
    the sampled trainable weights and copies of the non-trainable ones (batch-norm
    statistics), and returns the mean of ``loss(batch[-1], outputs)``; the model's variables
    are never assigned. ``params`` is a dict, keyed by variable path (e.g.
    ``"sequential/dense/kernel"``) in the order of ``model.trainable_variables``, of copies
    of their values (w*).

    Parameters
    ----------
    model
        A built ``keras.Model`` (Keras 3 with the TensorFlow backend): it has weights, e.g.
        after training or ``model.build(input_shape)``. Several inputs: ``batch = (x1, x2,
        ..., y)``, passed to the model as the list ``[x1, x2, ...]``.
    loss
        ``loss(y_true, y_pred)``, Keras's argument order: a Keras loss object such as
        ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` or a function
        returning per-sample or mean negative log-likelihoods (their mean is taken). A Keras
        loss object whose ``dtype`` differs from the model's weights (its default is Keras's
        floatx, float32, also for a float64 model) is evaluated through its ``call`` in the
        weights' dtype, targets cast to it, and averaged over the batch: calling it would
        round a float64 model's loss to float32 while llc reports float64.
    training
        The ``training`` flag of the call (default ``False``: dropout off, batch norm with
        its moving statistics, which ``loss_fn`` never updates). With ``True`` batch norm
        uses the batch's statistics, and random layers (dropout) draw from the copied,
        never-advanced seed state: the same masks at every call, not fresh noise.
    unpack
        ``unpack(batch) -> (args, kwargs, targets)`` as in
        :func:`llc.backends.torch.from_module` (dict batches, :func:`next_token` with
        :func:`causal_lm_loss`); the positional inputs go to the model as one input or a
        list, the keyword ones to its ``call``. Default ``(batch[:-1], {}, batch[-1])``.

    Examples
    --------
    >>> loss_fn, params = llc.backends.tensorflow.from_keras(model, keras.losses.MeanSquaredError())
    >>> result = llc.estimate(loss_fn, params, (x, y), step_size=1e-4)
    """
    if not callable(getattr(model, "stateless_call", None)) or \
            not hasattr(model, "trainable_variables"):
        raise TypeError(
            f"`model` must be a Keras 3 model (with `stateless_call`); got {type(model).__name__}")
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != "tensorflow":
        raise ValueError(f"`model` runs on the Keras backend {keras.backend.backend()!r}; "
                         "from_keras needs KERAS_BACKEND=tensorflow")
    if not callable(loss):
        raise TypeError("`loss` must be callable as loss(y_true, y_pred)")
    trainable = list(model.trainable_variables)
    if not trainable:
        raise ValueError("`model` has no trainable weights: build it first (train it, call it "
                         "on a batch or call model.build(input_shape))")
    names = [variable.path for variable in trainable]
    if len(set(names)) != len(names):  # unique keys, in the order of trainable_variables
        names = [f"{name}#{index}" for index, name in enumerate(names)]
    params = {name: tf.identity(tf.convert_to_tensor(variable.value))
              for name, variable in zip(names, trainable)}
    fixed = [tf.identity(tf.convert_to_tensor(variable.value))
             for variable in model.non_trainable_variables]

    weight_dtype = _promote([value.dtype for value in params.values()])
    loss_dtype = getattr(loss, "dtype", None)
    own_dtype = (keras is not None and isinstance(loss, keras.losses.Loss)
                 and loss_dtype is not None and tf.as_dtype(loss_dtype) != weight_dtype)

    if unpack is not None and not callable(unpack):
        raise TypeError("`unpack` must be callable as unpack(batch) -> (args, kwargs, targets); "
                        f"got {type(unpack).__name__}")
    split = split_last if unpack is None else unpack_checked(unpack)

    def loss_fn(sampled: dict[str, tf.Tensor], batch: Any) -> tf.Tensor:
        inputs, kwargs, targets = split(batch)
        outputs, _ = model.stateless_call([sampled[name] for name in names], fixed,
                                          inputs[0] if len(inputs) == 1 else list(inputs),
                                          training=training, **kwargs)
        if own_dtype:  # the loss in the weights' dtype, not the loss object's
            targets = (tf.cast(targets, outputs.dtype)
                       if isinstance(targets, tf.Tensor) and targets.dtype.is_floating
                       else targets)
            return tf.reduce_mean(loss.call(targets, outputs))  # type: ignore[attr-defined]
        return tf.reduce_mean(loss(targets, outputs))

    return loss_fn, params


def causal_lm_loss(targets: Any, outputs: Any, *, reduction: str = "mean") -> Any:
    """The mean next-token cross-entropy (TensorFlow), in Keras's argument order
    ``(y_true, y_pred)`` like :func:`from_keras`'s ``loss``: over every target token, or over
    the tokens whose mask is 1 when ``targets`` is ``(tokens, mask)`` (:func:`next_token`'s
    targets for padded batches). ``outputs`` are logits (batch, length, vocabulary), an
    object with a ``logits`` attribute or a tuple whose first element they are.
    ``reduction="none"`` returns ``(losses, mask)``, both (batch, length), for per-token
    observables."""
    check_reduction(reduction)
    logits = getattr(outputs, "logits", None)
    if logits is None:
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    tokens, weights = targets if isinstance(targets, (tuple, list)) else (targets, None)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(tokens, tf.int64), logits=logits)
    if reduction == "none":
        return losses, (tf.ones_like(losses) if weights is None
                        else tf.cast(weights, losses.dtype))
    if weights is None:
        return tf.reduce_mean(losses)
    weights = tf.cast(weights, losses.dtype)
    return tf.reduce_sum(losses * weights) / tf.reduce_sum(weights)


backend = TensorFlowBackend()
