"""Counter-based integer keys for backends without a functional RNG of their own.

A key is a Python ``int`` in ``[0, 2**63)``. :func:`split` and :func:`fold_in` derive new
keys with the SplitMix64 finaliser, so every chain, step and epoch has its own stream that
can be recomputed from the seed alone (no hidden generator state). Backends turn a key into
random numbers by seeding a fresh framework generator with it.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1


def _mix(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (value ^ (value >> 31)) >> 1  # keep 63 bits: torch seeds must fit int64


def make_key(seed: int) -> int:
    """Key for an integer seed."""
    return _mix(int(seed) & _MASK64)


def fold_in(key: int, data: int) -> int:
    """Key derived from ``key`` and the integer ``data`` (e.g. a step index)."""
    return _mix(_mix(key) ^ (int(data) & _MASK64))


def split(key: int, num: int = 2) -> list[int]:
    """``num`` independent keys derived from ``key``."""
    return [fold_in(key, 0x5851F42D4C957F2D + index) for index in range(num)]
