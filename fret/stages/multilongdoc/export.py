"""Stage `export` of MultiLongDoc: (question, whole document) pairs as unified rows.

`task_type` is `long_doc`. With `num_negatives` > 0, hard negatives are the shared `mine`
stage's nearest documents to the question (the document itself left out, the first
`skip_top` others skipped as likely false negatives); with 0, `embed` and `mine` are not read
and need not run (`fret generate longdocs/questions/export`).

BGE-M3's data note: with a small probability (`shuffle_segments`, 0.2% as in the paper) the
document is cut into three segments, at paragraph breaks or else at sentence ends, and put
together in another order, so that a model cannot rely on the opening sentences alone. The draw
is seeded per question; the order used is kept in `meta.segment_order` and counted.
"""
from __future__ import annotations

import json
import random
from itertools import accumulate, permutations
from typing import Optional

from pydantic import Field

from ...core.config import Section
from ...core.records import Unified, schema_of, stable_id
from ...core.stage import ShardOutput, Stage
from ...parts.chunking import sentence_units, word_spans
from .questions import paragraphs


class MLDExportSettings(Section):
    source: str = "multilongdoc"
    num_negatives: int = Field(1, ge=0)
    skip_top: int = Field(0, ge=0)
    # BGE-M3 shuffles three segments of news-like texts with probability 0.2%; 0 turns it off
    shuffle_segments: float = Field(0.002, ge=0.0, le=1.0)


def pick_negatives(candidate_ids: list[str], positive_id: str, skip_top: int, n: int) -> list[str]:
    """pick_negatives(['a', 'p', 'b', 'c'], 'p', skip_top=1, n=1) -> ['b']"""
    others = [c for c in candidate_ids if c != positive_id]
    return others[skip_top:skip_top + n]


def segment_starts(text: str) -> list[int]:
    """Offsets where a segment may start: paragraph starts, or sentence starts if there are
    fewer than three paragraphs. segment_starts('A b.\n\nC.\n\nD.') -> [6, 10]"""
    starts = [a for a, _ in paragraphs(text)][1:]
    if len(starts) >= 2:
        return starts
    spans = word_spans(text)
    ends = list(accumulate(sentence_units(text, spans, max_words=len(spans) or 1)))
    return [spans[i][0] for i in ends[:-1]]


def shuffle_three_segments(text: str, rng: random.Random) -> Optional[tuple[str, list[int]]]:
    """(text with its three segments in a new order, that order), or None when the text has
    fewer than three paragraphs or sentences. Cuts sit nearest to a third and two thirds."""
    starts = segment_starts(text)
    if len(starts) < 2:
        return None
    n = len(text)
    i = min(range(len(starts) - 1), key=lambda k: abs(starts[k] - n / 3))
    j = min(range(i + 1, len(starts)), key=lambda k: abs(starts[k] - 2 * n / 3))
    segments = [text[:starts[i]], text[starts[i]:starts[j]], text[starts[j]:]]
    order = list(rng.choice([p for p in permutations(range(3)) if p != (0, 1, 2)]))
    return "\n\n".join(segments[k].strip() for k in order), order


class MLDExportStage(Stage):
    name = "export"
    Settings = MLDExportSettings
    schema = schema_of(Unified)
    input = "questions"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.depends = ("longdocs", "mine") if settings.num_negatives else ("longdocs",)

    def process(self, index: int) -> ShardOutput:
        from ...core.shards import load_manifest
        s = self.settings
        questions = self.ctx.read_shard("questions", index)
        negatives: dict[str, list[str]] = {}
        if s.num_negatives:
            mined = self.ctx.lookup("mine", [q["id"] for q in questions])
            negatives = {qid: pick_negatives(m["candidate_ids"], m["passage_id"], s.skip_top,
                                             s.num_negatives) for qid, m in mined.items()}
        docs = self.ctx.lookup("longdocs", [q["passage_id"] for q in questions] +
                               [i for ids in negatives.values() for i in ids])
        hashes = {n: load_manifest(self.ctx.stage_dir(n)).get("settings_hash")
                  for n in ("longdocs", "questions", *self.depends[1:])}
        out = ShardOutput(rows=[], rows_in=len(questions))
        for q in questions:
            doc = docs[q["passage_id"]]
            negs = [docs[i] for i in negatives.get(q["id"], [])]
            positive, order = doc["text"], None
            rng = self.ctx.rng("shuffle_segments", q["id"])
            if rng.random() < s.shuffle_segments:
                shuffled = shuffle_three_segments(positive, rng)
                out.counts["segments_shuffled" if shuffled else "shuffle_skipped_too_few_segments"] += 1
                if shuffled:
                    positive, order = shuffled
            meta = {"question_id": q["id"], "document_id": doc["id"], "paragraph": q["paragraph"],
                    "paragraph_text": q["paragraph_text"], "n_tokens": doc["n_tokens"],
                    "negative_ids": [n["id"] for n in negs], "segment_order": order,
                    "llm": self.ctx.llm_identity(), "settings_hashes": hashes}
            out.rows.append(Unified(
                id=stable_id("multilongdoc", q["id"], doc["id"], meta["negative_ids"], prefix="mld-"),
                task=q["task"], query=q["query"], positive=positive, positive_title=doc["title"],
                negatives=[n["text"] for n in negs], negative_titles=[n["title"] for n in negs],
                source=s.source, task_type="long_doc", symmetric=False, language=q["language"],
                meta=json.dumps(meta, sort_keys=True, ensure_ascii=False)).model_dump())
        return out
