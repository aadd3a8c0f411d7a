"""`umr-jax evaluate`: exit codes, the --json shape, Markdown tables, saved reports, compare."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nltk.tokenize
import pytest

from umr_jax import cli
from umr_jax.evaluation import report


@pytest.fixture
def xor_files(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "\n".join(
            json.dumps(record)
            for record in [
                {"id": "q1", "question": "?", "answers": ["Paris"], "lang": "ja"},
                {"id": "q2", "question": "?", "answers": ["Rome"], "lang": "ja"},
                {"id": "q3", "question": "?", "answers": ["Oslo"], "lang": "ko"},
                {"id": "q4", "question": "?", "answers": ["Lima"], "lang": "ko"},
            ]
        )
        + "\n"
    )
    predictions = tmp_path / "pred.json"
    predictions.write_text(
        json.dumps(
            [
                {"id": "q1", "lang": "ja", "ctxs": ["It is Paris", "x"]},
                {"id": "q2", "lang": "ja", "ctxs": ["rome"]},
                {"id": "q3", "lang": "ko", "ctxs": ["Oslo"]},
                {"id": "extra", "lang": "te", "ctxs": ["Paris"]},
            ]
        )
    )
    return gold, predictions


def test_xor_retrieve_json_is_exactly_one_object_of_the_documented_shape(xor_files, capsys):
    gold, predictions = xor_files
    code = cli.main(["evaluate", "xor-retrieve", "--gold", str(gold), "--predictions", str(predictions), "--tokenizer", "nltk-line", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.count("\n") == 1
    result = json.loads(captured.out)
    assert result == {
        "r@2kt": {"ja": 50.0, "ko": 100.0, "average": 75.0},
        "r@5kt": {"ja": 50.0, "ko": 100.0, "average": 75.0},
        "counted": {"ja": 2, "ko": 1},
        "missing_predictions": 1,
        "duplicate_predictions": 0,
    }
    assert "approximation" in captured.err and "1 gold question(s) have no prediction" in captured.err


def test_xor_retrieve_markdown_table_and_saved_report(xor_files, tmp_path, capsys):
    gold, predictions = xor_files
    saved = tmp_path / "reports" / "run1.json"
    code = cli.main(["evaluate", "xor-retrieve", "--gold", str(gold), "--predictions", str(predictions), "--tokenizer", "nltk-line", "--output", str(saved)])
    out = capsys.readouterr().out
    assert code == 0
    assert "| lang | r@2kt | r@5kt | counted |" in out
    assert "| ja | 50.00 | 50.00 | 2 |" in out
    assert "| average | 75.00 | 75.00 | – |" in out
    assert "missing_predictions: 1" in out
    assert json.loads(saved.read_text())["r@5kt"]["average"] == 75.0


def test_official_tokenizer_without_punkt_exits_1_with_the_download_command(xor_files, monkeypatch, capsys):
    def no_punkt(text, language="english"):
        raise LookupError("punkt_tab")

    monkeypatch.setattr(nltk.tokenize, "sent_tokenize", no_punkt)
    gold, predictions = xor_files
    assert cli.main(["evaluate", "xor-retrieve", "--gold", str(gold), "--predictions", str(predictions)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("umr-jax evaluate: error: ") and "python -m nltk.downloader punkt_tab" in err


def test_bad_input_exits_1_with_file_and_line(xor_files, tmp_path, capsys):
    gold, _ = xor_files
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "q1", "lang": "ja", "ctxs": []}\n{"id": "q2", "lang": "ja"}\n')
    assert cli.main(["evaluate", "xor-retrieve", "--gold", str(gold), "--predictions", str(broken), "--tokenizer", "nltk-line"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"umr-jax evaluate: error: {broken}:2: missing field 'ctxs'; expected {{id, lang, ctxs: [passage text or {{id, title, text, score}}, ...]}}"


def test_missing_required_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", "xor-retrieve", "--gold", "g.jsonl"])
    assert exit_info.value.code == 2
    assert "--predictions" in capsys.readouterr().err


def test_xor_full_json(tmp_path, capsys):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "1", "question": "?", "answers": ["Helsinki"], "lang": "fi"}\n{"id": "2", "question": "?", "answers": ["x"], "lang": "fi"}\n')
    predictions = tmp_path / "pred.json"
    predictions.write_text('{"fi_1": "Helsinki"}')
    assert cli.main(["evaluate", "xor-full", "--gold", str(gold), "--predictions", str(predictions), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["em"] == {"fi": 50.0, "average": 0.5 / 7 * 100}
    assert result["bleu"]["fi"] == 50.0  # BLEU 1.0 for the exact answer, 0 for the missing one
    assert result["counted"] == {"fi": 2} and result["missing_predictions"] == 1


def test_ir_with_queries_file(tmp_path, capsys):
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d0 1 2.0 t\nq1 Q0 d1 2 1.0 t\nq2 Q0 d2 1 1.0 t\n")
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"id": "q1", "lang": "ar"}\n{"id": "q2", "lang": "sw"}\n')
    assert cli.main(["evaluate", "ir", "--qrels", str(qrels), "--run", str(run), "--queries", str(queries), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mrr@10"] == {"ar": 0.5, "sw": 1.0, "average": 0.75}
    assert result["recall@100"] == {"ar": 1.0, "sw": 1.0, "average": 1.0}
    assert result["queries"] == {"ar": 1, "sw": 1} and result["missing_run"] == 0


def test_compare_shows_runs_side_by_side_with_differences(tmp_path, capsys):
    first, second = tmp_path / "base.json", tmp_path / "umr.json"
    report.write_report(first, {"r@2kt": {"ja": 50.0, "ko": 40.0, "average": 45.0}, "counted": {"ja": 2, "ko": 5}, "missing_predictions": 1})
    report.write_report(second, {"r@2kt": {"ja": 62.5, "average": 62.5}, "counted": {"ja": 2}, "missing_predictions": 0})
    assert cli.main(["evaluate", "compare", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert f"| lang | {first} | {second} | Δ {second} |" in out
    assert "| ja | 50.00 | 62.50 | +12.50 |" in out
    assert "| ko | 40.00 | – | – |" in out
    assert "| missing_predictions | 1 | 0 | -1 |" in out
    assert cli.main(["evaluate", "compare", str(first), str(second), "--json"]) == 0
    comparison = json.loads(capsys.readouterr().out)
    assert comparison["differences"]["r@2kt"]["average"] == {str(second): 17.5}


def test_compare_refuses_a_file_that_is_not_a_report(tmp_path, capsys):
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"name": "x"}')
    assert cli.main(["evaluate", "compare", str(bogus)]) == 1
    assert "expected an evaluation report" in capsys.readouterr().err


def test_evaluation_modules_import_nothing_heavy():
    code = (
        "import sys, umr_jax.evaluation.cli, umr_jax.evaluation.xor, umr_jax.evaluation.ir, "
        "umr_jax.evaluation.report, umr_jax.evaluation.readers; "
        "print(sorted(m for m in ('jax', 'torch', 'nltk', 'fugashi', 'ir_measures') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_command_line_bad_input_prints_no_traceback(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "q1", "answers": ["a"]}\nnot json\n')
    done = subprocess.run(
        [sys.executable, "-m", "umr_jax.cli", "evaluate", "xor-retrieve", "--gold", str(gold), "--predictions", str(gold), "--tokenizer", "nltk-line"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert re.fullmatch(rf"umr-jax evaluate: error: {re.escape(str(gold))}:2: not valid JSON .*\n", done.stderr)
