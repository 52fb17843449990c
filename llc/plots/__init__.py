"""Plots of an :class:`~llc.LLCResult` (needs the ``plots`` extra: matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` (created through pyplot, so
``plt.show()`` and notebooks display it); save it with ``figure.savefig(path)`` and close it
with ``plt.close(figure)``. matplotlib is imported inside the functions only: ``import llc``
and ``import llc.plots`` never import it. On a Linux machine without a display, a GUI backend
selected by the environment is replaced by Agg, so the functions also work headless.

- :func:`plot_diagnostics` -- everything below in one figure (what ``result.plot()`` draws);
- :func:`plot_trace` -- λ̂ per chain over the steps (running and block means) and the loss;
- :func:`plot_rank` -- rank histograms of the λ̂ draws per chain (do the chains mix?);
- :func:`plot_acceptance` -- MALA acceptance of the sampler's steps, and ‖w − w*‖;
- :func:`plot_trajectory` -- λ̂ and the training loss over training (a
  :class:`~llc.trajectory.TrajectoryResult`), its abrupt changes shaded.

The per-draw λ̂ ``nβ (L_B(w_t) − baseline)`` is dominated by minibatch noise (its standard
deviation is many times λ̂, tens of times with ``baseline="full"``), so the traces show the
running mean of each chain (bold) and means over consecutive blocks of about 1/50 of the
draws (faint), not the single draws; the per-draw standard deviation is written in the title.
With ``trace_batch="own"`` the blocks are whole epochs, aligned to the epochs, where that
leaves at least 20 blocks: every epoch is a permutation of the rows, so the batch noise
cancels over it and the block means show how the chain really moves. Failed chains (diverged or
raised; left out of λ̂) are dashed, end in a labelled cross where they stopped, and are named
"failed" in the legend; the y-ranges follow the healthy chains.
"""

from __future__ import annotations

from .._drawing import register
from .estimate import plot_acceptance, plot_diagnostics, plot_rank, plot_trace
from .trajectory import plot_trajectory

__all__ = ["plot_acceptance", "plot_diagnostics", "plot_rank", "plot_trace", "plot_trajectory"]

register("diagnostics", plot_diagnostics)
register("trajectory", plot_trajectory)
