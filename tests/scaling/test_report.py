"""The scaling report answers: question-level paired bootstrap, arms compared at matched sizes,
the equivalent-data ratio, the diminishing-returns verdict, per-language curves, the CSV, and
the fallback to the point bootstrap for points evaluated before per-question outcomes existed.

Point folders are made as the real code makes them: result.json by `study.write_point_result`,
the metrics and `eval/eval.per_question.jsonl` by `xor.xor_retrieve_r_at_kt` on predictions
that hold the answer or not."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from umr_jax.data.files import atomic_write_bytes, json_dumps
from umr_jax.data.formats import XorPrediction
from umr_jax.errors import InputError
from umr_jax.evaluation import xor
from umr_jax.scaling import compare, plots, study
from umr_jax.scaling.fit import PowerLaw, fit_power_law
from umr_jax.scaling.flattening import FitSettings, SourceFit, fit_sources, flattening_point
from umr_jax.scaling.report import per_question_file
from umr_jax.scaling.study import StudyPoint
from umr_jax.config import apply_overrides

LANGS = ("ar", "bn", "fi", "ja", "ko", "ru", "te")
PER_LANG = 40
SIZES = (1000, 3000, 10_000, 30_000, 100_000)


def config(sources=None, **overrides):
    """The scaling section as a study config has it (`sources` is added by the study configs)."""
    c = study.scaling_config()
    apply_overrides(c, [f"{k}={v}" for k, v in overrides.items()])
    if sources is not None:
        c.sources = tuple(sources.split(","))
    return c


def write_point(study_dir, source, size, hits, *, per_question=True, seed=0):
    """A finished point whose questions `q<lang><i>` are hits where `hits[lang][i]` is True."""
    gold = {f"q{lang}{i}": ["ANSWER"] for lang in LANGS for i in range(PER_LANG)}
    predictions = [XorPrediction(f"q{lang}{i}", lang, ("the ANSWER" if hits[lang][i] else "nothing",))
                   for lang in LANGS for i in range(PER_LANG)]
    report = xor.xor_retrieve_r_at_kt(gold, predictions, str.split)
    point = StudyPoint(source, size, seed)
    steps = size // 100
    metrics = {**report.to_json(), "train": {"objective": "contrastive", "steps": steps, "seed": 7,
                                             "examples_seen": steps * 32,
                                             "reason": "early_stopped" if size == SIZES[-1] else "done"}}
    study.write_point_result(study_dir, point, metrics, 1.0)
    if per_question:
        lines = "".join(json_dumps(o.to_json()) + "\n" for o in report.per_question)
        path = per_question_file(study.read_point_result(point.result_path(study_dir)))
        atomic_write_bytes(path, lambda f: f.write(lines.encode()))


def hit_sets(curve, rng):
    """Nested hit sets per size: at size n, the first round(curve(n) / 100 x 40) of a fixed
    random order of each language's questions are hits."""
    orders = {lang: rng.permutation(PER_LANG) for lang in LANGS}
    out = {}
    for size in SIZES:
        k = int(round(float(curve(size)) / 100 * PER_LANG))
        out[size] = {lang: np.isin(np.arange(PER_LANG), orders[lang][:k]) for lang in LANGS}
    return out, orders


def four_more(hits, orders):
    """`hits` with 4 more questions per language made hits (the first misses in `orders`): +10 points."""
    more = {}
    for lang in LANGS:
        misses = [i for i in orders[lang] if not hits[lang][i]][:4]
        more[lang] = hits[lang].copy()
        more[lang][misses] = True
    return more


