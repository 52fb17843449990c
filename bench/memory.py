"""Peak memory of long runs: ``python -m bench.memory`` (OMP_NUM_THREADS=1).

Each configuration runs in a fresh subprocess; the peak is read with ``tracemalloc`` (every
NumPy and Python allocation; torch's own allocator is not traced, so torch rows report the
peak resident set size growth instead). A run keeps O(chains × params) working memory plus
the traces: the peak minus the traces' size must not grow with the number of draws.

After that table it prints the two tables of :mod:`bench.scaling` (``python -m bench.scaling``
prints only those): the peak memory of ``llc.estimate`` against a plain SGD loop, and the time
per step and peak memory against the number of chains and of parameters. ``--plot PNG`` also
draws the scaling plot (docs/img/scaling.png).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

CHILD = r"""
import json, resource, sys, tracemalloc, warnings
import numpy as np
import llc
backend, draws, keep = sys.argv[1], int(sys.argv[2]), sys.argv[3]
problem = llc.problems.DeepLinearNetwork((4, 5, 3, 4), rank=2)
data, params = problem.setup(10_000, seed=0)
loss_fn = problem.loss_and_grad
if backend == "torch":
    import torch
    params = {k: torch.tensor(v) for k, v in params.items()}
    loss_fn = problem.loss
warnings.simplefilter("ignore")
settings = dict(step_size=3e-5, batch_size=500, num_chains=4, num_draws=draws, num_burnin=100,
                progress=False, mala_every=20,
                keep_params_every=None if keep == "none" else int(keep))
llc.estimate(loss_fn, params, data, **{**settings, "num_draws": 10})  # warm up imports, caches
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
result = llc.estimate(loss_fn, params, data, **settings)
_, peak = tracemalloc.get_traced_memory()
rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
traces = sum(v.nbytes for v in result.sample_stats.values()) + result.llc_trace.nbytes \
    + result.loss_trace.nbytes + (0 if result.param_draws is None else result.param_draws.nbytes)
print(json.dumps({"peak": peak, "traces": traces, "rss_growth": (rss_after - rss_before) * 1024,
                  "params": int(result.attrs["num_params"])}))
"""


def measure(backend: str, draws: int, keep: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, backend, str(draws), keep],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot", metavar="PNG", help="save the scaling plot there")
    args = parser.parse_args()
    long_runs()
    from bench import scaling

    scaling.run_tables(plot_path=args.plot)


def long_runs() -> None:
    mib = 2**20
    print("| backend | draws per chain (4 chains) | keep_params_every | traced peak | traces "
          "| peak − traces | RSS growth |")
    print("|---|---|---|---|---|---|---|")
    for backend in ("numpy", "torch"):
        for draws, keep in ((1_000, "none"), (10_000, "none"), (50_000, "none"), (10_000, "10")):
            row = measure(backend, draws, keep)
            print(f"| {backend} | {draws} | {keep} | {row['peak'] / mib:.2f} MiB | "
                  f"{row['traces'] / mib:.2f} MiB | {(row['peak'] - row['traces']) / mib:.2f} MiB "
                  f"| {row['rss_growth'] / mib:.1f} MiB |")


if __name__ == "__main__":
    main()
