"""``llc.calibrate``: the grid, the Dataset, the documented rules and the recommended step.

The main fixture calibrates the regular ``LinearRegression(4, 3)`` (λ = d/2 = 6) on the NumPy
backend over a grid with steps that are too small, accurate, biased, below the acceptance band
and diverging (fixed seed, about 10 s). The tests re-derive the recommendation from the
Dataset by the rules of docs/calibration.md, independently of llc's implementation. The
re-run at a stronger localization when the chains wander is tested on a stand-in for
``llc.estimate`` whose chains wander below a chosen γ (no sampling, well under a second).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import llc
from llc.calibration import (ACCEPTANCE, NO_SMALLER_STEP, NOT_RUN, OK, PLATEAU, RHAT, SKIPPED,
                           STEP_BIAS, UNSTABLE, CalibrationWarning, _choose, step_verdicts)
from llc.diagnostics import _Run
from llc.problems import LinearRegression

ROOT = Path(__file__).resolve().parents[1]
NUM_DATA = 10_000
STEPS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
PROBLEM = LinearRegression(4, 3)  # λ = 6
# docs/validation.md: the regular model sits about +5 % above d/2 at the validated step
# (minibatch-gradient noise and discretization), ±4 % between seeds and backends.
KNOWN_BIAS, SEED_SPREAD = 0.05, 0.04
VARIABLES = ("llc", "llc_mcse", "llc_std", "mala_acceptance", "step_bias", "diverged", "rhat",
             "ess_bulk", "ess_tail", "distance", "num_params", "findings", "stable", "verdict",
             "plateau_change", "plateau_tolerance", "reference_step", "recommended",
             "elapsed_seconds", "error")
# the health check's thresholds, the defaults of rules 2b and 3
MAX_STEP_BIAS, MAX_RHAT = 0.1, 1.01


@pytest.fixture(scope="module")
def problem_numpy():
    return PROBLEM.in_backend("numpy", NUM_DATA)


# A band a little wider than the default 0.98 admits a biased step (3e-4, MALA acceptance
# about 0.98) that the acceptance cannot reject: the step-bias rule (and the plateau rule)
# must.
TARGET = 0.97


@pytest.fixture(scope="module")
def calibration(problem_numpy):
    loss_fn, params, data = problem_numpy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = llc.calibrate(loss_fn, params, data, step_sizes=STEPS, batch_size=500,
                               seed=0, progress=False, target_acceptance=TARGET)
    result.caught = caught  # the warnings the call emitted
    return result


def expected_recommendation(ds, target=TARGET, z=2.0, relative=0.05):
    """The documented rules, written out again from the Dataset's numbers."""
    line = ds.isel(nbeta=0, localization=0)
    steps = line["step_size"].values
    llc_hat, mcse = line["llc"].values, line["llc_mcse"].values
    acceptance = line["mala_acceptance"].values
    bias, rhat = line["step_bias"].values, line["rhat"].values
    stable = [(line["diverged"].values[i] == 0 and "non-finite" not in
               str(line["findings"].values[i]).split(",")
               and math.isfinite(llc_hat[i]) and math.isfinite(mcse[i]))
              for i in range(steps.size)]
    passing = []
    for i in range(steps.size):
        if not (stable[i] and acceptance[i] >= target):
            continue
        if bias[i] > MAX_STEP_BIAS or rhat[i] > MAX_RHAT:  # NaN compares False: rule skipped
            continue
        smaller = [j for j in range(i) if stable[j]]
        if not smaller:
            continue
        j = smaller[-1]
        allowed = max(z * math.hypot(mcse[i], mcse[j]), relative * abs(llc_hat[j]))
        if abs(llc_hat[i] - llc_hat[j]) <= allowed:
            passing.append(i)
    return (float(steps[max(passing)]) if passing else None), stable


