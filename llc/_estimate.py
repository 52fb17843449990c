"""``llc.estimate``: validate, build the posterior, run the chains, collect the result."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pickle
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import _checkpoint
from ._engine.adapt import (_BIAS_TARGET, StepSizeTuner,
                     minibatch_gradient_variance, with_step_size)
from ._backend import Backend, ProcessGroup, backend_for
from ._data import ArrayData, DataSource, make_data
from ._precision import loss_rounding, narrower_than_float32
from ._tree import tree_flatten
from ._engine.plan import ChainPlan
from ._engine.runner import ChainRun, RunnerState, run_chains
from ._restrict import restriction as restriction_of
from ._steps import describe_per_leaf, is_per_leaf, per_coordinate_steps
from ._validate import positive_float, positive_int, run_counts, seed_value
from ._version import __version__
from .diagnostics import HealthThresholds, check_health, warn_findings
from ._engine.programs import compiled_step
from .posterior import LocalizedPosterior
from .result import IncompleteRunWarning, LLCResult
from .samplers import (SamplerSettings, get_sampler, langevin_equivalent_step,
                       langevin_noise_equivalent_step)

__all__ = ["estimate", "default_nbeta"]

def default_nbeta(num_data: int) -> float:
    """nβ = n / log n, the inverse temperature β* = 1/log n of WBIC times n (docs/design.md §1)."""
    if num_data < 2:
        raise ValueError(f"nβ = n / log n needs n >= 2 samples; got n={num_data}; pass `nbeta`")
    return num_data / math.log(num_data)


def estimate(
    loss_fn: Callable[[Any, Any], Any],
    params: Any,
    data: Any,
    *,
    num_data: int | None = None,
    batch_size: int | None = None,
    sampler: str | SamplerSettings = "sgld",
    step_size: float | str | Any = 1e-4,
    target_acceptance: float = 0.98,
    nbeta: float | None = None,
    localization: float = 1.0,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: int = 500,
    thin: int = 1,
    seed: int = 0,
    init_loss_batches: int | None = None,
    baseline: str = "minibatch",
    trace_batch: str = "independent",
    full_loss_every: int | None = None,
    mala_every: int | None = 20,
    health_thresholds: HealthThresholds | None = None,
    keep_params_every: int | None = None,
    restrict: Any = None,
    probe: tuple[Callable[[Any, Any], Any], Any] | None = None,
    probe_every: int = 10,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1000,
    resume: str | os.PathLike[str] | None = None,
    chain_method: str = "auto",
    devices: Any = None,
    progress: bool | None = None,
) -> LLCResult:
    r"""Estimate the local learning coefficient λ̂ of a model at w* = ``params``.

    Samples the localized tempered posterior
    :math:`p(w) \propto \exp(-n\beta L_n(w) - \tfrac{\gamma}{2}\lVert w - w^*\rVert^2)` with
    ``num_chains`` independent chains started at w*, and returns

    .. math:: \hat\lambda = n\beta\,\big(\mathbb E_p[L_n(w)] - L_n(w^*)\big),

    where :math:`\mathbb E_p` is the mean of the minibatch losses over the post-burn-in draws
    and :math:`L_n(w^*)` is the full-data loss.

    Parameters
    ----------
    loss_fn
        ``loss_fn(params, batch)``: the mean per-sample negative log-likelihood of the batch
        as a framework scalar. With NumPy params (no autodiff) it returns ``(loss, grads)``.
    params
        w*, a pytree (dict, list, tuple) of floating-point arrays of one framework; the
        backend is chosen from their type. They are copied, never modified. ``loss_fn``
        always sees them in their own dtype; the chains' state is kept in that dtype widened
        to at least float32 (bfloat16 / float16 models: docs/scale.md).
    data
        Either a tuple of arrays sharing the leading dimension n (NumPy or the params'
        framework; llc draws minibatches and hands ``loss_fn`` a tuple of the same structure
        in the params' framework, on their device, floating arrays cast to the params'
        dtype), or a re-iterable of batches (a ``DataLoader``, a list) with ``num_data``.
    num_data
        n, the number of training samples; required with an iterable of batches.
    batch_size
        Minibatch size for array data (default ``min(256, n)``).
    sampler
        ``"sgld"``, ``"rmsprop_sgld"``, ``"sghmc"``, ``"sgnht"``, ``"mala"`` (full-batch: pass
        ``batch_size=n``), or a settings object such as
        ``llc.samplers.SGNHT(step_size=1e-2, diffusion=1.0)`` (whose own settings are then
        used and ``step_size`` is ignored). See :mod:`llc.samplers` for the update rules.
    step_size
        ε, the sampler step size, or ``"auto"``: set ε during the burn-in from the chains'
        own estimate of the bias the step adds to λ̂, then freeze it for the draws
        (``llc._adapt`` has the rule). The burn-in is cut into windows of 25 steps; after
        each, with Ḡ the window's mean of :math:`n\beta^2\lVert\nabla L_B(w)\rVert^2` and
        tr Σ_B the minibatch-gradient variance at w*, the estimated bias is
        :math:`\hat b(\epsilon) = \tfrac{\epsilon}{8}\overline G` (exact for a quadratic
        posterior; with ``trace_batch="own"`` plus :math:`\tfrac{\epsilon}{8}n\beta^2
        \operatorname{tr}\Sigma_B` for the own-batch bias of a without-replacement epoch),
        and ε is the largest step with :math:`\hat b(\epsilon) \le 0.03\,\hat\lambda`,
        λ̂ measured on the recent half of the windows (paired with L_B(w*) on each step's
        batch: one forward pass per burn-in step); while λ̂ still rises the bound may stop
        ε but not lower it. ε is kept where the windows' MALA acceptance is at least
        ``target_acceptance`` and below any step at which a chain diverged. The frozen ε
        uses the second half of the windows. Every burn-in step also scores its move (one
        more gradient per burn-in step). It starts from ε_c = 1e-4 (or the step of a
        ``sampler`` settings object). The chosen ε is ``attrs["sampler_step_size"]``, its
        estimated bias ``attrs["step_size_bias"]``, whether λ̂ had settled
        ``attrs["step_size_settled"]``, and the windows' (first step, ε, acceptance, b̂, λ̂)
        are ``attrs["step_size_history"]`` (JSON). Every sampler adapts: ``sghmc`` and
        ``sgnht`` through their curvature-equivalent SGLD step ε_c (2η/(2 − α), h²;
        :func:`llc.samplers.langevin_equivalent_step`), with the minibatch noise counted at
        their larger noise-equivalent step, and the acceptance of a Langevin probe at ε_c.
        Needs ``num_burnin`` ≥ 100. docs/step_size_auto.md compares it with fixed steps.

        Or **per-leaf steps**: a pytree mirroring ``params`` (a dict with the same keys, a
        list of the same length, …) with one positive step per leaf, or a number for a whole
        subtree (``{"encoder": 1e-5, "head": 1e-4}``). Each coordinate then moves with its
        leaf's step (:class:`llc.samplers.SGLD`'s per-coordinate ε), which makes the sampler
        follow a rescaling of a layer exactly: scale a layer by c and its step by c².
        ``sgld``, ``rmsprop_sgld``, ``sghmc`` and ``mala`` take them (``sgnht``'s thermostat
        needs one step). ``attrs["step_size_per_leaf"]`` records them (JSON, in the params'
        leaf order) and ``attrs["sampler_step_size"]`` is the largest; ``step-too-large``,
        which needs one ε, does not run, and the step suggestions give no numbers.
    target_acceptance
        δ for ``step_size="auto"``: the floor of the windows' mean MALA acceptance (default
        0.98, the accurate-step band of :func:`llc.calibrate`). It is a safeguard, not the
        target: the step is set by its estimated bias. Adapting to an acceptance of 0.995
        instead gave a mean |error| of 4.6 % over the known-λ suite (docs/step_size_auto.md).
        For bfloat16 and float16 parameters, whose rounding the acceptance measures as much
        as the step, ``"auto"`` raises ``ValueError``: choose the step on the float32 model
        (docs/scale.md).
    nbeta
        nβ, the effective inverse temperature; default ``n / log n`` with n the dataset size.
        Estimates with different nβ are not comparable: it is always recorded.
    localization
        γ ≥ 0, the strength of the Gaussian pull to w*.
    num_chains
        Independent chains, each with its own random stream.
    num_draws
        Draws kept per chain after burn-in (each chain takes
        ``num_burnin + num_draws * thin`` steps).
    num_burnin
        Steps discarded at the start of each chain; they never enter λ̂.
    thin
        Keep every ``thin``-th post-burn-in step.
    seed
        Integer seed: the same seed gives the same result.
    init_loss_batches
        Evaluate :math:`L_n(w^*)` on this many batches instead of the full data (a noisy
        baseline is multiplied by nβ: prefer the default full pass).
    baseline
        ``"minibatch"`` (default): the per-draw estimate is nβ (L_Bt(w_t) − L_Bt(w*)),
        subtracting the loss of w* on the same minibatch (one extra forward pass per draw);
        its expectation is that of ``"full"``, since every row is equally likely in a batch,
        with far less minibatch noise in the trace (the noise of L_Bt at w_t and at w*
        nearly cancels). ``"full"``: nβ (L_Bt(w_t) − L_n(w*)), the estimator of Lau et al.,
        no extra pass; with independent batches its trace carries the whole minibatch noise,
        so it needs many times more draws for the same error (docs/estimator.md).
    trace_batch
        Which minibatch a draw's loss :math:`L_{B_t}(w_t)` is taken on. ``"independent"``
        (default): a batch independent of the chain's position, so that the trace is an
        unbiased estimate of :math:`L_n(w_t)`. With array data llc draws every minibatch's
        rows with replacement, and the step's own batch is independent of :math:`w_t`
        (which only earlier batches moved): no extra cost. With an iterable of batches the
        loss is taken on the next batch of a separate pass over the iterable (one extra
        forward pass per draw), which is independent when the iterable reshuffles on every
        pass (a ``DataLoader`` with ``shuffle=True``; the ``fixed-order-batches`` health
        check reports one that does not); an iterable of one batch (the full data, or
        sufficient statistics) needs no second pass. ``"own"``: the step's own minibatch, with array
        data drawn as shuffled epochs without replacement, as devinterp and Lau et al. do.
        That trace is biased upward (a batch holds none of the rows the chain fitted earlier
        in its epoch, docs/estimator.md); it is kept to reproduce such results.
    full_loss_every
        Evaluate the full-data loss :math:`L_n(w_t)` at every k-th draw (the same batches as
        :math:`L_n(w^*)`, so ⌈n / batch size⌉ forward passes each) and keep it:
        ``result.full_llc_trace`` and ``result.full_llc_mean`` are λ̂ from it, free of
        minibatch noise and of any batch bias: a check of the trace where the data fit.
        Default ``None``: off.
    mala_every
        Compute the MALA acceptance probability of the sampler's move every ``mala_every``
        draws (one extra gradient evaluation each, so a cost of 1/``mala_every`` more
        gradients); ``None`` turns it off. Recorded as ``sample_stats["mala_acceptance"]``
        (NaN on the other draws). On the known-λ problems the accurate steps gave 0.98 and
        more; below 0.9 the ``low-mala-acceptance`` health check fires.
    health_thresholds
        Thresholds of the health checks run on the result (:func:`llc.check_health`); each
        finding is kept in ``result.findings`` and emitted as an ``LLCHealthWarning``.
    keep_params_every
        Keep the parameters w_t of every k-th draw (``result.param_draws``, a host copy of
        chains × draws / k × num_params numbers); by default none are kept, and memory stays
        O(chains × params) plus the traces. With ``restrict`` they are the sampled
        coordinates only.
    restrict
        Sample only some coordinates, every other held at w* (the weight-refined λ̂ of a
        component, Wang et al. 2024): λ̂_V = nβ (E^V[L_n] − L_n(w*)), with the localization,
        noise, step and preconditioner on the d_V selected coordinates alone. A mask pytree
        mirroring ``params`` (a bool per leaf or subtree, or a boolean array of a leaf's
        shape, per element), name patterns (a string or a list: ``fnmatch`` on the leaves'
        dotted names, ``"layers.0.attn.*"``), or a callable ``(name, array) -> bool or boolean
        array``. ``attrs["restrict"]`` records per leaf its name, the coordinates selected
        and its size, and ``attrs["num_params"]`` is d_V (``num_params_total``: d). Default
        ``None``: every coordinate moves.
    probe
        ``(pointwise_loss_fn, probe_data)``: evaluate the per-sample losses ℓ_i(w_t) =
        ``pointwise_loss_fn(params, probe_data)`` on the fixed probe data at every
        ``probe_every``-th draw (and once at w*), for per-sample observables
        (susceptibilities, Bayesian influence). ``pointwise_loss_fn`` returns a framework
        array of the probe rows' losses, shape (samples,) or (samples, tokens), or a tuple
        ``(losses, mask)`` (as ``causal_lm_loss(..., reduction="none")`` gives: masked
        tokens become NaN); ``probe_data`` is a tuple of arrays sharing their rows, evaluated
        as one batch. Stored as ``result.probe_loss`` (chain, draw // k, samples[, tokens]),
        host memory chains × ⌈draws/k⌉ × samples × tokens × 8 bytes, and the DataTree group
        ``probe_loss``. One forward pass on the probe data per evaluation.
    probe_every
        k, the draws between two probe evaluations (default 10).
    checkpoint
        Write the run so far to this path every ``checkpoint_every`` steps (netCDF, or zarr
        for ``*.zarr``; replaced atomically), at the end and on an interrupt. Under a
        distributed launch each process writes its own chains to ``<stem>.rank<r>of<P><suffix>``
        (and ``resume=`` reads it back).
    checkpoint_every
        Steps between checkpoints.
    resume
        Continue the run checkpointed at this path: every setting must match the call that
        wrote it, and the result equals that of an uninterrupted run with the same seed.
        Checkpoints go on to the same path unless ``checkpoint`` names another.
    chain_method
        How the chains are run. ``"vectorized"``: all chains advance together, for array
        ``data``: in JAX and TensorFlow every block of 200 steps of all chains is one
        compiled program (``vmap`` over chains, ``scan`` over steps, minibatches drawn on the
        device); in PyTorch every step of all chains is one eager ``torch.func.vmap`` call
        (``loss_fn`` must then be vmappable: no ``.item()``, no in-place writes to its
        inputs). ``"sequential"``: a Python loop over steps and chains, one compiled step
        each, the reference path (any backend, any data). ``"auto"`` (default): vectorized
        where the backend measured it faster: JAX and TensorFlow with array data; PyTorch
        stays sequential (on a CPU its vectorized step pays only for many chains of small
        models, docs/benchmarks.md: pass ``"vectorized"`` there).
        Both draw the same random numbers: their results agree to rounding.
    devices
        Split the chains over several devices of this process (JAX: ``"all"`` =
        ``jax.local_devices()``, a count, or ``jax.Device`` objects; TensorFlow: ``"all"`` =
        the logical GPUs, else CPUs, a count, or device names; default None: the params'
        device). Each device runs the vectorized program over its consecutive share of the
        chains (``num_chains`` must be a multiple of the number of devices, times the number
        of processes under a distributed launch); a chain's random numbers and minibatches
        depend only on the seed, the chain and the step, so the result is that of one device
        (bitwise on one XLA configuration; docs/scale.md). Under ``torchrun`` or
        ``jax.distributed`` (initialized before the call) process r runs the chains r, r + P,
        … and every process returns the whole result.
    progress
        Show a progress bar on stderr; default: only when stderr is a terminal.

    Returns
    -------
    LLCResult
        ``llc_mean``, ``llc_std``, traces, ``summary()``, ``to_arviz()``. After a
        ``KeyboardInterrupt`` the draws so far come back as a result with
        ``result.complete == False`` (the interrupt propagates if no draw was taken yet).

    Raises
    ------
    TypeError, ValueError
        For malformed arguments (the message names the argument), a non-scalar or
        non-differentiable loss, or a non-finite :math:`L_n(w^*)`.
    RuntimeError
        If every chain fails or diverges.
    """
    started = time.perf_counter()
    num_chains, num_draws, num_burnin = run_counts(loss_fn, num_chains, num_draws, num_burnin)
    thin = positive_int("thin", thin)
    localization = positive_float("localization", localization, allow_zero=True)
    seed = seed_value(seed)
    if not isinstance(baseline, str) or baseline not in ("full", "minibatch"):
        raise ValueError(f"`baseline` must be 'full' or 'minibatch'; got {baseline!r}")
    if init_loss_batches is not None:
        init_loss_batches = positive_int("init_loss_batches", init_loss_batches)
    if not isinstance(trace_batch, str) or trace_batch not in ("independent", "own"):
        raise ValueError(f"`trace_batch` must be 'independent' or 'own'; got {trace_batch!r}")
    if full_loss_every is not None:
        full_loss_every = positive_int("full_loss_every", full_loss_every)
    if mala_every is not None:
        mala_every = positive_int("mala_every", mala_every)
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    if keep_params_every is not None:
        keep_params_every = positive_int("keep_params_every", keep_params_every)
    probe_every = positive_int("probe_every", probe_every)
    if probe is not None and not (isinstance(probe, tuple) and len(probe) == 2
                                  and callable(probe[0])):
        raise TypeError("`probe` must be a tuple (pointwise_loss_fn, probe_data) with "
                        f"pointwise_loss_fn(params, batch) -> per-sample losses; got {probe!r:.80}")
    resume_path = None if resume is None else Path(resume)
    checkpoint_path = Path(checkpoint) if checkpoint is not None else resume_path
    if not isinstance(chain_method, str) or chain_method not in _CHAIN_METHODS:
        raise ValueError(f"`chain_method` must be one of {', '.join(map(repr, _CHAIN_METHODS))}; "
                         f"got {chain_method!r}")
    adapt = isinstance(step_size, str)
    if adapt and step_size != "auto":
        raise ValueError(f"`step_size` must be a positive number, 'auto', or a pytree of "
                         f"positive numbers matching `params`; got {step_size!r}")
    per_leaf = is_per_leaf(step_size) and isinstance(sampler, str)
    if adapt:
        target_acceptance = positive_float("target_acceptance", target_acceptance)
        if not target_acceptance < 1:
            raise ValueError(f"`target_acceptance` must be in (0, 1); got {target_acceptance}")
        if num_burnin < 4 * _ADAPT_WINDOW:
            raise ValueError(
                f"`step_size='auto'` adapts the step during the burn-in: `num_burnin` must be at "
                f"least {4 * _ADAPT_WINDOW} (windows of {_ADAPT_WINDOW} steps); got {num_burnin}")
    settings = get_sampler(sampler, step_size=(_AUTO_START if adapt else 1.0 if per_leaf
                                               else step_size)) \
        if isinstance(sampler, str) else get_sampler(sampler)

    backend = backend_for(params, argument="params")
    leaves = backend.leaves(params)
    center, unravel = backend.ravel(params)
    num_params_total = int(center.shape[0])
    restriction = None
    if restrict is not None:
        restriction = restriction_of(restrict, params, center, unravel, backend)
        center, unravel = restriction.center, restriction.unravel
    per_leaf_steps = "off"
    if per_leaf:
        steps = per_coordinate_steps(step_size, params, backend)
        per_leaf_steps = describe_per_leaf(steps, [math.prod(int(n) for n in tuple(leaf.shape))
                                                   for leaf in leaves])
        settings = with_step_size(settings, steps if restriction is None
                                  else steps[restriction.free])
    elif isinstance(getattr(settings, "step_size", None), np.ndarray) and restriction is None \
            and settings.step_size.shape == (num_params_total,):  # type: ignore[attr-defined]
        per_leaf_steps = describe_per_leaf(settings.step_size, [  # type: ignore[attr-defined]
            math.prod(int(n) for n in tuple(leaf.shape)) for leaf in leaves])
    if adapt and isinstance(sampler, str) and langevin_equivalent_step(settings) is not None:
        settings = settings.with_curvature_equivalent_step(  # type: ignore[attr-defined]
            _AUTO_START)  # SGNHT: h = 1e-2
    data_like = backend.data_like(params)  # floating data take the model's dtype
    dataset = make_data(data, num_data=num_data, batch_size=batch_size, backend=backend,
                        like=data_like, with_replacement=trace_batch == "independent")
    iterable = not isinstance(dataset, ArrayData)
    n = dataset.num_data
    nbeta = default_nbeta(n) if nbeta is None else positive_float("nbeta", nbeta)
    if progress is None:
        progress = sys.stderr.isatty()
    vectorized = _resolve_chain_method(chain_method, backend, dataset, num_chains, center)
    group = _process_group(backend, num_chains)
    if group is not None:  # one checkpoint file per process, of its chains
        resume_path = _process_path(resume_path, group)
        checkpoint_path = _process_path(checkpoint_path, group)
    if resume_path is not None and not resume_path.exists():
        raise FileNotFoundError(f"`resume`: no checkpoint at {str(resume_path)!r}")
    chain_devices = _resolve_devices(devices, backend, num_chains, vectorized, chain_method,
                                     1 if group is None else group.size)
    if group is not None and group.rank != 0:
        progress = False  # one bar, on rank 0

    with _isolated_global_rng(backend, seed):
        loss_and_grad = backend.value_and_grad(loss_fn, unravel)
        if restriction is not None and not backend.has_autodiff:
            loss_and_grad = restriction.hand_written_gradient(loss_and_grad)
        repeat_difference = _probe(backend, loss_and_grad, center, dataset)
        loss_only = backend.value(loss_fn, unravel)
        init = _full_loss_and_grad(backend, loss_and_grad, center, dataset, init_loss_batches)
        # an iterable of one batch per pass trains and traces on the whole of it: no second pass
        separate_trace = trace_batch == "independent" and iterable and init.batches > 1
        reshuffles = _reshuffles(backend, dataset) if separate_trace else None
        init_loss = init.loss
        param_dtype = backend.describe(data_like)["dtype"]
        rounding = loss_rounding(nbeta, init_loss, param_dtype)
        if adapt and narrower_than_float32(param_dtype):
            raise ValueError(
                f"`step_size='auto'` keeps the MALA acceptance above a floor, and for a "
                f"{param_dtype} model the acceptance measures the forward pass's rounding as "
                f"much as the step (the loss's own rounding alone: nβ·u·|L_n(w*)| = "
                f"{rounding:.2g}): pass `step_size` as a number, found with step_size='auto' "
                "or llc.calibrate on the float32 model (docs/scale.md)")
        posterior = LocalizedPosterior(loss_and_grad, center, nbeta, localization, backend,
                                       slope=init.grad)
        probe_losses = None if probe is None else _probe_losses(backend, probe, unravel,
                                                                data_like)
        probe_center = None if probe_losses is None else probe_losses(center)
        every_key = backend.split(backend.key(seed), num_chains)
        # under a distributed launch this process runs the chains rank, rank + size, …
        mine = range(num_chains) if group is None else range(group.rank, num_chains, group.size)
        chain_keys = [every_key[chain] for chain in mine]
        saved = {} if resume_path is None else _checkpoint.saved_attrs(resume_path)
        tuning = adapt and (resume_path is None or "step_size_tuning" in saved)
        # a momentum sampler: its minibatch noise biases λ̂ at a larger step than its
        # curvature does, and the health check needs the noise to estimate that
        momentum = langevin_noise_equivalent_step(settings) != langevin_equivalent_step(settings)
        noise = (minibatch_gradient_variance(posterior, backend, dataset, every_key[0])
                 if tuning or momentum else None)
        noise_power = "off" if not momentum or noise is None \
            else posterior.nbeta**2 * float(noise.sum())
        noise_at = None
        if langevin_equivalent_step(settings) is not None:  # the health check's b̂ (all three)
            def noise_at(position: Any, chain: int, start: int) -> float:
                key = backend.fold_in(backend.fold_in(chain_keys[chain], _NOISE_STREAM), start)
                return float(minibatch_gradient_variance(
                    posterior, backend, dataset, key, position=position,
                    probes=_NOISE_PROBES_PER_CHAIN).sum())
        tuner = None
        if tuning and noise is not None:
            tuner = _tuner_or_explain(settings, posterior, backend, noise,
                                      num_burnin, target_acceptance,
                                      own_batch=trace_batch == "own",
                                      noise_at=noise_at if momentum else None, group=group,
                                      chain_ids=list(mine))
            if "step_size_tuning" in saved:  # a checkpoint written in the burn-in
                tuner.restore(saved["step_size_tuning"])
        elif adapt:  # resumed after the burn-in: the checkpoint holds the frozen step
            settings = with_step_size(settings, float(saved.get("sampler_step_size", math.nan)))
        algorithm = settings.build(posterior)  # the chains' states start with these settings
        algorithm = algorithm._replace(step=compiled_step(backend, settings, posterior))
        plan = ChainPlan(
            backend, algorithm, dataset, center, num_burnin, num_draws, thin, nbeta, init_loss,
            batch_baseline=loss_only if baseline == "minibatch" else None,
            mala_every=mala_every,
            keep_params_every=keep_params_every,
            trace_loss=loss_only if separate_trace else None,
            first_order=True,
            full_loss=(None if full_loss_every is None else functools.partial(
                _full_loss, backend, loss_only, dataset, init_loss_batches)),
            full_loss_every=full_loss_every,
            tuning_window=None if tuner is None else tuner.window,
            warmup_baseline=None if tuner is None else loss_only,
            probe=probe_losses,
            probe_every=None if probe is None else probe_every,
            probe_shape=() if probe_center is None else tuple(probe_center.shape),
            devices=chain_devices,
        )
        attrs = {
            "inference_library": "llc",
            "inference_library_version": __version__,
            "backend": backend.name,
            **backend.describe(center),
            "param_dtype": param_dtype,
            "num_data": n,
            "num_params": int(center.shape[0]),
            "nbeta": nbeta,
            "localization": localization,
            "init_loss": init_loss,
            "loss_rounding": rounding,
            "init_grad_norm": init.grad_norm,
            "init_loss_rows": init.rows,
            "loss_repeat_difference": repeat_difference,
            "baseline": baseline,
            "init_loss_batches": "all" if init_loss_batches is None else init_loss_batches,
            "batch_size": "iterable" if dataset.batch_size is None else dataset.batch_size,
            "trace_batch": trace_batch,
            "minibatches": _minibatch_description(dataset, separate_trace),
            **({"batches_per_pass": init.batches} if iterable and init_loss_batches is None
               else {}),
            **({} if reshuffles is None else {"iterable_reshuffles": int(reshuffles)}),
            "full_loss_every": "off" if full_loss_every is None else full_loss_every,
            "sampler": settings.name,
            **_sampler_attrs(settings),
            "num_chains": num_chains,
            "num_draws": num_draws,
            "num_burnin": num_burnin,
            "thin": thin,
            "mala_every": "off" if mala_every is None else mala_every,
            "keep_params_every": "off" if keep_params_every is None else keep_params_every,
            "probe_every": "off" if probe is None else probe_every,
            "probe_shape": "off" if probe_center is None else json.dumps(
                list(probe_center.shape)),
            "chain_method": "vectorized" if vectorized else "sequential",
            "devices": "off" if chain_devices is None else ", ".join(map(str, chain_devices)),
            "step_size_adaptation": (
                f"burn-in: estimated step bias <= {_BIAS_TARGET:g} λ̂, MALA "
                f"acceptance >= {target_acceptance}" if adapt else "off"),
            "step_size_history": "off",
            "gradient_noise_power": noise_power,
            "step_size_per_leaf": per_leaf_steps,
            "num_params_total": num_params_total,
            "restrict": "off" if restriction is None else restriction.description(
                [math.prod(int(n) for n in tuple(leaf.shape)) for leaf in leaves]),
            "param_shapes": json.dumps([list(leaf.shape) for leaf in leaves]),
            "seed": seed,
            "processes": "off" if group is None else group.size,
        }
        if adapt:  # the step so far: the tuner's, or the checkpoint's frozen one
            attrs.update(_adaptation_attrs(settings, tuner, saved, checkpoint=False))
        previous_elapsed = 0.0
        if resume_path is not None:
            state, previous_elapsed = _checkpoint.restore(resume_path, plan, attrs)
        else:
            state = RunnerState(0, [algorithm.init(center) for _ in chain_keys],
                                [ChainRun.empty(plan) for _ in chain_keys])
        live = None if tuner is None else (lambda: _adaptation_attrs(settings, tuner, saved))
        writer = None if checkpoint_path is None else _checkpoint.writer(
            checkpoint_path, plan, attrs, started - previous_elapsed, live_attrs=live,
            probe_loss_at_center=probe_center)
        state = run_chains(plan, chain_keys, state, progress=progress, checkpoint=writer,
                           checkpoint_every=checkpoint_every, vectorized=vectorized, tuner=tuner)
        if tuner is not None:
            attrs.update(_adaptation_attrs(settings, tuner, saved, checkpoint=False))
        if noise_at is not None and not state.interrupted:
            powers = _noise_at_the_end(noise_at, state, num_burnin + num_draws * thin,
                                       posterior.nbeta)
            if group is not None:
                powers = [power for part in _exchanged(group, powers) for power in part]
            attrs["gradient_noise_power_at_draws"] = float(np.mean(powers)) if powers else "n/a"
        if group is not None:
            state.runs = _in_chain_order(_exchanged(group, _picklable(state.runs)), num_chains)

    elapsed = previous_elapsed + time.perf_counter() - started
    if state.interrupted:
        done = plan.draws_before(state.step)
        if done == 0:
            raise KeyboardInterrupt("interrupted before the first draw")
        attrs.update(complete=0, steps_done=state.step)
        result = LLCResult.from_chains(state.runs, attrs=attrs, elapsed=elapsed, num_draws=done,
                                       probe_loss_at_center=probe_center)
        warnings.warn(
            f"interrupted at step {state.step} of {plan.steps}: the result holds the first "
            f"{done} of {num_draws} draws per chain (result.complete is False)"
            + (f"; continue with resume={str(checkpoint_path)!r}" if checkpoint_path else ""),
            IncompleteRunWarning, stacklevel=2)
    else:
        attrs.update(complete=1, steps_done=state.step)
        result = LLCResult.from_chains(state.runs, attrs=attrs, elapsed=elapsed,
                                       probe_loss_at_center=probe_center)
    result._raise_if_every_chain_failed()
    result.findings = check_health(result, health_thresholds)
    warn_findings(result.findings, stacklevel=3)
    return result


_CHAIN_METHODS = ("auto", "vectorized", "sequential")
_ADAPT_WINDOW = 25  # burn-in steps per update of step_size="auto"
_AUTO_START = 1e-4  # the first step size tried by step_size="auto"
_NOISE_STREAM = 0x7B5E  # folded into a chain's key: the minibatches that measure tr Σ_B there
_NOISE_PROBES_PER_CHAIN = 4  # minibatch gradients per chain and window (pooled over chains)


def _noise_at_the_end(noise_at: Callable[[Any, int, int], float], state: RunnerState,
                      steps: int, nbeta: float) -> list[float]:
    """nβ² tr Σ_B at each healthy chain's last position (the finite ones): the
    minibatch noise where it acts over the draws (the health check's b̂ splits it between the
    loss and the localization term; a momentum sampler amplifies it), on a singular model
    many times its value at w*."""
    powers = [nbeta**2 * noise_at(chain_state.position, chain, steps)
              for chain, (chain_state, run) in enumerate(zip(state.states, state.runs,
                                                               strict=True))
              if not run.failed]
    return [power for power in powers if math.isfinite(power)]


def _process_group(backend: Backend, num_chains: int) -> ProcessGroup | None:
    """The distributed launch this call runs in (``backend.process_group()``), if any."""
    group = backend.process_group()
    if group is None:
        return None
    if num_chains < group.size:
        raise ValueError(f"`num_chains` ({num_chains}) must be at least the number of "
                         f"processes ({group.size}): each runs chains rank, rank + "
                         f"{group.size}, …")
    return group


def _process_path(path: Path | None, group: ProcessGroup) -> Path | None:
    """This process's checkpoint file for ``path``: ``run.rank1of4.nc`` for ``run.nc``."""
    if path is None:
        return None
    return path.with_name(f"{path.stem}.rank{group.rank}of{group.size}{path.suffix}")


def _exchanged(group: ProcessGroup, obj: Any) -> list[Any]:
    """``group.all_gather(obj)``, with an error that says what was lost when a process
    has stopped."""
    try:
        return group.all_gather(obj)
    except Exception as error:  # noqa: BLE001 - the framework's own error, whatever it is
        raise RuntimeError(
            f"process {group.rank} of {group.size}: exchanging the chains' runs with the "
            f"other processes failed ({type(error).__name__}: {error}); a process has "
            f"probably stopped (process r runs the chains r, r + {group.size}, …). Each "
            "process's checkpoint (`checkpoint=`, one file per process) keeps its chains: "
            "relaunch the same command with `resume=` to continue") from error


def _picklable(runs: list[ChainRun]) -> list[ChainRun]:
    """``runs`` with any exception that does not pickle kept as its message (the form a
    checkpoint restores), so that they can be sent to the other processes."""
    for run in runs:
        if run.error is not None:
            try:
                pickle.dumps(run.error)
            except Exception:  # noqa: BLE001 - any pickling failure: keep the message
                run.failure, run.error = run.failure_message(), None
    return runs


def _in_chain_order(per_process: list[list[ChainRun]], num_chains: int) -> list[ChainRun]:
    """The runs gathered from every process (process r ran chains r, r + size, …) in chain
    order."""
    size = len(per_process)
    runs: list[Any] = [None] * num_chains
    for rank, mine in enumerate(per_process):
        runs[rank::size] = mine
    return runs


def _tuner_or_explain(settings: SamplerSettings, posterior: LocalizedPosterior, backend: Backend,
                      noise: np.ndarray, num_burnin: int, target: float,
                      own_batch: bool, noise_at: Callable[[Any, int, int], float] | None,
                      group: ProcessGroup | None, chain_ids: list[int]) -> StepSizeTuner:
    """The controller of the burn-in's step (``llc._adapt``), with a clear error for settings
    without a step."""
    if not hasattr(settings, "step_size"):
        raise TypeError(f"`step_size='auto'` needs sampler settings with a `step_size`; "
                        f"{settings!r} has none")
    return StepSizeTuner(settings, posterior, backend, noise,
                         num_steps=num_burnin, target=target, window=_ADAPT_WINDOW,
                         own_batch=own_batch, noise_at=noise_at,
                         chain_ids=None if group is None else chain_ids,
                         exchange=None if group is None else functools.partial(_exchanged, group))


def _adaptation_attrs(settings: SamplerSettings, tuner: StepSizeTuner | None,
                      saved: dict[str, Any], checkpoint: bool = True) -> dict[str, Any]:
    """The root attributes of ``step_size="auto"``: the sampler's settings at the step in use
    (the frozen one after the burn-in), the windows' history, b̂ and whether it settled, and
    while the burn-in runs (with ``checkpoint``) the tuner's state for a checkpoint. Without
    a tuner (a run resumed after its burn-in) they are the checkpoint's."""
    if tuner is None:
        keys = ("step_size_history", "step_size_bias", "step_size_settled")
        return {**_sampler_attrs(settings), **{key: saved.get(key, "missing") for key in keys}}
    adaptation = tuner.adaptation
    if adaptation is None:  # in the burn-in
        current = settings if tuner.window_settings is None else tuner.window_settings
        return {**_sampler_attrs(current), "step_size_history": _history(tuner.history),
                "step_size_bias": "pending", "step_size_settled": "pending",
                **(tuner.checkpoint_attrs() if checkpoint else {})}
    return {**_sampler_attrs(adaptation.settings),
            "step_size_history": _history(adaptation.history),
            "step_size_bias": adaptation.bias,
            "step_size_settled": "yes" if adaptation.settled else (
                "no: the burn-in's λ̂ still rose in its last window, so the bias bound "
                "b̂ <= τ λ̂ is not established; run a longer burn-in")}


def _history(history: list[tuple[int, float, float, float, float]]) -> str:
    return json.dumps([[start, size, round(acceptance, 6),
                        round(bias, 6) if math.isfinite(bias) else None,
                        round(llc, 6) if math.isfinite(llc) else None]
                       for start, size, acceptance, bias, llc in history])


def _sampler_attrs(settings: SamplerSettings) -> dict[str, Any]:
    return {f"sampler_{key}": value for key, value in settings.settings().items()
            if key != "name"}


def _probe_losses(backend: Backend, probe: tuple[Callable[..., Any], Any],
                  unravel: Callable[[Any], Any], like: Any) -> Callable[[Any], np.ndarray]:
    """w ↦ the per-sample losses on the probe data, a float64 NumPy array (masked tokens
    NaN), checked against the probe's rows."""
    pointwise_loss_fn, probe_data = probe
    if not isinstance(probe_data, tuple):
        raise TypeError("`probe` data must be a tuple of arrays sharing their rows (evaluated "
                        f"as one batch); got {type(probe_data).__name__}")
    probe_set = make_data(probe_data, num_data=None, batch_size=None, backend=backend,
                          like=like)
    assert isinstance(probe_set, ArrayData)  # a tuple is array data
    batch, rows = tuple(probe_set.arrays), probe_set.num_data

    def evaluate(position: Any) -> np.ndarray:
        output = pointwise_loss_fn(unravel(position), batch)
        mask = None
        if isinstance(output, tuple) and len(output) == 2:
            output, mask = output
        losses = np.asarray(backend.to_numpy(output), dtype=np.float64)
        if losses.ndim not in (1, 2) or losses.shape[0] != rows:
            raise ValueError(f"`probe`'s pointwise_loss_fn must return a loss per probe row, "
                             f"shape ({rows},) or ({rows}, tokens); got {losses.shape}")
        if mask is not None:
            kept = np.asarray(backend.to_numpy(mask)).astype(bool)
            losses = np.where(np.broadcast_to(kept, losses.shape), losses, np.nan)
        return losses

    return evaluate


def _resolve_chain_method(chain_method: str, backend: Backend, dataset: DataSource,
                          num_chains: int, center: Any) -> bool:
    """Whether the chains run vectorized (see ``estimate``'s ``chain_method``)."""
    if chain_method == "sequential":
        return False
    reason = None
    if backend.chain_transforms is None:
        reason = f"the {backend.name} backend runs chains one at a time"
    elif not isinstance(dataset, ArrayData):
        reason = "`data` is an iterable of batches; pass a tuple of arrays to draw on the device"
    if reason is None:
        transforms = backend.chain_transforms
        assert transforms is not None
        return chain_method == "vectorized" or transforms.worthwhile(num_chains, center)
    if chain_method == "vectorized":
        raise ValueError(f"`chain_method='vectorized'` is not available: {reason}; use 'auto' "
                         "or 'sequential'")
    return False


def _resolve_devices(devices: Any, backend: Backend, num_chains: int, vectorized: bool,
                     chain_method: str, processes: int = 1) -> tuple[Any, ...] | None:
    """``devices`` as the backend's devices (see ``estimate``), or None."""
    chosen = backend.chain_devices(devices)
    if chosen is None:
        return None
    if not vectorized:
        raise ValueError(
            "`devices` splits the vectorized program over devices: it needs "
            + ("chain_method='auto' or 'vectorized'" if chain_method == "sequential"
               else "array `data` (a tuple of arrays), drawn on the devices"))
    if num_chains % (processes * len(chosen)):
        across = "" if processes == 1 else f" times the number of processes ({processes})"
        raise ValueError(f"`num_chains` ({num_chains}) must be a multiple of the number of "
                         f"`devices` ({len(chosen)}){across}: each device runs an equal share")
    return chosen


@contextlib.contextmanager
def _isolated_global_rng(backend: Backend, seed: int) -> Iterator[None]:
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        np.random.seed(seed % 2**32)
        random.seed(seed)
        with backend.isolated_global_rng(seed):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class _LossAtCenter(NamedTuple):
    loss: float  # L_n(w*)
    grad: Any  # ∇L_n(w*), a flat framework vector
    grad_norm: float
    rows: int  # rows the batches held
    batches: int


def _full_loss_and_grad(backend: Backend, loss_and_grad: Callable[..., Any], center: Any,
                        dataset: DataSource, max_batches: int | None) -> _LossAtCenter:
    """L_n(w*) and ∇L_n(w*) over the data in order (or its first ``max_batches`` batches)."""
    total_loss = 0.0
    total_grad = None
    count = batches = 0
    for batch, size in dataset.evaluation_batches(max_batches):
        batches += 1
        loss, grad = loss_and_grad(center, batch)
        total_loss += float(backend.to_numpy(loss)) * size
        total_grad = (backend.linear_combination((size, grad), reuse=0) if total_grad is None
                      else backend.linear_combination((1.0, total_grad), (size, grad), reuse=0))
        count += size
    if count == 0:
        raise ValueError("`data` yielded no batches for the loss at w*")
    init_loss = total_loss / count
    if not math.isfinite(init_loss):
        raise ValueError(
            f"the loss at w* (`params`) on the data is {init_loss}: check params and data for "
            "NaN/inf and that loss_fn is finite at w*"
        )
    mean_grad = backend.linear_combination((1.0 / count, total_grad), reuse=0)
    xp = backend.namespace(mean_grad)
    grad_norm = float(backend.to_numpy(xp.linalg.vector_norm(mean_grad)))
    return _LossAtCenter(init_loss, mean_grad, grad_norm, count, batches)


def _full_loss(backend: Backend, loss_only: Callable[..., Any], dataset: DataSource,
               max_batches: int | None, position: Any) -> float:
    """L_n(position) over the batches of L_n(w*)."""
    total, count = 0.0, 0
    for batch, size in dataset.evaluation_batches(max_batches):
        total += float(backend.to_numpy(loss_only(position, batch))) * size
        count += size
    return total / count


def _minibatch_description(dataset: DataSource, separate_trace: bool) -> str:
    if isinstance(dataset, ArrayData):
        return "with replacement" if dataset.with_replacement else "shuffled epochs"
    return "iterable; trace on a separate pass" if separate_trace else "iterable"


def _reshuffles(backend: Backend, dataset: DataSource) -> bool:
    """Whether two passes over an iterable of batches start with different batches."""
    def first_batch() -> Any:
        stream = dataset.stream(None)
        try:
            return next(stream)
        finally:
            stream.close()  # ends the pass (a DataLoader's workers)

    first, second = first_batch(), first_batch()
    pairs = [(a, b) if isinstance(a, (str, bytes)) or a is None
             else (backend.to_numpy(a), backend.to_numpy(b))
             for a, b in zip(tree_flatten(first)[0], tree_flatten(second)[0])]
    return not all(a == b if isinstance(a, (str, bytes)) or a is None
                   else a.shape == b.shape and np.array_equal(a, b) for a, b in pairs)


def _probe(backend: Backend, loss_and_grad: Callable[..., Any], center: Any, dataset: DataSource
           ) -> float:
    """Call ``loss_fn`` at w*, so a broken loss fails here with its own traceback; then again
    on the same batch. Returns the relative difference of the two losses (0 for a
    deterministic loss; dropout or a random augmentation make it large)."""
    batch = next(dataset.stream(backend.key(0)))
    loss, grad = loss_and_grad(center, batch)
    if tuple(grad.shape) != tuple(center.shape):
        raise ValueError("the gradient of `loss_fn` does not match the shape of `params`")
    again, _ = loss_and_grad(center, batch)
    first, second = float(backend.to_numpy(loss)), float(backend.to_numpy(again))
    if not (math.isfinite(first) and math.isfinite(second)):
        return 0.0  # a non-finite loss is reported by the loss at w*
    return abs(first - second) / max(abs(first), abs(second), 1e-30)
