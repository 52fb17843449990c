"""TensorFlow-specific guarantees: variables untouched, global RNG untouched, bounded tracing,
the one-line path from a Keras 3 model, the namespace, keys and bad input."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import llc

if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401  (import torch before tensorflow: docs/design.md §6)

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from _models import linear_data, linear_loss
from llc.backends.tensorflow import backend, from_keras, namespace

from llc._engine.programs import program_cache
from llc.posterior import LocalizedPosterior
from llc.samplers import SGLD

SHORT = {"num_chains": 2, "num_draws": 40, "num_burnin": 10, "step_size": 1e-4,
         "progress": False}
HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


def _linear(dtype: tf.DType = tf.float64) -> tuple[dict, tuple]:
    (x, y), params = linear_data(256)
    return ({"weight": tf.constant(params["weight"], dtype=dtype)},
            (tf.constant(x, dtype=dtype), tf.constant(y, dtype=dtype)))


def _keras_model(seed: int = 0, batch_norm: bool = False) -> keras.Model:
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((4,)), keras.layers.Dense(8, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    return keras.Sequential(layers + [keras.layers.Dense(3)])


def _classification_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((256, 4)).astype("float32"), rng.integers(0, 3, 256)


# ---- variables and global state --------------------------------------------------------

def test_variables_are_read_once_and_never_assigned() -> None:
    params, data = _linear()
    variables = {"weight": tf.Variable(params["weight"])}
    before = variables["weight"].numpy().copy()
    center, _ = backend.ravel(variables)
    variables["weight"].assign_add(tf.ones_like(variables["weight"]))  # after the copy
    np.testing.assert_array_equal(center.numpy(), before.ravel())  # w* is a snapshot
    variables["weight"].assign(before)
    result = llc.estimate(linear_loss, variables, data, **SHORT)
    np.testing.assert_array_equal(variables["weight"].numpy(), before)
    assert np.isfinite(result.llc_mean) and result.attrs["backend"] == "tensorflow"


def test_global_rng_is_untouched() -> None:
    params, data = _linear()
    tf.random.set_seed(7)
    first = tf.random.uniform([3]).numpy()
    expected_next = tf.random.uniform([3]).numpy()
    generator = tf.random.get_global_generator()
    generator.reset_from_seed(11)
    expected_generated = generator.normal([2]).numpy()
    generator.reset_from_seed(11)

    tf.random.set_seed(7)
    np.testing.assert_array_equal(tf.random.uniform([3]).numpy(), first)
    llc.estimate(linear_loss, params, data, **SHORT)
    np.testing.assert_array_equal(tf.random.uniform([3]).numpy(), expected_next)
    assert tf.random.get_global_generator() is generator
    np.testing.assert_array_equal(generator.normal([2]).numpy(), expected_generated)


def test_same_seed_same_result_for_any_global_seed() -> None:
    params, data = _linear()
    tf.random.set_seed(1)
    first = llc.estimate(linear_loss, params, data, seed=3, **SHORT)
    tf.random.set_seed(2)
    second = llc.estimate(linear_loss, params, data, seed=3, **SHORT)
    np.testing.assert_array_equal(first.llc_trace, second.llc_trace)


# ---- compilation -------------------------------------------------------------------------

def test_tracing_count_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """One trace per value of the static `diagnose` and per batch shape, not per step."""
    program_cache(backend).clear()  # programs kept from other tests would not be compiled
    compiled, gradients = [], []
    compile_step, value_and_grad = backend.compile, backend.value_and_grad
    monkeypatch.setattr(backend, "compile",
                        lambda step: compiled.append(compile_step(step)) or compiled[-1])
    monkeypatch.setattr(backend, "value_and_grad",
                        lambda *a: gradients.append(value_and_grad(*a)) or gradients[-1])
    params, data = _linear()
    llc.estimate(linear_loss, params, data, batch_size=64, num_chains=3, num_draws=300,
                 num_burnin=50, mala_every=5, step_size=1e-4, progress=False,
                 chain_method="sequential")  # the vectorized blocks trace the step inside
    assert compiled[0].experimental_get_tracing_count() == 2  # diagnose False and True
    # loss and gradient: one shape, as L_n(w*) is evaluated in batches of the minibatch's 64 rows
    assert gradients[0].experimental_get_tracing_count() == 1


def test_vectorized_blocks_trace_at_most_twice_and_batch_every_op(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A block of all chains is traced once, and once more (with an unknown number of steps)
    for the first block of another length; never per block. pfor batches every op: the traced
    program holds one while loop (the scan over the steps) and none of the loops over the
    chains that pfor falls back to for an op it cannot batch (stateless random ops included)."""
    program_cache(backend).clear()
    transforms = type(backend.chain_transforms)
    jit = transforms.jit
    calls = []

    def recording(self, fn, donate_argnums=()):
        compiled = jit(self, fn, donate_argnums)

        def run(*args):
            calls.append((compiled, args))
            return compiled(*args)

        return run

    monkeypatch.setattr(transforms, "jit", recording)
    params, data = _linear()
    result = llc.estimate(linear_loss, params, data, batch_size=64, num_chains=3,
                          num_draws=500, num_burnin=50, mala_every=5, baseline="minibatch",
                          step_size=1e-4, progress=False)  # blocks of 200, 200 and 150 steps
    assert result.attrs["chain_method"] == "vectorized"
    orders = [call for call in calls if len(call[1]) == 3]  # the first epoch's orders
    blocks = [call for call in calls if len(call[1]) == 8]
    assert len(orders) == 1 and len(blocks) == 3
    assert orders[0][0].experimental_get_tracing_count() == 1
    assert blocks[0][0].experimental_get_tracing_count() == 2
    program = blocks[-1][0].get_concrete_function(*blocks[-1][1]).graph.as_graph_def()
    nodes = list(program.node) + [node for function in program.library.function
                                  for node in function.node_def]
    assert sum(node.op in ("While", "StatelessWhile") for node in nodes) == 1


