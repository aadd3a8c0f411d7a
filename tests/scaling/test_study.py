"""Scaling-study bookkeeping: plan, nested subsets, resumable points, report files."""

import json
import re

import numpy as np
import pytest

from umr_jax.config import apply_overrides
from umr_jax.data.subsets import nested_subsets
from umr_jax.errors import InputError
from umr_jax.scaling import study
from umr_jax.scaling.fit import PowerLaw
from umr_jax.scaling.study import StudyPoint

CURVES = {"translated": PowerLaw(58.0, 90.0, 0.3), "webfaq": PowerLaw(64.0, 400.0, 0.4), "umr": PowerLaw(50.0, 10.0, 0.5)}


class FakeTrainAndEvaluate:
    """Test double for the trainer: scores come from known curves; every call is counted."""

    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at
        self.leftovers_seen = []

    def __call__(self, source, size, point_dir, seed):
        self.calls.append((source, size) if not seed else (source, size, seed))
        leftover = point_dir / "checkpoint.txt"
        self.leftovers_seen.append(leftover.exists())
        leftover.write_text("step 7\n")
        if (source, size) == self.fail_at:
            raise RuntimeError("preempted")
        score = float(CURVES[source](size)) + 0.5 * seed  # another seed, another score
        return {"r@2kt": {"ja": score - 8, "average": np.float32(score - 8)},
                "r@5kt": {"ja": score, "average": np.float64(score)}}


def small_config(**overrides):
    config = study.scaling_config()
    apply_overrides(config, [f"{k}={v}" for k, v in {"seeds": 1, **overrides}.items()])
    return config


def test_log_spaced_sizes_and_plan():
    assert study.log_spaced_sizes(1000, 1_000_000, 2) == [1000, 3000, 10000, 30000, 100000, 300000, 1000000]
    assert study.log_spaced_sizes(1000, 10_000, 3) == [1000, 2000, 5000, 10000]
    config = small_config()
    assert study.plan_sizes(47_000_000, config)[-3:] == [10_000_000, 30_000_000, 47_000_000]
    assert study.plan_sizes(12_000, config) == [1000, 3000, 10000, 12000]
    assert study.plan_sizes(12_000, small_config(include_full_size=False)) == [1000, 3000, 10000]
    assert study.plan_sizes(47_000_000, small_config(max_size=100_000)) == [1000, 3000, 10000, 30000, 100000]
    points = study.plan_study(config, {"webfaq": 40_000, "translated": 5_000})
    assert points[:4] == [StudyPoint("translated", 1000), StudyPoint("webfaq", 1000),
                          StudyPoint("translated", 3000), StudyPoint("webfaq", 3000)]
    assert [p.size for p in points if p.source == "translated"] == [1000, 3000, 5000]
    with pytest.raises(ValueError, match="'mkqa' has 500 pairs"):
        study.plan_study(config, {"mkqa": 500})
    with pytest.raises(ValueError, match="names a folder"):
        StudyPoint("web/faq", 1000)
    assert StudyPoint("webfaq", 3000).directory("/s").as_posix() == "/s/points/webfaq/size-0000003000"


def test_planned_subsets_are_nested():
    langs = np.array(["ar", "bn", "fi", "ja", "ko", "ru", "te"])[np.arange(50_000) % 7]
    sizes = study.plan_sizes(len(langs), small_config())
    assert sizes == [1000, 3000, 10000, 30000, 50000]
    subsets = nested_subsets(langs, sizes, seed=5)
    for small, large in zip(sizes, sizes[1:]):
        assert len(subsets[small]) == small
        assert np.isin(subsets[small], subsets[large]).all(), (small, large)
    # Each point can draw its own subset: a single-size call gives the same records.
    np.testing.assert_array_equal(nested_subsets(langs, [3000], seed=5)[3000], subsets[3000])
    assert not np.array_equal(nested_subsets(langs, [3000], seed=6)[3000], subsets[3000])


def test_finished_points_are_never_recomputed(tmp_path):
    config = small_config()
    points = study.plan_study(config, {"webfaq": 100_000, "translated": 30_000})
    fake = FakeTrainAndEvaluate()
    results = study.run_study(tmp_path, points, fake, config=config)
    assert len(fake.calls) == len(points) == 9
    assert [(r.source, r.size) for r in results] == [(p.source, p.size) for p in points]
    assert all(p.is_finished(tmp_path) for p in points)
    assert not list(tmp_path.rglob("*.tmp"))
    record = json.loads(points[0].result_path(tmp_path).read_text())
    assert record["source"] == points[0].source and record["size"] == points[0].size
    assert record["metrics"]["r@5kt"]["average"] == pytest.approx(float(CURVES[points[0].source](points[0].size)))

    study.run_study(tmp_path, points, fake, config=config)
    assert len(fake.calls) == 9                                   # nothing recomputed
    points[4].result_path(tmp_path).unlink()
    study.run_study(tmp_path, points, fake, config=config)
    assert fake.calls[9:] == [(points[4].source, points[4].size)]


