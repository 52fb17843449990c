"""When do vectorized torch chains pay? ``python -m bench.torch_chains`` (OMP_NUM_THREADS=1).

llc vectorizes chains with the framework's transforms (JAX: ``vmap`` and ``lax.scan`` in one
compiled program per block; torch: eager ``torch.func.vmap`` per step). The first table
measures the step's dominant cost alone: ``torch.func.vmap`` over the gradient of the
chains' stacked parameters against one ``torch.autograd`` gradient per chain, on the two models of
``python -m bench.speed``, for 4 and 16 chains: the gradient of one minibatch per chain (the step's
dominant cost), without the noise and the update, median of ``--repeats`` blocks of 100 steps,
interleaved.

A second table measures llc's two torch paths end to end: ``chain_method="sequential"`` (one
autograd gradient and one update per chain and step) against ``chain_method="vectorized"``
(each step of all chains one ``torch.func.vmap`` call, the random numbers still drawn per
chain from the same keys), SGLD with ``mala_every=None`` and ``baseline="full"``, the
runner's blocks (of 50 steps here) after the first, the two methods' calls alternated, the
ratio the median over adjacent pairs of calls (this machine's speed drifts within minutes).
``--device cuda`` runs both tables on the GPU (the script bench/gpu_torch_chains.sh).

Prints Markdown tables; docs/benchmarks.md keeps the last results.
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
    synchronize()
    began = time.perf_counter()
    for _ in range(steps):
        run()
    synchronize()
    return (time.perf_counter() - began) / steps


def synchronize() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure(model: str, chains: int, repeats: int, device: str = "cpu") -> tuple[float, float]:
    make, loss, _ = MODELS[model]
    params, data, batch_size = make()
    names = list(params)
    weights = [torch.as_tensor(params[name], device=device) for name in names]
    x, y = (torch.as_tensor(array, device=device) for array in data)
    rng = np.random.default_rng(0)
    rows = torch.as_tensor(np.stack([rng.permutation(x.shape[0])[:batch_size]
                                     for _ in range(chains)]), device=device)

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


def whole_step(model: str, chains: int, repeats: int, device: str
               ) -> tuple[float, float, float]:
    """(sequential, vectorized) seconds per step of all chains of llc's torch paths, and the
    median ratio vectorized / sequential of adjacent calls. The runner's blocks are 50 steps
    here, 3 measured per call, so that calls alternate often."""
    from bench.speed import llc_block_seconds
    from llc._engine import runner as _runner

    _runner._FLUSH_EVERY = 50

    make, loss, _ = MODELS[model]
    params, data, batch_size = make()
    torch_params = {name: torch.as_tensor(value, device=device) for name, value in params.items()}
    torch_data = tuple(torch.as_tensor(array, device=device) for array in data)
    times: dict[str, list[float]] = {"sequential": [], "vectorized": []}
    ratios = []
    for _ in range(repeats):  # calls alternated; the ratio taken per adjacent pair
        pair = {}
        for method, values in times.items():
            steady = llc_block_seconds(loss, torch_params, torch_data, batch_size, chains,
                                       method, 4)[0]
            values.extend(steady)
            pair[method] = statistics.median(steady)
        ratios.append(pair["vectorized"] / pair["sequential"])
    return (statistics.median(times["sequential"]), statistics.median(times["vectorized"]),
            statistics.median(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.torch_chains", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step-repeats", type=int, default=5,
                        help="alternated pairs of calls per row of the second table")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--only", choices=("gradient", "step"), help="one of the two tables")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
          f"device {args.device}; medians of {args.repeats} repeats\n")
    if args.only != "step":
        print("The gradient alone\n")
        print("| model | chains | sequential autograd ms/step | torch.func.vmap ms/step "
              "| vmap / sequential | vmap of 16 / sequential of 4 |")
        print("|---|---|---|---|---|---|")
        for model in ("tiny", "mlp"):
            sequential_four, _ = measure(model, 4, args.repeats, args.device)
            for chains in (4, 16):
                sequential, vectorized = measure(model, chains, args.repeats, args.device)
                against_four = f"{vectorized / sequential_four:.2f}" if chains == 16 else "—"
                print(f"| {model} | {chains} | {1e3 * sequential:.2f} | {1e3 * vectorized:.2f} "
                      f"| {vectorized / sequential:.2f} | {against_four} |", flush=True)
    if args.only != "gradient":
        print(f"\nllc's two torch paths end to end ({args.device})\n")
        print("| model | chains | sequential ms/step | vectorized ms/step "
              "| vectorized / sequential | vectorized 16 / sequential 4 |")
        print("|---|---|---|---|---|---|")
        for model in ("tiny", "mlp"):
            sequential_four = None
            for chains in (1, 4, 16):
                sequential, vectorized, ratio = whole_step(model, chains, args.step_repeats,
                                                           args.device)
                sequential_four = sequential if chains == 4 else sequential_four
                against_four = (f"{vectorized / sequential_four:.2f}" if chains == 16 else "—")
                print(f"| {model} | {chains} | {1e3 * sequential:.2f} | {1e3 * vectorized:.2f} "
                      f"| {ratio:.2f} | {against_four} |", flush=True)


if __name__ == "__main__":
    main()
