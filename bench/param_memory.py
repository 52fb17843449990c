"""Working memory in parameter-sized arrays: ``python -m bench.param_memory``.

When the parameters dominate memory (a large model, small batches) the question is how many
parameter-sized arrays a step keeps alive at its peak. This benchmark makes every such array
64 MiB: a 4096 → 4096 linear layer with bias (16.8 M parameters, float32) and a least-squares
loss, n = 512 rows, batch 32. glibc serves allocations above 32 MiB (its largest mmap
threshold) with ``mmap`` and returns them on ``free``, so the peak resident set counts the
live arrays exactly, without the allocator's retained pages that blur small models.

Each row is a fresh process that loads the libraries, runs the same code once on a small
model (lazy imports, caches), builds the data, resets the kernel's peak-RSS mark, and then
builds the model and runs 20 steps: an idiomatic SGD loop (torch: ``nn.Linear`` +
``torch.optim.SGD``; JAX: a jitted update; NumPy: a hand-written gradient), or
``llc.estimate`` (SGLD, 20 draws, no burn-in, ``mala_every=None``) with 1 or 4 chains. The
peak above that mark, divided by the size of one float32 parameter vector, is the number of
parameter-sized arrays alive at the peak, the model's own weights included; the peak divided
by the parameter count is the bytes per parameter. ``--dtypes float32,bfloat16`` adds the same
rows with the model, its data and the SGD baseline in bfloat16 (torch and JAX; llc's sampling
state stays float32, docs/scale.md).

Prints Markdown; docs/benchmarks.md keeps the last results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

WIDTH = 4096
ROWS, BATCH, STEPS = 512, 32, 20
VECTOR_BYTES = (WIDTH * WIDTH + WIDTH) * 4
MIB = 2**20

CHILD = r"""
import gc, json, sys, warnings
warnings.simplefilter("ignore")
import numpy as np
import llc
backend, path = sys.argv[1], sys.argv[2]
chains, width, rows, batch, steps = map(int, sys.argv[3:8])
dtype = sys.argv[8]

def rss(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024

def problem(width, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, width), dtype=np.float32)
    y = rng.standard_normal((rows, width), dtype=np.float32)
    w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
    return x, y, {"weight": w, "bias": np.zeros(width, np.float32)}

def numpy_loss_and_grad(params, data):
    x, y = data
    error = x @ params["weight"] + params["bias"] - y
    residual = error / x.shape[0]
    return 0.5 * float(np.sum(residual * error)), {"weight": x.T @ residual,
                                                   "bias": residual.sum(0)}

def setup(width, seed):
    x, y, params = problem(width, seed)
    if backend == "torch":
        import torch
        from llc.backends.torch import from_module
        torch.set_num_threads(1)
        data = (torch.from_numpy(x).to(getattr(torch, dtype)),
                torch.from_numpy(y).to(getattr(torch, dtype)))
        def make():
            model = torch.nn.Linear(width, width, dtype=getattr(torch, dtype))
            with torch.no_grad():
                model.weight.copy_(torch.from_numpy(params["weight"].T))
                model.bias.zero_()
            return model
        def sgd(model):
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
            generator = torch.Generator().manual_seed(0)
            for _ in range(steps):
                index = torch.randint(0, rows, (batch,), generator=generator)
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.mse_loss(model(data[0][index]), data[1][index]).backward()
                optimizer.step()
        def run_llc(model):
            loss_fn, weights = from_module(model, torch.nn.functional.mse_loss)
            llc.estimate(loss_fn, weights, data, batch_size=batch, step_size=1e-7,
                         num_chains=chains, num_burnin=0, num_draws=steps, mala_every=None,
                         progress=False)
    elif backend == "jax":
        import jax, jax.numpy as jnp
        data = (jnp.asarray(x, dtype), jnp.asarray(y, dtype))
        def loss(p, b):
            return 0.5 * jnp.mean(jnp.sum((b[0] @ p["weight"] + p["bias"] - b[1]) ** 2, axis=1))
        def make():
            return {k: jnp.asarray(v, dtype) for k, v in params.items()}
        def sgd(model):
            update = jax.jit(lambda p, b: jax.tree_util.tree_map(
                lambda w, g: w - 1e-3 * g, p, jax.grad(loss)(p, b)), donate_argnums=0)
            key = jax.random.key(0)
            for step in range(steps):
                index = jax.random.randint(jax.random.fold_in(key, step), (batch,), 0, rows)
                model = update(model, (data[0][index], data[1][index]))
            jax.block_until_ready(model)
        def run_llc(model):
            llc.estimate(loss, model, data, batch_size=batch, step_size=1e-7, num_chains=chains,
                         num_burnin=0, num_draws=steps, mala_every=None, progress=False)
    else:
        data = (x, y)
        def make():
            return {k: v.copy() for k, v in params.items()}
        def sgd(model):
            rng = np.random.default_rng(0)
            for _ in range(steps):
                index = rng.integers(0, rows, batch)
                _, grads = numpy_loss_and_grad(model, (x[index], y[index]))
                for name in model:
                    model[name] -= 1e-3 * grads[name]
        def run_llc(model):
            llc.estimate(numpy_loss_and_grad, model, data, batch_size=batch, step_size=1e-7,
                         num_chains=chains, num_burnin=0, num_draws=steps, mala_every=None,
                         progress=False)
    return make, sgd, run_llc

