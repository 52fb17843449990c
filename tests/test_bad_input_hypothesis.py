"""Bad input, systematically (issue #7, item 4): hypothesis feeds ``llc.estimate`` malformed
arguments on the NumPy, PyTorch and TensorFlow backends.

Every malformed call must raise ``TypeError`` or ``ValueError`` whose message names the
offending argument in backticks (``"`step_size`"``, ``"`data[1]`"``, ...): never a hang, an
unrelated exception from deep inside NumPy or torch, an empty message or a silently wrong
number. Every rejected call must also leave the user's params and data (bitwise) and the
global RNG states of NumPy, ``random`` and torch as they were (TensorFlow's global RNG:
tests/test_tensorflow.py).

One ``@given`` per family of malformed input; a valid call (a fixed one and hypothesis-drawn
valid settings) must succeed, so the failures come from the malformed part. The nine bugs
this file found (numpy-integer and out-of-range seeds, huge integers for float settings, an
array `baseline`, a sampler class, NumPy losses and grads of wrong dtypes, grads matched by
position instead of key, non-numeric data, str/bytes/dict data) are fixed; their minimal
examples stay at the end as regression tests.
"""

from __future__ import annotations

import contextlib
import decimal
import fractions
import importlib.util
import random
import signal
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llc

HAS_TORCH = importlib.util.find_spec("torch") is not None
if HAS_TORCH:
    import torch
HAS_TF = importlib.util.find_spec("tensorflow") is not None
if HAS_TF:
    import tensorflow as tf  # after torch (docs/design.md §6)

