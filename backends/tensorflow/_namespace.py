"""The array-API namespace llc's samplers and problems use on TensorFlow tensors
(TensorFlow has none of its own)."""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf


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


def _promote(dtypes: list[tf.DType]) -> tf.DType:
    """The widest floating dtype; float16 with bfloat16 gives float32."""
    widest = max(dtype.size for dtype in dtypes)
    candidates = {dtype for dtype in dtypes if dtype.size == widest}
    return candidates.pop() if len(candidates) == 1 else tf.float32