def test_a_known_paired_effect_is_found_and_covered(tmp_path):
    """Arm 'better' hits every question 'base' hits plus 4 more per language (10% of the
    questions) at every size: the difference is exactly +10 points; its paired CI excludes 0,
    contains 10, and is far narrower than the unpaired spread of the two arms."""
    rng = np.random.default_rng(0)
    base, orders = hit_sets(PowerLaw(70.0, 400.0, 0.45), rng)
    for size in SIZES:
        write_point(tmp_path, "base", size, base[size])
        write_point(tmp_path, "better", size, four_more(base[size], orders))
    report = study.write_report(tmp_path, config(bootstrap_samples=300, sources="better,base"))
    record = json.loads(report.json.read_text())
    assert record["bootstrap"]["method"] == "questions"
    assert record["bootstrap"]["questions"] == 7 * PER_LANG and record["bootstrap"]["languages"]["ja"] == PER_LANG
    (comparison,) = record["comparisons"]
    assert (comparison["a"], comparison["b"], comparison["paired"]) == ("better", "base", True)
    assert comparison["basis"] == "sizes both ran"
    assert [row["size"] for row in comparison["matched"]] == list(SIZES)
    for row in comparison["matched"]:
        assert row["difference"] == pytest.approx(10.0)
        low, high = row["interval"]
        assert 0 < low < 10 < high < 20, row
        assert high - low < 10
    assert "better beats base" in comparison["sentence"]
    assert [f.fit.bootstrap_kind for f in report.fits] == ["questions", "questions"]
    # Every interval in the report is question-level; the Markdown says so.
    text = report.markdown.read_text()
    assert "question-level paired bootstrap for better, base: 300 resamples of the 280 evaluation questions" in text
    assert "## Conclusion" in text and "better - base = +10.00 [" in text
    # How long the points trained: the protocol and, per arm, steps, examples seen, early stops.
    assert "Protocol: fixed epochs, each point trains its arm's `train.epochs`" in text
    assert "| better | ? | 5 | 1 | n/a | 10 to 1k | 320 to 32k | 1 |" in text
    assert record["protocol"] == {"name": "epochs", "steps": 0}
    fixed = study.write_report(tmp_path, config(bootstrap_samples=20, sources="better,base", protocol="steps", steps=500))
    assert "Protocol: fixed compute, 500 optimizer steps for every point of every arm." in fixed.markdown.read_text()


def test_question_resamples_are_shared_by_every_point():
    """The same resample for every point: two points with identical outcomes get identical
    replicates, and a point equal to another plus a constant hit set moves in lockstep."""
    from umr_jax.scaling import resample

    ids = tuple(f"q{i}" for i in range(60))
    langs = tuple("ja" if i < 30 else "ko" for i in range(60))
    hits = np.arange(60) % 3 == 0
    same = resample.PointOutcomes(ids, langs, hits, "a")
    boot = resample.question_bootstrap([same, resample.PointOutcomes(ids, langs, hits.copy(), "b")], samples=200, seed=1)
    assert boot.replicates.shape == (200, 2)
    np.testing.assert_array_equal(boot.replicates[:, 0], boot.replicates[:, 1])
    assert boot.observed[0] == pytest.approx(np.mean([np.mean(hits[:30]), np.mean(hits[30:])]) * 100)
    assert boot.replicates[:, 0].std() > 1.0          # the resamples do vary
    again = resample.question_bootstrap([same], samples=200, seed=1)
    np.testing.assert_array_equal(again.replicates[:, 0], boot.replicates[:, 0])


def test_equivalent_data_ratio_has_the_closed_form_answer(tmp_path):
    """Noiseless power laws, old points (no per-question files): 'webfaq' needs
    (b / (a - s))^(1/c) examples to match 'translated''s score s at its largest size."""
    webfaq, translated = PowerLaw(64.0, 400.0, 0.4), PowerLaw(58.0, 90.0, 0.3)
    results = {"webfaq": [(n, float(webfaq(n))) for n in (1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6)],
               "translated": [(n, float(translated(n))) for n in (1e3, 3e3, 1e4, 3e4)]}
    fits = {f.source: f for f in fit_sources(results, FitSettings(bootstrap_samples=200))}
    a, b = compare.Arm(fits["webfaq"]), compare.Arm(fits["translated"])
    target = float(translated(3e4))
    expected = (400.0 / (64.0 - target)) ** (1 / 0.4)
    eq = compare.equivalent_data(a, b, confidence=0.95, horizon_factor=100)
    assert eq["target_score"] == pytest.approx(target) and eq["target_size"] == 3e4
    assert eq["size"] == pytest.approx(expected, rel=0.03)
    assert eq["ratio"] == pytest.approx(expected / 3e4, rel=0.03)
    low, high = eq["ratio_interval"]
    assert low <= eq["ratio"] <= high
    assert eq["status"] == "within_range" and "webfaq needs" in eq["sentence"]
    # Never reached: the target lies above webfaq's asymptote.
    higher = fit_sources({"best": [(n, float(PowerLaw(80.0, 90.0, 0.3)(n))) for n in (1e3, 3e3, 1e4, 3e4)]},
                         FitSettings(bootstrap_samples=100))[0]
    never = compare.equivalent_data(a, compare.Arm(higher), confidence=0.95, horizon_factor=100)
    assert never["status"] == "not_reached" and never["size"] is None and never["ratio"] is None
    assert "does not reach best's" in never["sentence"] and "within 100x its largest size (100M" in never["sentence"]
    assert compare.size_for_score(webfaq, 64.5) == float("inf")
    assert compare.size_for_score(webfaq, float(webfaq(5e4))) == pytest.approx(5e4)


