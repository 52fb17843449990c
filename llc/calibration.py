"""Choosing the step size (and nβ, γ) by measurement: :func:`calibrate`.

``llc.calibrate(loss_fn, params, data)`` runs short chains with :func:`llc.estimate` at every
point of a grid step size × nβ × localization γ, **with the same seed at every point**, and
returns a :class:`CalibrationResult`: an ``xarray.Dataset`` of λ̂, its MCSE, the MALA
acceptance, the fraction of diverged chains, R-hat, ESS and the health findings per grid
point, a table, a plot, and a recommended point chosen by three documented rules
(:func:`step_verdicts`):

1. **stable**: no chain diverged or failed, no ``non-finite`` finding, λ̂ and its MCSE finite;
2. **accurate step**: mean MALA acceptance in the target band (default ≥ 0.98);
3. **on the plateau**: λ̂ differs from λ̂ at the next smaller stable step by at most
   ``plateau_z`` (default 2) combined MCSE, or by at most ``plateau_relative`` (default 5 %)
   of it.

The recommended step is the **largest** step that passes all three (the largest accurate step
mixes fastest). Why 0.98: on the known-λ problems the accurate SGLD steps gave MALA
acceptance ≥ 0.98, and acceptance 0.93 already overestimated λ of a deep linear network by
59 % (docs/trust.md); the often-quoted 0.90–0.95 is too permissive for SGLD on small models.
Why the plateau rule as well: acceptance is necessary, not sufficient. On the regular
``LinearRegression(4, 3)`` a step with acceptance 0.988 overestimated λ by 128 %
(docs/calibration.md): the acceptance is scored on each step's own minibatch and does not see
the minibatch-gradient noise; only the change of λ̂ with the step size shows it.

``llc.calibrate`` is the function; the other names are importable from ``llc`` or from this
module, ``llc.calibration``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._estimate import default_nbeta, estimate
from ._validate import positive_float, positive_int, run_counts, seed_value
from .diagnostics import LLCHealthWarning
from .result import IncompleteRunWarning, LLCResult

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import xarray as xr
    from matplotlib.figure import Figure

__all__ = ["CalibrationResult", "CalibrationWarning", "DEFAULT_STEP_SCALES",
           "DEFAULT_TARGET_ACCEPTANCE", "PLATEAU_RELATIVE", "PLATEAU_Z", "calibrate",
           "default_step_sizes", "step_verdicts"]

#: Default lower bound of the MALA-acceptance band (rule 2): the accurate steps on the known-λ
#: problems gave ≥ 0.98; 0.93 overestimated λ of a DLN by 59 % (docs/trust.md).
DEFAULT_TARGET_ACCEPTANCE = 0.98
#: Default number of combined MCSE a change of λ̂ towards the next smaller step may reach
#: and still count as the plateau (rule 3).
PLATEAU_Z = 2.0
#: Default fraction of λ̂ at the next smaller step that a change may reach and still count as
#: the plateau (rule 3): below the few-percent bias of the validated settings.
PLATEAU_RELATIVE = 0.05
#: The default step grid, as ε·nβ: half decades from 1e-3 to 1 (7 steps). SGLD's drift step
#: is (ε/2)·nβ·∇L_n, so ε·nβ times the loss curvature decides stability and accuracy; the
#: accurate steps on the known-λ problems (inputs of unit scale) had ε·nβ ≈ 0.03–0.1.
DEFAULT_STEP_SCALES = tuple(float(10.0 ** e) for e in np.arange(-3.0, 0.01, 0.5))
DEFAULT_NUM_DRAWS = 1000
DEFAULT_NUM_BURNIN = 500
DEFAULT_MALA_EVERY = 5

#: Verdicts per grid point, in the order the rules are applied.
OK = "ok"
NOT_RUN = "not run"
UNSTABLE = "unstable"
ACCEPTANCE = "acceptance"
PLATEAU = "plateau"
NO_SMALLER_STEP = "no-smaller-step"
VERDICTS = (OK, UNSTABLE, ACCEPTANCE, PLATEAU, NO_SMALLER_STEP, NOT_RUN)

_DIMS = ("step_size", "nbeta", "localization")
# estimate's arguments that calibrate sets itself (grid) or cannot share between grid points.
_GRID_ARGUMENTS = {"step_size": "step_sizes", "nbeta": "nbetas", "localization": "localizations"}
_REFUSED = ("checkpoint", "resume", "checkpoint_every")
_ESTIMATE_PARAMETERS = tuple(inspect.signature(estimate).parameters)


class CalibrationWarning(UserWarning):
    """No grid point passed the calibration rules (``result.recommended`` is None)."""


# ---- the rules -----------------------------------------------------------------------------
def step_verdicts(step_sizes: Any, llc: Any, llc_mcse: Any, mala_acceptance: Any, stable: Any,
                  *, target_acceptance: float | tuple[float, float] = DEFAULT_TARGET_ACCEPTANCE,
                  plateau_z: float = PLATEAU_Z, plateau_relative: float = PLATEAU_RELATIVE,
                  ran: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""The calibration rules along one line of step sizes (fixed nβ and γ).

    Each step gets the verdict of the first rule it fails, in this order:

    - ``"not run"``: no estimate at this step (``ran`` is False: an interrupted calibration);
    - ``"unstable"`` (rule 1): ``stable`` is False (a chain diverged or failed, a
      ``non-finite`` finding), or λ̂ or its MCSE is not finite;
    - ``"acceptance"`` (rule 2): the mean MALA acceptance is NaN or outside the target band
      [low, high];
    - ``"no-smaller-step"`` (rule 3 cannot be checked): no smaller step of the grid is stable;
    - ``"plateau"`` (rule 3): λ̂ differs from λ̂ at the next smaller **stable** step
      :math:`\epsilon_j` by more than the tolerance

      .. math::

          |\hat\lambda_i - \hat\lambda_j| > \max\big(z\,\sqrt{s_i^2 + s_j^2},\;
          r\,|\hat\lambda_j|\big),

      with :math:`s` the MCSEs, :math:`z` = ``plateau_z`` and :math:`r` =
      ``plateau_relative``. The two estimates are treated as independent, which is lenient
      only in the right direction: the same seed at every step correlates their errors
      positively, so their difference is less noisy than :math:`\sqrt{s_i^2 + s_j^2}` says;
    - ``"ok"``: passes all three. The recommended step of the line is the largest ``"ok"``.

    Parameters
    ----------
    step_sizes
        Strictly increasing step sizes, 1-D.
    llc, llc_mcse, mala_acceptance, stable
        λ̂, its MCSE, the mean MALA acceptance and the stability (rule 1) per step.
    target_acceptance
        Lower bound of the band, or ``(low, high)``.
    plateau_z, plateau_relative
        The plateau tolerance (see above).
    ran
        Boolean per step: an estimate exists (default: all).

    Returns
    -------
    verdict, reference, change, tolerance
        Per step: the verdict (str array); the index of the step λ̂ was compared with (−1
        where none); the change :math:`|\hat\lambda_i - \hat\lambda_j|` and the tolerance
        (NaN where rule 3 was not evaluated).
    """
    steps = np.asarray(step_sizes, dtype=float)
    values = np.asarray(llc, dtype=float)
    errors = np.asarray(llc_mcse, dtype=float)
    acceptance = np.asarray(mala_acceptance, dtype=float)
    stable = np.asarray(stable, dtype=bool)
    ran = np.ones(steps.shape, dtype=bool) if ran is None else np.asarray(ran, dtype=bool)
    if steps.ndim != 1 or any(a.shape != steps.shape for a in (values, errors, acceptance,
                                                              stable, ran)):
        raise ValueError("`step_sizes`, `llc`, `llc_mcse`, `mala_acceptance`, `stable` and "
                         "`ran` must be 1-D of equal length")
    if steps.size > 1 and not np.all(np.diff(steps) > 0):
        raise ValueError("`step_sizes` must be strictly increasing")
    low, high = _band(target_acceptance)
    plateau_z = _non_negative("plateau_z", plateau_z)
    plateau_relative = _non_negative("plateau_relative", plateau_relative)

    usable = ran & stable & np.isfinite(values) & np.isfinite(errors)
    verdict = np.full(steps.shape, OK, dtype=object)
    reference = np.full(steps.shape, -1, dtype=np.int64)
    change = np.full(steps.shape, np.nan)
    tolerance = np.full(steps.shape, np.nan)
    for i in range(steps.size):
        if not ran[i]:
            verdict[i] = NOT_RUN
            continue
        if not usable[i]:
            verdict[i] = UNSTABLE
            continue
        if not (np.isfinite(acceptance[i]) and low <= acceptance[i] <= high):
            verdict[i] = ACCEPTANCE
            continue
        smaller = np.flatnonzero(usable[:i])
        if smaller.size == 0:
            verdict[i] = NO_SMALLER_STEP
            continue
        j = int(smaller[-1])
        reference[i] = j
        change[i] = abs(values[i] - values[j])
        tolerance[i] = max(plateau_z * math.hypot(errors[i], errors[j]),
                           plateau_relative * abs(values[j]))
        if change[i] > tolerance[i]:
            verdict[i] = PLATEAU
    return verdict.astype(str), reference, change, tolerance


