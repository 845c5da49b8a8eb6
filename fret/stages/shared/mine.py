"""Stage `mine`: the seed embedder's top-N corpus neighbours of every query (FAISS).

The query text includes its task description (`embed.query_format`). Exact inner-product
search up to `index.exact_max` corpus passages, an approximate index past that.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from ...core.config import Section
from ...core.records import Candidates, schema_of
from ...core.stage import ShardOutput, Stage
from ...parts.index import IndexSettings, build_index
from .embed import make_embedder


class MineSettings(Section):
    top_n: int = Field(20, ge=2)
    index: IndexSettings = IndexSettings()


class MineStage(Stage):
    name = "mine"
    Settings = MineSettings
    schema = schema_of(Candidates)
    input = "queries"
    depends = ("embed",)

    def setup(self) -> None:
        table = self.ctx.read_stage_table("embed")
        self.ids = table["id"].to_pylist()
        vectors = np.asarray(table["vector"].to_pylist(), dtype=np.float32)  # (n_passages, dim)
        self.index = build_index(vectors, self.settings.index)
        self.embedder = make_embedder(self.ctx.config.embed)

    def process(self, index: int) -> ShardOutput:
        queries = self.ctx.read_shard(self.input, index)
        if not queries:
            return ShardOutput(rows=[], rows_in=0)
        fmt = self.ctx.config.embed.query_format
        texts = [fmt.format(task=q["task"], query=q["query"]) for q in queries]
        vectors = self.embedder.encode(texts)  # (n_queries, dim)
        scores, found = self.index.search(np.asarray(vectors, dtype=np.float32), self.settings.top_n)
        rows = []
        for q, sc, idx in zip(queries, scores, found):
            keep = [(float(s), self.ids[j]) for s, j in zip(sc, idx) if j >= 0]
            rows.append(Candidates(id=q["id"], passage_id=q["passage_id"], task_type=q["task_type"],
                                   task=q["task"], query=q["query"], language=q["language"],
                                   candidate_ids=[c for _, c in keep],
                                   candidate_scores=[s for s, _ in keep]).model_dump())
        return ShardOutput(rows=rows, rows_in=len(queries))
