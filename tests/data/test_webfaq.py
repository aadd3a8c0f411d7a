"""WebFAQ parquet: read in row batches, language from the path, filters by language and by
minimum semantic similarity, conversion to training pairs."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umr_jax.data import formats as F
from umr_jax.data.validation import DUPLICATE_ID, SkippedRecords
from umr_jax.errors import InputError


def write_published(path, rows):
    """A parquet file with WebFAQ's published columns, written with plain pyarrow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["id", "origin", "url", "question", "answer", "semantic_similarity_score", "topic", "question_type"]
    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    pq.write_table(table, path, row_group_size=2)


def rows(prefix, scores):
    return [
        {
            "id": f"{prefix}{i}",
            "origin": "https://example.com",
            "url": f"https://example.com/faq/{i}",
            "question": f"{prefix} question {i}?",
            "answer": f"{prefix} answer {i}.",
            "semantic_similarity_score": s,
            "topic": "General Information and Other" if i % 2 else None,
            "question_type": "What" if i % 3 else None,
        }
        for i, s in enumerate(scores)
    ]


@pytest.fixture
def webfaq_dir(tmp_path):
    write_published(tmp_path / "webfaq" / "ara" / "train-00000-of-00002.parquet", rows("ar", [0.9, 0.2, 0.75, 0.8, 0.5]))
    write_published(tmp_path / "webfaq" / "ara" / "train-00001-of-00002.parquet", rows("ar-b", [0.95]))
    write_published(tmp_path / "webfaq" / "deu" / "train-00000-of-00001.parquet", rows("de", [0.6, 0.99]))
    write_published(tmp_path / "webfaq" / "jpn.parquet", rows("ja", [0.7]))
    return tmp_path / "webfaq"


def test_reads_every_row_with_the_language_of_its_folder(webfaq_dir):
    records = list(F.read_webfaq(webfaq_dir, batch_size=2))
    assert [(r.id, r.lang) for r in records] == [
        ("ar0", "ara"), ("ar1", "ara"), ("ar2", "ara"), ("ar3", "ara"), ("ar4", "ara"), ("ar-b0", "ara"),
        ("de0", "deu"), ("de1", "deu"), ("ja0", "jpn"),
    ]
    first = records[0]
    assert first == F.WebFaqRecord("ar0", "https://example.com", "https://example.com/faq/0", "ar question 0?", "ar answer 0.", 0.9, "ara", None, None)
    assert records[1].topic == "General Information and Other" and records[1].question_type == "What"


def test_filters_by_language_and_minimum_similarity(webfaq_dir):
    ids = [r.id for r in F.read_webfaq(webfaq_dir, languages=["ar"], min_similarity=0.75, batch_size=2)]
    assert ids == ["ar0", "ar2", "ar3", "ar-b0"]
    ids = [r.id for r in F.read_webfaq(webfaq_dir, languages=["deu", "ja"], min_similarity=0.65)]
    assert ids == ["de1", "ja0"]
    assert list(F.read_webfaq(webfaq_dir, languages=["ko"])) == []


def test_row_numbers_in_errors_count_rows_before_filtering(tmp_path):
    bad = rows("ar", [0.9, 0.1, 0.8])
    bad[2]["question"] = ""
    write_published(tmp_path / "ara" / "x.parquet", bad)
    with pytest.raises(InputError) as info:
        list(F.read_webfaq(tmp_path / "ara" / "x.parquet", min_similarity=0.5, batch_size=2))
    assert str(info.value) == f"{tmp_path}/ara/x.parquet:3: empty 'question'; expected non-empty text"


def test_null_score_is_an_error_even_when_filtering(tmp_path):
    bad = rows("ar", [0.9, None])
    write_published(tmp_path / "ara.parquet", bad)
    with pytest.raises(InputError, match=r"ara.parquet:2: missing field 'semantic_similarity_score'"):
        list(F.read_webfaq(tmp_path / "ara.parquet", min_similarity=0.5))


