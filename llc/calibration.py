r"""Choosing the step size (and nβ, γ) by measurement: :func:`calibrate`.

``llc.calibrate(loss_fn, params, data)`` runs short chains with :func:`llc.estimate` at every
point of a grid step size × nβ × localization γ, **with the same seed at every point**, and
returns a :class:`CalibrationResult`: an ``xarray.Dataset`` of λ̂, its MCSE, the MALA
acceptance, the estimated step bias, the fraction of diverged chains, R-hat, ESS and the
health findings per grid point, a table, a plot, and a recommended point chosen by documented
rules (:func:`step_verdicts`), applied in this order:

1. **stable**: no chain diverged or failed, no ``non-finite`` finding, λ̂ and its MCSE finite;
2. **accurate step**, two tests:

   a. mean MALA acceptance in the target band (default ≥ 0.98);
   b. the estimated step bias of λ̂ b̂ over the draws, as the ``step-too-large`` health
      check computes it (for SGLD :math:`\hat b = (\epsilon/8)\,n\beta^2\,
      \overline{\|\nabla L_B\|^2}`), at most ``max_step_bias`` of λ̂ (default 0.1, that
      check's threshold);

3. **converged**: R-hat at most ``max_rhat`` (default 1.01, the ``high-rhat`` check's);
4. **on the plateau**: λ̂ differs from λ̂ at the next smaller stable step by at most
   ``plateau_z`` (default 2) combined MCSE, or by at most ``plateau_relative`` (default 5 %)
   of it.

The recommended step is the **largest** step that passes all four (the largest accurate step
mixes fastest). Why so many rules: the MALA acceptance is necessary, not sufficient. It scores
each step against the potential of its own minibatch, so it sees the discretization error but
neither the minibatch-gradient noise nor, on a singular model, the drift of the chains into
stiffer regions; a step that inflates λ̂ several-fold can keep an acceptance inside the band.
The step bias b̂ is the step's own bias of λ̂ on a quadratic posterior (docs/step_size_auto.md)
and a lower bound on a singular one, so it sees a too-large step whatever the acceptance; for
a sampler the health check does not cover it is not defined, and rule 2b is skipped (the
``step_bias`` variable is NaN). R-hat rejects points whose chains have not converged, where
a "plateau" is only two points of a rising curve within wide error bars. The plateau rule
measures what remains: the change of λ̂ with the step.

When no point passes because the chains **wander** (at every step that passes rules 1 and 2,
R-hat is high or λ̂ is still rising with the step) and no γ grid was given, calibrate re-runs
the stable steps at larger γ (``localization_factors``, default ×10 then ×100) and recommends
the smallest γ at which a point passes; see :func:`calibrate`. Measurements: docs/calibration.md.

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

from ._errors import AllChainsFailedError
from ._estimate import default_nbeta, estimate
from ._precision import swamps_acceptance
from ._sweep import sweep
from ._validate import positive_float, positive_int, run_counts, seed_value
from .diagnostics import HealthThresholds, LLCHealthWarning, _Run
from .result import IncompleteRunWarning, LLCResult

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import xarray as xr
    from matplotlib.figure import Figure

__all__ = ["CalibrationResult", "CalibrationWarning", "DEFAULT_LOCALIZATION_FACTORS",
           "DEFAULT_MAX_RHAT", "DEFAULT_MAX_STEP_BIAS", "DEFAULT_STEP_SCALES",
           "DEFAULT_TARGET_ACCEPTANCE", "PLATEAU_RELATIVE", "PLATEAU_Z", "SETTLING_RELAXATIONS",
           "calibrate", "default_step_sizes", "step_verdicts"]

#: Default lower bound of the MALA-acceptance band (rule 2a): the accurate steps on the known-λ
#: problems gave ≥ 0.98; 0.93 overestimated λ of a DLN by 59 % (docs/trust.md).
DEFAULT_TARGET_ACCEPTANCE = 0.98
#: Default largest estimated step bias b̂, as a fraction of λ̂ (rule 2b): the threshold of the
#: ``step-too-large`` health check (``HealthThresholds.max_step_bias``), so that a recommended
#: point never carries that finding.
DEFAULT_MAX_STEP_BIAS = HealthThresholds().max_step_bias
#: Default largest R-hat (rule 3): the threshold of the ``high-rhat`` health check.
DEFAULT_MAX_RHAT = HealthThresholds().max_rhat
#: Default number of combined MCSE a change of λ̂ towards the next smaller step may reach
#: and still count as the plateau (rule 4).
PLATEAU_Z = 2.0
#: Default fraction of λ̂ at the next smaller step that a change may reach and still count as
#: the plateau (rule 4): below the few-percent bias of the validated settings.
PLATEAU_RELATIVE = 0.05
#: Default factors by which calibrate multiplies γ when the chains wander at every accurate
#: step (tried in this order; the first at which a point passes ends the search).
DEFAULT_LOCALIZATION_FACTORS = (10.0, 100.0)
#: Relaxation times the localization needs to hold the chains: along a direction the loss
#: leaves flat, SGLD is an Ornstein-Uhlenbeck walk whose variance reaches 1 − e^{−εγt} of
#: its stationary 1/γ after t steps, 95 % at εγt = 3.
SETTLING_RELAXATIONS = 3.0
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
SKIPPED = "skipped"
UNSTABLE = "unstable"
ACCEPTANCE = "acceptance"
STEP_BIAS = "step-bias"
RHAT = "high-rhat"
PLATEAU = "off-plateau"
NO_SMALLER_STEP = "no-smaller-step"
VERDICTS = (OK, UNSTABLE, ACCEPTANCE, STEP_BIAS, RHAT, PLATEAU, NO_SMALLER_STEP, NOT_RUN,
            SKIPPED)

_DIMS = ("step_size", "nbeta", "localization")
# estimate's arguments that calibrate sets itself (grid) or cannot share between grid points.
_GRID_ARGUMENTS = {"step_size": "step_sizes", "nbeta": "nbetas", "localization": "localizations"}
_REFUSED = ("checkpoint", "resume", "checkpoint_every")
_ESTIMATE_PARAMETERS = tuple(inspect.signature(estimate).parameters)
_NUMBERS = ("llc", "llc_mcse", "llc_std", "mala_acceptance", "step_bias", "diverged", "rhat",
            "ess_bulk", "ess_tail", "distance", "num_params", "elapsed_seconds",
            "loss_rounding")


class CalibrationWarning(UserWarning):
    """No grid point passed the calibration rules at the requested settings: either
    ``result.recommended`` is None, or it holds a localization γ that calibrate added because
    the chains wandered at the requested one (``result.reason`` says which, and why)."""


# ---- the rules -----------------------------------------------------------------------------
def step_verdicts(step_sizes: Any, llc: Any, llc_mcse: Any, mala_acceptance: Any, stable: Any,
                  *, target_acceptance: float | tuple[float, float] = DEFAULT_TARGET_ACCEPTANCE,
                  plateau_z: float = PLATEAU_Z, plateau_relative: float = PLATEAU_RELATIVE,
                  ran: Any = None, step_bias: Any = None,
                  max_step_bias: float = DEFAULT_MAX_STEP_BIAS, rhat: Any = None,
                  max_rhat: float = DEFAULT_MAX_RHAT
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""The calibration rules along one line of step sizes (fixed nβ and γ).

    Each step gets the verdict of the first rule it fails, in this order:

    - ``"not run"``: no estimate at this step (``ran`` is False: an interrupted calibration);
    - ``"unstable"`` (rule 1): ``stable`` is False (a chain diverged or failed, a
      ``non-finite`` finding), or λ̂ or its MCSE is not finite;
    - ``"acceptance"`` (rule 2a): the mean MALA acceptance is NaN or outside the target band
      [low, high];
    - ``"step-bias"`` (rule 2b): the estimated step bias exceeds ``max_step_bias`` of λ̂,
      :math:`\hat b / \hat\lambda >` ``max_step_bias``, with
      b̂ the quantity of the ``step-too-large`` health check over the draws (for SGLD
      :math:`\hat b = (\epsilon/8)\,n\beta^2\,\overline{\|\nabla L_B\|^2}`). Where the
      ratio is NaN (``step_bias`` not given, a sampler that check does not cover, λ̂ ≤ 0)
      the rule is not applied and the
      acceptance band alone judges the step. On a quadratic posterior b̂ is the step's bias
      of λ̂; on a singular model it undercounts, so it sees a too-large step whatever the
      acceptance says;
    - ``"high-rhat"`` (rule 3): R-hat exceeds ``max_rhat``: the chains disagree or still drift, so
      λ̂ is not yet a property of the posterior (not applied where R-hat is NaN, e.g. one
      chain);
    - ``"no-smaller-step"`` (rule 4 cannot be checked): no smaller step of the grid is stable;
    - ``"off-plateau"`` (rule 4): λ̂ differs from λ̂ at the next smaller **stable** step
      :math:`\epsilon_j` by more than the tolerance

      .. math::

          |\hat\lambda_i - \hat\lambda_j| > \max\big(z\,\sqrt{s_i^2 + s_j^2},\;
          r\,|\hat\lambda_j|\big),

      with :math:`s` the MCSEs, :math:`z` = ``plateau_z`` and :math:`r` =
      ``plateau_relative``. The two estimates are treated as independent, which is lenient
      only in the right direction: the same seed at every step correlates their errors
      positively, so their difference is less noisy than :math:`\sqrt{s_i^2 + s_j^2}` says;
    - ``"ok"``: passes every rule. The recommended step of the line is the largest ``"ok"``.

    A step that fails rule 2 or 3 still serves as the next step's plateau reference: rule 4
    compares with the next smaller *stable* step.

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
    step_bias
        The estimated step bias as a fraction of λ̂, b̂ / λ̂, per step; NaN where it is not
        defined. Default: not given, rule 2b is not applied.
    max_step_bias
        The largest b̂ / λ̂ that passes rule 2b (≥ 0; ``math.inf`` turns the rule off).
    rhat
        R-hat per step; NaN where it is not defined. Default: not given, rule 3 is not
        applied.
    max_rhat
        The largest R-hat that passes rule 3 (≥ 1; ``math.inf`` turns the rule off).

    Returns
    -------
    verdict, reference, change, tolerance
        Per step: the verdict (str array); the index of the step λ̂ was compared with (−1
        where none); the change :math:`|\hat\lambda_i - \hat\lambda_j|` and the tolerance
        (NaN where rule 4 was not evaluated).

    Raises
    ------
    ValueError
        Arrays of different lengths or not 1-D, steps not strictly increasing, a malformed
        band or threshold (the message names the argument).
    """
    steps = np.asarray(step_sizes, dtype=float)
    values = np.asarray(llc, dtype=float)
    errors = np.asarray(llc_mcse, dtype=float)
    acceptance = np.asarray(mala_acceptance, dtype=float)
    stable = np.asarray(stable, dtype=bool)
    ran = np.ones(steps.shape, dtype=bool) if ran is None else np.asarray(ran, dtype=bool)
    bias = (np.full(steps.shape, np.nan) if step_bias is None
            else np.asarray(step_bias, dtype=float))
    rhats = np.full(steps.shape, np.nan) if rhat is None else np.asarray(rhat, dtype=float)
    if steps.ndim != 1 or any(a.shape != steps.shape for a in (values, errors, acceptance,
                                                              stable, ran, bias, rhats)):
        raise ValueError("`step_sizes`, `llc`, `llc_mcse`, `mala_acceptance`, `stable`, "
                         "`ran`, `step_bias` and `rhat` must be 1-D of equal length")
    if steps.size > 1 and not np.all(np.diff(steps) > 0):
        raise ValueError("`step_sizes` must be strictly increasing")
    low, high = _band(target_acceptance)
    plateau_z = _non_negative("plateau_z", plateau_z)
    plateau_relative = _non_negative("plateau_relative", plateau_relative)
    max_step_bias = _threshold("max_step_bias", max_step_bias, minimum=0.0)
    max_rhat = _threshold("max_rhat", max_rhat, minimum=1.0)

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
        if np.isfinite(bias[i]) and bias[i] > max_step_bias:
            verdict[i] = STEP_BIAS
            continue
        if np.isfinite(rhats[i]) and rhats[i] > max_rhat:
            verdict[i] = RHAT
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
        of the chain means), ``mala_acceptance`` (mean), ``step_bias`` (b̂ / λ̂ of rule 2b,
        NaN where not defined), ``diverged`` (fraction of failed chains), ``rhat``,
        ``ess_bulk``, ``ess_tail``, ``distance`` (root mean square of ‖w − w*‖ over the last
        half of the draws of the healthy chains), ``num_params`` (d), ``loss_rounding``
        (the MALA log-ratio's rounding noise; above 0.05 rule 2a is skipped), ``findings`` (the
        health-check codes, comma-separated), ``stable`` (rule 1), ``verdict`` (see
        :func:`step_verdicts`; ``"skipped"`` for a point of an added γ that calibrate did not
        run), ``plateau_change`` and ``plateau_tolerance`` (rule 4), ``reference_step`` (the
        step λ̂ was compared with), ``recommended`` (bool), ``elapsed_seconds`` and ``error``
        (the message when every chain failed). Its attributes hold the rules' settings,
        ``requested_localizations`` and ``added_localizations`` (the γ calibrate added
        because the chains wandered, comma-separated; empty if none), the reason and the
        settings shared by every estimate.
    recommended
        ``{"step_size": ..., "nbeta": ..., "localization": ...}``, or ``None`` when no grid
        point passed the rules. Its ``localization`` can be one calibrate added (see
        :func:`calibrate`, ``localization_factors``).
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
        """A readable table per (nβ, γ): step, λ̂ ± MCSE, acceptance, the step bias b̂ / λ̂
        (percent; ``-`` where not defined), diverged, R-hat, verdict, findings; the
        recommended point marked ``*``; then the reason."""
        ds = self.dataset
        lines = [(f"calibration over {ds.sizes['step_size']} step sizes × {ds.sizes['nbeta']} "
                  f"nβ × {ds.sizes['localization']} γ, {self.elapsed:.1f} s; target MALA "
                  f"acceptance [{ds.attrs['target_acceptance_low']:g}, "
                  f"{ds.attrs['target_acceptance_high']:g}], step bias ≤ "
                  f"{100 * ds.attrs['max_step_bias']:g} % of λ̂, R-hat ≤ "
                  f"{ds.attrs['max_rhat']:g}")]
        added = _added_localizations(ds)
        for nbeta in ds["nbeta"].values:
            for gamma in ds["localization"].values:
                column = ds.sel(nbeta=nbeta, localization=gamma)
                note = (" (added by calibrate: the chains wandered at smaller γ)"
                        if float(gamma) in added else "")
                lines.append(f"nβ = {nbeta:.5g}, γ = {gamma:g}{note}:")
                lines.append(f"  {'step_size':>10}  {'λ̂':>9} {'± MCSE':>7}  {'accept':>7}  "
                             f"{'b̂/λ̂':>6}  {'diverged':>8}  {'R-hat':>6}  verdict")
                for index, step in enumerate(column["step_size"].values):
                    row = column.isel(step_size=index)
                    mark = "*" if bool(row["recommended"]) else " "
                    codes = str(row["findings"].values)
                    bias = float(row["step_bias"])
                    bias_text = f"{100 * bias:5.1f}%" if math.isfinite(bias) else "-"
                    lines.append(
                        f"{mark} {step:>10.3g}  {float(row['llc']):>9.4g} "
                        f"{float(row['llc_mcse']):>7.2g}  {float(row['mala_acceptance']):>7.4f}  "
                        f"{bias_text:>6}  {float(row['diverged']):>8.2f}  "
                        f"{float(row['rhat']):>6.3f}  "
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
        cross on the lower edge of both panels, λ̂ far above the points that passed rules 1–2
        as a triangle on the upper edge labelled with its value. Skipped points of an added γ
        are not drawn.

        Parameters
        ----------
        true_lambda
            A known λ to draw as a dashed line (e.g. ``problem.true_lambda``).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from .plots._common import _pyplot

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
        trusted = np.isfinite(llc_all) & np.isin(verdict_all, (OK, RHAT, PLATEAU,
                                                                     NO_SMALLER_STEP))
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
    max_step_bias: float | None = None,
    max_rhat: float | None = None,
    plateau_z: float = PLATEAU_Z,
    plateau_relative: float = PLATEAU_RELATIVE,
    localization_factors: Sequence[float] | None = DEFAULT_LOCALIZATION_FACTORS,
    progress: bool | None = None,
    **estimate_kwargs: Any,
) -> CalibrationResult:
    r"""Run short chains over a grid of step size × nβ × γ and recommend a step size.

    Calls :func:`llc.estimate` once per grid point with the same ``seed`` (so the points
    differ by their settings, not by their random numbers), silences its health warnings
    and keeps their findings, and applies the rules of :func:`step_verdicts` along the step
    sizes of every (nβ, γ):

    1. **stable**: no chain diverged or failed and no ``non-finite`` finding;
    2. **accurate**: (a) mean MALA acceptance in ``target_acceptance`` (default ≥ 0.98; in
       much larger models acceptance falls at the same accuracy, roughly as
       1 − acceptance ∝ √d: lower the bound there and let rules 2b and 4 do the work; not
       applied where the loss's rounding swamps the acceptance, ``loss_rounding`` > 0.05:
       bfloat16 and float16 models, docs/scale.md), and
       (b) the estimated step bias b̂ over the draws (the ``step-too-large`` health check's;
       for SGLD :math:`\hat b = (\epsilon/8)\,n\beta^2\,\overline{\|\nabla L_B\|^2}`)
       at most ``max_step_bias`` of λ̂ (where that check does not cover the sampler, b̂ is
       not defined and rule 2b is skipped);
    3. **converged**: R-hat at most ``max_rhat``;
    4. **on the plateau**: λ̂ changes by at most ``plateau_z`` combined MCSE (or
       ``plateau_relative`` of λ̂) towards the next smaller stable step.

    The recommended step of a (nβ, γ) is its largest step passing all four: the largest
    accurate step mixes fastest. The recommended (nβ, γ) is the one with a passing step
    whose nβ is closest (in ratio) to n / log n, the theory's β* = 1/log n (λ̂ at different
    nβ are different quantities: the rules cannot prefer one), then the smallest γ (a
    strong localization biases λ̂ low at finite n, docs/design.md §3).

    **When the chains wander.** A column (nβ, γ) *wanders* when none of its steps passes and
    every step that passes rules 1–2 fails rule 3 (R-hat high) or rule 4 with λ̂ *above* its
    smaller neighbour (still rising with the step), at least one of them so: the chains are
    still spreading away from w*, nothing holds them within the run, and λ̂ grows with the
    distance they cover. Along a direction the loss leaves flat, only the localization pulls
    them back, at a rate εγ/2 per step: the spread of an SGLD chain there reaches 95 % of its
    stationary :math:`1/\gamma` per coordinate (‖w − w*‖² ≈ d/γ) only after
    :math:`3/(\epsilon\gamma)` steps (:data:`SETTLING_RELAXATIONS`). If no point passes,
    some column wanders, ``localizations`` was not given and ``localization_factors`` is not
    empty, calibrate measures instead of guessing: it re-runs the steps that were stable at
    the requested γ at γ × each factor in turn (default ×10, then ×100), adds those γ to the
    Dataset (points not re-run have verdict ``"skipped"``), and stops at the first γ at which
    a point passes. That point is then ``recommended``, and ``reason`` and a
    :class:`CalibrationWarning` say: raise ``localization`` to that γ, why (R-hat, the
    distance the chains covered against √(d/γ), the relaxation time), and how far λ̂ there
    lies from λ̂ at the requested γ and the same step, since a stronger localization holds
    the chains closer to w* than the loss did and lowers λ̂: estimates are comparable only
    at equal γ. **Cost**: at most ``len(localization_factors)`` × (the stable steps of the
    wandering columns) extra estimates of the same length, fewer when an earlier factor
    passes; ``localization_factors=()`` turns it off. Without the re-run (off, or a γ grid
    given, or no γ passes), ``reason`` recommends the localization that holds the chains
    within the burn-in at the largest step that passes rules 1–2, γ ≥ 3/(ε·``num_burnin``)
    (the draws' steps when there is no burn-in; rounded up to one significant digit, and at
    least 10 × the largest γ tried after a re-run that found nothing), or a burn-in of
    3/(εγ) steps at the present γ.

    If no point passes, a :class:`CalibrationWarning` says why, ``recommended`` is ``None``
    and ``reason`` says what to change.

    Parameters
    ----------
    loss_fn, params, data
        As for :func:`llc.estimate`.
    step_sizes
        The step sizes ε to try (a number or a sequence of numbers > 0). Default: 7 steps
        with ε·nβ from 1e-3 to 1 in half decades (:data:`DEFAULT_STEP_SCALES`), nβ the
        geometric mean of ``nbetas``, rounded to two digits: SGLD's drift step is
        (ε/2)·nβ·∇L_n, so the step's stability and accuracy depend on ε·nβ times the
        loss curvature. For a loss of another curvature scale, pass your own grid.
    nbetas
        The inverse temperatures nβ to try (> 0). Default: n / log n only, the default of
        :func:`llc.estimate` (n the dataset size).
    localizations
        The localization strengths γ to try (≥ 0). Default: 1.0 only, the default of
        :func:`llc.estimate`, with the re-run at larger γ described above when the chains
        wander. A given grid is never extended.
    num_chains
        Chains per grid point (≥ 2 for R-hat; with one chain rule 3 is not applied).
    num_draws, num_burnin
        Draws and burn-in steps per chain at every grid point: short chains (default 1000
        and 500, a quarter of the validated settings of docs/validation.md). Longer chains
        shrink the MCSE and make rule 4 sharper.
    seed
        The seed of every grid point.
    target_acceptance
        The MALA-acceptance band of rule 2a: a lower bound (default 0.98; the upper bound is
        then 1) or a pair ``(low, high)``.
    max_step_bias
        The largest estimated step bias b̂ / λ̂ of rule 2b (≥ 0; ``math.inf`` turns the rule
        off). Default: ``max_step_bias`` of the ``health_thresholds`` passed to ``estimate``
        (0.1 by default), so that a recommended point never carries the ``step-too-large``
        finding.
    max_rhat
        The largest R-hat of rule 3 (≥ 1; ``math.inf`` turns the rule off). Default:
        ``max_rhat`` of the ``health_thresholds`` (1.01 by default), the ``high-rhat`` check's.
    plateau_z
        Combined MCSE that a change of λ̂ towards the next smaller step may reach (default 2).
    plateau_relative
        Fraction of λ̂ at the next smaller step that a change may reach (default 0.05): a
        change within either tolerance counts as the plateau.
    localization_factors
        Factors (> 1, increasing) by which calibrate multiplies γ when the chains wander and
        no ``localizations`` were given (default ``(10, 100)``); ``()`` or ``None`` turns the
        re-run off.
    progress
        One progress bar over the grid points on stderr; default: only when stderr is a
        terminal. The per-estimate bars are off.
    **estimate_kwargs
        Passed to every :func:`llc.estimate` call (``batch_size``, ``sampler``,
        ``chain_method``, ``health_thresholds``, ...). Defaults that differ from
        ``estimate``: ``mala_every=5`` (acceptance measured on 1 draw in 5, so it is
        precise in short chains; it cannot be ``None`` here) and ``baseline="minibatch"``
        (the same expectation with a smaller MCSE, which rule 4 needs). ``step_size``,
        ``nbeta`` and ``localization`` are refused (use the grids), and so are
        ``checkpoint``, ``checkpoint_every`` and ``resume`` (every grid point would write the
        same file). A sampler settings object (e.g. ``llc.samplers.SGLD(step_size=...)``) is
        copied with each grid step (``dataclasses.replace``).

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
        [0, 1], a negative ``max_step_bias``, a ``max_rhat`` below 1, a localization factor
        ≤ 1 or factors not increasing, an argument ``llc.estimate`` does not take. Errors of
        ``estimate`` that do not depend on the grid point (a bad ``loss_fn`` or ``data``)
        propagate from the first call.

    Examples
    --------
    >>> problem = llc.problems.LinearRegression(4, 3)          # λ = 6
    >>> loss_fn, params, data = problem.in_backend("numpy", 10_000)
    >>> calibration = llc.calibrate(loss_fn, params, data, batch_size=500)
    >>> sorted(calibration.recommended)      # the step, nβ and γ to pass to llc.estimate
    ['localization', 'nbeta', 'step_size']
    >>> result = llc.estimate(loss_fn, params, data, batch_size=500, **calibration.recommended)
    >>> figure = calibration.plot(true_lambda=problem.true_lambda)
    """
    started = time.perf_counter()
    num_chains, num_draws, num_burnin = run_counts(loss_fn, num_chains, num_draws, num_burnin)
    seed = seed_value(seed)
    low, high = _band(target_acceptance)
    plateau_z = _non_negative("plateau_z", plateau_z)
    plateau_relative = _non_negative("plateau_relative", plateau_relative)
    _check_estimate_kwargs(estimate_kwargs)
    thresholds = estimate_kwargs.get("health_thresholds")
    if not isinstance(thresholds, HealthThresholds):
        thresholds = HealthThresholds()  # a wrong type is estimate's to refuse
    max_step_bias = _threshold("max_step_bias", thresholds.max_step_bias
                               if max_step_bias is None else max_step_bias, minimum=0.0)
    max_rhat = _threshold("max_rhat", thresholds.max_rhat if max_rhat is None else max_rhat,
                          minimum=1.0)
    factors = _factors(localization_factors)
    estimate_kwargs.setdefault("mala_every", DEFAULT_MALA_EVERY)
    if estimate_kwargs["mala_every"] is None:
        raise ValueError("`mala_every` cannot be None in calibrate: rule 2a needs the MALA "
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

    shared_attrs: dict[str, Any] | None = None

    def run_points(grid: _Measurements, order: list[tuple[int, int, int]], gammas: np.ndarray,
                   bar: Any) -> bool:
        """Estimate the points ``order`` of ``grid`` (γ from ``gammas``); True if interrupted."""
        nonlocal shared_attrs

        def run(point: tuple[int, int, int]) -> LLCResult:
            i, j, k = point
            step, nbeta, gamma = float(step_grid[i]), float(nbeta_grid[j]), float(gammas[k])
            bar.set_postfix_str(f"ε={step:.2g} nβ={nbeta:.4g} γ={gamma:g}")
            point_sampler: Any = (sampler if isinstance(sampler, str)
                                  else dataclasses.replace(sampler, step_size=step))
            return estimate(loss_fn, params, data, sampler=point_sampler, step_size=step,
                            nbeta=nbeta, localization=gamma, num_chains=num_chains,
                            num_draws=num_draws, num_burnin=num_burnin, seed=seed,
                            progress=False, **estimate_kwargs)

        for outcome in sweep(order, run, failures=(AllChainsFailedError,),
                             ignore=(LLCHealthWarning,  # kept as findings
                                     RuntimeWarning)):  # arviz on short traces
            (i, j, k), result = outcome.point, outcome.result
            if outcome.error is not None:
                grid.ran[i, j, k] = True
                grid.numbers["diverged"][i, j, k] = 1.0
                grid.numbers["elapsed_seconds"][i, j, k] = outcome.elapsed
                grid.findings[i, j, k] = "non-finite"
                grid.errors[i, j, k] = str(outcome.error)
                bar.update(1)
                continue
            if result is None:  # interrupted before the estimate returned
                return True
            grid.results[i, j, k] = result
            grid.ran[i, j, k] = result.complete
            for name, value in _statistics(result).items():
                grid.numbers[name][i, j, k] = value
            codes = [finding.code for finding in result.findings]
            grid.findings[i, j, k] = ",".join(codes)
            grid.stable[i, j, k] = (grid.numbers["diverged"][i, j, k] == 0
                                    and "non-finite" not in codes)
            shared_attrs = _shared(shared_attrs, result.attrs)
            bar.update(1)
            bar.set_postfix_str(f"ε={float(step_grid[i]):.2g}: λ̂ "
                                f"{grid.numbers['llc'][i, j, k]:.4g}, acceptance "
                                f"{grid.numbers['mala_acceptance'][i, j, k]:.3f}")
            if outcome.interrupted:  # estimate caught a KeyboardInterrupt and returned
                return True
        return False

    def rules(grid: _Measurements) -> tuple[np.ndarray, ...]:
        return _apply_rules(grid, step_grid, target_acceptance=(low, high), plateau_z=plateau_z,
                            plateau_relative=plateau_relative, max_step_bias=max_step_bias,
                            max_rhat=max_rhat)

    shape = (step_grid.size, nbeta_grid.size, gamma_grid.size)
    grid = _Measurements.empty(shape)
    added: list[float] = []
    # Columns (nβ, γ) outer, steps inner and ascending: the small, stable steps come first.
    order = [(i, j, k) for j in range(shape[1]) for k in range(shape[2]) for i in range(shape[0])]
    with tqdm(total=len(order), disable=not progress, file=sys.stderr, desc="llc calibrate",
              unit="point", dynamic_ncols=True) as bar:
        interrupted = run_points(grid, order, gamma_grid, bar)
        if not grid.ran.any() and interrupted:
            raise KeyboardInterrupt("interrupted before the first grid point finished")
        verdict, reference, change, tolerance = rules(grid)
        wandering = ([j for j in range(shape[1]) if _wanders(verdict[:, j, 0],
                                                             grid.numbers["llc"][:, j, 0],
                                                             reference[:, j, 0], step_grid)]
                     if localizations is None and factors and not interrupted
                     and _choose(verdict, nbeta_grid, gamma_grid, theory_nbeta) is None else [])
        for factor in factors if wandering else ():
            gamma = float(gamma_grid[0]) * factor
            extra = _Measurements.empty((shape[0], shape[1], 1))
            rerun = [(i, j, 0) for j in wandering for i in range(shape[0])
                     if grid.stable[i, j, 0]]
            extra.skipped[...] = True
            for i, j, _ in rerun:
                extra.skipped[i, j, 0] = False
            bar.total += len(rerun)
            bar.refresh()
            interrupted = run_points(extra, rerun, np.array([gamma]), bar)
            grid = grid.concat(extra)
            gamma_grid = np.append(gamma_grid, gamma)
            added.append(gamma)
            verdict, reference, change, tolerance = rules(grid)
            if interrupted or (verdict[:, :, -1] == OK).any():
                break

    recommended_index = _choose(verdict, nbeta_grid, gamma_grid, theory_nbeta)
    recommended_mask = np.zeros(verdict.shape, dtype=bool)
    if recommended_index is not None:
        recommended_mask[recommended_index] = True

    import xarray as xr

    dims = _DIMS
    variables: dict[str, Any] = {name: (dims, values) for name, values in grid.numbers.items()}
    variables.update(
        findings=(dims, grid.findings.astype(str)),
        stable=(dims, grid.stable),
        verdict=(dims, verdict.astype(str)),
        plateau_change=(dims, change),
        plateau_tolerance=(dims, tolerance),
        reference_step=(dims, reference),
        recommended=(dims, recommended_mask),
        error=(dims, grid.errors.astype(str)),
    )
    attrs: dict[str, Any] = {
        "inference_library": "llc",
        "llc_kind": "calibration",
        "target_acceptance_low": low,
        "target_acceptance_high": high,
        "max_step_bias": max_step_bias,
        "max_rhat": max_rhat,
        "plateau_z": plateau_z,
        "plateau_relative": plateau_relative,
        "localization_factors": ",".join(f"{factor:g}" for factor in factors),
        "requested_localizations": ",".join(f"{g:g}" for g in gamma_grid[:len(gamma_grid)
                                                                          - len(added)]),
        "added_localizations": ",".join(f"{g:g}" for g in added),
        "num_data": num_data,
        "theory_nbeta": theory_nbeta,
        "seed": int(seed),
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_burnin": num_burnin,
        "thin": int(estimate_kwargs.get("thin", 1)),
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
        reason = (_raised_reason(dataset, recommended_index) if float(gamma_grid[k]) in added
                  else _chosen_reason(dataset, recommended_index))
    dataset.attrs["reason"] = reason
    calibration = CalibrationResult(dataset=dataset, recommended=recommended, reason=reason,
                                    results=grid.results,
                                    elapsed=time.perf_counter() - started)
    if interrupted:
        warnings.warn(f"calibration interrupted: {int(grid.ran.sum())} of "
                      f"{int((~grid.skipped).sum())} grid points ran; the others have verdict "
                      "'not run' (result.complete is False)", IncompleteRunWarning, stacklevel=2)
    elif recommended is None or recommended["localization"] in added:
        warnings.warn(reason, CalibrationWarning, stacklevel=2)
    return calibration


# ---- helpers -------------------------------------------------------------------------------
@dataclass
class _Measurements:
    """What the estimates gave, per grid point: arrays of shape (step, nβ, γ)."""

    results: np.ndarray
    numbers: dict[str, np.ndarray]
    findings: np.ndarray
    errors: np.ndarray
    ran: np.ndarray
    stable: np.ndarray
    skipped: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> _Measurements:
        return cls(results=np.empty(shape, dtype=object),
                   numbers={name: np.full(shape, np.nan) for name in _NUMBERS},
                   findings=np.full(shape, "", dtype=object),
                   errors=np.full(shape, "", dtype=object),
                   ran=np.zeros(shape, dtype=bool), stable=np.zeros(shape, dtype=bool),
                   skipped=np.zeros(shape, dtype=bool))

    def concat(self, other: _Measurements) -> _Measurements:
        """Both grids side by side along γ (``other``'s columns last)."""
        def join(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.concatenate([a, b], axis=2)

        return _Measurements(
            results=join(self.results, other.results),
            numbers={name: join(self.numbers[name], other.numbers[name])
                     for name in self.numbers},
            findings=join(self.findings, other.findings), errors=join(self.errors, other.errors),
            ran=join(self.ran, other.ran), stable=join(self.stable, other.stable),
            skipped=join(self.skipped, other.skipped))


def _apply_rules(grid: _Measurements, step_grid: np.ndarray, **settings: Any
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`step_verdicts` on every (nβ, γ) column; the reference as a step size."""
    shape = grid.ran.shape
    verdict = np.full(shape, NOT_RUN, dtype=object)
    reference = np.full(shape, np.nan)
    change = np.full(shape, np.nan)
    tolerance = np.full(shape, np.nan)
    for j in range(shape[1]):
        for k in range(shape[2]):
            column = dict(settings)
            if _acceptance_swamped(grid.numbers["loss_rounding"][:, j, k]):
                column["target_acceptance"] = (0.0, 1.0)  # rule 2a would read the rounding
            v, ref, ch, tol = step_verdicts(
                step_grid, grid.numbers["llc"][:, j, k], grid.numbers["llc_mcse"][:, j, k],
                grid.numbers["mala_acceptance"][:, j, k], grid.stable[:, j, k],
                ran=grid.ran[:, j, k], step_bias=grid.numbers["step_bias"][:, j, k],
                rhat=grid.numbers["rhat"][:, j, k], **column)
            verdict[:, j, k] = np.where(grid.skipped[:, j, k], SKIPPED, v)
            reference[:, j, k] = np.where(ref >= 0, step_grid[np.maximum(ref, 0)], np.nan)
            change[:, j, k], tolerance[:, j, k] = ch, tol
    return verdict, reference, change, tolerance


def _acceptance_swamped(rounding: np.ndarray) -> bool:
    """Whether the loss's rounding swamps the MALA acceptance at these grid points
    (:mod:`llc._precision`: a bfloat16 or float16 model)."""
    finite = np.asarray(rounding, dtype=float)
    finite = finite[np.isfinite(finite)]
    return bool(finite.size) and swamps_acceptance(float(finite.max()))


def _wanders(verdicts: np.ndarray, values: np.ndarray, reference: np.ndarray,
             steps: np.ndarray) -> bool:
    """A line of steps where nothing passed because the chains still spread: every step
    that passed rules 1–2 failed rule 3, or rule 4 with λ̂ above its reference step's, or
    has no smaller step; at least one failed rule 3 or 4."""
    verdicts = np.asarray(verdicts).astype(str)
    if (verdicts == OK).any():
        return False
    evidence = False
    for i, verdict in enumerate(verdicts):
        if verdict == RHAT:
            evidence = True
        elif verdict == PLATEAU:
            j = int(np.flatnonzero(steps == reference[i])[0])
            if not values[i] > values[j]:
                return False  # λ̂ falls with the step: not the signature of wandering chains
            evidence = True
    return evidence


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


def _threshold(name: str, value: Any, *, minimum: float) -> float:
    """A rule's threshold: a number ≥ ``minimum``, ``math.inf`` allowed (rule off)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or math.isnan(float(value)) or float(value) < minimum:
        raise ValueError(f"`{name}` must be a number >= {minimum:g} (math.inf turns the rule "
                         f"off); got {value!r}")
    return float(value)


def _factors(values: Any) -> tuple[float, ...]:
    """``localization_factors`` as increasing floats > 1 (empty: the re-run is off)."""
    if values is None:
        return ()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError("`localization_factors` must be a sequence of numbers > 1 (or () to "
                        f"turn the re-run off); got {values!r}")
    factors = []
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(float(value)) or float(value) <= 1:
            raise ValueError(f"`localization_factors[{index}]` must be a finite number > 1; "
                             f"got {value!r}")
        factors.append(float(value))
    if any(b <= a for a, b in zip(factors, factors[1:])):
        raise ValueError(f"`localization_factors` must be strictly increasing; got {factors}")
    return tuple(factors)


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
               "ess_tail": lambda: result.ess_tail,
               "step_bias": lambda: _step_bias_ratio(result),
               "distance": lambda: _distance(result),
               "num_params": lambda: result.attrs["num_params"],
               "loss_rounding": lambda: result.attrs["loss_rounding"]}
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


def _step_bias_ratio(result: LLCResult) -> float:
    """b̂ / λ̂ of the ``step-too-large`` health check, NaN where it is not defined."""
    bias = _Run(result).step_bias
    return float("nan") if bias is None else float(bias[1])


def _distance(result: LLCResult) -> float:
    """Root mean square of ‖w − w*‖ over the last half of the healthy chains' draws."""
    distance = np.asarray(result.sample_stats["distance"], dtype=np.float64)
    distance = distance[np.asarray(result.healthy_chains, dtype=int)]
    distance = distance[:, distance.shape[1] // 2:]
    return float(np.sqrt(np.mean(distance ** 2))) if distance.size else float("nan")


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


def _round_up(value: float) -> float:
    """``value`` rounded up to one significant digit (46 → 50, 0.23 → 0.3)."""
    exponent = math.floor(math.log10(value))
    return float(math.ceil(value / 10.0 ** exponent - 1e-9) * 10.0 ** exponent)


def _added_localizations(ds: Any) -> list[float]:
    text = str(ds.attrs.get("added_localizations", ""))
    return [float(value) for value in text.split(",") if value]


def _describe(row: Any, attrs: dict[str, Any]) -> str:
    """Why one grid point failed, in words."""
    verdict = str(row["verdict"].values)
    step = float(row["step_size"])
    if verdict == UNSTABLE:
        return (f"ε = {_fmt(step)}: unstable ({float(row['diverged']):.0%} of the chains "
                "diverged or failed)")
    if verdict == ACCEPTANCE:
        return (f"ε = {_fmt(step)}: MALA acceptance {float(row['mala_acceptance']):.4f} outside "
                f"[{attrs['target_acceptance_low']:g}, {attrs['target_acceptance_high']:g}]")
    if verdict == STEP_BIAS:
        return (f"ε = {_fmt(step)}: estimated step bias b̂ = "
                f"{100 * float(row['step_bias']):.0f} % of λ̂ = {_fmt(float(row['llc']))} (above "
                f"{100 * attrs['max_step_bias']:g} %; MALA acceptance "
                f"{float(row['mala_acceptance']):.4f} cannot see it)")
    if verdict == RHAT:
        return (f"ε = {_fmt(step)}: R-hat {float(row['rhat']):.3f} above {attrs['max_rhat']:g} "
                f"(λ̂ = {_fmt(float(row['llc']))}; the chains disagree or still drift)")
    if verdict == PLATEAU:
        return (f"ε = {_fmt(step)}: off the plateau (λ̂ = {_fmt(float(row['llc']))} changed by "
                f"{_fmt(float(row['plateau_change']))} from the next smaller step "
                f"{_fmt(float(row['reference_step']))}, tolerance "
                f"{_fmt(float(row['plateau_tolerance']))})")
    if verdict == NO_SMALLER_STEP:
        return (f"ε = {_fmt(step)}: no smaller stable step to check the plateau against")
    if verdict == SKIPPED:
        return f"ε = {_fmt(step)}: skipped (not stable at the requested γ)"
    return f"ε = {_fmt(step)}: {verdict}"


def _chosen_reason(ds: Any, index: tuple[int, int, int]) -> str:
    i, j, k = index
    attrs = ds.attrs
    low, high = attrs["target_acceptance_low"], attrs["target_acceptance_high"]
    column = ds.isel(nbeta=j, localization=k)
    row = column.isel(step_size=i)
    bias, rhat = float(row["step_bias"]), float(row["rhat"])
    bias_text = (f"estimated step bias b̂ = {100 * bias:.1f} % of λ̂ (at most "
                 f"{100 * attrs['max_step_bias']:g} %)" if math.isfinite(bias) else
                 "no step-bias test (b̂ is not defined for this sampler)")
    rhat_text = (f"R-hat {rhat:.3f} (at most {attrs['max_rhat']:g})" if math.isfinite(rhat)
                 else "no R-hat test (one chain)")
    text = (f"ε = {_fmt(float(row['step_size']))} (nβ = {float(row['nbeta']):.5g}, γ = "
            f"{float(row['localization']):g}) is the largest step with no failed chain, MALA "
            f"acceptance {float(row['mala_acceptance']):.4f} in [{low:g}, {high:g}], "
            f"{bias_text}, {rhat_text} and λ̂ = "
            f"{_fmt(float(row['llc']))} ± {_fmt(float(row['llc_mcse']))} within "
            f"{_fmt(float(row['plateau_tolerance']))} of λ̂ at the next smaller step "
            f"{_fmt(float(row['reference_step']))} (change {_fmt(float(row['plateau_change']))})")
    larger = [_describe(column.isel(step_size=index_), attrs)
              for index_ in range(i + 1, column.sizes["step_size"])]
    if larger:
        text += "; larger steps rejected: " + "; ".join(larger)
    return text + "."


def _wandering_line(column: Any) -> bool:
    steps = np.asarray(column["step_size"].values, dtype=float)
    return _wanders(np.asarray(column["verdict"].values).astype(str),
                    np.asarray(column["llc"].values, dtype=float),
                    np.asarray(column["reference_step"].values, dtype=float), steps)


def _settling(column: Any, attrs: dict[str, Any]) -> dict[str, Any]:
    """The numbers that say how far the chains of a wandering line got and how long the
    localization needs to hold them, at its largest step that passed rules 1–2."""
    verdicts = np.asarray(column["verdict"].values).astype(str)
    candidates = np.flatnonzero(np.isin(verdicts, (RHAT, PLATEAU, NO_SMALLER_STEP)))
    row = column.isel(step_size=int(candidates[-1]))
    step, gamma = float(row["step_size"]), float(row["localization"])
    burnin = int(attrs["num_burnin"])
    draw_steps = int(attrs["num_draws"]) * int(attrs.get("thin", 1))
    settle_steps = burnin if burnin > 0 else draw_steps
    dim = float(row["num_params"])
    return {
        "step": step, "gamma": gamma, "distance": float(row["distance"]), "dim": dim,
        "scale": math.sqrt(dim / gamma) if gamma > 0 else math.inf,
        "relaxation": SETTLING_RELAXATIONS / (step * gamma) if gamma > 0 else math.inf,
        "chain_steps": burnin + draw_steps, "settle_steps": settle_steps,
        "settling_gamma": _round_up(SETTLING_RELAXATIONS / (step * settle_steps)),
        "failures": "; ".join(_wander_item(column.isel(step_size=int(i)))
                              for i in candidates if verdicts[i] != NO_SMALLER_STEP),
    }


def _wander_item(row: Any) -> str:
    """One step of a wandering line, briefly: R-hat or the rise of λ̂."""
    text = f"ε = {_fmt(float(row['step_size']))}: "
    if str(row["verdict"].values) == RHAT:
        return text + f"R-hat {float(row['rhat']):.3f}, λ̂ = {_fmt(float(row['llc']))}"
    return (text + f"λ̂ = {_fmt(float(row['llc']))}, up by {_fmt(float(row['plateau_change']))} "
            f"from ε = {_fmt(float(row['reference_step']))}")


def _count(value: float) -> str:
    """A number of steps, two significant digits, digits grouped: 330 000."""
    if not math.isfinite(value):
        return "∞"
    digits = max(0, math.floor(math.log10(max(value, 1.0))) - 1)
    return f"{round(value, -digits):,.0f}".replace(",", " ")


def _wander_text(column: Any, attrs: dict[str, Any]) -> str:
    """Why the chains of a wandering line wander, in words with the numbers."""
    s = _settling(column, attrs)
    relaxation = (f"about 3/(εγ) = {_count(s['relaxation'])} steps"
                  if math.isfinite(s["relaxation"]) else "never (γ = 0)")
    return (f"at γ = {s['gamma']:g} (nβ = {float(column['nbeta']):.5g}) the chains wander: every "
            f"step that passes rules 1–2 has R-hat above {attrs['max_rhat']:g} or λ̂ still "
            f"rising with the step ({s['failures']}). At ε = {_fmt(s['step'])}, the largest of "
            f"them, the chains reached ‖w − w*‖ ≈ {_fmt(s['distance'])} (RMS over the last half "
            f"of the draws), short of the localization's own scale √(d/γ) = {_fmt(s['scale'])} "
            f"(d = {s['dim']:.0f}): along the directions the loss leaves flat only γ pulls them "
            f"back, at εγ/2 per step, which holds them after {relaxation}, against the "
            f"{s['chain_steps']} steps of each chain here")


def _raised_reason(ds: Any, index: tuple[int, int, int]) -> str:
    """The recommended point lies at a γ calibrate added because the chains wandered."""
    i, j, k = index
    attrs = ds.attrs
    added = _added_localizations(ds)
    base = ds.isel(nbeta=j, localization=0)  # calibrate adds γ only to a single requested γ
    gamma0, gamma = float(base["localization"]), float(ds["localization"].values[k])
    tried = ", ".join(f"{g:g}" for g in added)
    text = (f"no point passed at the requested γ = {gamma0:g}: {_wander_text(base, attrs)}. "
            f"calibrate re-ran the steps that were stable there at γ = {tried}, and γ = "
            f"{gamma:g} is the smallest at which a point passes: raise `localization` from "
            f"{gamma0:g} to {gamma:g} (×{gamma / gamma0:g}). "
            + _chosen_reason(ds, index))
    here, there = ds.isel(step_size=i, nbeta=j, localization=k), base.isel(step_size=i)
    value, reference = float(here["llc"]), float(there["llc"])
    if math.isfinite(reference) and reference != 0:
        tolerance = max(attrs["plateau_z"] * math.hypot(float(here["llc_mcse"]),
                                                        float(there["llc_mcse"])),
                        attrs["plateau_relative"] * abs(reference))
        settle = float(SETTLING_RELAXATIONS / (float(here["step_size"]) * gamma0)
                       if gamma0 > 0 else math.inf)
        if reference - value > tolerance:
            text += (f" Caution: at this step λ̂ = {_fmt(value)} at γ = {gamma:g} is "
                     f"{100 * (1 - value / reference):.0f} % below λ̂ = {_fmt(reference)} at "
                     f"γ = {gamma0:g}, where λ̂ was still rising as the chains spread: the "
                     "stronger localization holds the chains closer to w* than the loss did and "
                     f"lowers λ̂, so λ̂ at γ = {gamma:g} is a localized value: compare estimates "
                     f"only at equal γ, and to measure λ̂ at γ = {gamma0:g} instead give the "
                     f"chains a burn-in of up to 3/(εγ) = {_count(settle)} steps (fewer if the "
                     "loss holds them first).")
        else:
            text += (f" At this step λ̂ = {_fmt(value)} at γ = {gamma:g} and "
                     f"{_fmt(reference)} at γ = {gamma0:g} agree within {_fmt(tolerance)}: the "
                     "stronger localization settled the chains without moving λ̂.")
    return text


def _localization_advice(ds: Any) -> str | None:
    """What to change when the chains wander at a requested γ; None where they do not."""
    attrs = ds.attrs
    added = _added_localizations(ds)
    requested = ds.sizes["localization"] - len(added)
    for j in range(ds.sizes["nbeta"]):
        wandering = [k for k in range(requested)
                     if _wandering_line(ds.isel(nbeta=j, localization=k))]
        if not wandering:
            continue
        column = ds.isel(nbeta=j, localization=wandering[-1])
        first = _settling(column, attrs)
        text = _wander_text(column, attrs)
        keep = (f"; to keep γ = {first['gamma']:g} instead, give the chains a burn-in of up to "
                f"3/(εγ) = {_count(first['relaxation'])} steps (fewer if the loss holds them "
                "first)")
        s = first
        if added:
            last = ds.isel(nbeta=j, localization=ds.sizes["localization"] - 1)
            text += (f". calibrate re-ran the stable steps at γ = "
                     f"{', '.join(f'{g:g}' for g in added)} and no point passed there either")
            if not _wandering_line(last):
                return text + " (see the verdicts there)" + keep
            s = _settling(last, attrs)
            verdicts = np.asarray(last["verdict"].values).astype(str)
            converged = np.flatnonzero(np.isin(verdicts, (PLATEAU, NO_SMALLER_STEP)))
            text += f"; at γ = {s['gamma']:g} the chains still wander"
            if converged.size:
                step = float(last["step_size"].values[converged[-1]])
                text += (f", though R-hat is within bounds at ε = {_fmt(step)}: there a finer "
                         "step grid around it or longer chains (`num_draws`) may resolve the "
                         "plateau before a stronger γ is needed")
        if s["relaxation"] <= s["settle_steps"]:
            return (text + f". At γ = {s['gamma']:g} the localization alone holds the chains "
                    f"within 3/(εγ) = {_count(s['relaxation'])} steps, inside the burn-in, so "
                    "they disagree for another reason (several modes, a slow direction the loss "
                    "holds): raise `num_burnin` and `num_draws`" + keep)
        target = (max(s["settling_gamma"], 10.0 * s["gamma"]) if added
                  else s["settling_gamma"])
        return (text + f". Raise `localization` to about {target:g} (measure it with "
                f"localizations=[{target:g}, {10 * target:g}]): γ ≥ 3/(ε·{s['settle_steps']}) = "
                f"{_fmt(SETTLING_RELAXATIONS / (s['step'] * s['settle_steps']))} holds the "
                f"chains within the burn-in at ε = {_fmt(s['step'])}. A stronger localization "
                "lowers λ̂ (compare estimates only at equal γ)" + keep)
    return None


def _no_point_reason(ds: Any) -> str:
    attrs = ds.attrs
    verdicts = np.asarray(ds["verdict"].values).astype(str)
    parts = []
    for j in range(ds.sizes["nbeta"]):
        for k in range(ds.sizes["localization"]):
            column = ds.isel(nbeta=j, localization=k)
            details = "; ".join(_describe(column.isel(step_size=i), attrs)
                                for i in range(column.sizes["step_size"]))
            parts.append(f"nβ = {float(column['nbeta']):.5g}, γ = "
                         f"{float(column['localization']):g}: {details}")
    advice = []
    localization = _localization_advice(ds)
    if localization is not None:
        advice.append(localization)
    if (verdicts == UNSTABLE).all() or not np.isin(
            verdicts, (OK, RHAT, PLATEAU, NO_SMALLER_STEP)).any():
        advice.append("add smaller step sizes (every step was unstable, below the acceptance "
                      "band or too biased)")
    if (verdicts == NO_SMALLER_STEP).any():
        advice.append("add a smaller step size, so that the plateau of λ̂ can be checked "
                      "below the accurate steps")
    if (verdicts == PLATEAU).any() and localization is None:
        advice.append("raise `num_draws` (a smaller MCSE resolves the plateau) or add steps "
                      "between the rejected ones; on a singular model too small a step also "
                      "under-explores (λ̂ low, still rising)")
    return ("no grid point passed the calibration rules (stable, MALA acceptance in the band, "
            "step bias within bounds, R-hat within bounds, λ̂ on its plateau in the step size): "
            + " | ".join(parts) + (". To do: " + "; ".join(advice) if advice else "") + ".")
