"""Health checks (``llc.diagnostics``): each check fires on a bad run and is silent on a good one.

Bad runs are real ``llc.estimate`` runs on small known-λ problems (NumPy backend, fixed seeds)
wherever a setting produces the condition cheaply; high R-hat, a single escaped chain and a
few edge cases use ``LLCResult`` objects built from synthetic traces.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

import llc
from _models import FailingChains
from llc.diagnostics import (
    CHECKS,
    Finding,
    HealthThresholds,
    LLCHealthWarning,
    check_health,
    warn_findings,
)
from llc.problems import LinearRegression

SMALL = LinearRegression(3, 2)  # d = 6, λ = d/2 = 3
BIG = LinearRegression(8, 5)  # d = 40, λ = 20
BASE: dict[str, Any] = {"batch_size": 200, "step_size": 3e-4, "num_chains": 4,
                        "num_draws": 1000, "num_burnin": 300, "baseline": "minibatch",
                        "seed": 0, "progress": False}


def run(problem: Any = SMALL, n: int = 2000, shift: float = 0.0, loss_fn: Any = None,
        **settings: Any) -> llc.LLCResult:
    """``llc.estimate`` on ``problem`` with n samples, w* moved by ``shift`` per coordinate."""
    data, params = problem.setup(n, seed=0)
    params = {key: value + shift for key, value in params.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.ChainFailureWarning)
        return llc.estimate(loss_fn or problem.loss_and_grad, params, data,
                            **{**BASE, **settings})


def codes(findings: list[Finding]) -> list[str]:
    return [finding.code for finding in findings]


def only(findings: list[Finding], code: str) -> Finding:
    (finding,) = [f for f in findings if f.code == code]
    return finding


# ---- shared runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthy() -> llc.LLCResult:
    """A well-behaved run: a good step, enough burn-in and draws, w* an exact minimum.

    γ = 100 keeps λ̂ (≈ 2.3) clearly below d/2 = 3, so the step-size bias that the regular
    model shows at finite step (up to +10 %) cannot come near the ``llc-above-max`` bound, and
    it speeds mixing (R-hat ≈ 1.000–1.005 over seeds 0–5).
    """
    return run(localization=100.0, num_draws=1500)


@pytest.fixture(scope="module")
def big_step() -> llc.LLCResult:
    """ε = 1e-2 (30× a good step): λ̂ ≈ 17 ≫ d/2 = 3, MALA acceptance ≈ 0.82."""
    return run(step_size=1e-2)


@pytest.fixture(scope="module")
def tiny_step() -> llc.LLCResult:
    """ε = 1e-6 on d = 40: acceptance ≈ 1, the chains still diffuse freely after 1300 steps.

    (d = 40 rather than 6: ‖w − w*‖² then pools 40 coordinates per chain, and the diffusion
    ratio stays within 0.69–1.04 over seeds 0–8, far from the 0.5 bound.)
    """
    return run(BIG, step_size=1e-6)


@pytest.fixture(scope="module")
def far_from_minimum() -> llc.LLCResult:
    """w* moved 0.1 per coordinate off the least-squares solution: the chains slide downhill."""
    return run(shift=0.1)


# ---- the healthy run ---------------------------------------------------------------------------


def test_healthy_run_has_no_findings(healthy: llc.LLCResult) -> None:
    assert check_health(healthy) == []


@pytest.mark.parametrize("code", [code for code, _ in CHECKS])
def test_each_check_is_silent_on_the_healthy_run(healthy: llc.LLCResult, code: str) -> None:
    from llc.diagnostics import _Run

    check = dict(CHECKS)[code]
    assert check(_Run(healthy), HealthThresholds()) is None


def test_every_check_has_a_stable_kebab_case_code() -> None:
    names = [code for code, _ in CHECKS]
    assert len(set(names)) == len(names) == 14
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", code) for code in names)


# ---- 1. negative-llc ---------------------------------------------------------------------------


def test_negative_llc_fires_when_the_chains_slide_below_w_star(far_from_minimum) -> None:
    finding = only(check_health(far_from_minimum), "negative-llc")
    assert far_from_minimum.llc_mean < -1
    assert finding.chains == (0, 1, 2, 3)
    assert "below 0" in finding.message and "localization" in finding.suggestion
    assert "step_size` from 0.0003 to ~0.0001" in finding.suggestion


def test_negative_llc_names_a_single_escaped_chain() -> None:
    trace = _ar1(4, 1000, mean=5.0)
    trace[2] -= 8.0  # chain 2 found lower loss: its mean is about −3, the pooled mean still > 0
    finding = only(check_health(_synthetic(trace)), "negative-llc")
    assert finding.chains == (2,)
    assert "chain 2 has a significantly negative mean" in finding.message


# ---- 2. llc-above-max --------------------------------------------------------------------------


def test_llc_above_max_fires_for_a_too_large_step(big_step: llc.LLCResult) -> None:
    finding = only(check_health(big_step), "llc-above-max")
    assert big_step.llc_mean > 10
    assert "d/2 = 3" in finding.message and "d = 6 parameters" in finding.message
    assert "lower `step_size` from 0.01 to ~0.001" in finding.suggestion


def test_llc_above_max_tolerates_a_small_overshoot_and_mentions_a_low_nbeta() -> None:
    within = _synthetic(_ar1(4, 1000, mean=20.6))  # d/2 = 20: +3 %, inside the 5 % margin
    assert "llc-above-max" not in codes(check_health(within))
    beyond = _synthetic(_ar1(4, 1000, mean=30.0), num_data=10_000)  # nβ = 100 ≪ n / log n
    finding = only(check_health(beyond), "llc-above-max")
    assert "`nbeta` = 100 is far below n/log n" in finding.suggestion


# ---- 3. non-finite -----------------------------------------------------------------------------


def test_non_finite_names_the_diverged_and_raising_chains() -> None:
    _, params = SMALL.setup(2000, seed=0)
    flaky = FailingChains(SMALL.loss_and_grad, 4, {1: (56, "nan"), 2: (4, "raise")},
                          initial_calls=12)  # the probe twice, L_n(w*) in 10 batches of 200
    result = run(loss_fn=flaky, num_chains=4, num_draws=100, num_burnin=50, mala_every=None,
                 baseline="full")
    assert list(result.failed_chains) == [False, True, True, False]
    finding = only(check_health(result), "non-finite")
    assert finding.chains == (1, 2)
    assert "2 of 4 chains failed" in finding.message
    assert "chain 1 diverged at step 56" in finding.message
    assert "chain 2 raised ValueError: boom" in finding.message
    assert "lower `step_size` from 0.0003 to ~3e-05" in finding.suggestion
    assert "fix `loss_fn`" in finding.suggestion


# ---- 4. high-rhat ------------------------------------------------------------------------------


def test_high_rhat_fires_when_chains_disagree() -> None:
    trace = _ar1(4, 1000, mean=5.0)
    trace[3] += 1.0  # one chain sits elsewhere
    finding = only(check_health(_synthetic(trace)), "high-rhat")
    assert re.match(r"R-hat = 1\.\d{3} > 1\.01 over 4 healthy chains", finding.message)
    assert "`num_draws` from 1000 to ~2000" in finding.suggestion


def test_high_rhat_needs_two_healthy_chains() -> None:
    trace = _ar1(4, 1000, mean=5.0)
    trace[3] += 1.0
    failed = np.array([True, True, True, False])
    trace[:3] = np.nan
    result = _synthetic(trace, failed=failed, errors=["diverged at step 3: x"] * 3 + [""])
    assert "high-rhat" not in codes(check_health(result))


# ---- 5. low-ess --------------------------------------------------------------------------------


def test_low_ess_fires_for_a_few_draws() -> None:
    result = run(num_draws=40)
    finding = only(check_health(result), "low-ess")
    assert "below 100 per chain (400)" in finding.message
    match = re.search(r"`num_draws` from 40 to ~(\d+)", finding.suggestion)
    assert match, finding.suggestion
    target = int(match.group(1))
    assert target >= 40 * 400 / min(result.ess_bulk, result.ess_tail)


def test_thresholds_are_overridable(healthy: llc.LLCResult) -> None:
    findings = check_health(healthy, HealthThresholds(min_ess_per_chain=1e6, max_rhat=1.0))
    assert {"low-ess", "high-rhat"} <= set(codes(findings))
    with pytest.raises(ValueError, match="`max_rhat`"):
        HealthThresholds(max_rhat=float("nan"))
    with pytest.raises(ValueError, match="`min_mala_acceptance`"):
        HealthThresholds(min_mala_acceptance=1.5)
    with pytest.raises(TypeError, match="HealthThresholds"):
        check_health(healthy, {"max_rhat": 1.1})  # type: ignore[arg-type]


# ---- 6. drift-after-burnin ---------------------------------------------------------------------


def test_drift_fires_without_burn_in_on_a_slowly_relaxing_chain() -> None:
    # d = 40 (λ = 20), no burn-in, ε = 3e-5: the llc climbs from 0 over the first few hundred
    # draws (fires for seeds 0-8; on d = 6 the same start is too noisy to detect reliably)
    result = run(BIG, step_size=3e-5, num_burnin=0)
    finding = only(check_health(result), "drift-after-burnin")
    assert "first 10 %" in finding.message and "Geweke" in finding.message
    assert "`num_burnin` from 0 to at least ~500" in finding.suggestion


def test_drift_is_silent_on_stationary_traces_and_fires_on_a_transient() -> None:
    for seed in range(5):
        trace = _ar1(4, 1000, mean=5.0, phi=0.9, seed=seed)
        assert "drift-after-burnin" not in codes(check_health(_synthetic(trace)))
        relaxing = trace - 3.0 * np.exp(-np.arange(1000) / 100.0)  # unfinished burn-in
        assert "drift-after-burnin" in codes(check_health(_synthetic(relaxing)))


# ---- 7. low-mala-acceptance --------------------------------------------------------------------


def test_low_acceptance_fires_for_a_too_large_step(big_step: llc.LLCResult) -> None:
    finding = only(check_health(big_step), "low-mala-acceptance")
    assert big_step.mala_acceptance < 0.9
    assert finding.chains  # per chain, too
    match = re.search(r"from 0.01 to ~([0-9.e-]+) ", finding.suggestion)
    assert match, finding.suggestion
    suggested = float(match.group(1))
    assert 1e-3 < suggested < 5e-3


def test_low_acceptance_names_a_single_bad_chain() -> None:
    trace = _ar1(4, 1000, mean=5.0)
    acceptance = np.full(trace.shape, np.nan)
    acceptance[:, ::20] = 0.97
    acceptance[1, ::20] = 0.6
    finding = only(check_health(_synthetic(trace, acceptance=acceptance)), "low-mala-acceptance")
    assert finding.chains == (1,)
    assert "chain 1 below 0.9: 0.600" in finding.message


def test_acceptance_checks_are_skipped_without_mala_diagnostics() -> None:
    result = run(step_size=1e-2, mala_every=None)
    found = codes(check_health(result))
    assert "mala_acceptance" not in result.sample_stats
    assert "low-mala-acceptance" not in found and "step-too-small" not in found
    assert "llc-above-max" in found


# ---- 8. step-too-small -------------------------------------------------------------------------


def test_step_too_small_fires_for_a_tiny_step(tiny_step: llc.LLCResult) -> None:
    finding = only(check_health(tiny_step), "step-too-small")
    assert tiny_step.mala_acceptance > 0.9999
    assert "free random walk" in finding.message
    assert "raise `step_size` from 1e-06 to ~1e-05" in finding.suggestion


def test_step_too_small_also_fires_on_slow_mixing_alone() -> None:
    trace = _ar1(4, 1000, mean=5.0, phi=0.995)  # bulk ESS ≈ 10 per chain
    acceptance = np.full(trace.shape, np.nan)
    acceptance[:, ::20] = 0.9997
    finding = only(check_health(_synthetic(trace, acceptance=acceptance)), "step-too-small")
    assert "bulk ESS is" in finding.message


def test_step_too_small_is_silent_where_the_bias_budget_is_used() -> None:
    """With the step's estimated bias already near what ``step_size="auto"`` allows, a high
    acceptance does not mean the step may grow: b̂ = (ε/8)·nβ²·mean ‖∇L_B‖² = (1e-4/8)·100²·1
    = 0.125, 2.5 % of λ̂ ≈ 5, so step-too-small is silent and low-ess suggests more draws
    only; at ε = 1e-5 (b̂ 0.25 % of λ̂) the same chains are flagged and offered a larger step."""
    trace = _ar1(4, 1000, mean=5.0, phi=0.995)
    acceptance = np.full(trace.shape, np.nan)
    acceptance[:, ::20] = 0.9997
    at_budget = check_health(_synthetic(trace, acceptance=acceptance, sampler="sgld",
                                        nbeta=100.0))
    assert "step-too-small" not in codes(at_budget)
    assert "raise `step_size`" not in only(at_budget, "low-ess").suggestion
    room = check_health(_synthetic(trace, acceptance=acceptance, sampler="sgld", nbeta=100.0,
                                   sampler_step_size=1e-5))
    assert "step-too-small" in codes(room)
    assert "raise `step_size`" in only(room, "low-ess").suggestion


# ---- 9. not-critical-point ---------------------------------------------------------------------


def test_not_critical_point_fires_off_the_minimum() -> None:
    result = run(shift=0.05)  # λ̂ ≈ 1.2 > 0: only the gradient gives it away
    found = check_health(result)
    finding = only(found, "not-critical-point")
    assert "negative-llc" not in codes(found)
    assert result.attrs["init_grad_norm"] > 0.1
    assert "not a critical point" in finding.message
    assert "closer to convergence" in finding.suggestion


def test_not_critical_point_fires_with_negative_llc(far_from_minimum) -> None:
    assert {"not-critical-point", "negative-llc"} <= set(codes(check_health(far_from_minimum)))


# ---- warnings, edge cases, imports -------------------------------------------------------------


def test_warn_findings_emits_one_warning_per_finding(big_step: llc.LLCResult) -> None:
    findings = check_health(big_step)
    assert len(findings) >= 2
    with pytest.warns(LLCHealthWarning) as record:
        warn_findings(findings)
    assert len(record) == len(findings)
    for warning, finding in zip(record, findings):
        text = str(warning.message)
        assert text == f"[{finding.code}] {finding.message} Suggestion: {finding.suggestion}"
        assert warning.filename == __file__  # stacklevel=2 points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_findings([])


def test_findings_are_frozen_and_suggest_something(big_step, tiny_step, far_from_minimum) -> None:
    for result in (big_step, tiny_step, far_from_minimum):
        for finding in check_health(result):
            assert finding.message.endswith(".") and finding.suggestion.endswith(".")
            assert isinstance(finding.chains, tuple)
            with pytest.raises(AttributeError):
                finding.code = "x"  # type: ignore[misc]


def test_a_bare_result_does_not_break_the_checks() -> None:
    trace = _ar1(2, 1000, mean=1.0)
    result = llc.LLCResult(llc_trace=trace, loss_trace=trace, init_loss=0.0, nbeta=10.0,
                           sample_stats={}, warmup_loss=np.zeros((2, 0)),
                           failed_chains=np.zeros(2, dtype=bool), chain_errors=["", ""])
    assert check_health(result) == []


def test_diagnostics_imports_no_framework() -> None:
    code = ("import sys, llc.diagnostics\n"
            "heavy = [m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- synthetic results -------------------------------------------------------------------------


def _ar1(chains: int, draws: int, *, mean: float, phi: float = 0.5, sd: float = 1.0,
         seed: int = 0) -> np.ndarray:
    """Stationary AR(1) traces with the given mean and marginal standard deviation."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(chains, draws)) * sd * np.sqrt(1 - phi**2)
    trace = np.empty((chains, draws))
    trace[:, 0] = rng.normal(size=chains) * sd
    for t in range(1, draws):
        trace[:, t] = phi * trace[:, t - 1] + noise[:, t]
    return trace + mean


