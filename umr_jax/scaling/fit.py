"""Saturating power-law fits of score against training-set size, with bootstrap intervals.

A scaling study trains the same retriever on nested subsets of one data source (n training
pairs: 1k, 3k, 10k, ...) and evaluates each on the same benchmark (e.g. XOR-Retrieve R@5kt).
Per source, this module fits

    score(n) = a - b * n^(-c)        a: the asymptote, b > 0: the gap, c > 0: how fast it closes

from which `umr_jax.scaling.flattening` answers the study's question, "where do the returns
flatten?", as the size n* at which ten times more data adds less than a threshold
(`score(10 n) - score(n) < threshold`).

How the fit is made identifiable:
  * It is fitted in log-n space: x = ln(n / n_ref) with n_ref the geometric mean of the sizes,
    score = a - B exp(-c x) with B = b n_ref^(-c). The three parameters then have comparable
    scales whatever the sizes are (1e3 or 1e8), and b is recovered as B n_ref^c.
  * a >= the best observed score: an increasing curve cannot level off below a score it has
    reached (with noisy points this biases a up by at most the noise of the best point).
  * a <= `score_ceiling` (100 for recall in percent) or, without one, the best score plus ten
    times the observed score range. When the points lie on a straight line in log n (the curve
    has not bent yet), a and c trade off along a ridge; the fit then goes to the ceiling and
    says so in `ScalingFit.warnings`, rather than inventing an asymptote.
  * c in [1e-3, 5]; b >= 0 (b = 0 is a flat curve).
  * The starting point comes from a grid over c, where a and B are a linear least-squares
    problem, so curve_fit starts near the global optimum instead of in a flat valley.

Confidence intervals are percentile bootstrap intervals: refit many resamples, and take
percentiles of a, b, c, of the curve at any n, and of n*. Two kinds of resample:
  * "points" (the default): resample the (size, score) points with replacement. Deterministic
    for a seed; a resample with fewer than three distinct sizes cannot be fitted and is counted
    in `bootstrap_failed`.
  * "questions": the caller gives `score_replicates`, every point's score recomputed on each
    resample of the benchmark's questions (`umr_jax.scaling.resample`); each row is refitted at
    the same sizes, so row i of every source's `bootstrap` comes from the same resample and
    differences between sources are paired.
"""

from __future__ import annotations

import dataclasses
import math
import warnings as warnings_lib
from typing import Any, Iterable, Mapping

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

C_BOUNDS = (1e-3, 5.0)
MIN_DISTINCT_SIZES = 3
# Below this many fitted bootstrap resamples, no interval is reported.
MIN_BOOTSTRAP_FITS = 20


class ScalingFitError(ValueError):
    """The points cannot be fitted: too few distinct sizes, flat or non-finite scores, bad sizes."""


# ---------------------------------------------------------------------------------------------
# The curve


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """score(n) = a - b * n^(-c)."""

    a: float
    b: float
    c: float

    def __call__(self, n: Any) -> np.ndarray:
        """The score at size(s) `n` (float array of n's shape)."""
        n = np.asarray(n, dtype=np.float64)
        return self.a - self.b * np.power(n, -self.c)

    def gain_per_decade(self, n: Any) -> np.ndarray:
        """score(10 n) - score(n): what ten times more data adds at size n (>= 0, falling in n)."""
        n = np.asarray(n, dtype=np.float64)
        return self.b * np.power(n, -self.c) * (1.0 - 10.0 ** (-self.c))

    def flattening_size(self, threshold: float) -> float:
        """The size n* at which `gain_per_decade(n*) == threshold` (gains are smaller beyond).

        0.0 for a flat curve (b = 0); may be below or far above the sizes that were fitted, and
        math.inf when it exceeds the float range.
        """
        if threshold <= 0:
            raise ValueError(f"the flattening threshold must be positive, got {threshold}")
        if self.b <= 0:
            return 0.0
        log_n = (math.log(self.b) + math.log1p(-(10.0 ** (-self.c))) - math.log(threshold)) / self.c
        return math.exp(log_n) if log_n < 700 else math.inf


