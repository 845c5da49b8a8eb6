"""Reading JSON-lines files one line at a time, so one bad line names itself and spoils nothing else.

`json_lines` yields ('file:line', object) for good lines and ('file:line', BadLine) for bad ones;
callers that must stop at the first bad line use `strict_json_lines`.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union


@dataclass
class BadLine:
    reason: str  # invalid_utf8 | malformed_json
    message: str  # 'data.jsonl:7: Expecting value (column 1)'
    raw: str


def json_lines(path: Path) -> Iterator[tuple[str, Union[object, BadLine]]]:
    """Every non-blank line of a .jsonl (or .jsonl.gz) file, parsed; bytes are decoded per line."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
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
                yield origin, json.loads(line)
            except json.JSONDecodeError as e:
                yield origin, BadLine("malformed_json", f"{origin}: {e.msg} (column {e.colno})", line)


def strict_json_lines(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, dict]]:
    """Like json_lines, but the first bad line or non-object raises `error` naming file and line."""
    for origin, row in json_lines(path):
        if isinstance(row, BadLine):
            raise error(f"{row.message} [{row.reason}]")
        if not isinstance(row, dict):
            raise error(f"{origin}: expected a JSON object, got {type(row).__name__}")
        yield origin, row
