"""``devices=``: the chains split over several devices give the traces of one device.

Several devices are simulated on this CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count``, which must be set before JAX starts:
those checks run in a subprocess. The flag itself changes
XLA's CPU code (its threading), so the comparisons are made inside one process, between
``devices=None`` and the splits, not against a process without the flag (there the float64
traces agree to ~1e-12, not bitwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import llc
from llc.problems import DeepLinearNetwork

DLN = DeepLinearNetwork((4, 5, 3, 4), rank=2)

_SPLIT_SCRIPT = textwrap.dedent('''
    import os, sys, warnings
    import jax
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    import llc
    from llc.problems import DeepLinearNetwork

    warnings.simplefilter("ignore")
    assert len(jax.devices()) == 4, jax.devices()
    problem = DeepLinearNetwork((4, 5, 3, 4), 2)
    common = dict(batch_size=100, num_chains=8, num_draws=60, num_burnin=100, seed=3,
                  progress=False)
    cases = {  # each split: its number of devices, or the 4 in reverse order
        "sgld float64": ("float64", dict(step_size=1e-4, keep_params_every=20),
                         (jax.devices()[::-1],)),
        "sgnht auto, shuffled epochs, float64": (
            "float64", dict(step_size="auto", sampler="sgnht", trace_batch="own"), (2,)),
    }
    for name, (dtype, settings, splits) in cases.items():
        loss_fn, params, data = problem.in_backend("jax", 2000, seed=0, dtype=dtype)
        one = llc.estimate(loss_fn, params, data, **common, **settings)
        assert one.attrs["devices"] == "off"
        for devices in splits:
            split = llc.estimate(loss_fn, params, data, devices=devices, **common, **settings)
            assert split.attrs["devices"].count("cpu") == (
                devices if isinstance(devices, int) else 4), split.attrs["devices"]
            for field in ("llc_trace", "warmup_loss"):
                assert np.array_equal(getattr(one, field), getattr(split, field),
                                      equal_nan=True), (name, devices, field)
            for stat in one.sample_stats:
                assert np.array_equal(np.asarray(one.sample_stats[stat]),
                                      np.asarray(split.sample_stats[stat]),
                                      equal_nan=True), (name, devices, stat)
            if one.param_draws is not None:
                assert np.array_equal(one.param_draws, split.param_draws), (name, devices)
            assert one.attrs["sampler_step_size"] == split.attrs["sampler_step_size"]
        print(name, "same traces on 1 and", splits, "devices:", one.llc_mean)

    # a checkpoint does not record the layout: resumed on one device, the run is the same
    path = os.path.join(sys.argv[1], "run.nc")
    loss_fn, params, data = problem.in_backend("jax", 2000, seed=0, dtype="float64")
    split = llc.estimate(loss_fn, params, data, step_size=1e-4, devices=4, checkpoint=path,
                         **common)
    resumed = llc.estimate(loss_fn, params, data, step_size=1e-4, resume=path, **common)
    assert np.array_equal(split.llc_trace, resumed.llc_trace)

    try:
        llc.estimate(loss_fn, params, data, step_size=1e-4, devices=4,
                     **{**common, "num_chains": 6})
    except ValueError as error:
        assert "`num_chains` (6) must be a multiple of the number of `devices` (4)" in str(error)
    else:
        raise AssertionError("6 chains on 4 devices did not raise")
    print("OK")
''')


def test_chains_split_over_devices_give_the_traces_of_one_device(tmp_path) -> None:
    """8 chains on 1 device, on 2 and on 4 (simulated, in reverse order): every trace, sample
    statistic, warm-up loss, kept parameter draw and frozen ``auto`` step bitwise equal
    (float64; SGLD with independent batches, SGNHT with ``step_size="auto"`` and shuffled
    epochs); a checkpoint written on 4 devices resumes on one; a chain count the devices do not
    divide is refused."""
    pytest.importorskip("jax")
    out = subprocess.run(
        [sys.executable, "-c", _SPLIT_SCRIPT, str(tmp_path)], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1",
             "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert out.returncode == 0 and out.stdout.rstrip().endswith("OK"), out.stdout + out.stderr


def test_devices_errors() -> None:
    """Bad ``devices`` name the argument and what was expected."""
    data, params = DLN.setup(500, seed=0)
    settings = dict(step_size=1e-4, batch_size=100, num_chains=2, num_draws=10,
                    num_burnin=10, progress=False)
    with pytest.raises(ValueError, match="`devices`: the numpy backend runs every chain"):
        llc.estimate(DLN.loss_and_grad, params, data, devices=2, **settings)
    llc.estimate(DLN.loss_and_grad, params, data, devices=None, **settings)  # the default

    pytest.importorskip("jax")
    import jax

    loss_fn, jparams, jdata = DLN.in_backend("jax", 500, seed=0)
    count = len(jax.devices())
    with pytest.raises(ValueError, match=f"{count + 1} devices asked for, {count} available"):
        llc.estimate(loss_fn, jparams, jdata, devices=count + 1, **settings)
    with pytest.raises(ValueError, match="must be None, 'all', a count"):
        llc.estimate(loss_fn, jparams, jdata, devices="gpus", **settings)
    with pytest.raises(TypeError, match="non-empty list of jax.Device"):
        llc.estimate(loss_fn, jparams, jdata, devices=["cpu:0"], **settings)
    with pytest.raises(ValueError, match="lists a device twice"):
        llc.estimate(loss_fn, jparams, jdata, devices=jax.devices() * 2, **settings)
    with pytest.raises(ValueError, match="needs chain_method='auto' or 'vectorized'"):
        llc.estimate(loss_fn, jparams, jdata, devices=1, chain_method="sequential", **settings)
    result = llc.estimate(loss_fn, jparams, jdata, devices="all", **settings)
    assert np.isfinite(result.llc_mean)

    pytest.importorskip("tensorflow")
    loss_fn, tparams, tdata = DLN.in_backend("tensorflow", 500, seed=0)
    with pytest.raises(ValueError, match="devices asked for"):
        llc.estimate(loss_fn, tparams, tdata, devices=99, **settings)
    with pytest.raises(ValueError, match="must be None, 'all', a count or device names"):
        llc.estimate(loss_fn, tparams, tdata, devices=["tpu:0"], **settings)


_TF_SCRIPT = textwrap.dedent('''
    import warnings
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import llc
    from llc.problems import DeepLinearNetwork

    warnings.simplefilter("ignore")
    problem = DeepLinearNetwork((4, 5, 3, 4), 2)
    loss_fn, params, data = problem.in_backend("tensorflow", 2000, seed=0, dtype="float64")
    common = dict(batch_size=100, num_chains=4, num_draws=60, num_burnin=100, seed=3,
                  progress=False)
    for settings in (dict(step_size="auto", sampler="sgnht", trace_batch="own"),):
        one = llc.estimate(loss_fn, params, data, **common, **settings)
        two = llc.estimate(loss_fn, params, data, devices="all", **common, **settings)
        assert two.attrs["devices"] == "/device:CPU:0, /device:CPU:1", two.attrs["devices"]
        assert np.array_equal(one.llc_trace, two.llc_trace), settings
        assert np.array_equal(one.warmup_loss, two.warmup_loss, equal_nan=True), settings
        assert one.attrs["sampler_step_size"] == two.attrs["sampler_step_size"]
    print("OK")
''')


def test_tensorflow_places_chain_groups_on_its_devices() -> None:
    """TensorFlow's way: the compiled block placed on each of two logical CPU devices
    (``tf.device``) over its half of 4 chains gives the one-device traces bitwise (float64,
    SGNHT's ``auto`` with shuffled epochs)."""
    pytest.importorskip("tensorflow")
    out = subprocess.run([sys.executable, "-c", _TF_SCRIPT], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0 and out.stdout.rstrip().endswith("OK"), out.stdout + out.stderr
