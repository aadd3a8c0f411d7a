"""Saturating power-law fits: parameter recovery, bootstrap intervals, where returns flatten."""

import math

import numpy as np
import pytest

from umr_jax.scaling.fit import PowerLaw, ScalingFitError, fit_power_law, format_size
from umr_jax.scaling.flattening import (
    ALREADY_FLAT, EXTRAPOLATED, NOT_REACHED, WITHIN_RANGE, FitSettings, fit_sources, flattening_point,
)

HALF_DECADES = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7])


def test_noiseless_points_give_back_the_curve():
    truth = PowerLaw(a=62.0, b=300.0, c=0.35)
    fit = fit_power_law(HALF_DECADES, truth(HALF_DECADES), score_ceiling=100, bootstrap_samples=0)
    assert fit.law.a == pytest.approx(62.0, rel=1e-5)
    assert fit.law.b == pytest.approx(300.0, rel=1e-4)
    assert fit.law.c == pytest.approx(0.35, rel=1e-5)
    assert fit.rmse < 1e-6
    assert fit.intervals is None and fit.warnings == ()


def test_noisy_points_recover_parameters_and_intervals_contain_the_truth():
    truth = PowerLaw(a=70.0, b=400.0, c=0.4)
    scores = truth(HALF_DECADES) + np.random.default_rng(7).normal(0.0, 0.25, HALF_DECADES.size)
    fit = fit_power_law(HALF_DECADES, scores, score_ceiling=100, bootstrap_samples=300, seed=3)
    assert fit.law.a == pytest.approx(70.0, abs=1.0)
    assert fit.law.c == pytest.approx(0.4, abs=0.06)
    np.testing.assert_allclose(fit.predict(HALF_DECADES), truth(HALF_DECADES), atol=0.4)
    for name, value in (("a", truth.a), ("b", truth.b), ("c", truth.c)):
        low, high = fit.intervals[name]
        assert low <= value <= high, (name, low, value, high)
    low, high = fit.band(HALF_DECADES)
    assert np.all(low <= truth(HALF_DECADES) + 0.05) and np.all(truth(HALF_DECADES) - 0.05 <= high)
    assert fit.bootstrap.shape[1] == 3 and fit.bootstrap.shape[0] + fit.bootstrap_failed == 300


def test_interval_coverage_over_repeated_noisy_studies():
    """A 95% interval of the asymptote should contain the truth in most of 10 noisy studies."""
    truth = PowerLaw(a=55.0, b=120.0, c=0.3)
    sizes = HALF_DECADES[:7]
    hits = 0
    for repeat in range(10):
        scores = truth(sizes) + np.random.default_rng(100 + repeat).normal(0.0, 0.3, sizes.size)
        fit = fit_power_law(sizes, scores, score_ceiling=100, bootstrap_samples=120, seed=repeat)
        low, high = fit.intervals["a"]
        hits += low <= truth.a <= high
    assert hits >= 7


def test_bootstrap_is_deterministic_for_a_seed():
    scores = PowerLaw(60.0, 200.0, 0.3)(HALF_DECADES) + np.linspace(-0.3, 0.3, HALF_DECADES.size)
    first = fit_power_law(HALF_DECADES, scores, bootstrap_samples=50, seed=11)
    again = fit_power_law(HALF_DECADES, scores, bootstrap_samples=50, seed=11)
    other = fit_power_law(HALF_DECADES, scores, bootstrap_samples=50, seed=12)
    np.testing.assert_array_equal(first.bootstrap, again.bootstrap)
    assert first.intervals == again.intervals
    assert not np.array_equal(first.bootstrap, other.bootstrap)


def test_flattening_size_has_the_closed_form_answer():
    # c = 1: score(10n) - score(n) = 0.9 b / n, so the gain is 1 point at n* = 0.9 b = 9000.
    truth = PowerLaw(a=60.0, b=1e4, c=1.0)
    assert truth.flattening_size(1.0) == pytest.approx(9000.0)
    assert truth.gain_per_decade(9000.0) == pytest.approx(1.0)
    assert float(truth(90_000) - truth(9000)) == pytest.approx(1.0)
    sizes = np.array([1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5])
    fit = fit_power_law(sizes, truth(sizes), bootstrap_samples=40, seed=0)
    flat = flattening_point(fit, 1.0)
    assert flat.status == WITHIN_RANGE
    assert flat.size == pytest.approx(9000.0, rel=1e-3)
    low, high = flat.interval
    assert low == pytest.approx(9000.0, rel=1e-3) and high == pytest.approx(9000.0, rel=1e-3)
    assert "9k" in flat.describe() and "within the sizes trained" in flat.describe()
    # A smaller threshold moves n* out: 0.1 point per 10x at 90k.
    assert flattening_point(fit, 0.1).size == pytest.approx(90_000.0, rel=1e-3)


