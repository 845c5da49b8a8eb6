"""Data quality at a glance: the figures a user needs to judge unified rows before training on them.

`quality(rows, sample_languages)` takes the unified rows of any pipeline's export (FRet, E5,
MultiLongDoc, a mixture) and returns plain figures (`fret report` prints them, the HTML report
plots them, `benchmarks/bench_synthetic.py` tabulates them):

- copies: how much of each query is the positive's own words. The overlap of a query is the share
  of its word trigrams (unigrams for queries under 3 words) found in its positive; `copied` is an
  overlap >= COPIED, `near_copy` one >= NEAR_COPY (copied ones included). Small LLMs often copy
  the passage's first sentence: a model learns nothing from finding a passage by its own words.
- query length in words (mean, quartiles, and the lengths themselves for a histogram);
- tasks: distinct task descriptions and the most frequent ones;
- languages: the rows' languages (what was asked for), the languages detected in the queries,
  the share of judged queries in another language than their row's, and the seed sample's mix;
- positive_is_seed: where the lineage says so (FRet), the share whose positive is the seed passage;
- duplicates: rows whose normalized query another row already has.

`query_lengths` and `overlaps` hold the per-row values (for plots; `SERIES` names them).
"""
from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Iterable, Optional

COPIED = 0.9
NEAR_COPY = 0.5
TOP_TASKS = 5
SERIES = ("query_lengths", "overlaps")  # per-row values, not figures


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def copy_overlap(query: str, positive: str) -> float:
    """Share of the query's word trigrams found in the positive.
    copy_overlap('The cat sat on the mat', 'Yes: the cat sat on the mat today') -> 1.0"""
    from .decontam import words
    q, p = words(query), words(positive)
    n = 3 if len(q) >= 3 else 1
    grams = _grams(q, n)
    return len(grams & _grams(p, n)) / len(grams) if grams else 0.0


def _quartiles(values: list[int]) -> list[float]:
    return statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3


def _seed_flags(rows: list[dict]) -> list[bool]:
    flags = []
    for r in rows:
        try:
            meta = json.loads(r.get("meta") or "{}")
        except json.JSONDecodeError:
            continue
        if isinstance(meta, dict) and isinstance(meta.get("positive_is_seed"), bool):
            flags.append(meta["positive_is_seed"])
    return flags


def _query_languages(rows: list[dict]) -> tuple[Counter, int, int]:
    """(detected language mix, queries judged, judged queries not in their row's language)."""
    from .langid import check
    detected, judged, wrong = Counter(), 0, 0
    for r in rows:
        verdict = check(r["query"], r.get("language") or "en")
        if verdict.status in ("ok", "wrong"):
            judged += 1
            wrong += verdict.status == "wrong"
            detected[verdict.detected] += 1
        else:
            detected[f"({verdict.status})"] += 1
    return detected, judged, wrong


def quality(rows: Iterable[dict], sample_languages: Optional[dict[str, int]] = None) -> dict:
    """The figures of the module doc for unified rows (dicts with task, query, positive, language, meta)."""
    from .decontam import normalize
    rows = list(rows)
    n = len(rows)
    if not n:
        return {"rows": 0}
    overlaps = [copy_overlap(r["query"], r["positive"]) for r in rows]
    lengths = [len(r["query"].split()) for r in rows]
    tasks = Counter(r.get("task") or "" for r in rows)
    seen, duplicates = set(), 0
    for r in rows:
        key = normalize(r["query"])
        duplicates += key in seen
        seen.add(key)
    detected, judged, wrong = _query_languages(rows)
    seeds = _seed_flags(rows)
    return {
        "rows": n,
        "copied": sum(o >= COPIED for o in overlaps) / n,
        "near_copy": sum(o >= NEAR_COPY for o in overlaps) / n,
        "mean_overlap": sum(overlaps) / n,
        "query_words": {"mean": sum(lengths) / n, "quartiles": _quartiles(lengths)},
        "query_lengths": lengths,
        "overlaps": overlaps,
        "distinct_tasks": len(tasks),
        "top_tasks": tasks.most_common(TOP_TASKS),
        "languages": dict(Counter(r.get("language") or "?" for r in rows).most_common()),
        "query_languages": dict(detected.most_common()),
        "wrong_language": wrong / judged if judged else 0.0,
        "languages_judged": judged,
        "sample_languages": dict(sample_languages or {}),
        "positive_is_seed": sum(seeds) / len(seeds) if seeds else None,
        "duplicate_queries": duplicates / n,
    }


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _mix(counts: dict) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in counts.items())


def quality_lines(q: dict, previous: Optional[dict] = None) -> list[str]:
    """Text lines for `fret report`; with `previous` (the same folder's last other export), its
    figure follows each one in brackets."""
    if not q.get("rows"):
        return ["quality: no rows"]
    prev = previous or {}

    def was(key: str, fmt=_pct) -> str:
        return f" (before: {fmt(prev[key])})" if prev.get("rows") and prev.get(key) is not None else ""

    words = q["query_words"]
    lines = [
        f"queries copying their positive: {_pct(q['copied'])} copied (>= {COPIED:.0%} of trigrams)"
        f"{was('copied')}, {_pct(q['near_copy'])} near-copied (>= {NEAR_COPY:.0%}){was('near_copy')}",
        f"query length (words): mean {words['mean']:.1f}, quartiles "
        + "/".join(f"{x:g}" for x in words["quartiles"])
        + (f" (before: mean {prev['query_words']['mean']:.1f})" if prev.get("rows") else ""),
        f"distinct tasks: {q['distinct_tasks']} of {q['rows']} rows"
        + (f" (before: {prev['distinct_tasks']} of {prev['rows']})" if prev.get("rows") else ""),
        "top tasks: " + "; ".join(f"{n}x {t[:70]}" for t, n in q["top_tasks"]),
        f"languages: rows {_mix(q['languages'])}; queries detected {_mix(q['query_languages'])}; "
        f"in another language than their row: {_pct(q['wrong_language'])} of {q['languages_judged']} judged"
        f"{was('wrong_language')}",
        f"duplicate queries: {_pct(q['duplicate_queries'])}{was('duplicate_queries')}",
    ]
    if q["sample_languages"]:
        lines.insert(5, f"seed sample languages: {_mix(q['sample_languages'])}")
    if q["positive_is_seed"] is not None:
        lines.append(f"positive is the seed passage: {_pct(q['positive_is_seed'])}{was('positive_is_seed')}")
    return lines