# ---- the Dataset -----------------------------------------------------------------------------
def test_dataset_has_the_documented_dims_and_variables(calibration) -> None:
    ds = calibration.dataset
    assert ds.sizes == {"step_size": len(STEPS), "nbeta": 1, "localization": 1}
    np.testing.assert_array_equal(ds["step_size"].values, STEPS)
    assert ds["nbeta"].values[0] == pytest.approx(llc.default_nbeta(NUM_DATA))
    assert ds["localization"].values[0] == 1.0
    for name in VARIABLES:
        assert name in ds.data_vars, name
        assert ds[name].dims == ("step_size", "nbeta", "localization"), name
    assert set(np.unique(ds["verdict"].values)) <= {OK, UNSTABLE, ACCEPTANCE, STEP_BIAS, RHAT,
                                                     PLATEAU, NO_SMALLER_STEP}
    assert ds.attrs["max_step_bias"] == MAX_STEP_BIAS and ds.attrs["max_rhat"] == MAX_RHAT
    assert ds.attrs["added_localizations"] == ""  # a point passed: no re-run at larger γ
    assert int(ds["recommended"].sum()) == 1
    assert ds.attrs["target_acceptance_low"] == TARGET and ds.attrs["seed"] == 0
    # every point ran with the same seed and its own grid settings
    for i, step in enumerate(STEPS):
        result = calibration.results[i, 0, 0]
        if result is not None:
            assert result.attrs["seed"] == 0
            assert result.attrs["sampler_step_size"] == step
            assert result.attrs["mala_every"] == 5 and result.attrs["baseline"] == "minibatch"
            assert ds["llc"].values[i, 0, 0] == pytest.approx(result.llc_mean)
            assert str(ds["findings"].values[i, 0, 0]) == ",".join(
                f.code for f in result.findings)
            # rule 2b reads the health check's own quantity
            assert ds["step_bias"].values[i, 0, 0] == pytest.approx(_Run(result).step_bias[1])
            assert ds["num_params"].values[i, 0, 0] == 12
    table = calibration.summary()
    assert list(table.index.names) == ["step_size", "nbeta", "localization"]
    assert len(table) == len(STEPS) and "verdict" in table.columns
    assert "recommended step_size=" in repr(calibration)
    assert "recommended:" in str(calibration)


def test_health_warnings_are_collected_not_emitted(calibration) -> None:
    categories = [w.category for w in calibration.caught]
    assert not any(issubclass(c, (llc.LLCHealthWarning, CalibrationWarning)) for c in categories)
    # ... yet the findings are there: the biased large steps exceed d/2
    assert "llc-above-max" in str(calibration.dataset["findings"].sel(step_size=1e-3).item())


# ---- the rules -------------------------------------------------------------------------------
def test_recommended_step_is_the_one_the_rules_pick(calibration) -> None:
    expected, stable = expected_recommendation(calibration.dataset)
    assert expected is not None
    assert calibration.recommended == {"step_size": expected,
                                       "nbeta": pytest.approx(llc.default_nbeta(NUM_DATA)),
                                       "localization": 1.0}
    ds = calibration.dataset.isel(nbeta=0, localization=0)
    # the smallest step has nothing smaller to be checked against (and its short chains have
    # not converged): it is never recommended
    assert ds["verdict"].values[0] in (NO_SMALLER_STEP, RHAT)
    assert "largest step" in calibration.reason
    assert calibration.dataset.sel(**calibration.recommended)["step_bias"].item() <= MAX_STEP_BIAS


def test_step_bias_rejects_a_biased_step_that_acceptance_admits(calibration) -> None:
    """Trigger: a larger step sits in the acceptance band with λ̂ > 1.1 λ; rule 2b rejects it
    (b̂ > 10 % of λ̂, the step-too-large finding) whatever the acceptance. Silent: the
    recommended step passes it and carries no step-too-large finding."""
    ds = calibration.dataset.isel(nbeta=0, localization=0)
    biased = [i for i in range(len(STEPS)) if ds["verdict"].values[i] == STEP_BIAS]
    assert biased, ds["verdict"].values
    for i in biased:
        assert ds["mala_acceptance"].values[i] >= TARGET  # acceptance alone would admit it
        assert ds["step_bias"].values[i] > MAX_STEP_BIAS
        assert ds["llc"].values[i] > 1.1 * PROBLEM.true_lambda
        assert "step-too-large" in str(ds["findings"].values[i])
        assert f"ε = {STEPS[i]:.3g}: estimated step bias" in calibration.reason
    # rule 4 would have rejected it too: λ̂ is off its plateau there
    line = [ds[name].values for name in ("llc", "llc_mcse", "mala_acceptance", "stable")]
    without = step_verdicts(STEPS, *line, target_acceptance=TARGET)[0]
    assert all(without[i] == PLATEAU for i in biased)
    point = ds.sel(step_size=calibration.recommended["step_size"])
    assert point["verdict"].item() == OK and point["step_bias"].item() <= MAX_STEP_BIAS
    assert "step-too-large" not in point["findings"].item()
    assert "estimated step bias b̂ =" in calibration.reason


