"""Peak memory against plain SGD, and growth with chains and parameters.

``python -m bench.scaling``.

Two tables (``python -m bench.memory`` prints them after its long-run table):

1. **Peak memory against plain SGD.** For numpy, torch (CPU, sequential chains) and jax
   (vectorized chains, the ``"auto"`` choice with array data), on the two models of
   ``bench.speed`` (``tiny``: the demo's DLN 4-5-3-4, 47 parameters, n = 10⁴, batch 500;
   ``mlp``: 784-128-10 tanh, 101 770 parameters, n = 8192, batch 256), the peak memory of one
   ``llc.estimate`` call (SGLD, ``baseline="full"``, 200 burn-in + 400 draws per chain; 1 chain
   and 4 chains with ``mala_every=None``, and the defaults, 4 chains with ``mala_every=20``)
   against the plain SGD loop of ``bench.speed`` (imported, not copied) for the same 600 steps
   on the same model, batch size and data. For jax a second SGD loop passes the data to the
   jitted update as arguments: bench.speed's loop closes over the data, which makes it a
   constant of the compiled program and costs several copies of it while compiling, so the
   ratio is taken against the smaller of the two SGD peaks.
2. **Scaling.** Time per step (all chains together) and peak memory for 1, 4 and 16 chains on
   the tiny model and on 784-H-10 MLPs with H = 32, 128, 512 (25 450, 101 770 and 407 050
   parameters; same data as ``mlp``), torch sequential and jax vectorized, ``mala_every=None``.

How memory is measured. Every measurement runs in a fresh subprocess, which:

- imports numpy, llc, ``bench.speed`` and the framework, and runs the same warm-up in every
  child whatever it measures (:func:`exercise`: a 10-step NumPy ``llc.estimate``, a first
  gradient, a 10-step ``llc.estimate`` in the framework and 10 steps of bench.speed's SGD
  loop, on a 200-row copy of the tiny model), so the framework's runtime, the compiler,
  ``torch.optim``, llc's adapter for the framework and llc's lazily imported modules
  (arviz-stats alone is about 130 MiB of RSS, once per process) are loaded before the
  baseline;
- collects garbage, hands the allocator's free pages back (``malloc_trim``) and reads the
  baseline resident set size R₀ (``VmRSS`` of ``/proc/self/status``);
- builds the model and the data set, float32, and puts them in the framework as one copy
  (``torch.as_tensor`` shares the NumPy memory; ``jnp.asarray`` shares or copies it, and the
  NumPy original is dropped), the same way for both paths; "data + model" is the RSS growth
  of this step (jax's is about 6 MiB larger: its buffers and runtime);
- resets the kernel's peak-RSS mark (``echo 5 > /proc/self/clear_refs``; where that is not
  allowed, a thread samples ``/proc/self/statm`` every millisecond instead) and makes the one
  measured call, ``llc.estimate`` or the SGD loop's ``run(600)``, both *including* their
  compilation (llc compiles its programs in every call; the jitted SGD update compiles on its
  first step);
- reports **peak = VmHWM − R₀**. The kernel's high-water mark sees every page the process
  touched — NumPy, torch's CPU allocator, XLA's buffers and compiler, and what the C allocator
  keeps after a ``free`` — unlike ``tracemalloc`` (NumPy and Python objects only) or
  ``ru_maxrss`` (the lifetime maximum, which a warm-up would already have set). "held after
  the call" is the RSS above R₀ after the call, garbage collection and ``malloc_trim``, with
  the result still alive.

The data set and the model are counted in **both** peaks (the SGD run needs them as much as
llc does), so "llc / SGD" compares what the two calls need above an idle process with the
libraries loaded, and "llc − SGD" is llc's extra memory in MiB. "traces" is the size of the
result's per-draw arrays (``llc_trace``, ``loss_trace``, ``warmup_loss``, ``sample_stats``,
``param_draws``); the issue's target is llc peak ≤ 1.2 × SGD peak + traces, i.e.
"(llc − traces) / SGD" ≤ 1.2.

Time per step is the fastest of the runner's blocks after the first (the first includes the
compilation), read with ``bench.speed.block_timer``; the fastest rather than the median
because the machine may be shared. For the scaling runs the runner's block is shortened to
50 steps (``llc._engine.runner._FLUSH_EVERY``) and each run has 3 blocks, so the 16-chain MLP runs
stay within the time budget. The whole module takes about 6 CPU-minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

COMPARE_BACKENDS = ("numpy", "torch", "jax")
COMPARE_MODELS = ("tiny", "mlp128")
COMPARE_RUNS = ((1, None), (4, None), (4, 20))  # (chains, mala_every); 4 and 20: the defaults
COMPARE_BURNIN, COMPARE_DRAWS = 200, 400

SCALING_BACKENDS = (("torch", "sequential"), ("jax", "vectorized"))
SCALING_MODELS = ("tiny", "mlp32", "mlp128", "mlp512")
SCALING_CHAINS = (1, 4, 16)
SCALING_BLOCK, SCALING_BLOCKS = 50, 3

MODEL_LABELS = {"tiny": "tiny (DLN 4-5-3-4)", "mlp32": "MLP 784-32-10",
                "mlp128": "MLP 784-128-10", "mlp512": "MLP 784-512-10"}
LOOP_LABELS = {"speed": "bench.speed", "jax-arguments": "data as jit arguments"}


# ---- memory probes (in the child) --------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def release_free_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the system
    (``malloc_trim``), so the RSS read next counts live memory only."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakRSS:
    """The peak resident set size over a ``with`` block, in bytes (``.peak``).

    Resets the kernel's high-water mark (``VmHWM``) on entry and reads it on exit; where the
    reset is not allowed, a thread samples ``/proc/self/statm`` every millisecond.
    """

    def __init__(self) -> None:
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:  # noqa: PYI034
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "sampled"
            page = os.sysconf("SC_PAGE_SIZE")

            def sample() -> None:
                while not self._stop.is_set():
                    with open("/proc/self/statm") as statm:
                        self.peak = max(self.peak, int(statm.read().split()[1]) * page)
                    time.sleep(0.001)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes())
        else:
            self.peak = _status_kib("VmHWM") * 1024


# ---- models -------------------------------------------------------------------------------
def mlp_problem(hidden: int) -> tuple[dict, tuple, int]:
    """bench.speed's MLP (same data, same recipe) with ``hidden`` tanh units."""
    from bench import speed

    return speed.mlp_problem(hidden)


