"""llc against devinterp end to end, same problems and settings: ``python -m bench.devinterp``.

devinterp (PyPI ``devinterp``, the incumbent LLC library, PyTorch only) is an OPTIONAL
benchmark dependency, never a test dependency, and is not in requirements.txt: it pulls in
``transformers`` and ``datasets``. Install it into a separate virtual environment so that the
project's pinned venv stays as it is (the pins are in bench/requirements-devinterp.txt)::

    python3.11 -m venv /tmp/divenv
    /tmp/divenv/bin/pip install -r bench/requirements-devinterp.txt   # torch==2.13.0 (CPU)
    /tmp/divenv/bin/pip install -e . --no-deps                       # llc itself
    OMP_NUM_THREADS=1 /tmp/divenv/bin/python -m bench.devinterp      # ~6 min, 2 busy cores

Without devinterp the script prints these commands and exits 0.

What it runs
------------
Two problems, 4 chains each, chains one after the other in both libraries (devinterp 2.x has
no parallel chains; llc's torch backend runs them sequentially), float32, CPU,
``OMP_NUM_THREADS=1`` and ``torch.set_num_threads(1)``:

- ``dln``: the demo's deep linear network ``llc.problems.DeepLinearNetwork((4, 5, 3, 4),
  rank=2)`` at its minimiser, ``problem.setup(10_000, seed=0)``, as an ``nn.Sequential`` of
  bias-free ``nn.Linear`` layers (the problem's ``W_s`` are ``(out, in)``, the orientation of
  ``nn.Linear.weight``; the script checks that the module's loss equals ``problem.loss``).
  Loss ½‖ŷ − y‖² per sample; the demo's settings: batch 500, ε = 3e-5, γ = 1,
  nβ = n / log n, 1000 burn-in steps + 4000 draws per chain.
- ``mlp``: ``bench.speed.mlp_problem`` — a 784-128-10 tanh MLP, cross-entropy, n = 8192
  synthetic rows, batch 256 — as an ``nn.Sequential(Linear, Tanh, Linear)``; w* is that
  problem's (untrained, random) weights, so λ̂ is not the LLC of a trained model: only the
  agreement of the two libraries and the time matter (llc flags it ``not-critical-point``).
  ε = 3e-4, γ = 1000, nβ = n / log n, 200 burn-in steps + 800 draws per chain. The strong
  localization keeps the chains mixing fast at this non-minimum (llc's MALA acceptance
  0.91, R-hat 1.00; λ̂ over seeds 0, 1, 2: 28.96, 29.71, 30.20, MCSE 0.75); with γ = 100 the
  seed-to-seed spread of λ̂ was about 3× its MCSE (slow directions of negative curvature).
  Here the two λ̂ differ by ~12 %, more than their MCSE, and the batch schedule is the cause,
  not the sampler: llc fed devinterp's schedule (a fixed list of the 32 batches of one
  shuffle, replayed) gives 32.3 and 34.0 (seeds 0, 1), devinterp 32.4, llc with its own
  per-epoch reshuffle 29.0 and 29.7. The chains relax in ~7 steps, faster than an epoch,
  so L_B(w_t) depends on how long ago the rows of B were last used: the full-data loss at
  every 20th draw of the llc run gives nβ (E L_n(w) − L_n(w*)) ≈ 9 (a fresh random batch:
  12 ± 5), so on this over-parameterised model both minibatch estimates are biased upward.

Settings, matched as far as the two APIs allow
-----------------------------------------------
- Sampler: plain SGLD in both, the same update
  ``w ← w − ε/2 (nβ ∇L_B(w) + γ (w − w*)) + √ε ξ`` (llc ``sampler="sgld"``; devinterp
  ``sampling_method="sgmcmc_sgld"``, ``SGMCMC.sgld``), same ε (``step_size`` / ``lr``),
  nβ (``nbeta`` / ``n_beta``, passed explicitly: the libraries' defaults differ, see below),
  γ (``localization``), batch size, chains, burn-in and draws, thinning 1.
- Baseline L_n(w*): llc ``baseline="full"`` computes it on the full data; devinterp averages
  ``num_init_loss_batches`` shuffled batches, which is set to ``n // batch_size`` (n is a
  multiple of the batch size in both problems), i.e. also the full data. devinterp computes
  it once per chain (4 full passes); llc once.
- Estimator: λ̂ = nβ (mean over draws of L_B(w_t) − L_n(w*)) in both, over the post-burn-in
  draws. devinterp's own ``compute_llc`` averages over *every* step including the burn-in; the
  table reports both its value and the post-burn-in estimate from its ``sampling_loss``
  array (the same estimator as llc's). The uncertainty of both is llc's MCSE (arviz-stats'
  ``mcse`` of the per-draw λ traces, chains × draws).
- Minibatches: llc draws its own (a per-chain permutation per epoch, independent streams:
  ``trace_batch="own"``, the shuffled-epoch own-batch trace that devinterp computes too;
  llc's default since 2026-12-07 draws rows with replacement for an unbiased trace, which
  would make the λ̂ of the two libraries differ by the own-batch bias).
  devinterp 2.x takes a map-style dataset, builds its own shuffling ``DataLoader`` per
  chain and cycles it; ``match_sampling_input_ids_across_chains=False`` gives each chain its
  own shuffle (its default, True, feeds every chain the same batches).
- llc's MALA diagnostic is off (``mala_every=None``; its default 20 costs 5 % more
  gradients) so that both do one gradient per step; llc's health checks, R-hat and ESS
  still run, inside the timed call. ``chain_method="sequential"`` (torch's only one).
- devinterp 2.x is written for language models: its dataset items are dicts with an
  ``"input_ids"`` sequence of length ≥ 2 and its ``loss_fn(model, input_ids)`` returns a
  per-token loss of shape (batch, seq − 1), which it writes to a zarr store every step. The
  cheapest faithful use on a regression/classification problem, used here: item i is
  ``{"input_ids": [i, i]}`` (a torch ``Dataset``, which ``sample`` accepts as well as a
  Hugging Face one; the HF one is slower per row), and the loss looks up rows i of x and y
  and returns the per-sample loss as (batch, 1). llc gets the tensors ``(x, y)`` and
  ``llc.backends.torch.from_module(model, criterion)``.
- The zarr output goes to a fresh temporary folder per call (devinterp's default is a
  ``mkdtemp`` that is never removed); its removal is not timed. devinterp's progress bars are
  off (``TQDM_DISABLE=1``), as is llc's (``progress=False``).

devinterp 2.x behaviour that differs from llc (and why the settings above are explicit)
--------------------------------------------------------------------------------------
- ``devinterp.utils.default_nbeta`` is batch_size / log(batch_size), not n / log n;
  ``sample`` has no default: nβ is always passed here.
- ``localization`` defaults to 0 (no pull to w*) and ``num_burnin_steps`` to 0.
- ``compute_llc`` / ``llc`` average the loss over every step, burn-in included.
- L_n(w*) defaults to 32 shuffled batches, recomputed for every chain.
- ``epoch_mode="cycle"`` uses ``itertools.cycle``: after the first epoch the same batches
  come back in the same order (no reshuffle); by default every chain sees the same batches.
- Every chain starts and ends with ``gc.collect()``, about 0.5 s each on this machine once
  ``transformers`` is imported (its import graph makes the heap large): a fixed ~4 s per
  4-chain call, whatever the model. Importing devinterp takes seconds (transformers,
  datasets); llc a tenth of a second.
- Every step's per-sample losses and ids are written to a zarr store (a ``mkdtemp`` folder
  that is never removed unless ``output_path`` is given); the estimate is read back from it.

Measurements
------------
End to end: the wall time of the whole call, everything each library does before and after
sampling (llc: ``from_module`` + ``llc.estimate`` + ``llc_mean``/``llc_mcse``; devinterp:
``sample`` + ``compute_llc`` + the post-burn-in λ̂ from the store). One untimed warm-up call
of each library first (lazy imports); then ``--repeats`` rounds, interleaved (llc,
devinterp, llc, devinterp, ...), and the medians are printed, with the median ratio of the
interleaved pairs and the ratio of process CPU times (all threads; less sensitive than wall
time to other processes on a shared machine). Sampling only: the time inside
the chain loop (llc's ``run_chains``; devinterp's ``sample_single_chain``, once per chain,
less its ``gc.collect()`` calls, which are reported apart), per step of one chain. Both runs
are seeded and deterministic: λ̂ is the same in every repeat (the script says so if not).
If devinterp/llc is below 3× on a problem, the llc call is profiled with cProfile and the
top entries are printed. Import times (after ``import torch``) are measured in fresh
subprocesses. Prints Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.util
import io
import math
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # devinterp's per-chain progress bars

import numpy as np

INSTALL = """\
devinterp is not installed: this benchmark is optional. To run it, in a separate venv:

    python3.11 -m venv /tmp/divenv
    /tmp/divenv/bin/pip install -r bench/requirements-devinterp.txt
    /tmp/divenv/bin/pip install -e . --no-deps
    OMP_NUM_THREADS=1 /tmp/divenv/bin/python -m bench.devinterp
