"""Scaling-study bookkeeping: the plan, the points on disk, resuming, and the report.

A study trains the same retriever on log-spaced, nested subsets of several data sources
(WebFAQ pairs, translated pairs, UMR's unlabelled questions, ...), evaluates every model on the
same benchmark, and fits score against size per source (`umr_jax.scaling.fit`). On disk:

    STUDY_DIR/
      plan.json                        the planned points and the scaling config of the last run
      points/<source>/size-<n:010d>/   one folder per (source, size) point, e.g. size-0000010000;
                                       its further seeds (`scaling.seeds`) beside it, in
                                       size-<n:010d>-seed-<k>/ (k = 1, 2, ...), laid out alike
        result.json                    written atomically once the point is trained and evaluated:
                                       {"source", "size", "seed", "metrics", "finished_at", "elapsed_seconds"};
                                       a point with result.json is finished and never recomputed
        eval/eval.per_question.jsonl   the point's per-question outcomes, when its evaluation recorded
                                       them: the report's question-level bootstrap resamples them
        ...                            whatever train_and_evaluate keeps there (checkpoints, the
                                       retriever, predictions); a folder without result.json is
                                       an unfinished attempt, handed back to train_and_evaluate
                                       on the next run so it can resume from its checkpoints
      baseline/eval.json               the starting model's evaluation (n = 0), a reference line
      report/scaling.png .svg .md .json .csv   (umr_jax.scaling.report)
      tensorboard/<source>/            per source, every point's metrics at step = its size (a curve
                                       per source: eval/r@5kt/average, ..., train/steps) and the
                                       baseline at step 0
      tensorboard/points/<source>-size-<n>/   per point, its hyper-parameters (TensorBoard's
                                       hparams view) with the same metrics

Training itself is not done here: a study is driven by any callable with the
`TrainAndEvaluate` signature, `(source, size, point_dir, seed) -> metrics`. Its data subset must be
`subsets.nested_subsets(languages_of_source, [size], seed=scaling.subset_seed)[size]`: subsets
are prefixes of one seeded order, so every point gets its subset independently and the subsets
of one source are nested (1k inside 3k inside 10k ...). A point's seed k (0 .. scaling.seeds - 1)
changes its training's randomness (`train.seed + k`: initial dropout and batch order), never its
subset; the report fits each size's mean over its seeds.

One cohesive thing: the bookkeeping of one study folder (plan, point results, resuming; the report
reads it in `umr_jax.scaling.report`),
whose parts all read and write the layout above; ~400 lines.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import ml_collections
import numpy as np

from umr_jax import storage
from umr_jax.data.files import AtomicFile
from umr_jax.errors import InputError
from umr_jax.scaling.fit import format_size

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
TENSORBOARD_DIR = "tensorboard"
PLAN_FILE = "plan.json"
POINTS_DIR = "points"
REPORT_DIR = "report"
BASELINE_FILE = "baseline/eval.json"
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SIZE_DIR = re.compile(r"^size-(\d{10})(-seed-\d+)?$")


def scaling_config() -> ml_collections.ConfigDict:
    """The `scaling` section of a study config, with its defaults.

    Sizes: `min_size` x 10^(k / points_per_decade), rounded to one significant digit (two
    above 5 points per decade), up to min(source size, max_size); with `include_full_size`
    the source's whole size (capped by max_size) is the last point. The fit: see FitSettings.
    """
    return ml_collections.ConfigDict(dict(
        min_size=1000,
        max_size=None,              # cap every source at this many pairs (None: no cap)
        points_per_decade=2,        # 1k, 3k, 10k, 30k, ...
        include_full_size=True,
        subset_seed=0,              # the seed of subsets.nested_subsets
        seeds=3,                    # trainings per (source, size), train.seed + 0, 1, ...; the fit uses their mean
        # How long each point trains (runner.source_config): "epochs", each point train.epochs
        # over its subset (with train.early_stopping_patience=P and data.dev_split=N: stopped
        # early on N held-out examples of its source), or "steps", fixed compute: every point of
        # every source trains `steps` optimizer steps, whatever its size.
        protocol="epochs",
        steps=0,
        metric="r@5kt.average",     # dotted path into each point's metrics
        metric_label="XOR-Retrieve R@5kt",
        flattening_gain=1.0,        # n*: where 10x more data adds less than this many points
        horizon_factor=100.0,       # n* beyond 100x the largest size: "not reached"
        bootstrap_samples=1000,
        confidence=0.95,
        score_ceiling=100.0,        # recall in percent cannot exceed 100
        bootstrap_seed=0,
        compare=None,               # "a:b,c:d": arms to compare (a - b; a's examples to match b); None: every pair
        # What the fits' n counts: "size", each point's subset in its arm's unit (pairs; questions
        # for UMR), or "pairs_seen", the training pairs it saw (steps x queries per batch), the
        # unit every arm shares (with scaling.protocol=steps every point sees the same: no curve).
        x_axis="size",
        keep_embeddings=False,      # keep each point's eval embeddings (float16) after its result.json
        step_time_from="",          # a `umr-jax compile --json-out` file: --dry-run's time estimates
    ))


# ---------------------------------------------------------------------------------------------
# The plan


def log_spaced_sizes(min_size: int, max_size: int, points_per_decade: int) -> list[int]:
    """Sizes min_size x 10^(k / points_per_decade) <= max_size, rounded to round numbers.

    >>> log_spaced_sizes(1000, 100_000, 2)
    [1000, 3000, 10000, 30000, 100000]
    """
    if min_size < 1 or points_per_decade < 1:
        raise ValueError(f"min_size and points_per_decade must be >= 1, got {min_size}, {points_per_decade}")
    digits = 1 if points_per_decade <= 5 else 2
    sizes: list[int] = []
    k = 0
    while True:
        exact = min_size * 10.0 ** (k / points_per_decade)
        if exact > max_size * (1 + 1e-9):
            break
        magnitude = 10 ** max(0, math.floor(math.log10(exact)) - digits + 1)
        size = int(round(exact / magnitude) * magnitude)
        if size <= max_size and (not sizes or size > sizes[-1]):
            sizes.append(size)
        k += 1
    return sizes


def plan_sizes(available: int, config: Mapping[str, Any]) -> list[int]:
    """The sizes to train for a source of `available` pairs (the `scaling` config section)."""
    cap = int(available) if config.get("max_size") is None else min(int(available), int(config["max_size"]))
    if cap < int(config["min_size"]):
        return []
    sizes = log_spaced_sizes(int(config["min_size"]), cap, int(config["points_per_decade"]))
    if config.get("include_full_size", True) and cap > sizes[-1]:
        sizes.append(cap)
    return sizes


@dataclasses.dataclass(frozen=True, order=True)
class StudyPoint:
    """One (source, size, seed) point of a study: a model trained on `size` pairs of `source`,
    with training seed `train.seed + seed` (the subset does not depend on it)."""

    source: str
    size: int
    seed: int = 0

    def __post_init__(self):
        if not _SOURCE_NAME.match(self.source):
            raise ValueError(f"source name {self.source!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
        if int(self.size) < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if int(self.seed) < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def folder_name(self) -> str:
        """size-<size:010d>, and -seed-<k> for seeds after the first."""
        return f"size-{int(self.size):010d}" + (f"-seed-{int(self.seed)}" if self.seed else "")

    def directory(self, study_dir: str | os.PathLike) -> Path:
        """STUDY_DIR/points/<source>/size-<size:010d>[-seed-<k>]."""
        return storage.local(study_dir) / POINTS_DIR / self.source / self.folder_name

    def result_path(self, study_dir: str | os.PathLike) -> Path:
        return self.directory(study_dir) / RESULT_FILE

    def is_finished(self, study_dir: str | os.PathLike) -> bool:
        return self.result_path(study_dir).is_file()


def plan_study(config: Mapping[str, Any], available: Mapping[str, int]) -> list[StudyPoint]:
    """Every (source, size, seed) point: the first seed of every size first, smallest sizes first
    (every source's curve grows together, and is whole before any point is repeated), then the
    next seed of every size, and so on (`seeds`, default 1 here).

    available: source name -> training pairs it holds. Raises ValueError for a source smaller
    than `min_size`, or `seeds` < 1.
    """
    seeds = int(config.get("seeds", 1) or 0)
    if seeds < 1:
        raise ValueError(f"scaling.seeds={seeds}: every point needs at least one training")
    points = []
    for source, count in available.items():
        sizes = plan_sizes(count, config)
        if not sizes:
            raise ValueError(f"source {source!r} has {count} pairs, fewer than scaling.min_size={config['min_size']}")
        points.extend(StudyPoint(source, size, seed) for size in sizes for seed in range(seeds))
    return sorted(points, key=lambda p: (p.seed, p.size, p.source))


# ---------------------------------------------------------------------------------------------
# Running the points


class TrainAndEvaluate(Protocol):
    """Trains on `size` pairs of `source` with training seed offset `seed` and evaluates: returns
    the metrics (JSON-able).

    The metrics usually are an evaluation report, e.g. {"r@2kt": {"ja": .., "average": ..},
    "r@5kt": {...}}; the study's `metric` is a dotted path into them. `point_dir` exists and is
    this point's own folder: keep checkpoints and outputs there, and resume from what a
    previous, interrupted attempt left in it. Raise to stop the study (nothing is recorded).
    """

    def __call__(self, source: str, size: int, point_dir: Path, seed: int) -> Mapping[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class PointResult:
    """A finished point, as read from (or written to) its result.json; or, from `mean_over_seeds`,
    the mean of a size's seeds (`replicas` then holds each seed's result)."""

    source: str
    size: int
    metrics: Mapping[str, Any]
    finished_at: str
    elapsed_seconds: float
    path: Path
    seed: int = 0
    replicas: tuple["PointResult", ...] = ()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def write_point_result(study_dir: str | os.PathLike, point: StudyPoint, metrics: Mapping[str, Any],
                       elapsed_seconds: float) -> PointResult:
    """Record a finished point: result.json written atomically (temp file, fsync, rename)."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"train_and_evaluate({point.source!r}, {point.size}) returned {type(metrics).__name__}; "
                        "expected a mapping of metrics")
    finished_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"source": point.source, "size": int(point.size), "seed": int(point.seed), "metrics": dict(metrics),
              "finished_at": finished_at, "elapsed_seconds": float(elapsed_seconds)}
    try:
        text = json.dumps(record, indent=2, ensure_ascii=False, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"metrics of point {point.source!r} size {point.size} are not JSON: {err}") from None
    path = point.result_path(study_dir)
    with AtomicFile(path) as out:
        out.write((text + "\n").encode("utf-8"))
    return read_point_result(path)


