"""Argument checks that name the argument and say what was expected."""

from __future__ import annotations

import math
import numbers
from typing import Any


def positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a float, checked finite and > 0 (or ≥ 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number; got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"`{name}` must be a finite number; got an integer too large for a "
                         "float") from None
    bound_ok = number >= 0 if allow_zero else number > 0
    if not math.isfinite(number) or not bound_ok:
        relation = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {relation}; got {value!r}")
    return number


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int, checked ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer; got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {value!r}")
    return int(value)
