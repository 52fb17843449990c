"""Benchmarks of llc: ``python -m bench [demo|known-lambda|auto|samplers|dln_scale|singular|
sampling_options|honest|perf|all]``.

``demo``          the ``llc demo`` run per installed backend: λ̂, error, R-hat, ESS, seconds.
``known-lambda``  the known-λ suite at the test settings (tests/test_known_lambda.py) per
                  backend, with the MCSE of the two baselines measured on the same chains.
``auto``          ``step_size="auto"`` against a grid of fixed step sizes on the known-λ
                  suite (NumPy backend): λ̂, error, MALA acceptance, chosen step, seconds.
``samplers``      each sampler's λ̂ error on a DLN and an RRR over a grid of step sizes at a
                  matched number of per-sample gradient evaluations, and the range of steps
                  within 10 % of λ.
``dln_scale``     Furman & Lau's random deep linear networks of a size class (1K–100M
                  parameters): λ̂ at the paper's step and with ``step_size="auto"``
                  (``bench.dln_scale``; arguments after it are passed on, e.g. ``--size 10K``).
``singular``      ``step_size="auto"`` against fixed steps on singular DLNs (λ ≤ 5 % of d/2)
                  in torch and JAX, issue 17's protocol (``bench.singular``; arguments
                  after it are passed on, e.g. ``--models 0,1 --backends torch``).
``sampling_options``  devinterp's initial noise, bounding box and weight-decay prior against
                  plain SGLD on the known-λ suite (``bench.sampling_options``).
``honest``        the trace against L_n(w_t) at the same draws on singular deep linear
                  networks, and the error bars against the spread over seeds on a trained
                  classifier (``bench.honest``).
``perf``          the performance benchmarks, each its own module (also runnable alone):
                  ``bench.speed`` (llc against plain SGD and SGD + noise per backend, 1/4/16
                  chains, vectorized or not), ``bench.profile_step`` (where a step's time
                  goes), ``bench.torch_chains`` (torch.func.vmap against the loop),
                  ``bench.memory`` (memory of long runs, peak memory against SGD, scaling
                  with chains and parameters, the plot docs/img/scaling.png),
                  ``bench.param_memory`` (parameter-sized arrays alive at a step's peak, on
                  a 16.8 M-parameter layer), ``bench.compile_reuse`` (JAX programs
                  compiled once and reused across calls) and ``bench.devinterp`` (llc against
                  devinterp end to end, when devinterp is installed: see that module).

``all`` (the default, ``make bench``) runs every one of them, with OMP_NUM_THREADS=1.

Prints Markdown tables; docs/benchmarks.md keeps the last results.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import importlib.util  # noqa: E402

import numpy as np  # noqa: E402

import llc  # noqa: E402

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)  # the float64 rows
from llc.cli import demo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")


def bench_demo() -> None:
    print("\n### `llc demo` per backend\n")
    print("| backend | λ | λ̂ ± MCSE | error | R-hat | ESS bulk | seconds |")
    print("|---|---|---|---|---|---|---|")
    for backend in llc.available_backends():
        report = demo(backend, progress=False)
        print(f"| {backend} | {report['true_lambda']:g} "
              f"| {report['llc']:.3f} ± {report['mcse']:.3f} "
              f"| {100 * report['relative_error']:+.1f} % | {report['rhat']:.3f} "
              f"| {report['ess_bulk']:.0f} | {report['seconds']:.1f} |")


def bench_known_lambda() -> None:
    from conftest import BackendCase
    from test_known_lambda import (MONOMIAL_SETTINGS, NUM_DATA, OVERRIDES, PROBLEMS,
                                   SETTINGS)

    import arviz_base
    import arviz_stats

    def mcse(trace: np.ndarray) -> float:
        tree = arviz_base.from_dict({"posterior": {"llc": trace}})
        return float(arviz_stats.mcse(tree, var_names=["llc"])["llc"])

    print("\n### Known-λ suite at the test settings\n")
    print(f"n = {NUM_DATA}, settings: {SETTINGS}; overrides: {OVERRIDES}\n")
    print("| problem | backend | λ | λ̂ ± MCSE | error | R-hat | ESS bulk "
          "| MCSE, full-data baseline | MCSE, minibatch baseline | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    backends = [name for name in ("numpy", "torch", "jax", "tensorflow")
                if name in llc.available_backends()]
    for name, problem in PROBLEMS.items():
        for backend in backends:
            case = BackendCase(backend, "cpu", "float64")
            loss_fn, params, data = case.problem(problem, NUM_DATA)
            started = time.perf_counter()
            result = llc.estimate(loss_fn, params, data, **{**SETTINGS, **OVERRIDES.get(name, {})})
            seconds = time.perf_counter() - started
            full = result.nbeta * (result.loss_trace - result.init_loss)
            error = result.llc_mean / problem.true_lambda - 1
            print(f"| {name} | {backend} | {problem.true_lambda:g} | {result.llc_mean:.3f} ± "
                  f"{result.llc_mcse:.3f} | {100 * error:+.1f} % | {result.rhat:.3f} | "
                  f"{result.ess_bulk:.0f} | {mcse(full):.3f} (λ̂ {full.mean():.3f}) | "
                  f"{result.llc_mcse:.3f} | {seconds:.1f} |")

    print("\n### Monomial w1² w2⁴ (λ = 1/4) against the exact finite-nβ expectation\n")
    print(f"settings: {MONOMIAL_SETTINGS}\n")
    print("| nβ | step size | exact E[nβ K] | λ̂ ± MCSE | (λ̂ − exact) / MCSE | exact / λ |")
    print("|---|---|---|---|---|---|")
    problem = llc.problems.Monomial((1, 2))
    data, params = problem.setup(100, seed=0)
    for nbeta, step_size in ((1e3, 1e-3), (1e4, 3e-4)):
        result = llc.estimate(problem.loss_and_grad, params, data, nbeta=nbeta,
                              **{**MONOMIAL_SETTINGS, "step_size": step_size})
        exact = problem.exact_expectation(nbeta, MONOMIAL_SETTINGS["localization"])
        print(f"| {nbeta:g} | {step_size:g} | {exact:.4f} | {result.llc_mean:.4f} ± "
              f"{result.llc_mcse:.4f} | {(result.llc_mean - exact) / result.llc_mcse:+.1f} | "
              f"{exact / 0.25:.2f} |")


def bench_auto(seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5),
               grid: tuple[float, ...] = (1e-5, 3e-5, 1e-4)) -> None:
    from test_known_lambda import NUM_DATA, OVERRIDES, PROBLEMS, SETTINGS

    def stratified_se(values: dict) -> float:
        """Standard error of the mean over problems and seeds, the problems fixed: the
        seeds' spread within each problem, √(Σ_p s_p² / S_p) / P."""
        terms = [np.var(v, ddof=1) / len(v) for v in values.values() if len(v) > 1]
        return float(math.sqrt(sum(terms)) / len(values)) if terms else float("nan")

    choices = (*grid, "auto")
    print("\n### `step_size=\"auto\"` against fixed step sizes (NumPy backend)\n")
    print(f"n = {NUM_DATA}, settings as the known-λ suite except the step and 4 chains; "
          f"seeds {seeds}; "
          "|error| is |λ̂/λ − 1|, its mean over the seeds ± its standard error; for auto, "
          "b̂ is the rule's estimated step bias at the frozen step (`attrs[\"step_size_bias\"]`)\n")
    print("| problem | λ | step | step used | λ̂ per seed | mean abs error | mean signed error "
          "| MALA acceptance | CPU s per run |")
    print("|---|---|---|---|---|---|---|---|---|")
    errors: dict = {choice: {} for choice in choices}  # step -> problem -> |error| per seed
    signed: dict = {choice: {} for choice in choices}
    seconds: dict = {choice: [] for choice in choices}
    for name, problem in PROBLEMS.items():
        data, params = problem.setup(NUM_DATA, seed=0)
        for step in choices:
            estimates, acceptances, used, biases = [], [], [], []
            errs = errors[step].setdefault(name, [])
            sign = signed[step].setdefault(name, [])
            for seed in seeds:
                settings = {**SETTINGS, **OVERRIDES.get(name, {}), "step_size": step,
                            "seed": seed, "num_chains": 4}
                started = time.process_time()  # CPU s: robust to a shared machine
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        result = llc.estimate(problem.loss_and_grad, params, data, **settings)
                    except RuntimeError:  # every chain diverged
                        estimates.append(float("nan"))
                        errs.append(float("inf"))
                        continue
                seconds[step].append(time.process_time() - started)
                estimates.append(result.llc_mean)
                errs.append(abs(result.llc_mean / problem.true_lambda - 1))
                sign.append(result.llc_mean / problem.true_lambda - 1)
                acceptances.append(result.mala_acceptance)
                used.append(float(result.attrs["sampler_step_size"]))
                if step == "auto":
                    biases.append(float(result.attrs["step_size_bias"]))
            label = step if isinstance(step, str) else f"{step:g}"
            spread = (np.std(errs, ddof=1) / math.sqrt(len(errs))) if len(errs) > 1 else math.nan
            steps_used = (f"{min(used):.2g}–{max(used):.2g} (b̂ {np.mean(biases):.2f})" if biases
                          else f"{used[0]:.2g}" if used else "—")
            print(f"| {name} | {problem.true_lambda:g} | {label} | {steps_used} | "
                  f"{', '.join(f'{e:.2f}' for e in estimates)} | "
                  f"{100 * float(np.mean(errs)):.1f} ± {100 * spread:.1f} % | "
                  f"{100 * float(np.mean(sign)) if sign else float('nan'):+.1f} % | "
                  f"{float(np.mean(acceptances)) if acceptances else float('nan'):.4f} | "
                  f"{_mean_or_nan(seconds[step][-len(seeds):]):.1f} |",
                  flush=True)
    print(f"\nOver the {len(PROBLEMS)} problems × {len(seeds)} seeds (± the standard error, "
          "from the seeds' spread within each problem):\n")
    print("| step | mean abs error | per problem | auto − this step (paired by seed) "
          "| CPU s per run |")
    print("|---|---|---|---|---|")
    for step in choices:
        label = step if isinstance(step, str) else f"{step:g}"
        mean = float(np.mean([np.mean(v) for v in errors[step].values()]))
        per_problem = ", ".join(f"{100 * float(np.mean(v)):.1f}" for v in errors[step].values())
        if step == "auto":
            paired = "—"
        else:
            differences = {name: list(np.subtract(errors["auto"][name], errors[step][name]))
                           for name in errors[step]}
            change = float(np.mean([np.mean(v) for v in differences.values()]))
            paired = f"{100 * change:+.1f} ± {100 * stratified_se(differences):.1f} %"
        print(f"| {label} | {100 * mean:.1f} ± {100 * stratified_se(errors[step]):.1f} % | "
              f"{per_problem} % | {paired} | {float(np.mean(seconds[step])):.1f} |", flush=True)


