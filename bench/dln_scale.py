"""Furman & Lau's deep-linear-network scale benchmark: ``python -m bench dln_scale --size 1K``.

After Furman & Lau 2024 (arXiv 2402.03698, App. E.2): a random deep linear network of a size
class is the teacher and w*; some of its layers are rank-reduced; x ~ U(−10, 10)^{H_0},
y = teacher(x) (no noise), the loss is the squared error averaged over the outputs; λ is
Aoyagi's for the product's rank (:func:`llc.problems.dln_lambda`); SGLD with batch 500,
γ = 1, nβ = n / log n, one chain, 90 % of the steps burn-in. Each model is estimated at the
paper's step for its class and with ``step_size="auto"`` (the same steps, the same burn-in).

Classes (params, layers, widths, n, ε, steps):

======  ======  ==========  ====  =====  ====
class   layers  widths      n     ε      steps
======  ======  ==========  ====  =====  ====
1K      2–5     5–50        1e5   5e-7   10k
10K     2–10    5–100       1e5   5e-7   10k
100K    2–10    50–500      1e6   1e-7   50k
1M      2–20    100–1000    1e6   5e-8   50k
10M     2–20    500–2000    1e6   2e-8   50k
100M    2–40    500–3000    1e6   2e-8   50k
======  ======  ==========  ====  =====  ====

A model is drawn by sampling the depth and widths uniformly until the parameter count is
within a factor 3 of the class size (rejection), each layer uniform in ±1/√H_{s−1} (torch's
default), and each layer with probability ½ replaced by a product of two factors of a random
smaller rank. The 1K–100K classes run on a CPU; ``--device cuda`` runs the larger ones (see
bench/gpu_dln_scale.sh). ``--plot PATH`` draws λ̂ against λ (their Figure 1).

Prints a Markdown table; docs/benchmarks.md keeps the last results.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import llc  # noqa: E402

CLASSES = {  # size: (depths, widths, n, ε, steps)
    "1K": ((2, 5), (5, 50), 100_000, 5e-7, 10_000),
    "10K": ((2, 10), (5, 100), 100_000, 5e-7, 10_000),
    "100K": ((2, 10), (50, 500), 1_000_000, 1e-7, 50_000),
    "1M": ((2, 20), (100, 1000), 1_000_000, 5e-8, 50_000),
    "10M": ((2, 20), (500, 2000), 1_000_000, 2e-8, 50_000),
    "100M": ((2, 40), (500, 3000), 1_000_000, 2e-8, 50_000),
}
SIZES = {"1K": 1e3, "10K": 1e4, "100K": 1e5, "1M": 1e6, "10M": 1e7, "100M": 1e8}


def random_dln(size: str, rng: np.random.Generator) -> tuple[list[int], list[np.ndarray], int]:
    """(widths, layer matrices W_s of shape (H_s, H_{s−1}), rank of the product)."""
    (low_depth, high_depth), (low_width, high_width), *_ = CLASSES[size]
    target = SIZES[size]
    while True:
        depth = int(rng.integers(low_depth, high_depth + 1))
        widths = [int(w) for w in rng.integers(low_width, high_width + 1, size=depth + 1)]
        count = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        if target / 3 <= count <= target * 3:
            break
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        if rng.random() < 0.5:  # rank-reduced: a product of factors of a smaller rank
            rank = int(rng.integers(1, min(fan_in, fan_out)))
            left = rng.uniform(-1, 1, size=(fan_out, rank))
            right = rng.uniform(-bound, bound, size=(rank, fan_in))
            layer = left @ right / math.sqrt(rank)
        else:
            layer = rng.uniform(-bound, bound, size=(fan_out, fan_in))
        layers.append(layer)
    product = layers[0]
    for layer in layers[1:]:
        product = layer @ product
    rank = int(np.linalg.matrix_rank(product))
    return widths, layers, rank


def problem(layers: list[np.ndarray], n: int, seed: int, device: str):
    """(loss_fn, params, data) in torch float32: x ~ U(−10, 10), y = teacher(x)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    params = {f"W{s + 1}": torch.tensor(layer, dtype=torch.float32, device=device)
              for s, layer in enumerate(layers)}
    x = (torch.rand(n, layers[0].shape[1], generator=generator) * 20 - 10).to(device)
    with torch.no_grad():
        y = x
        for s in range(len(layers)):
            y = y @ params[f"W{s + 1}"].T

    def loss_fn(p, batch):
        inputs, targets = batch
        out = inputs
        for s in range(len(p)):
            out = out @ p[f"W{s + 1}"].T
        return ((out - targets) ** 2).mean()

    return loss_fn, params, (x, y)


