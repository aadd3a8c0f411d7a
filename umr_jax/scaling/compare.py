"""What a scaling study concludes: diminishing returns per source (arm), and arms compared.

Every number comes with an interval from the fits' bootstrap rows (`ScalingFit.bootstrap`): with
question-level replicates (`umr_jax.scaling.resample`) row i of every arm is the same question
resample, so differences are paired; with the point bootstrap the arms' rows are independent
draws, paired by index, which is a valid bootstrap of a difference of independent estimates.

  diminishing_returns   yes when the gain per 10x at the largest size is below the threshold
                        with its CI's upper bound below it too; no when the CI's lower bound is
                        above it; otherwise inconclusive. The CI decides, not the point estimate:
                        a threshold of 1 point is about the sampling error of XOR dev.
  compare_arms          A - B at the sizes both ran (observed scores; paired question bootstrap
                        when both arms have it, else their fitted curves), or on the fitted
                        curves within the overlapping range; the asymptote difference; and the
                        equivalent-data ratio: A's examples needed to match B's score at B's
                        largest size, over B's size (from A's fit), "not reached" beyond
                        horizon_factor x A's largest size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from umr_jax.scaling.fit import MIN_BOOTSTRAP_FITS, PowerLaw, format_size
from umr_jax.scaling.flattening import SourceFit

YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"


@dataclasses.dataclass(frozen=True)
class Arm:
    """One source of a study: its fit and, when every point has per-question outcomes, its
    scores on the question resamples, `[resamples, points]` in the order of `fit.sizes`."""

    fit: SourceFit
    replicates: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.fit.source

    @property
    def paired(self) -> bool:
        return self.replicates is not None and self.fit.fit is not None


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """Percentile interval of the finite-or-infinite, non-NaN values; None with too few."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size < MIN_BOOTSTRAP_FITS:
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail], method="inverted_cdf")  # order statistics: inf allowed
    return float(low), float(high)


def _plus_minus(value: float, interval: tuple[float, float] | None, fmt: str = "+.2f") -> str:
    text = format(value, fmt)
    return text if interval is None else f"{text} [{format(interval[0], fmt)}, {format(interval[1], fmt)}]"


def _curves(rows: np.ndarray, n: float) -> np.ndarray:
    """The bootstrap curves' scores at size n, `[rows]`."""
    return rows[:, 0] - rows[:, 1] * np.power(float(n), -rows[:, 2])


def _bootstrap_note(arm: Arm) -> str:
    return "question bootstrap" if arm.paired else "point bootstrap"


# ---------------------------------------------------------------------------------------------
# Diminishing returns


def diminishing_returns(arm: Arm, threshold: float) -> dict[str, Any]:
    """The verdict for one arm at its largest size: {"source", "verdict", "size", "gain",
    "interval", "threshold", "bootstrap", "sentence"}."""
    source = arm.fit
    largest = float(source.sizes.max())
    out: dict[str, Any] = {"source": arm.name, "size": largest, "threshold": float(threshold), "gain": None,
                           "interval": None, "bootstrap": _bootstrap_note(arm)}
    points = f"{threshold:g} point{'' if threshold == 1 else 's'}"
    if source.fit is None:
        out.update(verdict=INCONCLUSIVE, sentence=f"{arm.name}: diminishing returns: inconclusive at this size "
                                                  f"(n = {format_size(largest)}): no fit ({source.error})")
        return out
    fit = source.fit
    gain = float(fit.law.gain_per_decade(largest))
    band = fit.gain_band(largest)
    interval = None if band is None else (float(band[0]), float(band[1]))
    out.update(gain=gain, interval=None if interval is None else list(interval))
    numbers = (f"10x more data is fitted to add {_plus_minus(gain, interval, '.2f')} points at n = {format_size(largest)}"
               f" ({fit.confidence:.0%} CI, {_bootstrap_note(arm)})")
    if interval is None:
        verdict, why = INCONCLUSIVE, "no interval (too few bootstrap fits)"
    elif interval[1] < threshold:
        verdict, why = YES, f"below the {points} threshold even at the CI's upper bound"
    elif interval[0] > threshold:
        verdict, why = NO, f"above the {points} threshold even at the CI's lower bound"
    else:
        verdict, why = INCONCLUSIVE, f"the CI spans the {points} threshold"
    out.update(verdict=verdict, sentence=f"{arm.name}: diminishing returns: {verdict} at this size: {numbers}; {why}.")
    return out


# ---------------------------------------------------------------------------------------------
# Two arms


def size_for_score(law: PowerLaw, score: float) -> float:
    """The n at which the curve reaches `score`: 0.0 when a flat curve is already there,
    math.inf when it never does (score >= a) or beyond the float range."""
    if law.b <= 0:
        return 0.0 if law.a >= score else math.inf
    if law.a <= score:
        return math.inf
    log_n = (math.log(law.b) - math.log(law.a - score)) / law.c
    return math.exp(log_n) if log_n < 700 else math.inf


