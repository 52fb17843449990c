"""Plots of an LLCResult: every function returns a drawn, savable figure for healthy runs,
failed chains, one chain, no burn-in and no MALA diagnostic; ``import llc`` stays free of
matplotlib."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

import llc
from llc.result import LLCResult

pytest.importorskip("matplotlib")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from llc import plots

AXES = {"plot_trace": 2, "plot_rank": 1, "plot_acceptance": 2, "plot_diagnostics": 5}


def synthetic(*, chains: int = 3, draws: int = 200, burnin: int = 40,
              mala_every: int | None = 10, seed: int = 0, **attrs: Any) -> LLCResult:
    """An LLCResult built directly: AR(1) λ̂ traces around 5 with per-draw sd ≫ the mean."""
    rng = np.random.default_rng(seed)
    nbeta, init_loss = 500.0, 1.0
    slow = np.zeros((chains, draws))
    for t in range(1, draws):
        slow[:, t] = 0.9 * slow[:, t - 1] + rng.normal(0, 0.5, chains)
    llc_trace = 5.0 + slow + rng.normal(0, 20.0, (chains, draws))
    loss = init_loss + llc_trace / nbeta
    stats = {
        "distance": np.abs(1 + 0.05 * np.cumsum(rng.normal(size=(chains, draws)), axis=1)),
        "grad_norm": rng.uniform(1, 2, (chains, draws)),
        "diverging": np.zeros((chains, draws), dtype=bool),
    }
    if mala_every is not None:
        acceptance = np.full((chains, draws), np.nan)
        acceptance[:, ::mala_every] = rng.uniform(0.85, 1.0, (chains, len(range(0, draws,
                                                                                mala_every))))
        stats["mala_acceptance"] = acceptance
    settings = {"nbeta": nbeta, "init_loss": init_loss, "num_data": 1000, "batch_size": 100,
                "thin": 1, "mala_every": "off" if mala_every is None else mala_every,
                "sampler": "sgld", "sampler_step_size": 1e-4, "localization": 1.0,
                "baseline": "full"}
    settings.update(attrs)
    return LLCResult(
        llc_trace=llc_trace, loss_trace=loss, init_loss=init_loss, nbeta=nbeta,
        sample_stats=stats,
        warmup_loss=init_loss + rng.normal(0, 0.04, (chains, burnin)),
        failed_chains=np.zeros(chains, dtype=bool), chain_errors=[""] * chains,
        attrs=settings, elapsed=0.1,
    )


def with_failures(result: LLCResult) -> LLCResult:
    """Chain 1 diverged half way (NaN after), chain 2 raised before its first draw."""
    draws = result.llc_trace.shape[1]
    for name in ("llc_trace", "loss_trace"):
        values = getattr(result, name)
        values[1, draws // 2:] = np.nan
        values[2, :] = np.nan
    for name, values in result.sample_stats.items():
        if name == "diverging":
            values[1, draws // 2:] = True
        else:
            values[1, draws // 2:] = np.nan
            values[2, :] = np.nan
    result.failed_chains[[1, 2]] = True
    result.chain_errors[1] = "diverged at step 150: non-finite loss or parameters"
    result.chain_errors[2] = "raised ValueError: boom"
    return result


@pytest.fixture(scope="module")
def estimated() -> LLCResult:
    """A real (small) estimate of a deep linear network."""
    problem = llc.problems.DeepLinearNetwork((4, 5, 3, 4), rank=2)
    data, params = problem.setup(2000, seed=0)
    return llc.estimate(problem.loss_and_grad, params, data, step_size=3e-5, batch_size=200,
                        num_chains=3, num_draws=300, num_burnin=100, baseline="minibatch",
                        mala_every=10, progress=False, seed=0)


CASES = {
    "estimated": None,  # the fixture
    "no_mala": lambda: synthetic(mala_every=None),
    "single_chain": lambda: synthetic(chains=1),
    "no_burnin": lambda: synthetic(burnin=0),
    "failed_chains": lambda: with_failures(synthetic(chains=4)),
    "thinned_no_epochs": lambda: synthetic(thin=3, batch_size=None),
    "few_draws": lambda: synthetic(draws=6, burnin=0, mala_every=1),
}


@pytest.fixture(params=list(CASES))
def result(request: pytest.FixtureRequest, estimated: LLCResult) -> LLCResult:
    make = CASES[request.param]
    return estimated if make is None else make()


def _drawn(axis: Any) -> int:
    return len(axis.lines) + len(axis.patches) + len(axis.collections) + len(axis.texts)


@pytest.mark.parametrize("name", list(AXES))
def test_each_plot_returns_a_drawn_figure_and_saves_a_png(name: str, result: LLCResult,
                                                         tmp_path: Any) -> None:
    function = getattr(plots, name)
    kwargs = {"true_lambda": 7.0} if name in ("plot_trace", "plot_diagnostics") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # none from NaN traces or empty means
        figure = function(result, **kwargs)
    try:
        assert isinstance(figure, Figure)
        assert len(figure.axes) == AXES[name]
        for axis in figure.axes:
            assert _drawn(axis) > 0, axis.get_title()
        path = tmp_path / f"{name}.png"
        figure.savefig(path, dpi=60)
        assert path.stat().st_size > 10_000
    finally:
        plt.close(figure)


def test_trace_shows_the_estimate_the_truth_and_the_burnin(estimated: LLCResult) -> None:
    figure = plots.plot_trace(estimated, true_lambda=7.0)
    try:
        ax_llc, ax_loss = figure.axes
        legend = [t.get_text() for t in ax_llc.get_legend().get_texts()]
        assert any("MCSE" in text for text in legend)
        assert "true λ = 7" in legend
        assert "burn-in (no λ̂)" in legend
        assert [f"chain {c}" for c in range(3)] == [t for t in legend if t.startswith("chain")]
        # the axis starts at step 0 and the burn-in is shaded on both panels
        assert ax_llc.get_xlim()[0] == 0
        for axis in (ax_llc, ax_loss):
            assert any(p.get_x() == 0 for p in axis.patches)
    finally:
        plt.close(figure)


def test_y_range_follows_the_smoothed_trace_not_the_single_draws() -> None:
    result = synthetic(draws=1000)  # per-draw sd 20 around 5
    figure = plots.plot_trace(result)
    try:
        low, high = figure.axes[0].get_ylim()
        spread = np.nanpercentile(result.llc_trace, [1, 99])
        assert high - low < 0.6 * (spread[1] - spread[0])
        assert low < result.llc_mean < high
    finally:
        plt.close(figure)


def test_a_far_true_lambda_stays_in_view() -> None:
    figure = plots.plot_trace(synthetic(), true_lambda=60.0)
    try:
        low, high = figure.axes[0].get_ylim()
        assert low < 5 and high > 60
    finally:
        plt.close(figure)


def test_failed_chains_are_dashed_marked_and_left_out_of_the_rank_plot() -> None:
    result = with_failures(synthetic(chains=4))
    figure = plots.plot_diagnostics(result)
    try:
        ax_llc, _, ax_rank, _, ax_dist = figure.axes
        legend = [t.get_text() for t in ax_llc.get_legend().get_texts()]
        assert "chain 1 (failed, left out)" in legend and "chain 2 (failed, left out)" in legend
        labelled = {line.get_label(): line for line in ax_llc.lines}
        assert labelled["chain 1 (failed, left out)"].get_linestyle() == "--"
        assert labelled["chain 0"].get_linestyle() == "-"
        assert any(t.get_text() == "chain 1 failed" for t in ax_llc.texts)  # where it stopped
        ranks = [t.get_text() for t in ax_rank.get_yticklabels()]
        assert ranks == ["chain 0", "chain 3"]
        assert "failed chains 1, 2 left out" in ax_rank.get_title()
        assert any(line.get_marker() == "X" for line in ax_dist.lines)
    finally:
        plt.close(figure)


def test_without_mala_the_acceptance_panel_says_so() -> None:
    figure = plots.plot_acceptance(synthetic(mala_every=None))
    try:
        ax_acc, ax_dist = figure.axes
        assert any("mala_every=None" in t.get_text() for t in ax_acc.texts)
        assert len(ax_dist.lines) == 3
    finally:
        plt.close(figure)


def test_acceptance_draws_only_the_diagnosed_draws_with_the_low_region() -> None:
    result = synthetic(draws=100, mala_every=10)
    figure = plots.plot_acceptance(result)
    try:
        ax_acc = figure.axes[0]
        points = [line for line in ax_acc.lines if line.get_linestyle() == "None"]
        assert len(points) == 3 and all(len(line.get_xdata()) == 10 for line in points)
        assert all(np.isfinite(line.get_ydata()).all() for line in points)
        band = [p for p in ax_acc.patches if "step too large" in p.get_label()]
        assert len(band) == 1
        legend = [t.get_text() for t in ax_acc.get_legend().get_texts()]
        means = np.nanmean(result.sample_stats["mala_acceptance"], axis=1)
        for chain, mean in enumerate(means):
            assert f"chain {chain}: mean {mean:.3f}" in legend
    finally:
        plt.close(figure)


def test_one_chain_is_split_in_halves_for_the_rank_plot() -> None:
    figure = plots.plot_rank(synthetic(chains=1))
    try:
        labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
        assert labels == ["chain 0\n1st half", "chain 0\n2nd half"]
        assert "one chain: its halves" in figure.axes[0].get_title()
    finally:
        plt.close(figure)


def test_rank_histograms_are_flat_for_identical_chains_and_not_for_shifted_ones() -> None:
    result = synthetic(chains=3, draws=2000)
    result.llc_trace[:] = np.random.default_rng(1).normal(size=result.llc_trace.shape)
    shifted = synthetic(chains=3, draws=2000)
    shifted.llc_trace[:] = np.random.default_rng(1).normal(size=shifted.llc_trace.shape)
    shifted.llc_trace[0] += 2.0

    def bar_heights(res: LLCResult) -> np.ndarray:
        figure = plots.plot_rank(res)
        heights = np.array([p.get_height() for p in figure.axes[0].patches])
        plt.close(figure)
        return heights.reshape(3, -1)

    flat, steep = bar_heights(result), bar_heights(shifted)
    assert flat.std(axis=1).max() < 0.2 * flat.mean()
    assert steep[0, -1] > 3 * steep[0, 0]  # chain 0's draws take the top ranks


def test_block_means_over_whole_epochs_cancel_the_batch_noise() -> None:
    epoch, epochs = 10, 8
    noise = np.random.default_rng(0).normal(size=(epochs, epoch))
    noise -= noise.mean(axis=1, keepdims=True)  # each epoch is a partition of the data
    values = 3.0 + noise.ravel()
    steps = np.arange(values.size) + 30  # starts on an epoch boundary
    centers, means = plots.estimate._block_means(values, steps, 2 * epoch, epoch)
    np.testing.assert_allclose(means, 3.0)
    assert centers.size == epochs // 2
    # a series starting mid-epoch skips to the next epoch boundary
    centers, means = plots.estimate._block_means(values[5:], steps[5:], epoch, epoch)
    assert centers.size == epochs - 1
    np.testing.assert_allclose(means, 3.0)


@pytest.mark.parametrize("trace_batch, batch_size", [
    ("own", 4),                # epochs of 250 steps: 3 in 800 steps, too few to align to
    ("own", 100),              # epochs of 10 steps: blocks of 2 epochs (16 steps)
    ("independent", 4),        # batches drawn with replacement: no epochs
])
def test_loss_blocks_follow_the_run_length(trace_batch: str, batch_size: int) -> None:
    """The loss panel has 40–50 blocks per chain whatever the epoch length: an 800-step run
    with epochs of 250 steps showed 3 points when blocks were always whole epochs."""
    result = synthetic(draws=600, burnin=200, trace_batch=trace_batch, batch_size=batch_size)
    block = plots.estimate._block_size(result, 800, 1)
    aligned = batch_size == 100
    assert block == (20 if aligned else 16)  # 1/50 of the run, or the nearest whole epochs
    assert plots.estimate._aligned_epoch(result, block) == (10 if aligned else None)
    figure = plots.plot_trace(result)
    try:
        lines = [line for line in figure.axes[1].get_lines() if len(line.get_xdata()) > 2]
        assert len(lines) == 3  # one per chain
        assert min(len(line.get_xdata()) for line in lines) >= 800 // block - 1
    finally:
        plt.close(figure)


def test_result_plot_still_draws_a_figure(estimated: LLCResult) -> None:
    figure = estimated.plot(true_lambda=7.0)
    try:
        assert isinstance(figure, Figure) and len(figure.axes) >= 2
    finally:
        plt.close(figure)


def test_import_llc_and_llc_plots_imports_no_matplotlib() -> None:
    code = (
        "import sys, llc, llc.plots, llc.result\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'matplotlib']\n"
        "assert not loaded, loaded\n"
        "print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "clean"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="headless check is for Linux")
def test_a_gui_backend_without_a_display_falls_back_to_agg(tmp_path: Any) -> None:
    code = (
        "import matplotlib\n"
        "matplotlib.use('TkAgg')  # explicit: pyplot alone would refuse it without a display\n"
        "import numpy as np, llc.plots as plots\n"
        "from llc.result import LLCResult\n"
        "r = LLCResult(llc_trace=np.random.default_rng(0).normal(5, 1, (2, 50)),\n"
        "              loss_trace=np.ones((2, 50)), init_loss=1.0, nbeta=10.0,\n"
        "              sample_stats={'distance': np.ones((2, 50))}, warmup_loss=np.ones((2, 5)),\n"
        "              failed_chains=np.zeros(2, bool), chain_errors=['', ''], attrs={})\n"
        f"plots.plot_diagnostics(r).savefig({str(tmp_path / 'headless.png')!r})\n"
        "import matplotlib; print(matplotlib.get_backend().lower())"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "agg"
    assert (tmp_path / "headless.png").stat().st_size > 10_000
