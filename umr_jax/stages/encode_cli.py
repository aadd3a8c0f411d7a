"""`umr-jax encode`: embed a passage collection or a question file with a retriever tower.

  umr-jax encode --model DIR --passages psgs_w100.tsv --output emb/          # DPR TSV or passages JSON lines
  umr-jax encode --model DIR --queries xor_dev.jsonl --output q_emb/ --output-dtype float32
  umr-jax encode --model /models/mt5-base --as-tower --passages p.jsonl --output emb/
  # one process per host: --coordinator host0:1234 --num-processes 4 --process-id I

Writes shards of float16 (or float32) embeddings with their ids and a manifest
(`umr-jax index build --embeddings emb/` reads it). Rerunning the same command after a crash
skips every finished shard; a rerun with other settings is refused. See
`umr_jax.stages.encode` for how it works.
"""

from __future__ import annotations

import argparse


def add_passages_format(parser: argparse.ArgumentParser) -> None:
    """--passages-format, in the format table's names (shared with retrieve)."""
    from umr_jax.data.formats.table import aliases_of, canonical_format

    parser.add_argument("--passages-format", type=canonical_format, choices=["auto", "dpr-passages", "passages-jsonl"],
                        default="auto", help="default: by the suffix (.tsv / .jsonl), else by the first line ("
                        + aliases_of(["dpr-passages"]) + ")")


def add_tower_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --as-tower, --pooling, --dtype, --batch-size (shared with retrieve)."""
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="the tower: a Hugging Face model folder or model ID (org/name[@revision], fetched into the "
                             "Hugging Face cache; a cached one loads offline)")
    parser.add_argument("--as-tower", action="store_true", help="a T5/mT5 folder: encode with its encoder stack")
    parser.add_argument("--pooling", choices=["mean", "cls", "pooler"], help="default: what the folder declares, else mean")
    parser.add_argument("--dtype", choices=["bfloat16", "float32", "float16"], default="bfloat16", help="compute dtype (default bfloat16)")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per batch, rounded up to a multiple of the batch devices (default 256)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.runtime import add_runtime_flags

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n")[1]
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--passages", metavar="FILE", help="passages: DPR TSV (id, text, title) or JSON lines {id, title, text}")
    source.add_argument("--queries", metavar="FILE", help="questions: XOR-TyDi JSON lines {id, question, lang}")
    add_known_language(parser)
    add_passages_format(parser)
    parser.add_argument("--output", required=True, metavar="DIR", help="embeddings folder to write (or resume)")
    add_tower_arguments(parser)
    parser.add_argument("--max-length", type=int, help="truncation length in tokens (default 256 for passages, 64 for queries)")
    parser.add_argument("--shard-size", type=int, default=100_000, help="input rows per output shard (default 100000)")
    parser.add_argument("--output-dtype", choices=["float16", "float32"], default="float16", help="stored dtype (default float16)")
    add_runtime_flags(parser, role="encode")


class RichProgress:
    """A rich progress bar on stderr counting records and showing records/s."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled = label, enabled
        self._progress = None
        self._task = None

    def start(self, total: int | None) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.text import Text

        unit = self.label

        class Rate(ProgressColumn):
            def render(self, task) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s")

        self._progress = Progress(TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), Rate(), TimeElapsedColumn(),
                                  TimeRemainingColumn(), console=Console(stderr=True))
        self._progress.start()
        self._task = self._progress.add_task("encode", total=total)

    def advance(self, rows: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, rows)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def add_known_language(parser: argparse.ArgumentParser) -> None:
    """--known-language (shared with retrieve and score): language codes accepted besides the
    known ones."""
    parser.add_argument("--known-language", action="append", default=[], metavar="CODE",
                        help="accept this language code in the questions too (repeatable)")


def known_languages(args: argparse.Namespace):
    """The codes a reader accepts: the known ones plus --known-language (None: the known ones)."""
    from umr_jax.data.languages import KNOWN_LANGUAGES

    return frozenset(KNOWN_LANGUAGES) | frozenset(args.known_language) if args.known_language else None


def check_sizes(args: argparse.Namespace, *names: str) -> None:
    """Each `--name` given must be a positive integer (max lengths at least 2 tokens)."""
    from umr_jax.errors import InputError

    for name in names:
        value = getattr(args, name)
        least = 2 if name == "max_length" else 1
        if value is not None and value < least:
            raise InputError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")


def check_not_empty(source) -> None:
    """Refuse an input with no records (an empty question file, a TSV with only its header),
    reading only up to its first record."""
    from umr_jax.data import formats
    from umr_jax.errors import InputError

    if source.format == "dpr-tsv":
        records = formats.read_dpr_passages(source.path)
    elif source.format == "passages-jsonl":
        records = formats.read_passages_jsonl(source.path)
    else:
        records = formats.read_questions(source.path, known_languages=source.known_languages)
    records = iter(records)
    first = next(records, None)
    getattr(records, "close", lambda: None)()
    if first is None:
        what = {"dpr-tsv": "no passages after the header row", "passages-jsonl": "no passages"}.get(source.format, "no questions")
        raise InputError(f"{what}; expected at least one to encode", source.path)


def run(args: argparse.Namespace) -> int:
    from umr_jax.outputs import check_output
    from umr_jax.parallel.cli_flags import emit, say
    from umr_jax.runtime import Runtime

    check_sizes(args, "batch_size", "shard_size", "max_length")
    check_output(args.output, "folder")
    runtime = Runtime.from_args(args, role="encode").start()  # before anything touches a device
    import jax

    from umr_jax.retrieval.encode import EncodeInput, TowerEncoder
    from umr_jax.stages.encode import encode_to_store

    source = (EncodeInput.passages(args.passages, args.passages_format) if args.passages
              else EncodeInput.queries(args.queries, known_languages(args)))
    source.fingerprint()  # a missing input fails before the model loads
    check_not_empty(source)  # and so does an empty one
    mesh, rules = runtime.mesh_and_rules("encode")
    encoder = TowerEncoder(args.model, mesh=mesh, rules=rules, pooling=args.pooling, as_tower=args.as_tower, dtype=args.dtype)
    label = "passages" if source.kind == "passages" else "queries"
    bar = RichProgress(label, enabled=not args.no_progress)
    try:
        report = encode_to_store(encoder, source, args.output, shard_size=args.shard_size, batch_size=args.batch_size,
                                 max_length=args.max_length, output_dtype=args.output_dtype, progress=bar)
    finally:
        bar.close()
    where = f"process {jax.process_index()}/{jax.process_count()}: " if jax.process_count() > 1 else ""
    rate = f", {report.rows_per_second:,.0f} {label}/s" if report.encoded_rows else ""
    say(args, f"{where}encoded {len(report.encoded_shards)} shards ({report.encoded_rows:,} {label}{rate}), "
              f"{len(report.skipped_shards)} already done")
    result = {"folder": str(report.folder), "kind": source.kind, "complete": bool(report.manifest),
              "encoded_shards": len(report.encoded_shards), "skipped_shards": len(report.skipped_shards),
              "encoded_rows": report.encoded_rows, "rows_per_second": report.rows_per_second}
    if report.manifest:
        result.update(rows=report.total_rows, dim=report.dim, dtype=report.dtype, shards=report.num_shards)
    emit(args, result, f"{report.folder}: {report.total_rows:,} {label} x {report.dim} ({report.dtype}) in {report.num_shards} shards"
         if report.manifest else None)
    return 0
