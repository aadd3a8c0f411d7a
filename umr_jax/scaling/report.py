"""A scaling study's report: what the finished points say, with intervals that decide.

`write_report` reads the study folder's finished points (`umr_jax.scaling.study`) and writes
STUDY_DIR/report/:

  scaling.md     the conclusion (diminishing returns per arm: yes / no / inconclusive at this
                 size, and every compared pair of arms in a sentence), the fit table, the arms
                 compared at matched sizes, the equivalent-data ratios, R@kt per language
  scaling.json   the same numbers (and the fits, the settings, the pending points)
  scaling.csv    every point: arm, size, seed, every metric value, per language
  scaling.png/svg  the curves, the gain per 10x, and one panel per language

Intervals come from a question-level paired bootstrap when every point of an arm has its
per-question outcomes (`eval/eval.per_question.jsonl`, `umr_jax.scaling.resample`), else from
resampling the points, and the report says which.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from umr_jax import storage
from umr_jax.data.files import AtomicFile
from umr_jax.errors import InputError
from umr_jax.scaling import compare as compare_lib
from umr_jax.scaling import resample
from umr_jax.scaling import study
from umr_jax.scaling.fit import format_size
from umr_jax.scaling.flattening import FitSettings, SourceFit, fit_sources

# Where the evaluate stage of a point (scaling.runner.PointRunner) leaves its per-question file.
POINT_EVAL = "eval/eval.json"


@dataclasses.dataclass(frozen=True)
class StudyReport:
    """What `write_report` wrote and the fits, verdicts and comparisons it wrote them from."""

    fits: list[SourceFit]
    pending: list[study.StudyPoint]
    markdown: Path
    json: Path
    png: Path
    svg: Path
    csv: Path
    record: dict


def per_question_file(result: study.PointResult) -> Path:
    """The per-question outcomes of a finished point (which may not exist: older points)."""
    from umr_jax.stages.evaluate import per_question_path

    return per_question_path(result.path.parent / POINT_EVAL)


def _configured(config: Mapping[str, Any]) -> list[str]:
    names = config.get("sources") or ()
    return [n.strip() for n in names.split(",") if n.strip()] if isinstance(names, str) else list(names)


def _arm_order(results: Sequence[study.PointResult], config: Mapping[str, Any]) -> list[str]:
    """The finished arms: those of `scaling.sources` in its order, then any others by name."""
    names = _configured(config)
    finished = sorted({r.source for r in results})
    return [n for n in names if n in finished] + [n for n in finished if n not in names]


def question_replicates(results: Sequence[study.PointResult], metric: str, settings: FitSettings,
                        ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """source -> `[resamples, points]` for every source whose points all have per-question files
    (points in (size) order), and what was done: {"method", "resamples", "questions",
    "languages", "sources", "seeds_resampled", "without_outcomes": [...], "reason"}. Raises
    InputError when a per-question file does not give back its point's metric.

    Two levels when a point has several seeds: every seed's score is recomputed on the shared
    question resample, and each resample then averages a draw, with replacement, of the point's
    seeds (drawn anew per point and resample), so the intervals carry the training-seed spread
    as well as the questions'. With one seed per point this is the question bootstrap alone."""
    parsed = resample.question_metric(metric)
    info: dict[str, Any] = {"method": "points", "sources": [], "without_outcomes": [], "reason": None}
    if parsed is None:
        info["reason"] = f"the metric {metric} is not an R@kt the per-question files hold"
        return {}, info
    table, lang = parsed
    outcomes: dict[tuple[str, int], list[resample.PointOutcomes]] = {}
    for r in results:
        found = _seed_outcomes(r, table)
        if found is None:
            info["without_outcomes"].append(f"{r.source} n={format_size(r.size)}")
        else:
            outcomes[(r.source, r.size)] = found
    sources = sorted({r.source for r in results})
    complete = [s for s in sources if all((r.source, r.size) in outcomes for r in results if r.source == s)]
    if info["without_outcomes"]:
        info["reason"] = "points without per-question outcomes (evaluated before they were recorded)"
    if not complete:
        return {}, info
    used = [r for r in sorted(results, key=lambda r: (r.source, r.size)) if r.source in complete]
    columns: list[list[int]] = []  # each point's seeds: their columns in the bootstrap
    flat: list[resample.PointOutcomes] = []
    for r in used:
        columns.append(list(range(len(flat), len(flat) + len(outcomes[(r.source, r.size)]))))
        flat.extend(outcomes[(r.source, r.size)])
    boot = resample.question_bootstrap(flat, lang, samples=settings.bootstrap_samples, seed=settings.bootstrap_seed)
    rows = boot.replicates.shape[0]
    seed_draws = np.random.default_rng([settings.bootstrap_seed, 1])  # apart from the questions' stream
    points = np.empty((rows, len(used)))
    for i, (r, cols) in enumerate(zip(used, columns)):
        observed = float(np.mean(boot.observed[cols]))  # the mean over seeds, as result.json has it
        expected = study.metric_value(r.metrics, metric, where=r.path)
        if not abs(observed - expected) <= 1e-6 * max(1.0, abs(expected)):
            raise InputError(f"its outcomes give {metric} = {observed:.6f}, but the point's result.json says {expected:.6f}: "
                             "the two files are not of the same evaluation", per_question_file(r))
        seeds = boot.replicates[:, cols]
        if len(cols) > 1:
            draw = seed_draws.integers(0, len(cols), (rows, len(cols)))
            points[:, i] = np.take_along_axis(seeds, draw, axis=1).mean(axis=1)
        else:
            points[:, i] = seeds[:, 0]
    replicates = {s: points[:, [i for i, r in enumerate(used) if r.source == s]] for s in complete}
    info.update(method="questions", sources=complete, resamples=int(rows), questions=boot.questions,
                languages=boot.languages, seeds_resampled=any(len(c) > 1 for c in columns))
    return replicates, info


