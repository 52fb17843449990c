"""The one-line path from a Keras 3 model (:func:`from_keras`) and a causal-LM loss."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from llc._restrict import ComponentMask

from .._common import check_reduction, heads_along_an_axis, split_last, unpack_checked
from ._namespace import _promote


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
    >>> import keras
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
    ...                           keras.layers.Dense(3)])
    >>> loss_fn, params = llc.backends.tensorflow.from_keras(model, keras.losses.MeanSquaredError())
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(1000, 4)).astype("float32"), np.zeros((1000, 3), "float32")
    >>> result = llc.estimate(loss_fn, params, (x, y), step_size=1e-4, num_draws=100)
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
    names = _weight_names(model)
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



def attention_heads(model: Any) -> dict[str, ComponentMask]:
    """Per-head components of every ``keras.layers.MultiHeadAttention`` in ``model``, for
    ``llc.estimate(..., restrict=...)`` with the params of :func:`from_keras`.

    A head is its slice of the query, key and value kernels (E, H, d) and biases (H, d) and
    of the output kernel (H, d, E); the output bias is shared and belongs to no head. The
    masks are keyed by the names :func:`from_keras` gives the weights. Join heads with ``|``.

    Returns
    -------
    dict[str, llc.ComponentMask]
        ``"<layer name>.head<h>"`` ↦ that head's component.

    Raises
    ------
    ValueError
        If ``model`` has no built ``MultiHeadAttention`` layer.
    """
    keras = sys.modules.get("keras")
    names = dict(zip((id(variable) for variable in model.trainable_variables),
                     _weight_names(model)))
    heads: dict[str, ComponentMask] = {}
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else model.layers
    for layer in layers:
        if keras is None or not isinstance(layer, keras.layers.MultiHeadAttention):
            continue
        parts = []
        for role, dense in (("query", layer.query_dense), ("key", layer.key_dense),
                            ("value", layer.value_dense), ("output", layer.output_dense)):
            if dense is None or dense.kernel is None:
                raise ValueError(f"the attention layer {layer.name!r} is not built: call the "
                                 "model on a batch first")
            parts.append((names[id(dense.kernel)], tuple(dense.kernel.shape),
                          0 if role == "output" else 1))
            if dense.bias is not None and role != "output":
                parts.append((names[id(dense.bias)], tuple(dense.bias.shape), 0))
        heads.update(heads_along_an_axis(parts, int(layer.num_heads), f"{layer.name}."))
    if not heads:
        raise ValueError("`model` has no keras.layers.MultiHeadAttention")
    return heads


def _weight_names(model: Any) -> list[str]:
    """The keys :func:`from_keras` gives ``model.trainable_variables``: their paths, numbered
    when two coincide."""
    names = [variable.path for variable in model.trainable_variables]
    if len(set(names)) != len(names):  # unique keys, in the order of trainable_variables
        names = [f"{name}#{index}" for index, name in enumerate(names)]
    return names
