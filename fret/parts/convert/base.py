"""Shared pieces of every converter: the context it runs in, row and reject builders, seeded choice.

A converter is a generator `fn(rows, ctx) -> Iterator[dict | Reject]`: each unified row it can
make is a dict matching `fret.core.records.Unified`; each input row it cannot use is a `Reject` with a
reason. Randomness is drawn from `ctx.rng(original_id)`, a generator seeded by (seed, source, id),
so a row's choice of negative does not depend on which rows came before it (or on `limit`).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from fret.core.records import Reject, Unified, stable_id

STAGE = "convert"


@dataclass
class Context:
    seed: int
    task: str
    language: str
    source: str
    converter: str
    options: dict[str, Any] = field(default_factory=dict)

    def rng(self, *key: object) -> random.Random:
        """A generator for one row: same seed, source and key -> same draws, in any row order."""
        return random.Random(int(stable_id(self.seed, self.source, *key), 16))

    def unified(self, *, orig_id: object, query: str, positive: str, task_type: str,
                symmetric: bool, positive_title: Optional[str] = None,
                negatives: Sequence[str] = (), negative_titles: Optional[Sequence[Optional[str]]] = None,
                lineage: Optional[dict] = None) -> dict:
        negatives = list(negatives)
        titles = list(negative_titles) if negative_titles is not None else [None] * len(negatives)
        meta = {"converter": self.converter, "origin_id": orig_id, "seed": self.seed, **(lineage or {})}
        row = {
            "id": stable_id(self.source, orig_id, query, positive, negatives, prefix=f"{self.source}-"),
            "task": self.task,
            "query": query,
            "positive": positive,
            "positive_title": positive_title,
            "negatives": negatives,
            "negative_titles": titles,
            "source": self.source,
            "task_type": task_type,
            "symmetric": symmetric,
            "language": self.language,
            "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str),
        }
        Unified.model_validate(row)  # a converter bug fails here, not in the trainer
        return row

    def reject(self, orig_id: object, reason: str, raw: object, detail: str = "") -> Reject:
        return Reject(id=stable_id(self.source, orig_id, reason, prefix=f"{self.source}-rej-"),
                      stage=STAGE, reason=reason, detail=detail,
                      raw=json.dumps(raw, ensure_ascii=False, default=str)[:20000])


ConverterFn = Callable[[Iterable[dict], Context], Iterator["dict | Reject"]]

# What one row of an unexpected shape raises inside a converter: a number where a list belongs,
# a missing key, a title that is not a string (Unified's ValidationError is a ValueError).
ROW_ERRORS = (AttributeError, IndexError, KeyError, TypeError, ValueError)


def per_row(rows: Iterable[dict], ctx: Context, one: Callable[[int, dict, Context], "dict | Reject"]
            ) -> Iterator["dict | Reject"]:
    """one(i, row, ctx) for each row; a row it cannot read becomes a `malformed_row` reject that
    says what broke, so one odd row neither stops the data set nor disappears."""
    for i, row in enumerate(rows):
        try:
            yield one(i, row, ctx)
        except ROW_ERRORS as exc:
            yield ctx.reject(i, "malformed_row", row, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


@dataclass(frozen=True)
class Converter:
    fn: ConverterFn
    source: str  # default `source` column value
    task_type: str
    task: str  # default one-sentence task description (Gecko style)
    options: dict[str, Any] = field(default_factory=dict)  # allowed options and their defaults
    doc: str = ""


def columns(value: Any) -> dict[str, list]:
    """A sequence of records as columns, whichever way it was stored.

    columns([{"a": 1}, {"a": 2}]) -> {"a": [1, 2]};  columns({"a": [1, 2]}) -> {"a": [1, 2]}
    (`datasets` stores a Sequence of dicts as a dict of lists; the JSON releases as a list of dicts.)
    """
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: list(v) if v is not None else [] for k, v in value.items()}
    keys: list[str] = []
    for item in value:
        keys += [k for k in item if k not in keys]
    return {k: [item.get(k) for item in value] for k in keys}


def records(value: Any) -> list[dict]:
    """The inverse view: records([..]) as a list of dicts. records({"a": [1, 2]}) -> [{"a": 1}, {"a": 2}]"""
    if value is None:
        return []
    if isinstance(value, dict):
        cols = columns(value)
        n = max((len(v) for v in cols.values()), default=0)
        return [{k: (v[i] if i < len(v) else None) for k, v in cols.items()} for i in range(n)]
    return list(value)


def sample(rng: random.Random, items: Sequence, k: int) -> list:
    """Up to k items, seeded, in the order drawn. sample(rng, [1, 2], 5) -> all of them, shuffled."""
    return rng.sample(list(items), min(k, len(items)))


def text_of(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