def model_parts(model: str) -> tuple[dict, tuple, int, Any, Any]:
    """(params, data, batch size, framework loss, numpy loss-and-grad), float32."""
    from bench import speed

    if model == "tiny":
        params, data, batch = speed.tiny_problem()
        loss, loss_and_grad = speed.tiny_loss, speed.tiny_loss_and_grad
    else:
        params, data, batch = mlp_problem(int(model.removeprefix("mlp")))
        loss, loss_and_grad = speed.mlp_loss, speed.mlp_loss_and_grad
    return ({key: value.astype("float32") for key, value in params.items()},
            tuple(array.astype("float32") for array in data), batch, loss, loss_and_grad)


def to_framework(backend: str, params: dict, data: tuple) -> tuple[dict, tuple]:
    """The arrays in the framework, as one copy: ``torch.as_tensor`` shares the NumPy memory,
    ``jnp.asarray`` shares it or copies it (the caller then drops the NumPy original)."""
    convert: Any
    if backend == "torch":
        import torch
        convert = torch.as_tensor
    elif backend == "jax":
        import jax.numpy as jnp
        convert = jnp.asarray
    else:
        return params, data
    return ({key: convert(value) for key, value in params.items()},
            tuple(convert(array) for array in data))


def sgd_jax_arguments(params: dict, data: tuple, batch_size: int, loss: Any) -> Any:
    """bench.speed's jitted SGD loop with the data passed to the jitted update as arguments
    instead of closed over (closed-over arrays become constants of the compiled program,
    which costs several copies of the data set while compiling)."""
    from bench import speed

    return speed.sgd_jax(params, data, batch_size, loss, "float32", data_as_arguments=True)


def sgd_loop(backend: str, loop: str, params: dict, data: tuple, batch: int, loss: Any,
             loss_and_grad: Any) -> Any:
    """A plain SGD loop: bench.speed's (``loop="speed"``) or, for jax, ``"jax-arguments"``."""
    from bench import speed

    if loop == "jax-arguments":
        return sgd_jax_arguments(params, data, batch, loss)
    if backend == "numpy":
        return speed.sgd_numpy(params, data, batch, loss_and_grad)
    make = {"torch": speed.sgd_torch, "jax": speed.sgd_jax}[backend]
    return make(params, data, batch, loss, "float32")


