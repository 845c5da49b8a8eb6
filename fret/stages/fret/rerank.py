"""Stage `rerank`: the LLM scores every mined candidate and the rankings are fused.

QL(q, p) = log P(query | few-shot prompt, passage); RC(q, p) from the log-probabilities of graded
relevance labels after (query, passage) (`LLM.label_logprobs`: whole labels, or on the `openai`
backend each label's first token, one request per pair), scored by `rc_score`. The rankings of
the signals in `fusion` (QL, RC, and the embedder's own rank) are fused by weighted reciprocal
rank fusion, R = sum_s w_s / (k + r_s) (the paper: QL + RC, k = 0; the default adds the
embedder). The positive is the top passage under R; hard negatives are the last-ranked one(s) or a seeded sample of ranks 2..N.

`score_pairs` and `fuse` are the one scoring path: `fret eval --rerank` (fret.parts.evaluation.teacher)
calls them too. Where the backend has no prompt log-probabilities (a chat-only API), QL is left
out and the stage fuses RC with the embedder's rank, counting the pairs as `ql_unavailable`.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional

from pydantic import Field

from ...core.config import Section
from ...core.records import Reranked, schema_of
from ...core.stage import ShardOutput, Stage
from ...parts.llm import LabelRequest, LoglikRequest
from ...parts.prompts import load_template

DEFAULT_LABELS = {"Perfectly relevant": 3.0, "Highly relevant": 2.0,
                  "Somewhat relevant": 1.0, "Not relevant": 0.0}
CONTENT_FREE = "N/A"  # the passage of the calibration prompt (Zhao et al. 2021, contextual calibration)
Signal = Literal["ql", "rc", "embed"]


class RerankSettings(Section):
    ql_template: str = "fret_ql.jinja"
    rc_template: str = "fret_rc.jinja"
    labels: dict[str, float] = DEFAULT_LABELS  # label text -> relevance grade
    # expected: expected grade under the label distribution; top_label: the top grade's logprob;
    # calibrated: expected grade after dividing out the labels' prior for the query on a
    # content-free passage (+1 request per query); log_ratio: log P(top grade) - log P(bottom grade)
    # Defaults measured with `fret eval --rerank` on XQuAD-en with the embedded SmolLM2 (README,
    # "Measuring the teacher"): expected/calibrated/log_ratio RC ranked relevant passages last,
    # top_label did not, and adding the embedder's rank beat both the embedder and QL alone.
    rc_score: Literal["expected", "top_label", "calibrated", "log_ratio"] = "top_label"
    fusion: dict[Signal, float] = {"ql": 1.0, "rc": 1.0, "embed": 1.0}  # signal -> RRF weight
    rrf_k: float = Field(0.0, ge=0)
    negatives: Literal["last", "sample"] = "last"
    num_negatives: int = Field(1, ge=0)
    max_passage_words: int = 200
    # fused: the top passage under the fusion (FRet); seed: the passage the query was written
    # from, whatever the LLM says (the Promptagator / InPars baseline, for ablations)
    positive: Literal["fused", "seed"] = "fused"
    # Round-trip consistency (Promptagator): keep a query only if the seed embedder ranks its
    # seed passage within this many candidates; others are rejected (`seed_not_retrieved`)
    # before any LLM scoring. null = keep all.
    max_seed_rank: Optional[int] = Field(None, ge=1)
    new_keys = {"positive": "fused", "max_seed_rank": None}


def ranks(scores: list[float]) -> list[int]:
    """1 = best; ties keep candidate (embedder) order. ranks([0.1, 0.9, 0.1]) -> [2, 1, 3]"""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    out = [0] * len(scores)
    for r, i in enumerate(order, 1):
        out[i] = r
    return out


def rrf(*rankings: list[int], k: float = 0.0, weights: Optional[list[float]] = None) -> list[float]:
    """rrf([1, 2], [2, 1]) -> [1.5, 1.5]; rrf([1, 2], [2, 1], weights=[2, 1]) -> [2.5, 2.0]"""
    weights = weights or [1.0] * len(rankings)
    return [sum(w / (k + r[i]) for w, r in zip(weights, rankings)) for i in range(len(rankings[0]))]


def _softmax(logliks: list[float]) -> list[float]:
    top = max(logliks)
    weights = [math.exp(x - top) for x in logliks]
    return [w / sum(weights) for w in weights]


def rc_score(logliks: list[float], grades: list[float], mode: str,
             prior: Optional[list[float]] = None) -> float:
    """One relevance score from the labels' log-likelihoods (see RerankSettings.rc_score)."""
    if mode == "top_label":
        return logliks[max(range(len(grades)), key=grades.__getitem__)]
    if mode == "log_ratio":
        return logliks[grades.index(max(grades))] - logliks[grades.index(min(grades))]
    if mode == "calibrated":
        logliks = [x - p for x, p in zip(logliks, prior)]
    return sum(p * g for p, g in zip(_softmax(logliks), grades))