def test_an_interrupted_study_resumes_at_the_unfinished_point(tmp_path):
    points = study.plan_study(small_config(), {"webfaq": 30_000})
    crashing = FakeTrainAndEvaluate(fail_at=("webfaq", 10_000))
    with pytest.raises(RuntimeError, match="preempted"):
        study.run_study(tmp_path, points, crashing)
    assert [p.is_finished(tmp_path) for p in points] == [True, True, False, False]
    resumed = FakeTrainAndEvaluate()
    study.run_study(tmp_path, points, resumed)
    assert resumed.calls == [("webfaq", 10_000), ("webfaq", 30_000)]
    # The unfinished point's folder, with what the crashed attempt left, is handed back.
    assert resumed.leftovers_seen == [True, False]


def test_only_the_writer_process_records_results(tmp_path):
    points = study.plan_study(small_config(), {"webfaq": 3000})
    results = study.run_study(tmp_path, points, FakeTrainAndEvaluate(), write_results=False)
    assert [r.size for r in results] == [1000, 3000]
    assert not any(p.is_finished(tmp_path) for p in points)


def test_bad_metrics_and_bad_result_files(tmp_path):
    point = StudyPoint("webfaq", 1000)
    with pytest.raises(TypeError, match="expected a mapping"):
        study.run_study(tmp_path, [point], lambda source, size, point_dir, seed: [1, 2])
    assert not point.is_finished(tmp_path)
    with pytest.raises(TypeError, match="not JSON"):
        study.run_study(tmp_path, [point], lambda source, size, point_dir, seed: {"r": object()})
    path = point.result_path(tmp_path)
    path.write_text("{not json")
    with pytest.raises(InputError, match=re.escape(str(path))):
        study.collect_results(tmp_path)
    wrong = StudyPoint("webfaq", 3000).result_path(tmp_path)
    wrong.parent.mkdir(parents=True)
    wrong.write_text(json.dumps({"source": "webfaq", "size": 1000, "metrics": {}}))
    with pytest.raises(InputError, match="wrong folder"):
        study.read_point_result(wrong)
    with pytest.raises(InputError, match="no key 'r@5kt'.*keys here: r@2kt"):
        study.metric_value({"r@2kt": {"average": 1.0}}, "r@5kt.average", where=wrong)


def test_report_writes_figures_table_and_json(tmp_path):
    config = small_config(bootstrap_samples=60)
    points = study.plan_study(config, {"webfaq": 1_000_000, "translated": 30_000, "umr": 2000})
    fake = FakeTrainAndEvaluate()
    finished = [p for p in points if p.source != "umr"]
    study.run_study(tmp_path, finished, fake, config=config)
    study.write_plan(tmp_path, points, config)          # umr's points planned, not run yet
    report = study.write_report(tmp_path, config)
    assert report.png.stat().st_size > 20_000 and report.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.svg.stat().st_size > 20_000 and "<svg" in report.svg.read_text()
    table = report.markdown.read_text()
    webfaq = next(f for f in report.fits if f.source == "webfaq")
    assert webfaq.fit.law.a == pytest.approx(64.0, abs=0.01)
    low, high = webfaq.fit.intervals["a"]
    assert f"| webfaq | 7 (1k-1M) | {webfaq.fit.law.a:.2f} [{low:.2f}, {high:.2f}] |" in table
    assert f"{webfaq.fit.law.c:.3f}" in table
    assert f"{float(CURVES['webfaq'](1e6)):.2f} at 1M" in table
    # Noiseless points: n* is the true curve's (b (1 - 10^-c) / 1 point)^(1/c).
    expected_n_star = CURVES["webfaq"].flattening_size(1.0)
    assert webfaq.flattening.size == pytest.approx(expected_n_star, rel=0.01)
    assert "Pending points:" in table and "- umr n=1k" in table and "- umr n=2k" in table
    assert "XOR-Retrieve R@5kt" in table
    record = json.loads(report.json.read_text())
    assert [s["source"] for s in record["sources"]] == ["translated", "webfaq"]
    assert record["pending"] == [{"source": "umr", "size": 1000, "seed": 0}, {"source": "umr", "size": 2000, "seed": 0}]
    assert record["sources"][1]["a"] == pytest.approx(webfaq.fit.law.a)


def test_report_without_finished_points_says_so(tmp_path):
    with pytest.raises(InputError, match="no finished points"):
        study.write_report(tmp_path, small_config())