BACKENDS = [
    "numpy",
    pytest.param("torch", marks=pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")),
    pytest.param("tensorflow",
                 marks=pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")),
]
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")

N = 32  # rows of the dataset
PROBLEM = llc.problems.LinearRegression(3, 2)
_DATA, _PARAMS = PROBLEM.setup(N, seed=0)  # NumPy float64: x (32, 3), y (32, 2), weight (2, 3)
SMALL = {"num_chains": 2, "num_draws": 5, "num_burnin": 2, "progress": False}
HANG_SECONDS = 30  # a malformed call that runs this long counts as a hang

FAMILY = settings(max_examples=100, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])


# ---- the model in each backend ----------------------------------------------------------

def to_backend(backend: str, tree: Any) -> Any:
    """A fresh copy of a NumPy pytree in ``backend``'s framework (float64 stays float64)."""
    if isinstance(tree, dict):
        return {key: to_backend(backend, value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_backend(backend, value) for value in tree)
    if isinstance(tree, np.ndarray):
        if backend == "torch":
            return torch.tensor(tree)
        if backend == "tensorflow":
            return tf.constant(tree)
        return tree.copy()
    return tree


def loss_for(backend: str) -> Callable[..., Any]:
    return PROBLEM.loss_and_grad if backend == "numpy" else PROBLEM.loss


def make_case(backend: str) -> tuple[Callable[..., Any], Any, Any]:
    """``(loss_fn, params, data)``: a valid call of ``backend``, fresh arrays every time."""
    return loss_for(backend), to_backend(backend, _PARAMS), to_backend(backend, _DATA)


# ---- what every rejected call must satisfy ----------------------------------------------

class _Hang(BaseException):
    """Raised by the alarm; a BaseException, so llc's per-chain ``except Exception`` lets it by."""


@contextlib.contextmanager
def no_hang(seconds: float = HANG_SECONDS) -> Iterator[None]:
    if not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise _Hang(f"llc.estimate ran for more than {seconds} s on malformed input (a hang)")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fingerprint(obj: Any) -> Any:
    """A bitwise fingerprint of the arrays in a pytree (other leaves by identity)."""
    if isinstance(obj, dict):
        return ("dict", tuple((key, fingerprint(value)) for key, value in obj.items()))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(fingerprint(value) for value in obj))
    if isinstance(obj, np.ndarray):
        return ("numpy", obj.dtype.str, obj.shape, obj.tobytes(), obj.flags.writeable)
    if HAS_TORCH and isinstance(obj, torch.Tensor):
        raw = obj.detach().cpu().contiguous()
        return ("torch", str(raw.dtype), tuple(raw.shape), raw.numpy().tobytes(),
                obj.requires_grad)
    if HAS_TF and isinstance(obj, (tf.Tensor, tf.Variable)):
        return ("tensorflow", obj.dtype.name, tuple(obj.shape), obj.numpy().tobytes(),
                type(obj).__name__)
    return ("other", type(obj).__name__, id(obj))


def rng_states() -> tuple[Any, ...]:
    numpy_state = np.random.get_state()
    states: tuple[Any, ...] = (numpy_state[0], numpy_state[1].tobytes(), *numpy_state[2:],
                               random.getstate())
    if HAS_TORCH:
        states += (torch.get_rng_state().numpy().tobytes(),)
    return states


@contextlib.contextmanager
def user_state_untouched(params: Any, data: Any) -> Iterator[None]:
    """Params and data (bitwise) and the global RNGs are the same after the block."""
    params_before, data_before, rng_before = fingerprint(params), fingerprint(data), rng_states()
    yield
    assert fingerprint(params) == params_before, "a malformed call modified `params`"
    assert fingerprint(data) == data_before, "a malformed call modified `data`"
    assert rng_states() == rng_before, "a malformed call changed a global RNG state"


def assert_rejected(loss_fn: Any, params: Any, data: Any, names: str | tuple[str, ...],
                    **overrides: Any) -> BaseException:
    """``llc.estimate`` raises TypeError/ValueError naming one of ``names`` in backticks."""
    names = (names,) if isinstance(names, str) else names
    kwargs = {**SMALL, **overrides}
    with user_state_untouched(params, data), no_hang(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((TypeError, ValueError)) as info:
            llc.estimate(loss_fn, params, data, **kwargs)
    message = str(info.value)
    assert message.strip(), f"{type(info.value).__name__} without a message"
    assert any(f"`{name}`" in message for name in names), (
        f"the message does not name {' or '.join(f'`{n}`' for n in names)}: "
        f"{type(info.value).__name__}: {message}"
    )
    return info.value


def run_valid(loss_fn: Any, params: Any, data: Any, **overrides: Any) -> llc.LLCResult:
    with user_state_untouched(params, data), no_hang(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # health findings of a 7-step run
        return llc.estimate(loss_fn, params, data, **{**SMALL, **overrides})


# ---- strategies -------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")

# Values of the wrong kind for any numeric setting (None is added where it is not allowed).
wrong_kind = st.one_of(
    st.text(max_size=4),
    st.binary(max_size=3),
    st.booleans(),
    st.booleans().map(np.bool_),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(allow_nan=True), max_size=2),
    st.just(np.array(1.0)),
    st.just(np.array([2, 3])),
    st.builds(object),
    st.decimals(allow_nan=True),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)

FLOAT_SETTINGS = {  # name: (zero allowed, None allowed)
    "step_size": (False, False),
    "nbeta": (False, True),
    "localization": (True, False),
}


def bad_float(name: str) -> st.SearchStrategy[Any]:
    zero_ok, none_ok = FLOAT_SETTINGS[name]
    # Explicit bounds, no `.filter(lambda v: v < 0)`: hypothesis 6.170 rewrites that filter on
    # floats(max_value=0.0) into bounds that still yield 0.0 and -0.0.
    out_of_range = st.one_of(
        st.floats(max_value=0.0, exclude_max=zero_ok),  # -inf, negatives (and ±0.0 unless allowed)
        st.floats(max_value=0.0, exclude_max=zero_ok, width=32).map(np.float32),
        st.sampled_from([NAN, INF, -INF, np.float64(NAN), np.float32(INF), np.float16(NAN)]),
        # |ints| < 2**1000: float() of a huge int overflows (test_huge_int_float_settings)
        st.integers(min_value=-(2**1000), max_value=-1 if zero_ok else 0),
        st.fractions(max_value=fractions.Fraction(-1, 10**9) if zero_ok else 0),
    )
    return st.one_of(out_of_range, wrong_kind, *([] if none_ok else [st.none()]))


INT_SETTINGS = {  # name: (minimum, None allowed)
    "num_chains": (1, False),
    "num_draws": (1, False),
    "num_burnin": (0, False),
    "thin": (1, False),
    "init_loss_batches": (1, True),
    "mala_every": (1, True),
    "batch_size": (1, True),
    "num_data": (1, True),
}


def bad_int(name: str) -> st.SearchStrategy[Any]:
    minimum, none_ok = INT_SETTINGS[name]
    options = [
        st.integers(max_value=minimum - 1),
        st.integers(min_value=-(2**63), max_value=minimum - 1).map(np.int64),
        st.floats(allow_nan=True, allow_infinity=True),  # 2.0 too: a float is not a count
        st.integers(-3, 300).map(float),
        st.integers(-3, 300).map(np.float64),
        st.integers(1, 3).map(lambda v: fractions.Fraction(v)),
        st.integers(1, 3).map(decimal.Decimal),
        wrong_kind,
    ]
    if not none_ok:
        options.append(st.none())
    if name == "batch_size":
        options.append(st.integers(min_value=N + 1))  # more rows than the data has
    if name == "num_data":
        options.append(st.integers(min_value=1).filter(lambda v: v != N))  # array data has N
    return st.one_of(*options)


def named(names: dict[str, Any], strategy: Callable[[str], st.SearchStrategy[Any]]
          ) -> st.SearchStrategy[tuple[str, Any]]:
    return st.sampled_from(sorted(names)).flatmap(
        lambda name: st.tuples(st.just(name), strategy(name)))


bad_seed = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5).map(float),
    st.integers(-5, 5).map(np.float64),
    st.fractions(),
    wrong_kind,
    st.none(),
)