def exercise(backend: str) -> None:
    """The same warm-up in every child, whatever it measures: a 10-step ``llc.estimate`` in
    NumPy (which loads llc's lazily imported modules: arviz, xarray, the health checks) and,
    for a framework, a first gradient, a 10-step ``llc.estimate`` in it (its adapter and
    what that imports: ``array_api_compat``, ``torch.func``) and 10 steps of bench.speed's
    SGD loop (``torch.optim``), all on a 200-row copy of the tiny model."""
    import llc

    params, data, _, loss, loss_and_grad = model_parts("tiny")
    data = tuple(array[:200] for array in data)
    short = dict(batch_size=50, num_chains=1, num_burnin=0, num_draws=10, step_size=1e-7,
                 mala_every=5, progress=False)
    llc.estimate(loss_and_grad, params, data, **short)
    if backend == "torch":
        import torch
        weights = {key: torch.tensor(value, requires_grad=True) for key, value in params.items()}
        loss(weights, tuple(torch.as_tensor(array) for array in data)).backward()
    elif backend == "jax":
        import jax
        jax.block_until_ready(jax.jit(jax.grad(loss))(params, data))
    if backend != "numpy":
        llc.estimate(loss, *to_framework(backend, params, data), **short)
    sgd_loop(backend, "speed", *to_framework(backend, params, data), 50, loss,
             loss_and_grad)(10)


# ---- one measurement (in a fresh process) ---------------------------------------------------
def child(spec: dict) -> dict:
    import numpy as np

    if spec["backend"] == "torch":
        import torch  # noqa: F401
    elif spec["backend"] == "jax":
        import jax  # noqa: F401
    import llc
    from bench import speed
    from llc._engine import runner as _runner

    backend = spec["backend"]
    warnings.simplefilter("ignore")
    if spec.get("block"):
        _runner._FLUSH_EVERY = spec["block"]

    imported = rss_bytes()
    exercise(backend)
    release_free_memory()
    base = rss_bytes()

    # The model and the data, one copy in the framework, held by both paths.
    params, data, batch, loss, loss_and_grad = model_parts(spec["model"])
    num_params = sum(value.size for value in params.values())
    framework_params, framework_data = to_framework(backend, params, data)
    del params, data
    if spec["path"] == "sgd":
        run = sgd_loop(backend, spec["loop"], framework_params, framework_data, batch, loss,
                       loss_and_grad)
    release_free_memory()
    setup = rss_bytes() - base

    steps = spec["burnin"] + spec["draws"]
    traces = 0
    if spec["path"] == "sgd":
        block = _runner._FLUSH_EVERY
        times = []
        with PeakRSS() as peak:
            for done in range(0, steps, block):
                began = time.perf_counter()
                run(min(block, steps - done))
                times.append((time.perf_counter() - began) / min(block, steps - done))
    else:
        with speed.block_timer() as timings, PeakRSS() as peak:
            result = llc.estimate(
                loss_and_grad if backend == "numpy" else loss, framework_params,
                framework_data, batch_size=batch, num_chains=spec["chains"],
                num_burnin=spec["burnin"], num_draws=spec["draws"], step_size=1e-7,
                baseline="full", mala_every=spec["mala_every"], chain_method=spec["method"],
                progress=False)
        times = [seconds / count for seconds, count in timings]
        arrays = [result.llc_trace, result.loss_trace, result.warmup_loss,
                  *result.sample_stats.values()]
        if result.param_draws is not None:
            arrays.append(result.param_draws)
        traces = sum(np.asarray(array).nbytes for array in arrays)
    release_free_memory()  # what stays: the data, the result, caches (compiled programs)
    held = rss_bytes() - base
    return {"peak": peak.peak - base, "setup": setup, "traces": traces,
            "exercise": base - imported, "held": held,
            "step_seconds": min(times[1:] if len(times) > 1 else times),
            "params": int(num_params), "probe": peak.method}