def test_too_large_steps_are_rejected_for_the_documented_reason(calibration) -> None:
    ds = calibration.dataset.isel(nbeta=0, localization=0)
    diverging = ds.sel(step_size=1e-2)
    assert diverging["verdict"].item() == UNSTABLE
    assert diverging["diverged"].item() == 1.0
    assert "non-finite" in diverging["findings"].item()
    assert calibration.results[STEPS.index(1e-2), 0, 0] is None  # every chain failed
    low_acceptance = ds.sel(step_size=3e-3)
    assert low_acceptance["diverged"].item() == 0.0
    assert low_acceptance["mala_acceptance"].item() < TARGET
    assert low_acceptance["verdict"].item() == ACCEPTANCE
    assert "ε = 0.01: unstable" in calibration.reason
    assert "ε = 0.003: MALA acceptance" in calibration.reason


def test_recommended_llc_is_near_the_true_lambda(calibration) -> None:
    point = calibration.dataset.sel(**calibration.recommended)
    estimate, mcse = point["llc"].item(), point["llc_mcse"].item()
    truth = PROBLEM.true_lambda
    # short chains: 3 MCSE must stay below 15 % of λ for the check to mean something (the
    # biased steps of this grid sit +13 % to +130 % above λ, the plateau +2 % to +5 %)
    assert 3 * mcse < 0.15 * truth, mcse
    assert abs(estimate - (1 + KNOWN_BIAS) * truth) < SEED_SPREAD * truth + 3 * mcse, \
        (estimate, mcse)
    assert calibration.recommended_result.llc_mean == pytest.approx(estimate)


def test_plot_returns_a_figure(calibration) -> None:
    pytest.importorskip("matplotlib")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    figure = calibration.plot(true_lambda=PROBLEM.true_lambda)
    try:
        assert isinstance(figure, Figure)
        top, bottom = figure.axes[:2]
        assert top.get_xscale() == "log"
        labels = [text.get_text() for text in top.get_legend().get_texts()]
        assert "recommended" in labels and any("true λ" in label for label in labels)
        assert any("target band" in t.get_text() for t in bottom.get_legend().get_texts())
    finally:
        plt.close(figure)


def test_no_qualifying_point_warns_and_says_why(problem_numpy) -> None:
    """One accurate step with nothing smaller to check it against, one diverging step; a
    sampler settings object takes each grid step."""
    loss_fn, params, data = problem_numpy
    with pytest.warns(CalibrationWarning, match="no grid point passed"):
        result = llc.calibrate(loss_fn, params, data, step_sizes=[1e-2, 3e-5], batch_size=500,
                               num_draws=200, num_burnin=100, progress=False,
                               sampler=llc.samplers.SGLD(step_size=1.0), max_rhat=math.inf)
    assert result.recommended is None and result.recommended_result is None
    assert result.dataset.sizes["localization"] == 1  # nothing wandered: no re-run
    verdicts = result.dataset["verdict"].values[:, 0, 0].tolist()
    assert verdicts == [NO_SMALLER_STEP, UNSTABLE]
    assert result.results[0, 0, 0].attrs["sampler_step_size"] == 3e-5
    assert "add a smaller step size" in result.reason
    assert "recommended=None" in repr(result)
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    plt.close(result.plot())


