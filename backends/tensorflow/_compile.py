"""``tf.function`` as llc compiles with it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf


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


