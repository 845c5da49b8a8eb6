"""Stage `export` (FRet): reranked queries -> unified training examples (its columns: README.md, the unified record)."""
from __future__ import annotations

import json

from ...core.config import Section
from ...core.records import Unified, schema_of, stable_id
from ...core.stage import ShardOutput, Stage


def scores_at(r: dict, candidate_id: str) -> dict:
    """The QL / RC / RRF / embedder scores of one candidate of a reranked row ({} for a seed
    positive that the embedder did not retrieve)."""
    if candidate_id not in r["candidate_ids"]:
        return {}
    k = r["candidate_ids"].index(candidate_id)
    return {"ql": r["ql_scores"][k], "rc": r["rc_scores"][k], "rrf": r["rrf_scores"][k],
            "embed": r["embed_scores"][k]}


class FretExportSettings(Section):
    source: str = "fret"
    symmetric_task_types: list[str] = ["similar_sentence"]


class FretExportStage(Stage):
    name = "export"
    Settings = FretExportSettings
    schema = schema_of(Unified)
    input = "rerank"
    depends = ("corpus",)

    def process(self, index: int) -> ShardOutput:
        s = self.settings
        ranked = self.ctx.read_shard("rerank", index)
        passages = self.ctx.lookup("corpus", [i for r in ranked for i in [r["positive_id"], *r["negative_ids"]]])
        llm = self.ctx.llm_identity()
        rows = []
        for r in ranked:
            pos = passages[r["positive_id"]]
            negs = [passages[i] for i in r["negative_ids"]]
            meta = {
                "query_id": r["id"], "seed_passage_id": r["passage_id"],
                "positive_id": r["positive_id"], "negative_ids": r["negative_ids"],
                "positive_is_seed": r["positive_is_seed"], "seed_rrf_rank": r["seed_rrf_rank"],
                "positive_scores": scores_at(r, r["positive_id"]),
                "negative_scores": [scores_at(r, i) for i in r["negative_ids"]],
                "llm": llm, "embedder": self.ctx.config.embed.model,
                "settings_hashes": self._hashes(),
            }
            rows.append(Unified(
                id=stable_id("fret", r["id"], r["positive_id"], r["negative_ids"], prefix="fret-"),
                task=r["task"], query=r["query"], positive=pos["text"],
                positive_title=pos.get("title"), negatives=[n["text"] for n in negs],
                negative_titles=[n.get("title") for n in negs], source=s.source,
                task_type=r["task_type"], symmetric=r["task_type"] in s.symmetric_task_types,
                language=r["language"], meta=json.dumps(meta, sort_keys=True)).model_dump())
        return ShardOutput(rows=rows, rows_in=len(ranked))

    def _hashes(self) -> dict:
        from ...core.shards import load_manifest
        if not hasattr(self, "_cached_hashes"):
            self._cached_hashes = {n: load_manifest(self.ctx.stage_dir(n)).get("settings_hash")
                                   for n in ("queries", "mine", "rerank")}
        return self._cached_hashes