bad_baseline = st.one_of(
    st.text(max_size=12).filter(lambda v: v not in ("full", "minibatch")),
    st.sampled_from(["Full", "FULL", " full", "minibatch ", "none", "batch", ""]),
    st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(),
    st.lists(st.sampled_from(["full", "minibatch"]), max_size=2),
    # NumPy arrays are left out: test_array_baseline
)

bad_sampler = st.one_of(
    st.text(max_size=8).filter(lambda v: v not in ("sgld", "rmsprop_sgld", "sghmc", "sgnht",
                                                   "mala")),
    st.sampled_from(["SGLD", "hmc", "nuts", "sgld ", ""]),
    st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.builds(object),
    st.lists(st.just("sgld"), max_size=1),
    # the class llc.samplers.SGLD instead of an instance is left out: test_sampler_class
)


# ---- a valid call succeeds --------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_valid_baseline_call_succeeds(backend: str) -> None:
    loss_fn, params, data = make_case(backend)
    result = run_valid(loss_fn, params, data)
    assert np.isfinite(result.llc_mean)
    assert result.llc_trace.shape == (2, 5)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=30, deadline=None, database=None)
@given(
    step_size=st.one_of(st.floats(1e-6, 1e-3), st.floats(1e-6, 1e-3).map(np.float32),
                        st.just(fractions.Fraction(1, 10_000))),
    nbeta=st.one_of(st.none(), st.floats(1.0, 50.0), st.integers(1, 50)),
    localization=st.one_of(st.floats(0.0, 10.0), st.just(0), st.integers(1, 5)),
    num_chains=st.one_of(st.integers(1, 2), st.integers(1, 2).map(np.int64)),
    num_draws=st.integers(1, 5),
    num_burnin=st.integers(0, 2),
    thin=st.integers(1, 2),
    seed=st.integers(0, 2**64 - 1),  # others: test_seed_outside_64_bits
    batch_size=st.one_of(st.none(), st.integers(1, N), st.integers(1, N).map(np.int64)),
    init_loss_batches=st.one_of(st.none(), st.integers(1, 3)),
    mala_every=st.one_of(st.none(), st.integers(1, 5)),
    baseline=st.sampled_from(["full", "minibatch"]),
    pass_num_data=st.booleans(),
    sampler_object=st.booleans(),
)
def test_valid_settings_succeed_and_are_recorded(
    backend: str, step_size: Any, nbeta: Any, localization: Any, num_chains: Any,
    num_draws: int, num_burnin: int, thin: int, seed: int, batch_size: Any,
    init_loss_batches: Any, mala_every: Any, baseline: str, pass_num_data: bool,
    sampler_object: bool,
) -> None:
    """The validators reject nothing valid, and what they accept is what the result records."""
    loss_fn, params, data = make_case(backend)
    sampler = llc.samplers.SGLD(step_size=step_size) if sampler_object else "sgld"
    result = run_valid(
        loss_fn, params, data, step_size=step_size, nbeta=nbeta, localization=localization,
        num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, thin=thin, seed=seed,
        batch_size=batch_size, init_loss_batches=init_loss_batches, mala_every=mala_every,
        baseline=baseline, num_data=N if pass_num_data else None, sampler=sampler,
    )
    assert result.llc_trace.shape == (int(num_chains), num_draws)
    assert np.isfinite(result.init_loss)
    attrs = result.attrs
    assert attrs["sampler_step_size"] == float(step_size)
    assert attrs["nbeta"] == (llc.default_nbeta(N) if nbeta is None else float(nbeta))
    assert attrs["localization"] == float(localization)
    assert attrs["batch_size"] == (min(256, N) if batch_size is None else int(batch_size))
    assert (attrs["num_chains"], attrs["num_draws"], attrs["num_burnin"], attrs["thin"]) == \
        (int(num_chains), num_draws, num_burnin, thin)
    assert attrs["seed"] == seed and attrs["baseline"] == baseline and attrs["num_data"] == N


