"""llc.estimate_trajectory: λ̂ over checkpoints, the abrupt-change rule, failures, export;
and model comparison: λ̂ orders two solutions like their closed-form λ.

The reduced deep-linear-network example (λ̂ jumps at the loss drops) is tested in
tests/test_examples.py.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import llc
from llc.problems import DeepLinearNetwork, ReducedRankRegression
from llc.trajectory import TrajectoryError, TrajectoryResult, abrupt_changes

PROBLEM = DeepLinearNetwork((3, 3, 3), rank=1)
FAST = {"step_size": 1e-4, "num_chains": 2, "num_draws": 100, "num_burnin": 20,
        "batch_size": 100, "mala_every": None}


@pytest.fixture(scope="module")
def setup() -> tuple[Any, dict[str, np.ndarray]]:
    return PROBLEM.setup(n=500, seed=0)


def scaled(params: dict[str, np.ndarray], factor: float) -> dict[str, np.ndarray]:
    return {key: factor * value for key, value in params.items()}


def run(checkpoints: Any, data: Any, **kwargs: Any) -> TrajectoryResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        return llc.estimate_trajectory(checkpoints, PROBLEM.loss_and_grad, data,
                                       **{**FAST, **kwargs})


# ---- the abrupt-change rule ------------------------------------------------------------------
def test_abrupt_change_needs_both_significance_and_size() -> None:
    values = [5.0, 5.1, 8.0, 8.05, 8.0, 4.0]
    errors = [0.1] * 6
    assert abrupt_changes(values, errors).tolist() == [False, False, True, False, False, True]
    # large but within 4 combined standard errors (4·√2 ≈ 5.7): noise, not a jump
    assert not abrupt_changes([5.0, 10.0], [1.0, 1.0]).any()
    assert abrupt_changes([5.0, 10.0], [1.0, 1.0], z=3.0).tolist() == [False, True]
    # significant (50 SE) but 0.5 % of λ̂: a drift, not a jump, unless relative=0
    assert not abrupt_changes([100.0, 100.5], [0.01, 0.01]).any()
    assert abrupt_changes([100.0, 100.5], [0.01, 0.01], relative=0).tolist() == [False, True]
    # the relative threshold is on the larger |λ̂| of the pair: 1 → 1.12 is 10.7 % of 1.12
    assert abrupt_changes([1.0, 1.12], [0.001, 0.001]).tolist() == [False, True]
    assert not abrupt_changes([1.0, 1.11], [0.001, 0.001]).any()


def test_abrupt_change_skips_missing_checkpoints() -> None:
    marked = abrupt_changes([5.0, np.nan, 9.0, 9.0], [0.1, np.nan, 0.1, 0.1])
    assert marked.tolist() == [False, False, True, False]
    assert abrupt_changes([np.nan, 5.0, 9.0], [np.nan, 0.1, np.nan]).tolist() == [False] * 3


@pytest.mark.parametrize("args, kwargs, match", [
    (([1.0, 2.0], [0.1]), {}, "equal length"),
    (([[1.0, 2.0]], [[0.1, 0.1]]), {}, "1-D"),
    (([1.0, 2.0], [0.1, -0.1]), {}, "standard_errors"),
    (([1.0, 2.0], [0.1, 0.1]), {"z": -1}, "`z`"),
    (([1.0, 2.0], [0.1, 0.1]), {"relative": float("nan")}, "`relative`"),
])
def test_abrupt_change_rejects_bad_input(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        abrupt_changes(*args, **kwargs)


# ---- estimate_trajectory ---------------------------------------------------------------------
def test_trajectory_shares_the_seed_and_reports_per_checkpoint(setup) -> None:
    data, params = setup
    checkpoints = [scaled(params, 0.0), params, params]
    trajectory = run(checkpoints, data, steps=[0, 10, 100], seed=3)
    assert trajectory.steps.tolist() == [0, 10, 100]
    assert trajectory.status == ["done"] * 3 and trajectory.complete
    # the same params with the same shared seed: the same chains, draw for draw
    np.testing.assert_array_equal(trajectory[1].llc_trace, trajectory[2].llc_trace)
    assert trajectory[1].attrs["seed"] == trajectory[2].attrs["seed"] == 3
    for name in ("llc_mean", "llc_std", "llc_mcse", "init_loss", "rhat", "mala_acceptance"):
        assert getattr(trajectory, name).shape == (3,)
    assert trajectory.llc_mean[1] == trajectory[1].llc_mean
    assert trajectory.init_loss[0] > trajectory.init_loss[1]     # w = 0 fits worse
    assert trajectory.attrs["seed"] == 3 and trajectory.attrs["nbeta"] == trajectory[0].nbeta
    assert len(trajectory.findings) == 3
    table = trajectory.summary()
    assert table.index.name == "step" and table.index.tolist() == [0, 10, 100]
    for column in ("llc_mean", "llc_mcse", "r_hat", "init_loss", "jump", "findings", "status"):
        assert column in table.columns
    assert not table["jump"].iloc[2]                            # identical estimates
    assert "step" in str(trajectory) and "TrajectoryResult(3 checkpoints" in repr(trajectory)


def test_mapping_checkpoints_are_sorted_by_step(setup) -> None:
    data, params = setup
    trajectory = run({200: params, 5: scaled(params, 0.5)}, data)
    assert trajectory.steps.tolist() == [5, 200]
    assert trajectory.init_loss[0] > trajectory.init_loss[1]


def test_health_warnings_name_the_checkpoint(setup) -> None:
    data, params = setup
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llc.estimate_trajectory([scaled(params, 0.5)], PROBLEM.loss_and_grad, data, steps=[7],
                                **FAST)
    health = [str(w.message) for w in caught if issubclass(w.category, llc.LLCHealthWarning)]
    assert health and all(message.startswith("checkpoint 0 (step 7): [") for message in health)
    assert any("[negative-llc]" in message or "[not-critical-point]" in message
               for message in health)  # w* = half the minimiser is no minimum


def test_torch_checkpoints(setup) -> None:
    torch = pytest.importorskip("torch")
    loss_fn, params, data = PROBLEM.in_backend("torch", 500)
    checkpoints = [{key: 0.5 * value for key, value in params.items()}, params]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        trajectory = llc.estimate_trajectory(checkpoints, loss_fn, data, steps=[1, 2], **FAST)
    assert trajectory.attrs["backend"] == "torch" and trajectory.status == ["done", "done"]
    assert isinstance(params["W1"], torch.Tensor)                 # never modified or replaced
    assert trajectory.to_arviz()["posterior"]["llc"].shape == (2, 2, 100)


@pytest.mark.parametrize("checkpoints, kwargs, error, match", [
    ([], {}, ValueError, "`checkpoints` is empty"),
    ("params", {}, TypeError, "`checkpoints` must be a sequence"),
    (iter([{}]), {}, TypeError, "one-shot iterator"),
    ({"W1": np.zeros((3, 3))}, {}, TypeError, "training steps"),
    ({1: {}}, {"steps": [1]}, ValueError, "`steps` must be None"),
    ([{}, {}], {"steps": [1]}, ValueError, "`steps` has 1 entries but `checkpoints` has 2"),
    ([{}, {}], {"steps": [5, 5]}, ValueError, r"strictly increasing: steps\[1\]=5"),
    ([{}, {}], {"steps": [5, 3]}, ValueError, "strictly increasing"),
    ([{}, {}], {"steps": [0, float("nan")]}, ValueError, r"`steps\[1\]` must be finite"),
    ([{}, {}], {"steps": ["a", "b"]}, TypeError, r"`steps\[0\]` must be a number"),
    ([{}], {"steps": 3}, TypeError, "`steps` must be a sequence"),
    ([{}], {"on_error": "ignore"}, ValueError, "`on_error`"),
    ([{}], {"checkpoint": "run.nc"}, ValueError, "`checkpoint` is not supported"),
    ([{}], {"resume": "run.nc"}, ValueError, "`resume` is not supported"),
])
def test_bad_arguments_are_named(setup, checkpoints, kwargs, error, match) -> None:
    data, _ = setup
    with pytest.raises(error, match=match):
        llc.estimate_trajectory(checkpoints, PROBLEM.loss_and_grad, data, **kwargs)


def test_a_failing_checkpoint_is_recorded_and_the_others_go_on(setup) -> None:
    data, params = setup
    broken = scaled(params, np.nan)                 # L_n(w*) is NaN: estimate raises
    with pytest.warns(UserWarning, match=r"checkpoint 1 \(step 20\) failed and is left out: "
                                         r"ValueError: the loss at w\*"):
        trajectory = run([params, broken, params], data, steps=[10, 20, 30])
    assert trajectory.status == ["done", "failed", "done"]
    assert trajectory.failed.tolist() == [False, True, False]
    assert trajectory[1] is None and "the loss at w*" in trajectory.errors[1]
    assert np.isnan(trajectory.llc_mean[1]) and np.isfinite(trajectory.llc_mean[[0, 2]]).all()
    assert not trajectory.jump_mask()[2]           # compared across the failed checkpoint
    assert trajectory.complete                     # every checkpoint ran
    assert "failed: ValueError" in str(trajectory)


def test_on_error_raise_keeps_the_finished_checkpoints(setup) -> None:
    data, params = setup
    with pytest.raises(TrajectoryError, match=r"checkpoint 1 \(step 20\) failed") as caught:
        run([params, scaled(params, np.nan), params], data, steps=[10, 20, 30], on_error="raise")
    partial = caught.value.result
    assert caught.value.checkpoint == 1
    assert partial.status == ["done", "failed", "not run"] and not partial.complete
    assert partial[0] is not None and np.isfinite(partial.llc_mean[0])
    assert isinstance(caught.value.__cause__, ValueError)


def test_every_checkpoint_failing_raises(setup) -> None:
    data, params = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(RuntimeError, match="every checkpoint failed"):
            run([scaled(params, np.nan)] * 2, data)


def test_interrupt_returns_the_checkpoints_done(setup) -> None:
    data, params = setup
    marker = scaled(params, 1.5)

    def loss_fn(weights: dict[str, np.ndarray], batch: Any) -> Any:
        if weights["W1"][0, 0] == marker["W1"][0, 0]:   # the probe of the second checkpoint
            raise KeyboardInterrupt
        return PROBLEM.loss_and_grad(weights, batch)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        with pytest.warns(llc.IncompleteRunWarning, match="interrupted at checkpoint 1 of 3"):
            trajectory = llc.estimate_trajectory([params, marker, params], loss_fn, data, **FAST)
    assert trajectory.status == ["done", "not run", "not run"] and not trajectory.complete
    with pytest.raises(KeyboardInterrupt):
        llc.estimate_trajectory([marker], loss_fn, data, **FAST)


def test_interrupt_mid_checkpoint_keeps_its_draws(setup, tmp_path) -> None:
    pytest.importorskip("h5netcdf")
    data, params = setup
    calls = {"count": 0, "interrupt_at": None}

    def loss_fn(weights: dict[str, np.ndarray], batch: Any) -> Any:
        calls["count"] += 1
        if calls["count"] == calls["interrupt_at"]:
            raise KeyboardInterrupt                  # Ctrl-C while checkpoint 1 samples
        return PROBLEM.loss_and_grad(weights, batch)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        llc.estimate_trajectory([scaled(params, 0.5)], loss_fn, data, **FAST)
    per_checkpoint = calls["count"]                  # calls of one checkpoint's estimate
    calls.update(count=0, interrupt_at=per_checkpoint + per_checkpoint // 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", llc.LLCHealthWarning)
        with pytest.warns(llc.IncompleteRunWarning, match="interrupted at checkpoint"):
            trajectory = llc.estimate_trajectory([scaled(params, 0.5), params, params],
                                                 loss_fn, data, steps=[1, 2, 3], **FAST)
    assert trajectory.status == ["done", "done", "not run"] and not trajectory.complete
    partial = trajectory[1]
    assert not partial.complete and 0 < partial.llc_trace.shape[1] < FAST["num_draws"]
    back = llc.load(trajectory.save(tmp_path / "interrupted.nc"))
    np.testing.assert_array_equal(back[1].llc_trace, partial.llc_trace)   # padding undone
    np.testing.assert_array_equal(back[0].llc_trace, trajectory[0].llc_trace)
    assert back.status == trajectory.status


def test_datatree_has_a_checkpoint_dimension_and_round_trips(setup, tmp_path) -> None:
    pytest.importorskip("h5netcdf")
    data, params = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trajectory = run([scaled(params, 0.5), scaled(params, np.nan), params], data,
                         steps=[1, 20, 300], mala_every=10)
    tree = trajectory.to_arviz()
    root = tree.to_dataset()
    assert root.sizes["checkpoint"] == 3 and root["step"].values.tolist() == [1, 20, 300]
    for name in ("llc_mean", "llc_std", "llc_mcse", "rhat", "init_loss", "jump", "status"):
        assert root[name].dims == ("checkpoint",), name
    np.testing.assert_array_equal(root["llc_mean"].values, trajectory.llc_mean)
    assert root["status"].values.tolist() == ["done", "failed", "done"]
    posterior = tree["posterior"].to_dataset()
    assert posterior["llc"].dims == ("checkpoint", "chain", "draw")
    assert posterior["step"].values.tolist() == [1, 20, 300]
    assert np.isnan(posterior["llc"].values[1]).all()
    np.testing.assert_array_equal(posterior["llc"].values[2], trajectory[2].llc_trace)
    assert tree["sample_stats"].to_dataset()["distance"].dims == ("checkpoint", "chain", "draw")
    assert tree.attrs["nbeta"] == trajectory[0].nbeta         # shared settings: root attrs

    path = trajectory.save(tmp_path / "trajectory.nc")
    back = llc.load(path)
    assert isinstance(back, TrajectoryResult)
    assert back.status == trajectory.status and back.errors == trajectory.errors
    assert back.steps.tolist() == [1, 20, 300]
    np.testing.assert_allclose(back.llc_mean, trajectory.llc_mean)
    np.testing.assert_allclose(back.llc_mcse, trajectory.llc_mcse)
    for before, after in zip(trajectory.results, back.results):
        if before is None:
            assert after is None
            continue
        np.testing.assert_array_equal(after.llc_trace, before.llc_trace)
        np.testing.assert_array_equal(after.sample_stats["mala_acceptance"],
                                      before.sample_stats["mala_acceptance"])
        assert [f.code for f in after.findings] == [f.code for f in before.findings]
        assert after.attrs["init_loss"] == pytest.approx(before.attrs["init_loss"])
    assert back.jumps().tolist() == trajectory.jumps().tolist()
    with pytest.raises(ValueError, match="not an llc trajectory"):
        TrajectoryResult.from_arviz(trajectory[0].to_arviz())


def test_plot_draws_llc_and_loss_with_the_jumps_shaded(setup) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, params = setup
    trajectory = run([scaled(params, 0.0), params, params], data, steps=[1, 10, 100])
    curve = (np.arange(1, 101), np.linspace(3, 1, 100))
    figure = trajectory.plot(training_loss=curve, reference={"λ": [1.0, 2.0, 2.0]})
    ax_llc, ax_loss = figure.axes
    assert ax_llc.get_xscale() == "log"                 # steps span a factor of 100
    assert ax_llc.get_shared_x_axes().joined(ax_llc, ax_loss)
    labels = [text.get_text() for text in ax_llc.get_legend().get_texts()]
    assert "λ" in labels and "± 2 MCSE" in labels
    assert any("abrupt change" in label for label in labels) == bool(trajectory.jumps().size)
    figure.savefig(__import__("io").BytesIO(), format="png")
    plt.close(figure)
    with pytest.raises(ValueError, match="one value per checkpoint"):
        trajectory.plot(reference=[1.0, 2.0])
    plt.close("all")


# ---- model comparison ------------------------------------------------------------------------
@pytest.mark.statistical
def test_model_comparison_orders_solutions_like_their_closed_form_lambda() -> None:
    """Reduced-rank regression (M, H, N) = (5, 3, 5) fitted to a rank-1 and to a rank-2
    teacher: λ = 8 and 9.5 (Aoyagi & Watanabe 2005). With the same settings and seed, λ̂ must
    put them in the same order, apart by more than 4 combined MCSE, each within 10 % of its λ
    (measured: 7.50 ± 0.21 and 9.80 ± 0.17; docs/trajectories.md)."""
    settings = {"batch_size": 500, "step_size": 3e-5, "localization": 1.0, "num_chains": 4,
                "num_draws": 4000, "num_burnin": 1000, "baseline": "minibatch", "seed": 0,
                "progress": False}
    estimates = {}
    for rank in (1, 2):
        problem = ReducedRankRegression(5, 3, 5, rank=rank)
        data, params = problem.setup(10_000, seed=0)
        result = llc.estimate(problem.loss_and_grad, params, data, **settings)
        estimates[rank] = (result.llc_mean, result.llc_mcse, problem.true_lambda)
    (low, low_se, low_true), (high, high_se, high_true) = estimates[1], estimates[2]
    assert low_true < high_true
    gap = high - low
    assert gap > 4 * np.hypot(low_se, high_se), estimates
    for mean, _, true in estimates.values():                  # and each near its λ
        assert abs(mean - true) < 0.1 * true, estimates
