"""The one-line path from a torch.nn.Module, DataLoaders, and torch-specific guarantees."""

from __future__ import annotations

import copy

import warnings

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
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 1))
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


def test_float64_data_meets_a_float32_model() -> None:
    model, x, y = _model_and_data()
    loss_fn, params = from_module(model, torch.nn.functional.cross_entropy)
    seen = set()

    def watched(p, batch):
        seen.add(batch[0].dtype)
        return loss_fn(p, batch)

    result = llc.estimate(watched, params, (x.double(), y), **SHORT)
    assert seen == {torch.float32} and result.attrs["dtype"] == "float32"
    assert result.llc_trace.dtype == np.float64  # the estimate is accumulated in float64


def test_mixed_precision_params_are_sampled_in_the_widest_dtype() -> None:
    x, y = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    params = {"w": torch.zeros(3, dtype=torch.float32), "b": torch.zeros((), dtype=torch.float16)}
    dtypes = set()

    def loss_fn(p, batch):
        dtypes.update((p["w"].dtype, p["b"].dtype))
        prediction = batch[0].float() @ p["w"] + p["b"].float()
        return 0.5 * ((prediction - batch[1].float()) ** 2).mean()

    result = llc.estimate(loss_fn, params, (x, y), **SHORT)
    assert result.attrs["dtype"] == "float32"  # the flat state: float16 promoted to float32
    assert dtypes == {torch.float32, torch.float16}  # loss_fn sees the params' own dtypes
    assert np.isfinite(result.llc_mean)


def test_optimizer_state_module_and_rng_untouched_after_training() -> None:
    """Estimate λ̂ mid-training: the optimizer can take its next step as if nothing happened."""
    model, x, y = _model_and_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    optimizer_before = copy.deepcopy(optimizer.state_dict())
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    loss_fn, params = from_module(model, torch.nn.functional.cross_entropy)
    llc.estimate(loss_fn, params, (x, y), **SHORT)
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter.grad, grads[name])  # .grad not zeroed or accumulated
    after = optimizer.state_dict()
    for index, state in optimizer_before["state"].items():
        for key, value in state.items():
            assert torch.equal(after["state"][index][key], value)
    assert after["param_groups"] == optimizer_before["param_groups"]


class _TiedAndParametrized(torch.nn.Module):
    """An embedding tied to the output layer, a weight-normed layer, a buffer and a fixed
    parameter: the slots that from_module must fill on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(7, 4)
        self.hidden = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(4, 4))
        self.out = torch.nn.Linear(4, 7, bias=False)
        self.out.weight = self.embed.weight
        self.scale = torch.nn.Parameter(torch.tensor(1.5), requires_grad=False)
        self.register_buffer("shift", torch.linspace(-1, 1, 4))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.embed(tokens))) * self.scale + self.shift)


def test_from_module_fills_tied_parametrized_and_fixed_slots_like_functional_call() -> None:
    torch.manual_seed(0)
    model = _TiedAndParametrized()
    tokens, targets = torch.randint(0, 7, (32,)), torch.randint(0, 7, (32,))
    loss_fn, params = from_module(model, torch.nn.functional.cross_entropy)
    assert "out.weight" not in params and "scale" not in params  # tied: one entry; fixed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    moved = {name: (value + 0.1 * torch.randn(value.shape, generator=generator)
                    ).requires_grad_(True) for name, value in params.items()}
    loss = loss_fn(moved, (tokens, targets))
    grads = torch.autograd.grad(loss, list(moved.values()))
    reference_inputs = {name: value.detach().clone().requires_grad_(True)
                        for name, value in moved.items()}
    reference = torch.nn.functional.cross_entropy(
        torch.func.functional_call(model, reference_inputs, (tokens,)), targets)
    reference_grads = torch.autograd.grad(reference, list(reference_inputs.values()))
    torch.testing.assert_close(loss, reference)
    for grad, expected in zip(grads, reference_grads):
        torch.testing.assert_close(grad, expected)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(KeyError, match="lacks the parameter 'embed.weight'"):
        loss_fn({k: v for k, v in params.items() if k != "embed.weight"}, (tokens, targets))


class _Uncopyable(torch.nn.Sequential):
    def __deepcopy__(self, memo: dict) -> None:
        raise TypeError("this module cannot be copied")


def test_from_module_falls_back_to_functional_call_for_modules_that_cannot_be_copied() -> None:
    model, x, y = _model_and_data()
    uncopyable = _Uncopyable(*model)
    loss_fn, params = from_module(uncopyable, torch.nn.functional.cross_entropy)
    torch.testing.assert_close(loss_fn(params, (x, y)),
                               torch.nn.functional.cross_entropy(model(x), y))
    result = llc.estimate(loss_fn, params, (x, y), batch_size=64, **SHORT)
    assert np.isfinite(result.llc_mean)


def test_from_module_under_vectorized_chains_draws_the_sequential_numbers() -> None:
    model, x, y = _model_and_data()
    model = model.double()
    loss_fn, params = from_module(model, torch.nn.functional.cross_entropy)
    runs = {method: llc.estimate(loss_fn, params, (x.double(), y), batch_size=64,
                                 chain_method=method, **SHORT)
            for method in ("sequential", "vectorized")}
    assert runs["vectorized"].attrs["chain_method"] == "vectorized"
    np.testing.assert_allclose(runs["vectorized"].llc_trace, runs["sequential"].llc_trace,
                               rtol=1e-9)


def test_vectorized_chains_summarize_torch_batching_rule_warnings() -> None:
    """torch warns on every call of an op without a vmap batching rule (thousands of lines in
    a run); llc's vmap turns them into one warning per op that says when to run
    sequentially, and passes the other warnings of the mapped function through."""
    from llc.backends.torch import TorchTransforms

    def step(v):
        warnings.warn("There is a performance drop because we have not yet implemented the "
                      "batching rule for aten::llc_test_op. Please file us an issue on GitHub",
                      UserWarning, stacklevel=1)
        warnings.warn("a warning of the user's own", RuntimeWarning, stacklevel=1)
        return v * 2

    mapped = TorchTransforms().vmap(step, (0,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            out = mapped(torch.ones(4, 2))
    torch.testing.assert_close(out, torch.full((4, 2), 2.0))
    texts = [str(w.message) for w in caught]
    assert not any(t.startswith("There is a performance drop") for t in texts)
    summaries = [t for t in texts if "no batching rule for aten::llc_test_op" in t]
    assert len(summaries) == 1 and "chain_method='sequential'" in summaries[0]
    assert texts.count("a warning of the user's own") == 3


# ---- language-model batches ----------------------------------------------------------------

class _TinyCausalLM(torch.nn.Module):
    """Embedding, one causal transformer block, unembedding; keyword `attention_mask` as a
    Hugging Face model takes it (here it only zeroes padded positions' embeddings)."""

    def __init__(self, vocab: int = 12, width: int = 16, length: int = 9) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.block = torch.nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=32,
                                                      dropout=0.0, batch_first=True)
        self.unembed = torch.nn.Linear(width, vocab)
        self.register_buffer("causal", torch.nn.Transformer.generate_square_subsequent_mask(
            length - 1))

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embed(input_ids)
        if attention_mask is not None:
            hidden = hidden * attention_mask[..., None]
        return self.unembed(self.block(hidden, src_mask=self.causal, is_causal=True))


