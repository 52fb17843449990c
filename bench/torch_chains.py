"""Would vectorizing torch chains pay? ``python -m bench.torch_chains`` (OMP_NUM_THREADS=1).

llc vectorizes chains where the framework has the transforms for it (JAX: ``vmap`` and
``lax.scan`` in one compiled program per block). For torch the candidate is
``torch.func.vmap`` over the gradient of the chains' stacked parameters, run eagerly. This
measures that candidate against what llc's sequential torch path does per step — one
``torch.autograd`` gradient per chain — on the two models of ``python -m bench.speed``, for
4 and 16 chains: the gradient of one minibatch per chain (the step's dominant cost), without
the noise and the update, median of ``--repeats`` blocks of 100 steps, interleaved.

A second table bounds what a whole vectorized SGLD step could gain: the candidate step (the
minibatches of all chains gathered in one ``index_select``, the vmapped gradient, each
chain's noise from its own re-seeded generator *outside* ``vmap`` — torch's random ops cannot
take a per-chain generator inside it — and the update of the stacked (chains, d) positions
in two fused ops) against llc's sequential torch path, read from the runner
(``bench.speed.llc_seconds_per_step``: SGLD, ``mala_every=None``, ``baseline="full"``). The
candidate leaves out everything llc adds (the per-step statistics, divergence checks,
records), so it is an upper bound on the gain.

Prints a Markdown table; docs/benchmarks.md keeps the last results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.func import grad_and_value, vmap  # noqa: E402

from bench.speed import MODELS  # noqa: E402


def per_step(run: Callable[[], object], steps: int = 100) -> float:
    run()
    began = time.perf_counter()
    for _ in range(steps):
        run()
    return (time.perf_counter() - began) / steps


def measure(model: str, chains: int, repeats: int) -> tuple[float, float]:
    make, loss, _ = MODELS[model]
    params, data, batch_size = make()
    names = list(params)
    weights = [torch.as_tensor(params[name]) for name in names]
    x, y = (torch.as_tensor(array) for array in data)
    rng = np.random.default_rng(0)
    rows = torch.as_tensor(np.stack([rng.permutation(x.shape[0])[:batch_size]
                                     for _ in range(chains)]))

    def chain_loss(*args: torch.Tensor) -> torch.Tensor:
        *leaves, xb, yb = args
        return loss(dict(zip(names, leaves)), (xb, yb))

    def sequential() -> None:  # llc's sequential path: one autograd gradient per chain
        for chain in range(chains):
            leaves = [w.detach().requires_grad_(True) for w in weights]
            batch = (torch.index_select(x, 0, rows[chain]), torch.index_select(y, 0, rows[chain]))
            torch.autograd.grad(chain_loss(*leaves, *batch), leaves)

    stacked = [w.expand(chains, *w.shape).clone() for w in weights]
    batched_grad = vmap(grad_and_value(chain_loss, argnums=tuple(range(len(names)))))

    def vectorized() -> None:  # one torch.func.vmap call over all chains
        batched_grad(*stacked, x[rows], y[rows])

    times: dict[str, list[float]] = {"sequential": [], "vmap": []}
    for _ in range(repeats):
        times["sequential"].append(per_step(sequential))
        times["vmap"].append(per_step(vectorized))
    return statistics.median(times["sequential"]), statistics.median(times["vmap"])


def whole_step(model: str, chains: int, repeats: int) -> tuple[float, float]:
    """(llc sequential seconds per step of all chains, vectorized-candidate seconds)."""
    import warnings

    from bench.speed import llc_seconds_per_step

    make, loss, _ = MODELS[model]
    params, data, batch_size = make()
    names = list(params)
    shapes = [params[name].shape for name in names]
    sizes = [params[name].size for name in names]
    x, y = (torch.as_tensor(array) for array in data)
    center = torch.cat([torch.as_tensor(params[name]).reshape(-1) for name in names])
    positions = center.expand(chains, -1).clone()
    generators = [torch.Generator() for _ in range(chains)]
    nbeta, gamma, half, scale = 1000.0, 1.0, 0.5e-7, 1e-7**0.5

    def flat_loss(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, sizes)
        return loss({name: piece.view(shape) for name, piece, shape
                     in zip(names, pieces, shapes)}, (xb, yb))

    batched = vmap(grad_and_value(flat_loss))
    step_index = [0]

    def vectorized() -> None:
        step_index[0] += 1
        rows = torch.randint(0, x.shape[0], (chains * batch_size,),
                             generator=generators[0].manual_seed(step_index[0]))
        xb = torch.index_select(x, 0, rows).view(chains, batch_size, -1)
        yb = torch.index_select(y, 0, rows).view(chains, batch_size, -1)
        grads, _ = batched(positions, xb, yb)
        offset = positions - center
        drift = torch.mul(grads, nbeta).add_(offset, alpha=gamma)
        noise = torch.empty_like(positions)
        for chain, generator in enumerate(generators):
            noise[chain].normal_(generator=generator.manual_seed(step_index[0] + chain))
        torch.add(positions, drift, alpha=-half).add_(noise, alpha=scale)
        torch.linalg.vector_norm(offset, dim=1), torch.linalg.vector_norm(grads, dim=1)

    torch_params = {name: torch.as_tensor(value) for name, value in params.items()}
    times: dict[str, list[float]] = {"llc": [], "candidate": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):
            times["llc"].append(llc_seconds_per_step(loss, torch_params, (x, y), batch_size, chains,
                                                     "sequential", 3)[0])
            times["candidate"].append(per_step(vectorized, 50))
    return statistics.median(times["llc"]), statistics.median(times["candidate"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.torch_chains", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
          f"medians of {args.repeats} blocks of 100 steps\n")
    print("| model | chains | sequential autograd ms/step | torch.func.vmap ms/step "
          "| vmap / sequential | vmap of 16 / sequential of 4 |")
    print("|---|---|---|---|---|---|")
    for model in ("tiny", "mlp"):
        sequential_four, _ = measure(model, 4, args.repeats)
        for chains in (4, 16):
            sequential, vectorized = measure(model, chains, args.repeats)
            against_four = f"{vectorized / sequential_four:.2f}" if chains == 16 else "—"
            print(f"| {model} | {chains} | {1e3 * sequential:.2f} | {1e3 * vectorized:.2f} "
                  f"| {vectorized / sequential:.2f} | {against_four} |", flush=True)
    print("\nThe whole SGLD step: llc's sequential path against the vectorized candidate\n")
    print("| model | chains | llc sequential ms/step | vectorized candidate ms/step "
          "| candidate / llc | candidate of 16 / llc of 4 |")
    print("|---|---|---|---|---|---|")
    for model in ("tiny", "mlp"):
        llc_four, _ = whole_step(model, 4, args.repeats)
        for chains in (1, 4, 16):
            llc_step, candidate = whole_step(model, chains, args.repeats)
            against_four = f"{candidate / llc_four:.2f}" if chains == 16 else "—"
            print(f"| {model} | {chains} | {1e3 * llc_step:.2f} | {1e3 * candidate:.2f} "
                  f"| {candidate / llc_step:.2f} | {against_four} |", flush=True)


if __name__ == "__main__":
    main()
