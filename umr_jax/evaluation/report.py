"""Reports: JSON objects on disk, Markdown tables per language, side-by-side comparison.

A report is the JSON object that `umr-jax evaluate ... --json` prints. Its metric tables are
the top-level keys whose value maps a language (and "average") to a number; count tables
(`counted`, `queries`) have the same shape without "average"; the other top-level keys are
single numbers. The functions here rely on that shape only, so they serve the XOR-Retrieve,
XOR-Full and IR reports alike.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from umr_jax.data.files import AtomicFile
from umr_jax.errors import InputError

AVERAGE = "average"
MISSING = "–"


def write_report(path: str | os.PathLike, report: Mapping[str, Any]) -> None:
    """Writes the report as JSON atomically (`AtomicFile`: a temporary file in the same folder,
    fsynced, then renamed), with the mode any new file gets under the umask."""
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    with AtomicFile(path) as f:
        f.write(text.encode("utf-8"))


def read_report(path: str | os.PathLike) -> dict[str, Any]:
    """A saved report; raises InputError unless the file holds one JSON object with at least
    one table of numbers."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror})", path) from None
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON ({err.msg} at column {err.colno}); a saved evaluation report is expected", path, err.lineno) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text; a saved evaluation report (JSON) is expected", path) from None
    if not isinstance(report, dict) or not tables(report):
        raise InputError("expected an evaluation report: a JSON object with tables of numbers per language (as --json prints)", path)
    return report


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def tables(report: Mapping[str, Any]) -> dict[str, dict[str, float | int | None]]:
    """The report's tables (metric tables and count tables), in report order."""
    return {
        key: value
        for key, value in report.items()
        if isinstance(value, dict) and value and all(_is_number(v) for v in value.values())
    }


def scalars(report: Mapping[str, Any]) -> dict[str, float | int]:
    """The report's single-number entries, in report order."""
    return {key: value for key, value in report.items() if _is_number(value) and value is not None}


def _decimals(values: Sequence[float | int | None]) -> int:
    """2 decimals for a column of percentages (some |value| > 1), 4 for one of fractions."""
    return 2 if any(v is not None and abs(v) > 1 for v in values) else 4


def _format(value: float | int | None, decimals: int, signed: bool = False) -> str:
    if value is None:
        return MISSING
    sign = "+" if signed else ""
    if isinstance(value, int):
        return f"{value:{sign}d}"
    return f"{value:{sign}.{decimals}f}"


def _format_column(values: Sequence[float | int | None], decimals: int | None = None, signed: bool = False) -> list[str]:
    """Integers as they are, floats with `decimals` (default: by `_decimals`), None as –."""
    decimals = _decimals(values) if decimals is None else decimals
    return [_format(v, decimals, signed) for v in values]


def _rows(columns: Sequence[Mapping[str, Any]]) -> list[str]:
    """Row keys in first-seen order, with "average" last."""
    keys: dict[str, None] = {}
    for column in columns:
        for key in column:
            if key != AVERAGE:
                keys.setdefault(key)
    if any(AVERAGE in column for column in columns):
        keys.setdefault(AVERAGE)
    return list(keys)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_table(report: Mapping[str, Any]) -> str:
    """One Markdown table with a row per language (then "average") and a column per table,
    followed by the single-number entries as `name: value` lines."""
    report_tables = tables(report)
    row_keys = _rows(list(report_tables.values()))
    columns = [_format_column([table.get(key) for key in row_keys]) for table in report_tables.values()]
    rows = [[key] + [column[i] for column in columns] for i, key in enumerate(row_keys)]
    text = _markdown(["lang"] + list(report_tables), rows)
    extra = [f"{key}: {value}" for key, value in scalars(report).items()]
    return text + ("\n\n" + "\n".join(extra) if extra else "")


def compare(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Side-by-side values and differences against the first report.

    Returns {"runs": [names], "tables": {table: {row: {run: value}}}, "differences":
    {table: {row: {run: value - first run's value}}}} over the first report's tables and
    single numbers (single numbers under the table name "summary"). A value missing from a run
    is None, and so is a difference involving it."""
    names = [name for name, _ in reports]
    first = reports[0][1]
    compared: dict[str, dict[str, dict[str, Any]]] = {}
    for table_name, _ in tables(first).items():
        columns = [tables(report).get(table_name, {}) for _, report in reports]
        compared[table_name] = {row: {name: column.get(row) for name, column in zip(names, columns)} for row in _rows(columns)}
    summary_keys = list(scalars(first))
    if summary_keys:
        compared["summary"] = {key: {name: scalars(report).get(key) for name, report in reports} for key in summary_keys}
    differences = {
        table_name: {
            row: {name: (values[name] - values[names[0]] if values[name] is not None and values[names[0]] is not None else None) for name in names[1:]}
            for row, values in rows.items()
        }
        for table_name, rows in compared.items()
    }
    return {"runs": names, "tables": compared, "differences": differences}


def compare_markdown(comparison: Mapping[str, Any]) -> str:
    """The comparison as one Markdown table per report table: a column per run, then a
    `Δ run` column per later run (its value minus the first run's, with a sign)."""
    names = comparison["runs"]
    sections = []
    for table_name, rows in comparison["tables"].items():
        row_keys = list(rows)
        decimals = _decimals([rows[row][name] for row in row_keys for name in names])
        value_columns = [_format_column([rows[row][name] for row in row_keys], decimals) for name in names]
        diff_columns = [
            _format_column([comparison["differences"][table_name][row][name] for row in row_keys], decimals, signed=True)
            for name in names[1:]
        ]
        header = ["lang" if table_name != "summary" else "entry"] + list(names) + [f"Δ {name}" for name in names[1:]]
        body = [[row] + [column[i] for column in value_columns + diff_columns] for i, row in enumerate(row_keys)]
        sections.append(f"### {table_name}\n\n" + _markdown(header, body))
    return "\n\n".join(sections)
