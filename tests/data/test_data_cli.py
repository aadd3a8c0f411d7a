"""`umr-jax data`: validate prints counts and exits 0 on valid files, 1 with one `file:line`
line on bad input; convert writes the target format; nothing heavy is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from umr_jax import cli
from umr_jax.data import formats as F
from tests.data import samples
from tests.data.test_webfaq import rows, write_published


def test_validate_prints_counts_per_language(tmp_path, capsys):
    F.write_questions(tmp_path / "q.jsonl", samples.QUESTIONS + [F.Question("x2", "Что это?", "ru")])
    assert cli.main(["data", "validate", "--format", "xor-questions", "--variant", "retrieve", str(tmp_path / "q.jsonl")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{tmp_path}/q.jsonl: valid, 5 xor-questions records", "  ar     1", "  fi     1", "  ja     1", "  ru     2"]


def test_validate_several_files_and_query_counts(tmp_path, capsys):
    F.write_beir_qrels(tmp_path / "qrels.tsv", samples.QRELS)
    F.write_trec_run(tmp_path / "run.trec", samples.TREC, num_shards=2)
    assert cli.main(["data", "validate", "--format", "beir-qrels", str(tmp_path / "qrels.tsv")]) == 0
    assert cli.main(["data", "validate", "--format", "trec-run", str(tmp_path / "run.trec")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{tmp_path}/qrels.tsv: valid, 3 beir-qrels records", "  2 distinct queries", f"{tmp_path}/run.trec: valid, 3 trec-run records", "  2 distinct queries"]


def test_validate_bad_file_is_one_line_and_exit_1(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "1", "question": "x", "lang": "ar"}\n{"id": "2", "question": "y", "lang": "jp"}\n')
    assert cli.main(["data", "validate", "--format", "xor-questions", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"umr-jax data: error: {path}:2: unknown language code 'jp'") and "\n" not in err
    assert cli.main(["data", "validate", "--format", "xor-questions", "--known-language", "jp", str(path)]) == 0


def test_validate_skip_invalid_reports_counts_and_fails(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"id": "1", "question": "x", "lang": "ar"}\n{"id": "1", "question": "y", "lang": "ar"}\n\xff\n{"id": "3", "question": "", "lang": "ar"}\n')
    assert cli.main(["data", "validate", "--format", "xor-questions", "--skip-invalid", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: INVALID, 1 xor-questions records"
    assert out[2] == "skipped 3 invalid records:"
    assert sorted(line.split(" (first")[0] for line in out[3:]) == ["  1 duplicate id", "  1 empty text", "  1 invalid UTF-8"]


def test_convert_retrieval_to_official_and_trec_formats(tmp_path, capsys):
    F.write_retrieval(tmp_path / "run.jsonl", samples.RESULTS)
    assert cli.main(["data", "convert", "--from", "retrieval", "--to", "xor-predictions", str(tmp_path / "run.jsonl"), str(tmp_path / "pred.json")]) == 0
    assert json.loads((tmp_path / "pred.json").read_text(encoding="utf-8"))[1] == {"id": "q-ja", "lang": "ja", "ctxs": ["x"]}
    assert cli.main(["data", "convert", "--from", "retrieval", "--to", "trec-run", "--tag", "mdpr", str(tmp_path / "run.jsonl"), str(tmp_path / "run.trec")]) == 0
    assert list(F.read_trec_run(tmp_path / "run.trec")) == samples.TREC
    assert cli.main(["data", "convert", "--from", "retrieval", "--to", "dpr-json", "--num-shards", "2", str(tmp_path / "run.jsonl"), str(tmp_path / "dpr.json")]) == 0
    out = capsys.readouterr().out
    assert "read 2 retrieval records, wrote 2 dpr-json records to:" in out and "dpr-00001-of-00002.json" in out


def test_convert_passages_webfaq_and_mkqa(tmp_path):
    F.write_dpr_passages(tmp_path / "psgs.tsv", samples.PASSAGES)
    assert cli.main(["data", "convert", "--from", "dpr-passages", "--to", "passages-jsonl", str(tmp_path / "psgs.tsv"), str(tmp_path / "psgs.jsonl")]) == 0
    assert list(F.read_passages_jsonl(tmp_path / "psgs.jsonl")) == samples.PASSAGES
    write_published(tmp_path / "webfaq" / "ara" / "x.parquet", rows("ar", [0.9, 0.1]))
    write_published(tmp_path / "webfaq" / "deu" / "x.parquet", rows("de", [0.9]))
    args = ["data", "convert", "--from", "webfaq", "--to", "pairs", "--language", "ar", "--min-similarity", "0.5"]
    assert cli.main(args + [str(tmp_path / "webfaq"), str(tmp_path / "pairs.jsonl")]) == 0
    assert list(F.read_pairs(tmp_path / "pairs.jsonl")) == [F.Pair("ar question 0?", "ar answer 0.", "ar")]
    F.write_mkqa(tmp_path / "mkqa.jsonl.gz", samples.MKQA)
    args = ["data", "convert", "--from", "mkqa", "--to", "xor-questions", "--language", "ja", "--language", "zh_cn"]
    assert cli.main(args + [str(tmp_path / "mkqa.jsonl.gz"), str(tmp_path / "mkqa_q.jsonl")]) == 0
    assert [q.lang for q in F.read_questions(tmp_path / "mkqa_q.jsonl")] == ["ja", "zh_cn", "ja"]


def test_convert_errors(tmp_path, capsys):
    F.write_trec_run(tmp_path / "run.trec", samples.TREC)
    assert cli.main(["data", "convert", "--from", "trec-run", "--to", "retrieval", str(tmp_path / "run.trec"), str(tmp_path / "x.jsonl")]) == 2
    assert "no conversion from trec-run to retrieval" in capsys.readouterr().err
    F.write_beir_queries(tmp_path / "queries.jsonl", samples.BEIR_QUERIES)
    assert cli.main(["data", "convert", "--from", "beir-queries", "--to", "xor-questions", str(tmp_path / "queries.jsonl"), str(tmp_path / "q.jsonl")]) == 2
    assert "BEIR queries carry no language: give lang, the questions' language; give it with --lang CODE" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"id": "1", "question": "x", "lang": "ar", "ctxs": "none"}\n')
    assert cli.main(["data", "convert", "--from", "retrieval", "--to", "dpr-json", str(tmp_path / "bad.jsonl"), str(tmp_path / "out.json")]) == 1
    assert capsys.readouterr().err.strip() == f"umr-jax data: error: {tmp_path}/bad.jsonl:1: field 'ctxs' must be a list, got string"
    assert not (tmp_path / "out.json").exists()


def test_convert_skip_invalid_prints_counts_and_succeeds(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text('{"id": "1", "title": "", "text": "ok"}\n{"id": "1", "title": "", "text": "dup"}\n{"id": "2", "text": ""}\n')
    assert cli.main(["data", "convert", "--skip-invalid", "--from", "passages-jsonl", "--to", "dpr-passages", str(tmp_path / "p.jsonl"), str(tmp_path / "p.tsv")]) == 0
    out = capsys.readouterr().out
    assert "read 1 passages-jsonl records" in out and "skipped 2 invalid records:" in out
    assert "1 duplicate id (first:" in out and "1 empty text (first:" in out


def test_index_builds_the_sidecar(tmp_path, capsys):
    F.write_dpr_passages(tmp_path / "psgs.tsv", samples.PASSAGES)
    assert cli.main(["data", "index", str(tmp_path / "psgs.tsv")]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path}/psgs.tsv.idx: 4 passages indexed"
    assert len(np.load(tmp_path / "psgs.tsv.idx")) == 4


def test_importing_the_data_cli_imports_nothing_heavy():
    script = "import sys, umr_jax.data.cli; print(sorted(m for m in ('jax', 'tensorflow', 'torch', 'tensorflow_datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