class _TokenDicts(torch.utils.data.Dataset):
    """A tokenizer-like dataset: dicts of input_ids, attention_mask and the raw text."""

    def __init__(self, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        self.tokens, self.mask = tokens, mask

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.tokens[index], "attention_mask": self.mask[index],
                "text": f"sequence {index}"}


def _token_data():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 12, (96, 9), generator=generator)
    mask = torch.ones_like(tokens)
    mask[::3, -3:] = 0  # every third sequence padded at the end
    return tokens, mask


def test_dict_batches_of_a_causal_lm_with_next_token_and_a_masked_loss() -> None:
    from llc.backends.torch import causal_lm_loss, next_token

    torch.manual_seed(0)
    model = _TinyCausalLM().double().eval()
    tokens, mask = _token_data()
    loader = torch.utils.data.DataLoader(_TokenDicts(tokens, mask), batch_size=32,
                                         shuffle=True)
    loss_fn, params = from_module(model, causal_lm_loss, unpack=next_token())
    batch = next(iter(torch.utils.data.DataLoader(_TokenDicts(tokens, mask), batch_size=32)))
    logits = model(batch["input_ids"][:, :-1], attention_mask=batch["attention_mask"][:, :-1])
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 12), batch["input_ids"][:, 1:].reshape(-1), reduction="none")
    weights = batch["attention_mask"][:, 1:].reshape(-1).double()
    expected = (per_token * weights).sum() / weights.sum()
    torch.testing.assert_close(loss_fn(params, batch), expected)
    # per-token losses and their mask on request (for per-token observables)
    losses, weights_out = causal_lm_loss(logits, (batch["input_ids"][:, 1:],
                                                  batch["attention_mask"][:, 1:]),
                                         reduction="none")
    assert losses.shape == weights_out.shape == (32, 8)
    torch.testing.assert_close((losses * weights_out).sum() / weights_out.sum(), expected)
    with pytest.raises(ValueError, match="`reduction`"):
        causal_lm_loss(logits, batch["input_ids"][:, 1:], reduction="sum")
    # without the mask the loss averages every token: a different number
    unmasked = from_module(model, causal_lm_loss, unpack=next_token(mask=None))[0]
    assert not torch.isclose(unmasked(params, batch), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        result = llc.estimate(loss_fn, params, loader, num_data=96, step_size=1e-5,
                              num_chains=2, num_draws=20, num_burnin=5, progress=False)
    assert np.isfinite(result.llc_trace).all()
    # a dict batch without `unpack` says what to do
    plain, _ = from_module(model, causal_lm_loss)
    with pytest.raises(TypeError, match="unpack=next_token"):
        plain(params, batch)


def test_tuple_batches_of_token_sequences_with_next_token() -> None:
    from llc.backends.torch import causal_lm_loss, next_token

    torch.manual_seed(0)
    model = _TinyCausalLM().double().eval()
    tokens, _ = _token_data()
    loss_fn, params = from_module(model, causal_lm_loss, unpack=next_token(tokens=0))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=32)
    batch = next(iter(loader))
    expected = torch.nn.functional.cross_entropy(
        model(tokens[:32, :-1]).reshape(-1, 12), tokens[:32, 1:].reshape(-1))
    torch.testing.assert_close(loss_fn(params, batch), expected)
    # array data: a tuple of one tensor of sequences, drawn as rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        result = llc.estimate(loss_fn, params, (tokens,), batch_size=32, step_size=1e-5,
                              num_chains=2, num_draws=20, num_burnin=5, progress=False)
    assert np.isfinite(result.llc_trace).all()
    # an unpack that returns something else is named
    bad, _ = from_module(model, causal_lm_loss, unpack=lambda b: (b[0], b[0]))
    with pytest.raises(TypeError, match=r"must return \(args, kwargs, targets\)"):
        bad(params, batch)
    with pytest.raises(TypeError, match="`unpack` must be callable"):
        from_module(model, causal_lm_loss, unpack="input_ids")
