"""The figure of a :class:`~llc.trajectory.TrajectoryResult`: λ̂ and the training loss over
training, its abrupt changes shaded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..trajectory import JUMP_RELATIVE, JUMP_Z
from ._common import LAMBDA as _LAMBDA, _limits, _outside_legend, _pyplot

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..trajectory import TrajectoryResult

__all__ = ["plot_trajectory"]

_JUMP_COLOR = "tab:red"


def _reference_series(reference: Any, count: int) -> dict[str, np.ndarray]:
    """``reference`` as ``{label: values per checkpoint}``."""
    if reference is None:
        return {}
    items = reference.items() if isinstance(reference, dict) else [("reference λ", reference)]
    series = {}
    for label, values in items:
        array = np.asarray(values, dtype=float)
        if array.ndim == 0:
            array = np.full(count, float(array))
        if array.shape != (count,):
            raise ValueError(f"`reference` {label!r} must have one value per checkpoint "
                             f"({count}); got shape {array.shape}")
        series[str(label)] = array
    return series


def _clip_outliers(axis: Axes, steps: np.ndarray, values: np.ndarray, low: float, high: float,
                   color: str) -> None:
    """Values outside the y-range drawn as triangles on its edge, labelled with the value
    (labels of neighbouring triangles staggered so that they do not overlap)."""
    outside = [(step, value) for step, value in zip(steps, values)
               if np.isfinite(value) and not low <= value <= high]
    for number, (step, value) in enumerate(outside):
        above = value > high
        edge, marker = (high, "^") if above else (low, "v")
        offset = (4 + 9 * (number % 2)) * (-1 if above else 1)
        axis.plot(step, edge, marker=marker, color=color, markersize=8, linestyle="none",
                  clip_on=False, zorder=5)
        axis.annotate(f"{value:.2g}", (step, edge), xytext=(0, offset), textcoords="offset points",
                      ha="center", va="top" if above else "bottom", fontsize=7, color=color,
                      bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.7,
                            "linewidth": 0})


def _trajectory_limits(means: np.ndarray, band: np.ndarray, healthy: np.ndarray,
                       references: dict[str, np.ndarray]) -> tuple[float, float]:
    """The λ̂ axis range: the healthy checkpoints (± band) and the references, widened to
    the flagged checkpoints that lie within half that span of it; the rest are outliers."""
    finite = np.isfinite(means)
    base = healthy if healthy.any() else finite
    reference_values = [v for values in references.values() for v in values]
    low, high = _limits(means[base] - band[base], means[base] + band[base],
                        references=reference_values, pad=0.0)
    span = (high - low) or (abs(high) or 1.0)
    near = finite & (means - band >= low - 0.5 * span) & (means + band <= high + 0.5 * span)
    return _limits(means[near | base] - band[near | base], means[near | base] + band[near | base],
                   references=reference_values)


def plot_trajectory(trajectory: TrajectoryResult, *, log_x: bool | None = None,
                    training_loss: Any = None, reference: Any = None, z: float | None = None,
                    relative: float | None = None) -> Figure:
    """λ̂ and the training loss against the training step, with λ̂'s abrupt changes shaded.

    Top: λ̂ per checkpoint with a band of ± 2 MCSE; checkpoints with a health finding are
    drawn hollow (their λ̂ is suspect: ``trajectory.findings`` says why) and values far
    outside the range of the healthy ones as triangles on the edge, labelled with the value;
    reference values (e.g. a known λ) as dashed steps. Bottom: the training loss, the curve
    ``training_loss`` when given, and L_n(w*) of every checkpoint (points). The intervals in
    which λ̂ changed abruptly (:meth:`~llc.trajectory.TrajectoryResult.jumps`, rule
    :func:`llc.trajectory.abrupt_changes`) are shaded on both axes: the change happened
    somewhere between the two checkpoints.

    Parameters
    ----------
    trajectory
        What :func:`llc.estimate_trajectory` returned.
    log_x
        Logarithmic step axis; default: when every step is > 0 and they span a factor ≥ 100.
    training_loss
        ``(steps, losses)``: a denser training-loss curve to draw (e.g. every optimizer
        step); default: L_n(w*) of the checkpoints only.
    reference
        Values per checkpoint drawn as dashed steps: an array (labelled "reference λ"), or
        a dict ``{label: array}`` for several; a scalar is a constant line.
    z, relative
        The abrupt-change rule's thresholds (defaults of
        :func:`llc.trajectory.abrupt_changes`).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the step axis: λ̂ (top) and loss (bottom).
    """
    plt = _pyplot()
    z = JUMP_Z if z is None else z
    relative = JUMP_RELATIVE if relative is None else relative
    steps = np.asarray(trajectory.steps, dtype=float)
    means, mcse = trajectory.llc_mean, trajectory.llc_mcse
    flagged = np.array([bool(found) for found in trajectory.findings], dtype=bool)
    jumps = trajectory.jump_mask(z=z, relative=relative)
    references = _reference_series(reference, len(steps))
    if log_x is None:
        log_x = bool(steps.size) and steps.min() > 0 and steps.max() >= 100 * steps.min()

    figure, (ax_llc, ax_loss) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                             layout="constrained", height_ratios=[1.4, 1.0])
    finite = np.isfinite(means)
    band = np.where(np.isfinite(mcse), 2 * mcse, 0.0)
    healthy = finite & ~flagged
    low, high = _trajectory_limits(means, band, healthy, references)
    shown = finite & (means >= low) & (means <= high)
    line = np.where(shown, means, np.nan)[finite]          # broken at the outliers
    ax_llc.fill_between(steps[finite], line - band[finite], line + band[finite],
                        color="C0", alpha=0.25, linewidth=0, label="± 2 MCSE")
    ax_llc.plot(steps[finite], line, color="C0", linewidth=1.2)
    ax_llc.plot(steps[healthy], means[healthy], "o", color="C0", markersize=5,
                label=f"{_LAMBDA} per checkpoint")
    if (finite & flagged).any():
        ax_llc.plot(steps[finite & flagged], means[finite & flagged], "o", markersize=6,
                    markerfacecolor="white", markeredgecolor="C0",
                    label="with a health finding")
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    for number, (label, values) in enumerate(references.items()):
        ax_llc.plot(steps, values, color="black", linewidth=1.3, drawstyle="steps-mid",
                    linestyle=styles[number % len(styles)], label=label)
    ax_llc.set_ylim(low, high)
    _clip_outliers(ax_llc, steps, means, low, high, "C0")
    ax_llc.set_ylabel(_LAMBDA)

    if training_loss is not None:
        curve_steps, curve_loss = (np.asarray(part, dtype=float) for part in training_loss)
        if curve_steps.shape != curve_loss.shape or curve_steps.ndim != 1:
            raise ValueError("`training_loss` must be (steps, losses), two 1-D arrays of equal "
                             "length")
        shown = curve_steps > 0 if log_x else np.ones(curve_steps.shape, dtype=bool)
        ax_loss.plot(curve_steps[shown], curve_loss[shown], color="C1", linewidth=1.2,
                     label="training loss")
    init_loss = trajectory.init_loss
    ax_loss.plot(steps[np.isfinite(init_loss)], init_loss[np.isfinite(init_loss)], "o",
                 color="C1", markersize=4, markeredgecolor="black", markeredgewidth=0.5,
                 label=r"$L_n(w^*)$ at the checkpoints")
    ax_loss.set_ylabel("loss")
    ax_loss.set_xlabel("training step")
    losses = np.concatenate([init_loss[np.isfinite(init_loss)]] + (
        [curve_loss[np.isfinite(curve_loss)]] if training_loss is not None else []))
    if losses.size and losses.min() > 0 and losses.max() >= 10 * losses.min():
        from matplotlib.ticker import LogLocator, ScalarFormatter

        ax_loss.set_yscale("log")
        ax_loss.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax_loss.yaxis.set_major_formatter(ScalarFormatter())
        ax_loss.yaxis.set_minor_formatter("")

    finished = np.flatnonzero(finite & np.isfinite(mcse))
    for number, index in enumerate(np.flatnonzero(jumps)):
        before = finished[finished < index]
        start = steps[before[-1]] if before.size else steps[index]
        for axis in (ax_llc, ax_loss):
            axis.axvspan(start, steps[index], color=_JUMP_COLOR, alpha=0.12, linewidth=0,
                         label=(f"abrupt change of {_LAMBDA}" if number == 0 else None))
    for axis in (ax_llc, ax_loss):
        if log_x:
            axis.set_xscale("log")
        axis.grid(True, alpha=0.3)
        _outside_legend(axis)
    attrs = trajectory.attrs
    settings = ", ".join(part for part in (
        f"nβ = {attrs['nbeta']:.4g}" if "nbeta" in attrs else None,
        f"γ = {attrs['localization']:.4g}" if "localization" in attrs else None,
        f"{attrs['sampler']}" if "sampler" in attrs else None,
        f"ε = {attrs['sampler_step_size']:.3g}" if "sampler_step_size" in attrs else None,
        f"{attrs['num_chains']} chains × {attrs['num_draws']} draws"
        if "num_chains" in attrs and "num_draws" in attrs else None,
        f"seed {attrs['seed']}" if "seed" in attrs else None) if part)
    ax_llc.set_title(f"{_LAMBDA} over training: {len(steps)} checkpoints"
                     f"{', ' + settings if settings else ''}\nshaded: abrupt change of "
                     f"{_LAMBDA} (> {z:g} combined MCSE and > {100 * relative:g} % of "
                     f"{_LAMBDA}); hollow: checkpoint with a health finding", fontsize=10)
    return figure
