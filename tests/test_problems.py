"""Tests of llc.problems: closed-form λ, analytic gradients, minimisers, array-API losses,
and the exact finite-nβ expectations of the potentials."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llc.problems import (
    DeepLinearNetwork,
    LinearRegression,
    Monomial,
    Potential,
    Problem,
    RadialPotential,
    ReducedRankRegression,
    SumOfPotentials,
    dln_lambda,
    rrr_lambda,
)

# --------------------------------------------------------------------------------------------
# closed-form learning coefficients (docs/design.md §3)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("M", "H", "N", "r", "expected"),
    [(5, 3, 5, 0, 6.5), (5, 4, 5, 0, 8.0), (4, 3, 8, 0, 6.0), (8, 3, 4, 0, 6.0),
     (3, 8, 4, 0, 6.0), (5, 3, 5, 2, 9.5)],
)
def test_rrr_lambda_worked_values(M, H, N, r, expected):
    assert rrr_lambda(M, H, N, r) == expected


@pytest.mark.parametrize(
    ("widths", "r", "expected"),
    [((10, 10, 10, 10), 0, 33.5), ((10, 10, 10, 10), 3, 42.0), ((4, 6, 2, 6, 4), 1, 5.0),
     ((100, 100, 100), 0, 3750.0), ((455, 395, 125, 350, 277, 261, 297), 28, 20546.5)],
)
def test_dln_lambda_worked_values(widths, r, expected):
    assert dln_lambda(widths, r) == expected


def test_dln_two_layers_is_rrr():
    for M in range(1, 7):
        for H in range(1, 7):
            for N in range(1, 7):
                for r in range(min(M, H, N) + 1):
                    assert dln_lambda((M, H, N), r) == rrr_lambda(M, H, N, r), (M, H, N, r)


def test_dln_one_layer_is_regular():
    for H0 in range(1, 8):
        for H1 in range(1, 8):
            for r in range(min(H0, H1) + 1):
                assert dln_lambda((H0, H1), r) == H0 * H1 / 2


def test_dln_lambda_bounds():
    """0 <= λ <= d/2, and a full-rank truth with no bottleneck beyond it gives ≥ r(H0+HL-r)/2."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        widths = tuple(int(w) for w in rng.integers(1, 12, size=rng.integers(2, 7)))
        r = int(rng.integers(0, min(widths) + 1))
        lam = dln_lambda(widths, r)
        d = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        assert 0 <= lam <= d / 2
        assert lam >= (r * (widths[0] + widths[-1]) - r * r) / 2  # dimension of rank-r maps


@pytest.mark.parametrize(
    ("args", "name"),
    [((0, 3, 5, 0), "M"), ((5, 0, 5, 0), "H"), ((5, 3, 0, 0), "N"), ((5, 3, 5, -1), "r"),
     ((5, 3, 5, 4), "r"), ((5.5, 3, 5, 0), "M"), ((5, True, 5, 0), "H"), ((5, 3, "5", 0), "N")],
)
def test_rrr_lambda_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        rrr_lambda(*args)


@pytest.mark.parametrize(
    ("widths", "r", "name"),
    [((5,), 0, "widths"), ((), 0, "widths"), ((3, 0, 4), 0, r"widths\[1\]"), ((3, 2, 4), 3, "r"),
     ((3, 2, 4), -1, "r"), ((3, 2.5, 4), 0, r"widths\[1\]"), (5, 0, "widths")],
)
def test_dln_lambda_bad_arguments(widths, r, name):
    with pytest.raises(ValueError, match=name):
        dln_lambda(widths, r)


# --------------------------------------------------------------------------------------------
# problems: λ, interface, arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        (Monomial((1, 2)), 1 / 4),
        (Monomial((1,)), 1 / 2),
        (Monomial((1, 3)), 1 / 6),
        (Monomial((1, 2), center=(1.0, 0.0)), 1 / 4),
        (Monomial((1, 2), center=(0.0, 1.0)), 1 / 2),
        (SumOfPotentials(Monomial((2,)), Monomial((2,))), 1 / 2),
        (SumOfPotentials(Monomial((1,)), Monomial((2,))), 3 / 4),
        (RadialPotential(3, 2), 3 / 4),
        (RadialPotential(2, 1), 1.0),
        (RadialPotential(5, 3), 5 / 6),
        (LinearRegression(3, 2), 3.0),
        (ReducedRankRegression(5, 3, 5, 2), 9.5),
        (ReducedRankRegression(4, 3, 8, 0), 6.0),
        (DeepLinearNetwork((4, 6, 2, 6, 4), 1), 5.0),
        (DeepLinearNetwork((3, 4), 1), 6.0),
    ],
    ids=repr,
)
def test_true_lambda(problem, expected):
    assert problem.true_lambda == pytest.approx(expected, rel=1e-15)