# ---- settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@FAMILY
@given(case=named(FLOAT_SETTINGS, bad_float))
def test_real_settings_out_of_range_or_of_the_wrong_type(backend: str, case: tuple[str, Any]
                                                         ) -> None:
    name, value = case
    loss_fn, params, data = make_case(backend)
    assert_rejected(loss_fn, params, data, name, **{name: value})
    if name == "step_size" and not _per_coordinate_steps(value):
        # the sampler settings object checks it the same way (a 1-D array of positive steps
        # is valid there: per-coordinate steps, whose length `build` checks)
        with pytest.raises((TypeError, ValueError), match="`step_size`"):
            llc.samplers.SGLD(step_size=value)


def _per_coordinate_steps(value: Any) -> bool:
    if not isinstance(value, (list, tuple, np.ndarray)):
        return False
    try:
        steps = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return steps.ndim == 1 and steps.size > 0 and bool(np.all(np.isfinite(steps) & (steps > 0)))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=200, deadline=None, database=None)
@given(case=named(INT_SETTINGS, bad_int))
def test_integer_settings_out_of_range_or_of_the_wrong_type(backend: str, case: tuple[str, Any]
                                                            ) -> None:
    name, value = case
    loss_fn, params, data = make_case(backend)
    assert_rejected(loss_fn, params, data, name, **{name: value})


@pytest.mark.parametrize("backend", BACKENDS)
@FAMILY
@given(seed=bad_seed)
def test_seed_must_be_an_integer(backend: str, seed: Any) -> None:
    loss_fn, params, data = make_case(backend)
    assert_rejected(loss_fn, params, data, "seed", seed=seed)


@pytest.mark.parametrize("backend", BACKENDS)
@FAMILY
@given(case=st.one_of(st.tuples(st.just("baseline"), bad_baseline),
                      st.tuples(st.just("sampler"), bad_sampler)))
def test_unknown_choices(backend: str, case: tuple[str, Any]) -> None:
    name, value = case
    loss_fn, params, data = make_case(backend)
    assert_rejected(loss_fn, params, data, name, **{name: value})


# ---- data: structure and shapes ---------------------------------------------------------

def _rows(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3)), rng.standard_normal((n, 2))


non_array_item = st.one_of(
    st.lists(st.floats(-1, 1), min_size=1, max_size=3),
    st.floats(allow_nan=True), st.integers(), st.text(max_size=3), st.none(),
    st.dictionaries(st.text(max_size=2), st.floats(), max_size=2),
    st.just(range(N)), st.builds(object),
)