def test_compiled_step_equals_the_eager_step() -> None:
    params, data = _linear()
    center, unravel = backend.ravel(params)
    posterior = LocalizedPosterior(backend.value_and_grad(linear_loss, unravel), center,
                                   50.0, 1.0, backend)
    algorithm = SGLD(step_size=1e-3).build(posterior)
    step = backend.compile(algorithm.step)
    eager_state = compiled_state = algorithm.init(center)
    for index in range(20):
        key = backend.fold_in(backend.key(5), index)
        eager_state, _ = algorithm.step(key, eager_state, data, index % 2 == 0)
        compiled_state, info = step(key, compiled_state, data, index % 2 == 0)
        np.testing.assert_allclose(compiled_state.position.numpy(),
                                   eager_state.position.numpy(), rtol=1e-12)
        assert (info.mala_acceptance is None) == (index % 2 == 1)
    assert step.experimental_get_tracing_count() == 2


def test_a_short_last_batch_retraces_once() -> None:
    params, (x, y) = _linear()
    batches = [(x[:100], y[:100]), (x[100:200], y[100:200]), (x[200:], y[200:])]  # 100, 100, 56
    program_cache(backend).clear()
    compiled = []
    original = backend.compile

    def recording(step):
        compiled.append(original(step))
        return compiled[-1]

    backend.compile = recording
    try:
        llc.estimate(linear_loss, params, batches, num_data=256, mala_every=None, **SHORT)
    finally:
        del backend.compile
    assert compiled[0].experimental_get_tracing_count() == 2  # batch sizes 100 and 56


# ---- params, data, devices ---------------------------------------------------------------

def test_lists_tuples_and_mixed_precision() -> None:
    x = tf.constant(np.random.default_rng(0).standard_normal((64, 3)), tf.float64)
    y = tf.reduce_sum(x, axis=1)
    params = [tf.zeros(3, tf.float32), (tf.Variable(tf.zeros((), tf.float16)),)]
    seen = set()

    def loss_fn(p, batch):
        seen.update({p[0].dtype.name, p[1][0].dtype.name})
        features, target = batch
        prediction = namespace.matmul(tf.cast(features, tf.float32), p[0]) + tf.cast(p[1][0],
                                                                                    tf.float32)
        return 0.5 * tf.reduce_mean((prediction - tf.cast(target, tf.float32)) ** 2)

    result = llc.estimate(loss_fn, params, (x, y), **SHORT)
    assert result.attrs["dtype"] == "float32"  # float16 promoted in the flat state
    assert seen == {"float32", "float16"}  # loss_fn sees the params' own dtypes
    assert result.attrs["param_shapes"] == "[[3], []]"
    assert np.isfinite(result.llc_mean)


