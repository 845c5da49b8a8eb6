"""Stage `corpus`: read every source, split texts into passages with stable content ids.

Output shard k holds the passages of the k-th run of `docs_per_shard` source items (documents
or rejected rows, in source order), so the same sources always give the same shards.
"""
from __future__ import annotations

import itertools
from collections import Counter

from ...core.records import Passage, Reject, schema_of
from ...core.stage import ShardOutput, Stage
from ...parts.corpus import CorpusSettings, checked, chunk_document, iter_documents


class CorpusStage(Stage):
    name = "corpus"
    Settings = CorpusSettings
    schema = schema_of(Passage)

    def _items(self):
        return itertools.chain.from_iterable(iter_documents(s) for s in self.settings.sources)

    def shard_indices(self) -> list[int]:
        # One pass to count: sources are streamed, never held whole in memory.
        n = sum(1 for _ in self._items())
        per = self.settings.docs_per_shard
        return list(range(max(1, -(-n // per))))

    def setup(self) -> None:
        self._stream = enumerate(self._items())
        self._position = 0

    def _take(self, index: int) -> list:
        """Items of shard `index`; shards are asked for in increasing order."""
        per = self.settings.docs_per_shard
        start = index * per
        if start < self._position:
            self.setup()
        items = []
        for pos, item in self._stream:
            self._position = pos + 1
            if pos >= start:
                items.append(item)
            if pos >= start + per - 1:
                break
        return items

    def process(self, index: int) -> ShardOutput:
        s = self.settings
        rows, rejects, counts = [], [], Counter()
        seen: set[str] = set()
        items = self._take(index)
        for item in items:
            if isinstance(item, Reject):
                rejects.append(checked(s, item))
                continue
            counts["documents"] += 1
            passages, bad = chunk_document(item, s.passage_words, s.min_words, s.overlap_words)
            rejects.extend(checked(s, r) for r in bad)
            for p in passages:
                if p.id in seen:  # the same passage twice in one shard (duplicate documents)
                    rejects.append(self.reject(p.id, "duplicate_passage", detail=p.doc_id))
                    continue
                seen.add(p.id)
                rows.append(p.model_dump())
        counts["passages"] = len(rows)
        return ShardOutput(rows=rows, rejects=rejects, rows_in=len(items), counts=counts)
