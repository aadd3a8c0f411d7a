"""XOR-TyDi QA metrics with the official evaluation scripts' semantics.

XOR-Retrieve R@kt (`evals/eval_xor_retrieve.py`): for each predicted question whose id is in
the gold file, answers equal to "yes" or "no" are dropped and the question is skipped when
none remain. The texts of the predicted passages, in rank order, are word-tokenized with
NLTK's `word_tokenize` and concatenated until at least k x 1000 tokens are collected; the
first k x 1000 tokens are joined with single spaces, and the question is a hit when any
remaining answer is a case-sensitive substring of that string. Per language: hits / counted
x 100; the reported figure is the mean over the languages. Gold questions without a
prediction are not counted (the report says how many there were).

XOR-Full F1 / EM / BLEU (`evals/eval_xor_full.py`): answers are lower-cased, ASCII punctuation
is removed, the counter characters 年 歳 人 년 are removed and whitespace is collapsed; there is
no article removal. Japanese gold answers and predictions are MeCab-tokenized (wakati) first.
BLEU is NLTK's sentence BLEU-4 over the raw strings' characters. Every gold question counts,
with a score of 0 when it has no prediction; the average is the sum over languages divided by 7.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import string
import warnings
from collections import Counter
from typing import Callable, Iterable, Mapping, Sequence

from umr_jax.data.formats import XorPrediction
from umr_jax.errors import MissingDependencyError, with_hint
from umr_jax.evaluation.readers import XorFullGold

R_AT_KT_KS = (2, 5)
TOKENIZERS = ("nltk", "nltk-line")
YES_NO_ANSWERS = ("yes", "no")

# The official script's language table, in its order; the XOR-Full average sums per-language
# scores in this order and divides by XOR_FULL_LANGUAGE_COUNT whatever languages are present.
XOR_FULL_LANGUAGES = ("te", "sw", "th", "fi", "id", "ja", "ru", "ar", "en", "bn", "ko")
XOR_FULL_LANGUAGE_COUNT = 7
COUNTER_CHARACTERS = ("年", "歳", "人", "년")

WordTokenizer = Callable[[str], list[str]]


# --------------------------------------------------------------------------------------------
# XOR-Retrieve


def punkt_resource_name() -> str:
    """The NLTK data package that the installed NLTK's `word_tokenize` needs: `punkt_tab`
    from NLTK 3.8.2 on, `punkt` before."""
    from nltk.tokenize import punkt

    return "punkt_tab" if hasattr(punkt, "PunktTokenizer") else "punkt"


def word_tokenizer(name: str) -> WordTokenizer:
    """The word tokenizer R@kt uses.

    `nltk` is the official one, NLTK's `word_tokenize` (Punkt sentence splitting, then the
    Treebank word tokenizer); it needs NLTK's Punkt data and raises `MissingDependencyError`
    with the download command when the data is missing. `nltk-line` is
    `word_tokenize(text, preserve_line=True)`: the same word tokenizer without sentence
    splitting, a close approximation that needs no data. It differs mainly where a sentence
    ends inside a passage: the period stays on the word (`"end."` is one token, not `"end"`,
    `"."`), so passages yield slightly fewer tokens, slightly more text fits in k x 1000
    tokens, and scores can come out slightly higher than the official ones."""
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer '{name}'; expected one of {', '.join(TOKENIZERS)}")
    try:
        import nltk.tokenize as nltk_tokenize
    except ImportError:
        raise MissingDependencyError("R@kt needs NLTK's word tokenizer: pip install nltk") from None
    if name == "nltk-line":
        return functools.partial(nltk_tokenize.word_tokenize, preserve_line=True)
    try:
        nltk_tokenize.sent_tokenize("Punkt is here.")
    except LookupError:
        resource = punkt_resource_name()
        raise with_hint(MissingDependencyError(
            f"NLTK's Punkt sentence splitter data ('{resource}') is not installed, and the official R@kt "
            f"tokenizer needs it. Get it with:  python -m nltk.downloader {resource}  "
            f"(or use the tokenizer nltk-line, a close approximation that needs no data)"
        ), "--tokenizer", "--tokenizer nltk-line needs no data") from None
    return nltk_tokenize.word_tokenize


# Passages whose tokens one R@kt computation keeps (about 100 words each: some 100 MB at most).
TOKEN_CACHE_PASSAGES = 1 << 16


def first_tokens(passage_texts: Iterable[str], token_budget: int, tokenize: WordTokenizer) -> list[str]:
    """The first `token_budget` tokens of the passages' tokens concatenated in rank order;
    passages after the one that reaches the budget are not tokenized."""
    tokens: list[str] = []
    for text in passage_texts:
        tokens.extend(tokenize(text))
        if len(tokens) >= token_budget:
            break
    return tokens[:token_budget]


@dataclasses.dataclass(frozen=True)
class QuestionOutcome:
    """One counted prediction of R@kt: the question's id and language, and k -> whether an
    answer is in the first k x 1000 tokens of its passages."""

    id: str
    lang: str
    hits: Mapping[int, bool]

    def to_json(self) -> dict:
        """`{"id", "lang", "r@2kt": bool, "r@5kt": bool}`: one line of a per-question file."""
        return {"id": self.id, "lang": self.lang, **{f"r@{k}kt": bool(hit) for k, hit in self.hits.items()}}


@dataclasses.dataclass
class XorRetrieveReport:
    """R@kt per language and macro average.

    r_at_kt: k -> {lang: hits / counted x 100, ..., "average": mean over languages}, languages
      in order of first appearance in the predictions; "average" is None when nothing counted.
    counted: lang -> questions counted (in gold, predicted, with a non-yes/no answer).
    missing_predictions: gold questions with no prediction.
    predictions_not_in_gold: predicted questions whose id is not in the gold file (ignored).
    yes_no_only: predicted gold questions skipped because all their answers are yes/no.
    duplicate_predictions: question ids predicted more than once (each prediction is counted,
      as in the official script).
    per_question: every counted prediction's outcome, in prediction order (a question predicted
      twice appears twice); hits / counted per language over these is exactly `r_at_kt`. Not part
      of `to_json`: the stage writes it as its own JSON-lines file.
    """

    r_at_kt: dict[int, dict[str, float | None]]
    counted: dict[str, int]
    missing_predictions: int
    predictions_not_in_gold: int
    yes_no_only: int
    duplicate_predictions: int = 0
    per_question: list[QuestionOutcome] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        """The report as the `--json` object: r@Nkt tables, counted, missing_predictions,
        duplicate_predictions."""
        report: dict = {f"r@{k}kt": dict(table) for k, table in self.r_at_kt.items()}
        report["counted"] = dict(self.counted)
        report["missing_predictions"] = self.missing_predictions
        report["duplicate_predictions"] = self.duplicate_predictions
        return report


def xor_retrieve_r_at_kt(
    gold_answers: Mapping[str, Sequence[str]],
    predictions: Iterable[XorPrediction],
    tokenize: WordTokenizer,
    ks: Sequence[int] = R_AT_KT_KS,
) -> XorRetrieveReport:
    """R@kt for every k in `ks` (k x 1000 tokens), computed as the official script does.

    The tokens are collected once up to the largest budget: the first k x 1000 of them are
    exactly what the official script collects for a smaller k. A question predicted twice is
    counted twice, as in the official script, and reported in `duplicate_predictions`. Each
    prediction's language is its own `lang`. A passage retrieved for many questions is tokenized
    once (a bounded cache keyed by its text: the tokenizers are pure functions of the text)."""
    largest_budget = max(ks) * 1000
    tokenize = functools.lru_cache(maxsize=TOKEN_CACHE_PASSAGES)(lambda text, _tokenize=tokenize: tuple(_tokenize(text)))
    lang_order: dict[str, None] = {}
    counted: Counter[str] = Counter()
    hits: dict[int, Counter[str]] = {k: Counter() for k in ks}
    predicted_ids = set()
    duplicated_ids = set()
    outcomes: list[QuestionOutcome] = []
    not_in_gold = yes_no_only = 0
    for prediction in predictions:
        # The official script registers the language before it looks the id up in the gold.
        lang_order.setdefault(prediction.lang)
        if prediction.id in predicted_ids:
            duplicated_ids.add(prediction.id)
        predicted_ids.add(prediction.id)
        if prediction.id not in gold_answers:
            not_in_gold += 1
            continue
        span_answers = [answer for answer in gold_answers[prediction.id] if answer not in YES_NO_ANSWERS]
        if not span_answers:
            yes_no_only += 1
            continue
        counted[prediction.lang] += 1
        tokens = first_tokens(prediction.ctxs, largest_budget, tokenize)
        outcome = {}
        for k in ks:
            evidence = " ".join(tokens[: k * 1000])
            outcome[k] = any(answer in evidence for answer in span_answers)
            hits[k][prediction.lang] += outcome[k]
        outcomes.append(QuestionOutcome(prediction.id, prediction.lang, outcome))
    langs = [lang for lang in lang_order if counted[lang] > 0]
    r_at_kt: dict[int, dict[str, float | None]] = {}
    for k in ks:
        table: dict[str, float | None] = {lang: (hits[k][lang] / counted[lang]) * 100 for lang in langs}
        # statistics.mean, like the official script: exact summation, then one rounding.
        table["average"] = statistics.mean(table.values()) if langs else None
        r_at_kt[k] = table
    return XorRetrieveReport(
        r_at_kt=r_at_kt,
        counted={lang: counted[lang] for lang in langs},
        missing_predictions=sum(1 for question_id in gold_answers if question_id not in predicted_ids),
        predictions_not_in_gold=not_in_gold,
        yes_no_only=yes_no_only,
        duplicate_predictions=len(duplicated_ids),
        per_question=outcomes,
    )


# --------------------------------------------------------------------------------------------
# XOR-Full

_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop 年 歳 人 년, collapse whitespace (in that
    order, as the official script does). Articles are kept: the official script keeps them."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    for counter in COUNTER_CHARACTERS:
        text = text.replace(counter, "")
    return " ".join(text.split())


def answer_exact_match(prediction: str, gold_answer: str) -> bool:
    """Whether the normalized strings are equal."""
    return normalize_answer(prediction) == normalize_answer(gold_answer)


def answer_f1(prediction: str, gold_answer: str) -> float:
    """Token F1 between the normalized strings' whitespace tokens (0 when none is shared)."""
    predicted_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold_answer).split()
    shared = sum((Counter(predicted_tokens) & Counter(gold_tokens)).values())
    if shared == 0:
        return 0
    precision = 1.0 * shared / len(predicted_tokens)
    recall = 1.0 * shared / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def mecab_wakati() -> Callable[[str], str]:
    """MeCab word segmentation through fugashi with the unidic-lite dictionary, returning what
    MeCab's `-Owakati` writes: every token followed by one space, then a newline (the raw
    MeCab output that the official script feeds to BLEU; fugashi's own `parse` strips it)."""
    try:
        import fugashi
    except ImportError:
        raise MissingDependencyError(
            "XOR-Full tokenizes Japanese with MeCab; install it with:  pip install fugashi unidic-lite"
        ) from None
    try:
        tagger = fugashi.Tagger()
    except RuntimeError as err:
        raise MissingDependencyError(
            f"MeCab (fugashi) found no dictionary ({str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'}); "
            "install one with:  pip install unidic-lite"
        ) from None

    def wakati(text: str) -> str:
        return "".join(f"{word.surface} " for word in tagger(text)) + "\n"

    return wakati