def test_numpy_and_float64_data_take_the_params_dtype() -> None:
    params, (x, y) = _linear(tf.float32)
    seen = set()

    def loss_fn(p, batch):
        seen.update(item.dtype.name for item in batch)
        return linear_loss(p, batch)

    result = llc.estimate(loss_fn, params, (x.numpy().astype(np.float64), tf.cast(y, tf.float64)),
                          **SHORT)
    assert seen == {"float32"} and result.attrs == result.attrs | {"device": "cpu",
                                                                   "dtype": "float32"}


def test_tf_data_dataset_as_batches() -> None:
    """A shuffling dataset takes its seed when it is built (llc sets no TF global seed): a
    freshly built one with ``seed=`` gives the same run again."""
    params, data = _linear()

    def dataset():
        return tf.data.Dataset.from_tensor_slices(data).shuffle(256, seed=4).batch(64)

    first = llc.estimate(linear_loss, params, dataset(), num_data=256, **SHORT)
    second = llc.estimate(linear_loss, params, dataset(), num_data=256, **SHORT)
    np.testing.assert_array_equal(first.llc_trace, second.llc_trace)
    assert first.init_loss == pytest.approx(float(linear_loss(params, data)), rel=1e-12)


@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow")
def test_gpu_params_keep_everything_on_the_device() -> None:
    params, data = _linear(tf.float32)
    with tf.device("/GPU:0"):
        params = {"weight": tf.identity(params["weight"])}
    center, _ = backend.ravel(params)
    like = backend.asarray(data[0].numpy(), like=center)
    key = backend.key(0)
    for tensor in (center, like, backend.normal(key, center),
                   backend.permutation(key, 10, center), backend.take(like, tf.constant([1, 2]))):
        assert "GPU" in tensor.device, tensor.device
    assert backend.describe(center) == {"device": "cuda:0", "dtype": "float32"}
    result = llc.estimate(linear_loss, params, (data[0].numpy(), data[1].numpy()), **SHORT)
    assert result.attrs["device"] == "cuda:0" and np.isfinite(result.llc_mean)


# ---- keys and namespace --------------------------------------------------------------------

def test_keys_are_int64_pairs_and_any_64_bit_seed_works() -> None:
    keys = [backend.key(seed) for seed in (0, 1, 2**63, 2**64 - 1)]
    assert all(k.dtype == tf.int64 and k.shape == (2,) for k in keys)
    assert len({tuple(k.numpy()) for k in keys}) == 4
    folded = backend.fold_in(keys[0], 2**64 - 1)
    assert folded.dtype == tf.int64
    assert backend.fold_in(keys[0], 3).dtype == tf.int64  # no int32 key: no retracing
    first, second = backend.split(keys[0], 2)
    assert not np.array_equal(first.numpy(), second.numpy())
    like = tf.zeros(4, tf.float64)
    np.testing.assert_array_equal(backend.normal(first, like), backend.normal(first, like))
    assert sorted(backend.permutation(first, 50, like).numpy().tolist()) == list(range(50))
    params, data = _linear()
    result = llc.estimate(linear_loss, params, data, seed=2**64 - 1, **SHORT)
    assert result.attrs["seed"] == 2**64 - 1


