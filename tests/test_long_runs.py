"""Long runs: checkpoints, resuming after a kill, interrupts, memory options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import llc

from _models import linear_data, linear_loss_and_grad, linear_problem, skip_if_compiled

SETTINGS = dict(num_chains=3, num_draws=120, num_burnin=40, thin=2, step_size=1e-4,
                progress=False, seed=11, baseline="minibatch", mala_every=7)


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        return llc.estimate(*args, **kwargs)


def _assert_same(first: llc.LLCResult, second: llc.LLCResult) -> None:
    np.testing.assert_array_equal(first.llc_trace, second.llc_trace)
    np.testing.assert_array_equal(first.loss_trace, second.loss_trace)
    np.testing.assert_array_equal(first.warmup_loss, second.warmup_loss)
    for name, values in first.sample_stats.items():
        np.testing.assert_array_equal(second.sample_stats[name], values)
    assert first.llc_mean == second.llc_mean


class _InterruptAt:
    """A loss that raises KeyboardInterrupt on its ``at``-th call (a Ctrl-C mid-run)."""

    def __init__(self, loss_fn, at: int) -> None:
        self.loss_fn, self.at, self.calls = loss_fn, at, 0

    def __call__(self, params, batch):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.loss_fn(params, batch)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_checkpoint_interrupt_and_resume_equal_an_uninterrupted_run(backend64, tmp_path,
                                                                     suffix) -> None:
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    skip_if_compiled(backend64)
    loss_fn, params, data = linear_problem(backend64)
    reference = _quiet(loss_fn, params, data, **SETTINGS)
    path = tmp_path / f"run{suffix}"
    with pytest.warns(llc.IncompleteRunWarning, match="interrupted at step"):
        partial = _quiet(_InterruptAt(loss_fn, 400), params, data, checkpoint=path,
                         checkpoint_every=50, **SETTINGS)
    assert not partial.complete
    done = partial.llc_trace.shape[1]
    assert 0 < done < SETTINGS["num_draws"]
    np.testing.assert_array_equal(partial.llc_trace, reference.llc_trace[:, :done])
    snapshot = llc.load(path)  # the checkpoint written at the interrupt
    assert not snapshot.complete and snapshot.llc_trace.shape[1] == done
    resumed = _quiet(loss_fn, params, data, resume=path, **SETTINGS)
    assert resumed.complete
    _assert_same(reference, resumed)
    final = llc.load(path)  # checkpoints go on to the same path and end complete
    assert final.complete
    _assert_same(reference, final)


class _InterruptingBatches:
    """Re-iterable batches that raise KeyboardInterrupt once, at the ``at``-th batch drawn:
    an interrupt outside ``loss_fn``, so it also works for compiled (jitted) losses."""

    def __init__(self, batches: list, at: int) -> None:
        self.batches, self.at, self.drawn = batches, at, 0

    def __iter__(self):
        for batch in self.batches:
            self.drawn += 1
            if self.drawn == self.at:
                raise KeyboardInterrupt
            yield batch


def test_interrupt_and_resume_with_batches_in_every_backend(backend64, tmp_path) -> None:
    loss_fn, params, (x, y) = linear_problem(backend64)
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)]
    settings = {**SETTINGS, "num_draws": 60, "thin": 1}
    reference = _quiet(loss_fn, params, batches, num_data=512, **settings)
    path = tmp_path / "batches.nc"
    with pytest.warns(llc.IncompleteRunWarning):
        partial = _quiet(loss_fn, params, _InterruptingBatches(batches, 200), num_data=512,
                         checkpoint=path, **settings)
    assert not partial.complete and 0 < partial.llc_trace.shape[1] < 60
    resumed = _quiet(loss_fn, params, batches, num_data=512, resume=path, **settings)
    _assert_same(reference, resumed)


def test_resume_checks_the_settings(tmp_path) -> None:
    loss_fn, params, data = linear_problem_numpy()
    path = tmp_path / "run.nc"
    _quiet(loss_fn, params, data, checkpoint=path, **SETTINGS)
    with pytest.raises(ValueError, match="`resume`.*sampler_step_size=0.0001.*0.0002"):
        _quiet(loss_fn, params, data, resume=path, **{**SETTINGS, "step_size": 2e-4})
    with pytest.raises(ValueError, match="`resume`.*seed"):
        _quiet(loss_fn, params, data, resume=path, **{**SETTINGS, "seed": 12})
    other = {"weight": params["weight"] + 0.01}
    with pytest.raises(ValueError, match="`resume`.*init_loss"):
        _quiet(loss_fn, other, data, resume=path, **SETTINGS)
    with pytest.raises(FileNotFoundError, match="`resume`"):
        _quiet(loss_fn, params, data, resume=tmp_path / "missing.nc", **SETTINGS)
    complete = _quiet(loss_fn, params, data, resume=path, **SETTINGS)  # nothing left to run
    _assert_same(_quiet(loss_fn, params, data, **SETTINGS), complete)


def linear_problem_numpy():
    data, params = linear_data()
    return linear_loss_and_grad, params, data


def test_resume_after_the_process_is_killed(tmp_path) -> None:
    """Kill a running estimate with SIGKILL, resume from its checkpoint: same result."""
    path = tmp_path / "killed.nc"
    settings = {**SETTINGS, "num_draws": 3000}
    script = textwrap.dedent(f"""
        import sys, time, warnings
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import llc
        from _models import linear_data, linear_loss_and_grad
        data, params = linear_data()
        def slow(p, b):
            time.sleep(0.0005)
            return linear_loss_and_grad(p, b)
        warnings.simplefilter("ignore")
        llc.estimate(slow, params, data, checkpoint={str(path)!r}, checkpoint_every=200,
                     **{settings!r})
    """)
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ,
                               "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if path.exists():
                steps = llc.load(path).attrs.get("steps_done", 0)
                if 1000 <= steps:
                    break
            if process.poll() is not None:
                pytest.fail(f"the run ended before it was killed: {process.stderr.read()!r}")
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint appeared")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    snapshot = llc.load(path)
    assert not snapshot.complete and snapshot.attrs["steps_done"] < 40 + 2 * 3000
    loss_fn, params, data = linear_problem_numpy()
    resumed = _quiet(loss_fn, params, data, resume=path, **settings)
    _assert_same(_quiet(loss_fn, params, data, **settings), resumed)


def test_kept_parameter_draws_are_the_sampled_points(backend64, tmp_path) -> None:
    loss_fn, params, data = linear_problem(backend64)
    settings = {**SETTINGS, "keep_params_every": 10, "mala_every": None}
    result = _quiet(loss_fn, params, data, **settings)
    kept = result.param_draws
    assert kept.shape == (3, 12, 6)
    assert json_shapes(result) == [[2, 3]]
    w_star = backend64.to_numpy(params)["weight"].ravel()
    np.testing.assert_allclose(np.linalg.norm(kept - w_star, axis=-1),
                               result.sample_stats["distance"][:, ::10], rtol=1e-10)
    assert np.isfinite(kept).all()
    loaded = llc.load(result.save(tmp_path / "kept.nc"))
    np.testing.assert_array_equal(loaded.param_draws, kept)
    unkept = _quiet(loss_fn, params, data, **{**settings, "keep_params_every": None})
    assert unkept.param_draws is None


def json_shapes(result: llc.LLCResult) -> list:
    import json

    return json.loads(result.attrs["param_shapes"])


def test_resume_with_boolean_sampler_settings(tmp_path) -> None:
    """Settings such as RMSPropSGLD's booleans are compared in the form the checkpoint stores."""
    loss_fn, params, data = linear_problem_numpy()
    settings = {**SETTINGS, "sampler": llc.samplers.RMSPropSGLD(step_size=5e-5)}
    reference = _quiet(loss_fn, params, data, **settings)
    path = tmp_path / "rmsprop.nc"
    with pytest.warns(llc.IncompleteRunWarning):
        _quiet(_InterruptAt(loss_fn, 300), params, data, checkpoint=path, **settings)
    _assert_same(reference, _quiet(loss_fn, params, data, resume=path, **settings))


def test_steps_leave_no_reference_cycles(backend64) -> None:
    """A step must free its arrays by reference counting: a reference cycle per step (a
    self-calling closure holding the step's parameters or gradients) keeps every step's
    arrays alive until the garbage collector runs, multiplying the peak memory."""
    import gc

    loss_fn, params, data = linear_problem(backend64)
    settings = {**SETTINGS, "num_burnin": 0, "mala_every": None, "thin": 1}
    _quiet(loss_fn, params, data, **{**settings, "num_draws": 20})  # warm caches and traces
    unreachable = {}
    gc.collect()
    gc.disable()
    try:
        for draws in (100, 400):
            _quiet(loss_fn, params, data, **{**settings, "num_draws": draws})
            unreachable[draws] = gc.collect()
    finally:
        gc.enable()
    # the result's own per-call cycles (xarray trees) do not depend on the number of steps;
    # one cycle per step of 3 chains would add about 900 objects per 300 steps
    assert unreachable[400] - unreachable[100] < 100, unreachable