def run(size: str, models: int, seed: int, device: str, plot: str | None,
        steps: list[str], chains: int = 1) -> None:
    """Under ``torchrun`` (``torch.distributed`` initialized) each process runs ``chains``
    chains of every model on its own device and rank 0 prints; ``λ̂`` is then the mean over
    all of them and the last column lists each chain's."""
    import torch.distributed as dist

    processes = dist.get_world_size() if dist.is_initialized() else 1
    say = print if not dist.is_initialized() or dist.get_rank() == 0 else (lambda *a, **k: None)
    num_chains = chains * processes
    _, _, n, paper_step, num_steps = CLASSES[size]
    num_burnin = int(0.9 * num_steps)
    rng = np.random.default_rng(seed)
    say(f"### DLN scale benchmark, class {size}: n = {n}, batch 500, γ = 1, nβ = n/log n, "
        f"{num_chains} chain(s) over {processes} process(es), {num_steps} steps of which "
        f"{num_burnin} burn-in, torch float32 on {device}, seed {seed}\n")
    say("| model | widths | d | r | λ | λ/(d/2) | step | ε used | λ̂ | error | findings | s "
        "| λ̂ per chain |")
    say("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    points: dict[str, list[tuple[float, float]]] = {}
    for model in range(models):
        widths, layers, rank = random_dln(size, rng)
        true = llc.problems.dln_lambda(widths, rank)
        d = sum(layer.size for layer in layers)
        loss_fn, params, data = problem(layers, n, seed + model, device)
        for choice in steps:
            step = paper_step if choice == "paper" else "auto"
            started = time.perf_counter()
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                result = llc.estimate(loss_fn, params, data, batch_size=500, step_size=step,
                                      localization=1.0, num_chains=num_chains,
                                      num_draws=num_steps - num_burnin, num_burnin=num_burnin,
                                      seed=seed + model, progress=False)
            seconds = time.perf_counter() - started
            error = result.llc_mean / true - 1
            points.setdefault(choice, []).append((true, result.llc_mean))
            codes = ", ".join(sorted({f.code for f in result.findings})) or "—"
            label = "-".join(map(str, widths))
            per_chain = ", ".join(f"{value:.1f}" for value in result.llc_chains)
            say(f"| {model} | {label} | {d} | {rank} | {true:g} | {true / (d / 2):.3f} | "
                f"{choice} | {float(result.attrs['sampler_step_size']):.2g} | "
                f"{result.llc_mean:.1f} | {100 * error:+.0f} % | {codes} | {seconds:.0f} | "
                f"{per_chain} |", flush=True)
    say()
    for choice, pairs in points.items():
        errors = np.array([abs(est / true - 1) for true, est in pairs])
        say(f"- {choice}: median |error| {100 * np.median(errors):.0f} %, worst "
            f"{100 * errors.max():.0f} % over {len(pairs)} models")
    if plot and say is print:
        _plot(points, size, plot)


def _plot(points: dict[str, list[tuple[float, float]]], size: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    markers = {"paper": "o", "auto": "^"}
    every = [value for pairs in points.values() for pair in pairs for value in pair]
    low, high = min(every) * 0.8, max(every) * 1.25
    ax.plot([low, high], [low, high], color="0.6", lw=1, label="λ̂ = λ")
    for choice, pairs in points.items():
        true, est = np.array(pairs).T
        ax.scatter(true, est, marker=markers.get(choice, "s"), label=choice, alpha=0.8)
    ax.set(xscale="log", yscale="log", xlabel="λ (Aoyagi)", ylabel="λ̂",
           title=f"Random DLNs, class {size}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dln_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=tuple(CLASSES), default="1K")
    parser.add_argument("--models", type=int, default=8, help="random DLNs of the class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device (cuda for 1M and up)")
    parser.add_argument("--steps", default="paper,auto",
                        help="comma-separated: 'paper' (the class's ε), 'auto'")
    parser.add_argument("--plot", default=None, help="save λ̂ against λ to this PNG")
    parser.add_argument("--chains", type=int, default=1,
                        help="chains per process (under torchrun: per GPU)")
    args = parser.parse_args(argv)
    steps = args.steps.split(",")
    if not set(steps) <= {"paper", "auto"}:
        parser.error(f"--steps takes 'paper' and/or 'auto', comma-separated; got {args.steps!r}")
    device = args.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: one process per device
        import torch
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
    run(args.size, args.models, args.seed, device, args.plot, steps, args.chains)


if __name__ == "__main__":
    main()