def test_array_namespace_of_a_tensor_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    a, b, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    xp = llc.array_namespace(tf.constant(a))
    assert xp is namespace
    ta, tb, tv = tf.constant(a), tf.constant(b), tf.constant(v)
    checks = [
        (xp.matmul(ta, tb), a @ b), (xp.matmul(tv, tb), v @ b), (xp.matmul(ta, tv), a @ v),
        (xp.matmul(tv, tv), v @ v), (xp.matrix_transpose(ta), np.swapaxes(a, -1, -2)),
        (xp.permute_dims(ta, (2, 0, 1)), np.transpose(a, (2, 0, 1))),
        (xp.sum(ta, axis=(0, 2)), a.sum((0, 2))), (xp.mean(ta, axis=1, keepdims=True),
                                                   a.mean(1, keepdims=True)),
        (xp.linalg.vector_norm(ta), np.linalg.norm(a.ravel())),
        (xp.linalg.vector_norm(ta, axis=-1, ord=1), np.linalg.norm(a, 1, axis=-1)),
        (xp.linalg.vector_norm(tv, ord=np.inf), np.abs(v).max()),
        (xp.linalg.vector_norm(tv, ord=3), np.sum(np.abs(v) ** 3) ** (1 / 3)),
        (xp.clip(tv, max=0.0), np.clip(v, None, 0.0)), (xp.clip(tv, min=-0.5, max=0.5),
                                                        np.clip(v, -0.5, 0.5)),
        (xp.where(tv > 0, tv, 0.0), np.where(v > 0, v, 0.0)),
        (xp.maximum(tv, 0.1), np.maximum(v, 0.1)), (xp.exp(tv), np.exp(v)),
        (xp.sqrt(xp.abs(tv)), np.sqrt(np.abs(v))),
        (xp.concat([ta, ta], axis=1), np.concatenate([a, a], 1)),
        (xp.stack([tv, tv], axis=-1), np.stack([v, v], -1)),
        (xp.expand_dims(tv, axis=-1), v[:, None]), (xp.reshape(ta, (6, 4)), a.reshape(6, 4)),
        (xp.zeros_like(tv), np.zeros(4)), (xp.arange(3), np.arange(3)),
    ]
    for got, want in checks:
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_every_problem_loss_runs_in_tensorflow() -> None:
    """The built-in problems' losses use only what the namespace offers."""
    from llc.problems import (
        DeepLinearNetwork,
        LinearRegression,
        Monomial,
        RadialPotential,
        ReducedRankRegression,
        SumOfPotentials,
    )

    problems = [LinearRegression(3, 2), ReducedRankRegression(4, 2, 3, rank=1),
                DeepLinearNetwork((3, 4, 2), rank=1), Monomial((1, 2)), RadialPotential(3, 2),
                SumOfPotentials(Monomial((1,)), Monomial((2,)))]
    for problem in problems:
        loss_fn, params, data = problem.in_backend("tensorflow", 32)
        numpy_data, numpy_params = problem.setup(32)
        expected, expected_grads = problem.loss_and_grad(
            {k: v + 0.1 for k, v in numpy_params.items()}, numpy_data)
        shifted = {k: v + 0.1 for k, v in params.items()}
        center, unravel = backend.ravel(shifted)
        loss, grad = backend.value_and_grad(loss_fn, unravel)(center, data)
        assert float(loss) == pytest.approx(float(expected), rel=1e-10), problem
        np.testing.assert_allclose(
            grad.numpy(), np.concatenate([np.ravel(g) for g in expected_grads.values()]),
            rtol=1e-9, atol=1e-12)
        tf_loss, tf_grads = problem.loss_and_grad(shifted, data)  # the analytic path too
        assert float(tf_loss) == pytest.approx(float(expected), rel=1e-10), problem
        np.testing.assert_allclose(
            np.concatenate([np.ravel(g) for g in tf_grads.values()]),
            np.concatenate([np.ravel(g) for g in expected_grads.values()]), rtol=1e-9, atol=1e-12)


# ---- Keras ---------------------------------------------------------------------------------

