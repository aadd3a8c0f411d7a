"""Raw reading of input files, with line numbers: a (gzipped) file opened for reading, its
UTF-8 text lines, the one JSON value of a small file, JSON Lines, and a JSON list streamed item
by item. A line or item that cannot be decoded comes back as a skippable `RecordError`; a file
that cannot be read (or a JSON list that is not well-formed) raises `InputError`. A `.gz` suffix
means gzip. Writing and shard discovery are in `umr_jax.data.files`.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import re
from typing import IO, Any, Iterator

from umr_jax import storage
from umr_jax.data.files import PathLike
from umr_jax.data.validation import INVALID_UTF8, MALFORMED, RecordError
from umr_jax.errors import InputError


def open_binary(path: PathLike) -> IO[bytes]:
    """`path` opened for binary reading, gunzipped when the name ends in `.gz` (a `gs://` file is
    read from its local mirror, downloaded first when stale)."""
    path = storage.fetch(path)
    try:
        return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror})", path) from None


def iter_text_lines(path: PathLike) -> Iterator[tuple[int, str | RecordError]]:
    """(line number, decoded line without its newline) for every line of `path`; a line that is
    not UTF-8 comes as a `RecordError` so a reader can skip it and go on."""
    with open_binary(path) as f:
        try:
            for number, raw in enumerate(f, start=1):
                try:
                    # utf-8-sig on the first line drops a byte-order mark some editors write.
                    yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    yield number, RecordError(INVALID_UTF8, f"invalid UTF-8 at byte {err.start} of the line", path, number)
        except (OSError, EOFError) as err:
            raise InputError(f"cannot read ({err})", path) from None


def read_json(path: PathLike, expected: str) -> Any:
    """The one JSON value a whole (small) file holds; `expected` names it in error messages
    (`not valid JSON (...); {expected} is expected`)."""
    with open_binary(path) as f:
        try:
            data = f.read()
        except (OSError, EOFError) as err:
            raise InputError(f"cannot read ({err})", path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason} at byte {err.start})", path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON ({err.msg} at column {err.colno}); {expected} is expected", path, err.lineno) from None


def first_char(path: PathLike) -> str:
    """The first character of `path` after any byte-order mark and whitespace, or "" when there
    is none: `[` starts a JSON list, `{` a JSON-lines file."""
    with open_binary(path) as f:
        try:
            head = f.read(4096).removeprefix(codecs.BOM_UTF8)
            while head:
                stripped = head.lstrip(b" \t\r\n")
                if stripped:
                    return stripped[:4].decode("utf-8", errors="replace")[0]
                head = f.read(4096)
        except (OSError, EOFError) as err:
            raise InputError(f"cannot read ({err})", path) from None
    return ""


def iter_jsonl(path: PathLike) -> Iterator[tuple[str, int, Any]]:
    """(path, line, JSON object or RecordError) for every non-blank line of a JSON-lines file."""
    name = os.fspath(path)
    for number, line in iter_text_lines(path):
        if isinstance(line, RecordError):
            yield name, number, line
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            hint = " (this looks like a JSON list: is it dpr-json or xor-predictions?)" if number == 1 and line.lstrip().startswith("[") else ""
            yield name, number, RecordError(MALFORMED, f"not valid JSON ({err.msg} at column {err.colno}); expected one JSON object per line{hint}", path, number)
            continue
        if not isinstance(obj, dict):
            yield name, number, RecordError(MALFORMED, f"expected a JSON object, got {type(obj).__name__}", path, number)
            continue
        yield name, number, obj


_JSON_WS = re.compile(r"[ \t\n\r]*")
# Bytes that are not UTF-8 decode to lone surrogates under errors="surrogateescape".
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_CHUNK = 1 << 20


def iter_json_array(path: PathLike) -> Iterator[tuple[str, int, Any]]:
    """(path, line where the item starts, item or RecordError) for every item of a file holding one
    JSON list, streamed: memory holds one item (plus a read chunk), never the whole list.

    An item whose bytes are not UTF-8 comes as a skippable `RecordError`; a list that is not
    well-formed JSON raises `InputError`, since no later item can be found reliably.
    """
    name = os.fspath(path)
    decoder = json.JSONDecoder()
    text_decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")  # drops a leading BOM
    with open_binary(path) as f:
        buf, pos, line, eof = "", 0, 1, False

        def more(min_chars: int = 0) -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            try:
                data = f.read(max(_CHUNK, min_chars))
            except (OSError, EOFError) as err:
                raise InputError(f"cannot read ({err})", path) from None
            if not data:
                eof = True
                buf = buf[pos:] + text_decoder.decode(b"", final=True)
                pos = 0
                return False
            buf = buf[pos:] + text_decoder.decode(data)
            pos = 0
            return True

        def skip_ws() -> None:
            nonlocal pos, line
            while True:
                end = _JSON_WS.match(buf, pos).end()
                line += buf.count("\n", pos, end)
                pos = end
                if pos < len(buf) or not more():
                    return

        def fail(message: str) -> InputError:
            return InputError(message, path, line)

        more()
        skip_ws()
        if buf[pos:pos + 1] != "[":
            raise fail("expected a JSON list ('[')")
        pos += 1
        skip_ws()
        if buf[pos:pos + 1] == "]":
            return
        number = 0
        while True:
            while True:
                try:
                    item, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as err:
                    # An item cut by the end of the buffer fails at the buffer's end (within an
                    # escape's length), or as a string left open: read on (doubling) and retry.
                    truncated = err.pos >= len(buf) - 6 or err.msg.startswith("Unterminated string")
                    at = line + buf.count("\n", pos, err.pos)
                    if not (truncated and more(len(buf) - pos)):
                        raise fail(f"not valid JSON in list item {number + 1} ({err.msg.removesuffix(' starting at')} at line {at})") from None
            number += 1
            raw_text = buf[pos:end]
            start_line = line
            line += raw_text.count("\n")
            pos = end
            if _ESCAPED_BYTE.search(raw_text):
                yield name, start_line, RecordError(INVALID_UTF8, f"list item {number} is not valid UTF-8", path, start_line)
            elif not isinstance(item, dict):
                yield name, start_line, RecordError(MALFORMED, f"list item {number}: expected a JSON object, got {type(item).__name__}", path, start_line)
            else:
                yield name, start_line, item
            skip_ws()
            sep = buf[pos:pos + 1]
            if sep == ",":
                pos += 1
                skip_ws()
                continue
            if sep == "]":
                pos += 1
                skip_ws()
                if pos < len(buf):
                    raise fail("unexpected text after the end of the JSON list")
                return
            raise fail(f"expected ',' or ']' after list item {number}")
