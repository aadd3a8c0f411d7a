"""Where the returns of a fitted scaling curve flatten, and the fits of a study's sources.

n* is the size at which ten times more data adds less than a threshold to the fitted curve
(`score(10 n) - score(n) < threshold`), with a bootstrap interval from the fit's resamples
(`umr_jax.scaling.fit`); `fit_sources` fits every source of a study and finds its n*.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from umr_jax.scaling.fit import PowerLaw, ScalingFit, ScalingFitError, fit_power_law, format_size


ALREADY_FLAT = "already_flat"      # gains are below the threshold from the smallest size fitted
WITHIN_RANGE = "within_range"      # n* between the smallest and the largest size fitted
EXTRAPOLATED = "extrapolated"      # n* beyond the largest size but within the horizon
NOT_REACHED = "not_reached"        # the fitted curve does not flatten within the horizon


@dataclasses.dataclass(frozen=True)
class Flattening:
    """Where ten times more data stops adding `threshold` points.

    size: n* from the fit of all points; math.inf when NOT_REACHED.
    interval: bootstrap (low, high) of n*, math.inf for "beyond the horizon"; None without one.
    status: ALREADY_FLAT, WITHIN_RANGE, EXTRAPOLATED or NOT_REACHED.
    horizon: horizon_factor x the largest size fitted; n* beyond it is not reported.
    confidence: the level of `interval`.
    gain_at_largest, gain_at_horizon: score(10 n) - score(n) at the largest size and the horizon.
    """

    threshold: float
    size: float
    interval: tuple[float, float] | None
    status: str
    horizon: float
    horizon_factor: float
    confidence: float
    gain_at_largest: float
    gain_at_horizon: float

    def describe(self) -> str:
        """One sentence for reports."""
        gain = f"{self.threshold:g} point{'' if self.threshold == 1 else 's'} per 10x more data"
        if self.status == NOT_REACHED:
            text = (f"not reached within the fitted range: the fitted gain stays above {gain} up to "
                    f"{format_size(self.horizon)} ({self.horizon_factor:g}x the largest size, where it is "
                    f"{self.gain_at_horizon:.2f})")
        elif self.status == ALREADY_FLAT:
            text = f"already flat: below {gain} from the smallest size on (n* = {format_size(self.size)})"
        else:
            where = "within the sizes trained" if self.status == WITHIN_RANGE else "extrapolated beyond the largest size"
            text = f"returns fall below {gain} at n* = {format_size(self.size)}, {where}"
        if self.interval is not None:
            low, high = self.interval
            if math.isinf(low):
                text += f"; the {self.confidence:.0%} CI of n* lies beyond {format_size(self.horizon)} too"
            else:
                high_text = format_size(high) if math.isfinite(high) else f"beyond {format_size(self.horizon)}"
                text += f"; {self.confidence:.0%} CI of n*: {format_size(low)} to {high_text}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; infinite sizes (beyond the horizon) become null."""
        def finite(v: float) -> float | None:
            return None if math.isinf(v) else float(v)
        return {
            "threshold": self.threshold,
            "size": finite(self.size),
            "interval": None if self.interval is None else [finite(v) for v in self.interval],
            "status": self.status,
            "horizon": self.horizon,
            "horizon_factor": self.horizon_factor,
            "confidence": self.confidence,
            "gain_at_largest": self.gain_at_largest,
            "gain_at_horizon": self.gain_at_horizon,
            "extrapolated": self.status == EXTRAPOLATED,
            "description": self.describe(),
        }


