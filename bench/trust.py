"""Figures and findings for docs/trust.md: ``python -m bench.trust`` (writes docs/img/trust_*.png).

Three runs on the deep linear network of the demo (λ = 7): healthy, a too-large step, and a
w* that is not a minimum (a checkpoint before convergence); then λ̂ and the MALA acceptance
over a range of step sizes (the table "acceptance is necessary, not sufficient").
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import llc  # noqa: E402
from llc.cli import DEMO_PROBLEM, DEMO_SETTINGS  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "img"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    problem = llc.problems.DeepLinearNetwork(**DEMO_PROBLEM)
    settings = dict(DEMO_SETTINGS)
    n = settings.pop("num_data")
    data, params = problem.setup(n, seed=0)
    rng = np.random.default_rng(1)
    unconverged = {key: value + 0.02 * rng.standard_normal(value.shape)
                   for key, value in params.items()}
    runs = {
        "healthy": (params, {}),
        "large_step": (params, {"step_size": 3e-4}),
        "not_minimum": (unconverged, {}),
    }
    for name, (point, override) in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = llc.estimate(problem.loss_and_grad, point, data, progress=False,
                                  **{**settings, **override})
        figure = result.plot(true_lambda=problem.true_lambda)
        figure.savefig(OUT / f"trust_{name}.png", dpi=80)
        print(f"## {name} {override}\n")
        print(result)
        print()
    print("| step size | λ̂ | error | MALA acceptance |")
    print("|---|---|---|---|")
    for step_size in (1e-5, 3e-5, 5e-5, 1e-4, 3e-4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = llc.estimate(problem.loss_and_grad, params, data, progress=False,
                                  **{**settings, "step_size": step_size})
        error = result.llc_mean / problem.true_lambda - 1
        print(f"| {step_size:g} | {result.llc_mean:.2f} | {100 * error:+.1f} % | "
              f"{result.mala_acceptance:.3f} |", flush=True)


if __name__ == "__main__":
    main()