def default_step_sizes(nbeta: float) -> np.ndarray:
    """The default step grid: ``DEFAULT_STEP_SCALES / nbeta`` (ε·nβ from 1e-3 to 1 in half
    decades), rounded to two significant digits."""
    nbeta = positive_float("nbeta", nbeta)
    return np.array([float(f"{scale / nbeta:.2g}") for scale in DEFAULT_STEP_SCALES])


# ---- the result ----------------------------------------------------------------------------
@dataclass
class CalibrationResult:
    """Short-chain estimates over a grid step size × nβ × γ and the recommended point.

    Attributes
    ----------
    dataset
        ``xarray.Dataset`` with dimensions ``(step_size, nbeta, localization)`` (coordinates
        sorted ascending) and data variables ``llc`` (λ̂), ``llc_mcse``, ``llc_std`` (spread
        of the chain means), ``mala_acceptance`` (mean), ``diverged`` (fraction of failed
        chains), ``rhat``, ``ess_bulk``, ``ess_tail``, ``findings`` (the health-check codes,
        comma-separated), ``stable`` (rule 1), ``verdict`` (see :func:`step_verdicts`),
        ``plateau_change`` and ``plateau_tolerance`` (rule 3), ``reference_step`` (the step
        λ̂ was compared with), ``recommended`` (bool), ``elapsed_seconds`` and ``error``
        (the message when every chain failed). Its attributes hold the rules' settings and
        the settings shared by every estimate.
    recommended
        ``{"step_size": ..., "nbeta": ..., "localization": ...}``, or ``None`` when no grid
        point passed the rules.
    reason
        Why that point was chosen, or why none was, in words with the numbers.
    results
        The :class:`~llc.LLCResult` of every grid point, an object array of shape
        (step_size, nbeta, localization); ``None`` where every chain failed or the point was
        not run.
    elapsed
        Wall-clock seconds of the whole calibration.
    """

    dataset: xr.Dataset
    recommended: dict[str, float] | None
    reason: str
    results: np.ndarray = field(repr=False)
    elapsed: float = float("nan")

    @property
    def recommended_result(self) -> LLCResult | None:
        """The :class:`~llc.LLCResult` of the recommended point (``None`` if none)."""
        if self.recommended is None:
            return None
        index = tuple(int(np.flatnonzero(self.dataset[dim].values == self.recommended[dim])[0])
                      for dim in _DIMS)
        return self.results[index]

    @property
    def complete(self) -> bool:
        """False when the calibration was interrupted and some grid points did not run."""
        return not bool((self.dataset["verdict"].values == NOT_RUN).any())

    def summary(self) -> pd.DataFrame:
        """One row per grid point, indexed by (``step_size``, ``nbeta``, ``localization``):
        every data variable of :attr:`dataset` as a column."""
        return self.dataset.to_dataframe(dim_order=list(_DIMS))

    def report(self) -> str:
        """A readable table per (nβ, γ): step, λ̂ ± MCSE, acceptance, diverged, R-hat,
        verdict, findings; the recommended point marked ``*``; then the reason."""
        ds = self.dataset
        lines = [(f"calibration over {ds.sizes['step_size']} step sizes × {ds.sizes['nbeta']} "
                  f"nβ × {ds.sizes['localization']} γ, {self.elapsed:.1f} s; target MALA "
                  f"acceptance [{ds.attrs['target_acceptance_low']:g}, "
                  f"{ds.attrs['target_acceptance_high']:g}]")]
        for nbeta in ds["nbeta"].values:
            for gamma in ds["localization"].values:
                column = ds.sel(nbeta=nbeta, localization=gamma)
                lines.append(f"nβ = {nbeta:.5g}, γ = {gamma:g}:")
                lines.append(f"  {'step_size':>10}  {'λ̂':>9} {'± MCSE':>7}  {'accept':>7}  "
                             f"{'diverged':>8}  {'R-hat':>6}  verdict")
                for index, step in enumerate(column["step_size"].values):
                    row = column.isel(step_size=index)
                    mark = "*" if bool(row["recommended"]) else " "
                    codes = str(row["findings"].values)
                    lines.append(
                        f"{mark} {step:>10.3g}  {float(row['llc']):>9.4g} "
                        f"{float(row['llc_mcse']):>7.2g}  {float(row['mala_acceptance']):>7.4f}  "
                        f"{float(row['diverged']):>8.2f}  {float(row['rhat']):>6.3f}  "
                        f"{row['verdict'].values}" + (f" [{codes}]" if codes else ""))
        lines.append(("recommended: " + ", ".join(f"{k}={v:.4g}" for k, v in
                                                  self.recommended.items()))
                     if self.recommended is not None else "recommended: none")
        lines.append(self.reason)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        ds = self.dataset
        grid = (f"{ds.sizes['step_size']} step sizes × {ds.sizes['nbeta']} nβ × "
                f"{ds.sizes['localization']} γ")
        if self.recommended is None:
            return f"CalibrationResult({grid}, recommended=None: no point passed the rules)"
        point = ds.sel(self.recommended)
        return (f"CalibrationResult({grid}, recommended step_size="
                f"{self.recommended['step_size']:.3g}, nbeta={self.recommended['nbeta']:.5g}, "
                f"localization={self.recommended['localization']:g}: λ̂ = "
                f"{float(point['llc']):.4g} ± {float(point['llc_mcse']):.2g} (MCSE), MALA "
                f"acceptance {float(point['mala_acceptance']):.4f})")

    def plot(self, *, true_lambda: float | None = None) -> Figure:
        """λ̂ ± 2 MCSE (top) and the mean MALA acceptance (bottom) against the step size
        (log axis), one line per (nβ, γ), with the target band shaded and the recommended
        point starred.

        Points that failed a rule are drawn hollow, unstable points (diverged chains) as a
        cross on the lower edge of both panels, λ̂ far above the accepted points as a triangle
        on the upper edge labelled with its value.

        Parameters
        ----------
        true_lambda
            A known λ to draw as a dashed line (e.g. ``problem.true_lambda``).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from .plots import _pyplot

        plt = _pyplot()
        ds = self.dataset
        steps = np.asarray(ds["step_size"].values, dtype=float)
        low, high = ds.attrs["target_acceptance_low"], ds.attrs["target_acceptance_high"]
        figure, (ax_llc, ax_acc) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                                layout="constrained", height_ratios=[1.4, 1.0])
        colors = plt.rcParams["axes.prop_cycle"].by_key().get("color") or ["C0"]
        llc_all = np.asarray(ds["llc"].values, dtype=float)
        mcse_all = np.asarray(ds["llc_mcse"].values, dtype=float)
        verdict_all = np.asarray(ds["verdict"].values).astype(str)
        trusted = np.isfinite(llc_all) & np.isin(verdict_all, (OK, PLATEAU, NO_SMALLER_STEP))
        band = np.where(np.isfinite(mcse_all), 2 * mcse_all, 0.0)
        if trusted.any():
            bottom = float(np.min((llc_all - band)[trusted]))
            top = float(np.max((llc_all + band)[trusted]))
        else:
            finite = np.isfinite(llc_all)
            bottom, top = ((float(llc_all[finite].min()), float(llc_all[finite].max()))
                           if finite.any() else (0.0, 1.0))
        if true_lambda is not None:
            bottom, top = min(bottom, true_lambda), max(top, true_lambda)
        pad = 0.1 * (top - bottom) or 0.5
        bottom, top = bottom - pad, top + pad
        edge = ax_llc.get_xaxis_transform()
        for number, (j, k) in enumerate(np.ndindex(ds.sizes["nbeta"], ds.sizes["localization"])):
            color = colors[number % len(colors)]
            label = f"nβ = {ds['nbeta'].values[j]:.4g}, γ = {ds['localization'].values[k]:g}"
            values, errors = llc_all[:, j, k], band[:, j, k]
            acceptance = np.asarray(ds["mala_acceptance"].values[:, j, k], dtype=float)
            verdicts = verdict_all[:, j, k]
            shown = np.isfinite(values) & (values <= top)
            ax_llc.errorbar(steps[shown], values[shown], yerr=errors[shown], color=color,
                            linewidth=1.2, capsize=3, label=label)
            ok = shown & (verdicts == OK)
            rejected = shown & (verdicts != OK)
            ax_llc.plot(steps[ok], values[ok], "o", color=color, markersize=6)
            ax_llc.plot(steps[rejected], values[rejected], "o", markersize=6,
                        markerfacecolor="white", markeredgecolor=color)
            above = np.isfinite(values) & (values > top)
            for step, value in zip(steps[above], values[above]):
                ax_llc.plot([step], [0.97], "^", color=color, markersize=8, transform=edge,
                            clip_on=False)
                ax_llc.annotate(f"{value:.3g}", (step, 0.97), xycoords=edge,
                                textcoords="offset points", xytext=(0, -14), ha="center",
                                fontsize=8, color=color)
            unstable = verdicts == UNSTABLE
            for axis in (ax_llc, ax_acc) if unstable.any() else ():
                axis.plot(steps[unstable], np.full(unstable.sum(), 0.03), "x", color=color,
                          markersize=9, mew=2, transform=axis.get_xaxis_transform(),
                          clip_on=False)
            finite = np.isfinite(acceptance)
            ax_acc.plot(steps[finite], acceptance[finite], "-", color=color, linewidth=1.2)
            ax_acc.plot(steps[finite & (verdicts == OK)], acceptance[finite & (verdicts == OK)],
                        "o", color=color, markersize=6)
            hollow = finite & (verdicts != OK)
            ax_acc.plot(steps[hollow], acceptance[hollow], "o", markersize=6,
                        markerfacecolor="white", markeredgecolor=color)
        if true_lambda is not None:
            ax_llc.axhline(true_lambda, color="black", linestyle="--", linewidth=1.2,
                           label=f"true λ = {true_lambda:g}")
        if self.recommended is not None:
            point = ds.sel(self.recommended)
            step = self.recommended["step_size"]
            ax_llc.plot([step], [float(point["llc"])], "*", color="black", markersize=16,
                        markerfacecolor="gold", zorder=5, label="recommended")
            ax_acc.plot([step], [float(point["mala_acceptance"])], "*", color="black",
                        markersize=16, markerfacecolor="gold", zorder=5)
        if (verdict_all == UNSTABLE).any():
            ax_llc.plot([], [], "x", color="0.3", mew=2, label="diverged / failed chains")
        ax_llc.plot([], [], "o", markerfacecolor="white", markeredgecolor="0.3",
                    label="rejected by a rule")
        ax_llc.set_ylim(bottom, top)
        ax_llc.set_ylabel(r"$\hat\lambda$ ± 2 MCSE")
        ax_llc.set_xscale("log")
        ax_llc.legend(fontsize=8, loc="upper left")
        title = ("recommended: " + ", ".join(f"{k} = {v:.3g}" for k, v in
                                             self.recommended.items())
                 if self.recommended is not None else "no grid point passed the rules")
        ax_llc.set_title(title, fontsize=10)
        ax_acc.axhspan(low, high, color="tab:green", alpha=0.15,
                       label=f"target band [{low:g}, {high:g}]")
        accepted = np.asarray(ds["mala_acceptance"].values, dtype=float)
        lowest = float(np.nanmin(accepted)) if np.isfinite(accepted).any() else low
        ax_acc.set_ylim(max(0.0, min(lowest, low) - 0.02), 1.005)
        ax_acc.set_ylabel("MALA acceptance")
        ax_acc.set_xlabel("step size ε")
        ax_acc.legend(fontsize=8, loc="lower left")
        return figure


# ---- the driver ----------------------------------------------------------------------------
def calibrate(
    loss_fn: Callable[[Any, Any], Any],
    params: Any,
    data: Any,
    *,
    step_sizes: Sequence[float] | np.ndarray | float | None = None,
    nbetas: Sequence[float] | np.ndarray | float | None = None,
    localizations: Sequence[float] | np.ndarray | float | None = None,
    num_chains: int = 4,
    num_draws: int = DEFAULT_NUM_DRAWS,
    num_burnin: int = DEFAULT_NUM_BURNIN,
    seed: int = 0,
    target_acceptance: float | tuple[float, float] = DEFAULT_TARGET_ACCEPTANCE,
    plateau_z: float = PLATEAU_Z,
    plateau_relative: float = PLATEAU_RELATIVE,
    progress: bool | None = None,
    **estimate_kwargs: Any,
) -> CalibrationResult:
    r"""Run short chains over a grid of step size × nβ × γ and recommend a step size.

    Calls :func:`llc.estimate` once per grid point with the same ``seed`` (so the points
    differ by their settings, not by their random numbers), silences its health warnings
    and keeps their findings, and applies the rules of :func:`step_verdicts` along the step
    sizes of every (nβ, γ):

    1. **stable**: no chain diverged or failed and no ``non-finite`` finding;
    2. **accurate**: mean MALA acceptance in ``target_acceptance`` (default ≥ 0.98: on the
       known-λ problems the accurate SGLD steps gave ≥ 0.98, while 0.93 overestimated λ of
       a deep linear network by 59 %, docs/trust.md; in much larger models acceptance falls
       at the same accuracy, roughly as 1 − acceptance ∝ √d: lower the bound there, and let
       rule 3 do the work);
    3. **on the plateau**: λ̂ changes by at most ``plateau_z`` combined MCSE (or
       ``plateau_relative`` of λ̂) towards the next smaller stable step.

    The recommended step of a (nβ, γ) is its largest step passing all three: the largest
    accurate step mixes fastest. The recommended (nβ, γ) is the one with a passing step
    whose nβ is closest (in ratio) to n / log n, the theory's β* = 1/log n (λ̂ at different
    nβ are different quantities: the rules cannot prefer one), then the smallest γ (a
    strong localization biases λ̂ low at finite n, DESIGN §3). If no point passes, a
    :class:`CalibrationWarning` says why, ``recommended`` is ``None`` and ``reason`` says
    what to change.

    Parameters
    ----------
    loss_fn, params, data
        As for :func:`llc.estimate`.
    step_sizes
        The step sizes ε to try (a number or a sequence of numbers > 0). Default: 7 steps
        with ε·nβ from 1e-3 to 1 in half decades (:data:`DEFAULT_STEP_SCALES`), nβ the
        geometric mean of ``nbetas``, rounded to two digits: SGLD's drift step is
        (ε/2)·nβ·∇L_n, so the step's stability and accuracy depend on ε·nβ times the
        loss curvature, and the accurate steps of the known-λ problems (unit-scale inputs)
        had ε·nβ ≈ 0.03–0.1. For a loss of another curvature scale, pass your own grid.
    nbetas
        The inverse temperatures nβ to try (> 0). Default: n / log n only, the default of
        :func:`llc.estimate` (n the dataset size).
    localizations
        The localization strengths γ to try (≥ 0). Default: 1.0 only, the default of
        :func:`llc.estimate`.
    num_chains
        Chains per grid point (≥ 2 for R-hat).
    num_draws, num_burnin
        Draws and burn-in steps per chain at every grid point: short chains (default 1000
        and 500, a quarter of the validated settings of docs/validation.md). Longer chains
        shrink the MCSE and make rule 3 sharper.
    seed
        The seed of every grid point.
    target_acceptance
        The MALA-acceptance band of rule 2: a lower bound (default 0.98; the upper bound is
        then 1) or a pair ``(low, high)``.
    plateau_z
        Combined MCSE that a change of λ̂ towards the next smaller step may reach (default 2).
    plateau_relative
        Fraction of λ̂ at the next smaller step that a change may reach (default 0.05): a
        change within either tolerance counts as the plateau.
    progress
        One progress bar over the grid points on stderr; default: only when stderr is a
        terminal. The per-estimate bars are off.
    **estimate_kwargs
        Passed to every :func:`llc.estimate` call (``batch_size``, ``sampler``,
        ``chain_method``, ``health_thresholds``, ...). Defaults that differ from
        ``estimate``: ``mala_every=5`` (acceptance measured on 1 draw in 5, so it is
        precise in short chains; it cannot be ``None`` here) and ``baseline="minibatch"``
        (the same expectation with a 2.5–4× smaller MCSE, docs/benchmarks.md, which rule 3
        needs). ``step_size``, ``nbeta`` and ``localization`` are refused (use the grids),
        and so are ``checkpoint``, ``checkpoint_every`` and ``resume`` (every grid point
        would write the same file). A sampler settings object (e.g.
        ``llc.samplers.SGLD(step_size=...)``) is copied with each grid step
        (``dataclasses.replace``).

    Returns
    -------
    CalibrationResult
        ``dataset`` (an ``xarray.Dataset`` over ``(step_size, nbeta, localization)``),
        ``recommended``, ``reason``, ``results``, ``summary()``, ``plot()``. After a
        ``KeyboardInterrupt`` the points done so far come back (``complete`` is False, the
        others have verdict ``"not run"``) with an ``IncompleteRunWarning``.

    Raises
    ------
    TypeError, ValueError
        For a malformed argument, before any sampling (the message names it): an empty grid,
        a step size or nβ ≤ 0, a negative γ, repeated grid values, a target band outside
        [0, 1], an argument ``llc.estimate`` does not take. Errors of ``estimate`` that do
        not depend on the grid point (a bad ``loss_fn`` or ``data``) propagate from the
        first call.

    Examples
    --------
    >>> problem = llc.problems.LinearRegression(4, 3)          # λ = 6
    >>> loss_fn, params, data = problem.in_backend("numpy", 10_000)
    >>> calibration = llc.calibrate(loss_fn, params, data, batch_size=500)
    >>> calibration.recommended          # {'step_size': ..., 'nbeta': ..., 'localization': 1.0}
    >>> calibration.plot(true_lambda=problem.true_lambda)
    """
    started = time.perf_counter()
    num_chains, num_draws, num_burnin = run_counts(loss_fn, num_chains, num_draws, num_burnin)
    seed = seed_value(seed)
    low, high = _band(target_acceptance)
    plateau_z = _non_negative("plateau_z", plateau_z)
    plateau_relative = _non_negative("plateau_relative", plateau_relative)
    _check_estimate_kwargs(estimate_kwargs)
    estimate_kwargs.setdefault("mala_every", DEFAULT_MALA_EVERY)
    if estimate_kwargs["mala_every"] is None:
        raise ValueError("`mala_every` cannot be None in calibrate: rule 2 needs the MALA "
                         f"acceptance (default {DEFAULT_MALA_EVERY})")
    estimate_kwargs.setdefault("baseline", "minibatch")
    sampler: Any = estimate_kwargs.pop("sampler", "sgld")
    if not isinstance(sampler, str) and not (
            dataclasses.is_dataclass(sampler) and not isinstance(sampler, type)
            and "step_size" in {f.name for f in dataclasses.fields(sampler)}):
        raise TypeError("`sampler` must be a name such as 'sgld' or a sampler settings "
                        "dataclass with a `step_size` field (e.g. "
                        f"llc.samplers.SGLD(step_size=1e-4)); got {sampler!r}")

    num_data = _num_data(data, estimate_kwargs.get("num_data"))
    theory_nbeta = default_nbeta(num_data) if num_data >= 2 else float("nan")
    if nbetas is None and not math.isfinite(theory_nbeta):
        raise ValueError(f"nβ = n / log n needs n >= 2 samples; got n={num_data}; pass `nbetas`")
    nbeta_grid = np.array([theory_nbeta]) if nbetas is None else _grid("nbetas", nbetas)
    gamma_grid = (np.array([1.0]) if localizations is None
                  else _grid("localizations", localizations, allow_zero=True))
    step_grid = (default_step_sizes(float(np.exp(np.mean(np.log(nbeta_grid)))))
                 if step_sizes is None else _grid("step_sizes", step_sizes))
    if progress is None:
        progress = sys.stderr.isatty()

    from tqdm.auto import tqdm

    shape = (step_grid.size, nbeta_grid.size, gamma_grid.size)
    results = np.empty(shape, dtype=object)
    numbers_ = {name: np.full(shape, np.nan) for name in
                ("llc", "llc_mcse", "llc_std", "mala_acceptance", "diverged", "rhat",
                 "ess_bulk", "ess_tail", "elapsed_seconds")}
    findings = np.full(shape, "", dtype=object)
    errors = np.full(shape, "", dtype=object)
    ran = np.zeros(shape, dtype=bool)
    stable = np.zeros(shape, dtype=bool)
    shared_attrs: dict[str, Any] | None = None
    interrupted = False

    # Columns (nβ, γ) outer, steps inner and ascending: the small, stable steps come first.
    order = [(i, j, k) for j in range(shape[1]) for k in range(shape[2]) for i in range(shape[0])]
    with tqdm(total=len(order), disable=not progress, file=sys.stderr, desc="llc calibrate",
              unit="point", dynamic_ncols=True) as bar:
        for i, j, k in order:
            step, nbeta, gamma = float(step_grid[i]), float(nbeta_grid[j]), float(gamma_grid[k])
            bar.set_postfix_str(f"ε={step:.2g} nβ={nbeta:.4g} γ={gamma:g}")
            point_sampler: Any = (sampler if isinstance(sampler, str)
                                  else dataclasses.replace(sampler, step_size=step))
            point_started = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", LLCHealthWarning)  # kept as findings
                    warnings.simplefilter("ignore", RuntimeWarning)  # arviz on short traces
                    result = estimate(loss_fn, params, data, sampler=point_sampler,
                                      step_size=step, nbeta=nbeta, localization=gamma,
                                      num_chains=num_chains, num_draws=num_draws,
                                      num_burnin=num_burnin, seed=seed, progress=False,
                                      **estimate_kwargs)
            except KeyboardInterrupt:
                interrupted = True
                break
            except RuntimeError as error:
                if not str(error).startswith("every chain failed"):
                    raise
                ran[i, j, k] = True
                numbers_["diverged"][i, j, k] = 1.0
                numbers_["elapsed_seconds"][i, j, k] = time.perf_counter() - point_started
                findings[i, j, k] = "non-finite"
                errors[i, j, k] = str(error)
                bar.update(1)
                continue
            results[i, j, k] = result
            ran[i, j, k] = result.complete
            for name, value in _statistics(result).items():
                numbers_[name][i, j, k] = value
            codes = [finding.code for finding in result.findings]
            findings[i, j, k] = ",".join(codes)
            stable[i, j, k] = (numbers_["diverged"][i, j, k] == 0 and "non-finite" not in codes)
            shared_attrs = _shared(shared_attrs, result.attrs)
            bar.update(1)
            bar.set_postfix_str(f"ε={step:.2g}: λ̂ {numbers_['llc'][i, j, k]:.4g}, acceptance "
                                f"{numbers_['mala_acceptance'][i, j, k]:.3f}")
            if not result.complete:  # estimate caught a KeyboardInterrupt and returned
                interrupted = True
                break
    if not ran.any() and interrupted:
        raise KeyboardInterrupt("interrupted before the first grid point finished")

    verdict = np.full(shape, NOT_RUN, dtype=object)
    reference = np.full(shape, np.nan)
    change = np.full(shape, np.nan)
    tolerance = np.full(shape, np.nan)
    for j in range(shape[1]):
        for k in range(shape[2]):
            v, ref, ch, tol = step_verdicts(
                step_grid, numbers_["llc"][:, j, k], numbers_["llc_mcse"][:, j, k],
                numbers_["mala_acceptance"][:, j, k], stable[:, j, k],
                target_acceptance=(low, high), plateau_z=plateau_z,
                plateau_relative=plateau_relative, ran=ran[:, j, k])
            verdict[:, j, k] = v
            reference[:, j, k] = np.where(ref >= 0, step_grid[np.maximum(ref, 0)], np.nan)
            change[:, j, k], tolerance[:, j, k] = ch, tol

    recommended_index = _choose(verdict, nbeta_grid, gamma_grid, theory_nbeta)
    recommended_mask = np.zeros(shape, dtype=bool)
    if recommended_index is not None:
        recommended_mask[recommended_index] = True

    import xarray as xr

    dims = _DIMS
    variables: dict[str, Any] = {name: (dims, values) for name, values in numbers_.items()}
    variables.update(
        findings=(dims, findings.astype(str)),
        stable=(dims, stable),
        verdict=(dims, verdict.astype(str)),
        plateau_change=(dims, change),
        plateau_tolerance=(dims, tolerance),
        reference_step=(dims, reference),
        recommended=(dims, recommended_mask),
        error=(dims, errors.astype(str)),
    )
    attrs: dict[str, Any] = {
        "inference_library": "llc",
        "llc_kind": "calibration",
        "target_acceptance_low": low,
        "target_acceptance_high": high,
        "plateau_z": plateau_z,
        "plateau_relative": plateau_relative,
        "num_data": num_data,
        "theory_nbeta": theory_nbeta,
        "seed": int(seed),
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_burnin": num_burnin,
    }
    for key, value in (shared_attrs or {}).items():
        attrs.setdefault(key, value)
    dataset = xr.Dataset(variables, coords={"step_size": step_grid, "nbeta": nbeta_grid,
                                            "localization": gamma_grid}, attrs=attrs)
    if recommended_index is None:
        recommended = None
        reason = _no_point_reason(dataset)
    else:
        i, j, k = recommended_index
        recommended = {"step_size": float(step_grid[i]), "nbeta": float(nbeta_grid[j]),
                       "localization": float(gamma_grid[k])}
        reason = _chosen_reason(dataset, recommended_index)
    dataset.attrs["reason"] = reason
    calibration = CalibrationResult(dataset=dataset, recommended=recommended, reason=reason,
                                    results=results, elapsed=time.perf_counter() - started)
    if interrupted:
        warnings.warn(f"calibration interrupted: {int(ran.sum())} of {ran.size} grid points "
                      "ran; the others have verdict 'not run' (result.complete is False)",
                      IncompleteRunWarning, stacklevel=2)
    elif recommended is None:
        warnings.warn(reason, CalibrationWarning, stacklevel=2)
    return calibration


# ---- helpers -------------------------------------------------------------------------------
def _band(target: Any) -> tuple[float, float]:
    """``target_acceptance`` as (low, high) with 0 ≤ low < high ≤ 1."""
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError("`target_acceptance` must be a number or a pair (low, high); got "
                             f"{len(target)} values")
        low, high = target
    else:
        low, high = target, 1.0
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"`target_acceptance` ({name}) must be a number in [0, 1]; got "
                             f"{value!r}")
    if not float(low) < float(high):
        raise ValueError(f"`target_acceptance` must have low < high; got ({low!r}, {high!r})")
    return float(low), float(high)


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0; got {value!r}")
    return float(value)


def _grid(name: str, values: Any, *, allow_zero: bool = False) -> np.ndarray:
    """A grid argument as a sorted 1-D float array of distinct valid numbers."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"`{name}` must be a number or a sequence of numbers; got {values!r}")
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        items = [values]
    elif isinstance(values, np.ndarray):
        if values.ndim > 1:
            raise ValueError(f"`{name}` must be one-dimensional; got shape {values.shape}")
        items = list(values.reshape(-1))
    elif hasattr(values, "__iter__"):
        items = list(values)
    else:
        raise TypeError(f"`{name}` must be a number or a sequence of numbers; got "
                        f"{type(values).__name__}")
    if not items:
        raise ValueError(f"`{name}` is empty: give at least one value")
    grid = np.array([positive_float(f"{name}[{index}]", item, allow_zero=allow_zero)
                     for index, item in enumerate(items)])
    if np.unique(grid).size != grid.size:
        raise ValueError(f"`{name}` has repeated values: {grid.tolist()}")
    return np.sort(grid)


