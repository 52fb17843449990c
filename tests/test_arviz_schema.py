"""ArviZ's own tools on the DataTree llc writes: what an ArviZ user runs must work and agree."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import llc

arviz_stats = pytest.importorskip("arviz_stats")


@pytest.fixture(scope="module")
def result() -> llc.LLCResult:
    problem = llc.problems.LinearRegression(3, 2)
    data, params = problem.setup(2000, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return llc.estimate(problem.loss_and_grad, params, data, num_chains=3, num_draws=200,
                            num_burnin=50, mala_every=10, step_size=1e-4, localization=2.0,
                            progress=False)


def test_sample_stats_follow_arviz_conventions(result: llc.LLCResult) -> None:
    tree = result.to_arviz()
    stats = tree["sample_stats"].to_dataset()
    # lp: the log density of the local posterior, −U(w) = −nβ L_B(w) − (γ/2)‖w − w*‖²
    expected = -(result.nbeta * result.loss_trace
                 + 0.5 * 2.0 * np.asarray(result.sample_stats["distance"]) ** 2)
    np.testing.assert_allclose(stats["lp"].values, expected, rtol=1e-12)
    assert stats["lp"].dims == ("chain", "draw")
    # mala_acceptance on its own coordinate: only the diagnosed draws, no NaN
    acceptance = stats["mala_acceptance"]
    assert acceptance.dims == ("chain", "mala_draw")
    assert stats["mala_draw"].values.tolist() == list(range(0, 200, 10))
    assert np.isfinite(acceptance.values).all()
    table = arviz_stats.summary(tree, group="sample_stats", var_names=["mala_acceptance"],
                                sample_dims=["chain", "mala_draw"], round_to="none")
    assert np.isfinite(table.loc["mala_acceptance", "mean"])
    assert table.loc["mala_acceptance", "mean"] == pytest.approx(result.mala_acceptance)
    # and the result reads back with NaN on the draws that were not diagnosed
    back = llc.LLCResult.from_arviz(tree)
    np.testing.assert_array_equal(back.sample_stats["mala_acceptance"],
                                  result.sample_stats["mala_acceptance"])
    assert "lp" not in back.sample_stats


@pytest.mark.parametrize("group, names", [("posterior", ["llc", "loss"]),
                                          ("sample_stats", ["lp", "distance", "grad_norm"])])
def test_arviz_stats_run_on_every_float_variable(result: llc.LLCResult, group: str,
                                                 names: list[str]) -> None:
    tree = result.to_arviz()
    table = arviz_stats.summary(tree, group=group, var_names=names, round_to="none")
    assert list(table.index) == names and np.isfinite(table.to_numpy(dtype=float)).all()
    for function in (arviz_stats.rhat, arviz_stats.ess, arviz_stats.mcse):
        values = function(tree, group=group, var_names=names)
        assert all(np.isfinite(float(values[name])) for name in names)
    if group == "posterior":  # llc's own numbers are arviz-stats' numbers
        assert float(arviz_stats.ess(tree, var_names=["llc"], method="tail")["llc"]) \
            == pytest.approx(result.ess_tail)
        assert float(arviz_stats.rhat(tree, var_names=["llc"])["llc"]) \
            == pytest.approx(result.rhat)


@pytest.mark.parametrize("plot", ["plot_trace", "plot_rank", "plot_forest"])
def test_arviz_plots_draw_the_posterior_and_sample_stats(result: llc.LLCResult,
                                                         plot: str) -> None:
    arviz_plots = pytest.importorskip("arviz_plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tree = result.to_arviz()
    for group, names in (("posterior", ["llc"]), ("sample_stats", ["lp"])):
        plot_collection = getattr(arviz_plots, plot)(tree, group=group, var_names=names)
        assert plot_collection is not None
    plt.close("all")


def test_every_group_llc_writes_reads_in_arviz() -> None:
    """The optional groups too: warmup_posterior, full_loss (L_n at every k-th draw) and the
    kept parameters (their own draw axis, ``kept_draw``, passed as a sample dimension)."""
    arviz_plots = pytest.importorskip("arviz_plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problem = llc.problems.LinearRegression(2, 1)
    data, params = problem.setup(1000, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = llc.estimate(problem.loss_and_grad, params, data, num_chains=2, num_draws=100,
                              num_burnin=40, step_size=1e-4, keep_params_every=5,
                              full_loss_every=5, progress=False)
    tree = result.to_arviz()
    cases = [("warmup_posterior", ["loss"], ["chain", "draw"]),
             ("full_loss", ["loss", "llc"], ["chain", "draw"]),
             ("parameters", ["w"], ["chain", "kept_draw"])]
    for group, names, sample_dims in cases:
        assert group in tree.children, group
        table = arviz_stats.summary(tree, group=group, var_names=names,
                                    sample_dims=sample_dims, round_to="none")
        assert np.isfinite(table[["mean", "sd", "ess_bulk", "r_hat"]].to_numpy(float)).all()
        for function in (arviz_stats.rhat, arviz_stats.ess, arviz_stats.mcse):
            values = function(tree, group=group, var_names=names, sample_dims=sample_dims)
            assert np.isfinite(np.asarray(values[names[0]].values, dtype=float)).all()
        if group != "parameters":  # the plots take the standard sample dims
            for plot in ("plot_trace", "plot_rank", "plot_forest"):
                assert getattr(arviz_plots, plot)(tree, group=group, var_names=names)
    plt.close("all")
