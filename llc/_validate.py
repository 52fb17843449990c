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


def run_counts(loss_fn: Any, num_chains: Any, num_draws: Any, num_burnin: Any
               ) -> tuple[int, int, int]:
    """The checks shared by every call that runs chains: ``loss_fn`` callable, and
    ``(num_chains, num_draws, num_burnin)`` as ints (≥ 1, ≥ 1, ≥ 0)."""
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable as loss_fn(params, batch); got {loss_fn!r}")
    return (positive_int("num_chains", num_chains), positive_int("num_draws", num_draws),
            positive_int("num_burnin", num_burnin, minimum=0))


def seed_value(seed: Any) -> int:
    """``seed`` as an int in [0, 2**64)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be an integer; got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"`seed` must be in [0, 2**64); got {int(seed)}")
    return int(seed)
