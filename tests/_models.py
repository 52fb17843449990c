"""A small linear-regression model in every backend, for tests that need no known λ."""

from __future__ import annotations

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
    residual = x @ params["weight"].T - y
    xp = array_namespace(residual)
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