def test_interrupt_returns_the_points_done(problem_numpy, monkeypatch) -> None:
    """Ctrl-C during the third grid point: the first two come back, the rest 'not run'."""
    module = sys.modules["llc.calibration"]
    real, calls = module.estimate, []

    def interrupted(*args, **kwargs):
        calls.append(kwargs["step_size"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "estimate", interrupted)
    loss_fn, params, data = problem_numpy
    with pytest.warns(llc.IncompleteRunWarning, match="2 of 4 grid points ran"):
        result = llc.calibrate(loss_fn, params, data, step_sizes=[1e-5, 3e-5, 1e-4, 3e-4],
                               batch_size=500, num_draws=100, num_burnin=50, progress=False)
    assert not result.complete
    verdicts = result.dataset["verdict"].values[:, 0, 0].tolist()
    assert verdicts[2:] == [NOT_RUN, NOT_RUN] and NOT_RUN not in verdicts[:2]
    assert np.isfinite(result.dataset["llc"].values[:2]).all()


def test_step_verdicts_apply_each_rule() -> None:
    steps = [1, 2, 3, 4, 5, 6, 7]
    llc_hat = [5.0, 5.2, 5.3, np.nan, 5.5, 9.0, 9.1]
    mcse = [0.1, 0.1, 0.05, np.nan, 0.05, 0.1, 0.1]
    acceptance = [1.0, 0.99, 0.99, np.nan, 0.985, 0.981, 0.9]
    stable = [True, True, True, False, True, True, True]
    verdict, reference, change, tolerance = step_verdicts(steps, llc_hat, mcse, acceptance,
                                                          stable)
    assert verdict.tolist() == [NO_SMALLER_STEP, OK, OK, UNSTABLE, OK, PLATEAU, ACCEPTANCE]
    assert reference.tolist() == [-1, 0, 1, -1, 2, 4, -1]  # step 5 skips the unstable step 4
    # 5.0 → 5.2: 0.2 < 2·√2·0.1 = 0.283; 5.3 → 5.5: within 5 % of 5.3 (0.265), not 2 MCSE
    assert tolerance[4] == pytest.approx(0.05 * 5.3) and change[4] == pytest.approx(0.2)
    tight = step_verdicts(steps, llc_hat, mcse, acceptance, stable, plateau_relative=0.0)[0]
    assert tight[4] == PLATEAU
    band = step_verdicts(steps, llc_hat, mcse, acceptance, stable,
                         target_acceptance=(0.98, 0.995))[0]
    assert band[0] == ACCEPTANCE  # acceptance 1.0 above the band ...
    assert band[1] == OK  # ... but stable: still the reference of the next step
    not_run = step_verdicts(steps, llc_hat, mcse, acceptance, stable,
                            ran=[True] * 6 + [False])[0]
    assert not_run[-1] == NOT_RUN


def test_choice_across_nbeta_and_localization() -> None:
    """nβ closest to n/log n first, then the smallest γ, then the largest passing step."""
    verdict = np.full((3, 2, 2), ACCEPTANCE, dtype=object)
    verdict[0, 0, 1] = OK            # nβ = 100, γ = 10
    verdict[:2, 1, 1] = OK           # nβ = 1000 (closest to 1086), γ = 10: steps 0 and 1
    verdict[2, 0, 0] = OK            # nβ = 100, γ = 1: largest step, but nβ farther away
    assert _choose(verdict, np.array([100.0, 1000.0]), np.array([1.0, 10.0]), 1086.0) == (1, 1, 1)
    verdict[0, 1, 0] = OK            # now γ = 1 passes at nβ = 1000 too
    assert _choose(verdict, np.array([100.0, 1000.0]), np.array([1.0, 10.0]), 1086.0) == (0, 1, 0)
    assert _choose(np.full((2, 1, 1), PLATEAU), np.array([1.0]), np.array([1.0]), 1.0) is None


def test_step_verdicts_step_bias_and_rhat_rules() -> None:
    """Rule 2b fires on b̂/λ̂ above its threshold whatever the acceptance, after rule 2a;
    rule 3 on R-hat; NaN (another sampler, one chain) skips either rule; math.inf turns it
    off; without the new arguments the verdicts are those of rules 1, 2a and 4."""
    steps = [1, 2, 3, 4, 5]
    llc_hat = [5.0, 5.1, 5.2, 5.3, 5.4]
    mcse = [0.1] * 5
    acceptance = [0.999, 0.995, 0.99, 0.985, 0.95]
    stable = [True] * 5
    bias = [0.01, 0.04, np.nan, 0.3, 0.5]
    rhat = [1.002, 1.003, 1.004, 1.001, 1.001]
    verdict = step_verdicts(steps, llc_hat, mcse, acceptance, stable, step_bias=bias,
                            rhat=rhat)[0].tolist()
    # step 4: in the band (0.985) but b̂ = 30 % of λ̂; step 5: below the band, rule 2a first
    assert verdict == [NO_SMALLER_STEP, OK, OK, STEP_BIAS, ACCEPTANCE]
    assert step_verdicts(steps, llc_hat, mcse, acceptance, stable)[0].tolist() == \
        [NO_SMALLER_STEP, OK, OK, OK, ACCEPTANCE]
    assert step_verdicts(steps, llc_hat, mcse, acceptance, stable, step_bias=bias,
                         max_step_bias=math.inf)[0][3] == OK
    assert step_verdicts(steps, llc_hat, mcse, acceptance, stable, step_bias=bias,
                         max_step_bias=0.35)[0][3] == OK
    wandering = [1.002, 1.05, np.nan, 1.001, 1.001]
    verdict, reference = step_verdicts(steps, llc_hat, mcse, acceptance, stable,
                                       rhat=wandering)[:2]
    assert verdict.tolist() == [NO_SMALLER_STEP, RHAT, OK, OK, ACCEPTANCE]
    assert reference[2] == 1  # a point failing rule 3 is still the next one's reference
    assert step_verdicts(steps, llc_hat, mcse, acceptance, stable, rhat=wandering,
                         max_rhat=math.inf)[0][1] == OK
    with pytest.raises(ValueError, match="`max_step_bias`"):
        step_verdicts(steps, llc_hat, mcse, acceptance, stable, max_step_bias=-0.1)
    with pytest.raises(ValueError, match="`max_rhat`"):
        step_verdicts(steps, llc_hat, mcse, acceptance, stable, max_rhat=0.99)
    with pytest.raises(ValueError, match="`step_bias`"):
        step_verdicts(steps, llc_hat, mcse, acceptance, stable, step_bias=[0.1])


# ---- chains that wander: the localization re-run -----------------------------------------------
LINE = [1e-6, 1e-5, 1e-4, 1e-3]       # 1e-3 diverges at every γ
DIM, BURNIN, DRAWS = 1000, 500, 200


def wandering_estimate(settles_at: float, calls: list):
    """A stand-in for ``llc.estimate``: below γ = ``settles_at`` each chain sits at its own
    level and λ̂ grows with the step (R-hat ≫ 1.01; the chains have spread √(ε·d·t) from
    w*); from there on the chains agree on a flat λ̂ = 5 and fill the localization's ball
    √(d/γ). The step bias b̂ is 1 % of λ̂ and the MALA acceptance 0.999 everywhere; the
    largest step fails every chain."""

    def estimate(loss_fn, params, data, *, step_size, nbeta, localization, num_chains,
                 num_draws, num_burnin, seed, sampler, **kwargs):
        calls.append((step_size, localization))
        if step_size >= 1e-3:
            raise llc.AllChainsFailedError("every chain failed (chain 0: diverged)")
        noise = np.random.default_rng(0).normal(0.0, 0.3, (num_chains, num_draws))
        if localization < settles_at:
            level = 10.0 * (2.0 + math.log10(step_size / 1e-6))
            trace = level * (1.0 + np.linspace(-0.3, 0.3, num_chains))[:, None] + noise
            distance = np.full(trace.shape, math.sqrt(step_size * DIM * (num_burnin + num_draws)))
        else:
            trace = 5.0 + noise
            distance = np.full(trace.shape, math.sqrt(DIM / localization))
        # b̂ = (ε/8) nβ² mean‖∇L_B‖² = 1 % of λ̂
        grad_norm = np.full(trace.shape, math.sqrt(0.08 * trace.mean() / step_size) / nbeta)
        stats = {"distance": distance, "grad_norm": grad_norm,
                 "diverging": np.zeros(trace.shape, dtype=bool),
                 "mala_acceptance": np.full(trace.shape, 0.999)}
        return llc.LLCResult(
            llc_trace=trace, loss_trace=trace / nbeta, init_loss=0.0, nbeta=nbeta,
            sample_stats=stats, warmup_loss=np.zeros((num_chains, 0)),
            failed_chains=np.zeros(num_chains, dtype=bool), chain_errors=[""] * num_chains,
            attrs={"sampler": "sgld", "nbeta": nbeta, "localization": localization,
                   "sampler_step_size": step_size, "num_params": DIM, "num_burnin": num_burnin,
                   "num_draws": num_draws, "thin": 1, "seed": seed}, elapsed=0.0)

    return estimate


def calibrate_wandering(monkeypatch, settles_at: float, **kwargs):
    calls: list = []
    monkeypatch.setattr(sys.modules["llc.calibration"], "estimate",
                        wandering_estimate(settles_at, calls))
    x = np.zeros((100, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = llc.calibrate(lambda params, batch: None, {"w": np.zeros(1)}, (x, x),
                               step_sizes=LINE, num_burnin=BURNIN, num_draws=DRAWS,
                               progress=False, **kwargs)
    messages = [str(w.message) for w in caught if issubclass(w.category, CalibrationWarning)]
    return result, calls, messages


def test_wandering_chains_raise_the_localization_by_measurement(monkeypatch) -> None:
    """The chains wander at γ = 1 and 10 and settle at 100: calibrate re-runs the three
    stable steps at γ = 10, then 100, recommends the largest passing step at γ = 100, and
    says why, by how much, and that λ̂ there is below λ̂ at γ = 1."""
    result, calls, messages = calibrate_wandering(monkeypatch, settles_at=50.0)
    stable_steps = LINE[:3]
    assert calls == ([(s, 1.0) for s in LINE] + [(s, 10.0) for s in stable_steps]
                     + [(s, 100.0) for s in stable_steps])  # the cost: 2 × 3 extra estimates
    ds = result.dataset
    np.testing.assert_array_equal(ds["localization"].values, [1.0, 10.0, 100.0])
    assert ds.attrs["requested_localizations"] == "1"
    assert ds.attrs["added_localizations"] == "10,100"
    for gamma in (1.0, 10.0):
        assert ds["verdict"].sel(localization=gamma).values[:3, 0].tolist() == [RHAT] * 3
    assert ds["verdict"].sel(localization=100.0).values[:, 0].tolist() == \
        [NO_SMALLER_STEP, OK, OK, SKIPPED]
    assert ds["verdict"].sel(localization=1.0).values[3, 0] == UNSTABLE
    # rule 2b was evaluated (b̂ = 1 % of λ̂ by construction) and passed
    np.testing.assert_allclose(ds["step_bias"].sel(localization=100.0).values[:3, 0], 0.01,
                               rtol=1e-6)
    assert result.recommended == {"step_size": 1e-4, "nbeta": pytest.approx(100 / math.log(100)),
                                  "localization": 100.0}
    assert result.complete and result.recommended_result.attrs["localization"] == 100.0
    reason = result.reason
    assert "no point passed at the requested γ = 1" in reason
    assert "raise `localization` from 1 to 100 (×100)" in reason
    assert "√(d/γ) = 31.6" in reason            # the localization's own scale, d = 1000
    assert "3/(εγ) = 30 000 steps" in reason    # its relaxation time at ε = 1e-4, γ = 1
    assert "Caution" in reason and "below λ̂" in reason  # λ̂ = 5 against 40 at γ = 1
    assert messages == [reason]
    assert "(added by calibrate" in result.report()
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    plt.close(result.plot())  # skipped points (NaN) are left out


def test_the_re_run_stops_at_the_first_localization_that_passes(monkeypatch) -> None:
    result, calls, messages = calibrate_wandering(monkeypatch, settles_at=5.0)
    assert {gamma for _, gamma in calls} == {1.0, 10.0}
    assert result.recommended["localization"] == 10.0
    assert "raise `localization` from 1 to 10 (×10)" in result.reason and messages


def test_without_the_re_run_the_reason_derives_the_localization(monkeypatch) -> None:
    """Off (``localization_factors=()``) or with a γ grid given, calibrate runs nothing
    more and recommends γ ≥ 3/(ε·num_burnin) at the largest step that passed rules 1–2:
    3/(1e-4 · 500) = 60."""
    for kwargs in (dict(localization_factors=()), dict(localizations=[1.0])):
        result, calls, messages = calibrate_wandering(monkeypatch, settles_at=50.0, **kwargs)
        assert len(calls) == len(LINE), kwargs
        assert result.recommended is None and result.dataset.sizes["localization"] == 1
        assert "Raise `localization` to about 60" in result.reason, result.reason
        assert "localizations=[60, 600]" in result.reason
        assert "the chains wander" in result.reason and messages == [result.reason]


def test_no_re_run_when_the_chains_do_not_wander(monkeypatch) -> None:
    """Silent: a line that fails for another reason (every step below the acceptance band)
    runs no extra γ and gives no localization advice."""
    calls: list = []
    fake = wandering_estimate(50.0, calls)

    def low_acceptance(*args, **kwargs):
        result = fake(*args, **kwargs)
        result.sample_stats["mala_acceptance"] = np.full(result.llc_trace.shape, 0.9)
        return result

    monkeypatch.setattr(sys.modules["llc.calibration"], "estimate", low_acceptance)
    x = np.zeros((100, 1))
    with pytest.warns(CalibrationWarning, match="no grid point passed"):
        result = llc.calibrate(lambda params, batch: None, {"w": np.zeros(1)}, (x, x),
                               step_sizes=LINE, num_burnin=BURNIN, num_draws=DRAWS,
                               progress=False)
    assert len(calls) == len(LINE) and result.dataset.sizes["localization"] == 1
    assert "localization" not in result.reason.split("To do:")[1]
    assert "add smaller step sizes" in result.reason


def test_bad_localization_factors_name_the_argument(problem_numpy) -> None:
    loss_fn, params, data = problem_numpy
    for factors, error in (([10.0, 0.5], ValueError), ([100.0, 10.0], ValueError),
                           ("10", TypeError)):
        with pytest.raises(error, match="`localization_factors"):
            llc.calibrate(loss_fn, params, data, progress=False, localization_factors=factors)


def test_documented_example_prints_the_documented_table(capsys) -> None:
    """examples/calibrate_dln.py (the DLN of the demo, default grid) prints the table of
    docs/calibration.md and recommends the validated step of that model."""
    spec = importlib.util.spec_from_file_location("calibrate_dln",
                                                  ROOT / "examples" / "calibrate_dln.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calibration = module.main()
    printed = capsys.readouterr().out.splitlines()
    assert calibration.recommended["step_size"] == 2.9e-05, printed
    ds = calibration.dataset
    assert ds["verdict"].sel(step_size=9.2e-05).item() == ACCEPTANCE
    assert ds["verdict"].values[-1, 0, 0] == UNSTABLE
    point = ds.sel(**calibration.recommended)
    assert abs(point["llc"].item() - 7.0) < 0.1 * 7.0 + 3 * point["llc_mcse"].item()
    doc = (ROOT / "docs" / "calibration.md").read_text()
    rows = printed[printed.index(next(r for r in printed if r.strip().startswith("step_size")))
                   + 1:printed.index(next(r for r in printed if r.startswith("recommended:")))]
    assert len(rows) == 7
    for row in rows:
        assert row in doc, f"docs/calibration.md lacks {row!r}: rerun examples/calibrate_dln.py"


# ---- bad input -------------------------------------------------------------------------------
BAD = [
    (dict(step_sizes=[]), ValueError, "`step_sizes` is empty"),
    (dict(step_sizes=[1e-4, -1e-4]), ValueError, r"`step_sizes\[1\]`"),
    (dict(step_sizes=[1e-4, 1e-4]), ValueError, "`step_sizes` has repeated"),
    (dict(step_sizes="1e-4"), TypeError, "`step_sizes`"),
    (dict(nbetas=[0.0]), ValueError, r"`nbetas\[0\]`"),
    (dict(localizations=[-1.0]), ValueError, r"`localizations\[0\]`"),
    (dict(target_acceptance=1.5), ValueError, "`target_acceptance`"),
    (dict(target_acceptance=(0.99, 0.98)), ValueError, "`target_acceptance`"),
    (dict(plateau_z=-1.0), ValueError, "`plateau_z`"),
    (dict(max_step_bias=-0.1), ValueError, "`max_step_bias`"),
    (dict(max_rhat=0.5), ValueError, "`max_rhat`"),
    (dict(num_draws=0), ValueError, "`num_draws`"),
    (dict(step_size=1e-4), TypeError, "pass `step_sizes`"),
    (dict(nbeta=100.0), TypeError, "pass `nbetas`"),
    (dict(stepsize=1e-4), TypeError, "`stepsize`"),
    (dict(mala_every=None), ValueError, "`mala_every`"),
    (dict(checkpoint="run.nc"), ValueError, "`checkpoint`"),
    (dict(sampler=object()), TypeError, "`sampler`"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD, ids=[next(iter(b[0])) + str(i)
                                                          for i, b in enumerate(BAD)])
def test_bad_input_names_the_argument(problem_numpy, kwargs, error, match) -> None:
    loss_fn, params, data = problem_numpy
    with pytest.raises(error, match=match):
        llc.calibrate(loss_fn, params, data, progress=False, **kwargs)


def test_iterable_data_needs_num_data(problem_numpy) -> None:
    loss_fn, params, (x, y) = problem_numpy
    with pytest.raises(ValueError, match="`num_data`"):
        llc.calibrate(loss_fn, params, [(x[:500], y[:500])], progress=False)