def _all_problems() -> list[Problem]:
    return [
        LinearRegression(3, 2, noise_std=0.5),
        ReducedRankRegression(5, 3, 4, 2),
        ReducedRankRegression(3, 4, 2, 0, noise_std=2.0),
        DeepLinearNetwork((4, 6, 2, 6, 4), 1),
        DeepLinearNetwork((3, 5, 2), 2),
        DeepLinearNetwork((3, 4), 1),
        DeepLinearNetwork((3, 5, 4, 2), 0),
        Monomial((1, 2)),
        Monomial((0, 3, 1), center=(0.5, 0.0, -1.0)),
        RadialPotential(3, 2),
        RadialPotential(2, 1),
        SumOfPotentials(Monomial((1, 2)), RadialPotential(2, 3), Monomial((2,))),
    ]


PROBLEMS = _all_problems()


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_interface(problem):
    assert isinstance(problem, Problem)
    assert isinstance(problem.name, str) and problem.name
    assert repr(problem).startswith(type(problem).__name__ + "(")
    assert problem.num_params == sum(math.prod(s) for s in problem.param_shapes.values())
    state = np.random.get_state()[1].copy()
    data = problem.sample_data(11, seed=3)
    assert np.array_equal(np.random.get_state()[1], state)  # global RNG untouched
    assert isinstance(data, tuple) and all(a.shape[0] == 11 and a.dtype == np.float64 for a in data)
    again = problem.sample_data(11, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(data, again))
    data, params = problem.setup(20, seed=1)
    assert list(params) == list(problem.param_shapes)
    for key, value in params.items():
        assert value.shape == problem.param_shapes[key] and value.dtype == np.float64
    loss = problem.loss(params, data)
    loss2, grads = problem.loss_and_grad(params, data)
    assert float(loss) == float(loss2)
    assert {k: v.shape for k, v in grads.items()} == problem.param_shapes


def test_regression_data_depend_on_seed_not_teacher():
    problem = ReducedRankRegression(5, 3, 4, 2)
    x1, y1 = problem.sample_data(50, 1)
    x2, _ = problem.sample_data(50, 2)
    assert not np.array_equal(x1, x2)
    assert np.allclose(problem.teacher_matrix, ReducedRankRegression(5, 3, 4, 2).teacher_matrix)
    s = np.linalg.svd(problem.teacher_matrix, compute_uv=False)
    assert np.all((s[:2] >= 1) & (s[:2] <= 2)) and np.all(s[2:] < 1e-12)
    other = ReducedRankRegression(5, 3, 4, 2, teacher_seed=1)
    assert not np.allclose(problem.teacher_matrix, other.teacher_matrix)


def test_potential_data_are_dummy_zeros():
    (data,) = Monomial((1, 2)).sample_data(7, 0)
    assert data.shape == (7, 1) and not data.any()


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ReducedRankRegression(5, 3, 5, 4), "rank"),
        (lambda: ReducedRankRegression(5, 3, 5, -1), "rank"),
        (lambda: ReducedRankRegression(0, 3, 5, 0), "M"),
        (lambda: ReducedRankRegression(5, 3, 5, 1, noise_std=0.0), "noise_std"),
        (lambda: DeepLinearNetwork((4, 2, 5), 3), "rank"),
        (lambda: DeepLinearNetwork((4,), 0), "widths"),
        (lambda: DeepLinearNetwork((4, 0, 3), 0), "widths"),
        (lambda: LinearRegression(0, 2), "in_features"),
        (lambda: LinearRegression(2, 2, noise_std=-1.0), "noise_std"),
        (lambda: Monomial((1, 2), center=(1.0, 1.0)), "center"),
        (lambda: Monomial((0, 2), center=(0.0, 1.0)), "center"),
        (lambda: Monomial((1, 2), center=(0.0,)), "center"),
        (lambda: Monomial((0, 0)), "exponents"),
        (lambda: Monomial((1, -1)), r"exponents\[1\]"),
        (lambda: RadialPotential(2, 0), "power"),
        (lambda: RadialPotential(0, 1), "dim"),
        (lambda: SumOfPotentials(), "potentials"),
        (lambda: LinearRegression(2, 2).sample_data(0, 0), "n"),
        (lambda: LinearRegression(2, 2).sample_data(3, -1), "seed"),
        (lambda: LinearRegression(3, 2).setup(2), "n >= in_features"),
    ],
)
def test_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


