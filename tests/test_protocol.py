"""Every installed adapter conforms to the :class:`llc.Backend` protocol.

The signatures: every member the protocol declares is there, callable with the protocol's
parameter names and kinds (a subclass may add optional parameters). The contracts the core
relies on, checked through the protocol alone: ``ravel``/``unravel`` round trip and copy,
keys are pure functions of their inputs, ``fold_in`` separates streams, ``normal`` and
``integers`` have the asked shape and range, ``linear_combination`` computes the
combination (``reuse`` included) and ``compile`` keeps the function's values with
``diagnose`` by position or by name.
"""

from __future__ import annotations

import inspect

import numpy as np

import llc
from llc._backend import Backend, ChainTransforms

MEMBERS = [name for name, value in vars(Backend).items()
           if callable(value) and not name.startswith("_")]
ATTRIBUTES = [name for name in Backend.__annotations__ if not name.startswith("_")]
TRANSFORMS = [name for name, value in vars(ChainTransforms).items()
              if callable(value) and not name.startswith("_")]


def _parameters(function) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()
            if p.name != "self"]


def test_the_protocol_lists_what_the_core_uses() -> None:
    assert {"value_and_grad", "ravel", "compile", "normal", "linear_combination",
            "isolated_global_rng"} <= set(MEMBERS)
    assert {"name", "has_autodiff", "chain_transforms", "reuses_programs"} <= set(ATTRIBUTES)


def test_every_adapter_has_the_protocols_members_and_signatures(backend) -> None:
    adapter = backend.backend
    assert isinstance(adapter, Backend)
    for name in ATTRIBUTES:
        assert hasattr(adapter, name), f"{adapter.name} lacks attribute {name}"
    assert isinstance(adapter.reuses_programs, bool) and isinstance(adapter.has_autodiff, bool)
    for name in MEMBERS:
        method = getattr(adapter, name)
        declared = _parameters(getattr(Backend, name))
        actual = _parameters(method)
        assert actual[:len(declared)] == declared, (adapter.name, name, actual, declared)
        extra = inspect.signature(method).parameters
        assert all(extra[p].default is not inspect.Parameter.empty
                   or extra[p].kind is inspect.Parameter.VAR_KEYWORD
                   for p, _ in actual[len(declared):]), (adapter.name, name)
    if adapter.chain_transforms is not None:
        assert isinstance(adapter.chain_transforms, ChainTransforms)
        for name in TRANSFORMS:
            assert (_parameters(getattr(adapter.chain_transforms, name))[:len(
                _parameters(getattr(ChainTransforms, name)))]
                == _parameters(getattr(ChainTransforms, name))), (adapter.name, name)


def test_every_adapter_keeps_the_contracts_the_core_relies_on(backend) -> None:
    adapter = backend.backend
    params = backend.asarray({"a": np.arange(6.0).reshape(2, 3), "b": np.array([7.0, 8.0])})
    flat, unravel = adapter.ravel(params)
    assert adapter.to_numpy(flat).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0]
    rebuilt = unravel(flat)
    np.testing.assert_array_equal(adapter.to_numpy(rebuilt["a"]), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(backend.to_numpy(params["b"]), [7.0, 8.0])  # not moved

    key = adapter.key(3)
    same = adapter.to_numpy(adapter.normal(adapter.fold_in(key, 1), flat))
    again = adapter.to_numpy(adapter.normal(adapter.fold_in(adapter.key(3), 1), flat))
    other = adapter.to_numpy(adapter.normal(adapter.fold_in(key, 2), flat))
    assert same.shape == (8,) and np.array_equal(same, again) and not np.array_equal(same, other)
    first, second = adapter.split(key, 2)
    assert not np.array_equal(adapter.to_numpy(adapter.normal(first, flat)),
                              adapter.to_numpy(adapter.normal(second, flat)))
    rows = adapter.to_numpy(adapter.integers(key, 10, 500, flat))
    assert rows.shape == (500,) and rows.min() >= 0 and rows.max() <= 9
    order = adapter.to_numpy(adapter.permutation(key, 10, flat))
    assert sorted(order.tolist()) == list(range(10))

    ones = adapter.asarray(np.ones(8), like=flat)
    combined = adapter.linear_combination((2.0, flat), (-1.0, ones))
    np.testing.assert_allclose(adapter.to_numpy(combined), 2 * adapter.to_numpy(flat) - 1)
    temporary = adapter.asarray(np.full(8, 3.0), like=flat)
    reused = adapter.linear_combination((1.0, flat), (0.5, temporary), reuse=1)
    np.testing.assert_allclose(adapter.to_numpy(reused), adapter.to_numpy(flat) + 1.5)

    def step(key, state, batch, diagnose=False):
        return state * 2 + (1 if diagnose else 0)

    compiled = adapter.compile(step)
    np.testing.assert_allclose(adapter.to_numpy(compiled(key, flat, None, True)),
                               2 * adapter.to_numpy(flat) + 1)
    np.testing.assert_allclose(adapter.to_numpy(compiled(key, flat, None, diagnose=False)),
                               2 * adapter.to_numpy(flat))
    with adapter.isolated_global_rng(0):
        pass
    assert isinstance(adapter.describe(flat), dict) and "dtype" in adapter.describe(flat)
    assert llc.get_backend(adapter.name) is adapter
