"""Cross-backend consistency: the same model in every framework gives the same answer.

- loss and gradient agree to 1e-10 (relative) in float64 on the same weights;
- SGLD with the same injected noise follows the same trajectory for 100 steps (1e-8);
- with each backend's own random streams, λ̂ agrees within 4 standard errors.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import numpy as np
import pytest

import llc
from llc.posterior import LocalizedPosterior
from llc.problems import DeepLinearNetwork, LinearRegression, ReducedRankRegression
from llc.samplers import SGLD

BACKENDS = [name for name in ("numpy", "torch", "jax", "tensorflow")
            if importlib.util.find_spec(name)]
PROBLEMS = {
    "regular": LinearRegression(4, 3),
    "rrr": ReducedRankRegression(5, 3, 5, rank=2),
    "dln": DeepLinearNetwork((4, 5, 3, 4), rank=2),
}


def _setup(problem: Any, name: str, n: int = 256, shift: float = 0.3) -> tuple[Any, Any, Any]:
    """Off-minimum weights (so the gradient is not ~0) and data, in backend ``name``."""
    backend = llc.get_backend(name)
    data, params = problem.setup(n, seed=1)
    rng = np.random.default_rng(2)
    params = {k: v + shift * rng.standard_normal(v.shape) for k, v in params.items()}
    convert = lambda a: backend.from_numpy(a, dtype="float64")  # noqa: E731
    loss_fn = problem.loss if backend.has_autodiff else problem.loss_and_grad
    return loss_fn, {k: convert(v) for k, v in params.items()}, tuple(convert(a) for a in data)


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_loss_and_gradient_agree_across_backends(problem: str) -> None:
    values = {}
    for name in BACKENDS:
        backend = llc.get_backend(name)
        loss_fn, params, data = _setup(PROBLEMS[problem], name)
        center, unravel = backend.ravel(params)
        loss, grad = backend.value_and_grad(loss_fn, unravel)(center, data)
        values[name] = (float(backend.to_numpy(loss)), backend.to_numpy(grad))
    reference_loss, reference_grad = values["numpy"]
    assert np.linalg.norm(reference_grad) > 1e-2  # a real gradient, not ~0 at a minimum
    for name, (loss, grad) in values.items():
        assert loss == pytest.approx(reference_loss, rel=1e-10), name
        np.testing.assert_allclose(grad, reference_grad, rtol=1e-10,
                                   atol=1e-10 * np.abs(reference_grad).max(), err_msg=name)


class _InjectedNoise:
    """A backend proxy whose ``normal`` replays a fixed NumPy noise table, in order."""

    def __init__(self, backend: Any, table: np.ndarray) -> None:
        self._backend, self._table, self._index = backend, table, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def normal(self, key: Any, like: Any) -> Any:
        noise = self._table[self._index]
        self._index += 1
        return self._backend.from_numpy(noise, dtype="float64")


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_sgld_trajectories_agree_with_the_same_noise(problem: str) -> None:
    steps, trajectories = 100, {}
    for name in BACKENDS:
        backend = llc.get_backend(name)
        loss_fn, params, data = _setup(PROBLEMS[problem], name, shift=0.05)
        center, unravel = backend.ravel(params)
        table = np.random.default_rng(3).standard_normal((steps, center.shape[0]))
        proxy = _InjectedNoise(backend, table)
        posterior = LocalizedPosterior(backend.value_and_grad(loss_fn, unravel), center,
                                       nbeta=50.0, localization=2.0, backend=proxy)
        algorithm = SGLD(step_size=1e-3).build(posterior)
        state, path = algorithm.init(center), []
        for _ in range(steps):  # eager on purpose: the proxy's Python counter must run
            state, _ = algorithm.step(None, state, data)
            path.append(backend.to_numpy(state.position))
        trajectories[name] = np.stack(path)
    reference = trajectories["numpy"]
    assert np.abs(reference[-1] - reference[0]).max() > 1e-3  # the chain moved
    for name, path in trajectories.items():
        np.testing.assert_allclose(path, reference, rtol=1e-8,
                                   atol=1e-8 * np.abs(reference).max(), err_msg=name)


@pytest.mark.statistical
def test_llc_agrees_across_backends_with_their_own_randomness() -> None:
    """Each backend's own streams: the DLN λ̂ agree within 4 SE (SE from the MCSEs)."""
    if "jax" in BACKENDS:
        import jax

        jax.config.update("jax_enable_x64", True)
    problem = PROBLEMS["dln"]
    estimates = {}
    for name in BACKENDS:
        loss_fn, params, data = problem.in_backend(name, 10_000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", llc.LLCHealthWarning)
            result = llc.estimate(loss_fn, params, data, batch_size=500,
                                  step_size=3e-5, num_draws=4000, num_burnin=1000,
                                  baseline="minibatch", progress=False, seed=0)
        estimates[name] = (result.llc_mean, result.llc_mcse)
        assert abs(result.llc_mean / problem.true_lambda - 1) < 0.10, (name, result.llc_mean)
    names = list(estimates)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            (a, se_a), (b, se_b) = estimates[first], estimates[second]
            assert abs(a - b) < 4 * np.hypot(se_a, se_b), (first, second, estimates)
