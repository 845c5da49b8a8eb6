"""Stage `sample`: draw the seed passages (seeded) from the corpus.

The draw depends only on the set of corpus passage ids, the filters and the seed, so it does
not change when the corpus shards are laid out differently.
"""
from __future__ import annotations

from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from ...core.config import Section
from ...core.records import Passage, schema_of
from ...core.stage import ShardOutput, Stage


class SampleSettings(Section):
    size: int = 64
    languages: Optional[list[str]] = None  # keep only these; None = all
    min_words: int = 30  # seed passages shorter than this make poor queries
    shard_size: int = 32


class SampleStage(Stage):
    name = "sample"
    Settings = SampleSettings
    schema = schema_of(Passage)
    depends = ("corpus",)

    def _chosen_ids(self) -> list[str]:
        s = self.settings
        table = self.ctx.read_stage_table("corpus", columns=["id", "language", "n_words"])
        mask = pc.greater_equal(table["n_words"], s.min_words)
        if s.languages:
            mask = pc.and_(mask, pc.is_in(table["language"], value_set=pa.array(s.languages)))
        ids = sorted(set(table.filter(mask)["id"].to_pylist()))
        rng = self.ctx.rng("sample")
        return rng.sample(ids, min(s.size, len(ids)))

    def shard_indices(self) -> list[int]:
        self._ids = self._chosen_ids()
        per = self.settings.shard_size
        return list(range(max(1, -(-len(self._ids) // per))))

    def process(self, index: int) -> ShardOutput:
        per = self.settings.shard_size
        wanted = self._ids[index * per:(index + 1) * per]
        by_id = self.ctx.lookup("corpus", wanted)
        rows = [by_id[i] for i in wanted]
        return ShardOutput(rows=rows, rows_in=len(wanted))
