"""`umr-jax data`: validate, convert and index the data files of the UMR pipeline.

    umr-jax data validate --format xor-questions --variant retrieve xor_dev_retrieve_eng_span_v1_1.jsonl
    umr-jax data convert --from retrieval --to xor-predictions run.jsonl predictions.json
    umr-jax data convert --from webfaq --to pairs --language ar --min-similarity 0.8 webfaq/ pairs.parquet
    umr-jax data index psgs_w100.tsv

Exit status: 0 when every file is valid (validate) or the conversion finished; 1 on invalid input
(`file:line: message`) or, for validate, when `--skip-invalid` skipped anything; 2 on a usage
error such as a conversion that does not exist.

Imports nothing heavy: no jax, tensorflow or torch.
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

from umr_jax.data import formats
from umr_jax.errors import InputError
from umr_jax.data.languages import KNOWN_LANGUAGES, XOR_LANGUAGES
from umr_jax.data.validation import SkippedRecords
from umr_jax.parallel.cli_flags import emit, result_stream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.parallel.cli_flags import positive_int

    names = list(formats.FORMATS)
    targets: dict[str, list[str]] = {}
    for source, target in formats.CONVERSIONS:
        targets.setdefault(source, []).append(target)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n".join(
        ["formats:"]
        + [f"  {f.name:<16} {f.description}" for f in formats.FORMATS.values()]
        + ["conversions (convert --from A --to B):"]
        + [f"  {source:<16} -> {', '.join(ts)}" for source, ts in targets.items()]
        + [f"the same names everywhere (retrieve --format, encode --passages-format, index search --format); "
           f"{formats.aliases_of(names)}"]
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    validate = sub.add_parser("validate", help="check files before a long job: counts per language, exit 0 when valid")
    validate.add_argument("--format", required=True, type=formats.canonical_format, choices=names, metavar="FORMAT", help="the files' format (see 'umr-jax data --help')")
    validate.add_argument("files", nargs="+", metavar="FILE", help="files (or shard sets name.jsonl; webfaq: parquet files or folders)")
    _add_reader_options(validate)

    convert = sub.add_parser("convert", help="convert a file between formats (atomic, optionally sharded)")
    convert.add_argument("--from", dest="source_format", required=True, type=formats.canonical_format, choices=names, metavar="FORMAT", help="input format (see 'umr-jax data --help')")
    convert.add_argument("--to", dest="target_format", required=True, type=formats.canonical_format, choices=names, metavar="FORMAT", help="output format")
    convert.add_argument("input", metavar="IN", help="input file (webfaq: a parquet file or a folder of them)")
    convert.add_argument("output", metavar="OUT", help="output file (shards are named OUT-00000-of-0000N...)")
    shards = convert.add_mutually_exclusive_group()
    shards.add_argument("--num-shards", type=positive_int, metavar="N", help="write N shards, records dealt round-robin")
    shards.add_argument("--records-per-shard", type=positive_int, metavar="K", help="write shards of K consecutive records")
    convert.add_argument("--tag", default="umr-jax", help="run tag for trec-run output (default: umr-jax)")
    _add_reader_options(convert)

    index = sub.add_parser("index", help="build the offset index (TSV.idx) for random access to a DPR passage TSV")
    index.add_argument("tsv", metavar="TSV", help="DPR passage TSV")
    index.add_argument("--rebuild", action="store_true", help="rebuild even when the index is up to date")


def _add_reader_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-invalid", action="store_true", help="skip invalid records, and print how many were skipped per reason")
    parser.add_argument("--variant", choices=formats.XOR_VARIANTS, help="xor-questions: XOR-TyDi task (accepts the 7 XOR languages only)")
    parser.add_argument("--known-language", action="append", default=[], metavar="CODE", help="accept this language code too (repeatable)")
    parser.add_argument("--language", action="append", default=None, metavar="CODE", help="webfaq, mkqa -> xor-questions: keep only this language (repeatable)")
    parser.add_argument("--min-similarity", type=float, metavar="SCORE", help="webfaq: keep rows with semantic_similarity_score >= this")
    parser.add_argument("--lang", metavar="CODE", help="webfaq: the language of files not named by it; beir-queries -> xor-questions: the queries' language")


def _reader_options(args: argparse.Namespace) -> dict[str, Any]:
    known = None
    if args.known_language:
        known = frozenset(XOR_LANGUAGES if args.variant else KNOWN_LANGUAGES) | frozenset(args.known_language)
    return {
        "variant": args.variant,
        "known_languages": known,
        "languages": args.language,
        "min_similarity": args.min_similarity,
        "lang": args.lang,
    }


def run(args: argparse.Namespace) -> int:
    if args.data_command == "validate":
        return _validate(args)
    if args.data_command == "convert":
        return _convert(args)
    return _index(args)


def _validate(args: argparse.Namespace) -> int:
    fmt = formats.FORMATS[args.format]
    options = _reader_options(args)
    sources: list[Any] = [args.files] if args.format == "webfaq" else args.files
    status = 0
    out = result_stream(args)
    reports = []
    for source in sources:
        skipped = SkippedRecords() if args.skip_invalid else None
        records = 0
        per_language: collections.Counter = collections.Counter()
        queries: set[str] = set()
        for record in formats.open_format(args.format, source, skip_invalid=skipped, **options):
            records += 1
            if fmt.record_languages is not None:
                per_language.update(fmt.record_languages(record))
            if fmt.query_of is not None:
                queries.add(fmt.query_of(record))
        name = " ".join(source) if isinstance(source, list) else source
        verdict = "valid" if not skipped else "INVALID"
        print(f"{name}: {verdict}, {records} {args.format} records", file=out)
        if fmt.query_of is not None:
            print(f"  {len(queries)} distinct queries", file=out)
        for code, count in sorted(per_language.items()):
            print(f"  {code:<6} {count}", file=out)
        report = {"file": name, "valid": not skipped, "records": records, "languages": dict(sorted(per_language.items()))}
        if fmt.query_of is not None:
            report["queries"] = len(queries)
        if skipped:
            status = 1
            _print_skipped(skipped, out)
            report["skipped"] = {"total": skipped.total, "by_reason": dict(skipped.counts)}
        reports.append(report)
    emit(args, {"format": args.format, "valid": status == 0, "files": reports}, None)
    return status


def _convert(args: argparse.Namespace) -> int:
    from umr_jax.errors import UsageError
    from umr_jax.outputs import check_output, removed_on_failure

    key = (args.source_format, args.target_format)
    if key not in formats.CONVERSIONS:
        raise UsageError(f"no conversion from {key[0]} to {key[1]}; see 'umr-jax data --help' for the possible ones")
    check_output(args.output, "file")
    try:
        with removed_on_failure(args.output):
            report = formats.convert(args.source_format, args.target_format, args.input, args.output,
                                     skip_invalid=args.skip_invalid, num_shards=args.num_shards,
                                     records_per_shard=args.records_per_shard, tag=args.tag, **_reader_options(args))
    except ValueError as err:
        if isinstance(err, InputError):
            raise
        usage = UsageError(str(err))
        usage.hints = getattr(err, "hints", ())  # type: ignore[attr-defined]
        raise usage from None
    out = result_stream(args)
    print(f"read {report.read} {args.source_format} records, wrote {report.written} {args.target_format} records to:", file=out)
    for path in report.paths:
        print(f"  {path}", file=out)
    if report.skipped:
        _print_skipped(report.skipped, out)
    emit(args, {"from": args.source_format, "to": args.target_format, "read": report.read, "written": report.written,
                "paths": [str(p) for p in report.paths], "skipped": report.skipped.total if report.skipped else 0}, None)
    return 0


def _index(args: argparse.Namespace) -> int:
    from umr_jax.data.passage_store import PassageStore

    store = PassageStore(args.tsv, rebuild=args.rebuild)
    emit(args, {"index": str(store.index_path), "passages": len(store)}, f"{store.index_path}: {len(store)} passages indexed")
    store.close()
    return 0


def _print_skipped(skipped: SkippedRecords, out=None) -> None:
    print(f"skipped {skipped.total} invalid records:", file=out)
    for line in skipped.summary_lines():
        print(f"  {line}", file=out)
