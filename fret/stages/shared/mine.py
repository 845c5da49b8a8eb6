"""Stage `mine`: the seed embedder's top-N corpus neighbours of every query (FAISS).

The query text includes its task description (`embed.query_format`). Exact inner-product
search up to `index.exact_max` corpus passages, an approximate index past that. Past
`index_shard_rows` corpus vectors the index is searched in shards of that many rows, one in
memory at a time, and each query's top-N merged (fret.parts.sharded_index): with exact search the
result equals one index's, so a corpus whose vectors do not fit one worker still mines.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
from pydantic import Field

from ...core import shards
from ...core.config import Section
from ...core.records import Candidates, schema_of
from ...core.stage import ShardOutput, Stage
from ...parts.index import IndexSettings, build_index
from ...parts.sharded_index import search_sharded
from .embed import make_embedder


def vector_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An embed shard's `vector` column as one (n, dim) float32 array, straight from Arrow's
    buffers: to_pylist would make n * dim Python floats first (~250 MB for 20k x 384)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    n = len(column)
    flat = column.flatten().to_numpy(zero_copy_only=False)  # (n * dim,)
    return flat.astype(np.float32, copy=False).reshape(n, -1 if n else 0)


class MineSettings(Section):
    top_n: int = Field(20, ge=2)
    index: IndexSettings = IndexSettings()
    index_shard_rows: Optional[int] = Field(None, ge=1)  # None: one index over the whole corpus
    new_keys = {"index_shard_rows": None}


class MineStage(Stage):
    name = "mine"
    Settings = MineSettings
    schema = schema_of(Candidates)
    input = "queries"
    depends = ("embed",)
    uses_model = True

    def setup(self) -> None:
        self.ids = self.ctx.read_stage_table("embed", columns=["id"])["id"].to_pylist()
        rows = self.settings.index_shard_rows
        self.index = None
        if rows is None or len(self.ids) <= rows:
            table = self.ctx.read_stage_table("embed")
            vectors = vector_matrix(table["vector"])  # (n_passages, dim)
            self.index = build_index(vectors, self.settings.index)
        self.embedder = make_embedder(self.ctx, self.ctx.config.embed)

    def _load_vectors(self, lo: int, hi: int) -> np.ndarray:
        """Corpus vectors lo..hi (global row numbers, in embed shard order), reading only the
        embed shards that hold them."""
        parts, start = [], 0
        for path in shards.stage_shards(self.ctx.stage_dir("embed")):
            n = shards.read_table(path, columns=["id"]).num_rows
            if start < hi and start + n > lo:
                table = shards.read_table(path, columns=["vector"]).slice(max(lo - start, 0))
                table = table.slice(0, min(hi, start + n) - max(lo, start))
                parts.append(vector_matrix(table["vector"]))
            start += n
        return np.concatenate(parts)  # (hi - lo, dim)

    def _search(self, vectors: np.ndarray, k: int):
        if self.index is not None:
            return self.index.search(vectors, k)
        return search_sharded(vectors, len(self.ids), self.settings.index_shard_rows,
                              self._load_vectors, k, self.settings.index)

    def process(self, index: int) -> ShardOutput:
        queries = self.ctx.read_shard(self.input, index)
        if not queries:
            return ShardOutput(rows=[], rows_in=0)
        fmt = self.ctx.config.embed.query_format
        texts = [fmt.format(task=q["task"], query=q["query"]) for q in queries]
        vectors = self.embedder.encode(texts)  # (n_queries, dim)
        scores, found = self._search(np.asarray(vectors, dtype=np.float32), self.settings.top_n)
        rows = []
        for q, sc, idx in zip(queries, scores, found):
            keep = [(float(s), self.ids[j]) for s, j in zip(sc, idx) if j >= 0]
            rows.append(Candidates(id=q["id"], passage_id=q["passage_id"], task_type=q["task_type"],
                                   task=q["task"], query=q["query"], language=q["language"],
                                   candidate_ids=[c for _, c in keep],
                                   candidate_scores=[s for s, _ in keep]).model_dump())
        return ShardOutput(rows=rows, rows_in=len(queries))
