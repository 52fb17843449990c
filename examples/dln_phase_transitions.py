"""λ̂ along the saddle-to-saddle training of a deep linear network (docs/trajectories.md).

A three-layer linear network y = W3 W2 W1 x, widths (6, 3, 3, 6), learns a rank-3 teacher
with singular values 10, 5 and 2 by full-batch gradient descent from a small initialization.
It learns one singular value at a time: the loss sits on a plateau (a saddle of L_n where the
network has rank k) and then drops. ``llc.estimate_trajectory`` estimates λ̂ at 28
log-spaced checkpoints; the figure puts λ̂ next to the loss, with the closed-form λ of a
deep linear network of the rank learned so far (``llc.problems.dln_lambda``, Aoyagi 2024)
on each plateau. The final λ̂ is compared with λ of the true rank.

Run ``python examples/dln_phase_transitions.py`` (about 3 minutes on one CPU core) to print
the table and write ``docs/img/dln_trajectory.png``; ``--quick`` runs one checkpoint per
plateau with fewer draws (what ``tests/test_examples.py`` checks).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import llc
from llc.problems import dln_lambda

WIDTHS = (6, 3, 3, 6)              # input, two hidden layers, output: three layers
SINGULAR_VALUES = (10.0, 5.0, 2.0)  # the teacher's, well apart: one plateau per value
NOISE_STD = 1.0
NUM_DATA = 10_000
INIT_SCALE = 1e-3                   # small initialization: long plateaus, sharp drops
LEARNING_RATE = 0.01
TRAIN_STEPS = 150_000
CHECKPOINT_STEPS = np.unique(np.round(np.geomspace(2_000, TRAIN_STEPS, 28)).astype(int))
QUICK_STEPS = np.array([4_000, 15_000, 48_000, TRAIN_STEPS])   # one per plateau

# Sampling (docs/trajectories.md explains the choice). A plateau is a saddle: the tempered
# posterior around it leaks toward the next rank, so a strong localization holds the chains
# there. γ/nβ = 0.3 sets the localization's bias at the final minimum (−3 %); the barrier that
# holds the chains at a saddle grows like γ³/(nβ s)² ∝ nβ, hence nβ = 10⁶, far above
# n/log n = 1086 (at which the chains leave the rank-0 and rank-1 saddles). Full batch: at this
# nβ minibatch gradient noise would inflate λ̂. MALA acceptance ≈ 0.987.
SETTINGS = {"nbeta": 1e6, "localization": 3e5, "step_size": 3e-9, "num_chains": 4,
            "num_draws": 12_000, "num_burnin": 2000, "seed": 0}
QUICK_SETTINGS = {**SETTINGS, "num_draws": 6000, "num_burnin": 1500}
LEARNED_THRESHOLD = 0.5 * min(SINGULAR_VALUES)   # a singular value above it is learned


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: x ~ N(0, I), y = C0 x + noise, C0 of rank 3 with ``SINGULAR_VALUES``."""
    rng = np.random.default_rng(seed)
    rank = len(SINGULAR_VALUES)
    left = np.linalg.qr(rng.standard_normal((WIDTHS[-1], rank)))[0]
    right = np.linalg.qr(rng.standard_normal((WIDTHS[0], rank)))[0]
    teacher = (left * np.array(SINGULAR_VALUES)) @ right.T
    x = rng.standard_normal((NUM_DATA, WIDTHS[0]))
    y = x @ teacher.T + NOISE_STD * rng.standard_normal((NUM_DATA, WIDTHS[-1]))
    return x, y