def usable_fusion(fusion: dict[str, float], has_ql: bool) -> dict[str, float]:
    """The signals (with weights) the backend can serve: without prompt logprobs QL is dropped
    and RC and the embedder's rank are fused (weight 1 unless set).
    usable_fusion({'ql': 1, 'embed': 2}, False) -> {'embed': 2, 'rc': 1.0}"""
    weights = {sig: w for sig, w in fusion.items() if w}
    if has_ql or "ql" not in weights:
        return weights
    rest = {sig: w for sig, w in weights.items() if sig != "ql"}
    return {**rest, "rc": rest.get("rc", 1.0), "embed": rest.get("embed", 1.0)}


def fuse(weights: dict[str, float], by_signal: dict[str, list[int]], k: float) -> list[float]:
    """Weighted RRF over the named signals' ranks."""
    names = [sig for sig, w in weights.items() if w]
    return rrf(*(by_signal[sig] for sig in names), k=k, weights=[weights[sig] for sig in names])


@dataclass
class Scores:
    """Per (query, passage) pair; a signal not asked for, or not available, is None."""
    ql: Optional[list[float]]
    rc: Optional[list[float]]
    counts: Counter = field(default_factory=Counter)


def passage_text(text: str, max_words: int) -> str:
    return " ".join(text.split()[:max_words])


def score_pairs(llm, s: RerankSettings, ql_template, rc_template, pairs: list[tuple[str, str]],
                signals: Iterable[str]) -> Scores:
    """QL and/or RC (those in `signals`) of each (query, passage text) pair: the scoring of
    `rerank` and `fret eval --rerank`. QL is skipped, and its pairs counted as `ql_unavailable`,
    where the backend has no prompt log-probabilities."""
    signals = set(signals)
    passages = [passage_text(p, s.max_passage_words) for _, p in pairs]
    counts = Counter(pairs_scored=len(pairs))
    ql = rc = None
    if "ql" in signals and not llm.has_prompt_logprobs():
        counts["ql_unavailable"] = len(pairs)
    elif "ql" in signals:
        ql = [r.logprobs[0] for r in llm.loglik([LoglikRequest(ql_template.render(passage=p), (" " + q,))
                                                  for (q, _), p in zip(pairs, passages)])]
        counts["ql_requests"] = len(pairs)
    if "rc" in signals:
        labels = list(s.labels)
        grades = [s.labels[label] for label in labels]
        continuations = tuple(" " + label for label in labels)
        answers = llm.label_logprobs([LabelRequest(rc_template.render(query=q, passage=p), continuations)
                                      for (q, _), p in zip(pairs, passages)])
        counts["rc_requests"] = len(pairs)
        priors: dict[str, list[float]] = {}
        if s.rc_score == "calibrated":
            queries = sorted({q for q, _ in pairs})
            found = llm.label_logprobs([LabelRequest(rc_template.render(query=q, passage=CONTENT_FREE),
                                                     continuations) for q in queries])
            priors = {q: a.logprobs for q, a in zip(queries, found)}
            counts["rc_prior_requests"] = len(queries)
        rc = [rc_score(a.logprobs, grades, s.rc_score, priors.get(q)) for (q, _), a in zip(pairs, answers)]
    return Scores(ql=ql, rc=rc, counts=counts)


def signal_ranks(ql: Optional[list[float]], rc: Optional[list[float]], n: int) -> dict[str, list[int]]:
    """Ranks per signal over n candidates in embedder order; 0s for a signal not scored."""
    return {"ql": ranks(ql) if ql is not None else [0] * n, "rc": ranks(rc) if rc is not None else [0] * n,
            "embed": list(range(1, n + 1))}


def rerank_notes(totals: dict) -> list[str]:
    """What a rerank (or teacher) stage's counts say about the signals it could use."""
    counts, notes = totals.get("counts") or {}, []
    pairs = counts.get("pairs_scored", 0)
    if not pairs:
        return notes
    if counts.get("ql_unavailable"):
        notes.append(f"QL left out for {counts['ql_unavailable']} of {pairs} pairs: the LLM server has no "
                     "prompt log-probabilities, so RC and the embedder's rank were fused instead")
    asked = sum(counts.get(k, 0) for k in ("ql_requests", "rc_requests", "rc_prior_requests"))
    notes.append(f"{asked / pairs:.2f} LLM requests per (query, passage) pair "
                 f"(QL {counts.get('ql_requests', 0)}, RC {counts.get('rc_requests', 0)}, "
                 f"RC calibration {counts.get('rc_prior_requests', 0)})")
    return notes


