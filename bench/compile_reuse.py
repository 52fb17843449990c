"""Compiled programs reused across calls (issue 18): compile counts and times in JAX and TF.

``python -m bench.compile_reuse [--framework jax|tensorflow|both]
[--chain-method vectorized|sequential|both]``

On the README's deep linear network (float32, 4 chains, batch 500), per framework, it
runs each of: an ``estimate``; one with another step size; one with ``step_size="auto"``
(the adaptation changes the step every 25 burn-in steps); a 10-point ``calibrate`` grid; a
10-checkpoint ``estimate_trajectory`` — each twice in a row, and prints the XLA compiles
(``jax.monitoring``'s backend-compile events) of both calls, the seconds the first spent
tracing and compiling (JAX only: TensorFlow's traces are not counted), and the wall times.
The repeated call compiles nothing, so its wall time is the sampling of its points. Issue 18's
targets: a second identical call compiles nothing; ``auto`` compiles its step once; ``calibrate``
and ``estimate_trajectory`` cost ≤ 1.5× the sampling time of their points.
"""

from __future__ import annotations

import argparse
import collections
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import llc  # noqa: E402

_EVENTS: collections.Counter[str] = collections.Counter()
_SECONDS: collections.Counter[str] = collections.Counter()


def _listener(name: str, duration: float, **_: object) -> None:
    _EVENTS[name] += 1
    _SECONDS[name] += duration


jax.monitoring.register_event_duration_secs_listener(_listener)

_COMPILE = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def _problem(framework: str = "jax") -> tuple[object, dict[str, object], object]:
    problem = llc.problems.DeepLinearNetwork(widths=(4, 5, 3, 4), rank=2)
    data, params = problem.setup(n=10_000, seed=0)
    if framework == "tensorflow":
        import tensorflow as tf

        def tf_loss(params: dict[str, object], batch: tuple[object, ...]) -> object:
            x, y = batch
            out = x @ tf.transpose(params["W1"]) @ tf.transpose(params["W2"]) \
                @ tf.transpose(params["W3"])
            return 0.5 * tf.reduce_mean(tf.reduce_sum((out - y) ** 2, axis=1))

        return (tf_loss, {name: tf.constant(value, tf.float32) for name, value in params.items()},
                tuple(tf.constant(array, tf.float32) for array in data))
    params = {name: jnp.asarray(value, dtype=jnp.float32) for name, value in params.items()}
    data = tuple(jnp.asarray(array, dtype=jnp.float32) for array in data)

    def loss_fn(params: dict[str, jax.Array], batch: tuple[jax.Array, ...]) -> jax.Array:
        x, y = batch
        out = x @ params["W1"].T @ params["W2"].T @ params["W3"].T
        return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))

    return loss_fn, params, data


def _measure(label: str, call: object) -> dict[str, float]:
    before_events, before_seconds = _EVENTS.copy(), _SECONDS.copy()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        call()  # type: ignore[operator]
    wall = time.perf_counter() - started
    return {
        "label": label,
        "compiles": _EVENTS[_COMPILE] - before_events[_COMPILE],
        "compile_s": sum(_SECONDS[name] - before_seconds[name]
                         for name in (_COMPILE, _TRACE, _LOWER)),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain-method", default="both",
                        choices=("vectorized", "sequential", "both"))
    parser.add_argument("--framework", default="both", choices=("jax", "tensorflow", "both"))
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--burnin", type=int, default=200)
    args = parser.parse_args(argv)
    methods = ("vectorized", "sequential") if args.chain_method == "both" \
        else (args.chain_method,)
    common = dict(batch_size=500, num_chains=4, num_draws=args.draws, num_burnin=args.burnin,
                  progress=False)
    frameworks = ("jax", "tensorflow") if args.framework == "both" else (args.framework,)
    print(f"JAX {jax.__version__}, {jax.devices()[0].platform}; DLN 4-5-3-4 (47 params), "
          f"float32, n = 10000, 4 chains, {args.burnin} + {args.draws} steps per call\n")
    print("| framework | chains | call | XLA compiles | trace+compile s | wall s "
          "| repeated: wall s | × repeated |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    steps = [1e-6 * 2 ** k for k in range(10)]
    for framework, method in [(f, m) for f in frameworks for m in methods]:
        loss_fn, params, data = _problem(framework)
        checkpoints = [{name: value * (1 + 1e-3 * k) for name, value in params.items()}
                       for k in range(10)]
        run = dict(common, chain_method=method)
        calls = {
            "estimate": lambda: llc.estimate(loss_fn, params, data, step_size=3e-5, **run),
            "estimate, another step size": lambda: llc.estimate(
                loss_fn, params, data, step_size=2e-5, **run),
            "estimate, step_size='auto'": lambda: llc.estimate(
                loss_fn, params, data, step_size="auto", **run),
            "calibrate, 10 step sizes": lambda: llc.calibrate(
                loss_fn, params, data, step_sizes=steps, localization_factors=(),
                **{key: value for key, value in run.items() if key != "chain_method"}),
            "estimate_trajectory, 10 checkpoints": lambda: llc.estimate_trajectory(
                checkpoints, loss_fn, data, step_size=3e-5, **run),
        }
        for label, call in calls.items():
            first = _measure(label, call)
            again = _measure(label, call)
            counted = framework == "jax"  # XLA's events; TensorFlow's traces are not counted
            compiles = f"{first['compiles']} → {again['compiles']}" if counted else "–"
            seconds = f"{first['compile_s']:.2f}" if counted else "–"
            print(f"| {framework} | {method} | {label} | {compiles} | {seconds} "
                  f"| {first['wall_s']:.2f} | {again['wall_s']:.2f} "
                  f"| {first['wall_s'] / again['wall_s']:.2f} |", flush=True)
    print("\nXLA compiles: in the call → in the same call repeated at once. The repeated "
          "call compiles nothing new, so its wall time is the sampling (and bookkeeping) of its "
          "points; × repeated is the first call's cost relative to it. The first "
          "`estimate` of a process also compiles JAX's own small programs once (eager "
          "operations on scalars, ``stack``).")


if __name__ == "__main__":
    main()
