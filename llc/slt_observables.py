r"""More observables of singular learning theory from the chains of one ``llc.estimate``.

Per-sample losses at the sampled parameters give Watanabe's functional variance, singular
fluctuation and WAIC; the loss trace alone gives WBIC. The per-sample losses are computed
after sampling, at the parameter draws that ``llc.estimate(..., keep_params_every=k)`` kept
(opt-in: those draws cost chains × draws/k × d numbers of memory), on a fixed evaluation set.

With :math:`\ell_{t,i}` the negative log-likelihood of evaluation point i at draw t, m
evaluation points, n training samples, the sampled posterior at inverse temperature
:math:`\beta = n\beta / n` (localized at w* with strength γ):

- functional variance :math:`V = \sum_{i=1}^m \operatorname{Var}_t[\ell_{t,i}]`;
- singular fluctuation :math:`\hat\nu = \frac{n\beta}{2m} V = \frac{\beta}{2}\cdot
  \frac{n}{m} V`, Watanabe's :math:`\nu = \frac{\beta}{2}\,\mathbb E[V_n]` with the sum over
  the training set estimated from m of its points (the evaluation set should be drawn from
  the training data). A regular model has :math:`\nu = d/2` at every β: the posterior
  covariance is :math:`(n\beta H)^{-1}` and :math:`\operatorname{Var}_w[\ell_i] \approx
  \nabla\ell_i^\top (n\beta H)^{-1} \nabla\ell_i`, whose sum over n points is d/β;
- WAIC (per sample, Watanabe 2010, for the β-posterior)
  :math:`W = T + \beta\,\frac{V}{m}`, :math:`T = -\frac1m \sum_i \log \frac1S \sum_t
  e^{-\ell_{t,i}}` (the Bayes training loss on the evaluation points);
- WBIC :math:`= n\,\mathbb E_w[L_n(w)]`, from the minibatch losses of the draws, defined only
  at :math:`n\beta = n / \log n` (β = 1/log n, Watanabe 2013).

The localization γ changes the posterior: with γ ≪ nβ × the curvature it is negligible (the
default γ = 1 against nβ ≈ 10³ in the tests); strong γ shrinks the posterior and ν̂.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._backend import backend_for
from ._data import ArrayData, make_data

if TYPE_CHECKING:
    import xarray as xr

    from .result import LLCResult

__all__ = ["Observables", "observables", "wbic"]


def wbic(result: LLCResult) -> float:
    """WBIC = n E_w[L_n(w)] from the draws' minibatch losses (module docs).

    Raises
    ------
    ValueError
        If the result was not sampled at nβ = n / log n, where WBIC is defined.
    """
    n = int(result.attrs["num_data"])
    if not math.isclose(result.nbeta, n / math.log(n), rel_tol=1e-9):
        raise ValueError(
            f"WBIC needs the posterior at β = 1/log n, i.e. nbeta = n / log n = "
            f"{n / math.log(n):.6g}; this result has nbeta = {result.nbeta:.6g}")
    losses = result.loss_trace[result.healthy_chains]
    return float(n * np.nanmean(losses))


@dataclass(frozen=True, repr=False)
class Observables:
    """Watanabe's observables from one estimate (module docs for the definitions).

    Attributes
    ----------
    pointwise_loss
        ℓ, shape (chain, kept draw, evaluation point): the per-sample negative
        log-likelihoods at the kept parameter draws of the healthy chains.
    nbeta, num_data
        nβ and n of the estimate; β = nβ / n.
    wbic
        n E[L_n(w)], or NaN when nβ ≠ n / log n.
    llc_draws
        The λ̂ draws at the same (chain, kept draw), for the ``posterior`` group.
    chains, draws
        The estimate's indices of those chains and draws (the ``chain`` and ``draw``
        coordinates of :meth:`to_arviz`); default 0, 1, ….
    observed
        The evaluation points' targets (the last array of ``eval_data``), ArviZ's
        ``observed_data`` group; None when not known.
    """

    pointwise_loss: np.ndarray
    nbeta: float
    num_data: int
    wbic: float
    llc_draws: np.ndarray
    chains: np.ndarray | None = None
    draws: np.ndarray | None = None
    observed: np.ndarray | None = None

    @property
    def beta(self) -> float:
        """The inverse temperature β = nβ / n."""
        return self.nbeta / self.num_data

    @property
    def num_eval(self) -> int:
        """m, the number of evaluation points."""
        return int(self.pointwise_loss.shape[-1])

    def _flat_draws(self) -> np.ndarray:
        return self.pointwise_loss.reshape(-1, self.num_eval)

    @property
    def functional_variance(self) -> float:
        """V = Σ_i Var_t[ℓ_{t,i}] over the evaluation points (draws of all chains pooled)."""
        return float(np.sum(np.var(self._flat_draws(), axis=0, ddof=1)))

    @property
    def singular_fluctuation(self) -> float:
        """ν̂ = (nβ / 2m) V: d/2 for a regular model."""
        return self.nbeta * self.functional_variance / (2 * self.num_eval)

    @property
    def training_loss(self) -> float:
        """T = −(1/m) Σ_i log mean_t exp(−ℓ_{t,i}), the Bayes training loss."""
        draws = -self._flat_draws()
        top = draws.max(axis=0)
        log_mean = top + np.log(np.mean(np.exp(draws - top), axis=0))
        return float(-np.mean(log_mean))

    @property
    def waic(self) -> float:
        """W = T + β V / m, per sample, for the sampled β-posterior."""
        return self.training_loss + self.beta * self.functional_variance / self.num_eval

    def to_arviz(self) -> xr.DataTree:
        """A DataTree in ArviZ's schema: ``posterior`` (λ̂ at the kept draws),
        ``log_likelihood`` (−ℓ as ``y``, dims chain, draw, eval_point) and ``observed_data``
        (``y``, the evaluation targets, when known), with the estimate's chain and draw
        indices as coordinates, so ``arviz_stats.loo`` and friends can read it (for the
        sampled, tempered and localized, posterior)."""
        import xarray as xr

        chains, draws, points = self.pointwise_loss.shape
        coords = {"chain": np.arange(chains) if self.chains is None else self.chains,
                  "draw": np.arange(draws) if self.draws is None else self.draws,
                  "eval_point": np.arange(points)}
        dims = ("chain", "draw", "eval_point")
        tree = xr.DataTree()
        tree["posterior"] = xr.DataTree(xr.Dataset(
            {"llc": (dims[:2], self.llc_draws)},
            coords={key: coords[key] for key in dims[:2]}))
        tree["log_likelihood"] = xr.DataTree(xr.Dataset({"y": (dims, -self.pointwise_loss)},
                                                        coords=coords))
        if self.observed is not None:
            extra = tuple(f"y_dim_{i}" for i in range(self.observed.ndim - 1))
            tree["observed_data"] = xr.DataTree(xr.Dataset(
                {"y": (("eval_point", *extra), self.observed)},
                coords={"eval_point": coords["eval_point"]}))
        tree.attrs.update(nbeta=self.nbeta, num_data=self.num_data,
                          functional_variance=self.functional_variance,
                          singular_fluctuation=self.singular_fluctuation, waic=self.waic,
                          wbic=self.wbic)
        return tree

    def __repr__(self) -> str:
        chains, draws, points = self.pointwise_loss.shape
        return (f"Observables(WBIC={self.wbic:.6g}, WAIC={self.waic:.6g} per sample, "
                f"training loss={self.training_loss:.6g}, functional variance="
                f"{self.functional_variance:.4g}, singular fluctuation="
                f"{self.singular_fluctuation:.4g}; nβ={self.nbeta:.5g}, n={self.num_data}, "
                f"{chains} chains × {draws} kept draws × {points} evaluation points)")

    def summary(self) -> dict[str, float]:
        """The observables as a dict."""
        return {"wbic": self.wbic, "functional_variance": self.functional_variance,
                "singular_fluctuation": self.singular_fluctuation,
                "training_loss": self.training_loss, "waic": self.waic,
                "num_eval": float(self.num_eval),
                "num_draws": float(self._flat_draws().shape[0])}


def observables(
    result: LLCResult,
    pointwise_loss_fn: Callable[[Any, Any], Any],
    params: Any,
    eval_data: Any,
) -> Observables:
    """Functional variance, singular fluctuation, WAIC and WBIC of an estimate.

    Parameters
    ----------
    result
        An estimate made with ``keep_params_every=k`` (its ``param_draws``).
    pointwise_loss_fn
        ``pointwise_loss_fn(params, batch)``: the per-sample negative log-likelihoods of the
        batch, a framework vector of its length (the mean of which is ``loss_fn``), with the
        constants of the likelihood if WAIC is to be compared across models.
    params
        w*, the same pytree given to ``llc.estimate`` (for the structure, dtype and device).
    eval_data
        A fixed evaluation set: a tuple of arrays sharing their rows (not an iterable of
        batches), best a random subset of the training data (a few hundred to a few
        thousand points).

    Returns
    -------
    Observables

    Raises
    ------
    ValueError
        If the result kept no parameter draws, or ``pointwise_loss_fn`` does not return one
        finite value per evaluation point.
    """
    if result.param_draws is None:
        raise ValueError("`result` kept no parameter draws: run llc.estimate with "
                         "keep_params_every=k (e.g. 10) to compute these observables")
    if not callable(pointwise_loss_fn):
        raise TypeError("`pointwise_loss_fn` must be callable as pointwise_loss_fn(params, batch)")
    if result.attrs.get("restrict", "off") != "off":
        raise ValueError("`result` is a restricted estimate (`restrict=`): its parameter draws "
                         "hold the sampled coordinates only, and these observables need the "
                         "whole model; run them on an unrestricted estimate")
    backend = backend_for(params, argument="params")
    center, unravel = backend.ravel(params)
    if int(center.shape[0]) != result.param_draws.shape[-1]:
        raise ValueError(f"`params` has {int(center.shape[0])} numbers but the result's draws "
                         f"have {result.param_draws.shape[-1]}: pass the estimate's own params")
    if not isinstance(eval_data, tuple):
        raise TypeError("`eval_data` must be arrays sharing their rows, e.g. a tuple (x, y): "
                        "the per-sample losses are taken on all of it at once; got a "
                        f"{type(eval_data).__name__} (concatenate batches first)")
    dataset = make_data(eval_data, num_data=None, batch_size=None, backend=backend,
                        like=backend.data_like(params))
    assert isinstance(dataset, ArrayData)  # a tuple is array data
    batch = dataset.arrays
    m = dataset.num_data
    healthy = result.param_draws[result.healthy_chains]
    dtype = str(backend.describe(center)["dtype"])
    device = backend.describe(center)["device"]
    losses = np.full(healthy.shape[:2] + (m,), np.nan)
    for chain, draws in enumerate(healthy):
        for index, draw in enumerate(draws):
            if not np.isfinite(draw).all():
                continue
            flat = backend.from_numpy(draw, dtype=dtype, device=None if device == "cpu" else device)
            values = backend.to_numpy(pointwise_loss_fn(unravel(flat), batch))
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            if values.shape != (m,):
                raise ValueError(f"`pointwise_loss_fn` returned {values.size} values for {m} "
                                 "evaluation points: expected one loss per point")
            losses[chain, index] = values
    complete = np.isfinite(losses).all(axis=(0, 2))
    losses = losses[:, complete]
    every = int(result.attrs["keep_params_every"])
    llc_draws = result.llc_trace[result.healthy_chains][:, ::every][:, complete]
    draws = (every * np.arange(complete.size))[complete]
    if losses.shape[1] < 2:
        raise ValueError("fewer than 2 parameter draws with finite per-sample losses")
    n = int(result.attrs["num_data"])
    value = wbic(result) if math.isclose(result.nbeta, n / math.log(n), rel_tol=1e-9) \
        else math.nan
    observed = np.asarray(backend.to_numpy(batch[-1]))
    return Observables(losses, float(result.nbeta), n, value, llc_draws,
                       chains=np.asarray(result.healthy_chains), draws=draws, observed=observed)
