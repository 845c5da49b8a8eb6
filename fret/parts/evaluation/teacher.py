"""`fret eval --rerank`: how good is the LLM teacher on labelled retrieval data?

The seed embedder retrieves the top-N passages per query; the LLM scores them with the `rerank`
stage's own code (fret.stages.fret.rerank.score_pairs: same prompts, same request cache) and every
order is measured against the labels: the embedder's, QL alone, RC alone, RRF(QL, RC), RRF(QL, RC,
embedder rank), and the fusion the `rerank` settings name. Figures per order: nDCG@10, MRR@10
(pytrec_eval) and top1, the share of queries whose first passage is relevant (what `rerank`
takes as the positive).

    fret eval --model default --retrieval xquad.en.json --limit 50 \
        --rerank pipelines/fret.yaml --run-dir runs/teacher [--top-n 20] [--set rerank.fusion=...]

The LLM, the rerank settings and the cache come from the pipeline file (and `--set`); answers are
cached in RUN/_cache/llm.sqlite unless `cache.path` says otherwise, and the figures are written to
RUN/teacher/ (one row per order and metric, a manifest with what was scored and how), which
`fret report RUN` and its HTML page show. Everything is checked before a model loads (the flags,
the pipeline file with its `--set` items, its LLM and templates). Scoring shows progress with the
time left, and the output says where the time went (encoding, scoring, prompt tokens per second).

Pairs are scored longest prompt first, so that each batch of the LLM holds prompts of about one
length: XQuAD's paragraphs run from 50 to 300+ words, and a batch padded to its longest prompt
spent most of its time on padding (the `rerank` stage's passages are chunks of one length).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fret.core import shards
from fret.core.errors import Problems
from fret.core.progress import Progress, clock
from fret.parts.evaluation import readers, tasks

STAGE = "teacher"
ORDERS = {  # name -> fusion weights over the signals' ranks (None: a signal alone)
    "embedder": None, "ql": None, "rc": None,
    "rrf_ql_rc": {"ql": 1.0, "rc": 1.0},
    "rrf_ql_rc_embed": {"ql": 1.0, "rc": 1.0, "embed": 1.0},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rerank", type=Path, metavar="PIPELINE",
                   help="also measure the LLM teacher of this pipeline file (its llm: and rerank: "
                        "sections) on each --retrieval set; needs --run-dir")
    p.add_argument("--run-dir", type=Path, help="with --rerank: request cache and RUN/teacher figures")
    p.add_argument("--top-n", type=int, help="with --rerank: candidates per query (default: the pipeline's mine.top_n)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --rerank: override a pipeline setting, e.g. --set rerank.rc_score=log_ratio")


def top1(order: list[str], relevant: dict[str, int]) -> float:
    """1.0 when the first passage is relevant: top1(['b', 'a'], {'a': 1}) -> 0.0"""
    return float(bool(order) and relevant.get(order[0], 0) > 0)


def measure(orders: dict[str, dict[str, list[str]]], qrels: dict) -> dict[str, dict[str, float]]:
    """nDCG@10, MRR@10 and top1 (x100) of each order {name: {qid: doc ids best first}}."""
    import pytrec_eval

    out = {}
    for name, by_query in orders.items():
        run = {q: {d: float(len(ids) - r) for r, d in enumerate(ids[:10])} for q, ids in by_query.items()}
        wanted = {q: qrels[q] for q in by_query}
        found = pytrec_eval.RelevanceEvaluator(wanted, {"ndcg_cut.10", "recip_rank"}).evaluate(run)
        out[name] = {"ndcg@10": 100 * float(np.mean([m["ndcg_cut_10"] for m in found.values()])),
                     "mrr@10": 100 * float(np.mean([m["recip_rank"] for m in found.values()])),
                     "top1": 100 * float(np.mean([top1(by_query[q], qrels[q]) for q in by_query]))}
    return out


def orders_of(candidates: dict[str, list[str]], ql: Optional[list[float]], rc: Optional[list[float]],
              chosen: dict[str, float], k: float) -> dict[str, dict[str, list[str]]]:
    """Every order of each query's candidates (embedder order, best first); the scores run over
    all (query, candidate) pairs in that order. `chosen` is the rerank settings' fusion."""
    from fret.stages.fret.rerank import fuse, ranks, signal_ranks, usable_fusion

    wanted = {**ORDERS, "rerank": usable_fusion(chosen, ql is not None)}
    available = {"embed"} | ({"ql"} if ql is not None else set()) | ({"rc"} if rc is not None else set())
    out: dict[str, dict[str, list[str]]] = {name: {} for name, w in wanted.items()
                                           if w is None and name in ("embedder", *available)
                                           or w is not None and set(w) <= available}
    at = 0
    for q, ids in candidates.items():
        n = len(ids)
        by_signal = signal_ranks(None if ql is None else ql[at:at + n], None if rc is None else rc[at:at + n], n)
        at += n
        for name in out:
            weights = wanted[name]
            signal = {"embedder": "embed"}.get(name, name)
            rank = by_signal[signal] if weights is None else ranks(fuse(weights, by_signal, k))
            out[name][q] = [ids[i] for i in sorted(range(n), key=rank.__getitem__)]
    return out