X_AXES = ("size", "pairs_seen")


def check_x_axis(x_axis: str, protocol: str) -> None:
    """InputError for an unknown `scaling.x_axis`, or pairs seen under fixed compute."""
    if x_axis not in X_AXES:
        raise InputError(f"scaling.x_axis={x_axis!r}; expected one of {', '.join(X_AXES)}")
    if x_axis == "pairs_seen" and protocol == "steps":
        raise InputError("scaling.x_axis=pairs_seen with scaling.protocol=steps: every point trains the same steps and "
                         "sees the same pairs, so there is no curve to fit; use scaling.x_axis=size")


def x_values(results: Sequence[study.PointResult], x_axis: str, *, protocol: str = "epochs") -> dict[tuple[str, int], float]:
    """(arm, size) -> the point's n on the fits' axis: its size, or with `x_axis` "pairs_seen"
    the training pairs its seeds saw (their mean; `train.examples_seen` in result.json). Raises
    InputError for an unknown axis, a point trained before pairs seen were recorded, or pairs
    seen under the fixed-compute protocol (every point sees the same number)."""
    check_x_axis(x_axis, protocol)
    if x_axis == "size":
        return {(r.source, r.size): r.size for r in results}
    out = {}
    for r in results:
        seen = [(x.metrics.get("train") or {}).get("examples_seen") for x in (r.replicas or (r,))]
        if any(s is None for s in seen):
            raise InputError("scaling.x_axis=pairs_seen: the point did not record the pairs it saw (trained before "
                             "they were recorded); use scaling.x_axis=size", r.path)
        out[(r.source, r.size)] = float(np.mean(seen))
    return out


def _seed_outcomes(result: study.PointResult, table: str) -> list[resample.PointOutcomes] | None:
    """The per-question outcomes of each of a point's seeds (one for a point of one seed); None
    when a seed has no file. Raises InputError when the seeds counted other questions."""
    found = [resample.read_outcomes(per_question_file(r), table) for r in (result.replicas or (result,))]
    if any(f is None for f in found):
        return None
    for other in found[1:]:
        if other.ids != found[0].ids:
            raise InputError(f"the seeds of {result.source} n={format_size(result.size)} counted other questions than "
                             f"{found[0].path}: they must share one evaluation", other.path)
    return found


