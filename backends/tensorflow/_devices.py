"""Devices of TensorFlow tensors: where a tensor lives, and scopes on it."""

from __future__ import annotations

import contextlib
from typing import Any

import tensorflow as tf


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


