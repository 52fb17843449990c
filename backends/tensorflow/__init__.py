"""TensorFlow adapter: params are a dict (or list/tuple) of ``tf.Tensor`` or ``tf.Variable``.

A package, one concern per module: the adapter here; ``_namespace`` (the array-API
namespace), ``_devices``, ``_compile`` (``tf.function`` as llc uses it), ``_vectorized``
(chains batched by pfor, and the fence around pfor's private helpers) and ``keras``
(:func:`from_keras`, :func:`causal_lm_loss`).

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

import contextlib
import functools
import inspect
import math
import sys
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import tensorflow as tf

from llc import _rng
from llc._backend import BackendBase, select_devices
from llc._engine.programs import program_cache
from llc._tree import tree_flatten, tree_unflatten

from .._common import check_floating, leaf_paths, next_token, scaled_sum
from ._compile import _function
from ._devices import _describe_device, _device_of, _on, _tf_device
from ._namespace import TensorFlowNamespace, _promote, namespace
from ._vectorized import TensorFlowTransforms, _unrolled_under_pfor, over_devices
from .keras import attention_heads, causal_lm_loss, from_keras

__all__ = ["attention_heads", "backend", "causal_lm_loss", "from_keras", "namespace",
           "next_token"]

# "auto_select" is Philox on CPU and GPU (ThreeFry on TPU) and gives the same numbers as
# alg="philox", which costs ~0.6 ms more per eager call in TF 2.21.
_ALG = "auto_select"
_MASK64 = (1 << 64) - 1

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


class TensorFlowBackend(BackendBase):
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
        value = _value(x)
        if value.dtype == tf.bfloat16:  # not a NumPy dtype: float32 holds it exactly
            value = tf.cast(value, tf.float32)
        return np.array(value.numpy(), copy=True)

    def stack(self, xs: list[tf.Tensor]) -> tf.Tensor:
        with _on(xs[0]):
            return tf.stack(xs)

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

    def data_like(self, params: Any) -> tf.Tensor:
        values = [_value(leaf) for leaf in tree_flatten(params)[0]]
        with _on(values[0]):
            return tf.zeros((), _promote([value.dtype for value in values]))

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
        if dtype.size < 4:  # the sampling state: at least float32 (llc._backend.ravel)
            dtype = tf.float32
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

    def chain_devices(self, devices: Any) -> tuple[Any, ...] | None:
        """``None``; ``"all"`` (the logical GPUs, or the logical CPUs where there is no GPU);
        an int k (the first k of those); or device names (``"cuda:1"``, ``"/GPU:0"``,
        ``"/CPU:1"``): each runs its share of the chains (:func:`over_devices`)."""
        if devices is None:
            return None
        available = tuple(device.name for device in (
            tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")))

        def named(devices: Any) -> tuple[str, ...]:
            names = [devices] if isinstance(devices, str) else devices
            try:
                chosen = tuple(tf.DeviceSpec.from_string(_tf_device(name)).to_string()
                               for name in names)
            except (TypeError, ValueError) as error:
                raise ValueError(f"`devices` must be None, 'all', a count or device names; "
                                 f"got {devices!r} ({error})") from None
            if not chosen:
                raise ValueError(f"`devices` names no device; got {devices!r}")
            return chosen

        return select_devices(devices, available, named)

    def over_devices(self, fn: Callable[..., Any], devices: tuple[Any, ...],
                     in_axes: tuple[int | None, ...], out_axes: tuple[int, ...]
                     ) -> Callable[..., Any]:
        return over_devices(fn, devices, in_axes, out_axes)

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


backend = TensorFlowBackend()