@st.composite
def malformed_data(draw: st.DrawFn, backend: str
                   ) -> tuple[str, Any, dict[str, Any], tuple[str, ...]]:
    """``(kind, data, extra estimate kwargs, names the message may use)``."""
    kind = draw(st.sampled_from([
        "mismatched", "scalar item", "no rows", "bare array", "empty tuple", "non-array item",
        "generator", "iterator", "iterable without num_data", "iterable with bad num_data",
        "iterable with batch_size", "empty iterable", "not iterable",
    ]))
    native = draw(st.booleans())  # the params' framework, or NumPy arrays (both are allowed)

    def arrays(*items: np.ndarray) -> tuple[Any, ...]:
        return tuple(to_backend(backend, item) if native else item for item in items)

    x, y = _rows(N)
    if kind == "mismatched":
        sizes = draw(st.lists(st.integers(1, 64), min_size=2, max_size=3).filter(
            lambda sizes: len(set(sizes)) > 1))
        items = [_rows(size)[0] for size in sizes]
        return kind, arrays(*items), {}, ("data",)
    if kind == "scalar item":
        index = draw(st.integers(0, 1))
        items = [x, y]
        items[index] = np.asarray(draw(st.floats(-1, 1)))
        return kind, arrays(*items), {}, (f"data[{index}]",)
    if kind == "no rows":
        width = draw(st.integers(1, 3))
        return kind, arrays(*(np.zeros((0, 3)),) * width), {}, ("data",)
    if kind == "bare array":
        return kind, arrays(draw(st.sampled_from([x, y, np.concatenate([x, y], 1)])))[0], {}, \
            ("data",)
    if kind == "empty tuple":
        return kind, (), {}, ("data",)
    if kind == "non-array item":
        index = draw(st.integers(0, 2))
        items: list[Any] = list(arrays(x, y, y[:, :1]))
        items[index] = draw(non_array_item)
        return kind, tuple(items), {}, (f"data[{index}]",)
    batches = [arrays(x[:16], y[:16]), arrays(x[16:], y[16:])]
    if kind == "generator":
        return kind, (batch for batch in batches), {"num_data": N}, ("data",)
    if kind == "iterator":
        return kind, iter(batches), {"num_data": N}, ("data",)
    if kind == "iterable without num_data":
        return kind, batches, {}, ("num_data",)
    if kind == "iterable with bad num_data":
        value = draw(bad_int("num_data").filter(  # any integer n >= 1 is valid for an iterable
            lambda v: isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
            or v < 1))
        return kind, batches, {"num_data": value}, ("num_data",)
    if kind == "iterable with batch_size":
        return kind, batches, {"num_data": N, "batch_size": draw(st.integers(1, N))}, \
            ("batch_size",)
    if kind == "empty iterable":
        return kind, [], {"num_data": N}, ("data",)
    value = draw(st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.builds(object)))
    return kind, value, {}, ("data",)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data())
def test_malformed_data(backend: str, data: st.DataObject) -> None:
    kind, bad, extra, names = data.draw(malformed_data(backend), label="malformed data")
    loss_fn, params, _ = make_case(backend)
    assert_rejected(loss_fn, params, bad, names, **extra)
    if kind in ("generator", "iterator"):
        assert next(bad, None) is not None, "llc consumed the user's one-shot iterator"


@pytest.mark.parametrize("backend", BACKENDS)
@FAMILY
@given(
    index=st.integers(0, 1),
    row=st.integers(0, N - 1),
    column=st.integers(0, 1),
    value=st.sampled_from([NAN, INF, -INF]),
    dtype=st.sampled_from([np.float64, np.float32, np.float16]),
)
def test_nan_or_inf_in_numpy_data(backend: str, index: int, row: int, column: int, value: float,
                                  dtype: Any) -> None:
    """NumPy data (also with torch params) is checked before it is converted."""
    loss_fn, params, _ = make_case(backend)
    items = [array.astype(dtype) for array in _DATA]
    items[index][row, column] = value
    assert_rejected(loss_fn, params, tuple(items), f"data[{index}]")


@pytest.mark.parametrize("backend", BACKENDS)
@FAMILY
@given(
    index=st.integers(0, 1),
    row=st.integers(0, N - 1),
    value=st.sampled_from([NAN, INF, -INF]),
    iterable=st.booleans(),
)
def test_nan_or_inf_in_framework_data_or_batches(backend: str, index: int, row: int,
                                                 value: float, iterable: bool) -> None:
    """Not checked up front (torch tensors, iterables): L_n(w*) is then non-finite, and the
    message names `params` and says to check the data."""
    loss_fn, params, _ = make_case(backend)
    items = [np.array(array) for array in _DATA]
    items[index][row, 0] = value
    bad = to_backend(backend, tuple(items))
    if iterable:
        assert_rejected(loss_fn, params, [bad], ("data", f"data[{index}]", "params"), num_data=N)
    else:
        assert_rejected(loss_fn, params, bad, ("data", f"data[{index}]", "params"))


# ---- params -----------------------------------------------------------------------------

NUMPY_BAD_DTYPES = ["int8", "int32", "int64", "uint8", "bool", "complex64", "complex128",
                    "object", "<U4", "S2", "datetime64[s]"]
TORCH_BAD_DTYPES = ["int8", "int32", "int64", "uint8", "bool", "complex64", "complex128"]
TF_BAD_DTYPES = TORCH_BAD_DTYPES + ["uint16", "int16"]


