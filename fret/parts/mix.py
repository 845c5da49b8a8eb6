"""Mixing unified rows from several sources into one training mixture.

API (what the `mix` stage calls):

    rows, stats, rejects = mix({"fret": fret_rows, "nq": nq_rows, "snli": snli_rows},
                               strategy="uniform_task_type", total=10_000, seed=0,
                               index=None, threshold=0.5)

In order:
1. decontamination (only with `index`, a `fret.parts.decontam.NgramIndex`): reason `contaminated_*`;
2. de-duplication over all sources, first seen kept (sources in the dict's order, rows in order):
   `duplicate_exact` for the same (query, positive), then `duplicate_normalized` for the same
   pair after `fret.parts.decontam.normalize` (NFKC, lowercase, no punctuation, collapsed spaces);
3. sampling into pools, each pool drawn without replacement with its own seeded generator:
   - `original`: one pool per source, sized in proportion to what each source has (Gecko's
     "original distribution"); total=None keeps every row;
   - `weights`: one pool per source, sized in proportion to `weights[source]`;
   - `uniform_task_type`: one pool per task type across sources, equal sizes (Gecko's "uniform").
   With total=None, `weights`/`uniform_task_type` take the largest total no pool runs short of.
   A pool asked for more rows than it has gives all it has; the gap is in stats["pools"][p]
   ["shortfall"] (no re-weighting, so the ratios asked for are never silently changed);
4. ids made unique across the mixture: a repeated id becomes stable_id(id, source, k) and the old
   one goes into meta["original_id"]; 5. a seeded shuffle.

Every dropped row comes back as a Reject (stage "mix") and is counted in stats["dropped"] by
reason; rows left out by sampling are counted in stats["not_sampled"]. Same input, same seed:
the same mixture, row for row.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from typing import Optional

from fret.core.records import Reject, stable_id
from fret.parts.decontam import NgramIndex, decontaminate, normalize

STRATEGIES = ("original", "weights", "uniform_task_type")


def apportion(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Integer shares of `total` in proportion to weights, largest remainder first.
    apportion(10, {'a': 1, 'b': 1, 'c': 1}) -> {'a': 4, 'b': 3, 'c': 3}"""
    w_sum = sum(weights.values())
    if w_sum <= 0:
        raise ValueError(f"weights must have a positive sum: {weights}")
    exact = {k: total * w / w_sum for k, w in weights.items()}
    shares = {k: int(v) for k, v in exact.items()}
    rest = total - sum(shares.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - shares[k]), k))[:rest]:
        shares[k] += 1
    return shares


def _rng(seed: int, *key: object) -> random.Random:
    return random.Random(int(stable_id(seed, *key), 16))


def _reject(row: dict, reason: str, detail: str = "") -> Reject:
    return Reject(id=row["id"], stage="mix", reason=reason, detail=detail,
                  raw=json.dumps(row, ensure_ascii=False, default=str))


def dedup(rows: list[dict]) -> tuple[list[dict], list[Reject]]:
    """First of each (query, positive), exactly and after normalization; the rest as rejects."""
    exact: dict[tuple, str] = {}
    loose: dict[tuple, str] = {}
    kept, rejects = [], []
    for row in rows:
        key = (row["query"], row["positive"])
        nkey = (normalize(row["query"]), normalize(row["positive"]))
        if key in exact:
            rejects.append(_reject(row, "duplicate_exact", f"same as {exact[key]}"))
        elif nkey in loose:
            rejects.append(_reject(row, "duplicate_normalized", f"same as {loose[nkey]}"))
        else:
            exact[key] = loose[nkey] = row["id"]
            kept.append(row)
    return kept, rejects


def _pools(rows: list[dict], strategy: str, names: dict[int, str]) -> dict[str, list[dict]]:
    """Rows by task type, or by the name of the source they came in (not their `source` column)."""
    pools: dict[str, list[dict]] = {}
    for row in rows:
        key = row["task_type"] if strategy == "uniform_task_type" else names[id(row)]
        pools.setdefault(key, []).append(row)
    return pools


