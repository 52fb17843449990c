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


def test_every_bundled_adapter_builds_on_the_shared_base(backend) -> None:
    """The defaults live once, in ``BackendBase`` (Keras 3's shape: a shared base, a module per
    framework); a subclass that forgets what only it can provide fails when it is built."""
    import pytest

    from llc._backend import BackendBase, StackedRows

    assert isinstance(backend.backend, BackendBase)

    class Incomplete(BackendBase):
        name = "incomplete"

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]

    class Lists(BackendBase):
        name = "lists"

        def stack(self, xs):
            return np.stack(xs)

        def to_numpy(self, x):
            return np.asarray(x)

        def ravel(self, params):  # a widening ravel, as the protocol asks
            return np.concatenate([np.ravel(leaf) for leaf in self.leaves(params)]
                                  ).astype(np.float32), None

    lists = Lists()
    # data take the flat vector's dtype unless the adapter says otherwise
    assert lists.data_like({"w": np.zeros(2, np.float16)}).dtype == np.float32
    assert not lists.reuses_programs and lists.chain_transforms is None
    assert lists.split(lists.key(1), 2) == llc._rng.split(llc._rng.make_key(1), 2)
    table = lists.row_buffer(3, 2)
    assert isinstance(table, StackedRows)
    table.set(0, [np.float64(1.0), np.float64(2.0)])
    table.set(2, [np.float64(5.0)])
    np.testing.assert_array_equal(table.to_numpy(), [[1.0, 2.0], [np.nan, np.nan],
                                                     [5.0, np.nan]])
    assert lists.compile(abs) is abs and lists.leaves({"a": 1, "b": [2, 3]}) == [1, 2, 3]


def test_torch_without_its_private_vmap_hooks_runs_its_chains_sequentially(monkeypatch) -> None:
    """torch's vectorized chains lean on functorch internals (per-chain keys inside ``vmap``),
    fenced in ``_functorch_hooks``; without them the adapter offers no chain transforms and
    ``chain_method="auto"`` runs the same chains one at a time, with the same numbers."""
    import pytest

    torch_backend = pytest.importorskip("llc.backends.torch")
    problem = llc.problems.LinearRegression(3, 2)
    loss_fn, params, data = problem.in_backend("torch", 400, seed=0)
    settings = dict(step_size=1e-4, num_chains=2, num_draws=50, num_burnin=20, batch_size=100,
                    seed=1, progress=False)
    vectorized = llc.estimate(loss_fn, params, data, chain_method="vectorized", **settings)
    monkeypatch.setattr(torch_backend, "_FUNCTORCH", None)
    monkeypatch.setattr(torch_backend.backend, "chain_transforms", None)
    fallback = llc.estimate(loss_fn, params, data, chain_method="auto", **settings)
    assert fallback.attrs["chain_method"] == "sequential"
    np.testing.assert_allclose(fallback.llc_trace, vectorized.llc_trace, rtol=1e-5)
    with pytest.raises(ValueError, match="not available"):
        llc.estimate(loss_fn, params, data, chain_method="vectorized", **settings)


def test_tensorflow_without_its_private_pfor_helpers_draws_the_same_numbers(monkeypatch) -> None:
    """TensorFlow's vectorized chains convert the stateless random ops with pfor's private
    helpers (``_pfor_module``); without them pfor's own while loop converts those ops, and
    the chains draw the same numbers."""
    import pytest

    tf_backend = pytest.importorskip("llc.backends.tensorflow")
    from llc._engine.programs import program_cache

    problem = llc.problems.LinearRegression(3, 2)
    loss_fn, params, data = problem.in_backend("tensorflow", 400, seed=0)
    settings = dict(step_size=1e-4, num_chains=2, num_draws=50, num_burnin=20, batch_size=100,
                    seed=1, progress=False, chain_method="vectorized")
    program_cache(tf_backend.backend).clear()
    private = llc.estimate(loss_fn, params, data, **settings)
    program_cache(tf_backend.backend).clear()  # trace the block again, without the helpers
    consulted = []
    monkeypatch.setattr(tf_backend._vectorized, "_pfor_module",
                        lambda: consulted.append(1))  # None: the fallback
    public = llc.estimate(loss_fn, params, data, **settings)
    program_cache(tf_backend.backend).clear()
    assert consulted  # the block was traced again, on the fallback
    np.testing.assert_array_equal(public.llc_trace, private.llc_trace)
