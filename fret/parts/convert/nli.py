"""SNLI and MNLI: entailment as positive, contradiction of the same premise as hard negative.

Schema (HF `stanfordnlp/snli`, `nyu-mll/multi_nli`, `nyu-mll/glue` mnli): premise, hypothesis,
label with 0 entailment, 1 neutral, 2 contradiction, -1 no gold label. The original jsonl
releases (sentence1, sentence2, gold_label "entailment"/"neutral"/"contradiction"/"-") are read too.

One unified row per (premise, entailment hypothesis); its negatives are up to `max_negatives`
contradiction hypotheses of the same premise, seeded. Symmetric (both sides are sentences).
Rejected, by reason: no gold label, neutral pairs (unused), entailments whose premise has no
contradiction (when `require_negative`), contradictions whose premise has no entailment.
Contradiction rows that became negatives are consumed, not rejected; those no entailment drew
(more contradictions than `max_negatives`) are rejected as `contradiction_not_used`.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from fret.parts.convert.base import Context, sample, text_of

ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2
_NAMES = {"entailment": ENTAILMENT, "neutral": NEUTRAL, "contradiction": CONTRADICTION}


def label_of(row: dict) -> int:
    """label_of({'label': 2}) -> 2; label_of({'gold_label': 'entailment'}) -> 0; '-' or -1 -> -1"""
    value = row.get("label", row.get("gold_label"))
    if isinstance(value, str):
        return _NAMES.get(value.strip().lower(), -1)
    return value if value in (0, 1, 2) else -1


def nli(rows: Iterable[dict], ctx: Context) -> Iterator:
    by_premise: dict[str, dict[int, list]] = {}  # premise -> label -> [(oid, hypothesis, row)]
    for i, row in enumerate(rows):
        oid = row.get("pairID", row.get("idx", i))
        premise = text_of(row.get("premise", row.get("sentence1")))
        hypothesis = text_of(row.get("hypothesis", row.get("sentence2")))
        label = label_of(row)
        if not premise or not hypothesis:
            yield ctx.reject(oid, "empty_sentence", row)
        elif label == -1:
            yield ctx.reject(oid, "no_gold_label", row)
        elif label == NEUTRAL:
            yield ctx.reject(oid, "neutral_not_used", row)
        else:
            by_premise.setdefault(premise, {}).setdefault(label, []).append((oid, hypothesis, row))
    for premise, groups in by_premise.items():  # first-seen order: stable across runs
        entailed, contradicted = groups.get(ENTAILMENT, []), groups.get(CONTRADICTION, [])
        if not entailed:
            for oid, _, row in contradicted:
                yield ctx.reject(oid, "no_entailment_for_premise", row)
            continue
        used: set[int] = set()  # positions in `contradicted` drawn as some row's negative
        for oid, hypothesis, row in entailed:
            pool = [k for k, (_, h, _) in enumerate(contradicted) if h != hypothesis]
            if not pool and ctx.options["require_negative"]:
                yield ctx.reject(oid, "no_contradiction_for_premise", row)
                continue
            chosen = sample(ctx.rng(oid, hypothesis), pool, ctx.options["max_negatives"])
            used.update(chosen)
            yield ctx.unified(orig_id=oid, query=premise, positive=hypothesis,
                              negatives=[contradicted[k][1] for k in chosen], task_type="nli",
                              symmetric=True,
                              lineage={"negative_origin_ids": [contradicted[k][0] for k in chosen],
                                       "genre": row.get("genre")})
        for k, (oid, _, row) in enumerate(contradicted):
            if k not in used:  # more contradictions than negatives drawn: counted, not lost
                yield ctx.reject(oid, "contradiction_not_used", row)
