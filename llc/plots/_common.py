"""What llc's figures share: pyplot (headless-safe), the colour cycle, numbers for titles,
y-ranges, notes and legends."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

LAMBDA = r"$\hat\lambda$"


def _pyplot() -> Any:
    """``matplotlib.pyplot``, with Agg instead of a GUI backend that cannot start headless."""
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plots need matplotlib: pip install 'local-learning-coefficient[plots]'") from error
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless:
        # matplotlib's automatic choice already falls back to Agg; only a GUI backend set
        # explicitly (MPLBACKEND, matplotlibrc) would fail when the first figure is made.
        backend = str(matplotlib.get_backend()).lower()
        if backend.startswith(("gtk", "qt", "tk", "wx")):
            plt.switch_backend("agg")
    return plt


def _colors(plt: Any) -> list[str]:
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color") or ["C0"]
    return list(colors)


def _quiet(compute: Callable[[], float]) -> float:
    """A diagnostic, or NaN where it is not defined (one chain, too few draws, ...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(compute())
    except Exception:  # noqa: BLE001 - a plot never fails on a diagnostic
        return float("nan")


def _fmt(value: float, spec: str) -> str:
    """A diagnostic for a title: "n/a" where it is not defined."""
    return format(value, spec) if np.isfinite(value) else "n/a"


def _limits(*groups: Any, references: Any = (), pad: float = 0.08,
            fallback: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """A y-range over every finite value of ``groups`` and ``references``, padded by ``pad``
    of the span."""
    values = np.concatenate([np.ravel(np.asarray(g, dtype=float)) for g in groups]
                            + [np.ravel(np.asarray(references, dtype=float))])
    values = values[np.isfinite(values)]
    if not values.size:
        return fallback
    low, high = float(values.min()), float(values.max())
    span = high - low
    if span <= 0:
        span = abs(high) * 0.1 or 1.0
    return low - pad * span, high + pad * span


def _note(axis: Axes, text: str) -> None:
    axis.text(0.5, 0.5, text, transform=axis.transAxes, ha="center", va="center",
              fontsize=10, color="0.3", wrap=True)
    axis.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)


def _outside_legend(axis: Axes, **kwargs: Any) -> None:
    """The legend right of the axes (constrained layout makes room for it)."""
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8,
                **kwargs)
