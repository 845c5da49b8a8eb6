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
`fret report RUN` and its HTML page show.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from fret.core import shards
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


def evaluate_teacher(embedder, data: readers.Retrieval, qids: list[str], llm, settings, top_n: int,
                     formatting=None, batch_size: int = 64) -> tuple[dict, dict]:
    """({order: figures}, counts) of the LLM teacher over the embedder's top_n per query."""
    from fret.parts.prompts import load_template
    from fret.stages.fret.rerank import score_pairs

    doc_ids, qids = list(data.corpus), [q for q in qids if q in data.qrels]
    d_emb = tasks.encode(embedder, [tasks.fmt_doc(formatting, *data.corpus[i]) for i in doc_ids], batch_size)
    q_emb = tasks.encode(embedder, [tasks.fmt_query(formatting, data.queries[q]) for q in qids], batch_size)
    _, index = tasks.top_k(q_emb, d_emb, top_n)
    candidates = {q: [doc_ids[j] for j in index[r]] for r, q in enumerate(qids)}
    pairs = [(data.queries[q], data.corpus[d][1]) for q in qids for d in candidates[q]]
    scores = score_pairs(llm, settings, load_template(settings.ql_template),
                         load_template(settings.rc_template), pairs, ("ql", "rc"))
    orders = orders_of(candidates, scores.ql, scores.rc, settings.fusion, settings.rrf_k)
    return measure(orders, data.qrels), dict(scores.counts, queries=len(qids), dim=int(q_emb.shape[1]))


def rows_of(figures: dict, data: str, dim: int) -> list[dict]:
    """One row per (order, metric), in the shape of the recipe's `eval` stage."""
    from fret.core.records import stable_id
    return [{"id": stable_id(STAGE, order, data, metric), "model": order, "task": "rerank", "data": data,
             "dim": dim, "metric": metric, "value": value}
            for order, metrics in figures.items() for metric, value in metrics.items()]


def run(args, embedder, formatting) -> list[dict]:
    """`fret eval --rerank`: the teacher on every --retrieval set; rows for the table and --json."""
    from fret.core.config import load_pipeline
    from fret.core.stage import RunContext

    if args.run_dir is None:
        raise readers.EvalDataError("--rerank needs --run-dir (where the request cache and figures go)")
    config = load_pipeline(args.rerank, args.overrides)
    if not hasattr(config, "rerank"):
        raise readers.EvalDataError(f"{args.rerank}: no rerank section (use a FRet pipeline file)")
    top_n = args.top_n or config.mine.top_n
    ctx = RunContext(args.run_dir, config, args.rerank)
    rows, table_rows, counts, started = [], [], {}, time.monotonic()
    try:
        for path in args.retrieval:
            data = (readers.read_squad_retrieval(path, args.corpus_from) if path.suffix == ".json"
                    else readers.read_beir(path, args.split))
            qids = list(data.queries)[:args.limit] if args.limit else list(data.queries)
            figures, counts[str(path)] = evaluate_teacher(embedder, data, qids, ctx.llm, config.rerank,
                                                          top_n, formatting, args.batch_size)
            if counts[str(path)].get("ql_unavailable"):
                print("fret eval: the LLM has no prompt log-probabilities: QL and the orders using it "
                      "are left out", file=sys.stderr)
            name, dim = f"{path} (top {top_n})", counts[str(path)].pop("dim")
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
    out = args.run_dir / STAGE
    shards.write_table(out / shards.shard_name(0), rows, tasks.EVAL_SCHEMA)
    manifest["shards"] = {shards.shard_name(0): manifest["totals"]}
    shards.save_manifest(out, manifest)  # written last: the figures are done
    return table_rows
