"""The one-line path from a torch.nn.Module, DataLoaders, and torch-specific guarantees."""

from __future__ import annotations

import numpy as np
import pytest

import llc

torch = pytest.importorskip("torch")
from llc.backends.torch import from_module  # noqa: E402

SHORT = dict(num_chains=2, num_draws=40, num_burnin=10, step_size=1e-4, progress=False)


def _model_and_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    x = torch.randn(256, 4, generator=generator)
    y = torch.randint(0, 3, (256,), generator=generator)
    return model, x, y


def test_from_module_matches_the_module() -> None:
    model, x, y = _model_and_data()
    loss_fn, params = from_module(model, torch.nn.functional.cross_entropy)
    assert list(params) == [name for name, _ in model.named_parameters()]
    expected = torch.nn.functional.cross_entropy(model(x), y)
    assert torch.allclose(loss_fn(params, (x, y)), expected)
    for name, parameter in model.named_parameters():
        assert params[name].data_ptr() != parameter.data_ptr()  # a copy, not the module's


def test_estimate_leaves_the_module_untouched() -> None:
    model, x, y = _model_and_data()
    model.train(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn, params = from_module(model, torch.nn.functional.cross_entropy)
    result = llc.estimate(loss_fn, params, (x, y), batch_size=64, **SHORT)
    assert np.isfinite(result.llc_mean)
    assert model.training is False
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
        assert value.grad is None


def test_batch_norm_buffers_are_not_written() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    x, y = torch.randn(128, 4), torch.randn(128, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="training mode"):
        loss_fn, params = from_module(model, torch.nn.functional.mse_loss)
    llc.estimate(loss_fn, params, (x, y), batch_size=32, **SHORT)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert model.training


def test_from_module_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="`module` must be a torch.nn.Module"):
        from_module(lambda x: x, torch.nn.functional.mse_loss)


def test_shuffling_dataloader_is_reproducible_and_leaves_global_rng_alone() -> None:
    model, x, y = _model_and_data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32,
                                         shuffle=True)
    loss_fn, params = from_module(model, torch.nn.functional.cross_entropy)
    torch.manual_seed(99)
    state = torch.get_rng_state()
    first = llc.estimate(loss_fn, params, loader, num_data=256, seed=2, **SHORT)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(12345)  # a different global state must not change the result
    second = llc.estimate(loss_fn, params, loader, num_data=256, seed=2, **SHORT)
    np.testing.assert_array_equal(first.llc_trace, second.llc_trace)
    expected = torch.nn.functional.cross_entropy(model(x), y).item()
    assert first.init_loss == pytest.approx(expected, rel=1e-5)


def test_numpy_data_is_converted_to_the_params_dtype_and_device() -> None:
    model, x, y = _model_and_data()
    seen = {}

    def loss_fn(params, batch):
        seen["types"] = [(type(b).__name__, b.dtype, b.device.type) for b in batch]
        inner_loss, _ = from_module(model, torch.nn.functional.cross_entropy)
        return inner_loss(params, batch)

    _, params = from_module(model, torch.nn.functional.cross_entropy)
    llc.estimate(loss_fn, params, (x.numpy().astype(np.float64), y.numpy()), **SHORT)
    assert seen["types"] == [("Tensor", torch.float32, "cpu"), ("Tensor", torch.int64, "cpu")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_params_keep_everything_on_the_device() -> None:
    model, x, y = _model_and_data()
    model = model.cuda()
    loss_fn, params = from_module(model, torch.nn.functional.cross_entropy)
    devices = set()

    def watched(p, batch):
        devices.update(t.device.type for t in (*p.values(), *batch))
        return loss_fn(p, batch)

    result = llc.estimate(watched, params, (x.numpy(), y.numpy()), **SHORT)
    assert devices == {"cuda"}
    assert result.attrs["device"].startswith("cuda")
    assert np.isfinite(result.llc_mean)
