"""Compiled programs reused across calls (``llc._engine.programs``).

A cached program may read nothing of the call that built it except its key: a run through
programs built by an earlier call with other numbers (w*, nβ, γ, step size, data values)
must give the numbers a fresh program gives. And reuse must happen: a second call of the
same structure compiles nothing.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

import llc
from llc._engine import programs as _programs

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

_COMPILES: collections.Counter[str] = collections.Counter()


def _count(name: str, duration: float, **_: object) -> None:
    _COMPILES[name] += 1


jax.monitoring.register_event_duration_secs_listener(_count)
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


def _problem(seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = (x @ rng.normal(size=(3, 2)) + rng.normal(size=(256, 2))).astype(np.float32)
    weight = np.linalg.lstsq(x, y, rcond=None)[0].T * scale
    return {"weight": jnp.asarray(weight)}, (jnp.asarray(x), jnp.asarray(y))


def _loss(params, batch):
    x, y = batch
    residual = x @ params["weight"].T - y
    return 0.5 * jnp.mean(jnp.sum(residual**2, axis=1))


def _estimate(params, data, loss=_loss, **settings):
    settings = {"num_chains": 2, "num_draws": 60, "num_burnin": 20, "batch_size": 32,
                "progress": False, "mala_every": 4, **settings}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return llc.estimate(loss, params, data, **settings)


def _compiles_during(call) -> int:
    before = _COMPILES[_BACKEND_COMPILE]
    call()
    return _COMPILES[_BACKEND_COMPILE] - before


SAMPLERS = {"sgld": 1e-4, "rmsprop_sgld": 1e-4, "sghmc": 1e-3, "sgnht": 1e-3, "mala": 1e-4}


def _tensorflow_problem(seed: int = 0, scale: float = 1.0):
    import torch  # noqa: F401  (torch before tensorflow: docs/design.md §6)
    tf = pytest.importorskip("tensorflow")
    params, data = _problem(seed, scale)

    def loss(params, batch):
        x, y = batch
        residual = x @ tf.transpose(params["weight"]) - y
        return 0.5 * tf.reduce_mean(tf.reduce_sum(residual**2, axis=1))

    def convert(value):
        return tf.constant(np.asarray(value))

    return loss, {"weight": convert(params["weight"])}, tuple(convert(a) for a in data)


@pytest.mark.parametrize("chain_method", ["vectorized", "sequential"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("framework", ["jax", "tensorflow"])
def test_a_reused_program_reads_only_its_arguments(framework, sampler, chain_method) -> None:
    """Call A builds the programs; call B (other w*, data values, nβ, γ, step, seed) runs
    through them and must equal B through programs built for B alone."""
    if framework == "tensorflow" and sampler not in ("sgld", "sghmc"):
        pytest.skip("TensorFlow traces slowly: two samplers cover its programs")
    if framework == "jax":
        loss = _loss
        params_a, data_a = _problem(seed=0)
        params_b, data_b = _problem(seed=1, scale=1.01)
    else:
        loss, params_a, data_a = _tensorflow_problem(seed=0)
        _, params_b, data_b = _tensorflow_problem(seed=1, scale=1.01)
    step = SAMPLERS[sampler]
    common = {"sampler": sampler, "chain_method": chain_method, "loss": loss}
    _estimate(params_a, data_a, step_size=step, nbeta=50.0, localization=1.0, seed=0, **common)
    settings_b = dict(step_size=2 * step, nbeta=80.0, localization=3.0, seed=7, **common)
    reused = _estimate(params_b, data_b, **settings_b)
    _programs.program_cache(llc.get_backend(framework)).clear()
    fresh = _estimate(params_b, data_b, **settings_b)
    np.testing.assert_array_equal(reused.llc_trace, fresh.llc_trace)
    np.testing.assert_array_equal(reused.warmup_loss, fresh.warmup_loss)
    np.testing.assert_array_equal(np.asarray(reused.sample_stats["mala_acceptance"]),
                                  np.asarray(fresh.sample_stats["mala_acceptance"]))


@pytest.mark.parametrize("chain_method", ["vectorized", "sequential"])
def test_localization_zero_and_nonzero_do_not_share_a_program(chain_method) -> None:
    params, data = _problem()
    _estimate(params, data, step_size=1e-4, localization=0.0, chain_method=chain_method)
    reused = _estimate(params, data, step_size=1e-4, localization=5.0, seed=3,
                       chain_method=chain_method)
    _programs.program_cache(llc.get_backend("jax")).clear()
    fresh = _estimate(params, data, step_size=1e-4, localization=5.0, seed=3,
                      chain_method=chain_method)
    np.testing.assert_array_equal(reused.llc_trace, fresh.llc_trace)


@pytest.mark.parametrize("chain_method", ["vectorized", "sequential"])
def test_a_second_call_of_the_same_structure_compiles_nothing(chain_method) -> None:
    params, data = _problem()
    other_params, other_data = _problem(seed=2, scale=0.99)
    _estimate(params, data, step_size=1e-4, chain_method=chain_method)
    assert _compiles_during(lambda: _estimate(
        other_params, other_data, step_size=3e-4, nbeta=20.0, localization=2.0, seed=4,
        chain_method=chain_method)) == 0


def test_step_size_auto_compiles_its_step_once() -> None:
    """The adaptation changes the step every 25-step window. Once one ``auto`` call has
    compiled its programs, another with four times as many windows compiles nothing (before
    the programs took their numbers as arguments, every window compiled a new step)."""
    params, data = _problem(seed=3)
    settings = dict(num_draws=40, chain_method="sequential", mala_every=None)
    _estimate(params, data, step_size="auto", num_burnin=100, **settings)
    assert _compiles_during(lambda: _estimate(params, data, step_size="auto", num_burnin=400,
                                              seed=9, **settings)) == 0


def test_program_cache_is_bounded_and_counts_misses() -> None:
    cache = _programs.ProgramCache(size=2)
    built = []

    def build(name):
        return lambda: built.append(name) or name

    assert cache.get("a", build("a")) == "a"
    assert cache.get("b", build("b")) == "b"
    assert cache.get("a", build("a")) == "a"  # hit: "a" is now the most recent
    assert cache.get("c", build("c")) == "c"  # evicts "b"
    assert cache.get("b", build("b")) == "b"
    assert built == ["a", "b", "c", "b"] and cache.misses == 4
    assert cache.get(["unhashable"], build("d")) == "d"  # built, not kept
    assert cache.misses == 5 and len(cache._programs) == 2


def test_split_arguments_names_what_it_cannot_pass() -> None:
    static, dynamic = _programs.split_arguments(
        {"step_size": 1e-4, "bias_correction": True, "beta2": 0.99, "tag": None})
    assert static == (("bias_correction", True), ("tag", None))
    assert dynamic == {"beta2": 0.99, "step_size": 1e-4}
    with pytest.raises(TypeError, match="'callback' is a function"):
        _programs.split_arguments({"callback": lambda: None})