def _by_length(pairs: list[tuple[str, str]], max_words: int) -> list[int]:
    """Pair indices, longest (query + passage, cut as scoring cuts it) first:
    _by_length([('q', 'a b'), ('q', 'a b c d')], 200) -> [1, 0]"""
    return sorted(range(len(pairs)),
                  key=lambda i: -(len(pairs[i][0]) + len(" ".join(pairs[i][1].split()[:max_words]))))


def score_sorted(llm, settings, ql_template, rc_template, pairs: list[tuple[str, str]],
                 block: Optional[int] = None):
    """rerank.score_pairs over `pairs`, sent longest first in blocks (progress and the time left
    show after each); the scores come back in the order of `pairs`. Same requests, same answers."""
    from fret.stages.fret.rerank import Scores, score_pairs

    order = _by_length(pairs, settings.max_passage_words)
    block = block or 8 * llm.batch_size
    ql: Optional[list] = []
    rc: Optional[list] = []
    counts: Counter = Counter()
    with Progress(len(pairs), "fret eval --rerank: scoring", unit="pair") as bar:
        for start in range(0, len(order), block):
            part = score_pairs(llm, settings, ql_template, rc_template,
                               [pairs[i] for i in order[start:start + block]], ("ql", "rc"))
            ql = None if part.ql is None or ql is None else ql + part.ql
            rc = None if part.rc is None or rc is None else rc + part.rc
            counts.update(part.counts)
            bar.update(len(order[start:start + block]))
    back = [0] * len(order)
    for at, i in enumerate(order):
        back[i] = at
    return Scores(ql=None if ql is None else [ql[back[i]] for i in range(len(pairs))],
                  rc=None if rc is None else [rc[back[i]] for i in range(len(pairs))], counts=counts)


def evaluate_teacher(embedder, data: readers.Retrieval, qids: list[str], llm, settings, top_n: int,
                     formatting=None, batch_size: int = 64) -> tuple[dict, dict]:
    """({order: figures}, counts) of the LLM teacher over the embedder's top_n per query; the
    counts carry the seconds spent encoding and scoring."""
    from fret.parts.prompts import load_template

    started = time.monotonic()
    doc_ids, qids = list(data.corpus), [q for q in qids if q in data.qrels]
    d_emb = tasks.encode(embedder, [tasks.fmt_doc(formatting, *data.corpus[i]) for i in doc_ids], batch_size,
                         "the corpus")
    q_emb = tasks.encode(embedder, [tasks.fmt_query(formatting, data.queries[q]) for q in qids], batch_size,
                         "the queries")
    _, index = tasks.top_k(q_emb, d_emb, top_n)
    candidates = {q: [doc_ids[j] for j in index[r]] for r, q in enumerate(qids)}
    pairs = [(data.queries[q], data.corpus[d][1]) for q in qids for d in candidates[q]]
    encoded = time.monotonic()
    scores = score_sorted(llm, settings, load_template(settings.ql_template),
                          load_template(settings.rc_template), pairs)
    scored = time.monotonic()
    orders = orders_of(candidates, scores.ql, scores.rc, settings.fusion, settings.rrf_k)
    return measure(orders, data.qrels), dict(scores.counts, queries=len(qids), dim=int(q_emb.shape[1]),
                                             documents=len(doc_ids),
                                             encode_seconds=round(encoded - started, 3),
                                             score_seconds=round(scored - encoded, 3))


def rows_of(figures: dict, data: str, dim: int) -> list[dict]:
    """One row per (order, metric), in the shape of the recipe's `eval` stage."""
    from fret.core.records import stable_id
    return [{"id": stable_id(STAGE, order, data, metric), "model": order, "task": "rerank", "data": data,
             "dim": dim, "metric": metric, "value": value}
            for order, metrics in figures.items() for metric, value in metrics.items()]


@dataclass
class Plan:
    """What `fret eval --rerank` will use, checked before any model loads."""
    config: Any  # the pipeline's validated settings
    top_n: int