def _check_estimate_kwargs(kwargs: dict[str, Any]) -> None:
    for name, grid in _GRID_ARGUMENTS.items():
        if name in kwargs:
            raise TypeError(f"`{name}` is set by the grid in calibrate: pass `{grid}` instead")
    for name in _REFUSED:
        if name in kwargs:
            raise ValueError(f"`{name}` is not supported by calibrate: every grid point would "
                             "write the same file")
    accepted = set(_ESTIMATE_PARAMETERS) - {"loss_fn", "params", "data"}
    for name in kwargs:
        if name not in accepted:
            raise TypeError(f"calibrate got an unexpected keyword argument `{name}` (passed to "
                            f"llc.estimate, which takes: {', '.join(sorted(accepted))})")


def _num_data(data: Any, num_data: Any) -> int:
    """n, for the default nβ: the rows of tuple data, else ``num_data``."""
    if isinstance(data, tuple) and data and len(getattr(data[0], "shape", ())) > 0:
        return int(data[0].shape[0])
    if num_data is None:
        raise ValueError("`num_data` is required when `data` is an iterable of batches (it "
                         "sets the default nβ = n / log n)")
    return positive_int("num_data", num_data)


def _statistics(result: LLCResult) -> dict[str, float]:
    values: dict[str, float] = {}
    getters = {"llc": lambda: result.llc_mean, "llc_mcse": lambda: result.llc_mcse,
               "llc_std": lambda: result.llc_std,
               "mala_acceptance": lambda: result.mala_acceptance,
               "rhat": lambda: result.rhat, "ess_bulk": lambda: result.ess_bulk,
               "ess_tail": lambda: result.ess_tail}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, get in getters.items():
            try:
                values[name] = float(get())
            except Exception:  # noqa: BLE001 - undefined for this result (one chain, ...)
                values[name] = float("nan")
    values["diverged"] = float(np.mean(np.asarray(result.failed_chains, dtype=bool)))
    values["elapsed_seconds"] = float(result.elapsed)
    return values