def test_from_keras_equals_a_hand_written_loss() -> None:
    model = _keras_model()
    x, y = _classification_data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss_fn, params = from_keras(model, loss)
    assert list(params) == [variable.path for variable in model.trainable_variables]
    for value, variable in zip(params.values(), model.trainable_variables):
        np.testing.assert_array_equal(value.numpy(), variable.numpy())
        assert not isinstance(value, tf.Variable)  # a copy, not the model's variable

    def by_hand(p, batch):
        features, labels = batch
        kernel, bias, kernel_out, bias_out = p.values()  # the order of trainable_variables
        hidden = tf.tanh(features @ kernel + bias)
        logits = hidden @ kernel_out + bias_out
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    x_t, y_t = tf.constant(x), tf.constant(y)
    assert float(loss_fn(params, (x_t, y_t))) == pytest.approx(float(loss(y_t, model(x_t))),
                                                               rel=1e-6)
    center, unravel = backend.ravel(params)
    keras_loss, keras_grad = backend.value_and_grad(loss_fn, unravel)(center, (x_t, y_t))
    hand_loss, hand_grad = backend.value_and_grad(by_hand, unravel)(center, (x_t, y_t))
    assert float(keras_loss) == pytest.approx(float(hand_loss), rel=1e-6)
    np.testing.assert_allclose(keras_grad.numpy(), hand_grad.numpy(), rtol=1e-5, atol=1e-7)
    first = llc.estimate(loss_fn, params, (x, y), seed=1, **SHORT)
    second = llc.estimate(by_hand, params, (x, y), seed=1, **SHORT)
    np.testing.assert_allclose(first.llc_trace, second.llc_trace, rtol=1e-3, atol=1e-3)


def test_from_keras_with_a_per_sample_loss_function() -> None:
    model = _keras_model()
    x, y = _classification_data()
    loss_fn, params = from_keras(
        model, lambda t, p: keras.losses.sparse_categorical_crossentropy(t, p, from_logits=True))
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x))
    assert float(loss_fn(params, (tf.constant(x), tf.constant(y)))) == pytest.approx(
        float(expected), rel=1e-6)


@pytest.mark.parametrize("make_loss, targets", [
    (lambda: keras.losses.MeanSquaredError(), "float"),
    (lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True), "int"),
])
def test_from_keras_float64_model_gets_a_float64_loss(make_loss, targets) -> None:
    """A Keras loss object computes in its own dtype, float32 by default even for a float64
    model; from_keras evaluates it in the weights' dtype, so the loss llc reports as float64
    is float64 (it equals the float64 formula to 1e-12, where float32 would miss by ~1e-7)."""
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((3,), dtype="float64"),
                              keras.layers.Dense(4, dtype="float64")])
    loss = make_loss()
    assert loss.dtype == "float32"  # Keras's default: the trap
    x = rng.normal(size=(16, 3))
    y = rng.normal(size=(16, 4)) if targets == "float" else rng.integers(0, 4, size=16)
    loss_fn, params = from_keras(model, loss)
    value = loss_fn(params, (tf.constant(x), tf.constant(y)))
    assert value.dtype == tf.float64
    kernel, bias = (v.numpy() for v in params.values())
    out = x @ kernel + bias
    if targets == "float":
        expected = np.mean((out - y) ** 2)
    else:
        top = out.max(axis=1, keepdims=True)
        log_softmax = out - top - np.log(np.exp(out - top).sum(axis=1, keepdims=True))
        expected = -np.mean(log_softmax[np.arange(16), y])
    assert float(value) == pytest.approx(expected, rel=1e-12)
    assert abs(float(loss(tf.constant(y), tf.constant(out))) - expected) > 1e-12  # float32


