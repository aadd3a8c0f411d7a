"""`umr-jax scaling` end to end: real trainers and XOR-Retrieve evaluation on every point, the
report with the starting model as reference, resume without recomputing, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.training.conftest import tiny_retriever  # noqa: F401  (a fixture)
from umr_jax import cli
from umr_jax.config import load_config
from umr_jax.data import formats
from umr_jax.demo import demo_paths
from umr_jax.errors import InputError
from umr_jax.scaling import runner
from umr_jax.data.subsets import nested_subset
from umr_jax.training.distill import ScoredQuestion

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "demo_scaling.py")


@pytest.fixture(scope="module")
def study_data(tmp_path_factory):
    """A small slice of the demo corpus: 160 passages, 12 dev questions with gold answers,
    40 translated pairs and pseudo labels (4 scored candidates) for 40 train questions."""
    p = demo_paths()
    folder = tmp_path_factory.mktemp("study_data")
    passages = list(formats.read_dpr_passages(p["passages"]))[:160]
    formats.write_dpr_passages(folder / "passages.tsv", passages)
    formats.write_questions(folder / "dev.jsonl", list(formats.read_questions(p["dev_questions"]))[:12])
    formats.write_pairs(folder / "pairs.jsonl", list(formats.read_pairs(p["translated_pairs"]))[:40])
    rng = np.random.default_rng(0)
    labels = []
    for q in list(formats.read_questions(p["train_questions"]))[:40]:
        picks = rng.choice(len(passages), 4, replace=False)
        ctxs = tuple(formats.Context(passages[i].id, passages[i].title, passages[i].text, float(-rng.uniform(1, 5)))
                     for i in picks)
        labels.append(formats.RetrievalResult(q.id, q.question, q.lang, ctxs, scorer="test"))
    formats.write_retrieval(folder / "labels.jsonl", labels)
    return folder


def _overrides(data: Path, retriever: Path) -> list[str]:
    return [
        f"model.init={retriever}", "model.query_max_length=16", "model.passage_max_length=32",
        "scaling.sources=translated,umr", "scaling.min_size=10", "scaling.bootstrap_samples=50",
        "train.batch_size=8", "train.epochs=1",
        f"sources.translated.data.path={data / 'pairs.jsonl'}",
        f"sources.umr.data.pseudo_labels={data / 'labels.jsonl'}", "sources.umr.data.top_k=4",
        "sources.umr.train.questions_per_batch=8",
        f"evaluation.passages={data / 'passages.tsv'}", f"evaluation.questions={data / 'dev.jsonl'}",
        f"evaluation.gold={data / 'dev.jsonl'}", "evaluation.top_k=20", "evaluation.batch_size=64",
    ]


def test_source_configs_lay_each_source_over_the_base(tmp_path):
    config = load_config(CONFIG, ["model.init=/models/x", "scaling.subset_seed=7"])
    umr = runner.source_config(config, "umr")
    assert umr.objective == "distill" and umr.data.candidates_per_question == 4 and umr.data.subset_seed == 7
    assert umr.train.questions_per_batch == 16 and umr.train.epochs == 1 and umr.train.seed == config.train.seed
    webfaq = runner.source_config(config, "webfaq")
    assert webfaq.objective == "contrastive" and webfaq.data.source == "webfaq" and "sources" not in webfaq
    # An arm may start from its own model (UMR from mContriever); None or "" is the shared one.
    paths = ["model.init=/models/x", "sources.umr.data.pseudo_labels=p.jsonl", "sources.webfaq.data.path=webfaq"]
    own = load_config("webfaq_scaling", [*paths, "sources.umr.model.init=/models/mcontriever"])
    assert runner.source_config(own, "umr").model.init == "/models/mcontriever"
    assert runner.source_config(own, "webfaq").model.init == "/models/x"
    assert runner.source_config(load_config("webfaq_scaling", paths), "umr").model.init == "/models/x"
    assert runner.source_names(config) == ["webfaq", "translated", "umr"]


@pytest.mark.parametrize("overrides, message", [
    (["scaling.sources=webfaq,nope"], "which `sources` does not define"),
    (["scaling.sources=webfaq,webfaq"], "twice"),
    (["sources.translated.data.path="], "sources.translated.data.path is not set"),
    (["model.init="], "model.init is not set"),
    (["sources.umr.objective=regress"], "sources.umr.objective must be one of"),
])
def test_bad_study_configs_name_the_key(overrides, message):
    config = load_config(CONFIG, ["model.init=/models/x"] + overrides)
    with pytest.raises(InputError, match=message):
        for name in runner.source_names(config):
            runner.source_config(config, name)


def test_protocols_set_each_points_training_length():
    config = load_config(CONFIG, ["model.init=/models/x", "scaling.protocol=steps", "scaling.steps=40",
                                  "train.early_stopping_patience=3"])
    for name in runner.source_names(config):
        source = runner.source_config(config, name)
        assert source.train.steps == 40 and source.train.early_stopping_patience == 0  # the same budget for all
        assert [runner.planned_steps(source, n) for n in (100, 300, 10_000)] == [40, 40, 40]
    epochs = runner.source_config(load_config(CONFIG, ["model.init=/models/x"]), "translated")
    assert [runner.planned_steps(epochs, n) for n in (100, 300)] == [9, 27]  # 3 epochs of whole batches of 32
    assert runner.planned_steps(epochs, 31) == 0


@pytest.mark.parametrize("overrides, message", [
    (["scaling.protocol=steps"], r"scaling.protocol=steps trains every point for scaling.steps steps, which is 0: zero "
                                 r"steps; set scaling.steps=N"),
    (["scaling.protocol=minutes"], r"scaling.protocol='minutes'; expected one of epochs, steps"),
    (["train.steps=100"], r"sources.webfaq: train.steps=100 fixes the steps, but scaling.protocol=epochs"),
])
def test_protocol_settings_that_cannot_train_are_refused(overrides, message):
    config = load_config(CONFIG, ["model.init=/models/x", *overrides])
    with pytest.raises(InputError, match=message):
        runner.source_config(config, "webfaq")


def test_a_point_that_cannot_fill_a_batch_is_refused():
    source = runner.source_config(load_config(CONFIG, ["model.init=/models/x"]), "umr")
    runner.check_trainable(source, "umr", [16, 100])
    with pytest.raises(InputError, match=r"^sources.umr: the point of 10 examples cannot fill one batch of 16 "
                                         r"\(train.questions_per_batch\), so it trains for zero steps"):
        runner.check_trainable(source, "umr", [10, 100])


def test_question_subsets_are_nested():
    questions = [ScoredQuestion(str(i), f"q{i}", "ja" if i % 3 else "ko", ("t",), ("x",), np.zeros(1, np.float32))
                 for i in range(200)]
    ids = {n: {q.id for q in nested_subset(questions, n, seed=3)} for n in (10, 30, 100, 200)}
    assert [len(v) for v in ids.values()] == [10, 30, 100, 200]
    assert ids[10] < ids[30] < ids[100] < ids[200]
    assert {q.id for q in nested_subset(questions, 30, seed=4)} != ids[30]


@pytest.mark.slow
def test_scaling_command_trains_evaluates_fits_and_resumes(tmp_path, study_data, tiny_retriever, capsys):  # noqa: F811
    study = tmp_path / "study"
    args = ["scaling", "--config", CONFIG, "--output", str(study)] + _overrides(study_data, tiny_retriever)
    # The translated source is trained with cosine similarity: its towers must say so.
    args.append("sources.translated.model.similarity=cosine")
    args.append("scaling.keep_embeddings=True")  # read below; deleting them is test_embeddings_are_deleted_...

    assert cli.main(args + ["--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "6 points (0 finished)" in plan and "translated   n=    40" in plan and plan.count("to train") == 6

    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "| translated | 3 (10-40) |" in out and "| umr | 3 (10-40) |" in out
    results = {(r.source, r.size): r for r in __import__("umr_jax.scaling.study", fromlist=["x"]).collect_results(study)}
    assert sorted(results) == [("translated", 10), ("translated", 30), ("translated", 40),
                               ("umr", 10), ("umr", 30), ("umr", 40)]
    for (source, size), result in results.items():
        train = result.metrics["train"]
        assert train["examples"] == size and train["objective"] == ("contrastive" if source == "translated" else "distill")
        assert train["steps"] == size // 8  # one epoch of whole batches of 8
        assert (train["examples_seen"], train["total_steps"], train["reason"]) == (size // 8 * 8, size // 8, "done")
        assert 0.0 <= result.metrics["r@5kt"]["average"] <= 100.0
        assert result.metrics["r@2kt"]["average"] <= result.metrics["r@5kt"]["average"]
    # Cosine-trained towers carry a Normalize module and are encoded to unit length.
    encoder = study / "points" / "translated" / "size-0000000040" / "train" / "final" / "encoder"
    assert "models.Normalize" in (encoder / "modules.json").read_text()
    store = study / "points" / "translated" / "size-0000000040" / "eval" / "embeddings"
    vectors = np.concatenate([np.load(f) for f in sorted(store.glob("*.npy"))])
    assert vectors.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
    # Distilled (dot-product) towers do not.
    umr_final = study / "points" / "umr" / "size-0000000040" / "train" / "final"
    assert all("Normalize" not in (d / "modules.json").read_text() for d in umr_final.iterdir())

    report = json.loads((study / "report" / "scaling.json").read_text())
    baseline = json.loads((study / "baseline" / "eval.json").read_text())["r@5kt"]["average"]
    assert report["baseline"] == pytest.approx(baseline)
    assert {s["source"] for s in report["sources"]} == {"translated", "umr"}
    # Every point's evaluation recorded its questions' outcomes: the intervals are question-level.
    assert (study / "points" / "translated" / "size-0000000010" / "eval" / "eval.per_question.jsonl").is_file()
    # (whether a comparison is paired also needs both arms fitted; three tiny points may not fit)
    assert report["bootstrap"]["method"] == "questions"
    assert (study / "report" / "scaling.png").stat().st_size > 10_000 and (study / "report" / "scaling.svg").is_file()

    # Run again: every point (and the baseline) is finished, nothing is trained or evaluated.
    stamps = {p: p.stat().st_mtime_ns for p in study.glob("points/*/*/result.json")}
    stages: list[str] = []
    again = runner.run_scaling(load_config(CONFIG, args[5:]), study, on_stage=stages.append)
    assert stages == [] and len(again["points"]) == 6
    assert {p: p.stat().st_mtime_ns for p in study.glob("points/*/*/result.json")} == stamps

    assert cli.main(args + ["--report-only"]) == 0
    assert "6 finished points." in capsys.readouterr().out


def test_dry_run_prints_each_points_cost(tmp_path, study_data, tiny_retriever, capsys):  # noqa: F811
    args = ["scaling", "--config", CONFIG, "--output", str(tmp_path / "study")] + _overrides(study_data, tiny_retriever)
    assert cli.main(args + ["--dry-run", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    plan = {(p["source"], p["size"]): p for p in printed["plan"]}
    # What each arm trains on, as declared: the demo's translated pairs are cross-lingual.
    assert printed["arms"]["translated"] == {"objective": "contrastive", "data": "pairs file", "languages": "every language",
                                             "shares": "as in the source", "direction": "cross-lingual", "unit": "pairs",
                                             "epochs": 1}
    assert printed["arms"]["umr"]["unit"] == "questions, each with its 4 scored candidates"
    assert sorted(plan) == [("translated", 10), ("translated", 30), ("translated", 40),
                            ("umr", 10), ("umr", 30), ("umr", 40)]
    # 40 pairs at batch 8, one epoch: 5 steps, 40 pairs seen, one passage each; 160 passages of
    # width 32 at float16; no compile file, no time.
    assert plan[("translated", 40)] == {"source": "translated", "size": 40, "seed": 0, "objective": "contrastive", "steps": 5,
                                        "pairs_seen": 40, "train_passages": 40, "eval_passages": 160,
                                        "embedding_bytes": 160 * 32 * 2, "seconds": None, "finished": False}
    assert plan[("umr", 30)]["steps"] == 3 and plan[("umr", 30)]["train_passages"] == 3 * 8 * 4  # 4 candidates each

    compiled = tmp_path / "compile.json"
    compiled.write_text(json.dumps({"topology": "v5e-8", "chips": 8, "stages": [
        {"stage": "contrastive", "estimate": {"step_s": 0.5}}, {"stage": "distill", "estimate": {"step_s": 2.0}},
        {"stage": "encode", "estimate": {"step_s": 0.1}, "items_per_s": 80.0}]}))
    assert cli.main(args + [f"scaling.step_time_from={compiled}", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert ("  translated   contrastive on pairs file: every language, shares as in the source, cross-lingual; "
            "size in pairs") in text.splitlines()
    row = next(line for line in text.splitlines() if "translated" in line and "n=    40" in line)
    assert row.split()[3:9] == ["5", "40", "40", "160", "10.2", "KB"] and "0.1 min" in row  # 5 x 0.5 s + 160 / 80 s
    assert "to train" in row and "n/a" not in text
    assert cli.main(args + [f"scaling.step_time_from={tmp_path / 'missing.json'}", "--dry-run"]) == 1
    assert "scaling.step_time_from: cannot read" in capsys.readouterr().err


def test_embeddings_are_deleted_once_the_points_result_is_written(tmp_path):
    from umr_jax.scaling import study

    config = load_config(CONFIG, ["model.init=/models/x"])
    point_runner = runner.PointRunner.__new__(runner.PointRunner)  # only its config is needed here
    point_runner.config = config

    def train_and_evaluate(source, size, point_dir, seed):
        for name in ("embeddings", "index"):
            (point_dir / "eval" / name).mkdir(parents=True)
            (point_dir / "eval" / name / "shard.npy").write_bytes(b"x")
        (point_dir / "eval" / "eval.json").write_text("{}")
        assert not (point_dir / "result.json").exists()
        return {"r@5kt": {"average": 1.0}}

    points = [study.StudyPoint("webfaq", 10)]
    study.run_study(tmp_path, points, train_and_evaluate, after_result=point_runner.discard_embeddings)
    eval_dir = points[0].directory(tmp_path) / "eval"
    assert sorted(p.name for p in eval_dir.iterdir()) == ["eval.json"]
    assert points[0].is_finished(tmp_path)
    with config.unlocked():
        config.scaling.keep_embeddings = True
    kept = [study.StudyPoint("webfaq", 20)]
    study.run_study(tmp_path, kept, train_and_evaluate, after_result=point_runner.discard_embeddings)
    assert sorted(p.name for p in (kept[0].directory(tmp_path) / "eval").iterdir()) == ["embeddings", "eval.json", "index"]


def test_a_subset_larger_than_the_source_is_refused(tmp_path, study_data, tiny_retriever, capsys):  # noqa: F811
    rc = cli.main(["train", "--config", "translated_pairs", "--output", str(tmp_path / "run"), f"model.init={tiny_retriever}",
                   f"data.path={study_data / 'pairs.jsonl'}", "data.subset_size=41"])
    err = capsys.readouterr().err
    assert rc == 1 and "data.subset_size=41 exceeds the 40 pairs of the source" in err and "Traceback" not in err


def test_a_study_point_too_small_for_a_batch_is_refused_before_training(tmp_path, study_data, tiny_retriever, capsys):  # noqa: F811
    args = ["scaling", "--config", CONFIG, "--output", str(tmp_path / "study"), *_overrides(study_data, tiny_retriever)]
    assert cli.main([*args, "scaling.min_size=5", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("sources.translated: the point of 5 examples cannot fill one batch of 8 (train.batch_size), "
                                "so it trains for zero steps; raise scaling.min_size or lower the batch"), err
    assert "Traceback" not in err and not (tmp_path / "study").exists()
    # An x axis the fits cannot use is refused before anything trains, not at the report.
    for bad, says in (("scaling.x_axis=epochs", "scaling.x_axis='epochs'; expected one of size, pairs_seen"),
                      ("scaling.protocol=steps scaling.steps=4 scaling.x_axis=pairs_seen",
                       "scaling.x_axis=pairs_seen with scaling.protocol=steps")):
        assert cli.main([*args, *bad.split()]) == 1
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "study").exists(), err
    # A dev split is held out of the source: the study's sizes count what is left.
    config = load_config(CONFIG, [*_overrides(study_data, tiny_retriever), "data.dev_split=10"])
    assert runner.source_size(runner.source_config(config, "translated")) == 30
    assert runner.source_size(runner.source_config(config, "umr")) == 30


def test_report_only_without_points_fails_clearly(tmp_path, capsys):
    code = cli.main(["scaling", "--config", CONFIG, "--output", str(tmp_path / "empty"), "--report-only"])
    assert code == 1 and "no finished points" in capsys.readouterr().err
