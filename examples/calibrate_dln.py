"""Choosing the step size with ``llc.calibrate`` on the demo's deep linear network.

The network of ``llc demo`` (widths (4, 5, 3, 4), rank 2, λ = 7, n = 10 000) on the NumPy
backend, with the default grid: seven step sizes with ε·nβ from 1e-3 to 1 in half decades,
nβ = n / log n, γ = 1, 4 chains × 1000 draws after 500 burn-in steps per step size.
Run ``python examples/calibrate_dln.py`` (about 10 s on one CPU core) to print the table of
docs/calibration.md; ``--out DIR`` also writes the figure ``DIR/calibration_dln.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import llc


def main(out: Path | None = None) -> llc.CalibrationResult:
    problem = llc.problems.DeepLinearNetwork((4, 5, 3, 4), rank=2)   # λ = 7
    loss_fn, params, data = problem.in_backend("numpy", 10_000)
    calibration = llc.calibrate(loss_fn, params, data, batch_size=500, progress=False)
    print(calibration)
    if out is not None:
        import matplotlib.pyplot as plt

        out.mkdir(parents=True, exist_ok=True)
        figure = calibration.plot(true_lambda=problem.true_lambda)
        figure.savefig(out / "calibration_dln.png", dpi=90)
        plt.close(figure)
    return calibration


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the figure")
    main(parser.parse_args().out)