def test_points_reach_tensorboard_once_with_their_hyper_parameters(tmp_path):
    """Each finished point: its metrics at step = its size in its source's run (a curve per
    source), and its own run with its hyper-parameters; a resumed study writes nothing twice;
    the report adds the baseline at step 0 and the points a study made before had no files for."""
    from umr_jax.training.summaries import read_hparams, read_scalars

    config = small_config(max_size=10_000)
    points = study.plan_study(config, {"webfaq": 1_000_000, "translated": 30_000})
    fake = FakeTrainAndEvaluate(fail_at=("webfaq", 10_000))
    hparams = lambda point: {"train.learning_rate": 1e-5 if point.source == "webfaq" else 3e-5}  # noqa: E731
    with pytest.raises(RuntimeError, match="preempted"):
        study.run_study(tmp_path, points, fake, config=config, hparams=hparams)
    fake.fail_at = None
    study.run_study(tmp_path, points, fake, config=config, hparams=hparams)
    board = tmp_path / "tensorboard"
    for source in ("webfaq", "translated"):
        series = read_scalars(board / source)
        expected = [(n, pytest.approx(float(CURVES[source](n)), rel=1e-6)) for n in (1000, 3000, 10_000)]
        assert series["eval/r@5kt/average"] == expected  # once each, resumed or not
        assert series["eval/r@2kt/ja"][0][1] == pytest.approx(float(CURVES[source](1000)) - 8, rel=1e-6)
    run = board / "points" / "webfaq-size-0000003000"
    values, tags = read_hparams(run)
    assert values == {"source": "webfaq", "size": 3000.0, "train.learning_rate": 1e-5}
    assert tags == ["eval/r@5kt/average", "eval/r@2kt/average"]
    assert read_scalars(run)["eval/r@5kt/average"] == [(3000, pytest.approx(float(CURVES["webfaq"](3000)), rel=1e-6))]

    # A study from before: no event files. The report writes them, and the baseline at step 0.
    import shutil

    shutil.rmtree(board)
    study.write_report(tmp_path, small_config(bootstrap_samples=20), baseline={"r@5kt": {"average": 20.0}})
    assert [s for s, _ in read_scalars(board / "webfaq")["eval/r@5kt/average"]] == [0, 1000, 3000, 10_000]
    assert read_scalars(board / "translated")["eval/r@5kt/average"][0] == (0, 20.0)
    assert read_hparams(board / "points" / "translated-size-0000001000")[0] == {"source": "translated", "size": 1000.0}


def test_every_size_is_trained_with_several_seeds_and_reported_as_their_mean(tmp_path):
    config = small_config(seeds=3)
    assert study.scaling_config().seeds == 3  # the default
    points = study.plan_study(config, {"webfaq": 3000})
    # every size once before any is repeated; the first seed keeps the folder it always had
    assert [(p.size, p.seed) for p in points] == [(1000, 0), (3000, 0), (1000, 1), (3000, 1), (1000, 2), (3000, 2)]
    assert [p.directory(tmp_path).name for p in points[:3]] == ["size-0000001000", "size-0000003000",
                                                                 "size-0000001000-seed-1"]
    fake = FakeTrainAndEvaluate()
    study.run_study(tmp_path, points, fake, config=config)
    assert fake.calls == [("webfaq", 1000), ("webfaq", 3000), ("webfaq", 1000, 1), ("webfaq", 3000, 1),
                          ("webfaq", 1000, 2), ("webfaq", 3000, 2)]
    assert study.read_plan(tmp_path) == points
    every = study.collect_results(tmp_path)
    assert [(r.size, r.seed) for r in every] == [(1000, 0), (1000, 1), (1000, 2), (3000, 0), (3000, 1), (3000, 2)]
    means = study.mean_over_seeds(every)
    assert [(r.size, len(r.replicas), r.metrics["train"]["seeds"]) for r in means] == [(1000, 3, 3), (3000, 3, 3)]
    for r in means:  # seeds score +0, +0.5, +1: the mean is +0.5
        assert r.metrics["r@5kt"]["average"] == pytest.approx(float(CURVES["webfaq"](r.size)) + 0.5)
    with pytest.raises(ValueError, match="scaling.seeds=0"):
        study.plan_study(small_config(seeds=0), {"webfaq": 3000})
    # a result in the folder of another seed is refused
    wrong = StudyPoint("webfaq", 1000, 4).result_path(tmp_path)
    wrong.parent.mkdir(parents=True)
    wrong.write_text(points[2].result_path(tmp_path).read_text())
    with pytest.raises(InputError, match="seed 1 lies in the wrong folder"):
        study.collect_results(tmp_path)
