"""Bayesian influence functions and susceptibilities from the probe losses (issue 19, item 5).

The known values: full-batch SGLD on a quadratic potential U with Hessian A samples exactly
N(w*, S) with S = (A (I − εA/4))⁻¹ (the stationary covariance of its linear recursion), and
the per-sample losses of a linear model are quadratic in w, so their covariances follow from
S by Isserlis' theorem. Tolerances: 4 standard errors from the spread of the per-chain
estimates (8 independent chains), about a fifth of the values: a sampler with the wrong drift
(S halved or doubled) moves them by a half or more.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import llc


def _quiet(*args, **kwargs) -> llc.LLCResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        return llc.estimate(*args, **kwargs)


def _regression(outputs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1000, 4 if outputs > 1 else 3))
    teacher = rng.normal(size=(x.shape[1], outputs))
    y = x @ teacher + rng.normal(size=(1000, outputs))
    w_star = np.linalg.solve(x.T @ x, x.T @ y)  # least squares: an exact minimum
    return x, y, w_star


def loss_and_grad(p, batch):
    x, y = batch
    residual = x @ p["w"] - y
    return 0.5 * np.mean(np.sum(residual**2, axis=1)), {"w": x.T @ residual / len(x)}


def pointwise(p, batch):
    x, y = batch
    return 0.5 * np.sum((x @ p["w"] - y) ** 2, axis=1)


SAMPLING = dict(step_size=1e-3, batch_size=1000, num_chains=8, num_draws=4000,
                num_burnin=300, probe_every=1, seed=0, progress=False)


def _per_chain_se(values: np.ndarray) -> np.ndarray:
    return values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])


@pytest.mark.statistical
def test_the_bif_of_a_linear_model_is_its_exact_posterior_covariance() -> None:
    """BIF_ij = −(r_i r_j x_iᵀSx_j + ½ (x_iᵀSx_j)²) for ℓ_i = ½(y_i − x_iᵀw)², whose first
    term is the classical influence function −g_iᵀ H⁻¹ g_j / nβ up to S ≈ (nβH)⁻¹."""
    x, y, w_star = _regression(1)
    probe = (x[:6], y[:6])
    result = _quiet(loss_and_grad, {"w": w_star}, (x, y), probe=(pointwise, probe), **SAMPLING)
    nbeta, step = 1000 / np.log(1000), SAMPLING["step_size"]
    curvature = nbeta * x.T @ x / 1000 + np.eye(3)  # γ = 1
    covariance = np.linalg.inv(curvature @ (np.eye(3) - step * curvature / 4))
    residual = (probe[1] - probe[0] @ w_star)[:, 0]
    kernel = probe[0] @ covariance @ probe[0].T
    expected = -(np.outer(residual, residual) * kernel + 0.5 * kernel**2)
    bif = llc.influence(result)
    per_chain = np.stack([-np.cov(result.probe_loss[chain].T) for chain in range(8)])
    error = 4 * _per_chain_se(per_chain)
    assert np.all(np.abs(bif - expected) < error), np.abs(bif - expected) / error
    assert np.median(error / np.abs(expected)) < 0.3  # a factor 2 in S moves them by ≥ 0.5
    block = llc.influence(result, rows=[2, 4], columns=np.arange(6) > 3)
    np.testing.assert_allclose(block, bif[[2, 4]][:, [4, 5]])
    correlation = llc.influence(result, correlation=True)
    np.testing.assert_allclose(np.diag(correlation), -1.0)
    np.testing.assert_allclose(correlation, bif / np.sqrt(np.outer(np.diag(bif),
                                                                    np.diag(bif))))


@pytest.mark.statistical
def test_susceptibilities_of_one_column_see_only_the_samples_it_touches() -> None:
    """A two-output linear model sampled on column 0 of W alone (restrict=): with φ its loss
    increase ½ m‖δ‖² (m = mean x₀²) and ℓ_i = ½‖r_i − δ x_i0‖², δ ~ N(0, s I₂), χ_i =
    −m x_i0² s² (the linear term of ℓ_i is uncorrelated with φ). Samples with x_i0 = 0 do
    not depend on the column: χ_i = 0 exactly."""
    x, y, w_star = _regression(2)
    probe_x = x[:6].copy()
    probe_x[:3, 0] = [1.0, 1.5, 2.0]
    probe_x[3:, 0] = 0.0  # these three the column does not touch
    # targets on the fit (r_i = 0): ℓ_i has no linear term in δ, whose noise would swamp the
    # covariance with φ (χ_i does not depend on r_i)
    probe = (probe_x, probe_x @ w_star)
    column = np.zeros((4, 2), bool)
    column[0] = True
    result = _quiet(loss_and_grad, {"w": w_star}, (x, y), probe=(pointwise, probe),
                    restrict={"w": column}, **SAMPLING)
    nbeta, step = 1000 / np.log(1000), SAMPLING["step_size"]
    mean_square = np.mean(x[:, 0] ** 2)
    curvature = nbeta * mean_square + 1.0
    variance = 1.0 / (curvature * (1 - step * curvature / 4))
    expected = -mean_square * probe_x[:, 0] ** 2 * variance**2
    chi = llc.susceptibilities(result)
    assert chi.shape == (6,)
    assert np.all(np.abs(chi[3:]) < 1e-9 * np.abs(chi[:3]).max())  # to rounding
    phi = result.llc_trace / result.nbeta
    per_chain = np.stack([[-np.cov(phi[c], result.probe_loss[c, :, i])[0, 1] for i in range(3)]
                          for c in range(8)])
    error = 4 * _per_chain_se(per_chain)
    assert np.all(np.abs(chi[:3] - expected[:3]) < error), (chi[:3], expected[:3], error)
    assert np.all(error < 0.25 * np.abs(expected[:3]))
    relative = llc.susceptibilities(result, relative_to_mean=True)
    np.testing.assert_allclose(relative, chi - chi.mean(), atol=1e-12)


def test_per_token_items_and_errors() -> None:
    x, y, w_star = _regression(2)
    mask = np.ones((4, 2), bool)
    mask[1, 0] = False

    def per_token(p, batch):
        xb, yb = batch
        return 0.5 * (xb @ p["w"] - yb) ** 2, mask

    result = _quiet(loss_and_grad, {"w": w_star}, (x, y), probe=(per_token, (x[:4], y[:4])),
                    step_size=1e-3, batch_size=200, num_chains=2, num_draws=100,
                    num_burnin=20, probe_every=2, progress=False)
    bif = llc.influence(result)
    assert bif.shape == (8, 8)
    assert np.isnan(bif[2]).all() and np.isnan(bif[:, 2]).all()  # the masked token
    assert np.isfinite(np.delete(np.delete(bif, 2, 0), 2, 1)).all()
    assert llc.susceptibilities(result).shape == (4, 2)
    with pytest.raises(ValueError, match="`observable` must have shape"):
        llc.susceptibilities(result, observable=np.zeros((2, 3)))
    with pytest.raises(IndexError, match="outside the 8 probe items"):
        llc.influence(result, rows=[8])
    plain = _quiet(loss_and_grad, {"w": w_star}, (x, y), step_size=1e-3, num_draws=10,
                   num_burnin=0, progress=False)
    with pytest.raises(ValueError, match="no probe losses"):
        llc.influence(plain)