# --------------------------------------------------------------------------------------------
# analytic gradients
# --------------------------------------------------------------------------------------------


def _finite_difference(problem: Problem, params, batch, h: float = 1e-6):
    grads = {}
    for key, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[key][index] += h
            minus[key][index] -= h
            difference = float(problem.loss(plus, batch)) - float(problem.loss(minus, batch))
            grad[index] = difference / (2 * h)
        grads[key] = grad
    return grads


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_gradient_matches_finite_differences(problem):
    batch = problem.sample_data(9, seed=4)
    for seed in range(2):
        params = problem.random_params(seed, scale=0.8)
        _, grads = problem.loss_and_grad(params, batch)
        numeric = _finite_difference(problem, params, batch)
        scale = max(1.0, max(np.abs(g).max() for g in numeric.values()))
        for key in params:
            np.testing.assert_allclose(grads[key], numeric[key], rtol=1e-6, atol=1e-7 * scale)


# --------------------------------------------------------------------------------------------
# minimisers
# --------------------------------------------------------------------------------------------


def _grad_ratio(problem: Problem, params, data) -> float:
    """Largest gradient entry at ``params`` relative to that at a random point."""
    _, grads = problem.loss_and_grad(params, data)
    _, reference = problem.loss_and_grad(problem.random_params(7), data)
    largest = max(np.abs(g).max() for g in grads.values())
    return largest / max(np.abs(g).max() for g in reference.values())


def _product(problem, params) -> np.ndarray:
    if isinstance(problem, ReducedRankRegression):
        return params["B"] @ params["A"]
    product = params["W1"]
    for s in range(2, problem.depth + 1):
        product = params[f"W{s}"] @ product
    return product


def test_ols_minimizer():
    problem = LinearRegression(4, 3, noise_std=0.7)
    data, params = problem.setup(60, seed=2)
    assert _grad_ratio(problem, params, data) < 1e-12
    x, y = data
    np.testing.assert_allclose(params["weight"], np.linalg.solve(x.T @ x, x.T @ y).T, rtol=1e-10)
    assert problem.loss(params, data) <= problem.loss(problem.teacher, data)


REDUCED = [
    ReducedRankRegression(5, 3, 4, 2),
    ReducedRankRegression(5, 3, 5, 0),
    ReducedRankRegression(4, 5, 6, 3, noise_std=0.3),
    ReducedRankRegression(3, 2, 5, 2),
    DeepLinearNetwork((4, 6, 2, 6, 4), 1),
    DeepLinearNetwork((5, 4, 3, 6), 2),
    DeepLinearNetwork((4, 5, 3), 3),
    DeepLinearNetwork((3, 5, 4, 2), 0),
]


@pytest.mark.parametrize("problem", REDUCED, ids=repr)
def test_reduced_rank_minimizer(problem):
    data, params = problem.setup(80, seed=5)
    # an exact critical point of L_n over all parameters
    assert _grad_ratio(problem, params, data) < 1e-12
    # the product has rank r
    s = np.linalg.svd(_product(problem, params), compute_uv=False)
    r = problem.rank
    assert np.all(s[:r] > 0.1) and np.all(s[r:] < 1e-12 * max(1.0, s[0]))
    # no worse than the teacher, nor than the Frobenius (unwhitened) rank-r truncation of OLS
    loss = float(problem.loss(params, data))
    assert loss <= float(problem.loss(problem.teacher, data))
    x, y = data
    U, S, Vt = np.linalg.svd(np.linalg.solve(x.T @ x, x.T @ y).T)
    naive = (U[:, :r] * S[:r]) @ Vt[:r]
    resid = y - x @ naive.T
    assert loss <= np.sum(resid**2) / (2 * problem.noise_std**2 * x.shape[0]) + 1e-14
    # a local minimum within the rank-r set: perturb only the blocks that carry the product
    rng = np.random.default_rng(0)
    for _ in range(20):
        moved = {}
        for index, (key, value) in enumerate(params.items()):
            noise = np.zeros_like(value)
            first, last = index == 0, index == len(params) - 1
            rows = slice(None) if last else slice(0, r)
            cols = slice(None) if first else slice(0, r)
            noise[rows, cols] = rng.standard_normal(noise[rows, cols].shape)
            moved[key] = value + 1e-3 * noise
        assert np.linalg.matrix_rank(_product(problem, moved)) <= r
        assert float(problem.loss(moved, data)) >= loss


