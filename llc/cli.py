"""Command line: ``llc demo`` (also ``python -m llc demo``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ._backend import available_backends

__all__ = ["main", "demo"]

# The demo problem and the settings that recover its λ within 10 % (docs/benchmarks.md).
DEMO_PROBLEM: dict[str, Any] = dict(widths=(4, 5, 3, 4), rank=2)
DEMO_SETTINGS: dict[str, Any] = dict(
    num_data=10_000,
    batch_size=500,
    step_size=3e-5,
    localization=1.0,
    num_chains=4,
    num_draws=4000,
    num_burnin=1000,
    baseline="minibatch",
)
_PREFERENCE = ("torch", "jax", "tensorflow", "numpy")


def _best_backend() -> str:
    installed = available_backends()
    return next(name for name in _PREFERENCE if name in installed)


def demo(backend: str | None = None, *, device: str | None = None,
         out: str | Path | None = None, seed: int = 0, progress: bool = True,
         step_size: float | str | None = None) -> dict[str, Any]:
    """Estimate λ̂ of a deep linear network whose λ is known in closed form, and report it.

    Parameters
    ----------
    backend
        ``"numpy"``, ``"torch"``, ...; default the best installed.
    device
        The framework's device for params and data (e.g. ``"cuda"``); default its default.
    out
        A folder for ``demo.nc`` (the ArviZ DataTree) and ``demo_diagnostics.png`` (the trace plot,
        when matplotlib is installed).
    seed
        Seed of the data and of the sampler.
    progress
        Show the progress bar on stderr.
    step_size
        The SGLD step size, or ``"auto"`` (``llc.estimate``'s adaptation during the burn-in);
        default the validated 3e-5.

    Returns
    -------
    dict
        ``llc``, ``mcse``, ``true_lambda``, ``relative_error``, ``rhat``, ``ess_bulk``,
        ``seconds`` and the ``result`` itself.
    """
    from . import problems
    from ._estimate import estimate

    started = time.perf_counter()
    name = backend or _best_backend()
    problem = problems.DeepLinearNetwork(**DEMO_PROBLEM)
    settings = dict(DEMO_SETTINGS)
    if step_size is not None:
        settings["step_size"] = step_size
    n = settings.pop("num_data")
    loss_fn, params, data = problem.in_backend(name, n, seed=seed, device=device)
    result = estimate(loss_fn, params, data, seed=seed,
                      progress=progress, **settings)
    seconds = time.perf_counter() - started
    report: dict[str, Any] = {
        "llc": result.llc_mean,
        "mcse": result.llc_mcse,
        "true_lambda": problem.true_lambda,
        "relative_error": result.llc_mean / problem.true_lambda - 1.0,
        "rhat": result.rhat,
        "ess_bulk": result.ess_bulk,
        "ess_tail": result.ess_tail,
        "seconds": seconds,
        "result": result,
        "problem": problem,
    }
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        report["files"] = []
        try:
            result.to_arviz().to_netcdf(folder / "demo.nc", engine="h5netcdf")
        except (ImportError, ValueError) as error:  # h5netcdf missing: xarray says ValueError
            print(f"(could not write demo.nc: {error}; "
                  "pip install 'local-learning-coefficient[netcdf]')",
                  file=sys.stderr)
        else:
            report["files"].append(str(folder / "demo.nc"))
        try:
            figure = result.plot(true_lambda=problem.true_lambda)
        except ImportError:
            print("(matplotlib not installed: no trace plot; "
                  "pip install 'local-learning-coefficient[plots]')",
                  file=sys.stderr)
        else:
            figure.savefig(folder / "demo_diagnostics.png", dpi=120)
            report["files"].append(str(folder / "demo_diagnostics.png"))
    return report


def _step_size(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number or 'auto'; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto'; got {text!r}")
    return value


def _print_report(report: dict[str, Any]) -> None:
    lines = [
        f"problem: {report['problem']!r}, true λ = {report['true_lambda']:g}, "
        f"error {100 * report['relative_error']:+.1f} %",
        str(report["result"]),
        f"demo time: {report['seconds']:.1f} s",
    ]
    lines += [f"wrote {path}" for path in report.get("files", [])]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``llc`` command."""
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="llc", description="Local learning coefficient tools.")
    parser.add_argument("--version", action="version", version=f"llc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="estimate λ̂ of a deep linear network with known λ and report it"
    )
    demo_parser.add_argument("--backend", choices=available_backends(), default=None,
                             help="framework to run on (default: the best installed)")
    demo_parser.add_argument("--device", default=None,
                             help="device of the params and data, e.g. cuda (default: the CPU)")
    demo_parser.add_argument("--out", type=Path, default=None,
                             help="folder for the DataTree (demo.nc) and trace plot (PNG)")
    demo_parser.add_argument("--seed", type=int, default=0,
                             help="seed of the data and of the sampler (default: 0)")
    demo_parser.add_argument("--step-size", type=_step_size, default=None,
                             help="SGLD step size or 'auto' (default: the validated 3e-5)")
    demo_parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.command == "demo":
        report = demo(args.backend, device=args.device, out=args.out, seed=args.seed,
                      progress=not args.no_progress, step_size=args.step_size)
        _print_report(report)
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