def per_language(results: Sequence[study.PointResult], table: str) -> dict[str, dict[str, list[list[float]]]]:
    """source -> lang -> [[size, score], ...] of the metric table `table` (e.g. "r@5kt")."""
    out: dict[str, dict[str, list[list[float]]]] = {}
    for r in sorted(results, key=lambda r: (r.source, r.size)):
        scores = r.metrics.get(table)
        if not isinstance(scores, Mapping):
            continue
        for lang, value in scores.items():
            if lang != "average" and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(r.source, {}).setdefault(lang, []).append([float(r.size), float(value)])
    return out


def _flat_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        if name == "train":
            continue
        if isinstance(value, Mapping):
            for key, leaf in value.items():
                if isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
                    out[f"{name}.{key}"] = float(leaf)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def points_csv(results: Sequence[study.PointResult], arms: Sequence[str]) -> str:
    """Every point as CSV: arm, size (in the arm's unit), seed, steps, per_question (whether its
    outcomes exist), pairs_seen (training pairs seen, the unit every arm shares), then every
    metric value (`r@5kt.average`, `r@5kt.ja`, ..., `counted.ja`), blank where a
    point lacks it. Tables sorted by name, each with its average first."""
    flat = {(r.source, r.size, r.seed): _flat_metrics(r.metrics) for r in results}
    keys = sorted({k for f in flat.values() for k in f},
                  key=lambda k: (k.split(".")[0], k.split(".", 1)[-1] != "average", k))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["arm", "size", "seed", "steps", "per_question", "pairs_seen", *keys])
    order = {name: i for i, name in enumerate(arms)}
    for r in sorted(results, key=lambda r: (order.get(r.source, len(order)), r.size, r.seed)):
        train = r.metrics.get("train") or {}
        values = flat[(r.source, r.size, r.seed)]
        writer.writerow([r.source, r.size, train.get("seed", ""), train.get("steps", ""),
                         "yes" if per_question_file(r).is_file() else "no", train.get("examples_seen", ""),
                         *[repr(values[k]) if k in values else "" for k in keys]])
    return buffer.getvalue()


def _fmt_interval(value: float, interval: Sequence[float] | None, fmt: str = "+.2f") -> str:
    text = format(value, fmt)
    return text if not interval else f"{text} [{format(interval[0], fmt)}, {format(interval[1], fmt)}]"


def _comparison_lines(comparisons: Sequence[Mapping[str, Any]], confidence: float) -> list[str]:
    if not comparisons:
        return []
    lines = ["## Arms compared", "",
             f"Differences are A - B in points, [low, high] = {confidence:.0%} bootstrap intervals.", "",
             "| A - B | n | difference | how |", "|---|---|---|---|"]
    for c in comparisons:
        for row in c["matched"]:
            lines.append(f"| {c['a']} - {c['b']} | {format_size(row['size'])} | "
                         f"{_fmt_interval(row['difference'], row['interval'])} | {row['method']} |")
        if c["asymptote_difference"] is not None:
            d = c["asymptote_difference"]
            lines.append(f"| {c['a']} - {c['b']} | asymptote a | {_fmt_interval(d['value'], d['interval'])} | fitted |")
        if not c["matched"]:
            lines.append(f"| {c['a']} - {c['b']} | - | - | {c['note']} |")
    lines += ["", "Equivalent data:", ""] + [f"- {c['equivalent_data']['sentence']}." for c in comparisons] + [""]
    return lines


