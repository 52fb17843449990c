"""Chains over the processes of a ``torchrun`` launch give the traces of one process.

``torchrun --standalone --nproc-per-node=2`` (gloo on this CPU) is launched by the test
itself; each rank runs the chains rank, rank + 2, … and the runs are gathered to every rank.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import llc
from llc.problems import DeepLinearNetwork

DLN = DeepLinearNetwork((4, 5, 3, 4), rank=2)
SETTINGS = dict(step_size=1e-4, batch_size=100, num_chains=5, num_draws=80, num_burnin=40,
                seed=3, progress=False)
AUTO = dict(step_size="auto", sampler="sgnht", num_burnin=100)

_RANK_SCRIPT = textwrap.dedent('''
    import os, sys, warnings
    import numpy as np
    import torch
    import torch.distributed as dist
    import llc
    from llc.problems import DeepLinearNetwork

    warnings.simplefilter("ignore")
    dist.init_process_group("gloo")
    problem = DeepLinearNetwork((4, 5, 3, 4), rank=2)
    data, params = problem.setup(2000, seed=0)
    params = {name: torch.tensor(value) for name, value in params.items()}
    settings = dict(step_size=1e-4, batch_size=100, num_chains=5, num_draws=80, num_burnin=40,
                    seed=3, progress=False)
    AUTO = dict(step_size="auto", sampler="sgnht", num_burnin=100)
    result = llc.estimate(problem.loss, params, data, **settings)
    auto = llc.estimate(problem.loss, params, data, **{**settings, **AUTO})
    for override, expected in (({"num_chains": 1}, "must be at least the number of processes"),
                               ({"resume": os.path.join(sys.argv[1], "none.nc")},
                                f"none.rank{dist.get_rank()}of2.nc")):
        try:
            llc.estimate(problem.loss, params, data, **{**settings, **override})
        except (ValueError, FileNotFoundError) as error:
            assert expected in str(error), error
        else:
            raise AssertionError(f"{override} across processes did not raise")
    rank = dist.get_rank()
    np.savez(os.path.join(sys.argv[1], f"rank{rank}.npz"), trace=result.llc_trace,
             auto_trace=auto.llc_trace, auto_warmup=auto.warmup_loss,
             auto_step=auto.attrs["sampler_step_size"],
             distance=np.asarray(result.sample_stats["distance"]),
             noise=result.attrs["gradient_noise_power_at_draws"],
             processes=result.attrs["processes"])
    dist.destroy_process_group()
''')


def test_chains_over_torchrun_processes_give_the_traces_of_one_process(tmp_path) -> None:
    """5 chains over 2 ranks (3 and 2 chains) in float64: every rank's result holds all 5
    chains in order, bitwise equal to one process's, with the noise measured at the chains'
    ends pooled over the ranks. ``step_size="auto"`` (SGNHT: thermostats and the noise at the
    chains exchanged every window) freezes the same step and gives the same traces. Fewer
    chains than processes are refused; ``resume=`` looks for this process's own file."""
    torch = pytest.importorskip("torch")
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(script), str(tmp_path)], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr

    data, params = DLN.setup(2000, seed=0)
    params = {name: torch.tensor(value) for name, value in params.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = llc.estimate(DLN.loss, params, data, **SETTINGS)
        single_auto = llc.estimate(DLN.loss, params, data, **{**SETTINGS, **AUTO})
    assert single.attrs["processes"] == "off"
    for rank in (0, 1):
        saved = np.load(tmp_path / f"rank{rank}.npz")
        assert int(saved["processes"]) == 2
        np.testing.assert_array_equal(saved["trace"], single.llc_trace)
        np.testing.assert_array_equal(saved["distance"],
                                      np.asarray(single.sample_stats["distance"]))
        np.testing.assert_array_equal(saved["auto_trace"], single_auto.llc_trace)
        np.testing.assert_array_equal(saved["auto_warmup"], single_auto.warmup_loss)
        assert float(saved["auto_step"]) == single_auto.attrs["sampler_step_size"]
        assert float(saved["noise"]) == pytest.approx(
            single.attrs["gradient_noise_power_at_draws"], rel=1e-12)


_JAX_SCRIPT = textwrap.dedent('''
    import os, sys, warnings
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    out, port, process = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if process >= 0:  # one of two jax.distributed processes; else the one-process reference
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                                   process_id=process)
    import llc
    from llc.problems import DeepLinearNetwork

    warnings.simplefilter("ignore")
    problem = DeepLinearNetwork((4, 5, 3, 4), rank=2)
    loss_fn, params, data = problem.in_backend("jax", 2000, seed=0, dtype="float64")
    settings = dict(batch_size=100, num_chains=8, num_draws=60, num_burnin=100, seed=3,
                    progress=False)
    split = dict(devices="all") if process >= 0 else {}
    fixed = llc.estimate(loss_fn, params, data, step_size=1e-4, **settings, **split)
    auto = llc.estimate(loss_fn, params, data, step_size="auto", sampler="sgnht", **settings,
                        **split)
    np.savez(os.path.join(out, f"jax{process}.npz"), fixed=fixed.llc_trace,
             auto=auto.llc_trace, step=auto.attrs["sampler_step_size"],
             processes=str(fixed.attrs["processes"]), devices=fixed.attrs["devices"])
    if process >= 0:
        jax.distributed.shutdown()
''')


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_chains_over_jax_distributed_processes_give_the_traces_of_one_process(tmp_path) -> None:
    """Two ``jax.distributed`` processes on localhost (gloo CPU collectives), each with two
    (simulated) devices: 8 chains, each process running 4 over its 2 devices; both processes'
    results equal one process's with the same XLA configuration, bitwise in float64, at a
    fixed step and with SGNHT's ``step_size="auto"``."""
    pytest.importorskip("jax")
    script = tmp_path / "jax_process.py"
    script.write_text(_JAX_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    port = str(_free_port())
    launched = [subprocess.Popen([sys.executable, str(script), str(tmp_path), port, str(rank)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=env) for rank in (0, 1, -1)]
    outputs = [process.communicate(timeout=300)[0] for process in launched]
    assert all(process.returncode == 0 for process in launched), "\n".join(outputs)
    reference = np.load(tmp_path / "jax-1.npz")
    assert str(reference["processes"]) == "off"
    for rank in (0, 1):
        saved = np.load(tmp_path / f"jax{rank}.npz")
        assert str(saved["processes"]) == "2" and str(saved["devices"]).count("cpu") == 2
        np.testing.assert_array_equal(saved["fixed"], reference["fixed"])
        np.testing.assert_array_equal(saved["auto"], reference["auto"])
        assert float(saved["step"]) == float(reference["step"])


_CRASH_SCRIPT = textwrap.dedent('''
    import os, sys, time, warnings
    import numpy as np
    import torch
    import torch.distributed as dist
    import llc
    from llc.problems import DeepLinearNetwork

    warnings.simplefilter("ignore")
    dist.init_process_group("gloo")
    out, phase = sys.argv[1], sys.argv[2]
    rank = dist.get_rank()
    problem = DeepLinearNetwork((4, 5, 3, 4), rank=2)
    data, params = problem.setup(2000, seed=0)
    params = {name: torch.tensor(value) for name, value in params.items()}
    calls = {"count": 0}

    path = os.path.join(out, "run.nc")
    first = os.path.join(out, "run.rank0of2.nc")

    def loss(p, batch):
        calls["count"] += 1
        if phase == "crash" and rank == 1 and calls["count"] >= 1000:  # past its 1st block
            for _ in range(600):  # until rank 0 has checkpointed its first block too
                if os.path.exists(first):
                    os._exit(3)  # rank 1 dies mid-run, without a word
                time.sleep(0.1)
        if phase == "crash" and rank == 0 and os.path.exists(first):
            time.sleep(0.05)  # slow enough that torchrun stops it before it ends
        return problem.loss(p, batch)

    # blocks of 200 steps: checkpoints at steps 200 and 400 (checkpoint_every=10), and 440
    settings = dict(step_size=1e-4, batch_size=100, num_chains=5, num_draws=400,
                    num_burnin=40, seed=3, progress=False, checkpoint_every=10)
    if phase == "crash":
        llc.estimate(loss, params, data, checkpoint=path, **settings)
    else:
        result = llc.estimate(loss, params, data, resume=path, **settings)
        np.save(os.path.join(out, f"resumed{rank}.npy"), result.llc_trace)
    dist.destroy_process_group()
''')


def test_a_killed_rank_resumes_from_its_own_checkpoint(tmp_path) -> None:
    """Rank 1 of a ``torchrun`` launch dies mid-run (``os._exit``); torchrun stops the launch
    and names it. Each rank had written its own chains to ``run.rank<r>of2.nc``; the same
    command with ``resume=`` continues both, and the result equals one uninterrupted process's
    (float64, bitwise)."""
    torch = pytest.importorskip("torch")
    script = tmp_path / "crash.py"
    script.write_text(_CRASH_SCRIPT)

    def launch(phase: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc-per-node=2", str(script), str(tmp_path), phase], capture_output=True,
            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)

    crashed = launch("crash")
    assert crashed.returncode != 0
    assert "exitcode  : 3" in crashed.stderr or "exitcode: 3" in crashed.stderr, crashed.stderr
    assert sorted(path.name for path in tmp_path.glob("run.rank*")) == [
        "run.rank0of2.nc", "run.rank1of2.nc"]
    from llc._checkpoint import saved_attrs

    for rank in (0, 1):  # both stopped part-way: rank 1 killed, rank 0 stopped by torchrun
        assert 200 <= int(saved_attrs(tmp_path / f"run.rank{rank}of2.nc")["steps_done"]) < 440
    resumed = launch("resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    data, params = DLN.setup(2000, seed=0)
    params = {name: torch.tensor(value) for name, value in params.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = llc.estimate(DLN.loss, params, data, **{**SETTINGS, "num_draws": 400})
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"resumed{rank}.npy"),
                                      single.llc_trace)


class _PeerGone:
    """Process 0 of 2 whose peer has stopped: every exchange fails as a framework's does."""

    rank, size = 0, 2

    def all_gather(self, obj):
        raise ConnectionError("Connection closed by peer [127.0.0.1]:29500")


def test_a_failed_exchange_names_the_process_and_keeps_its_checkpoint(tmp_path,
                                                                      monkeypatch) -> None:
    """The final gather fails (the other process stopped): the error says which process
    this is, which chains it ran and to relaunch with ``resume=``, and this process's
    checkpoint holds all its chains' draws."""
    from llc._checkpoint import saved_attrs

    backend = llc.get_backend("numpy")
    monkeypatch.setattr(type(backend), "process_group", lambda self: _PeerGone())
    loss_fn, params, data = DLN.in_backend("numpy", 2000)
    with pytest.raises(RuntimeError, match=r"process 0 of 2: exchanging .* failed "
                       r"\(ConnectionError: .*\).*chains r, r \+ 2.*`resume=`"):
        llc.estimate(loss_fn, params, data, step_size=1e-4, batch_size=100, num_chains=4,
                     num_draws=50, num_burnin=10, seed=0, progress=False,
                     checkpoint=tmp_path / "run.nc")
    saved = saved_attrs(tmp_path / "run.rank0of2.nc")
    assert int(saved["steps_done"]) == 60 and int(saved["processes"]) == 2
