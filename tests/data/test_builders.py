"""The tfds builders build from tiny manual files, without TensorFlow, into array_record files
that `tfds.data_source` reads back record for record."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from umr_jax.data import builders
from umr_jax.data import formats as F
from umr_jax.errors import InputError
from tests.data import samples
from tests.data.test_webfaq import rows, write_published


def build(builder_class, data_dir, manual_dir, **kwargs):
    builder = builder_class(data_dir=str(data_dir), file_format="array_record", **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def read_all(name, data_dir, split):
    source = tfds.data_source(name, data_dir=str(data_dir))[split]
    return [source[i] for i in range(len(source))]


def decoded(example):
    return {k: (v.decode() if isinstance(v, bytes) else [x.decode() for x in v] if isinstance(v, list) else v) for k, v in example.items()}


def write_jsonl(path, objects):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects), encoding="utf-8")


def test_xor_tydi_retrieve_builds_every_split_present(tmp_path):
    manual = tmp_path / "manual"
    train = [{"id": f"t{i}", "question": f"質問{i}", "answers": [f"答え{i}"], "lang": "ja"} for i in range(5)]
    dev = [{"id": "d1", "question": "ما هي؟", "answers": ["x", "y"], "lang": "ar"}, {"id": "d2", "question": "Mikä?", "answers": [], "lang": "fi"}]
    test = [{"id": "e1", "question": "Что?", "lang": "ru"}]
    write_jsonl(manual / "xor_train_retrieve_eng_span.jsonl", train)
    write_jsonl(manual / "v1.1" / "xor_dev_retrieve_eng_span_v1_1.jsonl", dev)
    write_jsonl(manual / "xor_test_retrieve_eng_span_q_only_v1_1.jsonl", test)
    write_jsonl(manual / "xor_dev_full_v1_1.jsonl", [{"id": "f", "question": "?", "answers": [], "lang": "te"}])  # other config's file
    build(builders.XorTydi, tmp_path / "data", manual, config="retrieve")
    got = {split: sorted((decoded(e) for e in read_all("xor_tydi/retrieve", tmp_path / "data", split)), key=lambda e: e["id"]) for split in ("train", "validation", "test")}
    assert got["train"] == [{"id": q["id"], "question": q["question"], "lang": "ja", "answers": q["answers"], "has_answers": True} for q in train]
    assert got["validation"] == [
        {"id": "d1", "question": "ما هي؟", "lang": "ar", "answers": ["x", "y"], "has_answers": True},
        {"id": "d2", "question": "Mikä?", "lang": "fi", "answers": [], "has_answers": True},
    ]
    assert got["test"] == [{"id": "e1", "question": "Что?", "lang": "ru", "answers": [], "has_answers": False}]


def test_xor_tydi_full_and_its_errors(tmp_path):
    manual = tmp_path / "manual"
    write_jsonl(manual / "xor_dev_full.jsonl", [{"id": "d1", "question": "প্রশ্ন?", "answers": ["উত্তর"], "lang": "bn"}])
    builder = build(builders.XorTydi, tmp_path / "data", manual, config="full")
    assert list(builder.info.splits) == ["validation"]
    assert decoded(read_all("xor_tydi/full", tmp_path / "data", "validation")[0])["question"] == "প্রশ্ন?"
    write_jsonl(manual / "xor_train_full.jsonl", [{"id": "t1", "question": "Who?", "answers": [], "lang": "en"}])
    with pytest.raises(InputError, match=r"xor_train_full.jsonl:1: unknown language code 'en'; expected one of ar, bn, fi, ja, ko, ru, te"):
        build(builders.XorTydi, tmp_path / "data2", manual, config="full")
    empty = tmp_path / "empty"
    write_jsonl(empty / "unrelated.jsonl", [])
    with pytest.raises(InputError, match="no XOR-TyDi retrieve files here; expected some of: xor_train_retrieve_eng_span.jsonl"):
        build(builders.XorTydi, tmp_path / "data3", empty, config="retrieve")


def test_webfaq_one_config_per_language_with_similarity_filter(tmp_path):
    manual = tmp_path / "manual"
    ara = rows("ar", [0.9, 0.2, 0.8])
    write_published(manual / "data" / "ara" / "train-00000-of-00001.parquet", ara)
    write_published(manual / "data" / "deu" / "train-00000-of-00001.parquet", rows("de", [0.7]))
    assert {"ara", "deu", "eng", "jpn", "tel"} <= {c.name for c in builders.Webfaq.BUILDER_CONFIGS}
    build(builders.Webfaq, tmp_path / "data", manual, config="ara")
    got = sorted((decoded(e) for e in read_all("webfaq/ara", tmp_path / "data", "train")), key=lambda e: e["id"])
    assert [e["id"] for e in got] == ["ar0", "ar1", "ar2"] and {e["lang"] for e in got} == {"ara"}
    assert got[1] == {
        "id": "ar1", "origin": ara[1]["origin"], "url": ara[1]["url"], "question": ara[1]["question"], "answer": ara[1]["answer"],
        "semantic_similarity_score": float(np.float32(0.2)), "topic": "General Information and Other", "question_type": "What", "lang": "ara",
    }
    filtered = builders.WebfaqConfig(name="ara_sim75", lang="ara", min_similarity=0.75)
    build(builders.Webfaq, tmp_path / "data", manual, config=filtered)
    source = builders.Webfaq(config=filtered, data_dir=str(tmp_path / "data")).as_data_source()["train"]
    assert sorted(source[i]["id"].decode() for i in range(len(source))) == ["ar0", "ar2"]
    with pytest.raises(InputError, match=r"no WebFAQ parquet files for 'kor' here"):
        build(builders.Webfaq, tmp_path / "data", manual, config="kor")


def test_webfaq_beam_path_builds_with_beam_or_says_how_to_install_it(tmp_path):
    manual = tmp_path / "manual"
    write_published(manual / "ara" / "a.parquet", rows("a", [0.9, 0.3, 0.8]))
    write_published(manual / "ara" / "b.parquet", rows("b", [0.6]))
    config = builders.WebfaqConfig(name="ara_beam", lang="ara", min_similarity=0.5)
    try:
        import apache_beam as beam
    except ImportError:
        with pytest.raises(ImportError, match="pip install apache-beam"):
            build(builders.Webfaq, tmp_path / "data", manual, config=config, use_beam=True)
        return
    builder = builders.Webfaq(config=config, data_dir=str(tmp_path / "data"), file_format="array_record", use_beam=True)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual), beam_runner=beam.runners.DirectRunner()))
    source = builder.as_data_source()["train"]
    assert sorted(source[i]["id"].decode() for i in range(len(source))) == ["a0", "a2", "b0"]
    write_published(manual / "ara" / "c.parquet", rows("a", [0.7]))  # repeats id a0
    builder = builders.Webfaq(config=config, data_dir=str(tmp_path / "data2"), file_format="array_record", use_beam=True)
    with pytest.raises(Exception, match=r"duplicate id 'a0' in 2 rows"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual), beam_runner=beam.runners.DirectRunner()))


def test_translated_pairs_splits_from_folders_and_names(tmp_path):
    manual = tmp_path / "manual"
    F.write_pairs(manual / "train" / "pt.parquet", samples.PAIRS[:1])
    F.write_pairs(manual / "train-ar.jsonl", samples.PAIRS[1:])
    F.write_pairs(manual / "dev.jsonl.gz", [F.Pair("¿qué?", "eso", "es", ("a", "b"), passage_lang="en")])
    build(builders.TranslatedPairs, tmp_path / "data", manual)
    train = sorted((decoded(e) for e in read_all("translated_pairs", tmp_path / "data", "train")), key=lambda e: e["lang"])
    assert train == [
        {"query": p.query, "positive": p.positive, "lang": p.lang, "negatives": list(p.negatives), "passage_lang": ""}
        for p in sorted(samples.PAIRS, key=lambda p: p.lang)
    ]
    assert [decoded(e) for e in read_all("translated_pairs", tmp_path / "data", "validation")] == [
        {"query": "¿qué?", "positive": "eso", "lang": "es", "negatives": ["a", "b"], "passage_lang": "en"}
    ]
    F.write_pairs(manual / "extra.jsonl", samples.PAIRS)
    with pytest.raises(InputError, match="cannot tell the split of extra.jsonl"):
        build(builders.TranslatedPairs, tmp_path / "data2", manual)


def test_building_needs_no_tensorflow(tmp_path):
    manual = tmp_path / "manual"
    write_jsonl(manual / "xor_dev_retrieve_eng_span_v1_1.jsonl", [{"id": "d1", "question": "何？", "answers": ["x"], "lang": "ja"}])
    script = (
        "import sys, tensorflow_datasets as tfds\n"
        "from umr_jax.data import builders\n"
        f"b = builders.XorTydi(config='retrieve', data_dir={str(tmp_path / 'data')!r}, file_format='array_record')\n"
        f"b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir={str(manual)!r}))\n"
        f"print(tfds.data_source('xor_tydi/retrieve', data_dir={str(tmp_path / 'data')!r})['validation'][0]['id'])\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["b'd1'", "False"]