def flattening_point(fit: ScalingFit, threshold: float, *, horizon_factor: float = 100.0) -> Flattening:
    """n*: the size where score(10 n) - score(n) falls below `threshold`, with its bootstrap CI.

    Sizes beyond `horizon_factor` x the largest fitted size count as "not reached" (math.inf):
    a fit says nothing trustworthy that far out.
    """
    if threshold <= 0:
        raise ValueError(f"the flattening threshold must be positive, got {threshold}")
    if horizon_factor < 1:
        raise ValueError(f"horizon_factor must be >= 1, got {horizon_factor}")
    smallest, largest = float(fit.sizes.min()), float(fit.sizes.max())
    horizon = horizon_factor * largest

    def capped(n: float) -> float:
        return math.inf if n > horizon else n

    size = capped(fit.law.flattening_size(threshold))
    if math.isinf(size):
        status = NOT_REACHED
    elif size <= smallest:
        status = ALREADY_FLAT
    elif size <= largest:
        status = WITHIN_RANGE
    else:
        status = EXTRAPOLATED
    interval = None
    if fit.intervals is not None:
        values = np.array([capped(PowerLaw(*p).flattening_size(threshold)) for p in fit.bootstrap])
        tail = (1.0 - fit.confidence) / 2.0
        # Order statistics, no interpolation: values may be infinite ("beyond the horizon").
        low, high = np.quantile(values, [tail, 1.0 - tail], method="inverted_cdf")
        interval = (float(low), float(high))
    return Flattening(
        threshold=float(threshold), size=size, interval=interval, status=status, horizon=horizon,
        horizon_factor=float(horizon_factor), confidence=fit.confidence,
        gain_at_largest=float(fit.law.gain_per_decade(largest)),
        gain_at_horizon=float(fit.law.gain_per_decade(horizon)),
    )


# ---------------------------------------------------------------------------------------------
# Several sources


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """How every source of a study is fitted (the `scaling` section of a study config)."""

    flattening_gain: float = 1.0       # n*: where 10x more data adds less than this many points
    horizon_factor: float = 100.0      # n* beyond this multiple of the largest size: not reached
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    score_ceiling: float | None = 100.0
    bootstrap_seed: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "FitSettings":
        """The fields of this class taken from a config section (missing keys keep defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: config[k] for k in names if k in config})


@dataclasses.dataclass(frozen=True)
class SourceFit:
    """One data source's points and either its fit and n*, or why it could not be fitted."""

    source: str
    sizes: np.ndarray
    scores: np.ndarray
    fit: ScalingFit | None
    flattening: Flattening | None
    error: str | None

    def score_at_largest(self) -> tuple[float, float]:
        """(largest size, mean observed score there)."""
        largest = float(self.sizes.max())
        return largest, float(self.scores[self.sizes == largest].mean())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.fit is not None:
            out.update(self.fit.to_dict())
            out["flattening"] = self.flattening.to_dict()
        else:
            out["points"] = [[float(s), float(y)] for s, y in zip(self.sizes, self.scores)]
            out["error"] = self.error
        return out


def source_seed(seed: int, source: str) -> int:
    """The bootstrap seed of one source: fixed by (seed, source name), so adding a source to a
    study leaves the other sources' intervals unchanged."""
    return (int(seed) * 1_000_003 + zlib.crc32(source.encode("utf-8"))) % (2**32)


def fit_sources(points: Mapping[str, Sequence[tuple[float, float]]], settings: FitSettings = FitSettings(),
                replicates: Mapping[str, np.ndarray] | None = None) -> list[SourceFit]:
    """Fit every source's (size, score) points; a source that cannot be fitted carries `error`.

    `replicates[source]`: `[resamples, points]`, the source's scores on question resamples (in
    the order of its points): its intervals then come from refitting those ("questions"
    bootstrap); sources without replicates resample their points. Sources come back in the
    order given.
    """
    results = []
    for source, pairs in points.items():
        sizes = np.array([p[0] for p in pairs], dtype=np.float64)
        scores = np.array([p[1] for p in pairs], dtype=np.float64)
        try:
            fit = fit_power_law(sizes, scores, score_ceiling=settings.score_ceiling,
                                bootstrap_samples=settings.bootstrap_samples,
                                confidence=settings.confidence, seed=source_seed(settings.bootstrap_seed, source),
                                score_replicates=(replicates or {}).get(source))
        except ScalingFitError as err:
            results.append(SourceFit(source, sizes, scores, None, None, str(err)))
            continue
        flat = flattening_point(fit, settings.flattening_gain, horizon_factor=settings.horizon_factor)
        results.append(SourceFit(source, fit.sizes, fit.scores, fit, flat, None))
    return results