@pytest.mark.parametrize("backend", BACKENDS)
@FAMILY
@given(data=st.data(), extra_leaf=st.booleans())
def test_params_of_a_non_floating_dtype(backend: str, data: st.DataObject, extra_leaf: bool
                                        ) -> None:
    loss_fn, params, dataset = make_case(backend)
    weight = np.array(_PARAMS["weight"])
    if backend == "torch":
        dtype = data.draw(st.sampled_from(TORCH_BAD_DTYPES), label="dtype")
        bad = torch.tensor((weight * 3).astype(np.int64)).to(getattr(torch, dtype))
    elif backend == "tensorflow":
        dtype = data.draw(st.sampled_from(TF_BAD_DTYPES), label="dtype")
        bad = tf.cast(tf.constant((weight * 3).astype(np.int64)), dtype)
    else:
        dtype = data.draw(st.sampled_from(NUMPY_BAD_DTYPES), label="dtype")
        bad = (weight * 3).astype(np.int64).astype(dtype)
    bad_params = {**params, "extra": bad} if extra_leaf else {"weight": bad}
    assert_rejected(loss_fn, bad_params, dataset, "params")


@pytest.mark.parametrize("backend", BACKENDS)
@FAMILY
@given(
    positions=st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True),
    value=st.sampled_from([NAN, INF, -INF]),
    dtype=st.sampled_from(["float64", "float32"]),
)
def test_nan_or_inf_in_params(backend: str, positions: list[int], value: float, dtype: str
                              ) -> None:
    """Non-finite w* makes L_n(w*) non-finite: a ValueError about the loss at w* names `params`."""
    loss_fn, _, data = make_case(backend)
    weight = np.array(_PARAMS["weight"], dtype=dtype)
    weight.reshape(-1)[positions] = value
    error = assert_rejected(loss_fn, to_backend(backend, {"weight": weight}), data, "params")
    assert isinstance(error, ValueError)


@st.composite
def malformed_params(draw: st.DrawFn, backend: str) -> Any:
    weight = to_backend(backend, _PARAMS["weight"])
    other = "numpy" if backend != "numpy" else "torch"
    kinds = ["empty dict", "empty list", "empty tuple", "nested empty", "None", "float",
             "int", "str", "floats", "nested floats", "list leaf", "None leaf", "no elements"]
    if HAS_TORCH or backend != "numpy":
        kinds.append("mixed frameworks")
    kind = draw(st.sampled_from(kinds))
    if kind == "empty dict":
        return {}
    if kind == "empty list":
        return []
    if kind == "empty tuple":
        return ()
    if kind == "nested empty":
        return {"weight": {}, "bias": []}
    if kind == "None":
        return None
    if kind == "float":
        return draw(st.floats(allow_nan=True))
    if kind == "int":
        return draw(st.integers())
    if kind == "str":
        return draw(st.text(max_size=4))
    if kind == "floats":
        return draw(st.lists(st.floats(-1, 1), min_size=1, max_size=6))
    if kind == "nested floats":
        return {"weight": np.array(_PARAMS["weight"]).tolist()}
    if kind == "list leaf":
        return {"weight": weight, "bias": draw(st.lists(st.floats(-1, 1), min_size=1, max_size=2))}
    if kind == "None leaf":
        return {"weight": weight, "bias": None} if draw(st.booleans()) else \
            {"bias": None, "weight": weight}
    if kind == "no elements":
        shape = draw(st.sampled_from([(0,), (2, 0), (0, 3)]))
        return {"weight": to_backend(backend, np.zeros(shape))}
    foreign = to_backend(other, np.zeros(2))
    return {"weight": weight, "bias": foreign} if draw(st.booleans()) else \
        {"bias": foreign, "weight": weight}


@pytest.mark.parametrize("backend", BACKENDS)
@FAMILY
@given(data=st.data())
def test_malformed_params(backend: str, data: st.DataObject) -> None:
    loss_fn, _, dataset = make_case(backend)
    bad = data.draw(malformed_params(backend), label="params")
    assert_rejected(loss_fn, bad, dataset, "params")


# ---- loss_fn ----------------------------------------------------------------------------

def _np_good(params: Any, batch: Any) -> tuple[Any, Any]:
    return PROBLEM.loss_and_grad(params, batch)


