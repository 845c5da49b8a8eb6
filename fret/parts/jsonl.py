"""Reading JSON-lines files one line at a time, so one bad line names itself and spoils nothing else.

`json_lines` yields ('file:line', object) for good lines and ('file:line', BadLine) for bad ones;
callers that must stop at the first bad line use `strict_json_lines`. A damaged .gz file (the rows
after the damage are unknown) raises the caller's `error`, naming the file and the last good line.
"""
from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union


@dataclass
class BadLine:
    reason: str  # invalid_utf8 | malformed_json | lone_surrogate
    message: str  # 'data.jsonl:7: Expecting value (column 1)'
    raw: str


def _lone_surrogate(line: str, value: object) -> bool:
    """JSON can escape half a UTF-16 pair ('"\\ud800"'): valid JSON, but a string no UTF-8 file,
    Parquet shard or content hash can hold."""
    if "\\u" not in line:
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_lines(path: Path, error: type[Exception] = ValueError
               ) -> Iterator[tuple[str, Union[object, BadLine]]]:
    """Every non-blank line of a .jsonl (or .jsonl.gz) file, parsed; bytes are decoded per line."""
    path = Path(path)
    if not path.name.endswith(".gz"):
        yield from _parsed(path, open(path, "rb"))
        return
    good = f"{path}:0"
    try:
        for origin, row in _parsed(path, gzip.open(path, "rb")):
            good = origin
            yield origin, row
    except (OSError, EOFError, zlib.error) as e:
        raise error(f"{good}: damaged gzip file, unreadable after this line ({e})") from None


def _parsed(path: Path, f) -> Iterator[tuple[str, Union[object, BadLine]]]:
    with f:
        for n, raw in enumerate(f, 1):
            origin = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield origin, BadLine("invalid_utf8", f"{origin}: {e.reason} at byte {e.start}",
                                      raw.decode("utf-8", "replace"))
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield origin, BadLine("malformed_json", f"{origin}: {e.msg} (column {e.colno})", line)
                continue
            except RecursionError:
                yield origin, BadLine("malformed_json", f"{origin}: nested too deeply", line[:2000])
                continue
            if _lone_surrogate(line, value):
                yield origin, BadLine("lone_surrogate", f"{origin}: an escaped lone UTF-16 surrogate "
                                      "(\\ud800-\\udfff) is not text", line)
            else:
                yield origin, value


def strict_json_lines(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, dict]]:
    """Like json_lines, but the first bad line or non-object raises `error` naming file and line."""
    for origin, row in json_lines(path, error):
        if isinstance(row, BadLine):
            raise error(f"{row.message} [{row.reason}]")
        if not isinstance(row, dict):
            raise error(f"{origin}: expected a JSON object, got {type(row).__name__}")
        yield origin, row