make, sgd, run_llc = setup(64, 1)  # warm-up on a small model: imports, lazy modules, caches
sgd(make())
run_llc(make())
make, sgd, run_llc = setup(width, 0)
gc.collect()
open("/proc/self/clear_refs", "w").write("5")
baseline = rss("VmRSS")
model = make()
(sgd if path == "sgd" else run_llc)(model)
print(json.dumps({"peak": rss("VmHWM") - baseline}))
"""


def measure(backend: str, path: str, chains: int = 1, dtype: str = "float32") -> float:
    """Peak RSS above the mark, in bytes (a fresh process)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, backend, path, str(chains), str(WIDTH), str(ROWS),
         str(BATCH), str(STEPS), dtype], capture_output=True, text=True, check=False,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if out.returncode:
        raise RuntimeError(f"{backend} {path} {chains}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak"]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m bench.param_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="numpy,torch,jax")
    parser.add_argument("--dtypes", default="float32",
                        help="comma-separated model dtypes: float32, bfloat16 (torch, JAX)")
    args = parser.parse_args(argv)
    import importlib.util

    backends = [name for name in args.backends.split(",")
                if name == "numpy" or importlib.util.find_spec(name)]
    dtypes = args.dtypes.split(",")
    if not set(dtypes) <= {"float32", "bfloat16"}:
        parser.error(f"--dtypes takes float32 and/or bfloat16; got {args.dtypes!r}")
    count = WIDTH * WIDTH + WIDTH
    print(f"linear {WIDTH} → {WIDTH} with bias: {count:,} parameters, one float32 parameter "
          f"vector = {VECTOR_BYTES / MIB:.0f} MiB; n = {ROWS}, batch {BATCH}, {STEPS} steps; "
          "peak resident set above the process before the model was built\n")
    print("| backend | model dtype | run | peak | float32 parameter vectors | bytes per "
          "parameter | llc / SGD |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for backend in backends:
        for dtype in dtypes:
            if dtype != "float32" and backend == "numpy":
                continue  # NumPy has no bfloat16
            sgd = measure(backend, "sgd", dtype=dtype)
            rows.append({"backend": backend, "dtype": dtype, "run": "sgd", "peak": sgd})
            print(f"| {backend} | {dtype} | SGD | {sgd / MIB:.0f} MiB | "
                  f"{sgd / VECTOR_BYTES:.1f} | {sgd / count:.1f} | — |", flush=True)
            for chains in (1, 4):
                peak = measure(backend, "llc", chains, dtype)
                rows.append({"backend": backend, "dtype": dtype, "run": f"llc {chains}",
                             "peak": peak})
                print(f"| {backend} | {dtype} | llc, {chains} chain{'s' if chains > 1 else ''} "
                      f"| {peak / MIB:.0f} MiB | {peak / VECTOR_BYTES:.1f} | "
                      f"{peak / count:.1f} | {peak / sgd:.2f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