@st.composite
def malformed_loss_fn(draw: st.DrawFn, backend: str) -> Any:
    kind = draw(st.sampled_from(["not callable", "framework", "framework"]))
    if kind == "not callable":
        return draw(st.one_of(st.none(), st.integers(), st.text(max_size=4),
                              st.just({"weight": 1.0}), st.just([PROBLEM.loss])))
    length = draw(st.integers(2, 5))
    if backend == "numpy":
        kind = draw(st.sampled_from([
            "float", "None", "loss only", "list", "triple", "single", "vector loss",
            "matrix loss", "grads transposed", "grads of another shape", "grads missing leaf",
            "grads extra leaf", "grads None", "grads flat",
        ]))
        returns: dict[str, Callable[[Any, Any], Any]] = {
            "float": lambda p, b: 0.5,
            "None": lambda p, b: None,
            "loss only": lambda p, b: _np_good(p, b)[0],
            "list": lambda p, b: list(_np_good(p, b)),
            "triple": lambda p, b: (*_np_good(p, b), None),
            "single": lambda p, b: (_np_good(p, b)[0],),
            "vector loss": lambda p, b: (np.full(length, _np_good(p, b)[0]), _np_good(p, b)[1]),
            "matrix loss": lambda p, b: (np.ones((length, 2)), _np_good(p, b)[1]),
            "grads transposed": lambda p, b: (_np_good(p, b)[0],
                                              {"weight": _np_good(p, b)[1]["weight"].T}),
            "grads of another shape": lambda p, b: (_np_good(p, b)[0],
                                                    {"weight": np.zeros((length, 7))}),
            "grads missing leaf": lambda p, b: (_np_good(p, b)[0], {}),
            "grads extra leaf": lambda p, b: (_np_good(p, b)[0],
                                              {**_np_good(p, b)[1], "bias": np.zeros(2)}),
            "grads None": lambda p, b: (_np_good(p, b)[0], None),
            "grads flat": lambda p, b: (_np_good(p, b)[0], _np_good(p, b)[1]["weight"].ravel()),
        }
        return returns[kind]
    kind = draw(st.sampled_from([
        "float", "numpy scalar", "None", "tuple", "vector", "detached", "int tensor",
        "bool tensor", "complex", "constant", "closed over",
    ]))
    if backend == "tensorflow":
        variable = tf.Variable(tf.zeros((2, 3), tf.float64))
        return {
            "float": lambda p, b: 0.5,
            "numpy scalar": lambda p, b: np.float64(0.5),
            "None": lambda p, b: None,
            "tuple": lambda p, b: (PROBLEM.loss(p, b), {"weight": p["weight"]}),
            "vector": lambda p, b: PROBLEM.loss(p, b) * tf.ones(length, tf.float64),
            "detached": lambda p, b: tf.stop_gradient(PROBLEM.loss(p, b)),
            "int tensor": lambda p, b: tf.constant(1),
            "bool tensor": lambda p, b: tf.constant(True),
            "complex": lambda p, b: tf.cast(PROBLEM.loss(p, b), tf.complex128),
            "constant": lambda p, b: tf.constant(0.5, tf.float64),
            "closed over": lambda p, b: PROBLEM.loss({"weight": variable}, b),
        }[kind]
    closed = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    returns = {
        "float": lambda p, b: 0.5,
        "numpy scalar": lambda p, b: np.float64(0.5),
        "None": lambda p, b: None,
        "tuple": lambda p, b: (PROBLEM.loss(p, b), {"weight": p["weight"]}),
        "vector": lambda p, b: PROBLEM.loss(p, b) * torch.ones(length, dtype=torch.float64),
        "detached": lambda p, b: PROBLEM.loss(p, b).detach(),
        "int tensor": lambda p, b: torch.tensor(1),
        "bool tensor": lambda p, b: torch.tensor(True),
        "complex": lambda p, b: PROBLEM.loss(p, b) * (1 + 1j),
        "constant": lambda p, b: torch.tensor(0.5, dtype=torch.float64, requires_grad=True),
        "closed over": lambda p, b: PROBLEM.loss({"weight": closed}, b),
    }
    return returns[kind]


@pytest.mark.parametrize("backend", BACKENDS)
@FAMILY
@given(data=st.data())
def test_malformed_loss_fn(backend: str, data: st.DataObject) -> None:
    _, params, dataset = make_case(backend)
    loss_fn = data.draw(malformed_loss_fn(backend), label="loss_fn")
    assert_rejected(loss_fn, params, dataset, "loss_fn")


# ---- regressions: bugs this file found, fixed (minimal examples) ---------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [np.int64(3), np.int32(3), np.uint8(3)], ids=repr)
def test_numpy_integer_seed_works_like_the_int(backend: str, seed: Any) -> None:
    loss_fn, params, data = make_case(backend)
    expected = run_valid(loss_fn, params, data, seed=int(seed))
    result = run_valid(loss_fn, params, data, seed=seed)
    np.testing.assert_array_equal(result.llc_trace, expected.llc_trace)