def check(args) -> Optional[Plan]:
    """The --rerank plan (None without --rerank), or a ConfigError naming every problem: the flags,
    the pipeline file with its --set items, its LLM backend and model, the rerank templates."""
    from fret.core.config import load_pipeline_with_origin
    from fret.core.preflight import check_pipeline

    problems = Problems()
    if args.rerank is None:
        for flag, value in (("--run-dir", args.run_dir), ("--top-n", args.top_n), ("--set", args.overrides)):
            if value:
                problems.add(f"{flag} works only with --rerank PIPELINE")
        problems.raise_if_any()
        return None
    if args.run_dir is None:
        problems.add("--rerank needs --run-dir (where the request cache and figures go)")
    elif args.run_dir.exists() and not args.run_dir.is_dir():
        problems.add(f"--run-dir {args.run_dir}: a file, not a folder")
    if not args.retrieval:
        problems.add("--rerank needs a --retrieval set to measure the teacher on")
    if args.top_n is not None and args.top_n < 1:
        problems.add(f"--top-n {args.top_n}: expected a number >= 1")
    found = problems.check(load_pipeline_with_origin, args.rerank, args.overrides)
    plan = None
    if found is not None:
        config, origin = found
        if not hasattr(config, "rerank"):
            problems.add(f"--rerank {args.rerank}: no rerank section (give a FRet pipeline file)")
        else:
            problems.extend(check_pipeline(config, origin, ["rerank"]))
            plan = Plan(config, args.top_n or config.mine.top_n)
    problems.raise_if_any()
    return plan


def run(args, embedder, formatting, plan: Optional[Plan] = None, data: Optional[dict] = None) -> list[dict]:
    """`fret eval --rerank`: the teacher on every --retrieval set; rows for the table and --json."""
    from fret.core.stage import RunContext

    plan = plan or check(args)
    config, top_n = plan.config, plan.top_n
    ctx = RunContext(args.run_dir, config, args.rerank)
    rows, table_rows, counts, started = [], [], {}, time.monotonic()
    try:
        for i, path in enumerate(args.retrieval):
            found = data.get(("retrieval", i)) if data else None
            if found is None:
                found = (readers.read_squad_retrieval(path, args.corpus_from) if path.suffix == ".json"
                         else readers.read_beir(path, args.split))
            qids = list(found.queries)[:args.limit] if args.limit else list(found.queries)
            before = _usage(ctx.llm)
            figures, counts[str(path)] = evaluate_teacher(embedder, found, qids, ctx.llm, config.rerank,
                                                          top_n, formatting, args.batch_size)
            c = counts[str(path)]
            print(f"fret eval --rerank: {path}: " + where_time_went(c, _usage(ctx.llm), before), file=sys.stderr)
            if c.get("ql_unavailable"):
                print("fret eval: the LLM has no prompt log-probabilities: QL and the orders using it "
                      "are left out", file=sys.stderr)
            name, dim = f"{path} (top {top_n})", c.pop("dim")
            rows.extend(rows_of(figures, name, dim))
            table_rows.extend({"task": "rerank", "data": name, "dim": dim, "order": order, **metrics}
                              for order, metrics in figures.items())
        usage = ctx.llm.usage
        manifest = {"stage": STAGE, "complete": True, "settings": {
            "llm": ctx.llm_identity(), "rerank": config.rerank.model_dump(mode="json"), "top_n": top_n,
            "embedder": args.model, "limit": args.limit, "data": [str(p) for p in args.retrieval]},
            "totals": {"rows_in": sum(c["queries"] for c in counts.values()), "rows_out": len(rows),
                       "counts": {k: sum(c.get(k, 0) for c in counts.values())
                                  for k in sorted({k for c in counts.values() for k in c})},
                       "llm": {"calls": usage.calls, "cached": usage.cached,
                               "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
                       "seconds": round(time.monotonic() - started, 3)}}
    finally:
        ctx.close()
    # The teacher is no stage of the run's pipeline: its manifest carries the notes `fret report` shows
    from fret.stages.fret.rerank import rerank_notes
    manifest["totals"]["notes"] = rerank_notes(manifest["totals"])
    out = args.run_dir / STAGE
    shards.write_table(out / shards.shard_name(0), rows, tasks.EVAL_SCHEMA)
    manifest["shards"] = {shards.shard_name(0): manifest["totals"]}
    shards.save_manifest(out, manifest)  # written last: the figures are done
    return table_rows


def _usage(llm) -> tuple[int, int, int]:
    """(new requests, cached answers, prompt tokens of the new ones) the LLM has counted so far."""
    return llm.usage.calls, llm.usage.cached, llm.usage.prompt_tokens


def where_time_went(counts: dict, after: tuple, before: tuple) -> str:
    """One line: 'encoded 240 passages and 50 queries in 3s; scored 500 pairs in 1m40s (1,000
    requests: 632 new, 368 cached; 277,872 prompt tokens, 2,780 tokens/s)'"""
    calls, cached, tokens = (a - b for a, b in zip(after, before))
    seconds = counts["score_seconds"]
    rate = f", {tokens / seconds:,.0f} tokens/s" if calls and seconds > 0 else ""
    return (f"encoded {counts['documents']:,} passages and {counts['queries']:,} queries in "
            f"{clock(counts['encode_seconds'])}; scored {counts.get('pairs_scored', 0):,} pairs in "
            f"{clock(seconds)} ({calls + cached:,} requests: {calls:,} new, {cached:,} cached; "
            f"{tokens:,} prompt tokens{rate})")