class RerankStage(Stage):
    name = "rerank"
    Settings = RerankSettings
    schema = schema_of(Reranked)
    input = "mine"
    depends = ("corpus",)
    uses_llm = True
    uses_model = True

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.ql = load_template(settings.ql_template)
        self.rc = load_template(settings.rc_template)

    def fingerprint(self) -> dict:
        return {"ql_template": self.ql.hash, "rc_template": self.rc.hash}

    @classmethod
    def report_notes(cls, totals: dict) -> list[str]:
        return rerank_notes(totals)

    def process(self, index: int) -> ShardOutput:
        s = self.settings
        mined, rejects = self._consistent(self.ctx.read_shard("mine", index))
        wanted = [c for m in mined for c in m["candidate_ids"]]
        wanted += [m["passage_id"] for m in mined] if s.positive == "seed" else []
        texts = {pid: passage_text(r["text"], s.max_passage_words)
                 for pid, r in self.ctx.lookup("corpus", wanted).items()}
        pairs = [(m["query"], texts[c]) for m in mined for c in m["candidate_ids"]]
        weights = usable_fusion(s.fusion, self.ctx.llm.has_prompt_logprobs() if s.fusion.get("ql") else True)
        # QL stays asked for where it is wanted, so that its absence is counted (ql_unavailable)
        wanted = set(weights) | ({"ql"} if s.fusion.get("ql") else set())
        scores = score_pairs(self.ctx.llm, s, self.ql, self.rc, pairs, wanted)
        rows, counts, at = [], Counter(scores.counts), 0
        for m in mined:
            n = len(m["candidate_ids"])
            ql = scores.ql[at:at + n] if scores.ql is not None else None
            rc = scores.rc[at:at + n] if scores.rc is not None else None
            at += n
            if n < 2:
                rejects.append(self.reject(m["id"], "too_few_candidates", detail=f"{n} candidate(s)"))
                continue
            row = self._choose(m, ql, rc, texts, weights)
            counts["positive_is_seed"] += row["positive_is_seed"]
            rows.append(row)
        return ShardOutput(rows=rows, rejects=rejects, rows_in=len(mined) + len(rejects), counts=counts)

    def _consistent(self, mined: list[dict]) -> tuple[list[dict], list]:
        """The mined rows whose seed passage the embedder retrieved within `max_seed_rank`, and
        a reject for each other one (user queries without a seed passage are kept)."""
        k = self.settings.max_seed_rank
        if k is None:
            return mined, []
        kept, rejects = [], []
        for m in mined:
            if m["passage_id"] is None or m["passage_id"] in m["candidate_ids"][:k]:
                kept.append(m)
            else:
                rejects.append(self.reject(m["id"], "seed_not_retrieved",
                                           detail=f"seed passage not in the embedder's top {k}"))
        return kept, rejects

    def _choose(self, m: dict, ql: Optional[list[float]], rc: Optional[list[float]], texts: dict,
                weights: dict[str, float]) -> dict:
        s = self.settings
        ids = m["candidate_ids"]
        by_signal = signal_ranks(ql, rc, len(ids))
        fused = fuse(weights, by_signal, s.rrf_k)
        order = ranks(fused)  # ties under RRF keep the embedder's order
        by_rank = sorted(range(len(ids)), key=order.__getitem__)
        positive = m["passage_id"] if s.positive == "seed" and m["passage_id"] else ids[by_rank[0]]
        # A passage with the positive's exact text is no negative (duplicate corpus passages).
        pool = [ids[i] for i in by_rank if ids[i] != positive and texts[ids[i]] != texts[positive]]
        count = min(s.num_negatives, len(pool))
        if s.negatives == "last":
            negatives = pool[len(pool) - count:]
        else:
            picked = set(self.ctx.rng("negatives", m["id"]).sample(pool, count))
            negatives = [c for c in pool if c in picked]
        seed_rank = order[ids.index(m["passage_id"])] if m["passage_id"] in ids else 0
        return Reranked(
            id=m["id"], passage_id=m["passage_id"], task_type=m["task_type"], task=m["task"],
            query=m["query"], language=m["language"], candidate_ids=ids,
            embed_scores=m["candidate_scores"], ql_scores=ql or [math.nan] * len(ids),
            rc_scores=rc or [math.nan] * len(ids), ql_ranks=by_signal["ql"], rc_ranks=by_signal["rc"],
            rrf_scores=fused,
            positive_id=positive, negative_ids=negatives, positive_is_seed=positive == m["passage_id"],
            seed_rrf_rank=seed_rank).model_dump()
