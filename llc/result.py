"""The result of :func:`llc.estimate`: traces, the λ̂ estimate, diagnostics, ArviZ export."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._drawing import draw
from ._errors import AllChainsFailedError, ChainFailureWarning, Finding, IncompleteRunWarning

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import xarray as xr

    from ._engine.runner import ChainRun

__all__ = ["LLCResult", "ChainFailureWarning", "IncompleteRunWarning"]


@dataclass
class LLCResult:
    """λ̂ and the traces it came from.

    Attributes
    ----------
    llc_trace
        Per-draw estimates nβ (L_B(w_t) − L_n(w*)), shape (chain, draw), float64; NaN after a
        chain diverged.
    loss_trace
        Minibatch losses L_B(w_t), shape (chain, draw).
    init_loss
        L_n(w*), the baseline (full data unless ``init_loss_batches`` was set).
    nbeta
        The effective inverse temperature nβ used.
    sample_stats
        Per-draw sampler statistics, each (chain, draw): ``distance`` ‖w − w*‖,
        ``grad_norm`` ‖∇L_B(w)‖, ``diverging``, ``step_size``, ``mala_acceptance`` (every
        ``mala_every``-th draw, NaN elsewhere) and ``baseline_loss`` L_B(w*) on the same
        minibatch when ``baseline="minibatch"``.
    warmup_loss
        Burn-in minibatch losses, (chain, num_burnin); never part of λ̂.
    failed_chains
        Boolean per chain: diverged (non-finite loss or parameters) or raised.
    chain_errors
        A message per chain ("" for healthy chains).
    attrs
        Settings and provenance (backend, device, n, nβ, γ, sampler settings, seed...).
    elapsed
        Wall-clock seconds of the whole call.
    findings
        What the health checks found (:func:`llc.check_health`); empty for a healthy run.
    param_draws
        With ``keep_params_every=k``: the flat parameter vector w_t of every k-th draw,
        shape (chain, draw // k, num_params), in the params' dtype (leaves in the params'
        flattening order, each raveled; ``attrs["param_shapes"]`` lists their shapes).
    full_loss_trace
        With ``full_loss_every=k``: the full-data loss L_n(w_t) of every k-th draw, shape
        (chain, ⌈draws / k⌉); else ``None``.
    probe_loss
        With ``probe=``: the per-sample (or per-token) losses ℓ_i(w_t) on the probe data at
        every ``probe_every``-th draw, shape (chain, ⌈draws / k⌉, samples[, tokens]), NaN
        where a token is masked; else ``None``.
    probe_loss_at_center
        ℓ_i(w*) on the probe data, shape (samples[, tokens]); ``None`` without ``probe=``.
    """

    llc_trace: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    sample_stats: dict[str, np.ndarray]
    warmup_loss: np.ndarray
    failed_chains: np.ndarray
    chain_errors: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    elapsed: float = float("nan")
    findings: list[Finding] = field(default_factory=list)
    param_draws: np.ndarray | None = None
    full_loss_trace: np.ndarray | None = None
    probe_loss: np.ndarray | None = None
    probe_loss_at_center: np.ndarray | None = None
    _first_error: BaseException | None = field(default=None, repr=False, compare=False)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_chains(cls, runs: list[ChainRun], *, attrs: dict[str, Any], elapsed: float,
                    num_draws: int | None = None,
                    probe_loss_at_center: np.ndarray | None = None) -> LLCResult:
        """Assemble a result from the chains' host-side records (the first ``num_draws``
        draws of each, for an interrupted run)."""
        nbeta = float(attrs["nbeta"])
        init_loss = float(attrs["init_loss"])
        keep = slice(None) if num_draws is None else slice(0, num_draws)
        loss = np.stack([run.draws["loss"][keep] for run in runs])
        stats = {name: np.stack([run.draws[name][keep] for run in runs])
                 for name in runs[0].draws if name != "loss"}
        reference = stats.get("baseline_loss", init_loss)
        num_burnin = runs[0].warmup_loss.shape[0]
        thin = int(attrs.get("thin", 1))
        diverging = np.zeros(loss.shape, dtype=bool)
        for chain, run in enumerate(runs):
            if run.diverged_at is not None:
                first_draw = max(0, -(-(run.diverged_at - num_burnin) // thin))
                diverging[chain, min(first_draw, loss.shape[1] - 1):] = True
        stats["diverging"] = diverging
        if "sampler_step_size" in attrs:
            stats["step_size"] = np.full(loss.shape, float(attrs["sampler_step_size"]))
        return cls(
            llc_trace=nbeta * (loss - reference),
            loss_trace=loss,
            init_loss=init_loss,
            nbeta=nbeta,
            sample_stats=stats,
            warmup_loss=np.stack([run.warmup_loss for run in runs]),
            failed_chains=np.array([run.failed for run in runs]),
            chain_errors=[run.failure_message() for run in runs],
            param_draws=None if runs[0].params is None
            else np.stack([np.asarray(run.params) for run in runs]),
            full_loss_trace=None if runs[0].full_loss is None
            else np.stack([np.asarray(run.full_loss) for run in runs])[
                :, :None if num_draws is None else -(-num_draws // int(attrs["full_loss_every"]))],
            probe_loss=None if runs[0].probe is None
            else np.stack([np.asarray(run.probe) for run in runs])[
                :, :None if num_draws is None else -(-num_draws // int(attrs["probe_every"]))],
            probe_loss_at_center=probe_loss_at_center,
            attrs=attrs,
            elapsed=elapsed,
            _first_error=next((run.error for run in runs if run.error is not None), None),
        )

    def _raise_if_every_chain_failed(self) -> None:
        failed = np.flatnonzero(self.failed_chains)
        if failed.size == len(self.failed_chains):
            details = "; ".join(f"chain {c}: {self.chain_errors[c]}" for c in failed)
            raise AllChainsFailedError(
                f"every chain failed ({details}). If they diverged, lower `step_size` "
                f"(now {self.attrs.get('sampler_step_size')}) or raise `localization`"
            ) from self._first_error

    @property
    def complete(self) -> bool:
        """False for a run interrupted before its last draw (``KeyboardInterrupt``)."""
        return bool(self.attrs.get("complete", 1))

    # ---- the estimate -------------------------------------------------------------------
    @property
    def healthy_chains(self) -> np.ndarray:
        """Indices of the chains that enter λ̂."""
        return np.flatnonzero(~self.failed_chains)

    @property
    def llc_chains(self) -> np.ndarray:
        """Per-chain mean of the llc trace, shape (chain,); NaN for failed chains."""
        means = np.full(self.llc_trace.shape[0], np.nan)
        healthy = self.healthy_chains
        means[healthy] = self.llc_trace[healthy].mean(axis=1)
        return means

    @property
    def llc_mean(self) -> float:
        """λ̂: the mean of the llc trace over healthy chains and all their draws."""
        return float(self.llc_trace[self.healthy_chains].mean())

    @property
    def llc_std(self) -> float:
        """Standard deviation (ddof=1) of the per-chain means; NaN with one healthy chain."""
        means = self.llc_chains[self.healthy_chains]
        return float(np.std(means, ddof=1)) if means.size > 1 else float("nan")

    @property
    def llc_mcse(self) -> float:
        """The standard error of λ̂ that llc reports: the larger of
        :attr:`llc_mcse_autocorr` and :attr:`llc_chain_se` (the first alone with one
        healthy chain).

        The autocorrelation MCSE misses motion slower than the chains' autocorrelation
        window can see; the spread of independent chains' means sees it, but from few
        chains it is itself noisy. On trained networks the first alone can be several times
        smaller than the seed-to-seed spread of λ̂ (docs/estimator.md).
        """
        autocorr = self.llc_mcse_autocorr
        between = self.llc_chain_se
        return autocorr if not math.isfinite(between) else max(autocorr, between)

    @property
    def llc_mcse_autocorr(self) -> float:
        """Monte Carlo standard error of the trace's mean from its bulk ESS (arviz-stats'
        ``mcse``, the ``mcse_mean`` of ArviZ's summary)."""
        import arviz_stats

        return float(arviz_stats.mcse(self._healthy_posterior(), var_names=["llc"])["llc"])

    @property
    def llc_chain_se(self) -> float:
        """Between-chain standard error: the standard deviation (ddof=1) of the healthy
        chains' means over √(healthy chains); NaN with one healthy chain."""
        return self.llc_std / math.sqrt(len(self.healthy_chains))

    def llc_interval(self, prob: float = 0.95) -> tuple[float, float]:
        """A ``prob`` confidence interval for λ̂'s Monte Carlo error (its expectation over
        seeds at these settings, not the true λ).

        Half-width: the larger of z·:attr:`llc_mcse_autocorr` (z the normal quantile) and
        t·:attr:`llc_chain_se` with t Student's quantile at (healthy chains − 1) degrees of
        freedom, exact for independent chains whose means are normal; with few chains t is
        large (4 chains: 3.18 for 95 %).
        """
        from scipy import stats

        if not (isinstance(prob, float) and 0 < prob < 1):
            raise ValueError(f"`prob` must be a float in (0, 1); got {prob!r}")
        upper = 0.5 + prob / 2
        half = stats.norm.ppf(upper) * self.llc_mcse_autocorr
        chains = len(self.healthy_chains)
        if chains > 1:
            half = max(half, stats.t.ppf(upper, chains - 1) * self.llc_chain_se)
        return self.llc_mean - half, self.llc_mean + half

    @property
    def full_llc_trace(self) -> np.ndarray | None:
        """nβ (L_n(w_t) − L_n(w*)) at every ``full_loss_every``-th draw, (chain, kept);
        ``None`` without ``full_loss_every``."""
        if self.full_loss_trace is None:
            return None
        return self.nbeta * (self.full_loss_trace - self.init_loss)

    @property
    def full_llc_mean(self) -> float:
        """λ̂ from the full-data losses of the healthy chains (NaN without them)."""
        trace = self.full_llc_trace
        if trace is None:
            return float("nan")
        values = trace[self.healthy_chains]
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else float("nan")

    @property
    def ess_bulk(self) -> float:
        """Bulk effective sample size of the llc trace."""
        import arviz_stats

        return float(arviz_stats.ess(self._healthy_posterior(), var_names=["llc"],
                                     method="bulk")["llc"])

    @property
    def ess_tail(self) -> float:
        """Tail effective sample size of the llc trace, with arviz-stats' definition (its
        default quantiles: what ``arviz_stats.ess(..., method="tail")`` and
        ``arviz_stats.summary`` report for the same trace)."""
        import arviz_stats

        return float(arviz_stats.ess(self._healthy_posterior(), var_names=["llc"],
                                     method="tail")["llc"])

    @property
    def rhat(self) -> float:
        """Rank-normalized split R-hat of the llc trace (needs ≥ 2 healthy chains or 4 draws)."""
        import arviz_stats

        return float(arviz_stats.rhat(self._healthy_posterior(), var_names=["llc"])["llc"])

    @property
    def mala_acceptance(self) -> float:
        """Mean MALA acceptance of the healthy chains' diagnosed draws (NaN if none)."""
        values = self.sample_stats.get("mala_acceptance")
        if values is None:
            return float("nan")
        values = values[self.healthy_chains]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    # ---- export -------------------------------------------------------------------------
    def to_arviz(self) -> xr.DataTree:
        """An ``xarray.DataTree`` in ArviZ's schema.

        Groups: ``posterior`` (``llc``, ``loss`` over ``chain, draw``), ``sample_stats``
        (``lp``, the log density of the local posterior −U(w) = −nβ L_B(w) − (γ/2)‖w − w*‖²
        from the trace's loss, up to a constant; ``distance``, ``grad_norm``, ``diverging``,
        ``step_size``, ``baseline_loss``; and ``mala_acceptance`` on its own coordinate
        ``mala_draw``, the diagnosed draws, so that ArviZ's summaries see no NaN draws),
        ``warmup_posterior`` (``loss`` of the burn-in steps); the settings are the root
        attributes.
        """
        import arviz_base

        stats = {name: values for name, values in self.sample_stats.items()
                 if name != "mala_acceptance"}
        gamma = _float_or_nan(self.attrs.get("localization"))
        if "distance" in stats and math.isfinite(gamma):
            stats["lp"] = -(self.nbeta * self.loss_trace
                            + 0.5 * gamma * np.asarray(stats["distance"], np.float64) ** 2)
        groups: dict[str, dict[str, np.ndarray]] = {
            "posterior": {"llc": self.llc_trace, "loss": self.loss_trace},
            "sample_stats": stats,
        }
        if self.warmup_loss.shape[1]:
            groups["warmup_posterior"] = {"loss": self.warmup_loss}
        tree = arviz_base.from_dict(groups, save_warmup=True)
        acceptance = self.sample_stats.get("mala_acceptance")
        if acceptance is not None:
            import xarray as xr

            acceptance = np.asarray(acceptance, dtype=np.float64)
            diagnosed = np.flatnonzero(np.isfinite(acceptance).any(axis=0))
            dataset = tree["sample_stats"].to_dataset()
            dataset["mala_acceptance"] = xr.DataArray(
                acceptance[:, diagnosed], dims=("chain", "mala_draw"),
                coords={"chain": dataset["chain"].values, "mala_draw": diagnosed})
            tree["sample_stats"] = xr.DataTree(dataset)
        if self.param_draws is not None:
            import xarray as xr

            every = int(self.attrs.get("keep_params_every", 1))
            tree["parameters"] = xr.DataTree(xr.Dataset(
                {"w": (("chain", "kept_draw", "param"), self.param_draws)},
                coords={"chain": np.arange(self.param_draws.shape[0]),
                        "kept_draw": every * np.arange(self.param_draws.shape[1])},
            ))
        if self.full_loss_trace is not None:
            import xarray as xr

            every = int(self.attrs.get("full_loss_every", 1))
            tree["full_loss"] = xr.DataTree(xr.Dataset(
                {"loss": (("chain", "draw"), self.full_loss_trace),
                 "llc": (("chain", "draw"), self.full_llc_trace)},
                coords={"chain": np.arange(self.full_loss_trace.shape[0]),
                        "draw": every * np.arange(self.full_loss_trace.shape[1])},
            ))
        if self.probe_loss is not None:
            import xarray as xr

            every = int(self.attrs.get("probe_every", 1))
            sample_dims = ("sample", "token")[:self.probe_loss.ndim - 2]
            variables: dict[str, Any] = {
                "loss": (("chain", "draw", *sample_dims), self.probe_loss)}
            if self.probe_loss_at_center is not None:
                variables["loss_at_center"] = (sample_dims, self.probe_loss_at_center)
            tree["probe_loss"] = xr.DataTree(xr.Dataset(
                variables, coords={"chain": np.arange(self.probe_loss.shape[0]),
                                   "draw": every * np.arange(self.probe_loss.shape[1])}))
        tree.attrs.update(_netcdf_attrs(self.attrs))
        tree.attrs["elapsed_seconds"] = float(self.elapsed)
        tree.attrs["failed_chains"] = json.dumps(
            [int(c) for c in np.flatnonzero(self.failed_chains)])
        tree.attrs["chain_errors"] = json.dumps(self.chain_errors)
        tree.attrs["findings"] = json.dumps([dataclasses.asdict(f) for f in self.findings])
        return tree

    @classmethod
    def from_arviz(cls, tree: xr.DataTree) -> LLCResult:
        """Rebuild a result from :meth:`to_arviz`'s DataTree (e.g. one read from disk)."""
        for group in ("posterior", "sample_stats"):
            if group not in tree.children:
                raise ValueError(
                    f"`tree` has no {group!r} group: not written by LLCResult.to_arviz")
        posterior = tree["posterior"]
        attrs: dict[str, Any] = {str(key): value.item() if isinstance(value, np.generic) else value
                                 for key, value in tree.attrs.items()}
        for key in ("nbeta", "init_loss"):
            if key not in attrs:
                raise ValueError(f"`tree` lacks the root attribute {key!r}: not written by llc")
        elapsed = float(attrs.pop("elapsed_seconds", float("nan")))
        failed = json.loads(attrs.pop("failed_chains", "[]"))
        errors = json.loads(attrs.pop("chain_errors", "[]"))
        findings = [Finding(**{**item, "chains": tuple(item["chains"])})
                    for item in json.loads(attrs.pop("findings", "[]"))]
        llc_trace = np.asarray(posterior["llc"].values, dtype=np.float64)
        chains = llc_trace.shape[0]
        stats = {str(name): np.asarray(values.values)
                 for name, values in tree["sample_stats"].to_dataset().data_vars.items()
                 if name != "lp"}  # derived from the loss and distance on export
        if "mala_acceptance" in stats:
            stats["mala_acceptance"] = mala_acceptance_per_draw(
                tree["sample_stats"].to_dataset(), llc_trace.shape[1])
        if "diverging" in stats:
            stats["diverging"] = stats["diverging"].astype(bool)
        warmup = (np.asarray(tree["warmup_posterior"]["loss"].values, dtype=np.float64)
                  if "warmup_posterior" in tree.children else np.empty((chains, 0)))
        failed_chains = np.zeros(chains, dtype=bool)
        failed_chains[failed] = True
        param_draws = (np.asarray(tree["parameters"].to_dataset()["w"].values)
                       if "parameters" in tree.children else None)
        full_loss = (np.asarray(tree["full_loss"].to_dataset()["loss"].values, dtype=np.float64)
                     if "full_loss" in tree.children else None)
        probe = tree["probe_loss"].to_dataset() if "probe_loss" in tree.children else None
        probe_loss = (None if probe is None
                      else np.asarray(probe["loss"].values, dtype=np.float64))
        probe_center = (None if probe is None or "loss_at_center" not in probe
                        else np.asarray(probe["loss_at_center"].values, dtype=np.float64))
        if not attrs.get("complete", 1):  # a checkpoint: keep the draws taken so far
            burnin, thin = int(attrs.get("num_burnin", 0)), int(attrs.get("thin", 1))
            done = max(0, -(-(int(attrs.get("steps_done", 0)) - burnin) // thin))
            llc_trace = llc_trace[:, :done]
            stats = {name: values[:, :done] for name, values in stats.items()}
            if param_draws is not None:
                every = int(attrs.get("keep_params_every", 1))
                param_draws = param_draws[:, :-(-done // every)]
            if full_loss is not None:
                full_loss = full_loss[:, :-(-done // int(attrs.get("full_loss_every", 1)))]
            if probe_loss is not None:
                probe_loss = probe_loss[:, :-(-done // int(attrs.get("probe_every", 1)))]
        return cls(
            llc_trace=llc_trace,
            loss_trace=np.asarray(posterior["loss"].values,
                                  dtype=np.float64)[:, :llc_trace.shape[1]],
            init_loss=float(attrs["init_loss"]),
            nbeta=float(attrs["nbeta"]),
            sample_stats=stats,
            warmup_loss=warmup,
            failed_chains=failed_chains,
            chain_errors=errors or [""] * chains,
            attrs=attrs,
            elapsed=elapsed,
            findings=findings,
            param_draws=param_draws,
            full_loss_trace=full_loss,
            probe_loss=probe_loss,
            probe_loss_at_center=probe_center,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_arviz` to ``path``: a zarr store if it ends in ``.zarr``, else
        netCDF-4 (h5netcdf). Read it back with :func:`llc.load`."""
        return save_tree(self.to_arviz(), path)

    def _healthy_posterior(self) -> xr.DataTree:
        import arviz_base

        healthy = self.healthy_chains
        return arviz_base.from_dict({"posterior": {"llc": self.llc_trace[healthy]}})

    def summary(self) -> pd.DataFrame:
        """One row ``llc``: the estimate's statistics and the settings that produced it.

        Columns: ``mean``, ``sd``, ``mcse_mean``, ``ess_bulk``, ``ess_tail``, ``r_hat`` (from
        arviz-stats, on the healthy chains, with ArviZ's definitions), ``chain_std`` (spread
        of chain means), ``chain_se`` (:attr:`llc_chain_se`), ``mcse`` (:attr:`llc_mcse`,
        the error llc reports: the larger of ``mcse_mean`` and ``chain_se``),
        ``mala_acceptance`` (mean), ``healthy_chains``, ``draws``, then the settings:
        ``sampler``, ``step_size``, ``nbeta``, ``localization``, ``batch_size``, ``num_data``,
        ``num_burnin``, ``baseline``, ``backend``, and ``findings`` (the health-check codes).
        """
        import arviz_stats

        posterior = self._healthy_posterior()
        table = arviz_stats.summary(posterior, var_names=["llc"], kind="all", round_to="none")
        table = table[["mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]].copy()
        table["chain_std"] = self.llc_std
        table["chain_se"] = self.llc_chain_se
        table["mcse"] = self.llc_mcse
        table["mala_acceptance"] = self.mala_acceptance
        table["healthy_chains"] = len(self.healthy_chains)
        table["draws"] = self.llc_trace.shape[1]
        table["sampler"] = self.attrs.get("sampler")
        table["step_size"] = self.attrs.get("sampler_step_size")
        table["nbeta"] = self.nbeta
        for key in ("localization", "batch_size", "num_data", "num_burnin", "baseline", "backend"):
            table[key] = self.attrs.get(key)
        table["findings"] = ",".join(finding.code for finding in self.findings)
        return table

    def report(self) -> str:
        """A readable multi-line report: λ̂ ± MCSE, diagnostics, settings (``print(result)``)."""
        chains, draws = self.llc_trace.shape
        attrs = self.attrs
        lines = [
            f"λ̂ = {self.llc_mean:.4g} ± {self.llc_mcse:.2g} (MCSE)   chain std {self.llc_std:.3g}"
            f"   from {len(self.healthy_chains)}/{chains} chains × {draws} draws",
            f"diagnostics: R-hat {self.rhat:.3f}, ESS bulk {self.ess_bulk:.0f}, "
            f"ESS tail {self.ess_tail:.0f}, MALA acceptance "
            + (f"{self.mala_acceptance:.3f}" if math.isfinite(self.mala_acceptance)
               else "off" if attrs.get("mala_every") == "off" else "n/a"),
            f"settings: backend={attrs.get('backend')} ({attrs.get('device')}, "
            f"{attrs.get('dtype')}), sampler={attrs.get('sampler')}, "
            f"step_size={_short(attrs.get('sampler_step_size'))}, nbeta={self.nbeta:.5g} "
            f"(n={attrs.get('num_data')}), localization={attrs.get('localization')}, "
            f"batch_size={attrs.get('batch_size')}, burn-in={attrs.get('num_burnin')}, "
            f"thin={attrs.get('thin')}, baseline={attrs.get('baseline')}, "
            f"trace_batch={attrs.get('trace_batch', 'own')}, seed={attrs.get('seed')}",
            f"L_n(w*) = {self.init_loss:.6g}, "
            f"‖∇L_n(w*)‖ = {attrs.get('init_grad_norm', float('nan')):.3g}"
            f", {self.elapsed:.1f} s",
        ]
        if self.full_loss_trace is not None:
            lines.append(f"λ̂ from L_n(w_t) at every {attrs.get('full_loss_every')}th draw: "
                         f"{self.full_llc_mean:.4g}")
        lines += [f"chain {chain}: {error}"
                  for chain, error in enumerate(self.chain_errors) if error]
        lines += [f"health: {finding}" for finding in self.findings] or ["health: no findings"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def plot(self, *, true_lambda: float | None = None) -> Any:
        """Diagnostic plots (:func:`llc.plots.plot_diagnostics`): λ̂ trace with running
        means, loss, rank plot, MALA acceptance, distance; returns the matplotlib figure."""
        return draw("diagnostics", self, true_lambda=true_lambda)

    def __repr__(self) -> str:
        chains, draws = self.llc_trace.shape
        settings = ", ".join(
            f"{key}={self.attrs[key]}" for key in
            ("backend", "device", "dtype", "sampler", "sampler_step_size", "localization",
             "batch_size", "num_data") if key in self.attrs
        )
        return (
            f"LLCResult(llc={self.llc_mean:.4g} ± {self.llc_mcse:.2g} (MCSE), "
            f"chain std={self.llc_std:.3g}, nbeta={self.nbeta:.4g}, "
            f"chains={len(self.healthy_chains)}/{chains}, draws={draws}, {settings})"
        )


def _netcdf_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes netCDF can store: numbers and strings (``None`` and bools become text)."""
    clean: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bool) or value is None:
            clean[key] = str(value)
        elif isinstance(value, (int, float, str, np.integer, np.floating)):
            clean[key] = value
        else:
            clean[key] = repr(value)
    return clean


def save_tree(tree: xr.DataTree, path: str | os.PathLike[str]) -> Path:
    """Write ``tree`` to ``path``: a zarr store if it ends in ``.zarr``, else netCDF-4
    (h5netcdf)."""
    target = Path(path)
    if target.suffix == ".zarr":
        tree.to_zarr(target, mode="w")
    else:
        tree.to_netcdf(target, engine="h5netcdf")
    return target


def _short(value: Any) -> Any:
    """A float with 4 significant digits (an adapted step size), anything else as it is."""
    return f"{value:.4g}" if isinstance(value, float) else value


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def mala_acceptance_per_draw(stats: xr.Dataset, num_draws: int) -> np.ndarray:
    """``sample_stats["mala_acceptance"]`` of a DataTree as (chain, draw), NaN on the draws
    not diagnosed (it is stored on its own coordinate ``mala_draw``; files written before
    that hold it over ``draw`` already)."""
    values = np.asarray(stats["mala_acceptance"].values, dtype=np.float64)
    if "mala_draw" not in stats["mala_acceptance"].dims:
        return values
    acceptance = np.full((values.shape[0], num_draws), np.nan)
    acceptance[:, np.asarray(stats["mala_draw"].values, dtype=np.int64)] = values
    return acceptance
