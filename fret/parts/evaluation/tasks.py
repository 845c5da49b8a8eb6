"""Evaluation tasks: a model and data in, figures out, per Matryoshka dimension.

Metrics come from libraries: pytrec_eval (nDCG@10, Recall@100, MRR@10), scipy (Spearman),
scikit-learn (logistic-regression probe). Each function returns {dim: {metric: value}}.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from fret.core.errors import ConfigError
from fret.parts.formatting import Formatting

# One row per (model, task, data, dim, metric): the recipe's `eval` stage and `fret eval --rerank` write it.
EVAL_SCHEMA = pa.schema([("id", pa.string()), ("model", pa.string()), ("task", pa.string()),
                         ("data", pa.string()), ("dim", pa.int64()), ("metric", pa.string()),
                         ("value", pa.float64())])


def load_model(name: str, device: Optional[str] = None, mcls_window: Optional[int] = None):
    """A SentenceTransformer from a path or name ('default' is the bundled MiniLM), or with
    `mcls_window` the same encoder with BGE-M3's multi-CLS pooling for long inputs."""
    from fret.parts.bundled import resolve_embedder

    if mcls_window:
        from fret.parts.mcls import MCLSEncoder
        return MCLSEncoder(resolve_embedder(name), window=mcls_window, device=device or "cpu")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedder(name), device=device)


def recorded_dims(name: str) -> Optional[list[int]]:
    """The Matryoshka dims a fret-trained model folder records, if any."""
    record = Path(name) / "fret_training.json"
    return json.loads(record.read_text())["matryoshka_dims"] if record.exists() else None


def encode(model, texts: Sequence[str], batch_size: int = 64, what: str = "texts") -> np.ndarray:
    """Embeddings (n, d) of `texts`; past a few thousand texts, encoded longest first in blocks of
    whole batches (as sentence-transformers batches them) so that progress and the time left show."""
    texts = list(texts)
    block = batch_size * max(1, 2048 // batch_size)
    if len(texts) <= block:
        emb = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)  # (n, d)
    from fret.core.progress import Progress

    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    parts = []
    with Progress(len(texts), f"fret eval: encoding {what}", unit="text") as bar:
        for start in range(0, len(order), block):
            chunk = [texts[i] for i in order[start:start + block]]
            parts.append(np.asarray(model.encode(chunk, batch_size=batch_size, convert_to_numpy=True,
                                                 show_progress_bar=False), dtype=np.float32))
            bar.update(len(chunk))
    emb = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)  # (n, d)
    emb[order] = np.concatenate(parts)
    return emb


def truncate(emb: np.ndarray, dim: int) -> np.ndarray:
    """First `dim` coordinates, re-normalised: truncate(np.array([[3., 4., 9.]]), 2) -> [[0.6, 0.8]]"""
    cut = emb[:, :dim]
    return cut / np.clip(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12, None)


def _dims(emb: np.ndarray, dims: Optional[Sequence[int]]) -> list[int]:
    full = emb.shape[1]
    chosen = list(dims) if dims else [full]
    bad = [d for d in chosen if d < 1 or d > full]
    if bad:
        raise ConfigError(f"--dims {bad}: outside 1..{full} for this model")
    return chosen


def fmt_query(formatting: Optional[Formatting], text: str) -> str:
    return text if formatting is None else formatting.format_query(text)


def fmt_doc(formatting: Optional[Formatting], title: Optional[str], text: str) -> str:
    return text if formatting is None else formatting.format_document(text, title)


