"""Where an SGLD step's time goes: ``python -m bench.profile_step`` (OMP_NUM_THREADS=1).

For one chain of the 784-128-10 MLP of ``python -m bench.speed`` (101 770 float32
parameters, batch 256) in torch and in JAX, it times in isolation, in the same process and
interleaved, each part of a step as llc's sequential runner performs it:

- ``loss + gradient``: the loss and its gradient on one minibatch through the adapter
  (``backend.value_and_grad`` on the flat parameter vector);
- ``minibatch``: drawing the next minibatch rows and gathering them (``ArrayData.stream``);
- ``noise``: the step's Gaussian noise, ``backend.normal(fold_in(key, step), w)``;
- ``update``: the SGLD update and its statistics given the gradient and the noise: the
  drift nβ∇L + γ(w − w*), w − ε/2·drift + √ε·ξ (both through ``backend.linear_combination``,
  as the sampler computes them), ‖w − w*‖ and ‖∇L‖;

against the whole llc step (runner, median of blocks of 200 steps; the path
``chain_method="auto"`` takes) and the plain SGD step and SGD + noise step of ``bench.speed``.
Every measurement is taken as a ratio to a plain SGD block measured right before it (this
machine's speed drifts within minutes) and printed in ms at the median SGD speed. JAX runs
each part as its own jitted call, so its parts include a dispatch each (~10 µs) that the
fused step does not pay.

Prints a Markdown table of milliseconds per step; docs/benchmarks.md keeps the last results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import llc  # noqa: E402
from bench.speed import backend_setup, llc_seconds_per_step, sgd_seconds_per_step  # noqa: E402
from llc._data import ArrayData  # noqa: E402


def timed(run: Callable[[], Any], sync: Callable[[Any], Any], steps: int = 200) -> float:
    sync(run())
    began = time.perf_counter()
    for _ in range(steps):
        out = run()
    sync(out)
    return (time.perf_counter() - began) / steps


def parts(name: str, loss_fn: Any, params: Any, data: Any, batch_size: int
          ) -> dict[str, Callable[[], Any]]:
    backend = llc.get_backend(name)
    flat, unravel = backend.ravel(params)
    center = flat + 0.0
    loss_and_grad = backend.value_and_grad(loss_fn, unravel)
    dataset = ArrayData(tuple(data), batch_size, backend)
    stream = dataset.stream(backend.key(0))
    batch = next(stream)
    nbeta, gamma, step_size = 1000.0, 1.0, 1e-7
    half, scale = 0.5 * step_size, step_size**0.5
    key = backend.key(1)
    xp = backend.namespace(flat)
    _, grad = loss_and_grad(flat, batch)
    noise = backend.normal(key, flat)

    combine = backend.linear_combination

    def update(position: Any, grad: Any, noise: Any) -> tuple[Any, ...]:
        # as llc.samplers.sgld does it, through the adapter's fused linear combinations
        offset = position - center
        drift = combine((nbeta, grad), (gamma, offset))
        new = combine((1.0, position), (-half, drift), (scale, noise))
        return (new, xp.linalg.vector_norm(offset), xp.linalg.vector_norm(grad))

    if name == "jax":
        import jax

        loss_and_grad, update = jax.jit(loss_and_grad), jax.jit(update)
        normal = jax.jit(lambda k: backend.normal(k, flat))
        return {"loss + gradient": lambda: loss_and_grad(flat, batch),
                "minibatch": lambda: next(stream),
                "noise": lambda: normal(backend.fold_in(key, 7)),
                "update": lambda: update(flat, grad, noise)}
    return {"loss + gradient": lambda: loss_and_grad(flat, batch),
            "minibatch": lambda: next(stream),
            "noise": lambda: backend.normal(backend.fold_in(key, 7), flat),
            "update": lambda: update(flat, grad, noise)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="torch,jax")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"llc {llc.__version__}; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
          f"mlp, 1 chain, float32; medians of {args.repeats} repeats; ms per step\n")
    rows: dict[str, dict[str, float]] = {}
    for name in args.backends.split(","):
        if name not in llc.available_backends():
            continue
        if name == "torch":
            import torch

            torch.set_num_threads(1)
        loss_fn, params, data, loops, batch_size = backend_setup(name, "mlp", "float32")
        sync = (lambda out: __import__("jax").block_until_ready(out)) if name == "jax" \
            else (lambda out: out)
        pieces = parts(name, loss_fn, params, data, batch_size)
        sgd, noisy = loops["sgd"], loops["sgd+noise"]
        measures: dict[str, Callable[[], float]] = {
            **{part: (lambda run=run: timed(run, sync)) for part, run in pieces.items()},
            "llc step": lambda: llc_seconds_per_step(loss_fn, params, data, batch_size, 1,
                                                     "auto", 4)[0],
            "plain SGD+noise step": lambda: sgd_seconds_per_step(noisy, 4),
        }
        # This machine's speed drifts by up to 2x within a minute: every measurement is
        # taken as a ratio to a plain SGD measurement right before it, and shown in ms at the
        # median SGD speed.
        ratios: dict[str, list[float]] = {part: [] for part in measures}
        sgd_times = []
        for _ in range(args.repeats):
            for part, measure in measures.items():
                reference = sgd_seconds_per_step(sgd, 2)
                sgd_times.append(reference)
                ratios[part].append(measure() / reference)
        sgd_step = statistics.median(sgd_times)
        rows[name] = {part: 1e3 * sgd_step * statistics.median(values)
                      for part, values in ratios.items()}
        rows[name]["plain SGD step"] = 1e3 * sgd_step
    names = list(rows)
    print("(the llc step is what chain_method='auto' runs: JAX vectorized, torch sequential; "
          "each row is measured as a ratio to a plain SGD block right before it and shown in "
          "ms at the median SGD speed)\n")
    print("| part | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for part in next(iter(rows.values())) if rows else []:
        cells = [f"{rows[name].get(part, np.nan):.3f}" for name in names]
        print(f"| {part} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
