"""Reading training data: unified shard folders, or a FRet run's `queries` stage (bootstrap).

A folder of unified shards has the columns of `fret.core.records.Unified`; a `queries` folder has those
of `fret.core.records.Query`, and its positives are the seed passages, looked up by `passage_id` in
the sibling `corpus` stage (RUN/queries -> RUN/corpus). Either way the result is a list of
unformatted `Pair`s; `format_examples` turns them into the `Example` texts the encoder sees, once
the formatting is chosen (the Gecko default task comes from the data itself).
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq

from fret.core.errors import ConfigError
from fret.core.records import Query, Unified
from fret.core.shards import MANIFEST
from fret.parts.formatting import Formatting

UNIFIED_COLUMNS = set(Unified.model_fields)
QUERY_COLUMNS = set(Query.model_fields)


@dataclass
class Pair:
    """One training example as the data holds it, before formatting."""
    task: str
    query: str
    positive: str
    positive_title: Optional[str] = None
    negatives: list[str] = field(default_factory=list)  # best first
    negative_titles: list[Optional[str]] = field(default_factory=list)
    symmetric: bool = False
    task_type: str = ""
    source: str = ""
    folder: int = 0  # index of the --data folder it came from


@dataclass
class Example:
    query: str  # formatted
    positive: str  # formatted
    negatives: list[str] = field(default_factory=list)  # formatted, best first
    source: str = ""
    folder: int = 0  # index of the --data folder it came from


@dataclass
class DataSource:
    path: Path
    weight: float = 1.0


@dataclass
class Loaded:
    pairs: list[Pair]
    lineage: list[dict]  # one per folder: path, kind, rows, used, dropped, manifest summary


def parse_data_arg(arg: str) -> DataSource:
    """parse_data_arg('runs/x/export:2.5') -> DataSource(Path('runs/x/export'), 2.5)"""
    head, sep, tail = arg.rpartition(":")
    if sep and head:
        try:
            return DataSource(Path(head), float(tail))
        except ValueError:
            pass
    return DataSource(Path(arg), 1.0)


def shard_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of shards")
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no part-*.parquet shards")
    return files


def folder_kind(folder: Path) -> str:
    """'unified' or 'queries', from the columns of the first shard."""
    first = shard_files(folder)[0]
    columns = set(pq.read_schema(first).names)
    if UNIFIED_COLUMNS <= columns:
        return "unified"
    if QUERY_COLUMNS <= columns:
        return "queries"
    raise ConfigError(f"{first}: columns {sorted(columns)} are neither unified records nor queries")


def _read_rows(folder: Path) -> list[dict]:
    rows: list[dict] = []
    for path in shard_files(folder):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def manifest_summary(folder: Path) -> Optional[dict]:
    """The parts of a stage's run manifest worth naming in a model card."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    keep = {k: manifest[k] for k in ("stage", "settings_hash", "hash", "counts", "pipeline") if k in manifest}
    keep["shards"] = len(manifest.get("shards", {}))
    return keep


def unified_pairs(rows: list[dict], max_negatives: int, folder: int) -> list[Pair]:
    return [Pair(r["task"], r["query"], r["positive"], r["positive_title"],
                 list(r["negatives"] or [])[:max_negatives], list(r["negative_titles"] or [])[:max_negatives],
                 bool(r["symmetric"]), r.get("task_type") or "", r["source"], folder) for r in rows]


def query_pairs(queries_dir: Path, rows: list[dict], folder: int) -> tuple[list[Pair], dict]:
    """(query, seed passage) pairs for the bootstrap seed embedder; no hard negatives."""
    corpus_dir = queries_dir.parent / "corpus"
    wanted = {r["passage_id"] for r in rows if r["passage_id"]}
    passages: dict[str, dict] = {}
    for path in shard_files(corpus_dir):
        table = pq.read_table(path, columns=["id", "title", "text"])
        for p in table.to_pylist():
            if p["id"] in wanted:
                passages[p["id"]] = p
    dropped = {"no_passage_id": 0, "passage_not_in_corpus": 0}
    out = []
    for r in rows:
        if not r["passage_id"]:
            dropped["no_passage_id"] += 1
            continue
        p = passages.get(r["passage_id"])
        if p is None:
            dropped["passage_not_in_corpus"] += 1
            continue
        out.append(Pair(r["task"], r["query"], p["text"], p["title"], task_type=r.get("task_type") or "",
                        source="fret-queries", folder=folder))
    return out, {"corpus": str(corpus_dir), "dropped": dropped}


def reweight(examples: list, weight: float, rng: random.Random) -> list:
    """Scale a folder's share: weight 2 repeats every example twice, 0.5 keeps a seeded half.

    reweight([a, b, c, d], 1.5, rng) -> all four plus two of them drawn without replacement.
    """
    whole, frac = divmod(weight, 1.0)
    out = examples * int(whole)
    extra = round(frac * len(examples))
    return out + rng.sample(examples, extra)


def load_data(sources: list[DataSource], max_negatives: int, seed: int) -> Loaded:
    examples: list[Pair] = []
    lineage = []
    for index, src in enumerate(sources):
        kind = folder_kind(src.path)
        rows = _read_rows(src.path)
        info: dict = {"path": str(src.path.resolve()), "kind": kind, "weight": src.weight, "rows": len(rows)}
        if kind == "unified":
            found = unified_pairs(rows, max_negatives, index)
        else:
            found, extra = query_pairs(src.path, rows, index)
            info.update(extra)
        found = reweight(found, src.weight, random.Random(seed * 1000 + index))
        info["used"] = len(found)
        info["manifest"] = manifest_summary(src.path)
        lineage.append(info)
        examples.extend(found)
    if not examples:
        raise ConfigError("no training examples in " + ", ".join(str(s.path) for s in sources))
    return Loaded(examples, lineage)


def format_examples(pairs: list[Pair], formatting: Formatting) -> list[Example]:
    """The texts the encoder sees, one Example per Pair."""
    out = []
    for p in pairs:
        titles = p.negative_titles + [None] * (len(p.negatives) - len(p.negative_titles))
        out.append(Example(
            formatting.format_query(p.query, p.task),
            formatting.format_document(p.positive, p.positive_title, p.task, p.symmetric),
            [formatting.format_document(n, t, p.task, p.symmetric) for n, t in zip(p.negatives, titles)],
            p.source, p.folder))
    return out


def task_summary(pairs: list[Pair]) -> tuple[Optional[str], dict[str, str]]:
    """(the most frequent task, the most frequent task of each task type); ties go to the first seen.

    task_summary([Pair('A', ..., task_type='qa'), Pair('A', ...), Pair('B', ..., task_type='fc')])
    -> ('A', {'qa': 'A', 'fc': 'B'})
    """
    overall: Counter = Counter(p.task for p in pairs if p.task)
    by_type: dict[str, Counter] = {}
    for p in pairs:
        if p.task and p.task_type:
            by_type.setdefault(p.task_type, Counter())[p.task] += 1
    top = overall.most_common(1)[0][0] if overall else None
    return top, {t: c.most_common(1)[0][0] for t, c in by_type.items()}