def test_estimate_leaves_the_keras_model_untouched() -> None:
    model = _keras_model(batch_norm=True)
    x, y = _classification_data()
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # moving statistics away from 0 / 1
    before = [variable.numpy().copy() for variable in model.variables]
    optimizer_before = [variable.numpy().copy() for variable in model.optimizer.variables]
    for training in (False, True):
        loss_fn, params = from_keras(
            model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), training=training)
        result = llc.estimate(loss_fn, params, (x, y), batch_size=64, **SHORT)
        assert np.isfinite(result.llc_mean)
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
    for variable, value in zip(model.optimizer.variables, optimizer_before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_keras_variables_count_as_params() -> None:
    model = _keras_model()
    center, _ = backend.ravel(list(model.trainable_variables))
    assert center.shape == (4 * 8 + 8 + 8 * 3 + 3,)


def test_from_keras_rejects_bad_input() -> None:
    loss = keras.losses.MeanSquaredError()
    with pytest.raises(TypeError, match="`model` must be a Keras 3 model"):
        from_keras(lambda x: x, loss)
    with pytest.raises(ValueError, match="`model` has no trainable weights"):
        from_keras(keras.Sequential([keras.layers.Dense(2)]), loss)
    with pytest.raises(TypeError, match="`loss` must be callable"):
        from_keras(_keras_model(), "mse")


# ---- bad input -------------------------------------------------------------------------------

def test_bad_params_and_loss_fn_name_the_argument() -> None:
    params, data = _linear()
    with pytest.raises(ValueError, match="`params` is empty"):
        llc.estimate(linear_loss, {}, data, **SHORT)
    with pytest.raises(TypeError, match=r"`params` leaf \['weight'\] has dtype int64"):
        llc.estimate(linear_loss, {"weight": tf.ones((2, 3), tf.int64)}, data, **SHORT)
    with pytest.raises(TypeError, match=r"`params` leaf \[1\] has dtype complex128"):
        llc.estimate(linear_loss, [params["weight"], tf.zeros(2, tf.complex128)], data, **SHORT)
    with pytest.raises(ValueError, match="`params` has no elements"):
        llc.estimate(linear_loss, {"weight": tf.zeros((0, 3), tf.float64)}, data, **SHORT)
    with pytest.raises(TypeError, match="`params` mixes frameworks"):
        llc.estimate(linear_loss, {"weight": params["weight"], "b": np.zeros(2)}, data, **SHORT)
    def per_sample(p, b):
        return tf.reduce_sum((b[0] @ tf.transpose(p["weight"]) - b[1]) ** 2, 1)

    with pytest.raises(ValueError, match="scalar loss"):
        llc.estimate(per_sample, params, data, **SHORT)
    def stopped(p, b):
        return linear_loss({"weight": tf.stop_gradient(p["weight"])}, b)

    with pytest.raises(TypeError, match="does not use the `params`"):
        llc.estimate(stopped, params, data, **SHORT)
    closed_over = tf.Variable(tf.zeros((2, 3), tf.float64))
    def unused(p, b):
        return linear_loss({"weight": closed_over}, b)

    with pytest.raises(TypeError, match="does not use the `params`"):
        llc.estimate(unused, params, data, **SHORT)
    with pytest.raises(TypeError, match="`loss_fn` must return a TensorFlow scalar"):
        llc.estimate(lambda p, b: 1.0, params, data, **SHORT)
    with pytest.raises(TypeError, match="floating-point loss"):
        llc.estimate(lambda p, b: tf.constant(1), params, data, **SHORT)
    with pytest.raises(TypeError, match="`loss_fn` must return a TensorFlow scalar"):
        llc.estimate(lambda p, b: np.float64(0.5), params, data, **SHORT)
    with pytest.raises(ValueError, match="unknown device"):
        backend.from_numpy(np.zeros(2), device="tpu")


def test_from_keras_takes_dict_batches_with_next_token() -> None:
    from llc.backends.tensorflow import causal_lm_loss, next_token

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 10, size=(48, 7))
    mask = np.ones_like(tokens)
    mask[::3, -2:] = 0
    batches = [{"input_ids": tf.constant(tokens[i:i + 16]),
                "attention_mask": tf.constant(mask[i:i + 16])} for i in range(0, 48, 16)]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), dtype="int64"), keras.layers.Embedding(10, 8),
                              keras.layers.Dense(10)])
    loss_fn, params = from_keras(model, causal_lm_loss, unpack=next_token(mask_argument=None))
    batch = batches[0]
    logits = model(batch["input_ids"][:, :-1]).numpy()
    top = logits.max(axis=-1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, tokens[:16, 1:, None], axis=-1)[..., 0]
    weights = mask[:16, 1:]
    expected = -(picked * weights).sum() / weights.sum()
    assert float(loss_fn(params, batch)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(TypeError, match="unpack=next_token"):
        from_keras(model, causal_lm_loss)[0](params, batch)