def bench_samplers() -> None:
    from test_known_lambda import NUM_DATA, PROBLEMS

    batch, chains, burnin, draws = 500, 4, 1000, 4000
    budget = (burnin + draws) * batch  # per-sample gradient evaluations per chain
    # raw step grids covering each sampler's usable range (SGLD-equivalent ε noted)
    grids = {
        "sgld": [3e-6, 1e-5, 3e-5, 1e-4, 3e-4],
        "rmsprop_sgld": [3e-8, 1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5],
        "sghmc": [1.5e-6, 5e-6, 1.5e-5, 5e-5, 1.5e-4],        # η = ε/2, friction 0.1
        "sgnht": [1.2e-3, 2.2e-3, 3.9e-3, 7.1e-3, 1.2e-2],   # h ≈ √(ε/2)
        "mala": [3e-6, 1e-5, 3e-5, 1e-4, 3e-4],
    }
    print("\n### Samplers at a matched number of gradient evaluations (NumPy backend)\n")
    print(f"n = {NUM_DATA}, γ = 1, nβ = n / log n, {chains} chains, seed 0, minibatch baseline; "
          f"every sampler gets {budget:,} per-sample gradient evaluations per chain: "
          f"{burnin} + {draws} steps of batch {batch} for the minibatch samplers; the "
          "full-batch MALA (2 gradients of n rows per step) gets "
          f"{budget // (2 * NUM_DATA)} steps, a fifth of them burn-in.\n")
    summary = []
    for name in ("dln-4-5-3-4-r2", "rrr-5-3-5-r2"):
        problem = PROBLEMS[name]
        data, params = problem.setup(NUM_DATA, seed=0)
        print(f"\n{name} (λ = {problem.true_lambda:g})\n")
        print("| sampler | step | λ̂ ± MCSE | error | MALA acceptance | failed chains | seconds |")
        print("|---|---|---|---|---|---|---|")
        for sampler, grid in grids.items():
            within = []
            best = (math.inf, None)
            for step in grid:
                if sampler == "mala":
                    steps = budget // (2 * NUM_DATA)
                    settings = dict(batch_size=NUM_DATA, num_burnin=steps // 5,
                                    num_draws=steps - steps // 5, mala_every=1)
                else:
                    settings = dict(batch_size=batch, num_burnin=burnin, num_draws=draws)
                started = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        result = llc.estimate(problem.loss_and_grad, params, data,
                                              sampler=sampler, step_size=step,
                                              num_chains=chains, baseline="minibatch",
                                              seed=0, progress=False, **settings)
                    except RuntimeError:
                        print(f"| {sampler} | {step:g} | all chains diverged | | | {chains} | |")
                        continue
                error = result.llc_mean / problem.true_lambda - 1
                if abs(error) < 0.10:
                    within.append(step)
                if abs(error) < best[0]:
                    best = (abs(error), step)
                acceptance = result.mala_acceptance
                print(f"| {sampler} | {step:g} | {result.llc_mean:.3f} ± {result.llc_mcse:.3f} "
                      f"| {100 * error:+.1f} % | "
                      f"{'—' if not np.isfinite(acceptance) else f'{acceptance:.3f}'} | "
                      f"{int(result.failed_chains.sum())} | "
                      f"{time.perf_counter() - started:.1f} |", flush=True)
            span = (f"{min(within):g} – {max(within):g} ({len(within)} of {len(grid)} steps; "
                    f"×{max(within) / min(within):.0f})" if within else "none")
            summary.append((name, sampler, best, span))
    print("\n| problem | sampler | smallest error (step) | steps within 10 % of λ |")
    print("|---|---|---|---|")
    for name, sampler, (error, step), span in summary:
        print(f"| {name} | {sampler} | {100 * error:.1f} % ({step:g}) | {span} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all",
                        choices=("demo", "known-lambda", "auto", "samplers", "dln_scale",
                                 "singular", "sampling_options", "honest", "perf", "all"))
    args, rest = parser.parse_known_args()
    if args.which == "dln_scale":  # not part of "all": its classes take minutes to hours
        from bench.dln_scale import main as bench_dln_scale

        bench_dln_scale(rest)
        return
    if args.which == "sampling_options":  # not part of "all": a decision, measured once
        from bench.sampling_options import main as bench_sampling_options

        bench_sampling_options()
        return
    if args.which == "singular":  # not part of "all": about an hour on one CPU core
        from bench.singular import main as bench_singular

        bench_singular(rest)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    print(f"machine: {_machine()}; llc {llc.__version__}; backends {llc.available_backends()}")
    if args.which in ("demo", "all"):
        bench_demo()
    if args.which in ("known-lambda", "all"):
        bench_known_lambda()
    if args.which in ("auto", "all"):
        bench_auto()
    if args.which in ("samplers", "all"):
        bench_samplers()
    if args.which in ("honest", "all"):
        from bench.honest import main as bench_honest

        bench_honest()
    if args.which in ("perf", "all"):
        bench_performance()


PERFORMANCE_MODULES = (("bench.speed", ()), ("bench.profile_step", ()), ("bench.torch_chains", ()),
                       ("bench.memory", ("--plot", str(ROOT / "docs" / "img" / "scaling.png"))),
                       ("bench.param_memory", ()), ("bench.compile_reuse", ()),
                       ("bench.devinterp", ()))


def bench_performance() -> None:
    """Each performance benchmark in a fresh interpreter (they measure memory and compile
    times, which an earlier benchmark in the same process would distort)."""
    import subprocess

    for module, arguments in PERFORMANCE_MODULES:
        print(f"\n### python -m {module} {' '.join(arguments)}\n", flush=True)
        subprocess.run([sys.executable, "-m", module, *arguments], cwd=ROOT, check=True)


def _mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


if __name__ == "__main__":
    main()