def nltk_sentence_bleu() -> Callable[[list[str], str], float]:
    """NLTK's `nltk.translate.bleu` (sentence BLEU-4, no smoothing) with its zero-overlap
    warnings silenced. Given strings, it compares characters, as the official script does."""
    try:
        from nltk.translate import bleu
    except ImportError:
        raise MissingDependencyError("XOR-Full BLEU is NLTK's sentence BLEU: pip install nltk") from None

    def sentence_bleu(references: list[str], hypothesis: str) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bleu(references, hypothesis)

    return sentence_bleu


@dataclasses.dataclass
class XorFullReport:
    """XOR-Full scores x 100: metric -> {lang: score, ..., "average": sum over languages / 7};
    counted: lang -> gold questions (with or without a prediction); missing_predictions: gold
    questions without a prediction (each scored 0)."""

    scores: dict[str, dict[str, float]]
    counted: dict[str, int]
    missing_predictions: int

    def to_json(self) -> dict:
        report: dict = {metric: dict(table) for metric, table in self.scores.items()}
        report["counted"] = dict(self.counted)
        report["missing_predictions"] = self.missing_predictions
        return report


def xor_full_scores(
    gold: Sequence[XorFullGold],
    predictions: Mapping[str, str],
    wakati: Callable[[str], str] | None = None,
    sentence_bleu: Callable[[list[str], str], float] | None = None,
) -> XorFullReport:
    """F1, EM and BLEU per language and averaged, computed as the official script does.

    `predictions` maps question id -> answer, keys already cut at the last `_`. `wakati` (MeCab
    `-Owakati` output) is needed only when a Japanese question has a prediction; both helpers
    default to `mecab_wakati()` and `nltk_sentence_bleu()`. Raises ValueError for a language
    outside the official table (the caller turns it into an InputError with the location)."""
    sums = {lang: {"count": 0, "f1": 0, "em": 0, "bleu": 0} for lang in XOR_FULL_LANGUAGES}
    missing = 0
    if sentence_bleu is None:
        sentence_bleu = nltk_sentence_bleu()
    for question in gold:
        if question.lang not in sums:
            raise ValueError(f"language '{question.lang}' is not one of the official script's: {', '.join(XOR_FULL_LANGUAGES)}")
        lang_sums = sums[question.lang]
        lang_sums["count"] += 1
        if question.id not in predictions:
            missing += 1
            continue
        prediction = predictions[question.id]
        if question.lang == "ja":
            if wakati is None:
                wakati = mecab_wakati()
            final_answers = [wakati(answer) for answer in question.answers]
            final_prediction = wakati(prediction.replace("・", " ").replace("、", ","))
        else:
            final_answers = list(question.answers)
            final_prediction = prediction
        lang_sums["f1"] += max(answer_f1(final_prediction, answer) for answer in final_answers)
        # The official script scores BLEU against the raw prediction, not the segmented one.
        lang_sums["bleu"] += sentence_bleu(final_answers, prediction)
        lang_sums["em"] += max(answer_exact_match(final_prediction, answer) for answer in final_answers)
    scores: dict[str, dict[str, float]] = {"f1": {}, "em": {}, "bleu": {}}
    for metric, table in scores.items():
        total = 0.0
        for lang in XOR_FULL_LANGUAGES:
            count = sums[lang]["count"]
            if count == 0:
                continue
            mean = sums[lang][metric] / count
            table[lang] = mean * 100
            total += mean
        table["average"] = total / XOR_FULL_LANGUAGE_COUNT * 100
    return XorFullReport(
        scores=scores,
        counted={lang: sums[lang]["count"] for lang in XOR_FULL_LANGUAGES if sums[lang]["count"] > 0},
        missing_predictions=missing,
    )
