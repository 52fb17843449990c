r"""Per-sample observables of the local posterior, from an estimate's probe losses.

Both are covariances over the local posterior p(w) of the per-sample losses ℓ_i(w) that
``llc.estimate(..., probe=(pointwise_loss_fn, probe_data))`` records at its draws
(``result.probe_loss``), estimated from the draws of the healthy chains pooled (every chain
samples the same posterior; the pooled mean centers them):

- the **Bayesian influence function** (Kreer et al. 2025, arXiv 2509.26544)
  :math:`\mathrm{BIF}(z_i, z_j) = -\mathrm{Cov}_p\big(\ell_i(w), \ell_j(w)\big)`. On a regular
  model with posterior covariance S it is :math:`-\big(g_i^\top S g_j + \tfrac12
  \mathrm{tr}(H_i S H_j S)\big)` to second order (g_i, H_i the gradient and Hessian of ℓ_i at
  w*): its first term is the classical influence function :math:`-g_i^\top H^{-1} g_j`
  scaled by S ≈ (nβ H)⁻¹;
- the **susceptibility** of an observable φ (Baker et al. 2025, arXiv 2504.18274)
  :math:`\chi_i = -\mathrm{Cov}_p\big(\varphi(w), \ell_i(w)\big)`, by default φ(w) =
  L_n(w) − L_n(w*) measured by the run's own trace (nβ⁻¹ times ``result.llc_trace``; the
  trace's minibatch noise is independent of w, so it adds variance, not covariance). Run
  the estimate with ``restrict=`` a component and φ is localized on it: χ_i then says how
  the loss of sample i moves with that component's loss increase. Subtracting from ℓ_i a
  baseline that does not depend on w leaves χ_i unchanged; ``relative_to_mean=True``
  subtracts the probe's mean loss at each draw instead (a w-dependent baseline), so that
  χ_i measures sample i relative to the others.

Signs: a sample whose loss rises together with the others' (or with φ) has a negative BIF
(or χ). Per-token losses count every (sample, token) pair as an item; masked tokens (NaN)
are left out of the covariances pairwise.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .result import LLCResult

__all__ = ["influence", "susceptibilities"]


def _draws(result: LLCResult) -> tuple[np.ndarray, tuple[int, ...]]:
    """The probe losses of the healthy chains as (chain, draw, item), and the item shape."""
    if result.probe_loss is None:
        raise ValueError("`result` has no probe losses: run llc.estimate with "
                         "probe=(pointwise_loss_fn, probe_data)")
    healthy = result.healthy_chains
    if healthy.size == 0:
        raise ValueError("`result` has no healthy chain")
    losses = np.asarray(result.probe_loss, dtype=np.float64)[healthy]
    shape = losses.shape[2:]
    return losses.reshape(losses.shape[0], losses.shape[1], -1), shape


def _select(count: int, indices: Any, name: str) -> np.ndarray:
    if indices is None:
        return np.arange(count)
    selected = np.asarray(indices)
    if selected.dtype == bool:
        if selected.shape != (count,):
            raise ValueError(f"`{name}` as a mask must have {count} entries; got "
                             f"{selected.shape}")
        return np.flatnonzero(selected)
    if not np.issubdtype(selected.dtype, np.integer) or selected.ndim != 1:
        raise TypeError(f"`{name}` must be item indices (1-d ints) or a boolean mask")
    if selected.size and (selected.min() < -count or selected.max() >= count):
        raise IndexError(f"`{name}` has an index outside the {count} probe items")
    return selected % count


def _covariance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cov over the first axis of every column of ``a`` with every column of ``b``, NaN
    entries (masked tokens) left out pairwise."""
    valid_a, valid_b = np.isfinite(a), np.isfinite(b)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-masked column: NaN
        a, b = a - np.nanmean(a, axis=0), b - np.nanmean(b, axis=0)  # against cancellation
    a0, b0 = np.where(valid_a, a, 0.0), np.where(valid_b, b, 0.0)
    wa, wb = valid_a.astype(np.float64), valid_b.astype(np.float64)
    count = wa.T @ wb
    sum_a, sum_b = a0.T @ wb, wa.T @ b0
    with np.errstate(invalid="ignore", divide="ignore"):
        covariance = (a0.T @ b0 - sum_a * sum_b / count) / (count - 1)
    return np.where(count > 1, covariance, np.nan)


def influence(result: LLCResult, *, rows: Any = None, columns: Any = None,
              correlation: bool = False) -> np.ndarray:
    r"""The Bayesian influence function −Cov(ℓ_i, ℓ_j) of probe items (module docs).

    Parameters
    ----------
    result
        An estimate made with ``probe=``.
    rows, columns
        The items i and j (indices or boolean masks over the flattened probe items:
        samples, or (sample, token) pairs in C order); default all. Asking for a block keeps
        memory at len(rows) × len(columns): the N × N matrix is never formed unless asked.
    correlation
        Return −Corr(ℓ_i, ℓ_j) instead (scale-free; an item whose loss does not vary gets
        NaN).

    Returns
    -------
    numpy.ndarray
        (len(rows), len(columns)), float64.

    Raises
    ------
    ValueError
        If ``result`` has no probe losses or no healthy chain.
    """
    draws, _ = _draws(result)
    pooled = draws.reshape(-1, draws.shape[-1])
    i = _select(pooled.shape[1], rows, "rows")
    j = _select(pooled.shape[1], columns, "columns")
    covariance = _covariance(pooled[:, i], pooled[:, j])
    if correlation:
        scale_i = np.sqrt(np.diag(_covariance(pooled[:, i], pooled[:, i])))
        scale_j = np.sqrt(np.diag(_covariance(pooled[:, j], pooled[:, j])))
        with np.errstate(invalid="ignore", divide="ignore"):
            covariance = covariance / np.outer(scale_i, scale_j)
    return -covariance


def susceptibilities(result: LLCResult, *, observable: Any = None,
                     relative_to_mean: bool = False) -> np.ndarray:
    r"""Susceptibilities χ_i = −Cov(φ, ℓ_i) of the probe items (module docs).

    Parameters
    ----------
    result
        An estimate made with ``probe=`` — with ``restrict=`` a component, for the
        susceptibilities of that component.
    observable
        φ at the probe draws, shape (chain, probe draw) like ``result.probe_loss``'s first
        two axes; default: the run's loss increase L_B(w_t) − L_B(w*) at those draws
        (``result.llc_trace / result.nbeta``).
    relative_to_mean
        Use ℓ_i − (the probe items' mean loss at the same draw) instead of ℓ_i.

    Returns
    -------
    numpy.ndarray
        χ of every probe item, shaped like the probe items (samples[, tokens]).

    Raises
    ------
    ValueError
        If ``result`` has no probe losses, or ``observable`` has another shape.
    """
    draws, shape = _draws(result)
    if observable is None:
        every = int(result.attrs.get("probe_every", 1))
        trace = result.llc_trace[result.healthy_chains] / result.nbeta
        phi = trace[:, ::every][:, :draws.shape[1]]
    else:
        phi = np.asarray(observable, dtype=np.float64)
        expected = (result.probe_loss.shape[0], draws.shape[1])  # type: ignore[union-attr]
        if phi.shape != expected:
            raise ValueError(f"`observable` must have shape (chain, probe draw) = {expected}; "
                             f"got {phi.shape}")
        phi = phi[result.healthy_chains]
    losses = draws
    if relative_to_mean:
        losses = losses - np.nanmean(losses, axis=-1, keepdims=True)
    chi = -_covariance(phi.reshape(-1, 1), losses.reshape(-1, losses.shape[-1]))[0]
    return chi.reshape(shape)
