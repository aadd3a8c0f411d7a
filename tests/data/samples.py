"""Small hand-made records of every format, with the awkward cases real files have: non-Latin
scripts, tabs, double quotes and newlines inside passage texts, absent optional fields."""

from __future__ import annotations

from umr_jax.data import formats as F

QUESTIONS = [
    F.Question("-1002350311829496286", "ما هي عاصمة اليابان؟", "ar", ("طوكيو",)),
    F.Question("7181349183215124367", "東京タワーの高さは？", "ja", ("333メートル", "333 m")),
    F.Question("5558209453051316520", "Kuka keksi puhelimen?", "fi", ()),
    F.Question("test-only-1", "Кто написал «Войну и мир»?", "ru", None),
]

PASSAGES = [
    F.Passage("1", "Aaron", 'Aaron ( or ; "Ahärôn") is a prophet, high priest, and the brother of Moses.'),
    F.Passage("2", "Tab\tTitle", "text with\ta tab, a 'single' and a \"double\" quote"),
    F.Passage("3", "", "multi\nline passage\r\nwith CRLF"),
    F.Passage("4", "東京", "東京は日本の首都である。"),
]

PAIRS = [
    F.Pair("qual é a capital do Brasil?", "Brasília é a capital federal do Brasil.", "pt", ("São Paulo é a maior cidade.",)),
    F.Pair("ما هو الإنترنت؟", "الإنترنت شبكة عالمية.", "ar"),
]

WEBFAQ = [
    F.WebFaqRecord("a1", "https://example.com", "https://example.com/faq", "كيف أحجز؟", "عبر الموقع.", 0.91, "ara", "Traveling and Hospitality", "How"),
    F.WebFaqRecord("a2", "https://example.org", "https://example.org/faq", "هل يوجد موقف؟", "نعم.", 0.42, "ara"),
    F.WebFaqRecord("a3", "https://example.net", "https://example.net/faq", "متى تفتحون؟", "من التاسعة.", 0.77, "ara", None, "When"),
]

MKQA = [
    F.MkqaExample(
        "563260143484355911",
        "who sings i hear you knocking but you can't come in",
        {"en": "who sings i hear you knocking but you can't come in", "ja": "「 I hear you knocking」は誰が歌っていますか", "zh_cn": "《i hear you knocking》是谁演唱的"},
        {
            "en": (F.MkqaAnswer("entity", "Dave Edmunds", "Q545186", ()),),
            "ja": (F.MkqaAnswer("entity", "デイヴ・エドモンズ", "Q545186", ("デーブ・エドモンズ", "デイブ・エドモンズ")),),
            "zh_cn": (F.MkqaAnswer("entity", "戴维·埃德蒙兹 ", "Q545186", ()),),
        },
    ),
    F.MkqaExample(
        "-7449157003522518870",
        "how long is a basketball game",
        {"en": "how long is a basketball game", "ja": "バスケットボールの試合時間は？"},
        {"en": (F.MkqaAnswer("unanswerable", None),), "ja": (F.MkqaAnswer("long_answer", None),)},
    ),
]

BEIR_QUERIES = [F.Query("q1", "wie spät ist es"), F.Query("q2", "what is dense retrieval")]
QRELS = [F.Qrel("q1", "1", 1), F.Qrel("q1", "2", 0), F.Qrel("q2", "4", 2)]

RESULTS = [
    F.RetrievalResult(
        "-1002350311829496286",
        "ما هي عاصمة اليابان؟",
        "ar",
        (F.Context("4", "東京", "東京は日本の首都である。", 81.25), F.Context("1", "Aaron", 'Aaron ( or ; "Ahärôn") is', 79.5, False)),
        ("طوكيو",),
    ),
    F.RetrievalResult("q-ja", "東京タワーの高さは？", "ja", (F.Context("2", "T", "x", -1.0e-3),), None, "mt5-xl-lm-adapt"),
]

PREDICTIONS = [F.retrieval_to_xor_prediction(r) for r in RESULTS]
TREC = [entry for r in RESULTS for entry in F.retrieval_to_trec_run(r, "mdpr")]

# format name -> (records, file name); every format's writer and reader must round-trip these.
ALL = {
    "xor-questions": (QUESTIONS, "questions.jsonl"),
    "dpr-passages": (PASSAGES, "passages.tsv"),
    "passages-jsonl": (PASSAGES, "passages.jsonl"),
    "webfaq": (WEBFAQ, "ara/webfaq.parquet"),
    "pairs": (PAIRS, "pairs.jsonl"),
    "mkqa": (MKQA, "mkqa.jsonl.gz"),
    "beir-corpus": (PASSAGES, "corpus.jsonl"),
    "beir-queries": (BEIR_QUERIES, "queries.jsonl"),
    "beir-qrels": (QRELS, "qrels/test.tsv"),
    "retrieval": (RESULTS, "run.jsonl"),
    "dpr-json": (RESULTS, "run.json"),
    "xor-predictions": (PREDICTIONS, "predictions.json"),
    "trec-run": (TREC, "run.trec"),
}
