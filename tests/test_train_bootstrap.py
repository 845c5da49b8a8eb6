"""Bootstrap seed embedder (the first FRet step): `fret train` on a run's `queries` stage.

The run folder is in the real stage format (Parquet shards of fret.core.records.Passage and Query)
built from real Wikipedia extracts; the trained folder must then serve as a seed embedder:
load with sentence-transformers, embed the corpus, search it with FAISS.
"""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fret.core.records import Passage, Query, schema_of, stable_id
from fret.core.shards import write_json, write_table
from fret.parts.bundled import minilm_dir
from fret.parts.formatting import gecko
from fret.parts.train import cli
from fret.parts.train.data import DataSource, folder_kind, format_examples, load_data
from test_train_cli import wiki_articles

TASK = "Given a short description, find the Wikipedia article it describes"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    articles = wiki_articles(n=48, skip=200)
    passages = [Passage(id=stable_id("wiki", t), doc_id=stable_id("doc", t), title=t, text=x, language="en",
                        source="wiki", chunk=0, n_words=len(x.split())).model_dump() for t, x, _, _ in articles]
    # a few corpus passages nobody asked about, and one query whose passage is unknown
    extra = wiki_articles(n=16, skip=400)
    passages += [Passage(id=stable_id("wiki", t), doc_id=stable_id("doc", t), title=t, text=x, language="en",
                         source="wiki", chunk=0, n_words=len(x.split())).model_dump() for t, x, _, _ in extra]
    write_table(run / "corpus" / "part-00000.parquet", passages[:30], schema_of(Passage))
    write_table(run / "corpus" / "part-00001.parquet", passages[30:], schema_of(Passage))
    queries = [Query(id=stable_id("q", d), passage_id=p["id"], task_type="qa", task=TASK, query=d,
                     language="en", raw=json.dumps({"task": TASK, "query": d}), attempts=1).model_dump()
               for p, (_, _, d, _) in zip(passages, articles)]
    queries.append(Query(id="q-orphan", passage_id=None, task_type="qa", task=TASK, query="no seed",
                         language="en", origin="user").model_dump())
    write_table(run / "queries" / "part-00000.parquet", queries, schema_of(Query))
    write_json(run / "queries" / "_manifest.json", {"stage": "queries", "settings_hash": "q123", "shards": {}})
    return run


def test_queries_folder_reads_as_seed_pairs(run_dir):
    assert folder_kind(run_dir / "queries") == "queries"
    loaded = load_data([DataSource(run_dir / "queries")], max_negatives=1, seed=0)
    assert len(loaded.pairs) == 48
    first = format_examples(loaded.pairs, gecko(None))[0]
    assert first.query.startswith(f"task: {TASK} | query: ") and first.negatives == []
    assert first.positive.startswith("title: ") and " | text: " in first.positive
    assert loaded.lineage[0]["dropped"] == {"no_passage_id": 1, "passage_not_in_corpus": 0}


def mrr_at_10(model, run_dir):
    """FAISS search of the formatted queries over the whole corpus; MRR@10 of the seed passages."""
    import faiss
    import pyarrow.parquet as pq

    corpus = pq.read_table(run_dir / "corpus").to_pylist()
    queries = [q for q in pq.read_table(run_dir / "queries").to_pylist() if q["passage_id"]]
    docs = model.encode([f"title: {p['title']} | text: {p['text']}" for p in corpus], normalize_embeddings=True)
    qs = model.encode([f"task: {q['task']} | query: {q['query']}" for q in queries], normalize_embeddings=True)
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, dtype=np.float32))
    _, found = index.search(np.ascontiguousarray(qs, dtype=np.float32), 10)
    ids = [p["id"] for p in corpus]
    ranks = [next((r + 1 for r, j in enumerate(row) if ids[j] == q["passage_id"]), None) for q, row in zip(queries, found)]
    return float(np.mean([1 / r if r else 0.0 for r in ranks]))


def test_bootstrap_model_works_as_seed_embedder(run_dir, tmp_path):
    out = tmp_path / "seed-embedder"
    code = cli.main(["--data", str(run_dir / "queries"), "--model", "default", "--output", str(out),
                     "--set", "batch_size=16", "--set", "max_steps=6", "--set", "lr=1e-4", "--set", "max_length=96",
                     "--set", "format=gecko"])  # as the embed and mine stages format by default
    assert code == 0
    from sentence_transformers import SentenceTransformer

    base, tuned = SentenceTransformer(str(minilm_dir()), device="cpu"), SentenceTransformer(str(out), device="cpu")
    before, after = mrr_at_10(base, run_dir), mrr_at_10(tuned, run_dir)
    print(f"\nseed-passage MRR@10 over the run's corpus: base {before:.3f} -> bootstrapped {after:.3f}")
    assert after > before and after > 0.5
    record = json.loads((out / "fret_training.json").read_text())
    assert record["data"][0]["kind"] == "queries" and record["data"][0]["manifest"]["settings_hash"] == "q123"
