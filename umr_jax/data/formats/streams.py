"""Raw items in, records out: the streams every format reader parses and every writer fills.

Readers get `(path, line, raw item or RecordError)` from `jsonl_items`, `json_list_items`,
`json_items` (either, by the first character), `text_line_items` or `parquet_items`, and hand
them to `validated` with their parser. Writers give `write_records` a shard sink factory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from umr_jax.data import reading
from umr_jax.data.files import PathLike, ShardedWriter, TextSink, expand_shards, json_dumps
from umr_jax.data.reading import iter_json_array, iter_jsonl
from umr_jax.data.validation import INVALID_UTF8, RecordError
from umr_jax.errors import InputError

SinkFactory = Callable[[IO[bytes], Path], Any]

# Items: (path, line where the item starts, the raw item or a RecordError).
Items = Iterator[tuple[str, int, Any]]


def jsonl_items(path: PathLike) -> Items:
    """The objects of a JSON-lines file, or of its shards, with their line numbers."""
    for shard in expand_shards(path):
        yield from iter_jsonl(shard)


def json_list_items(path: PathLike) -> Items:
    """The items of a file holding one JSON list (or of its shards), streamed, each with the line
    where it starts."""
    for shard in expand_shards(path):
        yield from iter_json_array(shard)


def json_items(path: PathLike) -> Items:
    """The objects of a JSON-lines file or of a file holding one JSON list, told apart by the
    first non-blank character (`[`), shard by shard."""
    for shard in expand_shards(path):
        yield from (iter_json_array(shard) if reading.first_char(shard) == "[" else iter_jsonl(shard))


def first_char(path: PathLike) -> str:
    """The first non-blank character of the file, or of its first shard ("" when blank): `[`
    starts a JSON list, `{` JSON lines."""
    return reading.first_char(expand_shards(path)[0])


def text_line_items(path: PathLike) -> Items:
    """The non-blank lines of a text file (or of its shards); a line that is not UTF-8 comes as a
    `RecordError`."""
    for shard in expand_shards(path):
        name = os.fspath(shard)
        for line, text in reading.iter_text_lines(shard):
            if isinstance(text, RecordError) or text.strip():
                yield name, line, text


def parquet_items(
    path: PathLike,
    required: Sequence[str],
    optional: Sequence[str],
    batch_size: int,
    *,
    min_similarity: float | None = None,
) -> Iterator[tuple[str, int, Any]]:
    """(path, row number from 1, row dict or RecordError) for the rows of a parquet file or its
    shards, read in batches of `batch_size` rows. With `min_similarity`, rows whose
    `semantic_similarity_score` is below it are dropped in arrow (null scores are kept, to fail
    validation)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for shard in expand_shards(path):
        name = os.fspath(shard)
        try:
            parquet = pq.ParquetFile(shard)
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"not a readable parquet file ({' '.join(str(err).split())})", shard) from None
        columns = parquet.schema_arrow.names
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"missing column(s) {', '.join(missing)}; expected columns {', '.join(required)} (and optionally {', '.join(optional)})", shard)
        wanted = list(required) + [c for c in optional if c in columns]
        first_row = 1
        for batch in _checked_batches(parquet.iter_batches(batch_size=batch_size, columns=wanted), shard):
            rows_in_batch = batch.num_rows
            row_numbers = range(first_row, first_row + rows_in_batch)
            if min_similarity is not None:
                scores = batch.column("semantic_similarity_score")
                keep = pc.or_kleene(pc.greater_equal(scores, pa.scalar(float(min_similarity))), pc.is_null(scores))
                keep = pc.fill_null(keep, True)
                indices = pc.indices_nonzero(keep).to_pylist()
                batch = batch.take(pa.array(indices, type=pa.int64()))
                row_numbers = [first_row + i for i in indices]
            first_row += rows_in_batch
            try:
                rows = batch.to_pylist()
            except UnicodeDecodeError:
                rows = []
                for i in range(batch.num_rows):
                    try:
                        rows.extend(batch.slice(i, 1).to_pylist())
                    except UnicodeDecodeError:
                        rows.append(RecordError(INVALID_UTF8, "invalid UTF-8 in a text column", name, row_numbers[i]))
            for number, row in zip(row_numbers, rows):
                yield name, number, row


def _checked_batches(batches, path: PathLike):
    """The record batches of a parquet file; a corrupt file raises `InputError`, not an arrow error."""
    import pyarrow as pa

    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"corrupt parquet file ({' '.join(str(err).split())})", path) from None
        yield batch


class JsonlSink(TextSink):
    def __init__(self, raw: IO[bytes], path: Path, to_json: Callable[[Any], dict]):
        super().__init__(raw, path)
        self.to_json = to_json

    def write(self, record: Any) -> None:
        self.text.write(json_dumps(self.to_json(record)) + "\n")


def jsonl_sink(to_json: Callable[[Any], dict]):
    """A shard sink factory for JSON lines, one `to_json(record)` per line."""
    return lambda raw, path: JsonlSink(raw, path, to_json)


class JsonListSink(TextSink):
    def __init__(self, raw: IO[bytes], path: Path, to_json: Callable[[Any], dict]):
        super().__init__(raw, path)
        self.to_json = to_json
        self.first = True
        self.text.write("[")

    def write(self, record: Any) -> None:
        self.text.write(("\n" if self.first else ",\n") + json_dumps(self.to_json(record)))
        self.first = False

    def close(self) -> None:
        self.text.write("]\n" if self.first else "\n]\n")
        super().close()


def json_list_sink(to_json: Callable[[Any], dict]):
    """A shard sink factory for one JSON list, one `to_json(record)` item per line."""
    return lambda raw, path: JsonListSink(raw, path, to_json)


class ParquetSink:
    """Rows buffered into row groups of `rows_per_group` and written with pyarrow."""

    def __init__(self, raw: IO[bytes], schema, to_row: Callable[[Any], dict], rows_per_group: int = 65536):
        import pyarrow.parquet as pq

        self.schema, self.to_row, self.rows_per_group = schema, to_row, rows_per_group
        self.writer = pq.ParquetWriter(raw, schema)
        self.rows: list[dict] = []

    def _flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def write(self, record: Any) -> None:
        self.rows.append(self.to_row(record))
        if len(self.rows) >= self.rows_per_group:
            self._flush()

    def close(self) -> None:
        self._flush()
        self.writer.close()


def parquet_sink(schema: Callable[[], Any], to_row: Callable[[Any], dict]):
    """A shard sink factory for parquet; `schema()` makes the arrow schema (pyarrow is imported
    only when a file is written)."""
    return lambda raw, path: ParquetSink(raw, schema(), to_row)


def write_records(path: PathLike, records: Iterable[Any], make_sink: SinkFactory, sharding: dict) -> list[Path]:
    """Write `records` to `path` (or shards of it: `sharding` holds `num_shards` or
    `records_per_shard`) through `make_sink`, atomically; returns the paths written."""
    unknown = set(sharding) - {"num_shards", "records_per_shard"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    with ShardedWriter(path, make_sink, **sharding) as writer:
        writer.write_all(records)
    return writer.paths
