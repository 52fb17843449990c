"""devinterp's sampling options, measured before deciding whether llc adopts them:
``python -m bench.sampling_options`` (also ``python -m bench sampling_options``).

devinterp's SGLD offers three knobs llc does not have: an **initial noise** around w* (the
chains start at w* + σξ), a **bounding box** that clamps every coordinate of w − w* to
[−B, B] after each step, and a **weight-decay prior** (λ_wd w added to the drift, a Gaussian
prior at 0 on top of the localization at w*). Each is applied here as a wrapper around llc's
SGLD (NumPy backend), on the known-λ suite at the suite's settings (n = 10⁴, batch 500,
ε = 3e-5, γ = 1, 4 chains × 4000 draws after 1000, seeds 0–2), against plain SGLD on the same
seeds. Prints a Markdown table; docs/estimator.md records the decision.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import llc  # noqa: E402
from llc.samplers import SGLD, SamplingAlgorithm, SGLDState  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

STEP = 3e-5
SEEDS = (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class ModifiedSGLD:
    """SGLD with one of devinterp's options: ``init_noise`` σ, ``box`` B, ``weight_decay``
    λ_wd (NumPy positions)."""

    step_size: float
    init_noise: float = 0.0
    box: float | None = None
    weight_decay: float = 0.0
    name: str = "sgld"

    def build(self, posterior: Any) -> SamplingAlgorithm:
        inner = SGLD(self.step_size).build(posterior)
        center = np.asarray(posterior.center)
        starts = iter(np.random.default_rng(12345).standard_normal((64, center.size)))

        def init(position: np.ndarray) -> SGLDState:
            return SGLDState(position=position + self.init_noise * next(starts))

        def step(key: Any, state: SGLDState, batch: Any, diagnose: bool = False) -> Any:
            new, info = inner.step(key, state, batch, diagnose)
            position = new.position
            if self.weight_decay:  # the drift gains λ_wd w: w ← w − (ε/2) λ_wd w
                position = position - 0.5 * self.step_size * self.weight_decay * state.position
            if self.box is not None:
                position = center + np.clip(position - center, -self.box, self.box)
            return SGLDState(position=position), info

        return SamplingAlgorithm(init, step)

    def settings(self) -> dict[str, Any]:
        return {"step_size": self.step_size}


OPTIONS = {
    "plain SGLD": {},
    "init noise σ = 0.01": {"init_noise": 0.01},
    "init noise σ = 0.1": {"init_noise": 0.1},
    "bounding box B = 0.3": {"box": 0.3},
    "bounding box B = 1": {"box": 1.0},
    "weight decay 1e-2": {"weight_decay": 1e-2},
    "weight decay 1": {"weight_decay": 1.0},
}


def main() -> None:
    from test_known_lambda import NUM_DATA, OVERRIDES, PROBLEMS, SETTINGS

    print("\n### devinterp's sampling options on the known-λ suite (NumPy backend)\n")
    print(f"n = {NUM_DATA}, ε = {STEP:g}, γ = 1, 4 chains, the suite's draws; seeds {SEEDS}; "
          "error of the mean λ̂ over the seeds\n")
    print("| option | " + " | ".join(f"{name} (λ = {p.true_lambda:g})"
                                     for name, p in PROBLEMS.items()) + " | mean abs error |")
    print("|---|" + "---|" * (len(PROBLEMS) + 1))
    for label, option in OPTIONS.items():
        cells, errors = [], []
        started = time.process_time()
        for name, problem in PROBLEMS.items():
            data, params = problem.setup(NUM_DATA, seed=0)
            estimates = []
            for seed in SEEDS:
                settings = {**SETTINGS, **OVERRIDES.get(name, {}), "seed": seed,
                            "num_chains": 4}
                settings.pop("step_size")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = llc.estimate(problem.loss_and_grad, params, data,
                                          sampler=ModifiedSGLD(STEP, **option), **settings)
                estimates.append(result.llc_mean)
            error = np.mean(estimates) / problem.true_lambda - 1
            errors.append(abs(error))
            cells.append(f"{np.mean(estimates):.2f} ({100 * error:+.1f} %)")
        print(f"| {label} | " + " | ".join(cells) + f" | {100 * np.mean(errors):.1f} % |",
              flush=True)
        del started


if __name__ == "__main__":
    main()
