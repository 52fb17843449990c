"""The figures of one :class:`~llc.LLCResult`: λ̂ and the loss per chain, the rank panel,
the acceptance and ‖w − w*‖ (module docs of :mod:`llc.plots`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..diagnostics import HealthThresholds
from ._common import (LAMBDA as _LAMBDA, _colors, _fmt, _limits, _note, _outside_legend,
                      _pyplot, _quiet)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..result import LLCResult

__all__ = ["plot_acceptance", "plot_diagnostics", "plot_rank", "plot_trace"]

_BURNIN_COLOR = "0.5"
_LOW_ACCEPTANCE = HealthThresholds().min_mala_acceptance  # below: the step is too large
_RANK_BAND_Z = 2.576  # two-sided 99 % normal quantile


def _running_mean(values: np.ndarray) -> np.ndarray:
    """Cumulative mean of the finite values; NaN where ``values`` is NaN."""
    finite = np.isfinite(values)
    total = np.cumsum(np.where(finite, values, 0.0))
    count = np.cumsum(finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count
    out[~finite] = np.nan
    return out


def _epoch_steps(result: LLCResult) -> int | None:
    """Steps per epoch of array data drawn in epochs (``trace_batch="own"``: each epoch a
    permutation of the rows), else None (batches drawn with replacement have no epochs)."""
    if result.attrs.get("trace_batch") != "own":
        return None
    n, batch = result.attrs.get("num_data"), result.attrs.get("batch_size")
    if isinstance(n, (int, np.integer)) and isinstance(batch, (int, np.integer)) and 0 < batch <= n:
        return int(n // batch)
    return None


def _block_size(result: LLCResult, length: int, stride: int) -> int:
    """Values per block: about 1/50 of ``length``; whole epochs when the values are steps of
    epochs drawn without replacement and that still leaves at least 20 blocks.

    With ``trace_batch="own"`` array data are drawn as a permutation of the rows per epoch,
    so at a fixed w the minibatch noise cancels exactly over an epoch: means over whole
    epochs show the loss's real movement, not the batch noise (nβ × that noise is many times
    λ̂). Batches drawn with replacement (the default) have no epochs to align to.
    """
    target = max(1, length // 50)
    epoch = _epoch_steps(result)
    if stride == 1 and epoch and length // epoch >= 20:
        return epoch * max(1, round(target / epoch))
    return target


def _aligned_epoch(result: LLCResult, block: int) -> int | None:
    """The epoch length when ``block`` is whole epochs (blocks then start at an epoch)."""
    epoch = _epoch_steps(result)
    return epoch if epoch and block % epoch == 0 else None


def _block_means(values: np.ndarray, steps: np.ndarray, block: int, epoch: int | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Means over consecutive blocks of ``block`` values (centres, means), the first block
    starting at an epoch boundary when ``epoch`` is given; NaN blocks are dropped."""
    offset = int(-steps[0] % epoch) if (epoch and steps.size) else 0
    count = (values.size - offset) // block
    if count < 1:
        return np.empty(0), np.empty(0)
    stop = offset + count * block
    means = values[offset:stop].reshape(count, block).mean(axis=1)
    centers = steps[offset:stop].reshape(count, block).mean(axis=1)
    keep = np.isfinite(means)
    return centers[keep], means[keep]


def _scaled_by(result: LLCResult, chain: int) -> bool:
    """Whether a chain's values set the y-range: the healthy ones (all if none is)."""
    return not result.failed_chains[chain] or not result.healthy_chains.size


def _chain_label(result: LLCResult, chain: int) -> str:
    if not result.failed_chains[chain]:
        return f"chain {chain}"
    return f"chain {chain} (failed, left out)"


def _layout(result: LLCResult) -> tuple[int, int, np.ndarray]:
    """Burn-in length, thinning and the sampler step of every draw."""
    draws = result.llc_trace.shape[1]
    burnin = int(result.warmup_loss.shape[1])
    thin = max(1, int(result.attrs.get("thin", 1) or 1))
    return burnin, thin, burnin + np.arange(draws) * thin