def read_point_result(path: str | os.PathLike) -> PointResult:
    """A result.json; raises InputError unless it is one, matching the folder it lies in."""
    path = storage.local(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror})", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"not a JSON point result ({err})", path) from None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise InputError('expected {"source", "size", "metrics": {...}, ...}', path)
    source, size, seed = record.get("source"), record.get("size"), record.get("seed", 0)
    if (not isinstance(source, str) or not _SOURCE_NAME.match(source)
            or not isinstance(size, int) or isinstance(size, bool) or size < 1
            or not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise InputError(f"bad source, size or seed in point result: {source!r}, {size!r}, {seed!r}", path)
    expected = StudyPoint(source, size, seed)
    if path.parent.name != expected.folder_name or path.parent.parent.name != expected.source:
        raise InputError(f"result of {expected.source!r} size {size} seed {seed} lies in the wrong folder "
                         f"(expected .../{POINTS_DIR}/{expected.source}/{expected.folder_name}/)", path)
    return PointResult(source=source, size=size, metrics=record["metrics"],
                       finished_at=str(record.get("finished_at", "")),
                       elapsed_seconds=float(record.get("elapsed_seconds", 0.0)), path=path, seed=seed)


def write_plan(study_dir: str | os.PathLike, points: Sequence[StudyPoint], config: Mapping[str, Any]) -> Path:
    """STUDY_DIR/plan.json: the points and the scaling config, written atomically."""
    section = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    record = {"points": [{"source": p.source, "size": int(p.size), "seed": int(p.seed)} for p in points],
              "scaling": section}
    path = storage.local(study_dir) / PLAN_FILE
    with AtomicFile(path) as out:
        out.write((json.dumps(record, indent=2, default=_json_default) + "\n").encode("utf-8"))
    return path


def read_plan(study_dir: str | os.PathLike) -> list[StudyPoint]:
    """The points of STUDY_DIR/plan.json ([] when there is none)."""
    path = storage.local(study_dir) / PLAN_FILE
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return [StudyPoint(p["source"], int(p["size"]), int(p.get("seed", 0))) for p in record["points"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise InputError(f'not a study plan ({err}); expected {{"points": [{{"source", "size"}}, ...]}}', path) from None


def run_study(
    study_dir: str | os.PathLike,
    points: Sequence[StudyPoint],
    train_and_evaluate: TrainAndEvaluate,
    *,
    config: Mapping[str, Any] | None = None,
    write_results: bool = True,
    hparams: Callable[[StudyPoint], Mapping[str, Any]] | None = None,
    after_result: Callable[[StudyPoint, Path], None] | None = None,
) -> list[PointResult]:
    """Train and evaluate every point not finished yet, in order; return every point's result.

    A point whose result.json exists is read, not recomputed. After each new point its
    result.json is written, so an interrupted study resumes at the first unfinished point.
    Multi-host: every process calls this with the same arguments (train_and_evaluate is a
    collective step) and only one passes write_results=True (e.g. jax.process_index() == 0);
    STUDY_DIR must then be storage all hosts see, so they agree on what is finished.
    With `config` (the scaling section), plan.json is written first. Every finished point's
    metrics go to TensorBoard (`write_point_summaries`, with `hparams(point)`: its settings).
    `after_result(point, point_dir)` runs once a point's result.json exists (also for a point
    finished earlier, in case a kill came before it ran), on the writing process only.
    """
    study_dir = storage.local(study_dir)  # a gs:// study: its local mirror
    if write_results and config is not None:
        write_plan(study_dir, points, config)
    results = []
    for number, point in enumerate(points, 1):
        label = (f"point {number}/{len(points)}: {point.source} n={format_size(point.size)}"
                 + (f" seed {point.seed}" if point.seed else ""))
        if point.is_finished(study_dir):
            log.info("%s: finished earlier, not recomputed", label)
            results.append(read_point_result(point.result_path(study_dir)))
            if write_results:  # a kill may have come between its result.json and its event files
                write_point_summaries(study_dir, results[-1], hparams(point) if hparams else None, config)
                if after_result is not None:
                    after_result(point, point.directory(study_dir))
            continue
        point_dir = point.directory(study_dir)
        point_dir.mkdir(parents=True, exist_ok=True)
        log.info("%s: training and evaluating in %s", label, point_dir)
        start = time.monotonic()
        metrics = train_and_evaluate(point.source, int(point.size), point_dir, int(point.seed))
        elapsed = time.monotonic() - start
        if write_results:
            results.append(write_point_result(study_dir, point, metrics, elapsed))
            write_point_summaries(study_dir, results[-1], hparams(point) if hparams else None, config)
            if after_result is not None:
                after_result(point, point_dir)
        else:
            results.append(PointResult(point.source, int(point.size), dict(metrics), "", elapsed, point.result_path(study_dir),
                                       seed=int(point.seed)))
        log.info("%s: done in %.0f s", label, elapsed)
    return results


def _summary_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A point's metrics as TensorBoard tags: the evaluation under eval/, the training under train/."""
    return {"eval": {k: v for k, v in metrics.items() if k != "train"}, "train": metrics.get("train") or {}}


def _hparam_metric_tags(config: Mapping[str, Any] | None) -> list[str]:
    metric = str((config or {}).get("metric", "r@5kt.average"))
    return list(dict.fromkeys([f"eval/{metric.replace('.', '/')}", "eval/r@2kt/average", "eval/r@5kt/average"]))


def write_point_summaries(study_dir: str | os.PathLike, result: PointResult, hparams: Mapping[str, Any] | None = None,
                          config: Mapping[str, Any] | None = None) -> None:
    """A finished point in TensorBoard (the layout in the module docstring): its metrics at step =
    its size in its source's run, and its hyper-parameters (source, size, objective, and
    `hparams`) with the same metrics in its own run under points/. Files already there are kept,
    so a resumed study writes each point once. `config`: the scaling section (its `metric` is
    the one the hparams view shows first)."""
    from umr_jax.training.summaries import write_hparams, write_scalars

    root = storage.local(study_dir) / TENSORBOARD_DIR
    values = _summary_values(result.metrics)
    name = StudyPoint(result.source, result.size, result.seed).folder_name
    write_scalars(root / result.source, name, step=int(result.size), values=values)
    run = root / POINTS_DIR / f"{result.source}-{name}"
    settings = {"source": result.source, "size": int(result.size), **({"seed": int(result.seed)} if result.seed else {}),
                "objective": (result.metrics.get("train") or {}).get("objective"), **(hparams or {})}
    if hparams is not None or not any(run.glob("events.out.tfevents.hparams-*")):  # keep the fuller set written with the point
        write_hparams(run, settings, _hparam_metric_tags(config))
    write_scalars(run, name, step=int(result.size), values=values)


def write_baseline_summaries(study_dir: str | os.PathLike, sources: Sequence[str], baseline: Mapping[str, Any]) -> None:
    """The starting model's evaluation at step 0 of every source's run (the n = 0 reference)."""
    from umr_jax.training.summaries import write_scalars

    for source in sources:
        write_scalars(storage.local(study_dir) / TENSORBOARD_DIR / source, f"size-{0:010d}", step=0,
                      values=_summary_values(baseline))


# ---------------------------------------------------------------------------------------------
# Collecting and reporting


def collect_results(study_dir: str | os.PathLike) -> list[PointResult]:
    """Every finished point under STUDY_DIR/points, sorted by (source, size)."""
    root = storage.local(study_dir) / POINTS_DIR
    results = []
    if root.is_dir():
        for source_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for point_dir in sorted(p for p in source_dir.iterdir() if p.is_dir() and _SIZE_DIR.match(p.name)):
                if (point_dir / RESULT_FILE).is_file():
                    results.append(read_point_result(point_dir / RESULT_FILE))
    return sorted(results, key=lambda r: (r.source, r.size, r.seed))


def mean_over_seeds(results: Sequence[PointResult]) -> list[PointResult]:
    """One result per (source, size): its seeds' results with every number of their metrics
    averaged (a number some seed lacks is left out), `train` the first seed's with `seeds` (how
    many) added, and `replicas` the seeds' own results. The report fits these means."""
    groups: dict[tuple[str, int], list[PointResult]] = {}
    for result in sorted(results, key=lambda r: (r.source, r.size, r.seed)):
        groups.setdefault((result.source, result.size), []).append(result)
    out = []
    for (source, size), replicas in groups.items():
        first = replicas[0]
        metrics = _mean_tree([r.metrics for r in replicas], skip=("train",))
        metrics["train"] = {**(first.metrics.get("train") or {}), "seeds": len(replicas)}
        out.append(dataclasses.replace(first, metrics=metrics, replicas=tuple(replicas),
                                       elapsed_seconds=sum(r.elapsed_seconds for r in replicas)))
    return out


def _mean_tree(trees: Sequence[Mapping[str, Any]], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in trees[0].items():
        if key in skip:
            continue
        values = [t.get(key) for t in trees]
        if isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in values):
            out[key] = _mean_tree(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = float(np.mean(values)) if len(values) > 1 else value
        elif len(values) == 1:
            out[key] = value
    return out


def metric_value(metrics: Mapping[str, Any], metric: str, *, where: str | os.PathLike | None = None) -> float:
    """The number at dotted path `metric` (e.g. "r@5kt.average"); InputError naming `where` if absent."""
    node: Any = metrics
    for part in metric.split("."):
        if not isinstance(node, Mapping) or part not in node:
            keys = sorted(node) if isinstance(node, Mapping) else []
            raise InputError(f"metric {metric!r}: no key {part!r} (keys here: {', '.join(map(str, keys)) or 'none'})", where)
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        raise InputError(f"metric {metric!r} is {node!r}, not a finite number", where)
    return float(node)


def points_by_source(results: Sequence[PointResult], metric: str) -> dict[str, list[tuple[int, float]]]:
    """source -> [(size, metric value)], sizes ascending, sources in name order."""
    points: dict[str, list[tuple[int, float]]] = {}
    for result in sorted(results, key=lambda r: (r.source, r.size)):
        points.setdefault(result.source, []).append((result.size, metric_value(result.metrics, metric, where=result.path)))
    return points


def write_report(study_dir: str | os.PathLike, config: Mapping[str, Any], baseline: Mapping[str, Any] | None = None):
    """Fit the finished points and write STUDY_DIR/report/ (`umr_jax.scaling.report.write_report`:
    the conclusion, fits, arm comparisons, per-language curves, a CSV of every point)."""
    from umr_jax.scaling.report import write_report as write

    return write(study_dir, config, baseline)
