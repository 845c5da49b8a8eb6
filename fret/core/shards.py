"""Parquet shards and the per-stage manifest.

Layout of one stage: RUN/STAGE/part-00000.parquet ... plus RUN/STAGE/_rejects/part-00000.parquet
and RUN/STAGE/_manifest.json. A shard is written under a temporary name and renamed into place;
the manifest entry that marks it done is written after the rename, so a shard on disk without
its entry is simply redone.

A shard listed as done is checked before it is trusted (`shard_problem`). Its size must be the
one the manifest recorded and its Parquet footer must read and hold the recorded row count: a stat
and one small read per shard, whatever its size. Where asked (`verify=True`), its sha256 must also
be the recorded one, which catches bytes altered inside a data page (pyarrow writes no page
checksums, so such a shard may even read back without error, with other values). The checksum is a
full read (about 1 GB/s), so it is verified once per command for each stage a command plans or
reads (`RunContext.verified`: `fret run` checks a stage when it plans it, not again when the next
stage reads it; `fret generate X` checks X and the stages X reads) and in `fret report`. Manifests written before sizes and checksums were
recorded get the footer and row-count checks alone.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional

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


class Written(NamedTuple):
    """What a shard write left on disk, recorded in the manifest to check the shard later."""
    rows: int
    bytes: int
    sha256: str


WRITE_FAILURES = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                  errno.EFBIG: "file too large: a file-size limit (ulimit -f)?",
                  errno.EACCES: "not writable", errno.EPERM: "not writable",
                  errno.EROFS: "not writable: read-only file system",
                  errno.ENOTDIR: "not writable: a file stands where a folder must be",
                  errno.EEXIST: "not writable: a file stands where a folder must be",
                  errno.EISDIR: "not writable: a folder stands where the file must be"}


class WriteError(RunError):
    """A file could not be written (disk full, a size limit, no permission); nothing half-written
    is left under its name."""

    def __init__(self, path: Path, exc: OSError):
        why = WRITE_FAILURES.get(exc.errno, exc.strerror or _first_line(exc))
        super().__init__(f"cannot write {path} ({why}); nothing half-written was kept: fix this, "
                         f"then run the same command again to go on from there")


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in 1 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _atomic_write_bytes(path: Path, write) -> tuple[int, str]:
    """Write through `write(tmp)`, fsync, rename into place; returns `file_digest` of the bytes."""
    # Unique per attempt (pid and a random part): a retried attempt of a shard on a cluster and a
    # zombie attempt of it still running elsewhere never write the same temporary file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        digest = file_digest(tmp)  # hashed before the rename: the bytes the manifest vouches for
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, exc) from exc
    return digest


def write_table(path: Path, rows: list[dict], schema: pa.Schema) -> Written:
    table = pa.Table.from_pylist(rows, schema=schema)
    return Written(table.num_rows, *_atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp)))


def write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


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


def stage_command(stage: str, pipeline, run_dir, overrides=(), restart: bool = False,
                  verb: str = "generate") -> str:
    """The command that (re)makes a stage as the run was made, ready to copy:
    stage_command('corpus', 'fret.yaml', 'runs/a', ['sample.size=8']) ->
    'fret generate corpus fret.yaml --run-dir runs/a --set sample.size=8'"""
    import shlex
    words = ["fret", verb, *([stage] if verb == "generate" else []), str(pipeline or "PIPELINE"),
             "--run-dir", str(run_dir)]
    for item in overrides:
        words += ["--set", item]
    if restart:
        words += ["--restart"] if verb == "generate" else ["--restart-from", stage]
    return shlex.join(words)


def run_settings(run_dir: Path) -> tuple[Optional[str], list[str]]:
    """(pipeline file, --set items) of the last command that wrote a run folder, as saved in its
    _settings.json; (None, []) when there is none or it cannot be read."""
    try:
        saved = json.loads((Path(run_dir) / "_settings.json").read_text(encoding="utf-8"))
        return saved.get("pipeline_file"), [str(o) for o in saved.get("overrides") or []]
    except (OSError, ValueError, AttributeError):
        return None, []


def redo_hint(path: Path) -> str:
    """How to redo the stage that owns a shard or manifest, e.g. RUN/corpus/part-00001.parquet:
    the command carries the run's own pipeline file and --set items (from RUN/_settings.json)."""
    stage_dir = path.parent.parent if path.parent.name == REJECTS else path.parent
    pipeline, overrides = run_settings(stage_dir.parent)
    return (f"delete it and run `{stage_command(stage_dir.name, pipeline, stage_dir.parent, overrides)}` "
            f"to redo it (or start the stage over with --restart)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def shard_problem(path: Path, rows: int | None, size: int | None = None,
                  sha256: str | None = None, verify: bool = False) -> str | None:
    """Why a done shard cannot be trusted, or None: missing, another size, altered bytes (with
    `verify`), unreadable footer, other row count. None of size/sha256/rows: that check is skipped
    (manifests of older code).

    shard_problem(Path('corpus/part-00000.parquet'), 120, 5210) -> 'is 2605 bytes, the manifest
    recorded 5210 (truncated or replaced)' for a file cut in half.
    """
    if not path.is_file():
        return "missing"
    found_size = path.stat().st_size
    if size is not None and found_size != size:
        return f"is {found_size} bytes, the manifest recorded {size} (truncated or replaced)"
    if verify and sha256 is not None:
        if file_digest(path)[1] != sha256:
            return "its sha256 differs from the manifest's: altered since it was written"
        return None  # the very bytes that were written: footer and rows as recorded
    try:
        found = pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        return f"Parquet footer unreadable: {_first_line(exc)}"
    if rows is not None and found != rows:
        return f"holds {found} rows, the manifest recorded {rows}"
    return None


def damaged_shards(stage_dir: Path, manifest: dict, verify: bool = False) -> dict[str, str]:
    """{shard name: problem} for the done shards of a stage (and their reject shards) that fail
    `shard_problem`; `verify` also compares checksums (a full read of each)."""
    bad = {}
    for name, entry in manifest.get("shards", {}).items():
        problem = shard_problem(stage_dir / name, entry.get("rows_out"), entry.get("bytes"),
                                entry.get("sha256"), verify)
        n_rejects = sum((entry.get("rejected") or {}).values())
        if problem is None and n_rejects:
            problem = shard_problem(stage_dir / REJECTS / name, n_rejects, entry.get("rejects_bytes"),
                                    entry.get("rejects_sha256"), verify)
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
        pipeline, overrides = run_settings(stage_dir.parent)
        again = stage_command(stage_dir.name, pipeline, stage_dir.parent, overrides, restart=True)
        raise ShardError(f"{path}: this stage's manifest is corrupt ({why}); start stage "
                         f"{stage_dir.name!r} over with `{again}`")
    return manifest


def save_manifest(stage_dir: Path, manifest: dict) -> None:
    write_json(stage_dir / MANIFEST, manifest)