def _mark_burnin(axis: Axes, burnin: int, label: str | None) -> None:
    if burnin:
        axis.axvspan(0, burnin, color=_BURNIN_COLOR, alpha=0.12, linewidth=0, label=label)


def _mark_failure(axis: Axes, x: float, y: float, color: str, text: str | None) -> None:
    """A cross where a failed chain stopped, with a note above it."""
    axis.plot(x, y, marker="X", markersize=10, color=color, markeredgecolor="black",
              linestyle="none", zorder=4)
    if text:
        axis.annotate(text, (x, y), xytext=(0, 10), textcoords="offset points", ha="center",
                      va="bottom", fontsize=8, color=color, fontweight="bold", zorder=4,
                      bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.8,
                            "linewidth": 0})


def _block_words(block: int, stride: int, epoch: int | None, unit: str) -> str:
    words = f"{block} {unit}"
    if stride == 1 and epoch and block % epoch == 0:
        words += f" = {block // epoch} epoch{'s' * (block // epoch > 1)}"
    return words


def _draw_llc(axis: Axes, result: LLCResult, colors: list[str], true_lambda: float | None
              ) -> None:
    """λ̂ per chain: block means (faint), running mean (bold), λ̂ ± MCSE, true λ."""
    chains, draws = result.llc_trace.shape
    burnin, thin, steps = _layout(result)
    block = _block_size(result, draws, thin)
    epoch = _aligned_epoch(result, block) if thin == 1 else None
    skip = min(max(1, block // 4), draws // 10)  # the first few running means are one draw
    shown: list[np.ndarray] = []
    _mark_burnin(axis, burnin, "burn-in (no λ̂)")
    for chain in range(chains):
        color = colors[chain % len(colors)]
        failed = bool(result.failed_chains[chain])
        style = "--" if failed else "-"
        trace = result.llc_trace[chain]
        centers, means = _block_means(trace, steps, block, epoch)
        running = _running_mean(trace)
        axis.plot(centers, means, color=color, alpha=0.4, linewidth=0.9, linestyle=style)
        axis.plot(steps[skip:], running[skip:], color=color, linewidth=1.8, linestyle=style,
                  label=_chain_label(result, chain))
        if failed:
            last = np.flatnonzero(np.isfinite(running))
            if last.size:
                _mark_failure(axis, steps[last[-1]], running[last[-1]], color,
                              f"chain {chain} failed")
        if _scaled_by(result, chain):
            shown += [means, running[min(block, draws - 1):]]
    mean = result.llc_mean if result.healthy_chains.size else float("nan")
    mcse = _quiet(lambda: result.llc_mcse) if result.healthy_chains.size else float("nan")
    if np.isfinite(mean):
        if np.isfinite(mcse):
            axis.axhspan(mean - mcse, mean + mcse, color="black", alpha=0.15, linewidth=0)
        axis.axhline(mean, color="black", linewidth=1.2, linestyle="--",
                     label=f"{_LAMBDA} = {mean:.4g} ± {mcse:.2g} (MCSE)")
    if true_lambda is not None:
        axis.axhline(true_lambda, color="black", linewidth=1.5, linestyle="-.",
                     label=f"true λ = {true_lambda:g}")
    axis.set_ylim(*_limits(*shown, references=[mean, true_lambda if true_lambda is not None
                                               else np.nan]))
    if steps.size:
        axis.set_xlim(0, steps[-1] + 1)
    healthy = result.llc_trace[result.healthy_chains]
    spread = float(np.nanstd(healthy)) if np.isfinite(healthy).any() else float("nan")
    axis.set_title(f"{_LAMBDA} per chain: running mean (bold) and means over blocks of "
                   f"{_block_words(block, thin, epoch, 'draws')} (faint); "
                   f"single draws not drawn (sd {spread:.3g})", fontsize=10)
    axis.set_ylabel(r"$n\beta\,(L_{B_t}(w_t) - $baseline$)$")
    _outside_legend(axis)


def _draw_loss(axis: Axes, result: LLCResult, colors: list[str]) -> None:
    """Minibatch loss over burn-in and draws (block means per chain) against L_n(w*)."""
    chains, draws = result.loss_trace.shape
    burnin, thin, steps = _layout(result)
    block = _block_size(result, burnin + draws * thin, 1)
    epoch = _aligned_epoch(result, block)
    shown: list[np.ndarray] = []
    _mark_burnin(axis, burnin, "burn-in")
    for chain in range(chains):
        color = colors[chain % len(colors)]
        style = "--" if result.failed_chains[chain] else "-"
        warm, kept = result.warmup_loss[chain], result.loss_trace[chain]
        if thin == 1:  # one series, so the blocks run across the end of the burn-in
            pieces = [_block_means(np.concatenate([warm, kept]),
                                   np.arange(burnin + draws), block, epoch)]
        else:
            pieces = [_block_means(warm, np.arange(burnin), block, epoch),
                      _block_means(kept, steps, max(1, block // thin), None)]
        for x, y in pieces:
            axis.plot(x, y, color=color, linewidth=1.0, alpha=0.85, linestyle=style)
            if _scaled_by(result, chain):
                shown.append(y)
    init = result.init_loss
    axis.axhline(init, color="black", linewidth=1.0, linestyle=":", label=r"$L_n(w^*)$")
    references = [init]
    if result.healthy_chains.size and np.isfinite(result.llc_mean) and result.nbeta:
        expected = init + result.llc_mean / result.nbeta
        axis.axhline(expected, color="black", linewidth=1.0, linestyle="--",
                     label=r"$L_n(w^*) + \hat\lambda / n\beta$")
        references.append(expected)
    axis.set_ylim(*_limits(*shown, references=references))
    axis.set_xlim(0, burnin + max(draws - 1, 0) * thin + 1)
    if result.nbeta and np.isfinite(init):
        nbeta = float(result.nbeta)

        def to_llc(loss: Any) -> Any:
            return nbeta * (np.asarray(loss) - init)

        def to_loss(value: Any) -> Any:
            return init + np.asarray(value) / nbeta

        right = axis.secondary_yaxis("right", functions=(to_llc, to_loss))
        right.set_ylabel(r"$n\beta\,(L - L_n(w^*))$")
    axis.set_title("minibatch loss per chain: means over blocks of "
                   f"{_block_words(block, 1, epoch, 'steps')}", fontsize=10)
    axis.set_xlabel("step")
    axis.set_ylabel(r"$L_{B_t}(w_t)$")
    axis.legend(loc="lower right", fontsize=8, ncols=3, framealpha=0.85)


def _rank_rows(result: LLCResult) -> tuple[list[np.ndarray], list[str], list[int]]:
    """Draws per row of the rank plot: the healthy chains, or the halves of a single one."""
    healthy = result.healthy_chains
    traces = [result.llc_trace[c][np.isfinite(result.llc_trace[c])] for c in healthy]
    if len(healthy) == 1:
        (trace,), chain = traces, int(healthy[0])
        half = trace.size // 2
        return ([trace[:half], trace[half:2 * half]],
                [f"chain {chain}\n1st half", f"chain {chain}\n2nd half"], [chain, chain])
    return traces, [f"chain {c}" for c in healthy], [int(c) for c in healthy]


def _draw_rank(axis: Axes, result: LLCResult, colors: list[str]) -> None:
    """Rank histograms of the λ̂ draws pooled over the healthy chains, one row per chain."""
    rows, labels, chains = _rank_rows(result)
    smallest = min((row.size for row in rows), default=0)
    if not rows or smallest < 4:
        _note(axis, "rank plot: too few finite λ̂ draws")
        axis.set_title(f"rank plot of {_LAMBDA}", fontsize=10)
        return
    pooled = np.concatenate(rows)
    order = np.argsort(pooled, kind="stable")
    ranks = np.empty(pooled.size)
    ranks[order] = np.arange(pooled.size)
    fraction = (ranks + 0.5) / pooled.size
    bins = int(np.clip(math.ceil(math.log2(smallest)) + 1, 4, 20))
    edges = np.linspace(0.0, 1.0, bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    counts, start = [], 0
    for row in rows:
        counts.append(np.histogram(fraction[start:start + row.size], edges)[0])
        start += row.size
    ratios = [c / (row.size / bins) for c, row in zip(counts, rows, strict=True)]
    scale = min(0.5, 0.9 / max(float(np.max(r)) for r in ratios))
    for index, (ratio, row, chain) in enumerate(zip(ratios, rows, chains, strict=True)):
        base = len(rows) - 1 - index
        color = colors[chain % len(colors)]
        split = len(rows) == 2 and chains[0] == chains[1] and index == 1  # 2nd half
        axis.bar(centers, ratio * scale, width=0.92 / bins, bottom=base, color=color,
                 alpha=0.45 if split else 0.75, linewidth=0)
        band = _RANK_BAND_Z * math.sqrt((1 - 1 / bins) / (row.size / bins))
        axis.hlines([base + scale * max(0.0, 1 - band), base + scale * (1 + band)], 0, 1,
                    color="0.35", linewidth=0.9, linestyle=":", zorder=3)
        axis.hlines(base + scale, 0, 1, color="black", linewidth=1.1, linestyle="--", zorder=3)
    axis.set_yticks([len(rows) - 1 - i + scale for i in range(len(rows))], labels)
    axis.set_ylim(-0.05, len(rows) - 0.05)
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"fractional rank of the {_LAMBDA} draws among all healthy chains")
    rhat, ess = _quiet(lambda: result.rhat), _quiet(lambda: result.ess_bulk)
    left_out = np.flatnonzero(result.failed_chains)
    title = f"rank plot of {_LAMBDA} ({bins} bins): R-hat {_fmt(rhat, '.3f')}, " \
            f"bulk ESS {_fmt(ess, '.0f')}"
    if left_out.size:
        title += f"; failed chain{'s' * (left_out.size > 1)} " \
                 f"{', '.join(map(str, left_out))} left out"
    if len(result.healthy_chains) == 1:
        title += "; one chain: its halves"
    title += "\ndashed: uniform (chains agree); dotted: 99 % band if draws were independent"
    axis.set_title(title, fontsize=10)


def _draw_acceptance(axis: Axes, result: LLCResult, colors: list[str]) -> None:
    """MALA acceptance at the diagnosed draws, the too-large-step region and per-chain means."""
    values = result.sample_stats.get("mala_acceptance")
    title = "MALA acceptance of the sampler's step"
    if values is None or not np.isfinite(values).any():
        why = ("not recorded (mala_every=None)" if values is None
               else "no finite value recorded")
        _note(axis, f"MALA acceptance {why}")
        axis.set_title(title, fontsize=10)
        return
    _, _, steps = _layout(result)
    lowest = 1.0
    axis.axhspan(0.0, _LOW_ACCEPTANCE, color="tab:red", alpha=0.08, linewidth=0,
                 label=f"< {_LOW_ACCEPTANCE:.2f}: step too large")
    for chain in range(values.shape[0]):
        color = colors[chain % len(colors)]
        finite = np.isfinite(values[chain])
        if not finite.any():
            continue
        failed = bool(result.failed_chains[chain])
        y = values[chain][finite]
        mean = float(y.mean())
        axis.plot(steps[finite], y, color=color, linestyle="none", alpha=0.7,
                  marker="x" if failed else "o", markersize=3 if failed else 2.5,
                  markeredgewidth=0.8 if failed else 0)
        axis.axhline(mean, color=color, linewidth=1.4, linestyle=(0, (4, 2)),
                     label=f"chain {chain}{' (failed)' if failed else ''}: mean {mean:.3f}")
        lowest = min(lowest, float(y.min()))
    low = max(0.0, min(_LOW_ACCEPTANCE - 0.03, lowest) - 0.02)
    axis.set_ylim(low, 1.0 + 0.03 * (1.0 - low))
    axis.set_ylabel("acceptance")
    every = result.attrs.get("mala_every")
    if isinstance(every, (int, np.integer)):
        title += f" (every {every} draws)"
    axis.set_title(f"{title}; mean {_fmt(result.mala_acceptance, '.3f')}", fontsize=10)
    axis.legend(loc="lower left", fontsize=8, ncols=2, framealpha=0.85)


def _draw_distance(axis: Axes, result: LLCResult, colors: list[str], *, legend: bool = False
                   ) -> None:
    """‖w − w*‖ over the draws per chain."""
    distance = result.sample_stats.get("distance")
    if distance is None or not np.isfinite(distance).any():
        _note(axis, "‖w − w*‖ not recorded")
        return
    _, _, steps = _layout(result)
    for chain in range(distance.shape[0]):
        failed = bool(result.failed_chains[chain])
        color = colors[chain % len(colors)]
        axis.plot(steps, distance[chain], color=color, linewidth=0.8, alpha=0.85,
                  linestyle="--" if failed else "-", label=_chain_label(result, chain))
        last = np.flatnonzero(np.isfinite(distance[chain]))
        if failed and last.size:
            _mark_failure(axis, steps[last[-1]], distance[chain][last[-1]], color, None)
    scaled = [c for c in range(distance.shape[0]) if _scaled_by(result, c)]
    axis.set_ylim(*_limits(distance[scaled], references=[0.0], pad=0.05))
    axis.set_xlabel("step")
    axis.set_ylabel(r"$\|w_t - w^*\|$")
    gamma = result.attrs.get("localization")
    axis.set_title("distance from w* per chain" + (f" (localization γ = {gamma:g})"
                                                   if isinstance(gamma, (int, float)) else ""),
                   fontsize=10)
    if legend:
        axis.legend(loc="lower right", fontsize=8, ncols=min(4, distance.shape[0]),
                    framealpha=0.85)


def _headline(result: LLCResult, true_lambda: float | None) -> str:
    chains = result.llc_trace.shape[0]
    healthy = result.healthy_chains.size
    mean = result.llc_mean if healthy else float("nan")
    mcse = _quiet(lambda: result.llc_mcse)
    rhat, ess = _quiet(lambda: result.rhat), _quiet(lambda: result.ess_bulk)
    first = (f"{_LAMBDA} = {mean:.4g} ± {mcse:.2g} (MCSE)"
             + (f", true λ = {true_lambda:g}" if true_lambda is not None else "")
             + f"  ·  R-hat {_fmt(rhat, '.3f')}  ·  bulk ESS {_fmt(ess, '.0f')}"
             + f"  ·  {healthy}/{chains} chains"
             + f"  ·  nβ = {result.nbeta:.4g}")
    attrs = result.attrs
    settings = [
        f"{attrs['sampler']}" if "sampler" in attrs else None,
        f"ε = {attrs['sampler_step_size']:.3g}" if "sampler_step_size" in attrs else None,
        f"γ = {attrs['localization']:g}" if "localization" in attrs else None,
        f"batch {attrs['batch_size']}" if "batch_size" in attrs else None,
        f"baseline {attrs['baseline']}" if "baseline" in attrs else None,
        f"{result.llc_trace.shape[1]} draws",
        f"burn-in {result.warmup_loss.shape[1]}",
        f"thin {attrs['thin']}" if attrs.get("thin", 1) != 1 else None,
    ]
    return first + "\n" + ", ".join(s for s in settings if s)


def plot_trace(result: LLCResult, *, true_lambda: float | None = None) -> Figure:
    """λ̂ per chain over the sampler steps, and the minibatch loss with the burn-in.

    Top: for each chain, the running mean of the per-draw λ̂ (bold) and its means over blocks
    of about 1/50 of the draws, whole epochs with array data (faint); the burn-in steps shaded
    (no λ̂ there); λ̂ ± MCSE (dashed line and band) and the true λ (dash-dotted) when given.
    Bottom: the minibatch loss L_B(w_t) per chain (block means) through the burn-in and the
    draws, against L_n(w*) and L_n(w*) + λ̂/nβ; the right axis reads it as nβ (L − L_n(w*)),
    so the burn-in can be compared with λ̂.

    Parameters
    ----------
    result
        The estimate to draw.
    true_lambda
        Draw a reference line at a known λ (known-λ problems).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the step axis.
    """
    plt = _pyplot()
    colors = _colors(plt)
    figure, (ax_llc, ax_loss) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                             layout="constrained")
    _draw_llc(ax_llc, result, colors, true_lambda)
    _draw_loss(ax_loss, result, colors)
    return figure


def plot_rank(result: LLCResult) -> Figure:
    """Rank histograms of the λ̂ draws, one row per healthy chain.

    The draws of all healthy chains are ranked together; each chain's ranks are binned. If the
    chains sample the same distribution, every histogram is flat at the dashed line (the dotted
    lines are its 99 % range for independent draws; autocorrelated draws wander more). A chain
    whose bars pile up at one end sits higher or lower than the others: the chains have not
    mixed. Failed chains are left out; a single chain is split into halves.

    Returns
    -------
    matplotlib.figure.Figure
        One axes.
    """
    plt = _pyplot()
    rows = max(2, result.healthy_chains.size)
    figure, axis = plt.subplots(figsize=(7, 1.0 + 0.9 * rows), layout="constrained")
    _draw_rank(axis, result, _colors(plt))
    return figure


def plot_acceptance(result: LLCResult) -> Figure:
    """MALA acceptance of the sampler's steps per chain, and ‖w − w*‖ over the draws.

    Top: the Metropolis-adjusted acceptance probability of the SGLD move, computed every
    ``mala_every`` draws (points), its mean per chain (dashed) and the region below 0.90 where
    the step is too large and λ̂ is biased up (the ``low-mala-acceptance`` health check). On
    the known-λ problems the accurate steps gave 0.98 and more: acceptance is necessary, not
    sufficient. Shows a note instead when it was not recorded (``mala_every=None``).
    Bottom: the distance of each chain from w*. A distance still climbing steadily means the
    chains are still moving away from w* (too short a burn-in, or drift along flat directions
    that only the localization bounds); a step size too large shows as a jump in it.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the step axis.
    """
    plt = _pyplot()
    colors = _colors(plt)
    figure, (ax_acc, ax_dist) = plt.subplots(2, 1, figsize=(9, 6), sharex=True,
                                             layout="constrained")
    _draw_acceptance(ax_acc, result, colors)
    _draw_distance(ax_dist, result, colors, legend=True)
    return figure


def plot_diagnostics(result: LLCResult, *, true_lambda: float | None = None) -> Figure:
    """Every diagnostic of an estimate in one figure (what ``result.plot()`` draws).

    The λ̂ traces and the loss (:func:`plot_trace`) across the top, the rank plot
    (:func:`plot_rank`) bottom left, the MALA acceptance and ‖w − w*‖ (:func:`plot_acceptance`)
    bottom right; the title gives λ̂ ± MCSE, R-hat, ESS, the healthy chains and the settings.

    Returns
    -------
    matplotlib.figure.Figure
        Five axes: λ̂ trace, loss, rank plot, acceptance, distance (in that order).
    """
    plt = _pyplot()
    colors = _colors(plt)
    figure = plt.figure(figsize=(13, 12.5), layout="constrained")
    grid = figure.add_gridspec(4, 2, height_ratios=[1.35, 1.0, 0.8, 0.8],
                               width_ratios=[1.0, 1.15])
    ax_llc = figure.add_subplot(grid[0, :])
    ax_loss = figure.add_subplot(grid[1, :], sharex=ax_llc)
    ax_rank = figure.add_subplot(grid[2:, 0])
    ax_acc = figure.add_subplot(grid[2, 1])
    ax_dist = figure.add_subplot(grid[3, 1], sharex=ax_acc)
    _draw_llc(ax_llc, result, colors, true_lambda)
    _draw_loss(ax_loss, result, colors)
    _draw_rank(ax_rank, result, colors)
    _draw_acceptance(ax_acc, result, colors)
    _draw_distance(ax_dist, result, colors)
    ax_llc.tick_params(labelbottom=True)
    figure.suptitle(_headline(result, true_lambda), fontsize=11)
    return figure