@pytest.mark.parametrize("backend", [
    "numpy", pytest.param("torch", marks=[needs_torch]),
    pytest.param("tensorflow", marks=[needs_tf])])
@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30], ids=["2**64", "-2**63-1", "1e30"])
def test_seed_outside_64_bits(backend: str, seed: int) -> None:
    """Seeds must lie in [0, 2**64): others are rejected naming `seed`."""
    loss_fn, params, data = make_case(backend)
    assert_rejected(loss_fn, params, data, "seed", seed=seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(FLOAT_SETTINGS))
@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["1e400", "-1e400"])
def test_huge_int_float_settings(backend: str, name: str, value: int) -> None:
    loss_fn, params, data = make_case(backend)
    assert_rejected(loss_fn, params, data, name, **{name: value})


@pytest.mark.parametrize("backend", BACKENDS)
def test_array_baseline(backend: str) -> None:
    loss_fn, params, data = make_case(backend)
    assert_rejected(loss_fn, params, data, "baseline", baseline=np.array(["full", "minibatch"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampler_class(backend: str) -> None:
    loss_fn, params, data = make_case(backend)
    assert_rejected(loss_fn, params, data, "sampler", sampler=llc.samplers.SGLD)




@pytest.mark.parametrize("kind", ["complex loss", "str loss", "None loss", "bool loss",
                                  "complex grads", "str grads"])
def test_numpy_loss_fn_of_a_wrong_dtype(kind: str) -> None:
    def loss_fn(params: Any, batch: Any) -> tuple[Any, Any]:
        loss, grads = PROBLEM.loss_and_grad(params, batch)
        weight = grads["weight"]
        return {
            "complex loss": (loss + 0.5j, grads),
            "str loss": ("0.5", grads),
            "None loss": (None, grads),
            "bool loss": (np.True_, grads),
            "complex grads": (loss, {"weight": weight + 1j * weight}),
            "str grads": (loss, {"weight": np.full(weight.shape, "x")}),
        }[kind]

    _, params, data = make_case("numpy")
    assert_rejected(loss_fn, params, data, "loss_fn")




def _two_leaf_problem() -> tuple[dict[str, np.ndarray], Callable[..., Any]]:
    weight = np.array(_PARAMS["weight"])

    def loss_and_grad(params: Any, batch: Any) -> tuple[Any, dict[str, Any]]:
        loss, grads = PROBLEM.loss_and_grad(
            {"weight": np.stack([params["row0"], params["row1"]])}, batch)
        return loss, {"row0": grads["weight"][0], "row1": grads["weight"][1]}

    return {"row0": weight[0] + 1.0, "row1": weight[1]}, loss_and_grad


def test_numpy_grads_with_other_keys() -> None:
    params, loss_and_grad = _two_leaf_problem()

    def renamed(p: Any, b: Any) -> tuple[Any, Any]:
        loss, grads = loss_and_grad(p, b)
        return loss, {"a": grads["row0"], "b": grads["row1"]}

    assert_rejected(renamed, params, to_backend("numpy", _DATA), "loss_fn")


def test_numpy_grads_in_another_key_order_give_the_same_result() -> None:
    params, loss_and_grad = _two_leaf_problem()

    def reordered(p: Any, b: Any) -> tuple[Any, Any]:
        loss, grads = loss_and_grad(p, b)
        return loss, {"row1": grads["row1"], "row0": grads["row0"]}

    data = to_backend("numpy", _DATA)
    expected = run_valid(loss_and_grad, params, data, step_size=1e-3)
    result = run_valid(reordered, params, data, step_size=1e-3)
    np.testing.assert_array_equal(result.llc_trace, expected.llc_trace)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["object", "<U8", "S8"])
def test_data_of_a_non_numeric_dtype(backend: str, dtype: str) -> None:
    loss_fn, params, _ = make_case(backend)
    x, y = (np.array(array) for array in _DATA)
    assert_rejected(loss_fn, params, (x, y.astype(dtype)), "data[1]")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["str", "bytes", "dict"])
def test_data_that_is_a_string_or_a_mapping(backend: str, kind: str) -> None:
    loss_fn, params, data = make_case(backend)
    bad = {"str": "xy", "bytes": b"xy", "dict": {"x": data[0], "y": data[1]}}[kind]
    assert_rejected(loss_fn, params, bad, "data", num_data=N)