def measure(**spec: Any) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run([sys.executable, "-m", "bench.scaling", "--child", json.dumps(spec)],
                         check=False, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise RuntimeError(f"{spec}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- tables -------------------------------------------------------------------------------
def installed(names: Any) -> list[str]:
    import importlib.util
    return [name for name in names if name == "numpy" or importlib.util.find_spec(name)]


def compare_sgd() -> list[dict]:
    """Table 1: peak memory of llc.estimate against the plain SGD loops; returns the rows."""
    rows: list[dict] = []
    references: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    print("SGD loops, 600 steps:\n")
    print("| model | backend | SGD loop | data + model | peak | ms per step |")
    print("|---|---|---|---|---|---|")
    for model in COMPARE_MODELS:
        for backend in installed(COMPARE_BACKENDS):
            loops = ["speed"] + (["jax-arguments"] if backend == "jax" else [])
            for loop in loops:
                sgd = measure(backend=backend, model=model, path="sgd", loop=loop,
                              burnin=COMPARE_BURNIN, draws=COMPARE_DRAWS)
                references.setdefault((model, backend), []).append((loop, sgd))
                print(f"| {MODEL_LABELS[model]} | {backend} | {LOOP_LABELS[loop]} "
                      f"| {sgd['setup'] / MIB:.1f} MiB | {sgd['peak'] / MIB:.1f} MiB "
                      f"| {sgd['step_seconds'] * 1e3:.2f} |", flush=True)
    print(f"\nllc.estimate, SGLD, baseline=\"full\", {COMPARE_BURNIN} burn-in + {COMPARE_DRAWS} "
          "draws per chain, against the SGD loop with the smaller peak:\n")
    print("| model | backend | chains | mala_every | data + model | SGD peak | llc peak "
          "| llc − SGD | traces | llc / SGD | (llc − traces) / SGD | held after the call |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model in COMPARE_MODELS:
        for backend in installed(COMPARE_BACKENDS):
            method = "vectorized" if backend == "jax" else "sequential"
            loop, sgd = min(references[(model, backend)], key=lambda item: item[1]["peak"])
            for chains, mala_every in COMPARE_RUNS:
                row = measure(backend=backend, model=model, path="llc", chains=chains,
                              method=method, mala_every=mala_every, burnin=COMPARE_BURNIN,
                              draws=COMPARE_DRAWS)
                rows.append({"model": model, "backend": backend, "chains": chains,
                             "mala_every": mala_every, "sgd": sgd, "loop": loop, "llc": row})
                print(f"| {MODEL_LABELS[model]} | {backend} ({method}) | {chains} "
                      f"| {mala_every} | {row['setup'] / MIB:.1f} MiB "
                      f"| {sgd['peak'] / MIB:.1f} MiB | {row['peak'] / MIB:.1f} MiB "
                      f"| {(row['peak'] - sgd['peak']) / MIB:.1f} MiB "
                      f"| {row['traces'] / MIB:.2f} MiB | {row['peak'] / sgd['peak']:.2f} "
                      f"| {(row['peak'] - row['traces']) / sgd['peak']:.2f} "
                      f"| {row['held'] / MIB:.1f} MiB |", flush=True)
    return rows


def scaling() -> list[dict]:
    """Table 2: time per step and peak memory against chains and parameters."""
    rows = []
    print("| model | parameters | backend | chains | ms per step (all chains) "
          "| peak | data + model | peak − data − model |")
    print("|---|---|---|---|---|---|---|---|")
    for model in SCALING_MODELS:
        for backend, method in SCALING_BACKENDS:
            if not installed([backend]):
                continue
            for chains in SCALING_CHAINS:
                row = measure(backend=backend, model=model, path="llc", chains=chains,
                              method=method, mala_every=None, burnin=0, loop=None,
                              draws=SCALING_BLOCK * SCALING_BLOCKS, block=SCALING_BLOCK)
                rows.append({"model": model, "backend": backend, "method": method,
                             "chains": chains, **row})
                print(f"| {MODEL_LABELS[model]} | {row['params']:,} | {backend} ({method}) "
                      f"| {chains} | {row['step_seconds'] * 1e3:.2f} | {row['peak'] / MIB:.1f} MiB "
                      f"| {row['setup'] / MIB:.1f} MiB "
                      f"| {(row['peak'] - row['setup']) / MIB:.1f} MiB |", flush=True)
    return rows


def plot(rows: list[dict], path: str) -> None:
    """Time per step and peak memory above data + model, against chains and against
    parameters, log-log; colour: backend and chain method; line style: model or chains."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colors = {"torch": "tab:red", "jax": "tab:blue", "numpy": "tab:gray"}
    model_styles = {"tiny": ":", "mlp32": "-.", "mlp128": "--", "mlp512": "-"}
    chain_styles = {1: (":", "s"), 4: ("--", "o"), 16: ("-", "^")}
    lines = sorted({(row["backend"], row["method"]) for row in rows})
    quantities = [(lambda r: r["step_seconds"] * 1e3, "ms per step (all chains)"),
                  (lambda r: (r["peak"] - r["setup"]) / MIB, "MiB above data + model")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for (value, ylabel), (by_chains_ax, by_params_ax) in zip(quantities, axes):
        for backend, method in lines:
            mine = [r for r in rows if (r["backend"], r["method"]) == (backend, method)]
            for model, style in model_styles.items():
                points = sorted((r for r in mine if r["model"] == model),
                                key=lambda r: r["chains"])
                by_chains_ax.plot([r["chains"] for r in points], [value(r) for r in points],
                                  style, marker="o", color=colors[backend])
            for chains, (style, marker) in chain_styles.items():
                points = sorted((r for r in mine if r["chains"] == chains),
                                key=lambda r: r["params"])
                by_params_ax.plot([r["params"] for r in points], [value(r) for r in points],
                                  style, marker=marker, color=colors[backend])
        for ax in (by_chains_ax, by_params_ax):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        by_chains_ax.set_xlabel("chains")
        by_chains_ax.set_xticks(list(SCALING_CHAINS), [str(c) for c in SCALING_CHAINS])
        by_chains_ax.set_xticks([], minor=True)
        by_params_ax.set_xlabel("parameters")
    axes[0, 0].set_title("Time per step vs chains")
    axes[0, 1].set_title("Time per step vs parameters")
    axes[1, 0].set_title("Peak memory (above data + model) vs chains")
    axes[1, 1].set_title("Peak memory (above data + model) vs parameters")
    backend_handles = [Line2D([], [], color=colors[b], lw=2, label=f"{b} {m}")
                       for b, m in lines]
    model_handles = [Line2D([], [], color="k", ls=style, label=MODEL_LABELS[model])
                     for model, style in model_styles.items()]
    chain_handles = [Line2D([], [], color="k", ls=style, marker=marker,
                            label=f"{chains} chain{'s' if chains > 1 else ''}")
                     for chains, (style, marker) in chain_styles.items()]
    fig.suptitle("llc.estimate, SGLD (mala_every=None, baseline=\"full\"), float32, CPU, "
                 "OMP_NUM_THREADS=1; each point a fresh process")
    fig.legend(handles=backend_handles, loc="lower left", bbox_to_anchor=(0.04, 0.0),
               ncol=1, title="colour: backend", fontsize=9)
    fig.legend(handles=model_handles, loc="lower center", bbox_to_anchor=(0.42, 0.0), ncol=2,
               title="line (left panels): model", fontsize=9)
    fig.legend(handles=chain_handles, loc="lower right", bbox_to_anchor=(0.96, 0.0), ncol=3,
               title="line (right panels): chains", fontsize=9)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Print both tables (or ``--only`` one); returns the raw rows."""
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("sgd", "scaling"), help="one of the two tables")
    parser.add_argument("--plot", metavar="PNG", help="save the scaling plot there, e.g. "
                        "docs/img/scaling.png")
    parser.add_argument("--json", metavar="FILE", help="save the raw measurements there")
    parser.add_argument("--replot", metavar="FILE", help="only draw --plot from a --json file")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    if args.replot:
        results = json.loads(Path(args.replot).read_text())
        plot(results["scaling"], args.plot or "scaling.png")
        return results
    print_sgd, print_scaling = args.only != "scaling", args.only != "sgd"
    return run_tables(print_sgd, print_scaling, plot_path=args.plot, json_path=args.json)


def run_tables(sgd: bool = True, scaling_table: bool = True, *, plot_path: str | None = None,
               json_path: str | None = None) -> dict:
    """The tables of this module (``python -m bench.memory`` calls this too)."""
    results: dict = {}
    if sgd:
        print("\n**Peak memory against plain SGD** (peaks above an idle process with the "
              "libraries loaded; data + model counted in both)\n")
        results["sgd"] = compare_sgd()
    if scaling_table:
        print(f"\n**Scaling** (SGLD, mala_every=None, baseline=\"full\"; blocks of "
              f"{SCALING_BLOCK} steps, time of the fastest of blocks 2-{SCALING_BLOCKS})\n")
        results["scaling"] = scaling()
        if plot_path:
            plot(results["scaling"], plot_path)
            print(f"\nplot: {plot_path}")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
