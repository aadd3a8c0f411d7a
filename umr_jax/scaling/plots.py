"""Scaling-study figures and tables: score against training pairs per data source.

`plot_scaling_curves` draws, on log-n axes, and writes as PNG and SVG:
  left   the evaluated points, the fitted curve a - b n^(-c) (solid over the sizes trained,
         dashed beyond), its bootstrap band, and the flattening point n* (a filled star within
         the sizes trained, a hollow one when extrapolated beyond them) with its interval;
  right  what ten times more data adds, score(10 n) - score(n), with its band and the
         threshold line: n* is where a source's curve crosses that line;
  below  (with per-language scores) one small panel per language: each source's points,
         joined, for that language.
`markdown_table` gives one row per source: points, a, b, c and n* with intervals, and the
score at the largest size. Matplotlib figures are built without pyplot (no global state, no
display needed; the Agg canvas renders PNG).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from umr_jax.data.files import AtomicFile
from umr_jax.scaling.fit import format_size
from umr_jax.scaling.flattening import ALREADY_FLAT, EXTRAPOLATED, NOT_REACHED, SourceFit

# source -> language -> [[size, score], ...]
PerLanguage = Mapping[str, Mapping[str, Sequence[Sequence[float]]]]
LANGUAGE_PANELS_PER_ROW = 7

# How far right of the largest size the fitted curves are drawn (unless n* lies further).
EXTRAPOLATE_FACTOR = 10.0


def _size_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_size(v)))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)


def _x_range(fits: Sequence[SourceFit]) -> tuple[float, float]:
    smallest = min(float(f.sizes.min()) for f in fits)
    largest = max(float(f.sizes.max()) for f in fits)
    right = EXTRAPOLATE_FACTOR * largest
    for f in fits:
        if f.flattening is not None and f.flattening.status not in (NOT_REACHED, ALREADY_FLAT):
            right = max(right, 1.5 * f.flattening.size)
    return smallest / 1.5, right


def _legend_label(f: SourceFit) -> str:
    if f.fit is None:
        return f"{f.source}: no fit ({len(f.sizes)} points)"
    flat = f.flattening
    if flat.status == NOT_REACHED:
        return f"{f.source}: not flat within {flat.horizon_factor:g}x largest n"
    if flat.status == ALREADY_FLAT:
        return f"{f.source}: flat from the smallest n"
    return f"{f.source}: n* = {format_size(flat.size)}"


def _language_panels(fig, fits: Sequence[SourceFit], per_language: PerLanguage, colors: Sequence[str],
                     metric_label: str) -> None:
    codes = sorted({lang for by_lang in per_language.values() for lang in by_lang})
    columns = min(len(codes), LANGUAGE_PANELS_PER_ROW)
    rows = math.ceil(len(codes) / columns)
    axes = np.atleast_1d(fig.subplots(rows, columns, sharey=True, squeeze=False)).ravel()
    color_of = {f.source: c for f, c in zip(fits, colors)}
    for ax, code in zip(axes, codes):
        for source in [f.source for f in fits if f.source in per_language]:  # the sources' order and colours
            by_lang = per_language[source]
            if code in by_lang:
                sizes, scores = zip(*sorted((float(n), float(y)) for n, y in by_lang[code]))
                ax.plot(sizes, scores, marker="o", ms=3.5, lw=1.2, color=color_of.get(source, "0.4"), label=source)
        _size_axis(ax)
        ax.set_title(code, fontsize=10)
        ax.tick_params(labelsize=7)
    for ax in axes[len(codes):]:
        ax.set_visible(False)
    axes[0].set_ylabel(f"{metric_label} per language", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower right")


X_LABELS = {"size": "training examples n (log scale): pairs, or questions for UMR pseudo labels",
            "pairs_seen": "training pairs seen n (log scale): steps x queries per batch, every arm alike"}


def build_figure(fits: Sequence[SourceFit], *, metric_label: str = "score", threshold: float | None = None,
                 baseline: float | None = None, per_language: PerLanguage | None = None,
                 x_axis: str = "size") -> Figure:
    """The figure for the given sources: score and gain per 10x against n, and with
    `per_language` (source -> language -> [[size, score], ...]) a row of panels per language.

    `baseline`: the starting model's score (no training data), drawn as a horizontal line.
    `x_axis`: what n counts (`X_LABELS`), for the axis labels.
    """
    if not fits:
        raise ValueError("no sources to plot")
    if threshold is None:
        threshold = next((f.flattening.threshold for f in fits if f.flattening is not None), None)
    languages = sorted({lang for by_lang in (per_language or {}).values() for lang in by_lang})
    language_rows = math.ceil(len(languages) / LANGUAGE_PANELS_PER_ROW)
    fig = Figure(figsize=(13, 5.2 + 2.6 * language_rows), layout="constrained")
    FigureCanvasAgg(fig)
    if language_rows:
        top, bottom = fig.subfigures(2, 1, height_ratios=[5.2, 2.6 * language_rows])
    else:
        top, bottom = fig, None
    ax_score, ax_gain = top.subplots(1, 2)
    left, right = _x_range(fits)
    grid = np.geomspace(left, right, 200)
    colors = [f"C{i % 10}" for i in range(len(fits))]
    for f, color in zip(fits, colors):
        ax_score.scatter(f.sizes, f.scores, color=color, s=28, zorder=3, label=_legend_label(f))
        if f.fit is None:
            continue
        largest = float(f.sizes.max())
        inside, beyond = grid[grid <= largest], grid[grid >= largest]
        ax_score.plot(inside, f.fit.predict(inside), color=color, lw=1.8)
        ax_score.plot(beyond, f.fit.predict(beyond), color=color, lw=1.4, ls="--")
        ax_gain.plot(inside, f.fit.law.gain_per_decade(inside), color=color, lw=1.8, label=f.source)
        ax_gain.plot(beyond, f.fit.law.gain_per_decade(beyond), color=color, lw=1.4, ls="--")
        band = f.fit.band(grid)
        if band is not None:
            ax_score.fill_between(grid, *band, color=color, alpha=0.15, lw=0)
            ax_gain.fill_between(grid, *f.fit.gain_band(grid), color=color, alpha=0.15, lw=0)
        flat = f.flattening
        if flat.status not in (NOT_REACHED, ALREADY_FLAT):
            y_star = float(f.fit.predict(flat.size))
            # Hollow where n* lies beyond the largest size trained: a guess from the fit, not a measurement.
            star = dict(marker="*", s=220, edgecolor=color if flat.status == EXTRAPOLATED else "black", zorder=4,
                        facecolor="white" if flat.status == EXTRAPOLATED else color,
                        linewidth=1.4 if flat.status == EXTRAPOLATED else 0.7)
            ax_score.scatter([flat.size], [y_star], **star)
            ax_gain.scatter([flat.size], [flat.threshold], **star)
            if flat.interval is not None:
                low, high = flat.interval
                high = min(high, right) if math.isfinite(high) else right
                ax_gain.plot([max(low, left), high], [flat.threshold] * 2, color=color, lw=4, alpha=0.35,
                             solid_capstyle="butt")
    if baseline is not None:
        ax_score.axhline(baseline, color="0.35", lw=1.2, ls="-.", label=f"starting model (n = 0): {baseline:.2f}")
    if threshold is not None:
        ax_gain.axhline(threshold, color="black", lw=1, ls=":",
                        label=f"threshold: {threshold:g} point{'' if threshold == 1 else 's'} per 10x")
    for ax in (ax_score, ax_gain):
        _size_axis(ax)
        ax.set_xlim(left, right)
        ax.set_xlabel(X_LABELS[x_axis])
    # Gains are positive and span decades: a log axis, floored well below the threshold.
    ax_gain.set_yscale("log")
    floor = (threshold or 1.0) / 30.0
    top = max([floor * 30.0] + [float(f.fit.law.gain_per_decade(left)) for f in fits if f.fit is not None])
    ax_gain.set_ylim(floor, 2.0 * top)
    ax_score.set_ylabel(metric_label)
    ax_gain.set_ylabel("gain per 10x more data: score(10n) - score(n)")
    ax_score.set_title(f"{metric_label} vs {'training pairs seen' if x_axis == 'pairs_seen' else 'training examples'}",
                       fontsize=11)
    ax_gain.set_title("what 10x more data adds (n* where a curve crosses the threshold)", fontsize=11)
    level = next((f.fit.confidence for f in fits if f.fit is not None), None)
    caption = "lines: fit a - b n^(-c), dashed beyond the largest size trained; star: n* (hollow: extrapolated)"
    if level is not None:
        caption += f"; bands and bars: {level:.0%} bootstrap intervals"
    fig.suptitle(caption, fontsize=9, color="0.3")
    ax_score.legend(fontsize=8.5, loc="lower right")
    ax_gain.legend(fontsize=8.5, loc="upper right")
    if bottom is not None:
        _language_panels(bottom, fits, per_language, colors, metric_label)
    return fig


def plot_scaling_curves(
    fits: Sequence[SourceFit],
    path_stem: str | os.PathLike,
    *,
    metric_label: str = "score",
    threshold: float | None = None,
    baseline: float | None = None,
    per_language: PerLanguage | None = None,
    x_axis: str = "size",
) -> tuple[Path, Path]:
    """Write `path_stem`.png (150 dpi) and `path_stem`.svg atomically; returns both paths."""
    fig = build_figure(fits, metric_label=metric_label, threshold=threshold, baseline=baseline,
                       per_language=per_language, x_axis=x_axis)
    stem = Path(path_stem)
    written = []
    for fmt, options in (("png", {"dpi": 150}), ("svg", {})):
        path = stem.with_name(stem.name + "." + fmt)
        with AtomicFile(path) as out:
            fig.savefig(out, format=fmt, **options)
        written.append(path)
    return written[0], written[1]


def _with_interval(value: float, interval: tuple[float, float] | None, fmt: str) -> str:
    text = format(value, fmt)
    if interval is None:
        return text
    return f"{text} [{format(interval[0], fmt)}, {format(interval[1], fmt)}]"


def _n_star_cell(f: SourceFit) -> str:
    flat = f.flattening
    if flat.status == NOT_REACHED:
        cell = f"not reached (> {format_size(flat.horizon)})"
    elif flat.status == ALREADY_FLAT:
        cell = f"already flat (< {format_size(float(f.sizes.min()))})"
    else:
        cell = format_size(flat.size) + (" (extrapolated)" if flat.size > float(f.sizes.max()) else "")
    if flat.interval is not None:
        low, high = (format_size(v) if math.isfinite(v) else f"> {format_size(flat.horizon)}" for v in flat.interval)
        cell += f" [{low}, {high}]"
    return cell


def markdown_table(fits: Sequence[SourceFit], *, metric_label: str = "score") -> str:
    """A Markdown table, one row per source, followed by notes (fit warnings, unfitted sources).

    Intervals are shown as `[low, high]` at the fits' confidence level.
    """
    if not fits:
        raise ValueError("no sources to tabulate")
    fitted = [f for f in fits if f.fit is not None]
    threshold = fitted[0].flattening.threshold if fitted else None
    lines = []
    if fitted:
        fit0 = fitted[0].fit
        lines.append(
            f"{metric_label} = a - b * n^(-c); n* = size where 10x more data adds less than {threshold:g} "
            f"point{'' if threshold == 1 else 's'}; [low, high] = {fit0.confidence:.0%} percentile bootstrap "
            f"intervals ({fit0.bootstrap.shape[0] + fit0.bootstrap_failed} resamples of "
            f"{'the questions' if fit0.bootstrap_kind == 'questions' else 'the points'}"
            + ("" if all(f.fit.bootstrap_kind == fit0.bootstrap_kind for f in fitted) else ", or of the points where a "
               "source has no per-question outcomes") + ").")
        lines.append("")
    lines.append(f"| source | points | a | b | c | n* | {metric_label} at largest n | bootstrap |")
    lines.append("|---|---|---|---|---|---|---|---|")
    notes = []
    for f in fits:
        span = f"{len(f.sizes)} ({format_size(float(f.sizes.min()))}-{format_size(float(f.sizes.max()))})"
        largest, score = f.score_at_largest()
        at_largest = f"{score:.2f} at {format_size(largest)}"
        if f.fit is None:
            lines.append(f"| {f.source} | {span} | - | - | - | no fit | {at_largest} | - |")
            notes.append(f"{f.source}: {f.error}")
            continue
        ci = f.fit.intervals or {}
        law = f.fit.law
        lines.append(
            f"| {f.source} | {span} | {_with_interval(law.a, ci.get('a'), '.2f')} | "
            f"{_with_interval(law.b, ci.get('b'), '.3g')} | {_with_interval(law.c, ci.get('c'), '.3f')} | "
            f"{_n_star_cell(f)} | {at_largest} | {f.fit.bootstrap_kind} |")
        notes.extend(f"{f.source}: {w}" for w in f.fit.warnings)
        notes.append(f"{f.source}: {f.flattening.describe()}")
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"