def _synthetic(trace: np.ndarray, *, acceptance: np.ndarray | None = None,
               failed: np.ndarray | None = None, errors: list[str] | None = None,
               **attrs: Any) -> llc.LLCResult:
    """An ``LLCResult`` around a given llc trace (nβ = 100, d = 40, w* a critical point)."""
    chains, draws = trace.shape
    stats = {"distance": np.full(trace.shape, 0.1), "grad_norm": np.ones(trace.shape),
             "diverging": np.zeros(trace.shape, dtype=bool)}
    if acceptance is not None:
        stats["mala_acceptance"] = acceptance
    return llc.LLCResult(
        llc_trace=trace, loss_trace=trace / 100.0, init_loss=0.0, nbeta=100.0,
        sample_stats=stats, warmup_loss=np.zeros((chains, 0)),
        failed_chains=np.zeros(chains, dtype=bool) if failed is None else failed,
        chain_errors=errors or [""] * chains,
        attrs={"num_params": 40, "init_grad_norm": 0.0, "num_draws": draws, "num_burnin": 500,
               "thin": 1, "sampler_step_size": 1e-4, "localization": 1.0, **attrs},
    )


def test_cli_version_and_seed_help(capsys) -> None:
    from llc.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"llc {llc.__version__}"
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "seed of the data and of the sampler" in capsys.readouterr().out


def test_report_says_off_when_mala_acceptance_is_off() -> None:
    problem = llc.problems.LinearRegression(2, 1)
    data, params = problem.setup(200, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = llc.estimate(problem.loss_and_grad, params, data, num_chains=1, num_draws=20,
                              num_burnin=0, mala_every=None, progress=False)
    assert "MALA acceptance off" in str(result) and "acceptance nan" not in str(result)
