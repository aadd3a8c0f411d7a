"""XOR-Full F1 / EM / BLEU on hand-made cases, with the official script's semantics."""

from __future__ import annotations

import pytest

from umr_jax.evaluation import xor
from umr_jax.evaluation.readers import XorFullGold


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("The  Beatles!", "the beatles"),  # articles are kept, as in the official script
        ("U.S.A.", "usa"),
        ("1999年", "1999"),
        ("25歳", "25"),
        ("三人", "三"),
        ("1999년", "1999"),
        ("東京、大阪。", "東京、大阪。"),  # only ASCII punctuation is removed
        (" a-b\t(c) ", "ab c"),
    ],
)
def test_normalize_answer(raw, normalized):
    assert xor.normalize_answer(raw) == normalized


def test_exact_match_after_normalization():
    assert xor.answer_exact_match("1999", "1999年")
    assert xor.answer_exact_match("Pierre Curie.", "pierre curie")
    assert not xor.answer_exact_match("the Beatles", "Beatles")


def test_token_f1():
    # [the, cat, sat] vs [a, cat, sat, down]: 2 shared, P = 2/3, R = 2/4, F1 = 4/7.
    assert xor.answer_f1("The cat sat.", "a cat sat down") == pytest.approx(4 / 7, abs=1e-15)
    assert xor.answer_f1("dog", "cat") == 0
    # Counter removal makes "25" and "25歳" the same token.
    assert xor.answer_f1("25歳 old", "25") == pytest.approx(2 / 3, abs=1e-15)


def test_bleu_is_nltk_character_bleu_of_the_raw_prediction():
    bleu = xor.nltk_sentence_bleu()
    assert bleu(["Helsinki"], "Helsinki") == 1.0
    assert bleu(["Helsinki"], "xyz") < 1e-70
    # A character 4-gram model: "Helsinki!" shares 5 of its 6 4-grams with the reference.
    assert 0.5 < bleu(["Helsinki"], "Helsinki!") < 1.0


def test_mecab_wakati_is_mecab_raw_output():
    wakati = xor.mecab_wakati()
    assert wakati("東京都に住む") == "東京 都 に 住む \n"
    assert wakati("") == "\n"


def char_wakati(text: str) -> str:
    """A stand-in segmenter: every character a token, MeCab's trailing ' \\n' included."""
    return "".join(f"{ch} " for ch in text if not ch.isspace()) + "\n"


def test_scores_per_language_average_over_seven_and_missing_predictions_score_zero():
    gold = [
        XorFullGold("1", "fi", ["Helsinki"]),
        XorFullGold("2", "fi", ["Turku"]),  # no prediction: counts, scores 0
        XorFullGold("3", "ko", ["1999년"]),
    ]
    predictions = {"1": "helsinki", "3": "1999"}
    report = xor.xor_full_scores(gold, predictions, wakati=char_wakati, sentence_bleu=lambda refs, hyp: 0.25)
    assert report.scores["em"] == {"fi": 50.0, "ko": 100.0, "average": (0.5 + 1.0) / 7 * 100}
    assert report.scores["f1"] == {"fi": 50.0, "ko": 100.0, "average": (0.5 + 1.0) / 7 * 100}
    assert report.scores["bleu"] == {"fi": 12.5, "ko": 25.0, "average": (0.125 + 0.25) / 7 * 100}
    assert report.counted == {"fi": 2, "ko": 1}
    assert report.missing_predictions == 1


def test_japanese_is_segmented_and_bleu_gets_segmented_references_with_the_raw_prediction():
    calls = []

    def spy_bleu(references, hypothesis):
        calls.append((references, hypothesis))
        return 0.0

    gold = [XorFullGold("7", "ja", ["東京都"])]
    # "・" becomes a space and "、" a comma before segmentation; BLEU sees the raw prediction.
    report = xor.xor_full_scores(gold, {"7": "東・京、都"}, wakati=char_wakati, sentence_bleu=spy_bleu)
    assert calls == [(["東 京 都 \n"], "東・京、都")]
    # Segmented: [東, 京, ",", 都] -> normalized "東 京 都" equals the gold's tokens.
    assert report.scores["em"]["ja"] == 100.0 and report.scores["f1"]["ja"] == 100.0


def test_best_gold_answer_counts():
    gold = [XorFullGold("1", "ru", ["Москва", "город Москва"])]
    report = xor.xor_full_scores(gold, {"1": "город Москва"}, sentence_bleu=lambda refs, hyp: 0.0)
    assert report.scores["em"]["ru"] == 100.0


def test_language_outside_the_official_table_is_refused():
    with pytest.raises(ValueError, match="'xx'"):
        xor.xor_full_scores([XorFullGold("1", "xx", ["a"])], {}, sentence_bleu=lambda refs, hyp: 0.0)
