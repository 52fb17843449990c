"""Speed of llc's sampler against plain SGD, per backend: ``python -m bench.speed``.

For each backend (numpy, torch, jax, and tensorflow when its adapter is present) and two
models — ``tiny``, the demo's deep linear network (4-5-3-4, n = 10⁴, batch 500), and ``mlp``,
a 784-128-10 tanh MLP with cross-entropy (n = 8192, batch 256) — it measures:

- **llc**: SGLD steps per second for 1, 4 and 16 chains, with every chain method the backend
  has (``sequential``: a Python loop over steps and chains; ``vectorized``: blocks of 200 steps
  of all chains as one compiled program). Pure sampler cost: ``mala_every=None``,
  ``baseline="full"``. The time is the median over the blocks of 200 steps after the first
  (which includes compilation), read from the runner, so the fixed cost of a call (L_n(w*),
  the result) is left out; it is reported separately as ``first call``.
- **SGD**: an idiomatic plain SGD loop on the same model, batch size and data (torch:
  ``nn.Module`` + ``torch.optim.SGD``; JAX: a jitted update in a Python loop; TensorFlow: a
  ``tf.function`` update with ``GradientTape`` and ``keras.optimizers.SGD``; NumPy: the same
  hand-written gradient), steps per second (median of the blocks).
- **SGD + noise**: the same loop adding N(0, σ²) noise to every weight after each update (the
  framework's own normal generator: ``torch.randn_like``, ``jax.random.normal`` inside the
  jitted update, a ``tf.random.Generator``, ``numpy.random.Generator``), i.e. a hand-written
  SGLD step without the localization term. An SGLD step cannot cost less than this: it is the
  floor the sampler is measured against besides plain SGD.
- the ratios llc time / SGD time (and / SGD + noise time) per step for 1 chain, and for C
  chains against C sequential runs. The measurements are interleaved block by block: after
  each of llc's blocks, one block of each loop runs (the runner is hooked, outside the
  timings), and each ratio is the median, over the blocks of ``--repeats`` calls, of llc's
  block against the loops' blocks right after it. This machine's speed drifts by up to 2×
  within a minute (a plain SGD loop's blocks of 200 steps measured 176-400 µs per step in
  one run), and adjacent blocks see the same speed.

Prints a Markdown table; docs/benchmarks.md keeps the last results.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import llc  # noqa: E402
from llc._engine import runner as _runner  # noqa: E402

BLOCK = _runner._FLUSH_EVERY
NOISE_SCALE = 1e-4  # the hand-written SGLD loops: sqrt(step) of their Gaussian noise


# ---- models: weights stored (in, out) so the loss needs no transpose ------------------------
def tiny_problem() -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray], int]:
    problem = llc.problems.DeepLinearNetwork(widths=(4, 5, 3, 4), rank=2)
    (x, y), params = problem.setup(10_000, seed=0)
    return {name: np.ascontiguousarray(w.T) for name, w in params.items()}, (x, y), 500


def tiny_loss(params: dict, batch: tuple) -> Any:
    x, y = batch
    xp = llc.array_namespace(x)
    out = x @ params["W1"] @ params["W2"] @ params["W3"]
    return 0.5 * xp.mean(xp.sum((out - y) ** 2, axis=1))


def tiny_loss_and_grad(params: dict, batch: tuple) -> tuple[Any, dict]:
    x, y = batch
    h1 = x @ params["W1"]
    h2 = h1 @ params["W2"]
    residual = (h2 @ params["W3"] - y) / x.shape[0]
    g3 = h2.T @ residual
    d2 = residual @ params["W3"].T
    g2 = h1.T @ d2
    g1 = x.T @ (d2 @ params["W2"].T)
    loss = 0.5 * np.sum(residual**2) * x.shape[0]
    return loss, {"W1": g1, "W2": g2, "W3": g3}


def mlp_problem(hidden: int = 128
                ) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray], int]:
    """A 784-``hidden``-10 tanh MLP at random weights and n = 8192 synthetic rows, batch 256."""
    rng = np.random.default_rng(0)
    n = 8192
    x = rng.normal(size=(n, 784)).astype(np.float32)
    teacher = rng.normal(size=(784, 10)).astype(np.float32) / 28
    labels = np.argmax(x @ teacher + rng.gumbel(size=(n, 10)), axis=1)
    onehot = np.eye(10, dtype=np.float32)[labels]
    params = {"W1": rng.normal(size=(784, hidden)).astype(np.float32) / 28,
              "b1": np.zeros(hidden, np.float32),
              "W2": rng.normal(size=(hidden, 10)).astype(np.float32) / round(hidden**0.5),
              "b2": np.zeros(10, np.float32)}
    return params, (x, onehot), 256


def mlp_loss(params: dict, batch: tuple) -> Any:
    x, onehot = batch
    xp = llc.array_namespace(x)
    logits = xp.tanh(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
    top = xp.max(logits, axis=1, keepdims=True)
    log_normalizer = top[:, 0] + xp.log(xp.sum(xp.exp(logits - top), axis=1))
    return xp.mean(log_normalizer - xp.sum(onehot * logits, axis=1))


def mlp_loss_and_grad(params: dict, batch: tuple) -> tuple[Any, dict]:
    x, onehot = batch
    hidden = np.tanh(x @ params["W1"] + params["b1"])
    logits = hidden @ params["W2"] + params["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    loss = np.mean(-np.sum(onehot * np.log(probabilities), axis=1))
    d_logits = (probabilities - onehot) / x.shape[0]
    d_hidden = (d_logits @ params["W2"].T) * (1 - hidden**2)
    return loss, {"W1": x.T @ d_hidden, "b1": d_hidden.sum(0), "W2": hidden.T @ d_logits,
                  "b2": d_logits.sum(0)}


MODELS = {"tiny": (tiny_problem, tiny_loss, tiny_loss_and_grad),
          "mlp": (mlp_problem, mlp_loss, mlp_loss_and_grad)}


# ---- plain SGD loops, one per framework, written as a user would ---------------------------
def sgd_numpy(params: dict, data: tuple, batch_size: int, loss_and_grad: Callable[..., Any],
              noise: bool = False) -> Callable[[int], None]:
    params = {name: value.copy() for name, value in params.items()}
    rng = np.random.default_rng(0)
    n = data[0].shape[0]
    position = [n]
    order = [np.arange(n)]

    def run(steps: int) -> None:
        for _ in range(steps):
            if position[0] + batch_size > n:
                order[0], position[0] = rng.permutation(n), 0
            rows = order[0][position[0]:position[0] + batch_size]
            position[0] += batch_size
            _, grads = loss_and_grad(params, tuple(array[rows] for array in data))
            for name in params:
                params[name] -= 1e-3 * grads[name]
                if noise:
                    params[name] += NOISE_SCALE * rng.standard_normal(
                        params[name].shape, dtype=params[name].dtype)

    return run


def sgd_torch(params: dict, data: tuple, batch_size: int, loss: Callable[..., Any],
              dtype: str, noise: bool = False) -> Callable[[int], None]:
    import torch

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = torch.nn.ParameterDict(
                {name: torch.nn.Parameter(torch.as_tensor(value, dtype=getattr(torch, dtype)))
                 for name, value in params.items()})

    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = (torch.as_tensor(array, dtype=getattr(torch, dtype)) for array in data)
    n = x.shape[0]
    generator = torch.Generator().manual_seed(0)
    state = {"order": torch.randperm(n, generator=generator), "position": 0}

    def run(steps: int) -> None:
        for _ in range(steps):
            if state["position"] + batch_size > n:
                state["order"], state["position"] = torch.randperm(n, generator=generator), 0
            rows = state["order"][state["position"]:state["position"] + batch_size]
            state["position"] += batch_size
            optimizer.zero_grad(set_to_none=True)
            value = loss(dict(model.weights), (x[rows], y[rows]))
            value.backward()
            optimizer.step()
            if noise:
                with torch.no_grad():
                    for weight in model.parameters():
                        weight.add_(torch.randn_like(weight), alpha=NOISE_SCALE)

    return run


def sgd_jax(params: dict, data: tuple, batch_size: int, loss: Callable[..., Any],
            dtype: str, noise: bool = False, data_as_arguments: bool = False
            ) -> Callable[[int], None]:
    """The jitted SGD update in a Python loop. By default it closes over the data set (which
    makes it a constant of the compiled program); ``data_as_arguments`` passes it instead."""
    import jax
    import jax.numpy as jnp

    weights = {name: jnp.asarray(value, dtype=dtype) for name, value in params.items()}
    x, y = (jnp.asarray(array, dtype=dtype) for array in data)
    n = x.shape[0]

    @jax.jit
    def update(weights: dict, rows: Any, key: Any, x_all: Any = None, y_all: Any = None
               ) -> tuple[dict, Any]:
        inputs, targets = (x, y) if x_all is None else (x_all, y_all)
        grads = jax.grad(loss)(weights, (inputs[rows], targets[rows]))
        weights = jax.tree_util.tree_map(lambda w, g: w - 1e-3 * g, weights, grads)
        if noise:
            key, *keys = jax.random.split(key, len(weights) + 1)
            leaves, treedef = jax.tree_util.tree_flatten(weights)
            weights = jax.tree_util.tree_unflatten(treedef, [
                w + NOISE_SCALE * jax.random.normal(k, w.shape, w.dtype)
                for w, k in zip(leaves, keys)])
        return weights, key

    state = {"weights": weights, "key": jax.random.key(0), "noise_key": jax.random.key(1),
             "order": None, "position": n}

    def run(steps: int) -> None:
        for _ in range(steps):
            if state["position"] + batch_size > n:
                state["key"], key = jax.random.split(state["key"])
                state["order"], state["position"] = jax.random.permutation(key, n), 0
            rows = state["order"][state["position"]:state["position"] + batch_size]
            state["position"] += batch_size
            state["weights"], state["noise_key"] = update(
                state["weights"], rows, state["noise_key"],
                *((x, y) if data_as_arguments else ()))
        jax.block_until_ready(state["weights"])

    return run


def sgd_tensorflow(params: dict, data: tuple, batch_size: int, loss: Callable[..., Any],
                   dtype: str, noise: bool = False) -> Callable[[int], None]:
    import tensorflow as tf

    weights = {name: tf.Variable(value.astype(dtype)) for name, value in params.items()}
    x, y = (tf.constant(array.astype(dtype)) for array in data)
    n = int(x.shape[0])
    optimizer = tf.keras.optimizers.SGD(learning_rate=1e-3)
    generator = tf.random.Generator.from_seed(1)

    @tf.function
    def update(rows: Any) -> None:
        with tf.GradientTape() as tape:
            value = loss(weights, (tf.gather(x, rows), tf.gather(y, rows)))
        variables = list(weights.values())
        optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
        if noise:
            for variable in variables:
                variable.assign_add(
                    NOISE_SCALE * generator.normal(variable.shape, dtype=variable.dtype))

    state = {"order": None, "position": n, "seed": 0}

    def run(steps: int) -> None:
        for _ in range(steps):
            if state["position"] + batch_size > n:
                state["seed"] += 1
                state["order"] = tf.random.shuffle(tf.range(n), seed=state["seed"])
                state["position"] = 0
            update(state["order"][state["position"]:state["position"] + batch_size])
            state["position"] += batch_size

    return run


# ---- measurement --------------------------------------------------------------------------
@contextlib.contextmanager
def block_timer(between: Callable[[], None] | None = None
                ) -> Iterator[list[tuple[float, int]]]:
    """Record (seconds, steps) of every block the runner advances; ``between()``, if given,
    runs after each block, outside its timing (the comparison loops, interleaved)."""
    blocks: list[tuple[float, int]] = []
    originals = {cls: cls.advance for cls in (_runner.SequentialChains, _runner.VectorizedChains)}

    def timed(original: Callable[..., Any]) -> Callable[..., Any]:
        def advance(self: Any, state: Any, stop: int) -> None:
            start, began = state.step, time.perf_counter()
            original(self, state, stop)
            blocks.append((time.perf_counter() - began, stop - start))
            if between is not None:
                between()
        return advance

    for cls, original in originals.items():
        cls.advance = timed(original)
    try:
        yield blocks
    finally:
        for cls, original in originals.items():
            cls.advance = original


def llc_block_seconds(loss_fn: Any, params: Any, data: Any, batch_size: int, chains: int,
                      method: str, blocks: int, between: Callable[[], None] | None = None
                      ) -> tuple[list[float], float]:
    """(seconds per step of each block after the first, seconds of the whole call); with
    ``between``, it runs after every block (outside the timings of both)."""
    spent_between = [0.0]

    def timed_between() -> None:
        began = time.perf_counter()
        between()
        spent_between[0] += time.perf_counter() - began

    with block_timer(timed_between if between else None) as timings, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        began = time.perf_counter()
        llc.estimate(loss_fn, params, data, batch_size=batch_size, num_chains=chains,
                     num_burnin=0, num_draws=blocks * BLOCK, step_size=1e-7, mala_every=None,
                     baseline="full", chain_method=method, progress=False)
        total = time.perf_counter() - began - spent_between[0]
    return [seconds / steps for seconds, steps in timings[1:]], total


def llc_seconds_per_step(loss_fn: Any, params: Any, data: Any, batch_size: int, chains: int,
                         method: str, blocks: int) -> tuple[float, float]:
    """(median seconds per step of the blocks after the first, seconds of the whole call)."""
    steady, total = llc_block_seconds(loss_fn, params, data, batch_size, chains, method, blocks)
    return statistics.median(steady), total


def interleaved_blocks(loss_fn: Any, params: Any, data: Any, batch_size: int, chains: int,
                       method: str, blocks: int, loops: dict[str, Callable[[int], None]]
                       ) -> tuple[dict[str, list[float]], float]:
    """Seconds per step of llc's blocks (all chains) and, right after each, of ``BLOCK`` steps
    of every loop times ``chains`` (as many sequential runs): {"llc": [...], kind: [...]}
    aligned block by block (the first, with the compilation, left out), and the seconds of the
    whole llc call. Adjacent blocks share the machine's state, so their ratio is robust to
    slow changes of its speed."""
    times: dict[str, list[float]] = {kind: [] for kind in loops}
    for run in loops.values():
        run(BLOCK)  # warm-up: compilation, caches

    def run_loops() -> None:
        for kind, run in loops.items():
            began = time.perf_counter()
            run(BLOCK)
            times[kind].append(chains * (time.perf_counter() - began) / BLOCK)

    steady, total = llc_block_seconds(loss_fn, params, data, batch_size, chains, method,
                                      blocks, run_loops)
    return {"llc": steady, **{kind: values[1:] for kind, values in times.items()}}, total


def sgd_seconds_per_step(run: Callable[[int], None], blocks: int) -> float:
    run(BLOCK)  # warm-up: compilation, caches
    times = []
    for _ in range(blocks - 1):
        began = time.perf_counter()
        run(BLOCK)
        times.append((time.perf_counter() - began) / BLOCK)
    return statistics.median(times)


def backend_setup(name: str, model: str, dtype: str
                  ) -> tuple[Any, Any, Any, dict[str, Callable[[int], None]], int]:
    """(loss for llc, params, data, {"sgd": loop, "sgd+noise": loop}, batch size)."""
    make, loss, loss_and_grad = MODELS[model]
    params, data, batch_size = make()
    cast = {key: value.astype(dtype) for key, value in params.items()}
    data = tuple(array.astype(dtype) for array in data)
    if name == "numpy":
        loops = {kind: sgd_numpy(cast, data, batch_size, loss_and_grad, noise=kind != "sgd")
                 for kind in LOOPS}
        return loss_and_grad, cast, data, loops, batch_size
    backend = llc.get_backend(name)
    framework_params = {key: backend.from_numpy(value, dtype=dtype) for key, value in cast.items()}
    framework_data = tuple(backend.from_numpy(array, dtype=dtype) for array in data)
    sgd = {"torch": sgd_torch, "jax": sgd_jax, "tensorflow": sgd_tensorflow}.get(name)
    loops = ({kind: sgd(cast, data, batch_size, loss, dtype, noise=kind != "sgd") for kind in LOOPS}
             if sgd else {})
    return loss, framework_params, framework_data, loops, batch_size


LOOPS = ("sgd", "sgd+noise")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="numpy,torch,jax,tensorflow")
    parser.add_argument("--models", default="tiny,mlp")
    parser.add_argument("--chains", default="1,4,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=6, help="blocks of 200 steps per llc call")
    args = parser.parse_args()
    if importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401  (before tensorflow)
    installed = llc.available_backends()
    backends = [name for name in args.backends.split(",") if name in installed]
    chain_counts = [int(c) for c in args.chains.split(",")]
    print(f"llc {llc.__version__}; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
          f"{args.repeats} repeats, medians; {args.blocks} blocks of {BLOCK} steps each\n")
    print("| model | backend | chains | method | llc steps/s (all chains) | SGD steps/s "
          "| SGD + noise steps/s | llc / (chains × SGD) | llc / (chains × (SGD + noise)) "
          "| first call s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for name in backends:
            loss_fn, params, data, loops, batch_size = backend_setup(name, model, "float32")
            backend = llc.get_backend(name)
            methods = ["sequential"] + (["vectorized"] if backend.chain_transforms else [])
            for chains in chain_counts:
                for method in methods:
                    samples: dict[str, list[float]] = {"llc": [], **{kind: [] for kind in loops}}
                    totals = []
                    for _ in range(args.repeats):  # blocks interleaved: llc, SGD, SGD + noise, ...
                        times, total = interleaved_blocks(loss_fn, params, data, batch_size,
                                                          chains, method, args.blocks, loops)
                        totals.append(total)
                        for kind, values in times.items():
                            samples[kind].extend(values)
                    llc_step = statistics.median(samples["llc"])
                    steps = {kind: statistics.median(samples[kind]) if samples.get(kind)
                             else float("nan") for kind in LOOPS}
                    ratios = {kind: (statistics.median(
                        [mine / theirs for mine, theirs in zip(samples["llc"], samples[kind])])
                        if samples.get(kind) else float("nan")) for kind in LOOPS}
                    print(f"| {model} | {name} | {chains} | {method} | {1 / llc_step:,.0f} "
                          f"| {chains / steps['sgd']:,.0f} | {chains / steps['sgd+noise']:,.0f} "
                          f"| {ratios['sgd']:.2f} | {ratios['sgd+noise']:.2f} "
                          f"| {statistics.median(totals):.1f} |", flush=True)


if __name__ == "__main__":
    main()
