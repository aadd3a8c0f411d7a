"""XOR-Retrieve R@kt on hand-made cases, with the official script's semantics."""

from __future__ import annotations

import re

import nltk.tokenize
import pytest

from umr_jax.data.formats import XorPrediction
from umr_jax.evaluation import xor
from umr_jax.errors import MissingDependencyError


def split_on_spaces(text: str) -> list[str]:
    return text.split()


def filler(n: int) -> str:
    return " ".join(["w"] * n)


def fake_sent_tokenize(text: str, language: str = "english") -> list[str]:
    """A stand-in for Punkt (whose data cannot be downloaded here): a sentence ends at '. '."""
    return [s for s in re.split(r"(?<=\.)\s+", text) if s]


@pytest.fixture
def fake_punkt(monkeypatch):
    monkeypatch.setattr(nltk.tokenize, "sent_tokenize", fake_sent_tokenize)


def test_tokens_are_cut_at_exactly_k_thousand():
    # The answer is token number 2000 (inside R@2kt) for q_in, number 2001 for q_out (only in
    # R@5kt), number 5000 for q_5k_in and 5001 for q_5k_out (in neither).
    gold = {"q_in": ["ANS"], "q_out": ["ANS"], "q_5k_in": ["ANS"], "q_5k_out": ["ANS"]}
    predictions = [
        XorPrediction("q_in", "ja", (filler(1000), filler(999) + " ANS")),
        XorPrediction("q_out", "ja", (filler(2000) + " ANS",)),
        XorPrediction("q_5k_in", "ko", (filler(4999), "ANS")),
        XorPrediction("q_5k_out", "ko", (filler(3000), filler(2000), "ANS")),
    ]
    report = xor.xor_retrieve_r_at_kt(gold, predictions, split_on_spaces)
    assert report.r_at_kt[2] == {"ja": 50.0, "ko": 0.0, "average": 25.0}
    assert report.r_at_kt[5] == {"ja": 100.0, "ko": 50.0, "average": 75.0}
    assert report.counted == {"ja": 2, "ko": 2}


def test_passages_after_the_budget_are_not_tokenized():
    seen = []

    def spy(text):
        seen.append(text)
        return text.split()

    tokens = xor.first_tokens([filler(3000), filler(2000), "never read"], 5000, spy)
    assert len(tokens) == 5000 and seen == [filler(3000), filler(2000)]
    assert xor.first_tokens(["a b", "c"], 5000, spy) == ["a", "b", "c"]


def test_answer_must_survive_tokenization_and_single_space_join():
    # word_tokenize splits "can't" into "ca n't", so the raw substring is gone; "New York"
    # keeps its single space and is found.
    tokenize = xor.word_tokenizer("nltk-line")
    gold = {"q1": ["can't"], "q2": ["New York"]}
    predictions = [XorPrediction("q1", "fi", ("I can't   go",)), XorPrediction("q2", "fi", ("to  New\tYork now",))]
    report = xor.xor_retrieve_r_at_kt(gold, predictions, tokenize)
    assert report.r_at_kt[2] == {"fi": 50.0, "average": 50.0}


def test_yes_no_answers_are_dropped_and_yes_no_only_questions_skipped():
    gold = {
        "only_yes_no": ["yes", "no"],
        "no_and_span": ["no", "Paris"],  # counted with "Paris" only
        "capital_yes": ["Yes"],  # case-sensitive: "Yes" is a span answer
    }
    predictions = [
        XorPrediction("only_yes_no", "ar", ("yes no",)),
        XorPrediction("no_and_span", "ar", ("no no no",)),
        XorPrediction("capital_yes", "ar", ("Yes indeed",)),
    ]
    report = xor.xor_retrieve_r_at_kt(gold, predictions, split_on_spaces)
    assert report.counted == {"ar": 2}
    assert report.yes_no_only == 1
    assert report.r_at_kt[2]["ar"] == 50.0


def test_matching_is_case_sensitive():
    gold = {"q1": ["Paris"], "q2": ["Paris"]}
    predictions = [XorPrediction("q1", "ru", ("in paris",)), XorPrediction("q2", "ru", ("in Paris",))]
    assert xor.xor_retrieve_r_at_kt(gold, predictions, split_on_spaces).r_at_kt[5]["ru"] == 50.0


