"""``probe=``: per-sample losses on fixed probe data at the draws (issue 19, item 4)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import llc
from llc.problems import DeepLinearNetwork

DLN = DeepLinearNetwork((4, 5, 3, 4), rank=3)
SETTINGS = dict(step_size=1e-4, batch_size=100, num_chains=2, num_draws=60, num_burnin=20,
                seed=3, progress=False)


def _quiet(*args, **kwargs) -> llc.LLCResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        return llc.estimate(*args, **kwargs)


def pointwise(params, batch):
    """The DLN's per-sample losses ½‖W₃W₂W₁x − y‖² (their mean is ``DLN.loss``), in the
    batch's framework."""
    x, y = batch
    xp = llc.array_namespace(x)
    out = x
    for name in ("W1", "W2", "W3"):
        out = xp.matmul(out, xp.matrix_transpose(params[name]))
    residual = out - y
    return 0.5 * xp.sum(residual * residual, axis=-1)


def test_probe_losses_are_the_pointwise_losses_at_the_draws() -> None:
    data, params = DLN.setup(1_000, seed=1)
    probe_data = tuple(array[:7] for array in DLN.setup(50, seed=9)[0])
    assert np.mean(pointwise(params, data)) == pytest.approx(float(DLN.loss(params, data)))
    result = _quiet(DLN.loss_and_grad, params, data, probe=(pointwise, probe_data),
                    probe_every=5, keep_params_every=5, **SETTINGS)
    assert result.probe_loss.shape == (2, 12, 7)
    np.testing.assert_allclose(result.probe_loss_at_center, pointwise(params, probe_data),
                               rtol=1e-12)
    shapes = {name: value.shape for name, value in params.items()}
    for chain in range(2):
        for kept in range(12):
            flat = result.param_draws[chain, kept]
            pieces = np.split(flat, np.cumsum([np.prod(s) for s in shapes.values()])[:-1])
            at = {name: piece.reshape(shapes[name]) for name, piece in zip(shapes, pieces)}
            np.testing.assert_allclose(result.probe_loss[chain, kept],
                                       pointwise(at, probe_data), rtol=1e-12)
    tree = result.to_arviz()
    assert tree["probe_loss"]["loss"].dims == ("chain", "draw", "sample")
    assert tree["probe_loss"]["draw"].values.tolist() == list(range(0, 60, 5))
    back = llc.LLCResult.from_arviz(tree)
    np.testing.assert_array_equal(back.probe_loss, result.probe_loss)
    np.testing.assert_array_equal(back.probe_loss_at_center, result.probe_loss_at_center)


def test_probe_is_the_same_on_both_chain_methods_and_survives_a_resume(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    loss_fn, params, data = DLN.in_backend("torch", 1_000, seed=1)
    probe_data = tuple(array[:5] for array in data)
    results = {method: _quiet(loss_fn, params, data, probe=(pointwise, probe_data),
                              probe_every=4, chain_method=method, **SETTINGS)
               for method in ("sequential", "vectorized")}
    np.testing.assert_allclose(results["vectorized"].probe_loss,
                               results["sequential"].probe_loss, rtol=1e-9)
    assert torch.is_tensor(params["W1"])

    calls = {"count": 0}

    def interrupted(p, batch):
        calls["count"] += 1
        if calls["count"] == 20:  # w*, then 2 chains × every 4th draw: draw ~36
            raise KeyboardInterrupt
        return pointwise(p, batch)

    path = tmp_path / "probe.nc"
    settings = dict(probe_every=4, chain_method="sequential", checkpoint_every=10, **SETTINGS)
    with pytest.warns(llc.IncompleteRunWarning):
        partial = _quiet(loss_fn, params, data, probe=(interrupted, probe_data),
                         checkpoint=path, **settings)
    assert not partial.complete and partial.probe_loss.shape[1] < 15
    resumed = _quiet(loss_fn, params, data, probe=(pointwise, probe_data), resume=path,
                     **settings)
    np.testing.assert_array_equal(resumed.probe_loss, results["sequential"].probe_loss)


def test_per_token_probe_losses_with_a_mask() -> None:
    data, params = DLN.setup(500, seed=1)
    probe_data = tuple(array[:6] for array in data)
    mask = np.ones((6, 3), bool)
    mask[0, 2] = mask[4, 1] = False

    def per_token(p, batch):  # the DLN's output coordinates as "tokens"
        x, y = batch
        out = x
        for name in ("W1", "W2", "W3"):
            out = out @ p[name].T
        return 0.5 * (out - y)[:, :3] ** 2, mask

    result = _quiet(DLN.loss_and_grad, params, data, probe=(per_token, probe_data),
                    probe_every=10, **SETTINGS)
    assert result.probe_loss.shape == (2, 6, 6, 3)
    assert np.isnan(result.probe_loss[:, :, 0, 2]).all()
    assert np.isnan(result.probe_loss[:, :, 4, 1]).all()
    assert np.isfinite(result.probe_loss[:, :, mask]).all()
    assert result.to_arviz()["probe_loss"]["loss"].dims == ("chain", "draw", "sample", "token")


def test_bad_probes_are_named() -> None:
    data, params = DLN.setup(200, seed=1)
    base = dict(step_size=1e-4, num_draws=5, num_burnin=0, progress=False)
    with pytest.raises(TypeError, match="`probe` must be a tuple"):
        llc.estimate(DLN.loss_and_grad, params, data, probe=pointwise, **base)
    with pytest.raises(TypeError, match="tuple of arrays"):
        llc.estimate(DLN.loss_and_grad, params, data, probe=(pointwise, list(data)), **base)
    with pytest.raises(ValueError, match="a loss per probe row"):
        llc.estimate(DLN.loss_and_grad, params, data,
                     probe=(lambda p, b: np.zeros(3), data), **base)
    with pytest.raises(ValueError, match="`probe_every`"):
        llc.estimate(DLN.loss_and_grad, params, data, probe=(pointwise, data), probe_every=0,
                     **base)


def test_probe_in_every_backend(backend64) -> None:
    """The probe losses are the pointwise losses at the kept draws, in every adapter and on
    both chain methods (float64)."""
    loss_fn, params, data = DLN.in_backend(backend64.name, 500, seed=1, device=backend64.device)
    probe_data = tuple(array[:4] for array in data)
    if backend64.name == "numpy":
        loss_fn = DLN.loss_and_grad
    methods = ["sequential"] + (["vectorized"] if backend64.backend.chain_transforms else [])
    numpy_params = {name: backend64.to_numpy(value) for name, value in params.items()}
    numpy_probe = tuple(backend64.to_numpy(array) for array in probe_data)
    for method in methods:
        result = _quiet(loss_fn, params, data, probe=(pointwise, probe_data),
                        probe_every=6, keep_params_every=6, chain_method=method,
                        **{**SETTINGS, "batch_size": 50})
        np.testing.assert_allclose(result.probe_loss_at_center,
                                   pointwise(numpy_params, numpy_probe), rtol=1e-10)
        shapes = {name: value.shape for name, value in numpy_params.items()}
        offsets = np.cumsum([np.prod(shape) for shape in shapes.values()])[:-1]
        for chain in range(2):
            for kept in range(result.param_draws.shape[1]):
                pieces = np.split(result.param_draws[chain, kept], offsets)
                at = {name: piece.reshape(shapes[name]) for name, piece in zip(shapes, pieces)}
                np.testing.assert_allclose(result.probe_loss[chain, kept],
                                           pointwise(at, numpy_probe), rtol=1e-9)
