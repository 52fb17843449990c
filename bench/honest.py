"""The honest estimate on singular models: ``python -m bench.honest`` (also ``python -m bench
honest``).

1. **The trace's batch bias.** On deep linear networks with λ a few percent of d/2 (torch,
   float32, n = 10⁴, batch 500, ε = 1e-5, γ = 1, 8 × 2000 draws after 1000), λ̂ from the trace
   against λ̂ from the full-data loss L_n(w_t) at every 7th draw of the same chains
   (``full_loss_every=7``: 7 is prime to the 20 batches of an epoch, so the kept draws
   visit every position in the epoch), with the own batch of a shuffled epoch
   (``trace_batch="own"``, the old default) and with independent batches (the default). The
   gap is the trace minus the full-data value at the same draws, averaged per chain and then
   over the chains; z is the gap over its standard error across the 8 chains (Student's t
   with 7 degrees of freedom when the trace is unbiased). The pairing matters: these chains
   are still rising after 1000 burn-in steps, so the mean over every draw and the mean over
   every 49th differed by the trend (about +0.7 %), whatever the trace.
2. **Error bars against the spread over seeds.** A 64-4-10 tanh classifier of the digits
   (tests/_models.py; cross-entropy, 4 × 2000 draws after 500) at two settings, 8 seeds each:
   the standard deviation of λ̂ over seeds against the mean reported errors, and how often a
   run's interval holds the mean of the other 7 runs: ±1.96 × the autocorrelation MCSE (the
   old error bar) and ``llc_interval(0.95)`` (the new one).

Prints Markdown tables; docs/benchmarks.md keeps the last results.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import llc  # noqa: E402
from llc import problems  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

DLNS = (((16, 48, 48, 48, 16), 1), ((16, 32, 32, 32, 16), 1), ((12, 32, 32, 32, 12), 1))


def trace_bias(seed: int = 0) -> None:
    import torch  # noqa: F401

    print("| DLN widths (rank) | d | λ | trace | λ̂ trace (every draw) | λ̂ full (every 7th) | "
          "gap at the same draws | z | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for widths, rank in DLNS:
        problem = problems.DeepLinearNetwork(widths=widths, rank=rank)
        loss_fn, params, data = problem.in_backend("torch", 10_000, seed=seed, dtype="float32")
        for trace_batch in ("own", "independent"):
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", llc.LLCHealthWarning)
                result = llc.estimate(loss_fn, params, data, batch_size=500, step_size=1e-5,
                                      num_draws=2000, num_burnin=1000, full_loss_every=7,
                                      trace_batch=trace_batch, num_chains=8, seed=seed)
            seconds = time.perf_counter() - started
            gap = (result.llc_trace[:, ::7] - result.full_llc_trace).mean(axis=1)
            z = gap.mean() / (gap.std(ddof=1) / np.sqrt(gap.size))
            full = result.full_llc_mean
            print(f"| {'-'.join(map(str, widths))} ({rank}) | {problem.num_params} | "
                  f"{problem.true_lambda:g} | {trace_batch} | {result.llc_mean:.1f} | "
                  f"{full:.1f} | {100 * gap.mean() / full:+.1f} % | {z:.1f} | {seconds:.0f} |",
                  flush=True)


CLASSIFIER_SETTINGS = (
    ("γ = 10, ε = 2e-4, batch 256", dict(batch_size=256, step_size=2e-4, localization=10.0)),
    ("γ = 100, ε = 1e-4, batch 64", dict(batch_size=64, step_size=1e-4, localization=100.0)),
)


def error_bars(runs: int = 8) -> None:
    from _models import digits_classifier

    loss_fn, params, data = digits_classifier(hidden=4)
    print("| settings | trace | mean λ̂ | sd over seeds | mean MCSE (autocorr) | "
          "mean MCSE (reported) | coverage ±1.96 MCSE autocorr | coverage "
          "`llc_interval(0.95)` | findings |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, settings in CLASSIFIER_SETTINGS:
        for trace_batch in ("own", "independent"):
            results = []
            for seed in range(runs):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", llc.LLCHealthWarning)
                    results.append(llc.estimate(loss_fn, params, data, num_draws=2000,
                                                num_burnin=500, trace_batch=trace_batch,
                                                seed=seed, **settings))
            means = np.array([r.llc_mean for r in results])
            others = (means.sum() - means) / (runs - 1)
            autocorr = np.array([r.llc_mcse_autocorr for r in results])
            old = np.abs(means - others) <= 1.96 * autocorr
            intervals = np.array([r.llc_interval(0.95) for r in results])
            new = (intervals[:, 0] <= others) & (others <= intervals[:, 1])
            codes = sorted({f.code for r in results for f in r.findings})
            print(f"| {label} | {trace_batch} | {means.mean():.2f} | {means.std(ddof=1):.2f} | "
                  f"{autocorr.mean():.2f} | {np.mean([r.llc_mcse for r in results]):.2f} | "
                  f"{old.sum()}/{runs} | {new.sum()}/{runs} | {', '.join(codes) or '—'} |",
                  flush=True)


def main() -> None:
    print("### The trace against the full-data loss at the same draws\n")
    trace_bias()
    print("\n### Error bars against the spread over seeds (digits classifier)\n")
    error_bars()


if __name__ == "__main__":
    main()