@pytest.mark.parametrize("b, status", [(100.0, ALREADY_FLAT), (1e6, EXTRAPOLATED)])
def test_flattening_status_outside_the_sizes_trained(b, status):
    sizes = np.array([1e3, 3e3, 1e4, 3e4, 1e5])
    truth = PowerLaw(a=50.0, b=b, c=1.0)
    fit = fit_power_law(sizes, truth(sizes), bootstrap_samples=0)
    flat = flattening_point(fit, 1.0)
    assert flat.status == status
    assert flat.size == pytest.approx(0.9 * b, rel=1e-3)


def test_a_straight_line_in_log_n_is_reported_as_not_flattening():
    sizes = HALF_DECADES[:7]
    scores = 30.0 + 5.0 * np.log10(sizes)        # +5 points per 10x, no bend at all
    fit = fit_power_law(sizes, scores, score_ceiling=100, bootstrap_samples=60, seed=1)
    assert any("asymptote a not identified" in w for w in fit.warnings)
    flat = flattening_point(fit, 1.0, horizon_factor=100)
    assert flat.status == NOT_REACHED and math.isinf(flat.size)
    assert flat.horizon == pytest.approx(100 * sizes.max())
    assert flat.gain_at_horizon > 1.0
    assert flat.describe().startswith("not reached within the fitted range")
    assert flat.to_dict()["size"] is None
    assert flat.interval is not None and math.isinf(flat.interval[1])


def test_too_few_points_and_flat_scores_are_clear_errors():
    with pytest.raises(ScalingFitError, match="at least 3 distinct sizes.*got 2"):
        fit_power_law([1000, 3000], [40.0, 45.0])
    with pytest.raises(ScalingFitError, match="at least 3 distinct sizes"):
        fit_power_law([1000, 1000, 3000], [40.0, 41.0, 45.0])
    with pytest.raises(ScalingFitError, match="scores are flat"):
        fit_power_law([1000, 3000, 10000, 30000], [50.0] * 4)
    with pytest.raises(ScalingFitError, match="sizes must be positive"):
        fit_power_law([0, 3000, 10000], [40.0, 45.0, 47.0])
    with pytest.raises(ScalingFitError, match="finite"):
        fit_power_law([1000, 3000, 10000], [40.0, float("nan"), 47.0])


def test_three_points_fit_exactly_with_a_warning_and_falling_scores_are_flagged():
    three = fit_power_law([1e3, 1e4, 1e5], [40.0, 50.0, 53.0], bootstrap_samples=50)
    assert three.rmse < 1e-4
    assert any("3 sizes for 3 parameters" in w for w in three.warnings)
    falling = fit_power_law([1e3, 1e4, 1e5, 1e6], [50.0, 49.0, 47.5, 46.0], bootstrap_samples=0)
    # The best rising curve through falling points is flat at the first (highest) score.
    assert float(falling.law.gain_per_decade(1e3)) < 0.01
    assert falling.law.a == pytest.approx(50.0, abs=1e-6)
    assert any("scores fall as data grows" in w for w in falling.warnings)


def test_fit_sources_keeps_unfittable_sources_and_per_source_seeds():
    truth = PowerLaw(60.0, 150.0, 0.3)
    web = [(n, float(truth(n)) + d) for n, d in zip(HALF_DECADES, np.tile([0.2, -0.2], 5))]
    settings = FitSettings(bootstrap_samples=40)
    alone = fit_sources({"webfaq": web}, settings)
    both = fit_sources({"tiny": [(1000, 40.0), (3000, 41.0)], "webfaq": web}, settings)
    assert [f.source for f in both] == ["tiny", "webfaq"]
    assert both[0].fit is None and "at least 3 distinct sizes" in both[0].error
    assert both[1].error is None
    np.testing.assert_array_equal(alone[0].fit.bootstrap, both[1].fit.bootstrap)
    assert both[1].to_dict()["flattening"]["threshold"] == 1.0


def test_format_size():
    assert [format_size(n) for n in (950, 1000, 3160, 47e6, 2.5e9, math.inf)] == ["950", "1k", "3.16k", "47M", "2.5B", "inf"]
