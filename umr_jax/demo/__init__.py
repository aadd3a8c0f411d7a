"""The embedded demo corpus: small, synthetic, in the real formats, shipped with the package.

What it is
  A fictional world of people, towns, rivers, companies and mountains with coined names
  (`Tavoren`, `Mirela Kasimo`), described by 3,568 English passages of 60-110 words in DPR TSV
  format, and XOR-TyDi-style questions about them in the seven XOR languages (ar, bn, fi, ja,
  ko, ru, te): 120 train, 50 dev and 30 test questions per language. Every answer (a year, a
  number with its unit, or a coined name) appears verbatim in its gold passage and in at most
  four passages overall. A third of the ar/bn/ja/ko/ru/te questions write the entity name in
  the language's own script (transliterated syllable by syllable), so they share no string
  with the English passages; Finnish questions keep Latin names but inflect them
  (`Tavorenin`). Distractors: every entity type shares its attribute vocabulary, and about a
  third of the asked entities have a near-namesake (one vowel changed, or the same family name).
  Also: 350 WebFAQ-style pairs (50 per language, per-language parquet in the WebFAQ schema),
  420 translated-style pairs (a native keyword query and an English passage, like mMARCO),
  and two tokenizers trained on the demo text (a T5/mT5 one and an XLM-R one).

  On the dev split with whitespace tokens standing in for NLTK's, R@2kt is 100 for oracle
  retrieval, about 1 for random retrieval, and about 60 for BM25, so the metric separates
  methods (see docs/demo_data.md for the numbers and how they were measured).

What it is not
  Not real language data: the passages are template text, the questions follow a few
  templates per attribute and language, the names are invented. Numbers measured on it say
  whether the machinery works and whether a method beats random and lexical baselines, never
  how a method performs on XOR-TyDi. WebFAQ- and translated-style pairs only mimic the schema
  and the query/answer relation of those datasets, and only use entities of the train split,
  so no dev/test answer leaks into training data.

Rebuild it with `python -m umr_jax.demo.make_demo --output DIR` (deterministic: the
same library versions rewrite the committed files byte for byte).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from umr_jax.demo.templates import LANGUAGES
from umr_jax.errors import InputError

__all__ = ["LANGUAGES", "WEBFAQ_LANGUAGES", "corpus_root", "demo_paths"]

WEBFAQ_LANGUAGES = {"ar": "ara", "bn": "ben", "fi": "fin", "ja": "jpn", "ko": "kor", "ru": "rus", "te": "tel"}

_RELATIVE = {
    "train_questions": "questions/train.jsonl",
    "dev_questions": "questions/dev.jsonl",
    "test_questions": "questions/test.jsonl",
    "train_gold": "questions/train_gold.jsonl",
    "dev_gold": "questions/dev_gold.jsonl",
    "test_gold": "questions/test_gold.jsonl",
    "dev_qrels": "questions/dev_qrels.tsv",
    "test_qrels": "questions/test_qrels.tsv",
    "passages": "passages.tsv",
    "webfaq_dir": "webfaq",
    "translated_pairs": "translated_pairs.jsonl",
    "t5_tokenizer": "tokenizers/mt5",
    "xlmr_tokenizer": "tokenizers/xlmr",
    "stats": "stats.json",
}


def corpus_root() -> Path:
    """The folder that holds the embedded corpus (inside the installed package)."""
    root = importlib.resources.files(__name__) / "corpus"
    path = Path(str(root))
    if not path.is_dir():
        raise InputError(
            "the embedded demo corpus is missing; reinstall umr-jax or rebuild it with "
            "`python -m umr_jax.demo.make_demo --output DIR`",
            path=path,
        )
    return path


def demo_paths() -> dict[str, Path]:
    """Paths of the embedded demo files, by role.

    Keys: `root`; `{train,dev,test}_questions` (XOR-TyDi JSONL `{id, question, answers, lang}`);
    `{train,dev,test}_gold` (JSONL `{id, lang, entity, entity_type, attribute, name_script,
    gold_passage_ids}`); `{dev,test}_qrels` (BEIR qrels TSV); `passages` (DPR TSV `id text title`);
    `webfaq_dir` (`{ara,ben,fin,jpn,kor,rus,tel}.parquet`); `translated_pairs` (JSONL
    `{query, positive, lang}`); `t5_tokenizer`, `xlmr_tokenizer` (folders for
    `transformers.AutoTokenizer.from_pretrained`); `stats` (JSON). Every path exists.
    """
    root = corpus_root()
    paths = {"root": root}
    for key, relative in _RELATIVE.items():
        path = root / relative
        if not path.exists():
            raise InputError(f"embedded demo file for {key!r} is missing", path=path)
        paths[key] = path
    return paths