def moments(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """One batch holding the data's second moments: xᵀx/n, yᵀx/n, yᵀy/n.

    The Gaussian loss of a linear network depends on the data only through them, so
    :func:`loss_and_grad` on this batch is the exact full-data loss at the cost of a few
    6×6 products: full-batch sampling, free of minibatch gradient noise.
    """
    n = len(x)
    return (x.T @ x / n)[None], (y.T @ x / n)[None], np.array([np.sum(y * y) / n])


def end_to_end(params: dict[str, np.ndarray]) -> np.ndarray:
    """The network's map W_L ⋯ W_1."""
    product = params["W1"]
    for layer in range(2, len(WIDTHS)):
        product = params[f"W{layer}"] @ product
    return product


def loss_and_grad(params: dict[str, np.ndarray], batch: tuple[np.ndarray, ...]
                  ) -> tuple[float, dict[str, np.ndarray]]:
    """L_n = mean over the data of ‖y − W3 W2 W1 x‖² / (2σ²), and its gradient, from the
    moments batch (the NumPy backend needs the gradient by hand)."""
    sxx, syx, syy = batch[0][0], batch[1][0], batch[2][0]
    depth = len(WIDTHS) - 1
    weights = [params[f"W{layer}"] for layer in range(1, depth + 1)]
    prefix = [np.eye(WIDTHS[0])]                      # prefix[k] = W_k ⋯ W_1
    for weight in weights:
        prefix.append(weight @ prefix[-1])
    product = prefix[-1]
    fitted = product @ sxx
    loss = (np.sum(fitted * product) - 2 * np.sum(syx * product) + syy) / (2 * NOISE_STD**2)
    outer = (fitted - syx) / NOISE_STD**2             # dL / d(W_L ⋯ W_1)
    grads: dict[str, np.ndarray] = {}
    suffix = np.eye(WIDTHS[-1])                       # W_L ⋯ W_{k+2}
    for k in range(depth - 1, -1, -1):
        grads[f"W{k + 1}"] = suffix.T @ outer @ prefix[k].T
        suffix = suffix @ weights[k]
    return float(loss), {key: grads[key] for key in sorted(grads)}


def train(x: np.ndarray, y: np.ndarray, save_at: Any, *, seed: int = 1
          ) -> tuple[np.ndarray, dict[int, dict[str, np.ndarray]]]:
    """Full-batch gradient descent from N(0, INIT_SCALE²) weights.

    Returns the training loss L_n after every step (``TRAIN_STEPS + 1`` values, step 0 first)
    and copies of the params at the steps in ``save_at``.
    """
    rng = np.random.default_rng(seed)
    params = {f"W{layer}": INIT_SCALE * rng.standard_normal((WIDTHS[layer], WIDTHS[layer - 1]))
              for layer in range(1, len(WIDTHS))}
    batch = moments(x, y)
    save_at = {int(step) for step in save_at}
    losses = np.empty(TRAIN_STEPS + 1)
    saved: dict[int, dict[str, np.ndarray]] = {}
    for step in range(TRAIN_STEPS + 1):
        loss, grads = loss_and_grad(params, batch)
        losses[step] = loss
        if step in save_at:
            saved[step] = {key: value.copy() for key, value in params.items()}
        if step < TRAIN_STEPS:
            for key in params:
                params[key] -= LEARNING_RATE * grads[key]
    return losses, saved


def learned_rank(params: dict[str, np.ndarray]) -> int:
    """How many of the teacher's singular values the network has learned."""
    return int(np.sum(np.linalg.svd(end_to_end(params), compute_uv=False) > LEARNED_THRESHOLD))


def regular_part(rank: int) -> float:
    """Half the dimension of the rank-``rank`` matrices of the network's shape: λ without the
    contribution of the degenerate directions (what a strong localization leaves)."""
    return (rank * (WIDTHS[0] + WIDTHS[-1]) - rank**2) / 2


def run(*, quick: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Train, estimate λ̂ at the checkpoints; returns everything the table and figure need."""
    started = time.perf_counter()
    x, y = make_data()
    steps = QUICK_STEPS if quick else CHECKPOINT_STEPS
    losses, saved = train(x, y, steps)
    trained = time.perf_counter() - started
    checkpoints = [saved[int(step)] for step in steps]
    trajectory = llc.estimate_trajectory(
        checkpoints, loss_and_grad, [moments(x, y)], steps=steps, num_data=NUM_DATA,
        progress=progress, **(QUICK_SETTINGS if quick else SETTINGS))
    ranks = np.array([learned_rank(params) for params in checkpoints])
    return {
        "trajectory": trajectory,
        "losses": losses,
        "ranks": ranks,
        "reference": np.array([dln_lambda(WIDTHS, int(rank)) for rank in ranks]),
        "regular": np.array([regular_part(int(rank)) for rank in ranks]),
        "true_lambda": dln_lambda(WIDTHS, len(SINGULAR_VALUES)),
        "train_seconds": trained,
        "seconds": time.perf_counter() - started,
    }


def plateau_table(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """Per learned rank: the median λ̂ and median MCSE over its checkpoints without a health
    finding (over all of them where every one has a finding), next to the references.

    The checkpoints of one plateau are nearly the same point sampled with the same seed, so
    their estimates are nearly the same numbers: averaging them would not shrink the error.
    """
    trajectory = outcome["trajectory"]
    means, mcse = trajectory.llc_mean, trajectory.llc_mcse
    flagged = np.array([bool(found) for found in trajectory.findings])
    rows = []
    for rank in np.unique(outcome["ranks"]):
        on_plateau = (outcome["ranks"] == rank) & np.isfinite(means)
        chosen = on_plateau & ~flagged if (on_plateau & ~flagged).any() else on_plateau
        rows.append({
            "rank": int(rank),
            "checkpoints": int(on_plateau.sum()),
            "flagged": int((on_plateau & flagged).sum()),
            "llc": float(np.median(means[chosen])),
            "mcse": float(np.median(mcse[chosen])),
            "reference": float(dln_lambda(WIDTHS, int(rank))),
            "regular": regular_part(int(rank)),
        })
    return rows


def draw(outcome: dict[str, Any], path: str | Path) -> Path:
    """The figure: λ̂ with the references on top, the training loss below."""
    import matplotlib.pyplot as plt

    trajectory = outcome["trajectory"]
    first = int(trajectory.steps[0]) // 2
    curve = np.unique(np.round(np.geomspace(first, TRAIN_STEPS, 2000)).astype(int))
    figure = trajectory.plot(
        log_x=True, training_loss=(curve, outcome["losses"][curve]),
        reference={"λ of a DLN of the learned rank (dln_lambda)": outcome["reference"],
                   "half the dimension of the rank-k maps": outcome["regular"]})
    ax_llc = figure.axes[0]
    final = trajectory.llc_mean[-1]
    ax_llc.text(0.98, 0.04, f"final λ̂ = {final:.2f} ± {trajectory.llc_mcse[-1]:.2f} (MCSE)\n"
                f"λ of the true rank 3 = {outcome['true_lambda']:g}", transform=ax_llc.transAxes,
                ha="right", va="bottom", fontsize=9)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one checkpoint per plateau, "
                        "fewer draws (about 20 s)")
    parser.add_argument("--out", default="docs/img/dln_trajectory.png",
                        help="where to write the figure ('' for none)")
    args = parser.parse_args(argv)
    outcome = run(quick=args.quick)
    trajectory = outcome["trajectory"]
    print(trajectory)
    print(f"\nlearned rank per checkpoint: {outcome['ranks'].tolist()}")
    print(f"abrupt changes of λ̂ at steps: {trajectory.jumps().tolist()}")
    print("\nrank  checkpoints (with findings)  median λ̂ ± MCSE  λ of the learned rank  "
          "half dim of rank-k maps")
    for row in plateau_table(outcome):
        print(f"{row['rank']:>4}  {row['checkpoints']:>11} ({row['flagged']:>2})"
              f"  {row['llc']:>15.2f} ± {row['mcse']:.2f}  {row['reference']:>21g}"
              f"  {row['regular']:>23g}")
    final, mcse = trajectory.llc_mean[-1], trajectory.llc_mcse[-1]
    true_lambda = outcome["true_lambda"]
    print(f"\nfinal λ̂ = {final:.3f} ± {mcse:.3f} (MCSE), λ of the true rank 3 = {true_lambda:g}, "
          f"error {100 * (final / true_lambda - 1):+.1f} %, MALA acceptance "
          f"{trajectory.mala_acceptance[-1]:.3f}")
    print(f"training {outcome['train_seconds']:.1f} s, total {outcome['seconds']:.1f} s")
    if args.out:
        print(f"figure: {draw(outcome, args.out)}")
    return outcome


if __name__ == "__main__":
    main()