# ---------------------------------------------------------------------------------------------
# Fitting


def _model(x: np.ndarray, a: float, big_b: float, c: float) -> np.ndarray:
    return a - big_b * np.exp(-c * x)


def _jacobian(x: np.ndarray, a: float, big_b: float, c: float) -> np.ndarray:
    decay = np.exp(-c * x)
    return np.stack([np.ones_like(x), -decay, big_b * x * decay], axis=1)


def _grid_start(x: np.ndarray, y: np.ndarray, a_bounds: tuple[float, float]) -> tuple[np.ndarray, float]:
    """(a, B, c) minimising the squared error over a grid of c (a, B by bounded least squares)."""
    best, best_sse = None, math.inf
    for c in np.geomspace(C_BOUNDS[0], C_BOUNDS[1], 48):
        decay = np.exp(-c * x)
        design = np.stack([np.ones_like(x), -decay], axis=1)
        (a, big_b), *_ = np.linalg.lstsq(design, y, rcond=None)
        a = float(np.clip(a, *a_bounds))
        big_b = max(0.0, float(np.dot(a - y, decay) / np.dot(decay, decay)))
        sse = float(np.sum((_model(x, a, big_b, c) - y) ** 2))
        if sse < best_sse:
            best, best_sse = np.array([a, big_b, c]), sse
    return best, best_sse


def _fit_log_space(x: np.ndarray, y: np.ndarray, a_bounds: tuple[float, float]) -> np.ndarray:
    """Least-squares (a, B, c) of y = a - B exp(-c x) within the bounds."""
    start, start_sse = _grid_start(x, y, a_bounds)
    lower = np.array([a_bounds[0], 0.0, C_BOUNDS[0]])
    upper = np.array([a_bounds[1], np.inf, C_BOUNDS[1]])
    # curve_fit wants a start strictly inside the bounds.
    span = np.where(np.isfinite(upper), upper - lower, np.maximum(1.0, np.abs(start)))
    p0 = np.clip(start, lower + 1e-9 * span, np.where(np.isfinite(upper), upper - 1e-9 * span, np.inf))
    try:
        with warnings_lib.catch_warnings():
            warnings_lib.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(_model, x, y, p0=p0, bounds=(lower, upper), jac=_jacobian,
                                  method="trf", maxfev=4000)
    except (RuntimeError, ValueError):
        return start
    sse = float(np.sum((_model(x, *params) - y) ** 2))
    return params if sse <= start_sse else start