def _replicated(law, sizes, noise, threshold):
    rng = np.random.default_rng(3)
    sizes = np.asarray(sizes, dtype=float)
    fit = fit_power_law(sizes, law(sizes), score_ceiling=100,
                        score_replicates=law(sizes)[None, :] + rng.normal(0, noise, (200, sizes.size)))
    source = SourceFit("arm", fit.sizes, fit.scores, fit, flattening_point(fit, threshold), None)
    return compare.diminishing_returns(compare.Arm(source, np.zeros((200, sizes.size))), threshold)


def test_diminishing_returns_yes_no_inconclusive():
    sizes = [1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6]
    yes = _replicated(PowerLaw(60.0, 300.0, 0.6), sizes, 0.2, 1.0)
    assert yes["verdict"] == "yes" and yes["interval"][1] < 1.0
    assert "diminishing returns: yes at this size" in yes["sentence"] and "upper bound" in yes["sentence"]
    no = _replicated(PowerLaw(90.0, 200.0, 0.2), sizes, 0.2, 1.0)
    assert no["verdict"] == "no" and no["interval"][0] > 1.0 and "lower bound" in no["sentence"]
    law = PowerLaw(70.0, 300.0, 0.35)
    borderline = _replicated(law, sizes, 0.5, float(law.gain_per_decade(1e6)))
    assert borderline["verdict"] == "inconclusive" and "the CI spans" in borderline["sentence"]
    assert borderline["bootstrap"] == "question bootstrap" and borderline["size"] == 1e6


def test_an_extrapolated_n_star_is_flagged_and_drawn_hollow():
    law = PowerLaw(64.0, 400.0, 0.4)
    sizes = [1e3, 3e3, 1e4, 3e4, 1e5]
    (fit,) = fit_sources({"webfaq": [(n, float(law(n))) for n in sizes]}, FitSettings(bootstrap_samples=50))
    assert fit.flattening.status == "extrapolated" and fit.flattening.to_dict()["extrapolated"] is True
    assert "(extrapolated)" in plots.markdown_table([fit])

    def hollow_stars(f):
        ax = plots.build_figure([f]).axes[0]
        return [c for c in ax.collections if c.get_facecolors().shape[0] == 1
                and np.allclose(c.get_facecolors()[0], [1, 1, 1, 1])]

    assert len(hollow_stars(fit)) == 1
    (inside,) = fit_sources({"webfaq": [(n, float(law(n))) for n in [*sizes, 1e6, 1e7]]}, FitSettings(bootstrap_samples=50))
    assert inside.flattening.status == "within_range" and hollow_stars(inside) == []


