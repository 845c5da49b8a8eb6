"""Record types of every stage hand-off, and their Arrow schemas.

Each record is a pydantic model; `schema_of(Model)` derives the Parquet schema from its type
hints, so the two can never disagree. Ids are content hashes (`stable_id`), never random.
"""
from __future__ import annotations

import hashlib
import json
import types
import typing
from typing import Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict


def stable_id(*parts: object, prefix: str = "") -> str:
    """Hash of the parts, 16 hex chars. stable_id("a", 1, prefix="p-") -> 'p-...' (same forever)."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)
    return prefix + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Document(Record):
    """A text from a source, before chunking. `line` says where it came from, for errors."""
    doc_id: str
    title: Optional[str] = None
    text: str
    language: str = "en"
    source: str
    origin: str = ""  # file:line or dataset:index


class Passage(Record):
    id: str
    doc_id: str
    title: Optional[str] = None
    text: str
    language: str
    source: str
    chunk: int
    n_words: int


class Reject(Record):
    id: str
    stage: str
    reason: str
    detail: str = ""
    raw: str = ""  # the input row or LLM answer, as JSON or text


class Query(Record):
    id: str
    passage_id: Optional[str]  # the seed passage (None for user queries without a known positive)
    task_type: str
    task: str
    query: str
    language: str
    raw: str = ""  # the LLM's raw answer that the query was parsed from
    attempts: int = 0
    origin: str = "generated"  # or "user"


class Candidates(Record):
    """A query with its top-N neighbours from the seed embedder, best first."""
    id: str  # the query id
    passage_id: Optional[str]
    task_type: str
    task: str
    query: str
    language: str
    candidate_ids: list[str]
    candidate_scores: list[float]


class Reranked(Record):
    id: str
    passage_id: Optional[str]
    task_type: str
    task: str
    query: str
    language: str
    candidate_ids: list[str]
    embed_scores: list[float]
    ql_scores: list[float]
    rc_scores: list[float]
    ql_ranks: list[int]
    rc_ranks: list[int]
    rrf_scores: list[float]
    positive_id: str
    negative_ids: list[str]
    positive_is_seed: bool
    seed_rrf_rank: int  # 1-based rank of the seed passage under RRF; 0 if not among candidates


class Unified(Record):
    """The training example every pipeline ends in (its columns: README.md, the unified record)."""
    id: str
    task: str
    query: str
    positive: str
    positive_title: Optional[str] = None
    negatives: list[str]
    negative_titles: list[Optional[str]]
    source: str
    task_type: str
    symmetric: bool
    language: str
    meta: str  # JSON lineage


_SCALARS = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _arrow_type(hint) -> tuple[pa.DataType, bool]:
    """Map a type hint to (arrow type, nullable). Optional[str] -> (string, True)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _arrow_type(args[0])[0], True
    if origin is list:
        inner, _ = _arrow_type(typing.get_args(hint)[0])
        return pa.list_(inner), False
    return _SCALARS[hint], False


def schema_of(model: type[BaseModel]) -> pa.Schema:
    hints = typing.get_type_hints(model)
    fields = []
    for name in model.model_fields:
        dtype, nullable = _arrow_type(hints[name])
        fields.append(pa.field(name, dtype, nullable=nullable))
    return pa.schema(fields)


REJECT_SCHEMA = schema_of(Reject)