def test_full_rank_reduced_rank_minimizer_is_global():
    """With r = min(M, H, N) the critical point is the global minimum of L_n."""
    problem = ReducedRankRegression(5, 3, 4, 3)
    data, params = problem.setup(50, seed=0)
    loss = float(problem.loss(params, data))
    rng = np.random.default_rng(1)
    for _ in range(20):
        moved = {k: v + 1e-3 * rng.standard_normal(v.shape) for k, v in params.items()}
        assert float(problem.loss(moved, data)) >= loss


def test_saddle_below_full_rank():
    """For r < min(M, H, N) the rank-r point is a saddle: a higher-rank point has lower loss."""
    problem = ReducedRankRegression(5, 3, 4, 1)
    data, params = problem.setup(50, seed=0)
    full = ReducedRankRegression(5, 3, 4, 3)
    assert float(full.loss(full.minimizer(data), data)) < float(problem.loss(params, data))


def test_one_layer_dln_minimizer_is_ols():
    dln, linear = DeepLinearNetwork((4, 3), 1), LinearRegression(4, 3)
    data = dln.sample_data(40, seed=0)
    np.testing.assert_allclose(dln.minimizer(data)["W1"], linear.minimizer(data)["weight"])


@pytest.mark.parametrize(
    "problem", [p for p in PROBLEMS if isinstance(p, Potential)], ids=repr
)
def test_potential_minimizer(problem):
    data, params = problem.setup(5)
    loss, grads = problem.loss_and_grad(params, data)
    assert float(loss) == 0.0 and not grads["w"].any()
    np.testing.assert_array_equal(params["w"], problem.center)