def _pool_weights(pools, strategy, weights, sources) -> dict[str, float]:
    if strategy == "original":
        return {p: float(len(rows)) for p, rows in pools.items()}
    if strategy == "uniform_task_type":
        return {p: 1.0 for p in pools}
    if not weights:
        raise ValueError("strategy 'weights' needs weights: {source: weight}")
    missing = sorted(set(sources) - set(weights))
    extra = sorted(set(weights) - set(sources))
    if missing or extra:
        raise ValueError(f"weights must name every source exactly: missing {missing}, unknown {extra}")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be >= 0: {weights}")
    return {s: float(weights[s]) for s in sources if weights[s] > 0}  # an empty source still counts


def _unique_ids(rows: list[dict]) -> int:
    seen: Counter = Counter()
    changed = 0
    for row in rows:
        old = row["id"]
        seen[old] += 1
        if seen[old] > 1:
            row["id"] = stable_id(old, row["source"], seen[old], prefix=f"{row['source']}-")
            meta = json.loads(row["meta"]) if row.get("meta") else {}
            row["meta"] = json.dumps({**meta, "original_id": old}, ensure_ascii=False, sort_keys=True)
            seen[row["id"]] += 1
            changed += 1
    return changed


def mix(sources: dict[str, list[dict]], *, weights: Optional[dict[str, float]] = None,
        strategy: str = "original", total: Optional[int] = None, seed: int = 0,
        index: Optional[NgramIndex] = None, threshold: float = 0.5,
        ) -> tuple[list[dict], dict, list[Reject]]:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mix strategy {strategy!r}; known: {list(STRATEGIES)}")
    if total is not None and total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    stats: dict = {"strategy": strategy, "seed": seed, "in": {s: len(r) for s, r in sources.items()}}
    rows: list[dict] = []
    names: dict[int, str] = {}  # id(row) -> source name; the copies live until we return
    for name, src_rows in sources.items():
        for row in src_rows:
            copy = {**row, "source": row.get("source") or name}  # a copy: its id may be rewritten
            names[id(copy)] = name
            rows.append(copy)
    rejects: list[Reject] = []
    if index is not None:
        rows, dropped = decontaminate(rows, index, threshold=threshold)
        rejects += [r.model_copy(update={"stage": "mix"}) for r in dropped]
    rows, dups = dedup(rows)
    rejects += dups
    pools = _pools(rows, strategy, names)
    pw = _pool_weights(pools, strategy, weights, sources)
    if total is None:
        if strategy == "original":
            total = sum(len(pools[p]) for p in pw)
        else:  # the largest total whose shares all fit
            w_sum = sum(pw.values())
            total = min((int(len(pools.get(p, [])) * w_sum / w) for p, w in pw.items()), default=0)
            while total > 0 and any(q > len(pools.get(p, [])) for p, q in apportion(total, pw).items()):
                total -= 1  # rounding may push one pool one row over
    quotas = apportion(total, pw) if pw else {}
    out: list[dict] = []
    stats["pools"] = {}
    for p in sorted(set(pools) | set(quotas)):
        q, pool = quotas.get(p, 0), pools.get(p, [])
        taken = _rng(seed, "pool", p).sample(pool, min(q, len(pool)))
        out += taken
        stats["pools"][p] = {"available": len(pool), "quota": q, "taken": len(taken),
                             "shortfall": max(0, q - len(pool))}
    _rng(seed, "shuffle").shuffle(out)
    stats["re_id"] = _unique_ids(out)
    stats["dropped"] = dict(sorted(Counter(r.reason for r in rejects).items()))
    stats["not_sampled"] = len(rows) - len(out)
    stats["out"] = len(out)
    stats["out_by_source"] = dict(sorted(Counter(r["source"] for r in out).items()))
    stats["out_by_task_type"] = dict(sorted(Counter(r["task_type"] for r in out).items()))
    return out, stats, rejects
