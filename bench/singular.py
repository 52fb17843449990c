"""``step_size="auto"`` against fixed steps on singular deep linear networks, in torch and JAX:
``python -m bench.singular [--models 0,1,...] [--backends torch,jax] [--samplers sgld,...]``.

Issue 17's protocol: DLNs whose λ (Aoyagi) is at most 5 % of d/2, n = 10⁴, batch 500,
nβ = n / log n, γ = 1, float32, 4 chains × 2000 draws after 1000 burn-in steps, seed 0. For
each model and backend: λ̂ at the fixed steps 3e-6, 1e-5, 3e-5 (a ×3 grid around the step
that read λ within a few percent on these models) and with ``step_size="auto"``; the error,
the chosen step, whether the burn-in's λ̂ had settled, the findings and seconds. Then the
median and worst |error| per column and the points by which auto trails the best fixed step.

Prints Markdown tables; docs/step_size_auto.md keeps the last results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import llc  # noqa: E402
from llc.problems import DeepLinearNetwork  # noqa: E402

#: (widths, rank): 1.5k–18k parameters, depths 3–6, ranks 1–3, λ/(d/2) from 0.012 to 0.042.
MODELS = (
    ((8, 24, 24, 24, 8), 1),
    ((10, 40, 40, 10), 2),
    ((12, 64, 64, 12), 2),
    ((12, 40, 40, 40, 40, 12), 2),
    ((10, 60, 60, 60, 10), 3),
    ((16, 64, 64, 64, 64, 64, 16), 1),
)
FIXED_STEPS = (3e-6, 1e-5, 3e-5)
SETTINGS = dict(batch_size=500, localization=1.0, num_chains=4, num_draws=2000,
                num_burnin=1000, seed=0, progress=False)


def _run(problem: DeepLinearNetwork, backend: str, step: float | str, sampler: str
         ) -> dict[str, object]:
    loss_fn, params, data = problem.in_backend(backend, 10_000, seed=0, dtype="float32")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = llc.estimate(loss_fn, params, data, step_size=step, sampler=sampler,
                              **SETTINGS)
    return {"llc": result.llc_mean, "mcse": result.llc_mcse,
            "step": float(result.attrs["sampler_step_size"]),
            "settled": str(result.attrs.get("step_size_settled", "-"))[:3],
            "findings": ", ".join(f.code for f in result.findings) or "—",
            "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(map(str, range(len(MODELS)))))
    parser.add_argument("--backends", default="torch,jax")
    parser.add_argument("--samplers", default="sgld")
    args = parser.parse_args(argv)
    models = [MODELS[int(i)] for i in args.models.split(",")]
    columns = [*FIXED_STEPS, "auto"]
    for sampler in args.samplers.split(","):
        for backend in args.backends.split(","):
            errors: dict[object, list[float]] = {column: [] for column in columns}
            print(f"\n### {sampler}, {backend} (float32)\n")
            print("| model | d | λ | λ/(d/2) | step | ε used | λ̂ ± MCSE | error | settled | "
                  "findings | s |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for widths, rank in models:
                problem = DeepLinearNetwork(widths, rank)
                lam, d = problem.true_lambda, problem.num_params
                for column in columns:
                    if sampler != "sgld" and column != "auto":
                        continue
                    row = _run(problem, backend, column, sampler)
                    error = row["llc"] / lam - 1
                    errors[column].append(abs(error))
                    print(f"| {'-'.join(map(str, widths))} r{rank} | {d} | {lam:g} | "
                          f"{lam / (d / 2):.3f} | {column} | {row['step']:.2g} | "
                          f"{row['llc']:.1f} ± {row['mcse']:.1f} | {100 * error:+.0f} % | "
                          f"{row['settled']} | {row['findings']} | {row['seconds']:.0f} |",
                          flush=True)
            print("\n| step | median abs error | worst |\n|---|---|---|")
            for column, values in errors.items():
                if values:
                    print(f"| {column} | {100 * statistics.median(values):.0f} % | "
                          f"{100 * max(values):.0f} % |")
            if all(errors[c] for c in columns):
                trail = [auto - min(errors[c][i] for c in FIXED_STEPS)
                         for i, auto in enumerate(errors["auto"])]
                print(f"\nauto − best fixed step, per model: "
                      f"{', '.join(f'{100 * t:+.0f}' for t in trail)} points")


if __name__ == "__main__":
    main()
