"""`umr-jax evaluate`: XOR-Retrieve R@kt, XOR-Full F1/EM/BLEU, IR metrics, report comparison.

  umr-jax evaluate xor-retrieve --gold GOLD.jsonl --run RUN [--tokenizer nltk|nltk-line] [--json] [--output R.json]
  umr-jax evaluate xor-full --gold GOLD.jsonl --predictions PRED.json [--json] [--output R.json]
  umr-jax evaluate ir --qrels QRELS --run RUN [--queries QUERIES.jsonl] [--json] [--output R.json]
  umr-jax evaluate compare REPORT.json REPORT.json ... [--json]

A retrieval run (`--run`) is a file in one of the formats `umr-jax data` names: `retrieval`
JSON lines, a `dpr-json` list, `xor-predictions` (the official prediction file) or a `trec-run`
(ir only). xor-full's `--predictions` is another thing: answers, not passages. (`xor-retrieve
--predictions` is the old name of its `--run`.) Without `--json` a Markdown table per language is
printed; with it, exactly one JSON object.
`--output` also saves the JSON report, for `compare`. Exit status: 0 on success, 1 for bad
input or a missing tool or data file (one line on stderr), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="evaluate_command", metavar="METRIC", required=True)

    xor_retrieve = sub.add_parser(
        "xor-retrieve",
        help="XOR-Retrieve R@2kt and R@5kt per language (the official script's semantics)",
        description="XOR-Retrieve R@2kt and R@5kt per language and macro-averaged, as the official eval_xor_retrieve.py computes them.",
    )
    xor_retrieve.add_argument("--gold", required=True, help="XOR-TyDi gold JSON lines {id, question, answers, lang}")
    xor_retrieve.add_argument(
        "--run", "--predictions", dest="run", required=True, metavar="RUN",
        help="retrieval run: xor-predictions (the official JSON list {id, lang, ctxs: [passage text, ...]}), retrieval JSON "
             "lines {id, question, lang, ctxs: [{id, title, text, score}]} or a dpr-json list; --predictions is the old name",
    )
    xor_retrieve.add_argument(
        "--tokenizer",
        choices=["nltk", "nltk-line"],
        default="nltk",
        help="nltk: the official NLTK word_tokenize (needs NLTK's Punkt data); nltk-line: word_tokenize without sentence splitting, a close approximation that needs no data",
    )
    _add_output_arguments(xor_retrieve)

    xor_full = sub.add_parser(
        "xor-full",
        help="XOR-Full F1, EM and BLEU per language (the official script's semantics)",
        description="XOR-Full F1, EM and BLEU per language and averaged over 7 languages, as the official eval_xor_full.py computes them. Japanese is tokenized with MeCab (fugashi + unidic-lite).",
    )
    xor_full.add_argument("--gold", required=True, help="XOR-TyDi gold JSON lines {id, question, answers, lang}")
    xor_full.add_argument("--predictions", required=True, help="official prediction file: one JSON object {question id: answer}")
    _add_output_arguments(xor_full)

    ir = sub.add_parser(
        "ir",
        help="nDCG@10, Recall@100, MRR@10 per language from qrels (WebFAQ, MIRACL, Mr.TyDi, MKQA)",
        description="nDCG@10, Recall@100 and MRR@10 per language, computed by ir_measures; queries missing from the run score 0 (trec_eval -c).",
    )
    ir.add_argument("--qrels", required=True, help="TREC qrels (qid 0 docid rel) or BEIR qrels TSV (query-id corpus-id score, with header)")
    ir.add_argument("--run", required=True, metavar="RUN",
                    help="retrieval run: trec-run (qid Q0 docid rank score tag), retrieval JSON lines {id, lang, ctxs: [{id, ...}]} "
                         "or a dpr-json list")
    ir.add_argument("--queries", help="JSON lines {id, lang, ...} giving each query's language (default: the run's 'lang', else one group 'all')")
    _add_output_arguments(ir)

    compare = sub.add_parser(
        "compare",
        help="show saved JSON reports side by side, with differences against the first",
        description="Show saved JSON reports (from --output or --json) side by side, with each later report's difference from the first.",
    )
    compare.add_argument("reports", nargs="+", metavar="REPORT", help="saved JSON reports; the first is the baseline")
    compare.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown tables")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object instead of a Markdown table")
    parser.add_argument("--output", metavar="FILE", help="also save the JSON report to FILE (for 'umr-jax evaluate compare')")


def run(args: argparse.Namespace) -> int:
    # A missing tool (MissingDependencyError) and bad input end in one line from umr_jax.cli.main.
    if getattr(args, "output", None):
        from umr_jax.outputs import check_output

        check_output(args.output, "file")  # before the metrics are computed
    return _COMMANDS[args.evaluate_command](args)


def _run_xor_retrieve(args: argparse.Namespace) -> int:
    from umr_jax.evaluation import readers, xor

    tokenize = xor.word_tokenizer(args.tokenizer)
    gold_answers = readers.read_xor_gold_answers(args.gold)
    result = xor.xor_retrieve_r_at_kt(gold_answers, readers.iter_xor_predictions(args.run), tokenize)
    if args.tokenizer == "nltk-line":
        _note(args, "tokenizer nltk-line: word_tokenize without Punkt sentence splitting, a close approximation of the official figures")
    if result.predictions_not_in_gold:
        _note(args, f"{result.predictions_not_in_gold} predicted question(s) are not in the gold file and were ignored")
    if result.yes_no_only:
        _note(args, f"{result.yes_no_only} predicted question(s) have only yes/no answers and were skipped, as in the official script")
    if result.missing_predictions:
        _note(args, f"{result.missing_predictions} gold question(s) have no prediction and are not counted, as in the official script")
    if result.duplicate_predictions:
        _warn(f"{result.duplicate_predictions} question id(s) are predicted more than once in {args.run}; "
              "every prediction is counted, as in the official script")
    return _emit(args, result.to_json())


def _run_xor_full(args: argparse.Namespace) -> int:
    from umr_jax.evaluation import readers, xor

    gold = readers.read_xor_full_gold(args.gold, langs=xor.XOR_FULL_LANGUAGES)
    predictions = readers.read_xor_full_predictions(args.predictions)
    result = xor.xor_full_scores(gold, predictions)
    if result.missing_predictions:
        _note(args, f"{result.missing_predictions} gold question(s) have no prediction and score 0, as in the official script")
    return _emit(args, result.to_json())


def _run_ir(args: argparse.Namespace) -> int:
    from umr_jax.evaluation import ir, readers

    qrels = readers.read_qrels(args.qrels)
    ranked_run = readers.read_run(args.run)
    query_langs = readers.read_query_langs(args.queries) if args.queries else ranked_run.langs
    result = ir.ir_scores(qrels, ranked_run.rankings, query_langs)
    if result.missing_run:
        _note(args, f"{result.missing_run} qrels query(ies) have no results in the run and score 0")
    if result.run_queries_without_qrels:
        _note(args, f"{result.run_queries_without_qrels} run query(ies) have no judgements and were ignored")
    if ir.UNKNOWN_LANG in result.queries:
        _note(args, f"{result.queries[ir.UNKNOWN_LANG]} qrels query(ies) have no known language; pass --queries to place them")
    return _emit(args, result.to_json())


def _run_compare(args: argparse.Namespace) -> int:
    from umr_jax.evaluation import report

    comparison = report.compare([(path, report.read_report(path)) for path in args.reports])
    if args.json:
        print(json.dumps(comparison, ensure_ascii=False))
    else:
        print(report.compare_markdown(comparison))
    return 0


def _emit(args: argparse.Namespace, result: dict) -> int:
    from umr_jax.evaluation import report
    from umr_jax.outputs import removed_on_failure

    if args.output:
        with removed_on_failure(args.output):
            report.write_report(args.output, result)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(report.markdown_table(result))
    return 0


def _note(args: argparse.Namespace, message: str) -> None:
    """A note on how the numbers were counted: on stderr, not under --quiet."""
    if not args.quiet:
        print(f"umr-jax evaluate: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"umr-jax evaluate: warning: {message}", file=sys.stderr)


_COMMANDS = {
    "xor-retrieve": _run_xor_retrieve,
    "xor-full": _run_xor_full,
    "ir": _run_ir,
    "compare": _run_compare,
}