# --------------------------------------------------------------------------------------------
# the loss is backend-neutral (array API)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", PROBLEMS, ids=repr)
def test_torch_loss_matches_numpy(problem):
    torch = pytest.importorskip("torch")
    data = problem.sample_data(13, seed=6)
    params = problem.random_params(1, scale=0.8)
    t_data = tuple(torch.from_numpy(a) for a in data)
    t_params = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}
    loss = problem.loss(t_params, t_data)
    assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float64 and loss.ndim == 0
    np.testing.assert_allclose(loss.item(), float(problem.loss(params, data)), rtol=1e-13)
    # the analytic gradient on torch tensors, against numpy and against torch autograd
    t_loss, t_grads = problem.loss_and_grad(t_params, t_data)
    autograd = torch.autograd.grad(loss, list(t_params.values()))
    _, grads = problem.loss_and_grad(params, data)
    for (key, value), auto in zip(t_grads.items(), autograd):
        np.testing.assert_allclose(value.detach().numpy(), grads[key], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(auto.numpy(), grads[key], rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# exact finite-nβ expectations of the potentials
# --------------------------------------------------------------------------------------------

SETTINGS = [(1.0, 1.0), (1e3, 1.0), (1e2, 100.0), (1e6, 10.0)]


@pytest.mark.parametrize(("nbeta", "gamma"), SETTINGS)
def test_exact_expectation_quadratic_closed_form(nbeta, gamma):
    """K = |w|^2: the posterior is N(0, I/(2nβ + γ)), so E[nβ K] = d nβ / (2nβ + γ)."""
    for dim in (1, 2, 4):
        value = RadialPotential(dim, 1).exact_expectation(nbeta, gamma)
        assert value == pytest.approx(dim * nbeta / (2 * nbeta + gamma), rel=1e-10)
    # the generic tensor-product path (1-D and 2-D) on the same Gaussians
    assert Potential.exact_expectation(RadialPotential(2, 1), nbeta, gamma) == pytest.approx(
        2 * nbeta / (2 * nbeta + gamma), rel=1e-10
    )
    assert Monomial((1,)).exact_expectation(nbeta, gamma) == pytest.approx(
        nbeta / (2 * nbeta + gamma), rel=1e-10
    )


def test_exact_expectation_without_localization_is_lambda():
    """With γ = 0 and homogeneous K, nβ K ~ Gamma(λ, 1): E[nβ K] = d/(2p) exactly."""
    for dim, power in [(1, 1), (2, 3), (7, 2)]:
        value = RadialPotential(dim, power).exact_expectation(123.0, 0.0)
        assert value == pytest.approx(dim / (2 * power), rel=1e-10)


def _monomial_12_reference(nbeta: float, gamma: float, center_w1: float) -> float:
    """E[nβ w1² w2⁴] with w1 integrated in closed form (a Gaussian) and w2 by scipy.quad."""
    integrate = pytest.importorskip("scipy.integrate")

    def parts(w2):
        a = nbeta * w2**4
        precision = 2 * a + gamma
        mean = gamma * center_w1 / precision
        z = math.sqrt(2 * math.pi / precision) * math.exp(
            -0.5 * gamma * center_w1**2 + 0.5 * precision * mean**2 - 0.5 * gamma * w2**2
        )
        return z, a * (1 / precision + mean**2) * z

    scale = (gamma / nbeta) ** 0.25
    edges = [0.0, scale / 10, scale, 10 * scale, math.sqrt(200 / gamma)]
    edges = sorted(e for e in set(edges) if e <= edges[-1])

    def total(i):
        return sum(
            integrate.quad(lambda t: parts(t)[i], a, b, epsabs=0, epsrel=1e-13, limit=500)[0]
            for a, b in zip(edges[:-1], edges[1:])
        )

    return total(1) / total(0)


@pytest.mark.parametrize(("nbeta", "gamma"), [(1e2, 1.0), (1e6, 1.0), (1e4, 100.0)])
@pytest.mark.parametrize("center", [(0.0, 0.0), (1.0, 0.0)])
def test_exact_expectation_monomial_against_1d_reduction(nbeta, gamma, center):
    value = Monomial((1, 2), center=center).exact_expectation(nbeta, gamma)
    assert value == pytest.approx(_monomial_12_reference(nbeta, gamma, center[0]), rel=1e-9)


def test_exact_expectation_resolutions_agree():
    for problem, nbeta, gamma in [
        (Monomial((1, 2)), 1e4, 10.0),
        (Monomial((1, 3), center=(0.0, 1.0)), 1e3, 100.0),
        (RadialPotential(1, 3), 1e6, 100.0),
    ]:
        coarse = problem.exact_expectation(nbeta, gamma)
        fine = problem.exact_expectation(nbeta, gamma, resolution=2)
        assert coarse == pytest.approx(fine, rel=1e-9)


def test_exact_expectation_scaling_invariance():
    """K = w1² w2⁴ is homogeneous of degree 6: E depends only on nβ/γ³ (different grids)."""
    monomial = Monomial((1, 2))
    assert monomial.exact_expectation(1e2, 10.0) == pytest.approx(
        monomial.exact_expectation(1e5, 100.0), rel=1e-10
    )


def test_exact_expectation_table_values():
    """The documented finite-nβ values (underestimation of λ = 1/4, shrinking with nβ)."""
    monomial = Monomial((1, 2))
    values = [monomial.exact_expectation(nbeta, 1.0) for nbeta in (1e2, 1e4, 1e6)]
    np.testing.assert_allclose(values, [0.205712, 0.235811, 0.245507], atol=5e-7)
    assert values[0] < values[1] < values[2] < 0.25


def test_exact_expectation_sum_factorises_and_limits():
    parts = (Monomial((1, 2)), Monomial((2,)), RadialPotential(3, 2))
    total = SumOfPotentials(*parts).exact_expectation(1e3, 2.0)
    assert total == pytest.approx(sum(p.exact_expectation(1e3, 2.0) for p in parts), rel=1e-14)
    with pytest.raises(NotImplementedError):
        Monomial((1, 1, 1)).exact_expectation(1e3, 1.0)
    with pytest.raises(ValueError, match="localization"):
        Monomial((1, 2)).exact_expectation(1e3, 0.0)
    with pytest.raises(ValueError, match="nbeta"):
        Monomial((1, 2)).exact_expectation(-1.0, 1.0)
