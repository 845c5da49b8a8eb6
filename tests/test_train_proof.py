"""Proof that training works on real data nobody on this project wrote: XQuAD (Spanish).

Fine-tune the bundled MiniLM (an English model) on Spanish XQuAD question -> paragraph pairs
from the first articles, then retrieve for the questions of the held-out articles against their
paragraphs. The held-out nDCG@10 and MRR@10 must beat the base model's.
"""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fret.core.records import Unified, schema_of, stable_id
from fret.core.shards import write_table
from fret.parts.bundled import minilm_dir
from fret.parts.evaluation import evaluate_retrieval, load_model, read_squad_retrieval
from fret.parts.train.data import DataSource
from fret.parts.train.loop import train
from fret.parts.train.settings import apply_overrides

from conftest import EVALDATA

XQUAD = EVALDATA / "xquad" / "xquad.es.json"
TRAIN_ARTICLES = 30  # of 48; the rest are held out


pytestmark = pytest.mark.usefixtures("one_thread")


def split(data):
    """Split by article (doc ids are 'a{article}-p{paragraph}'), so no held-out paragraph was seen."""
    held = lambda doc: int(doc.split("-")[0][1:]) >= TRAIN_ARTICLES  # noqa: E731
    train_pairs = [(data.queries[q], data.corpus[d]) for q, rel in data.qrels.items() for d in rel if not held(d)]
    corpus = {d: v for d, v in data.corpus.items() if held(d)}
    qrels = {q: rel for q, rel in data.qrels.items() if all(held(d) for d in rel)}
    return train_pairs, corpus, {q: data.queries[q] for q in qrels}, qrels


@pytest.mark.slow  # about 2 minutes on 2 shared CPU cores
@pytest.mark.skipif(not XQUAD.exists(), reason="shared evaldata not present")
def test_finetuning_improves_held_out_retrieval(tmp_path):
    data = read_squad_retrieval(XQUAD)
    pairs, corpus, queries, qrels = split(data)
    rows = [Unified(id=stable_id(q, p), task="", query=q, positive=p, positive_title=title, negatives=[],
                    negative_titles=[], source="xquad", task_type="qa", symmetric=False, language="es",
                    meta="{}").model_dump() for q, (title, p) in pairs]
    write_table(tmp_path / "xquad" / "part-00000.parquet", rows, schema_of(Unified))
    settings = apply_overrides(["format=false", "batch_size=32", "mini_batch_size=32", "max_length=96",
                                "max_steps=12", "lr=1.5e-4", "warmup_steps=2", "temperature=0.05",
                                "checkpoint_every=0", "matryoshka_dims=384,128"])
    out = train([DataSource(tmp_path / "xquad")], "default", tmp_path / "model", settings)

    base = evaluate_retrieval(load_model(str(minilm_dir()), "cpu"), corpus, queries, qrels, dims=[384, 128])
    tuned = evaluate_retrieval(load_model(str(out), "cpu"), corpus, queries, qrels, dims=[384, 128])
    print(f"\nXQuAD-es held out: {len(queries)} questions, {len(corpus)} paragraphs; trained on {len(pairs)} pairs")
    for dim in (384, 128):
        print(f"  dim {dim}: base nDCG@10 {base[dim]['ndcg@10']:.3f} MRR@10 {base[dim]['mrr@10']:.3f}"
              f" -> tuned nDCG@10 {tuned[dim]['ndcg@10']:.3f} MRR@10 {tuned[dim]['mrr@10']:.3f}")
    assert len(pairs) > 600 and len(queries) > 300
    for dim in (384, 128):
        assert tuned[dim]["ndcg@10"] > base[dim]["ndcg@10"] + 0.02
        assert tuned[dim]["mrr@10"] > base[dim]["mrr@10"]