def _validated_points(sizes: Iterable[float], scores: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.asarray(list(sizes), dtype=np.float64)
    scores = np.asarray(list(scores), dtype=np.float64)
    if sizes.ndim != 1 or sizes.shape != scores.shape:
        raise ScalingFitError(f"sizes and scores must be two lists of the same length, got {sizes.shape} and {scores.shape}")
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ScalingFitError(f"sizes must be positive numbers of training pairs, got {sizes.tolist()}")
    if not np.all(np.isfinite(scores)):
        raise ScalingFitError(f"scores must be finite numbers, got {scores.tolist()}")
    distinct = np.unique(sizes).size
    if distinct < MIN_DISTINCT_SIZES:
        raise ScalingFitError(
            f"need at least {MIN_DISTINCT_SIZES} distinct sizes to fit a - b * n^(-c) (3 parameters), "
            f"got {distinct} ({', '.join(format_size(s) for s in np.unique(sizes))})")
    spread = float(scores.max() - scores.min())
    if spread <= 1e-9 * max(1.0, abs(float(scores.max()))):
        raise ScalingFitError(
            f"scores are flat (all {float(scores[0]):g} over sizes {format_size(sizes.min())} to "
            f"{format_size(sizes.max())}): there is no curve to fit; more data did not change the score")
    return sizes, scores


@dataclasses.dataclass(frozen=True)
class ScalingFit:
    """A fitted saturating power law and its bootstrap.

    sizes, scores: the points fitted, `[points]`.
    law: the least-squares fit of all points.
    bootstrap: `[fits, 3]` (a, b, c) of the resamples that could be fitted.
    bootstrap_failed: resamples that could not be fitted (fewer than 3 distinct sizes).
    bootstrap_kind: "points" (the points resampled) or "questions" (one row per given replicate of
      the scores, in the replicates' order: row i of two fits is the same question resample).
    confidence: the level of every interval (e.g. 0.95).
    intervals: parameter name -> (low, high), or None with too few bootstrap fits.
    rmse: root-mean-square residual of `law` on the points.
    warnings: what limits the reading of this fit (parameters at a bound, few points, ...).
    """

    sizes: np.ndarray
    scores: np.ndarray
    law: PowerLaw
    bootstrap: np.ndarray
    bootstrap_failed: int
    confidence: float
    intervals: Mapping[str, tuple[float, float]] | None
    rmse: float
    warnings: tuple[str, ...]
    bootstrap_kind: str = "points"

    def predict(self, n: Any) -> np.ndarray:
        """The fitted score at size(s) n."""
        return self.law(n)

    def _quantiles(self) -> tuple[float, float]:
        tail = (1.0 - self.confidence) / 2.0
        return tail, 1.0 - tail

    def band(self, n: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise bootstrap interval (low, high) of the curve at size(s) n; None without one."""
        if self.intervals is None:
            return None
        n = np.asarray(n, dtype=np.float64)
        a, b, c = (self.bootstrap[:, i, None] for i in range(3))
        curves = a - b * np.power(n.reshape(1, -1), -c)
        low, high = np.quantile(curves, self._quantiles(), axis=0)
        return low.reshape(n.shape), high.reshape(n.shape)

    def gain_band(self, n: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise bootstrap interval of score(10 n) - score(n); None without one."""
        if self.intervals is None:
            return None
        n = np.asarray(n, dtype=np.float64)
        b, c = self.bootstrap[:, 1, None], self.bootstrap[:, 2, None]
        gains = b * np.power(n.reshape(1, -1), -c) * (1.0 - 10.0 ** (-c))
        low, high = np.quantile(gains, self._quantiles(), axis=0)
        return low.reshape(n.shape), high.reshape(n.shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no bootstrap samples)."""
        return {
            "points": [[int(s) if float(s).is_integer() else float(s), float(y)] for s, y in zip(self.sizes, self.scores)],
            "a": self.law.a, "b": self.law.b, "c": self.law.c,
            "confidence": self.confidence,
            "intervals": None if self.intervals is None else {k: list(v) for k, v in self.intervals.items()},
            "bootstrap": self.bootstrap_kind,
            "bootstrap_fits": int(self.bootstrap.shape[0]),
            "bootstrap_failed": int(self.bootstrap_failed),
            "rmse": self.rmse,
            "warnings": list(self.warnings),
        }


def fit_power_law(
    sizes: Iterable[float],
    scores: Iterable[float],
    *,
    score_ceiling: float | None = None,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    score_replicates: Any = None,
) -> ScalingFit:
    """Fit score(n) = a - b n^(-c) to the points and bootstrap it.

    sizes: training pairs per point (> 0; repeated sizes, e.g. several seeds, are allowed);
    scores: the benchmark score of each point. score_ceiling: the largest score the metric can
    take (100 for a percentage), the upper bound of a; None bounds a by the data (see module
    docstring). The result is the same for the same inputs and seed.
    score_replicates: `[replicates, points]`, the scores recomputed on resamples of the
    benchmark's questions; when given, each row is refitted (a "questions" bootstrap, and
    `bootstrap_samples` and `seed` are not used) instead of resampling the points.

    Raises ScalingFitError for fewer than 3 distinct sizes, flat scores, or invalid numbers.
    """
    sizes, scores = _validated_points(sizes, scores)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if bootstrap_samples < 0:
        raise ValueError(f"bootstrap_samples must be >= 0, got {bootstrap_samples}")
    best = float(scores.max())
    spread = best - float(scores.min())
    if score_ceiling is None:
        a_high = best + 10.0 * spread
    else:
        a_high = max(float(score_ceiling), best + 1e-9 * max(1.0, abs(best)))
    log_ref = float(np.mean(np.log(sizes)))
    x = np.log(sizes) - log_ref

    def fit_once(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        a_low = float(ys.max())
        a, big_b, c = _fit_log_space(xs, ys, (a_low, max(a_high, a_low + 1e-12)))
        return np.array([a, big_b * math.exp(c * log_ref), c])

    a, b, c = fit_once(x, scores)
    law = PowerLaw(float(a), float(b), float(c))
    rmse = float(np.sqrt(np.mean((law(sizes) - scores) ** 2)))

    samples, failed = [], 0
    if score_replicates is not None:
        replicates = np.asarray(score_replicates, dtype=np.float64)
        if replicates.ndim != 2 or replicates.shape[1] != sizes.size or not np.all(np.isfinite(replicates)):
            raise ScalingFitError(f"score_replicates must be finite, [replicates, {sizes.size}], got shape {replicates.shape}")
        samples = [fit_once(x, row) for row in replicates]
        bootstrap_samples = replicates.shape[0]
    else:
        rng = np.random.default_rng(seed)
        for _ in range(bootstrap_samples):
            pick = rng.integers(0, sizes.size, sizes.size)
            if np.unique(sizes[pick]).size < MIN_DISTINCT_SIZES:
                failed += 1
                continue
            samples.append(fit_once(x[pick], scores[pick]))
    bootstrap = np.array(samples, dtype=np.float64).reshape(-1, 3)

    notes = []
    distinct = np.unique(sizes).size
    if distinct == MIN_DISTINCT_SIZES:
        notes.append("3 sizes for 3 parameters: the curve passes through the points; its intervals mean little")
    elif distinct < 5 and score_replicates is None:
        notes.append(f"only {distinct} sizes: intervals from resampling so few points are rough")
    scale = max(1.0, abs(a_high))
    if a_high - law.a <= 1e-6 * scale:
        bound = "the score ceiling" if score_ceiling is not None else "its upper bound (best score + 10x the score range)"
        notes.append(f"asymptote a not identified: the fit put it at {bound} ({a_high:g}); "
                     "the points have not bent towards a plateau yet")
    if law.c <= C_BOUNDS[0] * (1 + 1e-6):
        notes.append("exponent c at its lower bound: the points are close to a straight line in log n")
    if law.c >= C_BOUNDS[1] * (1 - 1e-6):
        notes.append("exponent c at its upper bound: the curve is flat from the second size on")
    if law.b <= 0.0:
        notes.append("b = 0: the fitted curve is flat")
    slope = np.polyfit(np.log(sizes), scores, 1)[0]
    if slope < 0:
        notes.append("scores fall as data grows: a rising saturating curve does not describe this source")
    intervals = None
    if bootstrap.shape[0] >= MIN_BOOTSTRAP_FITS:
        tail = (1.0 - confidence) / 2.0
        low, high = np.quantile(bootstrap, [tail, 1.0 - tail], axis=0)
        intervals = {name: (float(low[i]), float(high[i])) for i, name in enumerate("abc")}
    elif bootstrap_samples:
        notes.append(f"only {bootstrap.shape[0]} of {bootstrap_samples} bootstrap resamples could be fitted: no intervals")
    return ScalingFit(sizes=sizes, scores=scores, law=law, bootstrap=bootstrap, bootstrap_failed=failed,
                      confidence=confidence, intervals=intervals, rmse=rmse, warnings=tuple(notes),
                      bootstrap_kind="points" if score_replicates is None else "questions")


def format_size(n: float) -> str:
    """1000 -> '1k', 3_160_000 -> '3.16M', inf -> 'inf' (three significant digits)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    if math.isinf(n):
        return "inf"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"