def test_gold_questions_without_prediction_are_not_counted_but_reported():
    gold = {"q1": ["A"], "q2": ["B"], "q3": ["C"]}
    report = xor.xor_retrieve_r_at_kt(gold, [XorPrediction("q1", "te", ("A",))], split_on_spaces)
    assert report.counted == {"te": 1}
    assert report.r_at_kt[2] == {"te": 100.0, "average": 100.0}
    assert report.missing_predictions == 2


def test_predictions_for_ids_not_in_gold_are_ignored_with_their_language():
    gold = {"q1": ["A"]}
    predictions = [XorPrediction("zz", "bn", ("A",)), XorPrediction("q1", "te", ("x",))]
    report = xor.xor_retrieve_r_at_kt(gold, predictions, split_on_spaces)
    assert report.r_at_kt[2] == {"te": 0.0, "average": 0.0}
    assert report.predictions_not_in_gold == 1 and report.counted == {"te": 1}


def test_macro_average_is_statistics_mean_over_languages_in_prediction_order():
    # ar 0/1, bn 1/1, fi 1/3: the official statistics.mean gives 44.44444444444444, where a
    # plain sum()/len() would give 44.444444444444436.
    gold = {f"q{i}": ["A"] for i in range(5)}
    predictions = [
        XorPrediction("q0", "ar", ("x",)),
        XorPrediction("q1", "bn", ("A",)),
        XorPrediction("q2", "fi", ("A",)),
        XorPrediction("q3", "fi", ("x",)),
        XorPrediction("q4", "fi", ("x",)),
    ]
    table = xor.xor_retrieve_r_at_kt(gold, predictions, split_on_spaces).r_at_kt[2]
    assert list(table) == ["ar", "bn", "fi", "average"]
    assert table["fi"] == 33.33333333333333
    assert table["average"] == 44.44444444444444


def test_a_question_predicted_twice_counts_twice_like_the_official_script():
    gold = {"q1": ["A"], "q2": ["A"]}
    predictions = [XorPrediction("q1", "ko", ("A",)), XorPrediction("q1", "ko", ("A",)), XorPrediction("q2", "ko", ("x",))]
    report = xor.xor_retrieve_r_at_kt(gold, predictions, split_on_spaces)
    assert report.counted == {"ko": 3} and report.r_at_kt[2]["ko"] == 66.66666666666666  # (2 / 3) * 100


def test_nothing_counted_gives_no_average():
    report = xor.xor_retrieve_r_at_kt({"q1": ["no"]}, [XorPrediction("q1", "ja", ("x",))], split_on_spaces)
    assert report.r_at_kt[2] == {"average": None} and report.counted == {}


def test_official_tokenizer_splits_sentences_before_words(fake_punkt):
    # With sentence splitting the period of "York." is a token of its own, so "York." is not
    # found and "York ." is; the budget counts that extra token too.
    official = xor.word_tokenizer("nltk")
    line = xor.word_tokenizer("nltk-line")
    assert official("To New York. Now here.") == ["To", "New", "York", ".", "Now", "here", "."]
    assert line("To New York. Now here.") == ["To", "New", "York.", "Now", "here", "."]
    gold = {"q1": ["York ."], "q2": ["END"]}
    # q2: 1998 filler tokens, then "a." and "END": 2000 tokens with nltk-line, 2001 with nltk.
    predictions = [XorPrediction("q1", "ja", ("To New York. Now here.",)), XorPrediction("q2", "ja", (filler(1998) + " a. END",))]
    assert xor.xor_retrieve_r_at_kt(gold, predictions, official).r_at_kt[2]["ja"] == 50.0
    assert xor.xor_retrieve_r_at_kt(gold, predictions, line).r_at_kt[2]["ja"] == 50.0
    assert xor.xor_retrieve_r_at_kt({"q2": ["END"]}, predictions[1:], official).r_at_kt[2]["ja"] == 0.0
    assert xor.xor_retrieve_r_at_kt({"q2": ["END"]}, predictions[1:], line).r_at_kt[2]["ja"] == 100.0