def _row_pairs(a: Arm, b: Arm) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap rows of both fits, paired by index (the same question resample when both are
    question-level; independent draws otherwise)."""
    rows = min(a.fit.fit.bootstrap.shape[0], b.fit.fit.bootstrap.shape[0])
    return a.fit.fit.bootstrap[:rows], b.fit.fit.bootstrap[:rows]


def _mean_at(arm: Arm, size: float) -> tuple[float, np.ndarray | None]:
    """(observed mean score at `size`, its question replicates `[resamples]` or None)."""
    mask = arm.fit.sizes == size
    observed = float(arm.fit.scores[mask].mean())
    return observed, None if arm.replicates is None else arm.replicates[:, mask].mean(axis=1)


def _matched(a: Arm, b: Arm, confidence: float) -> tuple[str | None, list[dict[str, Any]], str | None]:
    """(basis, rows {"size", "difference", "interval", "method"}, note)."""
    shared = sorted(set(a.fit.sizes.tolist()) & set(b.fit.sizes.tolist()))
    both_fitted = a.fit.fit is not None and b.fit.fit is not None
    rows = []
    if shared:
        for size in shared:
            value_a, rep_a = _mean_at(a, size)
            value_b, rep_b = _mean_at(b, size)
            if rep_a is not None and rep_b is not None:
                interval, method = _interval(rep_a - rep_b, confidence), "observed, paired question bootstrap"
            elif both_fitted:
                ra, rb = _row_pairs(a, b)
                interval, method = _interval(_curves(ra, size) - _curves(rb, size), confidence), "observed; CI from the fits' point bootstrap"
            else:
                interval, method = None, "observed; no interval"
            rows.append({"size": float(size), "difference": value_a - value_b,
                         "interval": None if interval is None else list(interval), "method": method})
        return "sizes both ran", rows, None
    if not both_fitted:
        return None, [], "no size both ran, and an arm has no fit to compare on"
    low = max(float(a.fit.sizes.min()), float(b.fit.sizes.min()))
    high = min(float(a.fit.sizes.max()), float(b.fit.sizes.max()))
    if low > high:
        return None, [], (f"no size both ran and the ranges do not overlap ({format_size(a.fit.sizes.min())}-"
                          f"{format_size(a.fit.sizes.max())} vs {format_size(b.fit.sizes.min())}-{format_size(b.fit.sizes.max())})")
    sizes = sorted({s for s in np.concatenate([a.fit.sizes, b.fit.sizes]).tolist() if low <= s <= high} | {low, high})
    ra, rb = _row_pairs(a, b)
    method = "fitted curves, " + ("paired question bootstrap" if a.paired and b.paired else "point bootstrap")
    for size in sizes:
        interval = _interval(_curves(ra, size) - _curves(rb, size), confidence)
        rows.append({"size": float(size), "difference": float(a.fit.fit.predict(size) - b.fit.fit.predict(size)),
                     "interval": None if interval is None else list(interval), "method": method})
    return "fitted curves within the overlapping range", rows, None


def equivalent_data(a: Arm, b: Arm, *, confidence: float, horizon_factor: float) -> dict[str, Any]:
    """A's examples needed to match B's score at B's largest size, from A's fit, and the ratio
    to B's size, with CIs; status "within_range", "below_range", "extrapolated" or
    "not_reached" (beyond horizon_factor x A's largest size: `size`/`ratio` null)."""
    target_size = float(b.fit.sizes.max())
    target, target_reps = _mean_at(b, target_size)
    out: dict[str, Any] = {"source": a.name, "target_source": b.name, "target_size": target_size, "target_score": target,
                           "size": None, "ratio": None, "size_interval": None, "ratio_interval": None}
    if a.fit.fit is None:
        out.update(status=None, sentence=f"{a.name} has no fit: the examples it needs to match {b.name} are unknown")
        return out
    largest, smallest = float(a.fit.sizes.max()), float(a.fit.sizes.min())
    horizon = horizon_factor * largest

    def capped(n: float) -> float:
        return math.inf if n > horizon else n

    size = capped(size_for_score(a.fit.fit.law, target))
    rows_a = a.fit.fit.bootstrap
    if target_reps is not None and a.paired:
        n = min(rows_a.shape[0], target_reps.size)
        targets = target_reps[:n]
    elif b.fit.fit is not None:
        rows_a, rows_b = _row_pairs(a, b)
        targets, n = _curves(rows_b, target_size), rows_a.shape[0]
    else:
        targets, n = np.full(rows_a.shape[0], target), rows_a.shape[0]
    sizes = np.array([capped(size_for_score(PowerLaw(*rows_a[i]), float(targets[i]))) for i in range(n)])
    size_interval = _interval(sizes, confidence)
    status = ("not_reached" if math.isinf(size) else "below_range" if size < smallest
              else "within_range" if size <= largest else "extrapolated")

    def finite(v: float) -> float | None:
        return None if math.isinf(v) else float(v)

    out.update(status=status, horizon=horizon, horizon_factor=float(horizon_factor), size=finite(size),
               ratio=finite(size / target_size),
               size_interval=None if size_interval is None else [finite(v) for v in size_interval],
               ratio_interval=None if size_interval is None else [finite(v / target_size) for v in size_interval])

    def ratio_text(v: float) -> str:
        return f"> {horizon / target_size:.3g}x" if math.isinf(v) else f"{v / target_size:.3g}x"

    ci = "" if size_interval is None else f" [{ratio_text(size_interval[0])}, {ratio_text(size_interval[1])}]"
    goal = f"{b.name}'s {target:.2f} at n = {format_size(target_size)}"
    if status == "not_reached":
        out["sentence"] = (f"{a.name} does not reach {goal} within {horizon_factor:g}x its largest size "
                           f"({format_size(horizon)}; fitted asymptote {a.fit.fit.law.a:.2f}){'; CI of the ratio' + ci if ci else ''}")
    else:
        where = {"within_range": "within the sizes it ran", "below_range": "below the smallest size it ran",
                 "extrapolated": "extrapolated beyond the largest size it ran"}[status]
        out["sentence"] = (f"{a.name} needs {size / target_size:.3g}x{ci} the examples of {b.name} to match {goal} "
                           f"(n = {format_size(size)}, {where})")
    return out


def compare_arms(a: Arm, b: Arm, *, confidence: float = 0.95, horizon_factor: float = 100.0) -> dict[str, Any]:
    """A against B: {"a", "b", "paired", "basis", "matched", "note", "asymptote_difference",
    "equivalent_data", "sentence"} (differences are A - B, in the metric's points)."""
    basis, matched, note = _matched(a, b, confidence)
    out: dict[str, Any] = {"a": a.name, "b": b.name, "paired": a.paired and b.paired, "basis": basis,
                           "matched": matched, "note": note, "asymptote_difference": None}
    if a.fit.fit is not None and b.fit.fit is not None:
        ra, rb = _row_pairs(a, b)
        interval = _interval(ra[:, 0] - rb[:, 0], confidence)
        out["asymptote_difference"] = {"value": a.fit.fit.law.a - b.fit.fit.law.a,
                                       "interval": None if interval is None else list(interval)}
    out["equivalent_data"] = equivalent_data(a, b, confidence=confidence, horizon_factor=horizon_factor)
    if matched:
        head = matched[-1]
        interval = head["interval"]
        value = head["difference"]
        if interval is None:
            verdict = "no interval"
        elif interval[0] > 0:
            verdict = f"{a.name} beats {b.name}"
        elif interval[1] < 0:
            verdict = f"{b.name} beats {a.name}"
        else:
            verdict = "no difference the CI can tell (it contains 0)"
        where = "the largest size both ran" if basis == "sizes both ran" else "fitted, the largest size both ranges cover"
        sentence = (f"{a.name} - {b.name} = {_plus_minus(value, None if interval is None else tuple(interval))} points at "
                    f"n = {format_size(head['size'])} ({where}): {verdict}")
    else:
        sentence = f"{a.name} vs {b.name}: {note}"
    out["sentence"] = f"{sentence}; {out['equivalent_data']['sentence']}."
    return out


def comparison_pairs(names: Sequence[str], compare: Any = None, known: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The (A, B) pairs to compare among the finished arms `names`: `compare` as "a:b" strings (a
    list, or one comma-separated string), or every pair of `names` in order when None or empty.
    A pair naming an arm in `known` (the configured sources) that has no finished point yet is
    left out. Raises ValueError naming an entry that is not "a:b" with two known sources."""
    if compare is None or (not isinstance(compare, str) and len(compare) == 0) or compare == "":
        return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    known = list(dict.fromkeys([*names, *(known or [])]))
    entries = [e.strip() for e in compare.split(",")] if isinstance(compare, str) else [str(e).strip() for e in compare]
    pairs = []
    for entry in entries:
        parts = entry.split(":")
        if len(parts) != 2 or parts[0] == parts[1] or any(p not in known for p in parts):
            raise ValueError(f"scaling.compare: {entry!r} is not 'A:B' with two different sources of the study "
                             f"(sources: {', '.join(known)})")
        if all(p in names for p in parts):
            pairs.append((parts[0], parts[1]))
    return pairs
