"""Reading a data set: local files (.jsonl .json .parquet .csv .tsv), `save_to_disk` folders and
`datasets` names, as plain row dicts."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable, Iterator, Optional

from fret.parts.jsonl import strict_json_lines


def _jsonl(path: Path) -> Iterator[dict]:
    return (row for _, row in strict_json_lines(path))


def _json(path: Path) -> Iterator[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # one object per line under a .json name
            yield from _jsonl(path)
            return
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of objects (or {{'data': [...]}})")
    for k, row in enumerate(data):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: item {k} is {type(row).__name__}, expected a JSON object")
        yield row


def _parquet(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        yield from batch.to_pylist()


def _csv(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")


_READERS = {".jsonl": _jsonl, ".json": _json, ".parquet": _parquet, ".csv": _csv, ".tsv": _csv}


def _named(path: Path, rows: Iterator[dict]) -> Iterator[dict]:
    """A reader's rows; what a damaged file raises inside it becomes a ValueError naming the file."""
    import pyarrow as pa

    try:
        yield from rows
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (csv.Error, RecursionError, OSError, pa.ArrowException) as e:  # nesting past the stack too
        raise ValueError(f"{path}: cannot read ({' '.join(str(e).split())[:300]})") from None


def _split_of(ds, split: Optional[str], where: str):
    import datasets

    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split is None:
            if len(ds) != 1:
                raise ValueError(f"{where} has splits {sorted(ds)}; pass split=")
            split = next(iter(ds))
        if split not in ds:
            raise ValueError(f"{where} has no split {split!r}; splits: {sorted(ds)}")
        return ds[split]
    return ds


def load_rows(source: str | Path, *, split: Optional[str] = None, config: Optional[str] = None,
              streaming: bool = False) -> Iterable[dict]:
    """Rows of a local file (.jsonl .json .parquet .csv .tsv), a `save_to_disk` folder, or a
    `datasets` name (load_dataset(source, config, split=...)); lazily where the format allows."""
    path = Path(source)
    if path.is_dir():
        if any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
            import datasets

            return _split_of(datasets.load_from_disk(str(path)), split, str(path))
        raise ValueError(f"{path} is a folder but not a saved `datasets` dataset "
                         "(no dataset_dict.json / state.json); name a file inside it")
    if path.is_file():
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise ValueError(f"{path}: unknown file type {path.suffix!r}; known: {sorted(_READERS)}")
        return _named(path, reader(path))
    if path.suffix.lower() in _READERS or str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"no such file: {path}")
    import datasets

    ds = datasets.load_dataset(str(source), config, split=split, streaming=streaming)
    return _split_of(ds, split, str(source))