def test_missing_punkt_says_how_to_get_it(monkeypatch):
    def no_punkt(text, language="english"):
        raise LookupError("Resource punkt_tab not found.")

    monkeypatch.setattr(nltk.tokenize, "sent_tokenize", no_punkt)
    with pytest.raises(MissingDependencyError) as err:
        xor.word_tokenizer("nltk")
    message = str(err.value)
    assert f"python -m nltk.downloader {xor.punkt_resource_name()}" in message
    assert "use the tokenizer nltk-line" in message and "--" not in message.replace(" -m ", "")  # loop configs have no flag
    assert [(h.flag, h.text) for h in err.value.hints] == [("--tokenizer", "--tokenizer nltk-line needs no data")]
    # nltk-line needs no Punkt data.
    assert xor.word_tokenizer("nltk-line")("a b.") == ["a", "b", "."]


def test_installed_nltk_needs_punkt_tab():
    assert xor.punkt_resource_name() == "punkt_tab"


def test_per_question_outcomes_recompute_the_report():
    gold = {"q1": ["A"], "q2": ["B"], "q3": ["no"], "q4": ["C"]}
    predictions = [
        XorPrediction("q1", "ja", (filler(2500) + " A",)),   # A at token 2501: a hit at 5kt only
        XorPrediction("q2", "ja", ("B",)),
        XorPrediction("q3", "ja", ("no",)),                  # yes/no only: not counted, no outcome
        XorPrediction("q4", "ko", ("x",)),
        XorPrediction("q4", "ko", ("C",)),                   # predicted twice: two outcomes
    ]
    report = xor.xor_retrieve_r_at_kt(gold, predictions, split_on_spaces)
    assert [o.to_json() for o in report.per_question] == [
        {"id": "q1", "lang": "ja", "r@2kt": False, "r@5kt": True},
        {"id": "q2", "lang": "ja", "r@2kt": True, "r@5kt": True},
        {"id": "q4", "lang": "ko", "r@2kt": False, "r@5kt": False},
        {"id": "q4", "lang": "ko", "r@2kt": True, "r@5kt": True},
    ]
    for k in (2, 5):
        for lang in ("ja", "ko"):
            mine = [o.hits[k] for o in report.per_question if o.lang == lang]
            assert report.r_at_kt[k][lang] == (sum(mine) / len(mine)) * 100
    assert "per_question" not in report.to_json()


def test_the_evaluate_stage_writes_per_question_outcomes_beside_its_report(tmp_path):
    """The stage every scaling point and loop iteration runs: eval.json and, beside it,
    eval.per_question.jsonl, whose lines give back eval.json's R@kt."""
    import json

    from umr_jax.data import formats
    from umr_jax.runtime import Runtime
    from umr_jax.stages import evaluate

    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": f"q{i}", "question": "?", "answers": [f"A{i}"], "lang": lang}) + "\n"
                            for i, lang in enumerate(["ja", "ja", "ko", "ko", "ko"])))
    runs = [formats.RetrievalResult(f"q{i}", "?", lang, (formats.Context(f"p{i}", "t", text, 1.0),))
            for i, (lang, text) in enumerate([("ja", "A0"), ("ja", "no"), ("ko", "A2"), ("ko", "A3 x"), ("ko", "z")])]
    formats.write_retrieval(tmp_path / "run.jsonl", runs)
    out = tmp_path / "eval" / "eval.json"
    report = evaluate.xor_retrieve(tmp_path / "run.jsonl", gold, out, Runtime.from_config(None), tokenizer="nltk-line")
    assert evaluate.per_question_path(out) == tmp_path / "eval" / "eval.per_question.jsonl"
    assert evaluate.per_question_path("gs://b/p/eval.json") == "gs://b/p/eval.per_question.jsonl"
    lines = [json.loads(line) for line in (tmp_path / "eval" / "eval.per_question.jsonl").read_text().splitlines()]
    assert [(r["id"], r["lang"], r["r@2kt"]) for r in lines] == [
        ("q0", "ja", True), ("q1", "ja", False), ("q2", "ko", True), ("q3", "ko", True), ("q4", "ko", False)]
    assert report["r@2kt"] == pytest.approx({"ja": 50.0, "ko": 200 / 3, "average": (50.0 + 200 / 3) / 2})
    assert json.loads(out.read_text())["r@5kt"] == report["r@5kt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["eval.json", "eval.per_question.jsonl"]
