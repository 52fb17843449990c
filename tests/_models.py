"""Models for tests that need no known λ: a small linear regression in every backend, a
trained torch digits classifier, chains that fail on cue."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from llc import array_namespace


def linear_data(n: int = 512, seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """Data (x, y) and the least-squares w* of y = W x + noise (3 inputs, 2 outputs)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = x @ rng.normal(size=(3, 2)) + rng.normal(size=(n, 2))
    weight = np.linalg.lstsq(x, y, rcond=None)[0].T
    return (x, y), {"weight": weight}


def linear_loss(params: dict, batch: tuple) -> Any:
    x, y = batch
    xp = array_namespace(x)
    residual = x @ xp.matrix_transpose(params["weight"]) - y
    return 0.5 * xp.mean(xp.sum(residual**2, axis=1))


def linear_loss_and_grad(params: dict, batch: tuple) -> tuple[Any, dict]:
    x, y = batch
    residual = x @ params["weight"].T - y
    xp = array_namespace(residual)
    return 0.5 * xp.mean(xp.sum(residual**2, axis=1)), {"weight": residual.T @ x / x.shape[0]}


def linear_problem(case: Any, n: int = 512, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(loss_fn, params, data)`` of the linear model in ``case``'s backend."""
    data, params = linear_data(n, seed)
    loss_fn = linear_loss if case.backend.has_autodiff else linear_loss_and_grad
    return loss_fn, case.asarray(params), case.asarray(data)


def skip_if_compiled(case: Any) -> None:
    """Call-counting failure injection needs an eager loss: under ``jax.jit`` or
    ``tf.function`` the Python wrapper runs once, at trace time."""
    import pytest

    if case.name in ("jax", "tensorflow"):
        pytest.skip("FailingChains counts Python calls; a compiled loss is traced once")


class FailingChains:
    """Wrap ``loss_fn`` so that chosen chains fail from a chosen step on.

    ``fail = {chain: (step, "nan" | "raise")}``. The runner calls ``loss_fn`` twice for the
    probe, once per batch of L_n(w*) (``initial_calls``: 2 + ⌈n / batch_size⌉), then once
    per healthy chain per step in chain order (with ``mala_every=None``,
    ``baseline="full"``); a chain that raises is not called again, a chain that returns NaN
    is until the next flush (≥ 200 steps).
    """

    def __init__(self, loss_fn: Any, num_chains: int, fail: dict[int, tuple[int, str]],
                 initial_calls: int) -> None:
        self.loss_fn, self.fail, self.initial = loss_fn, fail, initial_calls
        self.active = list(range(num_chains))
        self.calls = 0
        self.position = 0  # index into `active` of the chain this call belongs to
        self.step = 0

    def __call__(self, params: Any, batch: Any) -> Any:
        self.calls += 1
        output = self.loss_fn(params, batch)
        if self.calls <= self.initial:
            return output
        chain, step = self.active[self.position], self.step
        self.position += 1
        if self.position == len(self.active):
            self.position, self.step = 0, self.step + 1
        start, how = self.fail.get(chain, (None, ""))
        if start is None or step < start:
            return output
        if how == "raise":
            self.active.remove(chain)
            self.position -= 1 if self.position else 0
            if self.position == len(self.active):
                self.position, self.step = 0, self.step + 1
            raise ValueError("boom")
        if isinstance(output, tuple):
            return output[0] * np.nan, output[1]
        return output * np.nan


@functools.cache
def digits_classifier(hidden: int = 4, steps: int = 3000) -> tuple[Any, dict, tuple]:
    """A 64-``hidden``-10 tanh classifier of scikit-learn's digits (1797 images), trained by
    full-batch Adam on the mean cross-entropy: ``(loss_fn, params, (x, y))`` in torch
    float32. With 4 hidden units the training loss stops near 0.1 (a realistic, not
    interpolating, classifier)."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)

    def layer(inputs: int, outputs: int) -> tuple[Any, Any]:
        weight = torch.randn(outputs, inputs, generator=generator) / inputs ** 0.5
        return weight, torch.zeros(outputs)

    (w1, b1), (w2, b2) = layer(64, hidden), layer(hidden, 10)
    params = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}

    def loss_fn(params: dict, batch: tuple) -> Any:
        inputs, labels = batch
        hidden_units = torch.tanh(inputs @ params["w1"].T + params["b1"])
        logits = hidden_units @ params["w2"].T + params["b2"]
        return torch.nn.functional.cross_entropy(logits, labels)

    trained = {name: value.clone().requires_grad_(True) for name, value in params.items()}
    optimizer = torch.optim.Adam(trained.values(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(trained, (x, y)).backward()
        optimizer.step()
    return loss_fn, {name: value.detach() for name, value in trained.items()}, (x, y)