def test_old_points_use_the_point_bootstrap_and_say_so_with_csv_and_languages(tmp_path):
    """A study made before per-question outcomes: the report still works, says it used the point
    bootstrap and which points lack the files; the CSV has every point and language."""
    rng = np.random.default_rng(1)
    webfaq, _ = hit_sets(PowerLaw(70.0, 400.0, 0.45), rng)
    translated, _ = hit_sets(PowerLaw(60.0, 90.0, 0.3), rng)
    for size in SIZES:
        write_point(tmp_path, "webfaq", size, webfaq[size], per_question=False)
    for size in SIZES[:3]:
        write_point(tmp_path, "translated", size, translated[size], per_question=size != 1000)
    report = study.write_report(tmp_path, config(bootstrap_samples=100, sources="webfaq,translated",
                                                 compare="webfaq:translated"))
    record = json.loads(report.json.read_text())
    assert record["bootstrap"]["method"] == "points"
    assert record["bootstrap"]["without_outcomes"][:2] == ["translated n=1k", "webfaq n=1k"]
    assert [f.fit.bootstrap_kind for f in report.fits] == ["points", "points"]
    text = report.markdown.read_text()
    assert "Intervals (95%) for webfaq, translated: point bootstrap (the points resampled and refitted)" in text
    assert "translated n=1k" in text
    (comparison,) = record["comparisons"]
    assert comparison["a"] == "webfaq" and comparison["paired"] is False
    assert [row["size"] for row in comparison["matched"]] == [1000, 3000, 10_000]
    assert [v["source"] for v in record["conclusion"]["diminishing_returns"]] == ["webfaq", "translated"]
    assert all(s in text for s in record["conclusion"]["sentences"])
    assert record["per_language"]["table"] == "r@5kt"
    assert [n for n, _ in record["per_language"]["sources"]["webfaq"]["ja"]] == list(SIZES)
    assert "## Per language (r@5kt)" in text and "| ar | bn | fi | ja | ko | ru | te | average |" in text

    rows = list(csv.DictReader(report.csv.open()))
    header = next(csv.reader(report.csv.open()))
    assert header[:6] == ["arm", "size", "seed", "steps", "per_question", "pairs_seen"]
    assert header[6:] == ([f"counted.{lang}" for lang in LANGS] + ["duplicate_predictions", "missing_predictions", "r@2kt.average", *[f"r@2kt.{lang}" for lang in LANGS]]
                          + ["r@5kt.average", *[f"r@5kt.{lang}" for lang in LANGS]])
    assert [(r["arm"], int(r["size"])) for r in rows] == [("webfaq", n) for n in SIZES] + [("translated", n) for n in SIZES[:3]]
    assert rows[0]["seed"] == "7" and rows[0]["per_question"] == "no" and rows[-1]["per_question"] == "yes"
    assert [int(r["pairs_seen"]) for r in rows[:2]] == [SIZES[0] // 100 * 32, SIZES[1] // 100 * 32]
    first = study.read_point_result(StudyPoint("webfaq", 1000).result_path(tmp_path)).metrics
    assert float(rows[0]["r@5kt.ja"]) == first["r@5kt"]["ja"] and float(rows[0]["counted.ja"]) == PER_LANG
    assert report.png.stat().st_size > 20_000


def test_bad_compare_entries_and_a_per_question_file_of_another_evaluation(tmp_path):
    rng = np.random.default_rng(2)
    hits, _ = hit_sets(PowerLaw(70.0, 400.0, 0.45), rng)
    for size in SIZES[:3]:
        write_point(tmp_path, "webfaq", size, hits[size])
    with pytest.raises(InputError, match="scaling.compare: 'webfaq-umr' is not 'A:B'"):
        study.write_report(tmp_path, config(bootstrap_samples=30, compare="webfaq-umr"))
    # A configured source with no finished point yet: its pair waits, no error.
    report = study.write_report(tmp_path, config(bootstrap_samples=30, sources="webfaq,umr", compare="umr:webfaq"))
    assert json.loads(report.json.read_text())["comparisons"] == []
    other = per_question_file(study.read_point_result(StudyPoint("webfaq", 3000).result_path(tmp_path)))
    other.write_text(other.read_text().replace('"r@5kt": true', '"r@5kt": false', 3))
    with pytest.raises(InputError, match="eval.per_question.jsonl: its outcomes give r@5kt.average"):
        study.write_report(tmp_path, config(bootstrap_samples=30))


def test_the_report_says_where_each_arm_started(tmp_path):
    rng = np.random.default_rng(1)
    hits, _ = hit_sets(PowerLaw(60.0, 300.0, 0.4), rng)
    for arm, objective, init in (("webfaq", "contrastive", "/models/xlm-roberta-base"), ("umr", "distill", None)):
        for size in SIZES:
            write_point(tmp_path, arm, size, hits[size])
            result = study.read_point_result(StudyPoint(arm, size).result_path(tmp_path))
            train = dict(result.metrics["train"], objective=objective, init=init or "/models/xlm-roberta-base")
            study.write_point_result(tmp_path, StudyPoint(arm, size), {**result.metrics, "train": train}, 1.0)
    settings = {**config(bootstrap_samples=20, sources="webfaq,umr").to_dict(), "base_init": "/models/xlm-roberta-base"}
    shared = study.write_report(tmp_path, settings).markdown.read_text()
    assert "| umr | xlm-roberta-base | 5 |" in shared
    assert ("Note: umr is distillation from xlm-roberta-base, the init every arm shares, not UMR's own start "
            "(mContriever)") in shared
    own = study.write_report(tmp_path, {**settings, "base_init": "/models/mcontriever"}).markdown.read_text()
    assert "Note:" not in own


def test_the_report_declares_each_arms_data(tmp_path):
    """The Arms table says what each arm trains on, as the study config declares it: WebFAQ's
    languages and shares, the translated set's direction, UMR's unit of size; the JSON too."""
    from umr_jax.config import load_config
    from umr_jax.scaling.runner import arm_description

    rng = np.random.default_rng(2)
    hits, _ = hit_sets(PowerLaw(60.0, 300.0, 0.4), rng)
    for arm in ("webfaq", "translated", "umr"):
        for size in SIZES:
            write_point(tmp_path, arm, size, hits[size])
    study_config = load_config("webfaq_scaling", ["sources.webfaq.data.languages=xor", "sources.webfaq.data.stratify=True"])
    arms = {name: arm_description(study_config, name) for name in ("webfaq", "translated", "umr")}
    settings = {**config(bootstrap_samples=20, sources="webfaq,translated,umr").to_dict(), "arms": arms}
    report = study.write_report(tmp_path, settings)
    text = report.markdown.read_text()
    assert "| arm | objective | data | languages | shares | direction | size counts |" in text
    assert ("| webfaq | contrastive | WebFAQ | XOR-TyDi's 7 (those the source has) | equal "
            "| monolingual (a question and its answer) | pairs |") in text
    assert ("| translated | contrastive | pairs file | XOR-TyDi's 7 (those the source has) | as in the source "
            "| cross-lingual | pairs |") in text
    assert "| umr | distill | UMR pseudo labels |" in text and "questions, each with its 16 scored candidates |" in text
    assert report.record["arms"]["translated"]["direction"] == "cross-lingual"
    plain = arm_description(load_config("webfaq_scaling", ["sources.translated.data.direction=None"]), "translated")
    assert plain["direction"] == "not declared (data.direction)"
    assert arm_description(load_config("webfaq_scaling"), "webfaq")["languages"] == "every language but English"


def test_seeds_are_fitted_as_their_mean_with_their_outcomes_averaged(tmp_path):
    """Two seeds per size: the second hits 4 more questions per language (10 points) at every
    size. The fitted point is their mean (+5), its question bootstrap averages each question's
    hits over the seeds (it gives back the mean exactly), and the Training table shows the seeds
    and their spread (sd of two values 10 apart: 7.07)."""
    rng = np.random.default_rng(2)
    base, orders = hit_sets(PowerLaw(60.0, 300.0, 0.4), rng)
    for size in SIZES:
        write_point(tmp_path, "arm", size, base[size])
        write_point(tmp_path, "arm", size, four_more(base[size], orders), seed=1)
    report = study.write_report(tmp_path, config(bootstrap_samples=50, sources="arm"))
    record = json.loads(report.json.read_text())
    assert record["bootstrap"]["method"] == "questions"
    means = study.mean_over_seeds(study.collect_results(tmp_path))
    for r in means:
        values = [study.metric_value(x.metrics, "r@5kt.average") for x in r.replicas]
        assert values[1] - values[0] == pytest.approx(10.0) and r.metrics["r@5kt"]["average"] == pytest.approx(np.mean(values))
    np.testing.assert_allclose(report.fits[0].sizes, SIZES)
    np.testing.assert_allclose(report.fits[0].scores, [r.metrics["r@5kt"]["average"] for r in means])
    text = report.markdown.read_text()
    assert "10 finished points (5 sizes of the arms, each the mean of its seeds)" in text
    assert "| arm | ? | 5 | 2 | 7.07 |" in text
    assert (tmp_path / "points" / "arm" / "size-0000001000-seed-1" / "result.json").is_file()
    assert len(report.csv.read_text().splitlines()) == 1 + 10  # every seed's point


def test_the_bootstrap_resamples_seeds_within_each_question_resample(tmp_path):
    """Two levels: for a point of two seeds, each resample's value is the mean of two seeds drawn
    with replacement from that resample's per-seed scores: seed 0's, seed 1's or their mean, in
    about 1/4, 1/4, 1/2 of the resamples; the report says the seeds are resampled."""
    from umr_jax.scaling import resample
    from umr_jax.scaling.flattening import FitSettings
    from umr_jax.scaling.report import question_replicates

    rng = np.random.default_rng(4)
    base, orders = hit_sets(PowerLaw(60.0, 300.0, 0.4), rng)
    for size in SIZES:
        write_point(tmp_path, "arm", size, base[size])
        write_point(tmp_path, "arm", size, four_more(base[size], orders), seed=1)
    settings = FitSettings.from_config(config(bootstrap_samples=400, sources="arm"))
    means = study.mean_over_seeds(study.collect_results(tmp_path))
    replicates, info = question_replicates(means, "r@5kt.average", settings)
    assert info["method"] == "questions" and info["seeds_resampled"] is True
    seeds = [resample.read_outcomes(per_question_file(x), "r@5kt") for r in means for x in r.replicas]
    per_seed = resample.question_bootstrap(seeds, samples=400, seed=settings.bootstrap_seed).replicates
    for j in range(len(SIZES)):
        s0, s1 = per_seed[:, 2 * j], per_seed[:, 2 * j + 1]
        got = replicates["arm"][:, j]
        which = np.select([np.isclose(got, s0), np.isclose(got, s1), np.isclose(got, (s0 + s1) / 2)], [0, 1, 2], -1)
        assert np.all(which >= 0)
        shares = np.bincount(which, minlength=3) / len(which)
        np.testing.assert_allclose(shares, [0.25, 0.25, 0.5], atol=0.08)
        assert got.std() > ((s0 + s1) / 2).std()  # wider than the questions alone
    text = study.write_report(tmp_path, config(bootstrap_samples=50, sources="arm")).markdown.read_text()
    assert "each point's seeds drawn again with replacement within each resample (two levels" in text


def test_the_fits_can_count_training_pairs_seen(tmp_path):
    """scaling.x_axis=pairs_seen: every point's n is the pairs its training saw (the mean over its
    seeds), in the fits, the comparisons and the language panels; refused under fixed compute
    and for points that did not record it."""
    rng = np.random.default_rng(5)
    hits, _ = hit_sets(PowerLaw(60.0, 300.0, 0.4), rng)
    for arm in ("once", "tenfold"):
        for size in SIZES:
            write_point(tmp_path, arm, size, hits[size])
            result = study.read_point_result(StudyPoint(arm, size).result_path(tmp_path))
            seen = size * (10 if arm == "tenfold" else 1)  # ten epochs against one
            study.write_point_result(tmp_path, StudyPoint(arm, size),
                                     {**result.metrics, "train": {**result.metrics["train"], "examples_seen": seen}}, 1.0)
    by_size = study.write_report(tmp_path, config(bootstrap_samples=20, sources="once,tenfold"))
    assert [list(f.sizes) for f in by_size.fits] == [list(SIZES), list(SIZES)]
    report = study.write_report(tmp_path, config(bootstrap_samples=20, sources="once,tenfold", x_axis="pairs_seen"))
    once, tenfold = report.fits
    assert list(once.sizes) == list(SIZES) and list(tenfold.sizes) == [10 * n for n in SIZES]
    # The same scores, ten times the pairs: the fitted curve shifts one decade right.
    assert tenfold.fit.law.c == pytest.approx(once.fit.law.c, rel=1e-3)
    assert tenfold.fit.predict(10 * 5000.0) == pytest.approx(once.fit.predict(5000.0), abs=0.01)
    assert report.record["x_axis"] == "pairs_seen"
    assert [n for n, _ in report.record["per_language"]["sources"]["tenfold"]["ja"]] == [10 * n for n in SIZES]
    assert "n counts training pairs seen" in report.markdown.read_text()
    with pytest.raises(InputError, match="x_axis=pairs_seen with scaling.protocol=steps"):
        study.write_report(tmp_path, config(bootstrap_samples=20, sources="once", x_axis="pairs_seen", protocol="steps",
                                            steps=10))
    with pytest.raises(InputError, match="scaling.x_axis='epochs'; expected one of size, pairs_seen"):
        study.write_report(tmp_path, config(bootstrap_samples=20, sources="once", x_axis="epochs"))
    result = study.read_point_result(StudyPoint("once", 1000).result_path(tmp_path))
    study.write_point_result(tmp_path, StudyPoint("once", 1000), {**result.metrics, "train": {"steps": 3}}, 1.0)
    with pytest.raises(InputError, match="did not record the pairs it saw"):
        study.write_report(tmp_path, config(bootstrap_samples=20, sources="once", x_axis="pairs_seen"))