_PER_POINT = {"sampler_step_size", "nbeta", "localization", "init_loss", "init_grad_norm",
              "complete", "steps_done"}


def _shared(shared: dict[str, Any] | None, attrs: dict[str, Any]) -> dict[str, Any]:
    """The netCDF-storable settings equal in every result so far."""
    plain = {str(k): v for k, v in attrs.items() if k not in _PER_POINT
             and isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    if shared is None:
        return plain
    return {k: v for k, v in shared.items() if k in plain and plain[k] == v}


def _choose(verdict: np.ndarray, nbetas: np.ndarray, gammas: np.ndarray,
            theory_nbeta: float) -> tuple[int, int, int] | None:
    """The recommended grid index: nβ closest to n/log n, then the smallest γ, then the
    largest passing step."""
    reference = (theory_nbeta if math.isfinite(theory_nbeta)
                 else float(np.exp(np.mean(np.log(nbetas)))))
    columns = sorted((abs(math.log(nbetas[j] / reference)), gammas[k], j, k)
                     for j in range(nbetas.size) for k in range(gammas.size))
    for _, _, j, k in columns:
        passing = np.flatnonzero(verdict[:, j, k] == OK)
        if passing.size:
            return int(passing[-1]), j, k
    return None


def _fmt(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "nan"


def _describe(row: Any, low: float, high: float) -> str:
    """Why one grid point failed, in words."""
    verdict = str(row["verdict"].values)
    step = float(row["step_size"])
    if verdict == UNSTABLE:
        return (f"ε = {_fmt(step)}: unstable ({float(row['diverged']):.0%} of the chains "
                "diverged or failed)")
    if verdict == ACCEPTANCE:
        return (f"ε = {_fmt(step)}: MALA acceptance {float(row['mala_acceptance']):.4f} outside "
                f"[{low:g}, {high:g}]")
    if verdict == PLATEAU:
        return (f"ε = {_fmt(step)}: off the plateau (λ̂ = {_fmt(float(row['llc']))} changed by "
                f"{_fmt(float(row['plateau_change']))} from the next smaller step "
                f"{_fmt(float(row['reference_step']))}, tolerance "
                f"{_fmt(float(row['plateau_tolerance']))})")
    if verdict == NO_SMALLER_STEP:
        return (f"ε = {_fmt(step)}: no smaller stable step to check the plateau against")
    return f"ε = {_fmt(step)}: {verdict}"


def _chosen_reason(ds: Any, index: tuple[int, int, int]) -> str:
    i, j, k = index
    low, high = ds.attrs["target_acceptance_low"], ds.attrs["target_acceptance_high"]
    column = ds.isel(nbeta=j, localization=k)
    row = column.isel(step_size=i)
    text = (f"ε = {_fmt(float(row['step_size']))} (nβ = {float(row['nbeta']):.5g}, γ = "
            f"{float(row['localization']):g}) is the largest step with no failed chain, MALA "
            f"acceptance {float(row['mala_acceptance']):.4f} in [{low:g}, {high:g}] and λ̂ = "
            f"{_fmt(float(row['llc']))} ± {_fmt(float(row['llc_mcse']))} within "
            f"{_fmt(float(row['plateau_tolerance']))} of λ̂ at the next smaller step "
            f"{_fmt(float(row['reference_step']))} (change {_fmt(float(row['plateau_change']))})")
    larger = [_describe(column.isel(step_size=index_), low, high)
              for index_ in range(i + 1, column.sizes["step_size"])]
    if larger:
        text += "; larger steps rejected: " + "; ".join(larger)
    return text + "."


def _no_point_reason(ds: Any) -> str:
    low, high = ds.attrs["target_acceptance_low"], ds.attrs["target_acceptance_high"]
    verdicts = np.asarray(ds["verdict"].values).astype(str)
    parts = []
    for j in range(ds.sizes["nbeta"]):
        for k in range(ds.sizes["localization"]):
            column = ds.isel(nbeta=j, localization=k)
            details = "; ".join(_describe(column.isel(step_size=i), low, high)
                                for i in range(column.sizes["step_size"]))
            parts.append(f"nβ = {float(column['nbeta']):.5g}, γ = "
                         f"{float(column['localization']):g}: {details}")
    advice = []
    if (verdicts == UNSTABLE).all() or not np.isin(verdicts, (OK, PLATEAU, NO_SMALLER_STEP)).any():
        advice.append("add smaller step sizes (every step was unstable or below the "
                      "acceptance band)")
    if (verdicts == NO_SMALLER_STEP).any():
        advice.append("add a smaller step size, so that the plateau of λ̂ can be checked "
                      "below the accurate steps")
    if (verdicts == PLATEAU).any():
        advice.append("raise `num_draws` (a smaller MCSE resolves the plateau) or add steps "
                      "between the rejected ones; on a singular model too small a step also "
                      "under-explores (λ̂ low, still rising)")
    return ("no grid point passed the calibration rules (stable, MALA acceptance in the band, "
            "λ̂ on its plateau in the step size): " + " | ".join(parts)
            + (". To do: " + "; ".join(advice) if advice else "") + ".")
