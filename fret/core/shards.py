"""Parquet shards and the per-stage manifest.

Layout of one stage: RUN/STAGE/part-00000.parquet ... plus RUN/STAGE/_rejects/part-00000.parquet
and RUN/STAGE/_manifest.json. A shard is written under a temporary name and renamed into place;
the manifest entry that marks it done is written after the rename, so a shard on disk without
its entry is simply redone.

A shard listed as done is checked before it is trusted (`shard_problem`): its Parquet footer must
read and hold the row count the manifest recorded. That costs one small read per shard, whatever
its size, and needs nothing the manifest does not already hold, so runs made before the check are
checked too. It catches a truncated, emptied, deleted or replaced shard; bytes flipped inside a
data page pass it and are named by `read_rows` when the shard is read.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import RunError

MANIFEST = "_manifest.json"
REJECTS = "_rejects"


class ShardError(RunError):
    """A shard or manifest on disk is damaged; the message names the file and the fix."""


def shard_name(index: int) -> str:
    """shard_name(3) -> 'part-00003.parquet'"""
    return f"part-{index:05d}.parquet"


def shard_index(path: Path) -> int:
    """shard_index(Path('x/part-00003.parquet')) -> 3"""
    return int(path.stem.split("-")[1])


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per attempt (pid and a random part): a retried attempt of a shard on a cluster and a
    # zombie attempt of it still running elsewhere never write the same temporary file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_table(path: Path, rows: list[dict], schema: pa.Schema) -> int:
    table = pa.Table.from_pylist(rows, schema=schema)
    _atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp))
    return table.num_rows


def write_json(path: Path, obj: Any) -> None:
    def write(tmp):
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    _atomic_write_bytes(path, write)


def read_rows(path: Path) -> list[dict]:
    return read_table(path).to_pylist()


def read_table(path: Path, **kwargs) -> pa.Table:
    """pq.read_table, with a damaged file named in one line instead of a pyarrow traceback."""
    try:
        return pq.read_table(path, **kwargs)
    except PermissionError:
        raise
    except FileNotFoundError:
        raise ShardError(f"{path}: shard is missing; {redo_hint(Path(path))}") from None
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: cannot read this shard ({_first_line(exc)}); "
                         f"{redo_hint(Path(path))}") from None


def redo_hint(path: Path) -> str:
    """How to redo the stage that owns a shard or manifest, e.g. RUN/corpus/part-00001.parquet."""
    stage_dir = path.parent.parent if path.parent.name == REJECTS else path.parent
    return (f"delete it and run `fret generate {stage_dir.name} PIPELINE --run-dir {stage_dir.parent}` "
            f"to redo it (or start the stage over with --restart)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def shard_problem(path: Path, rows: int | None) -> str | None:
    """Why a done shard cannot be trusted, or None: missing, unreadable footer, other row count.

    shard_problem(Path('corpus/part-00000.parquet'), 120) -> 'Parquet footer unreadable (...)'
    for a truncated file. Reads the footer only (a few kB), not the data.
    """
    if not path.is_file():
        return "missing"
    try:
        found = pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        return f"Parquet footer unreadable: {_first_line(exc)}"
    if rows is not None and found != rows:
        return f"holds {found} rows, the manifest recorded {rows}"
    return None


def damaged_shards(stage_dir: Path, manifest: dict) -> dict[str, str]:
    """{shard name: problem} for the done shards of a stage (and their reject shards) that fail
    `shard_problem`."""
    bad = {}
    for name, entry in manifest.get("shards", {}).items():
        problem = shard_problem(stage_dir / name, entry.get("rows_out"))
        n_rejects = sum((entry.get("rejected") or {}).values())
        if problem is None and n_rejects:
            problem = shard_problem(stage_dir / REJECTS / name, n_rejects)
            if problem:
                problem = f"its rejects {REJECTS}/{name}: {problem}"
        if problem:
            bad[name] = problem
    return bad


def stage_shards(stage_dir: Path) -> list[Path]:
    """Done shards of a stage, in index order (only those the manifest lists)."""
    manifest = load_manifest(stage_dir)
    return [stage_dir / name for name in sorted(manifest.get("shards", {}))]


def iter_stage_rows(stage_dir: Path) -> Iterable[tuple[int, list[dict]]]:
    for path in stage_shards(stage_dir):
        yield shard_index(path), read_rows(path)


def load_manifest(stage_dir: Path) -> dict:
    path = stage_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        manifest = exc
    if not isinstance(manifest, dict):
        why = f"not valid JSON: {manifest}" if isinstance(manifest, Exception) else "not a JSON object"
        raise ShardError(f"{path}: this stage's manifest is corrupt ({why}); start stage "
                         f"{stage_dir.name!r} over with `fret generate {stage_dir.name} PIPELINE "
                         f"--run-dir {stage_dir.parent} --restart`")
    return manifest


def save_manifest(stage_dir: Path, manifest: dict) -> None:
    write_json(stage_dir / MANIFEST, manifest)
