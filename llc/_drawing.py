"""How a result reaches its plots without importing the layer above it.

:mod:`llc.plots` draws results, so it imports :mod:`llc.result` and :mod:`llc.trajectory`;
their ``plot()`` methods call the drawing functions that :mod:`llc.plots` registers here
when it is imported (``import llc`` imports it; matplotlib is imported only when a figure
is drawn).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["draw", "register"]

_DRAWERS: dict[str, Callable[..., Any]] = {}


def register(name: str, function: Callable[..., Any]) -> None:
    """Make ``function`` the drawer called by ``draw(name, ...)``."""
    _DRAWERS[name] = function


def draw(name: str, *args: Any, **kwargs: Any) -> Any:
    """The figure of the drawer registered under ``name``."""
    if name not in _DRAWERS:
        raise RuntimeError(f"no plot {name!r} is registered: import llc.plots first")
    return _DRAWERS[name](*args, **kwargs)