"""

NUM_CHAINS = 4
SEED = 0


@dataclass
class Problem:
    """One benchmark problem in both libraries' terms."""

    name: str
    module: Any  # torch.nn.Module at w*
    x: Any  # torch tensors, all n rows
    y: Any
    criterion: Callable[[Any, Any], Any]  # mean loss, for llc's from_module
    per_sample: Callable[[Any, Any], Any]  # unreduced loss, shape (batch,), for devinterp
    batch_size: int
    step_size: float
    localization: float
    num_burnin: int
    num_draws: int

    @property
    def num_data(self) -> int:
        return int(self.x.shape[0])

    @property
    def nbeta(self) -> float:
        return self.num_data / math.log(self.num_data)  # llc's default, passed to both


# ---- problems -------------------------------------------------------------------------
def dln_problem(draws: int | None) -> Problem:
    import torch

    import llc

    problem = llc.problems.DeepLinearNetwork(widths=(4, 5, 3, 4), rank=2)
    (x, y), params = problem.setup(10_000, seed=0)
    names = list(params)  # W1, W2, W3, applied to x in this order; each (out, in)
    layers = [torch.nn.Linear(params[name].shape[1], params[name].shape[0], bias=False)
              for name in names]
    with torch.no_grad():
        for layer, name in zip(layers, names):
            layer.weight.copy_(torch.as_tensor(params[name]))
    module = torch.nn.Sequential(*layers)

    def per_sample(output: Any, target: Any) -> Any:
        return 0.5 * ((output - target) ** 2).sum(dim=1)  # noise_std = 1

    def criterion(output: Any, target: Any) -> Any:
        return per_sample(output, target).mean()

    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    with torch.no_grad():  # the weight orientation: the module's loss is the problem's
        ours = float(criterion(module(xt), yt))
    theirs = float(problem.loss(params, (x, y)))
    if not math.isclose(ours, theirs, rel_tol=1e-4):
        raise AssertionError(f"DLN module loss {ours} != problem.loss {theirs}")
    draws = 4000 if draws is None else draws
    return Problem("dln", module, xt, yt, criterion, per_sample, batch_size=500,
                   step_size=3e-5, localization=1.0, num_burnin=draws // 4, num_draws=draws)


def mlp_torch_problem(draws: int | None) -> Problem:
    import torch

    from bench.speed import mlp_problem

    params, (x, onehot), batch_size = mlp_problem()  # weights stored (in, out)
    hidden, output = torch.nn.Linear(784, 128), torch.nn.Linear(128, 10)
    with torch.no_grad():
        hidden.weight.copy_(torch.as_tensor(params["W1"].T))
        hidden.bias.copy_(torch.as_tensor(params["b1"]))
        output.weight.copy_(torch.as_tensor(params["W2"].T))
        output.bias.copy_(torch.as_tensor(params["b2"]))
    module = torch.nn.Sequential(hidden, torch.nn.Tanh(), output)
    xt = torch.as_tensor(x)
    labels = torch.as_tensor(onehot.argmax(axis=1))

    def per_sample(output: Any, target: Any) -> Any:
        return torch.nn.functional.cross_entropy(output, target, reduction="none")

    draws = 800 if draws is None else draws
    return Problem("mlp", module, xt, labels, torch.nn.functional.cross_entropy, per_sample,
                   batch_size=batch_size, step_size=3e-4, localization=1000.0,
                   num_burnin=draws // 4, num_draws=draws)


PROBLEMS = {"dln": dln_problem, "mlp": mlp_torch_problem}


# ---- timing helpers -------------------------------------------------------------------
@contextlib.contextmanager
def timed_attribute(owner: Any, name: str, spent: list[float]) -> Iterator[None]:
    """Replace ``owner.name`` by a wrapper that adds the seconds of each call to ``spent``."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - began)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def mcse(trace: np.ndarray) -> float:
    """llc's MCSE of the mean of a (chain, draw) trace (arviz-stats)."""
    from arviz_stats.base import array_stats

    return float(array_stats.mcse(np.asarray(trace, dtype=np.float64)))


@dataclass
class Run:
    seconds: float  # the whole call, wall time
    cpu: float  # the whole call, CPU time of the process (all threads)
    sampling: float  # inside the chain loop, less `gc`
    llc: float  # λ̂, post-burn-in draws
    mcse: float
    extra: float = math.nan  # devinterp: its compute_llc value (burn-in included)
    gc: float = 0.0  # devinterp: its gc.collect() before and after every chain


# ---- llc ------------------------------------------------------------------------------
def llc_call(p: Problem, num_burnin: int, num_draws: int) -> tuple[float, float]:
    """The user's code: what is timed end to end."""
    from llc.backends.torch import from_module

    import llc

    loss_fn, params = from_module(p.module, p.criterion)
    result = llc.estimate(loss_fn, params, (p.x, p.y), batch_size=p.batch_size,
                          sampler="sgld", step_size=p.step_size, nbeta=p.nbeta,
                          localization=p.localization, num_chains=NUM_CHAINS,
                          num_draws=num_draws, num_burnin=num_burnin, seed=SEED,
                          baseline="full", trace_batch="own", mala_every=None,
                          chain_method="sequential", progress=False)
    return result.llc_mean, result.llc_mcse


def run_llc(p: Problem, num_burnin: int, num_draws: int) -> Run:
    from llc import _estimate

    spent: list[float] = []
    with timed_attribute(_estimate, "run_chains", spent), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        began, cpu = time.perf_counter(), time.process_time()
        value, error = llc_call(p, num_burnin, num_draws)
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return Run(seconds, cpu, sum(spent), value, error)


# ---- devinterp ------------------------------------------------------------------------
class RowIds:
    """devinterp's dataset: item i is ``{"input_ids": [i, i]}`` (rows as 'tokens')."""

    def __init__(self, n: int) -> None:
        import torch

        self.ids = torch.arange(n).repeat_interleave(2).reshape(n, 2)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.ids[index]}


def devinterp_loss(p: Problem) -> Callable[[Any, Any], Any]:
    def loss_fn(model: Any, input_ids: Any) -> Any:  # per-"token" loss, (batch, seq - 1)
        rows = input_ids[:, 0]
        return p.per_sample(model(p.x[rows]), p.y[rows])[:, None]

    return loss_fn


def devinterp_call(p: Problem, dataset: RowIds, num_burnin: int, num_draws: int,
                   output: Path) -> tuple[float, float, np.ndarray]:
    """The user's code: ``sample`` + ``compute_llc`` (= ``devinterp.slt.llc.llc``), plus the
    post-burn-in per-draw λ trace from the store."""
    from devinterp.slt.llc import compute_llc
    from devinterp.slt.sampling import sample

    samples = sample(p.module, dataset, {}, lr=p.step_size, n_beta=p.nbeta,
                     num_chains=NUM_CHAINS, num_draws=num_draws, batch_size=p.batch_size,
                     num_burnin_steps=num_burnin,
                     num_init_loss_batches=p.num_data // p.batch_size, init_seed=SEED,
                     localization=p.localization, sampling_method="sgmcmc_sgld",
                     match_sampling_input_ids_across_chains=False, device="cpu",
                     output_path=output, loss_fn=devinterp_loss(p))
    summary = compute_llc(samples)
    data = samples.dataset
    draws = data.sampling_loss.mean(dim=["batch", "token_pos"]).values  # (chain, draw)
    trace = p.nbeta * (draws - float(data.init_loss.values.mean()))
    return float(trace.mean()), float(summary.llc_mean), trace


def run_devinterp(p: Problem, dataset: RowIds, num_burnin: int, num_draws: int) -> Run:
    from devinterp.slt import sampler, sampling

    spent: list[float] = []
    collecting: list[float] = []
    with (tempfile.TemporaryDirectory(prefix="bench-devinterp-") as folder,  # removal untimed
          timed_attribute(sampling, "sample_single_chain", spent),
          timed_attribute(sampler, "_gc_and_empty_cache", collecting),
          warnings.catch_warnings()):
        warnings.simplefilter("ignore")
        began, cpu = time.perf_counter(), time.process_time()
        value, own, trace = devinterp_call(p, dataset, num_burnin, num_draws,
                                           Path(folder) / "samples.zarr")
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return Run(seconds, cpu, sum(spent) - sum(collecting), value, mcse(trace), extra=own,
               gc=sum(collecting))


# ---- report ---------------------------------------------------------------------------
def import_seconds(statement: str) -> float:
    """Seconds of ``statement`` after ``import torch``, in a fresh interpreter (median of 3)."""
    code = ("import time, torch; t = time.perf_counter(); " + statement +
            "; print(time.perf_counter() - t)")
    times = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def profile_llc(p: Problem, num_burnin: int, num_draws: int, top: int = 20) -> str:
    profiler = cProfile.Profile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profiler.runcall(llc_call, p, num_burnin, num_draws)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def summarize(p: Problem, steps: int, llc_runs: list[Run], di_runs: list[Run]) -> dict[str, Any]:
    """Medians over the repeats (λ̂ is the same in every repeat: both runs are seeded)."""
    def median(runs: list[Run], field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs)

    llc_s, di_s = median(llc_runs, "seconds"), median(di_runs, "seconds")
    pairs = statistics.median(b.seconds / a.seconds for a, b in zip(llc_runs, di_runs))
    cpu_ratio = median(di_runs, "cpu") / median(llc_runs, "cpu")
    llc_sampling, di_sampling = median(llc_runs, "sampling"), median(di_runs, "sampling")
    di_gc = median(di_runs, "gc")
    first_llc, first_di = llc_runs[0], di_runs[0]
    for library, runs in (("llc", llc_runs), ("devinterp", di_runs)):
        if len({run.llc for run in runs}) > 1:
            print(f"  note: {library}'s λ̂ differs between repeats: "
                  f"{[round(run.llc, 6) for run in runs]}")
    return {
        "name": p.name, "steps": steps, "llc_s": llc_s, "di_s": di_s, "ratio": di_s / llc_s,
        "pairs": pairs, "cpu_ratio": cpu_ratio,
        "llc_step": 1e6 * llc_sampling / (steps * NUM_CHAINS),
        "di_step": 1e6 * di_sampling / (steps * NUM_CHAINS),
        "llc_sampling": llc_sampling, "llc_rest": llc_s - llc_sampling,
        "di_sampling": di_sampling, "di_gc": di_gc, "di_rest": di_s - di_sampling - di_gc,
        "llc": f"{first_llc.llc:.3f} ± {first_llc.mcse:.3f}",
        "di": f"{first_di.llc:.3f} ± {first_di.mcse:.3f}", "di_own": first_di.extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.devinterp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS),
                        default=list(PROBLEMS), help="which problems")
    parser.add_argument("--draws", type=int, default=None,
                        help="draws per chain for every problem (burn-in: a quarter of it); "
                             "default 4000 for dln, 800 for mlp")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the cProfile of llc when the speed-up is below 3x")
    args = parser.parse_args(argv)

    if importlib.util.find_spec("devinterp") is None:
        print(INSTALL)
        return 0
    import devinterp  # noqa: F401
    import torch

    import llc

    torch.set_num_threads(1)
    from importlib.metadata import version

    print(f"llc {llc.__version__}, devinterp {version('devinterp')}, torch {torch.__version__}, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch threads "
          f"{torch.get_num_threads()}; {NUM_CHAINS} sequential chains, float32, CPU; "
          f"medians of {args.repeats} interleaved repeats; load average "
          f"{os.getloadavg()[0]:.2f} at the start\n", flush=True)

    rows = []
    slow = []
    for name in args.problems:
        p = PROBLEMS[name](args.draws)
        dataset = RowIds(p.num_data)
        print(f"{name}: n = {p.num_data}, d = {sum(w.numel() for w in p.module.parameters())}, "
              f"batch {p.batch_size}, ε = {p.step_size:g}, γ = {p.localization:g}, "
              f"nβ = {p.nbeta:.2f}, {p.num_burnin} burn-in + {p.num_draws} draws per chain",
              flush=True)
        run_llc(p, 0, 20)  # warm-up: lazy imports, first-call costs
        run_devinterp(p, dataset, 0, 20)
        llc_runs, di_runs = [], []
        for _ in range(args.repeats):
            llc_runs.append(run_llc(p, p.num_burnin, p.num_draws))
            di_runs.append(run_devinterp(p, dataset, p.num_burnin, p.num_draws))
            print(f"  llc {llc_runs[-1].seconds:.2f} s (CPU {llc_runs[-1].cpu:.2f} s), devinterp "
                  f"{di_runs[-1].seconds:.2f} s (CPU {di_runs[-1].cpu:.2f} s)", flush=True)
        steps = p.num_burnin + p.num_draws
        rows.append(summarize(p, steps, llc_runs, di_runs))
        if rows[-1]["ratio"] < 3:
            slow.append(p)

    print("\n| problem | steps per chain | chains | llc s | devinterp s | devinterp / llc "
          "| per repeat | CPU time | llc µs/step | devinterp µs/step | λ̂ llc ± MCSE "
          "| λ̂ devinterp ± MCSE (draws) | devinterp `compute_llc` (incl. burn-in) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['steps']} | {NUM_CHAINS} | {row['llc_s']:.2f} "
              f"| {row['di_s']:.2f} | {row['ratio']:.2f}× | {row['pairs']:.2f}× "
              f"| {row['cpu_ratio']:.2f}× | {row['llc_step']:.0f} "
              f"| {row['di_step']:.0f} | {row['llc']} | {row['di']} | {row['di_own']:.3f} |")
    print("\nllc s, devinterp s: medians of the wall times; devinterp / llc: their ratio; "
          "per repeat: the median of the ratios of the interleaved pairs; CPU time: the ratio "
          "of the median process CPU times (less sensitive to other load on the machine).")
    print("\nWhere the time goes (seconds, medians): *sampling* is the chain loop (llc "
          "`run_chains`, devinterp `sample_single_chain` less its `gc.collect()`); *rest* is "
          "everything else in the call (llc: L_n(w*), setup, result, R-hat/ESS/health "
          "checks; devinterp: L_n(w*) once per chain, zarr store, `compute_llc`). µs/step "
          "above is sampling / (chains × steps).\n")
    print("| problem | llc sampling | llc rest | devinterp sampling | devinterp gc.collect "
          "| devinterp rest | sampling ratio devinterp / llc |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['llc_sampling']:.2f} | {row['llc_rest']:.2f} "
              f"| {row['di_sampling']:.2f} | {row['di_gc']:.2f} | {row['di_rest']:.2f} "
              f"| {row['di_sampling'] / row['llc_sampling']:.2f}× |")

    print(f"\nimport time after `import torch` (fresh interpreter, median of 3): "
          f"llc {import_seconds('import llc, llc.backends.torch'):.2f} s, devinterp "
          f"{import_seconds('import devinterp.slt.sampling, devinterp.slt.llc'):.2f} s "
          "(not in the table's times)")

    print(f"load average {os.getloadavg()[0]:.2f} at the end (timings are wall times: other "
          "processes on the machine inflate both libraries' times)")

    if slow and not args.no_profile:
        for p in slow:
            print(f"\n### devinterp / llc below 3× on {p.name}: cProfile of one llc call "
                  "(top 20 by own time)\n\n```")
            print(profile_llc(p, p.num_burnin, p.num_draws).rstrip())
            print("```")
    return 0


if __name__ == "__main__":
    if not __package__:  # `python bench/devinterp.py` would shadow the devinterp package
        sys.exit("run it as a module from the repository root: python -m bench.devinterp")
    sys.exit(main())
