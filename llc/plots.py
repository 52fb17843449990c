"""Plots of an :class:`~llc.LLCResult` (needs the ``plots`` extra: matplotlib)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .result import LLCResult

__all__ = ["plot_trace"]


def _pyplot() -> Any:
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
            import os

            if not os.environ.get("DISPLAY") and os.name != "nt":
                matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'llc[plots]'") from error
    return plt


def plot_trace(result: LLCResult, *, true_lambda: float | None = None) -> Figure:
    """Per-chain λ̂ traces with running means, and the loss traces with the burn-in.

    Parameters
    ----------
    result
        The estimate to draw.
    true_lambda
        Draw a reference line at a known λ (known-λ problems).

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    figure, (ax_llc, ax_loss) = plt.subplots(2, 1, figsize=(9, 6.5), constrained_layout=True)
    chains, draws = result.llc_trace.shape
    burnin = result.warmup_loss.shape[1]
    thin = int(result.attrs.get("thin", 1))
    steps = burnin + np.arange(draws) * thin
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for chain in range(chains):
        color = colors[chain % len(colors)]
        trace = result.llc_trace[chain]
        running = np.cumsum(trace) / np.arange(1, draws + 1)
        label = f"chain {chain}" + (" (failed)" if result.failed_chains[chain] else "")
        ax_llc.plot(steps, trace, color=color, alpha=0.25, linewidth=0.6)
        ax_llc.plot(steps, running, color=color, linewidth=1.6, label=label)
        ax_loss.plot(np.arange(burnin), result.warmup_loss[chain], color=color, alpha=0.4,
                     linewidth=0.6)
        ax_loss.plot(steps, result.loss_trace[chain], color=color, alpha=0.6, linewidth=0.6)
    mean = result.llc_mean
    ax_llc.axhline(mean, color="black", linewidth=1.2, linestyle="--",
                   label=f"λ̂ = {mean:.3g} ± {result.llc_mcse:.2g}")
    if true_lambda is not None:
        ax_llc.axhline(true_lambda, color="crimson", linewidth=1.2, label=f"true λ = {true_lambda:g}")
    spread = np.nanpercentile(result.llc_trace, [1, 99])
    low = min(spread[0], mean, true_lambda if true_lambda is not None else mean)
    high = max(spread[1], mean, true_lambda if true_lambda is not None else mean)
    ax_llc.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
    ax_llc.set_ylabel("nβ (L_B(w_t) − L_n(w*))")
    ax_llc.set_title(f"λ̂ per draw (faint) and running mean per chain; nβ = {result.nbeta:.4g}")
    ax_llc.legend(loc="upper right", fontsize=8, ncols=2)
    for axis in (ax_llc, ax_loss):
        if burnin:
            axis.axvspan(0, burnin, color="grey", alpha=0.12, label="burn-in" if axis is ax_loss else None)
    ax_loss.axhline(result.init_loss, color="black", linewidth=1.0, linestyle=":",
                    label="L_n(w*)")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("minibatch loss L_B(w_t)")
    ax_loss.legend(loc="upper right", fontsize=8)
    return figure