def _language_lines(languages: Mapping[str, Mapping[str, list[list[float]]]], table: str, arms: Sequence[str],
                    results: Sequence[study.PointResult]) -> list[str]:
    codes = sorted({lang for by_lang in languages.values() for lang in by_lang})
    if not codes:
        return []
    lines = [f"## Per language ({table})", "", "| arm | n | " + " | ".join(codes) + " | average |",
             "|---|---|" + "---|" * (len(codes) + 1)]
    order = {name: i for i, name in enumerate(arms)}
    for r in sorted(results, key=lambda r: (order.get(r.source, len(order)), r.size)):
        scores = r.metrics.get(table) or {}
        cells = [f"{scores[c]:.2f}" if isinstance(scores.get(c), (int, float)) else "-" for c in [*codes, "average"]]
        lines.append(f"| {r.source} | {format_size(r.size)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _bootstrap_lines(info: Mapping[str, Any], arms: Sequence[str], confidence: float) -> list[str]:
    lines = []
    if info["method"] == "questions":
        langs = ", ".join(f"{k} {v}" for k, v in info["languages"].items())
        lines.append(f"Intervals ({confidence:.0%}): question-level paired bootstrap for "
                     f"{', '.join(a for a in arms if a in info['sources'])}: "
                     f"{info['resamples']} resamples of the {info['questions']} evaluation questions ({langs}), drawn "
                     "within each language, the same resample for every point and arm; "
                     + ("each point's seeds drawn again with replacement within each resample (two levels: the "
                        "intervals hold the seed spread too); " if info.get("seeds_resampled") else "")
                     + "each resample's scores refitted.")
    rest = [a for a in arms if a not in info["sources"]]
    if rest:
        why = info["reason"] or "no per-question outcomes"
        lines.append(f"Intervals ({confidence:.0%}) for {', '.join(rest)}: point bootstrap (the points resampled and "
                     f"refitted), because of {why}"
                     + (f": {', '.join(info['without_outcomes'])}" if info["without_outcomes"] else "") + ".")
    return lines + [""]


def _protocol_lines(config: Mapping[str, Any], results: Sequence[study.PointResult], arms: Sequence[str],
                    metric: str) -> list[str]:
    """How long the points trained: the protocol, and per arm the steps and examples seen (as its
    points' result.json recorded them), how many stopped early on their dev split, the seeds per
    size and the metric's spread over them (`results`: means over seeds)."""
    if config.get("protocol", "epochs") == "steps":
        head = f"Protocol: fixed compute, {int(config.get('steps') or 0)} optimizer steps for every point of every arm."
    else:
        head = ("Protocol: fixed epochs, each point trains its arm's `train.epochs` over its subset (at most; with "
                "`train.early_stopping_patience` it stops early on a dev split of its source).")
    lines = ["## Training", "", head, "", "| arm | starts from | sizes | seeds | seed sd | steps | training pairs seen | stopped early |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for arm in arms:
        means = [r for r in results if r.source == arm]
        replicas = [x for r in means for x in (r.replicas or (r,))]
        trained = [x.metrics.get("train") or {} for x in replicas]
        seeds = sorted({len(r.replicas or (r,)) for r in means})
        spreads = [float(np.std([study.metric_value(x.metrics, metric) for x in r.replicas], ddof=1))
                   for r in means if len(r.replicas) > 1]
        spread = f"{np.mean(spreads):.2f}" if spreads else "n/a"
        inits = sorted({str(t["init"]) for t in trained if t.get("init")})
        start = ", ".join(_model_name(i) for i in inits) or "?"
        if any(t.get("objective") == "distill" for t in trained) and inits and inits == [config.get("base_init")]:
            notes.append(f"{arm} is distillation from {start}, the init every arm shares, not UMR's own start "
                         "(mContriever); give it one with sources.<arm>.model.init=...")
        steps = [int(t["steps"]) for t in trained if "steps" in t]
        seen = [int(t["examples_seen"]) for t in trained if "examples_seen" in t]
        early = sum(t.get("reason") == "early_stopped" for t in trained)
        span = lambda xs: "?" if not xs else (format_size(min(xs)) if min(xs) == max(xs)  # noqa: E731
                                              else f"{format_size(min(xs))} to {format_size(max(xs))}")
        lines.append(f"| {arm} | {start} | {len(means)} | {'-'.join(map(str, seeds))} | {spread} | {span(steps)} | "
                     f"{span(seen)} | {early} |")
    return lines + [""] + [f"Note: {n}." for n in notes] + ([""] if notes else [])


def _arm_lines(config: Mapping[str, Any], arms: Sequence[str], x_axis: str = "size") -> list[str]:
    """What each arm trains on (`config["arms"]`, from `runner.arm_description`): its data,
    languages and their shares, the direction of its pairs, and its unit of size."""
    described = config.get("arms") or {}
    if not any(arm in described for arm in arms):
        return []
    lines = ["## Arms", "", "| arm | objective | data | languages | shares | direction | size counts |",
             "|---|---|---|---|---|---|---|"]
    for arm in arms:
        d = described.get(arm)
        if d:
            lines.append(f"| {arm} | {d['objective']} | {d['data']} | {d['languages']} | {d['shares']} | {d['direction']} "
                         f"| {d['unit']} |")
    seen = ("training pairs seen, one query with its target each (a pair's positive, or a question's scored "
            "candidates)")
    if x_axis == "pairs_seen":
        return lines + ["", f"The fits' n is every arm's {seen}, the unit they share; a point's size in its own unit "
                        "(the last column) is in the CSV.", ""]
    return lines + ["", f"Each arm's x axis is its size in its own unit (the last column); the Training table gives every "
                    f"arm's {seen}, the unit they share (scaling.x_axis=pairs_seen fits against it).", ""]


def _model_name(init: str) -> str:
    """A model's name as a reader knows it: the folder's last part (`/models/mcontriever` -> mcontriever)."""
    return init.rstrip("/").rsplit("/", 1)[-1] or init


def write_report(study_dir: str | os.PathLike, config: Mapping[str, Any],
                 baseline: Mapping[str, Any] | None = None) -> StudyReport:
    """Fit every arm's finished points and write STUDY_DIR/report/scaling.{md,json,csv,png,svg}.

    `config` is the scaling section (metric, metric_label, sources, compare and the FitSettings
    fields). Points in plan.json without a result are listed as pending. `baseline`: the starting
    model's metrics (n = 0), reported and drawn as a reference line, never fitted; when None,
    STUDY_DIR/baseline/eval.json is used if it exists. Raises InputError when no point is
    finished, a result lacks the metric, `compare` names no two sources, or a per-question file
    disagrees with its point.
    """
    from umr_jax.scaling.plots import markdown_table, plot_scaling_curves

    study_dir = storage.local(study_dir)  # a gs:// study: its local mirror
    every_seed = study.collect_results(study_dir)
    results = study.mean_over_seeds(every_seed)  # one point per (arm, size): the mean of its seeds
    if not results:
        raise InputError(f"no finished points (no {study.POINTS_DIR}/<source>/size-*/{study.RESULT_FILE})", study_dir)
    metric = str(config.get("metric", "r@5kt.average"))
    label = str(config.get("metric_label", metric))
    table = metric.split(".")[0]
    settings = FitSettings.from_config(config)
    arms = _arm_order(results, config)
    replicates, bootstrap_info = question_replicates(results, metric, settings)
    x_axis = str(config.get("x_axis") or "size")
    x_of = x_values(results, x_axis, protocol=str(config.get("protocol", "epochs")))
    by_source = {source: [(x_of[(source, size)], score) for size, score in points]
                 for source, points in study.points_by_source(results, metric).items()}
    fits = fit_sources({name: by_source[name] for name in arms}, settings, replicates)
    arm_objects = {f.source: compare_lib.Arm(f, replicates.get(f.source)) for f in fits}
    try:
        pairs = compare_lib.comparison_pairs(arms, config.get("compare"),
                                             known=[*_configured(config), *config.get("defined_sources", ())])
    except ValueError as err:
        raise InputError(str(err)) from None
    verdicts = [compare_lib.diminishing_returns(arm_objects[a], settings.flattening_gain) for a in arms]
    comparisons = [compare_lib.compare_arms(arm_objects[a], arm_objects[b], confidence=settings.confidence,
                                            horizon_factor=settings.horizon_factor) for a, b in pairs]
    languages = {source: {lang: sorted([x_of[(source, size)], score] for size, score in points)
                          for lang, points in by_lang.items()}
                 for source, by_lang in per_language(results, table).items()}

    finished = {(r.source, r.size, r.seed) for r in every_seed}
    pending = [p for p in study.read_plan(study_dir) if (p.source, p.size, p.seed) not in finished]
    baseline_file = study_dir / study.BASELINE_FILE
    if baseline is None and baseline_file.is_file():
        try:
            baseline = json.loads(baseline_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"not a JSON evaluation report ({err})", baseline_file) from None
    baseline_value = None if baseline is None else study.metric_value(baseline, metric, where=baseline_file)
    if baseline is not None:
        study.write_baseline_summaries(study_dir, arms, baseline)
    for result in every_seed:  # points of a study made before its TensorBoard files were written
        study.write_point_summaries(study_dir, result, config=config)

    out = study_dir / study.REPORT_DIR
    png, svg = plot_scaling_curves(fits, out / "scaling", metric_label=label, threshold=settings.flattening_gain,
                                   baseline=baseline_value, per_language=languages, x_axis=x_axis)
    sentences = [v["sentence"] for v in verdicts] + [c["sentence"] for c in comparisons]
    lines = [f"# Scaling study: {label} ({metric})", "",
             f"{len(every_seed)} finished point{'s' if len(every_seed) != 1 else ''}"
             + (f" ({len(results)} sizes of the arms, each the mean of its seeds)" if len(every_seed) > len(results) else "")
             + (f", {len(pending)} pending" if pending else "") + ".", "", "## Conclusion", ""]
    lines += [f"- {s}" for s in sentences] + [""]
    if x_axis == "pairs_seen":
        lines += ["n counts training pairs seen (steps x queries per batch), the unit every arm shares; each "
                  "point's subset size is in the CSV and the Per language table.", ""]
    lines += _bootstrap_lines(bootstrap_info, arms, settings.confidence)
    if baseline_value is not None:
        lines += [f"Starting model, before any training (n = 0, not part of the fits): {baseline_value:.2f}.", ""]
    lines += ["## Fits", "", markdown_table(fits, metric_label=label), "![scaling curves](scaling.png)", ""]
    lines += _arm_lines(config, arms, x_axis)
    lines += _protocol_lines(config, results, arms, metric)
    lines += _comparison_lines(comparisons, settings.confidence)
    lines += _language_lines(languages, table, arms, results)
    lines += ["Every point, every metric and language: [scaling.csv](scaling.csv).", ""]
    if pending:
        lines += ["Pending points:", ""] + [f"- {p.source} n={format_size(p.size)}" + (f" seed {p.seed}" if p.seed else "")
                                            for p in pending] + [""]
    markdown = out / "scaling.md"
    with AtomicFile(markdown) as f:
        f.write("\n".join(lines).encode("utf-8"))
    csv_path = out / "scaling.csv"
    with AtomicFile(csv_path) as f:
        f.write(points_csv(every_seed, arms).encode("utf-8"))
    record = {
        "metric": metric, "metric_label": label, "settings": dataclasses.asdict(settings),
        "bootstrap": bootstrap_info,
        "conclusion": {"sentences": sentences, "diminishing_returns": verdicts},
        "sources": [fit.to_dict() for fit in fits],
        "comparisons": comparisons,
        "per_language": {"table": table, "sources": languages},
        "pending": [{"source": p.source, "size": p.size, "seed": p.seed} for p in pending],
        "baseline": baseline_value,
        "protocol": {"name": config.get("protocol", "epochs"), "steps": int(config.get("steps") or 0)},
        "x_axis": x_axis,
        "arms": {arm: dict((config.get("arms") or {}).get(arm) or {}) for arm in arms},
    }
    json_path = out / "scaling.json"
    with AtomicFile(json_path) as f:
        f.write((json.dumps(_finite(record), indent=2, default=study._json_default, allow_nan=False) + "\n").encode("utf-8"))
    return StudyReport(fits=fits, pending=pending, markdown=markdown, json=json_path, png=png, svg=svg, csv=csv_path,
                       record=record)


def _finite(value: Any) -> Any:
    """The record with infinities and NaNs as null (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