def top_k(q: np.ndarray, d: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: (scores (nq, k), indices (nq, k)), best first."""
    k = min(k, d.shape[0])
    scores, index = [], []
    for start in range(0, q.shape[0], block):
        s = q[start:start + block] @ d.T  # (b, n_docs)
        idx = np.argpartition(-s, k - 1, axis=1)[:, :k]  # (b, k) unordered
        part = np.take_along_axis(s, idx, axis=1)  # (b, k)
        order = np.argsort(-part, axis=1)
        index.append(np.take_along_axis(idx, order, axis=1))
        scores.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(scores), np.concatenate(index)


def evaluate_retrieval(model, corpus: dict, queries: dict, qrels: dict, dims: Optional[Sequence[int]] = None,
                       formatting: Optional[Formatting] = None, batch_size: int = 64) -> dict[int, dict[str, float]]:
    """nDCG@10, Recall@100 and MRR@10 (pytrec_eval) of exact cosine search over the corpus."""
    import pytrec_eval

    doc_ids, qids = list(corpus), [q for q in queries if q in qrels]
    d_emb = encode(model, [fmt_doc(formatting, *corpus[i]) for i in doc_ids], batch_size, "the corpus")
    q_emb = encode(model, [fmt_query(formatting, queries[q]) for q in qids], batch_size, "the queries")
    results = {}
    for dim in _dims(d_emb, dims):
        scores, index = top_k(truncate(q_emb, dim), truncate(d_emb, dim), 100)
        run = {q: {doc_ids[j]: float(s) for s, j in zip(scores[r], index[r])} for r, q in enumerate(qids)}
        run10 = {q: {doc_ids[j]: float(s) for s, j in zip(scores[r, :10], index[r, :10])} for r, q in enumerate(qids)}
        wanted = {q: qrels[q] for q in qids}
        main = pytrec_eval.RelevanceEvaluator(wanted, {"ndcg_cut.10", "recall.100"}).evaluate(run)
        mrr = pytrec_eval.RelevanceEvaluator(wanted, {"recip_rank"}).evaluate(run10)
        results[dim] = {
            "ndcg@10": float(np.mean([m["ndcg_cut_10"] for m in main.values()])),
            "recall@100": float(np.mean([m["recall_100"] for m in main.values()])),
            "mrr@10": float(np.mean([m["recip_rank"] for m in mrr.values()])),
            "queries": len(qids),
        }
    return results


def evaluate_sts(model, pairs: Sequence[tuple[str, str, float]], dims: Optional[Sequence[int]] = None,
                 formatting: Optional[Formatting] = None, batch_size: int = 64) -> dict[int, dict[str, float]]:
    """Spearman correlation (x100) between cosine similarity and gold scores."""
    from scipy.stats import spearmanr

    a = encode(model, [fmt_query(formatting, p[0]) for p in pairs], batch_size)
    b = encode(model, [fmt_query(formatting, p[1]) for p in pairs], batch_size)
    gold = np.array([p[2] for p in pairs])
    results = {}
    for dim in _dims(a, dims):
        cos = (truncate(a, dim) * truncate(b, dim)).sum(1)  # (n,)
        results[dim] = {"spearman": float(spearmanr(cos, gold).statistic * 100), "pairs": len(pairs)}
    return results


def evaluate_classification(model, train: tuple[list[str], list[str]], test: tuple[list[str], list[str]],
                            dims: Optional[Sequence[int]] = None, formatting: Optional[Formatting] = None,
                            batch_size: int = 64, seed: int = 0) -> dict[int, dict[str, float]]:
    """Accuracy (x100) of a logistic-regression probe trained on train-split embeddings."""
    from sklearn.linear_model import LogisticRegression

    x_train = encode(model, [fmt_query(formatting, t) for t in train[0]], batch_size)
    x_test = encode(model, [fmt_query(formatting, t) for t in test[0]], batch_size)
    results = {}
    for dim in _dims(x_train, dims):
        probe = LogisticRegression(max_iter=1000, random_state=seed)
        probe.fit(truncate(x_train, dim), train[1])
        accuracy = float((probe.predict(truncate(x_test, dim)) == np.array(test[1])).mean())
        results[dim] = {"accuracy": accuracy * 100, "train": len(train[0]), "test": len(test[0])}
    return results


def evaluate_bitext(model, src: Sequence[str], tgt: Sequence[str], dims: Optional[Sequence[int]] = None,
                    formatting: Optional[Formatting] = None, batch_size: int = 64) -> dict[int, dict[str, float]]:
    """Accuracy (x100) of nearest-neighbour translation matching, both directions and their mean."""
    a = encode(model, [fmt_query(formatting, t) for t in src], batch_size)
    b = encode(model, [fmt_query(formatting, t) for t in tgt], batch_size)
    gold = np.arange(len(src))
    results = {}
    for dim in _dims(a, dims):
        sim = truncate(a, dim) @ truncate(b, dim).T  # (n, n)
        forward = float((sim.argmax(1) == gold).mean() * 100)
        backward = float((sim.argmax(0) == gold).mean() * 100)
        results[dim] = {"accuracy": (forward + backward) / 2, "src2tgt": forward, "tgt2src": backward,
                        "pairs": len(src)}
    return results