def test_duplicate_ids_across_files_and_skipping(tmp_path):
    write_published(tmp_path / "ara" / "a.parquet", rows("x", [0.9, 0.8]))
    write_published(tmp_path / "ara" / "b.parquet", rows("x", [0.7]))
    with pytest.raises(InputError, match=r"b.parquet:1: duplicate id 'x0' \(first at .*a.parquet:1\)"):
        list(F.read_webfaq(tmp_path))
    skipped = SkippedRecords()
    assert [r.id for r in F.read_webfaq(tmp_path, skip_invalid=skipped)] == ["x0", "x1"]
    assert dict(skipped.counts) == {DUPLICATE_ID: 1}


def test_language_must_be_known_or_given(tmp_path):
    write_published(tmp_path / "misc" / "part-0.parquet", rows("x", [0.9]))
    with pytest.raises(InputError, match="cannot tell the language of this WebFAQ file"):
        list(F.read_webfaq(tmp_path / "misc"))
    assert [r.lang for r in F.read_webfaq(tmp_path / "misc", lang="swa")] == ["swa"]
    with pytest.raises(InputError, match="unknown language code 'xyz'"):
        list(F.read_webfaq(tmp_path / "misc", lang="xyz"))
    assert F.webfaq_language("data/ara/train-00000-of-00003.parquet") == "ara"
    assert F.webfaq_language("webfaq/deu.parquet") == "deu"
    assert F.webfaq_language("webfaq/kor-00001.parquet") == "kor"


def test_missing_published_column(tmp_path):
    pq.write_table(pa.table({"id": ["1"], "question": ["q"], "answer": ["a"]}), tmp_path / "ara.parquet")
    with pytest.raises(InputError, match=r"ara.parquet: missing column\(s\) origin, url, semantic_similarity_score"):
        list(F.read_webfaq(tmp_path / "ara.parquet"))


def test_webfaq_to_pairs_uses_iso639_1_codes(webfaq_dir, tmp_path):
    report = F.convert("webfaq", "pairs", webfaq_dir, tmp_path / "pairs.parquet", min_similarity=0.9)
    assert (report.read, report.written) == (3, 3)
    assert list(F.read_pairs(tmp_path / "pairs.parquet")) == [
        F.Pair("ar question 0?", "ar answer 0.", "ar"),
        F.Pair("ar-b question 0?", "ar-b answer 0.", "ar"),
        F.Pair("de question 1?", "de answer 1.", "de"),
    ]


def test_our_writer_produces_the_published_columns(tmp_path):
    records = list(F.read_webfaq(_one_file(tmp_path)))
    F.write_webfaq(tmp_path / "out" / "ara" / "subset.parquet", records)
    schema = pq.read_schema(tmp_path / "out" / "ara" / "subset.parquet")
    assert schema.names == ["id", "origin", "url", "question", "answer", "semantic_similarity_score", "topic", "question_type"]
    assert list(F.read_webfaq(tmp_path / "out")) == records


def _one_file(tmp_path):
    path = tmp_path / "in" / "ara" / "x.parquet"
    write_published(path, rows("ar", [0.3, 0.6, 0.9]))
    return path


def test_the_training_source_is_non_english_unless_english_is_asked_for(webfaq_dir, monkeypatch, tmp_path):
    # WebFAQ's study data is its non-English pairs: a folder with English files leaves them out
    # when no languages are given, and keeps them only when English is asked for by name.
    import ml_collections

    from umr_jax.training.contrastive import open_pairs

    monkeypatch.setenv("UMR_JAX_CACHE", str(tmp_path / "cache"))
    write_published(webfaq_dir / "eng" / "train-00000-of-00001.parquet", rows("en", [0.9, 0.9, 0.9]))

    def data(**values):
        return ml_collections.ConfigDict(dict(dict(source="webfaq", path=str(webfaq_dir), languages=None,
                                                   min_similarity=None), **values))

    store = open_pairs(data())
    assert store.manifest["rows_per_language"] == {"ar": 6, "de": 2, "ja": 1}
    assert open_pairs(data(languages=["en", "ja"])).manifest["rows_per_language"] == {"en": 3, "ja": 1}
    assert open_pairs(data(languages="ara,eng")).manifest["rows_per_language"] == {"ar": 6, "en": 3}
    with pytest.raises(InputError, match=r"data.languages asks for ko, which this source has no pairs of "
                                         r"\(of those asked for, it has: ar\)"):
        open_pairs(data(languages=["ar", "ko"]))
