"""Seed embedder (bundled MiniLM) and FAISS indexes on real Wikipedia passages."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from fret.core.records import Passage
from fret.parts.corpus import CorpusSettings, iter_passages
from fret.parts.embed import Embedder, encode_cached
from fret.parts.index import IndexSettings, build_index, default_nlist, resolve_kind


def wiki_passages(per_language: int) -> list[Passage]:
    settings = CorpusSettings(sources=[{"type": "wiki", "limit": per_language}])
    return [p for p in iter_passages(settings) if isinstance(p, Passage)]


@pytest.fixture(scope="module")
def embedder():
    return Embedder("default", device="cpu", batch_size=32)


@pytest.fixture(scope="module")
def corpus(embedder):
    passages = wiki_passages(100)  # ~300 passages, en/es/fr, 20..120 words
    vectors = embedder.encode([p.text for p in passages])
    queries = embedder.encode([p.title for p in passages[::5]])  # real short queries
    return passages, vectors, queries


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k ids found: recall_at([[1, 2]], [[2, 3]]) -> 0.5."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


# ---------------------------------------------------------------- embedder

@contextlib.contextmanager
def batches_seen(embedder):
    """The texts of each batch the torch model encodes, in order, while the block runs."""
    seen = []
    real = embedder.model.encode

    def spy(batch, **kw):
        seen.append(list(batch))
        return real(batch, **kw)

    embedder.model.encode = spy
    try:
        yield seen
    finally:
        del embedder.model.encode


def test_length_sorted_encode_equals_corpus_order(embedder, corpus):
    passages, vectors, _ = corpus
    assert vectors.shape == (len(passages), embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sub = list(range(0, len(passages), 4))  # a different batching of the same texts
    texts = [passages[i].text for i in sub]
    plain = embedder.encode(texts, sort_by_length=False, batch_size=16)
    np.testing.assert_allclose(plain, vectors[sub], atol=1e-5)
    one = embedder.model.encode(texts[:3], batch_size=1, normalize_embeddings=True)
    np.testing.assert_allclose(one, vectors[sub[:3]], atol=1e-5)
    assert embedder.encode([]).shape == (0, embedder.dim)


def test_length_sorted_batches_really_are_sorted(embedder):
    texts = ["short one", "a " * 200, "medium length text about rivers and hills", "x"]
    with batches_seen(embedder) as seen:
        embedder.encode(texts, batch_size=2)
    assert seen == [[texts[1], texts[2]], [texts[0], texts[3]]]


def test_token_budget_bounds_every_batch_and_keeps_the_vectors(embedder, corpus):
    passages, vectors, _ = corpus
    texts = [p.text for p in passages[:60]] + ["x", "a " * 300]  # one past max_seq_length
    lengths = dict(zip(texts, embedder.token_lengths(texts)))
    embedder.batch_tokens = 300
    try:
        with batches_seen(embedder) as seen:
            bounded = embedder.encode(texts, batch_size=32)
    finally:
        embedder.batch_tokens = None
    assert sorted(t for b in seen for t in b) == sorted(texts)
    for batch in seen:  # padded tokens within the budget, or one text alone
        assert len(batch) == 1 or len(batch) * max(lengths[t] for t in batch) <= 300
        assert len(batch) <= 32
    assert any(len(b) > 1 for b in seen) and [texts[-1]] in seen
    np.testing.assert_allclose(bounded[:60], vectors[:60], atol=1e-5)


def test_plan_batches_cuts_by_count_and_tokens():
    from fret.parts.embed import plan_batches
    as_lists = lambda bs: [b.tolist() for b in bs]  # noqa: E731
    lengths = np.array([9, 5, 5, 2, 2, 2])
    assert as_lists(plan_batches(lengths, np.arange(6), 4)) == [[0, 1, 2, 3], [4, 5]]
    assert as_lists(plan_batches(lengths, np.arange(6), 8, 10)) == [[0], [1, 2], [3, 4, 5]]
    assert as_lists(plan_batches(lengths, np.arange(6), 2, 100)) == [[0, 1], [2, 3], [4, 5]]
    assert as_lists(plan_batches(lengths, np.array([3, 0, 4]), 8, 12)) == [[3], [0], [4]]
    assert plan_batches(lengths[:0], np.arange(0), 4, 10) == []


def test_identity_fingerprints_model_content(embedder, tmp_path):
    ident = embedder.identity()
    assert ident["fingerprint"] and ident["dim"] == 384 and ident["normalize"] is True
    assert Embedder("default", device="cpu").identity() == ident  # stable across loads


def test_identity_read_from_files_equals_the_loaded_models(embedder, monkeypatch):
    """A Ray driver plans `embed` from the files alone; Embedder.identity() checks they agree."""
    from fret.parts.embed import identity_from_files
    from fret.stages.shared.embed import EmbedSettings, EmbedStage
    assert identity_from_files("default", None) == embedder.identity()
    assert identity_from_files("default", 128)["max_seq_length"] == 128
    assert identity_from_files("default", 256, engine="onnx")["engine"] == "onnx"
    assert identity_from_files("no/such-model-on-this-machine") is None

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded to plan the stage")

    monkeypatch.setattr(Embedder, "__init__", no_load)
    stage = EmbedStage.__new__(EmbedStage)
    stage.settings = EmbedSettings(max_seq_length=None)
    assert stage.fingerprint() == {"embedder": embedder.identity()}


def test_encode_cached_hits_and_misses(embedder, tmp_path):
    ids = ["a", "b", "c"]
    texts = ["The river flows south.", "Paris is the capital of France.", "Cats sleep a lot."]
    calls = []
    real = embedder.encode

    def counting(t, **kw):
        calls.append(len(t))
        return real(t, **kw)

    embedder.encode = counting
    try:
        first = encode_cached(embedder, ids, texts, tmp_path)
        again = encode_cached(embedder, ids, texts, tmp_path)
        assert calls == [3] and np.array_equal(first, again)
        encode_cached(embedder, ids, texts[:2] + ["Dogs bark."], tmp_path)  # changed text
        encode_cached(embedder, ["a", "b", "z"], texts, tmp_path)  # changed id
        assert calls == [3, 3, 3]
    finally:
        del embedder.encode
    np.testing.assert_allclose(first, embedder.encode(texts), atol=1e-6)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".npy"] * 3  # no temp files left


# ---------------------------------------------------------------- index

def test_flat_index_is_exact(corpus):
    _, vectors, queries = corpus
    index = build_index(vectors, IndexSettings())
    assert index.kind == "flat" and not index.on_gpu
    scores, ids = index.search(queries, 10)
    brute = queries @ vectors.T  # (nq, n)
    truth = np.argsort(-brute, axis=1, kind="stable")[:, :10]
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (len(queries), 10)
    assert recall_at(ids, truth) == 1.0
    np.testing.assert_allclose(scores, np.take_along_axis(brute, ids, axis=1), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall_and_determinism(corpus, kind):
    _, vectors, queries = corpus
    truth = build_index(vectors, IndexSettings(kind="flat")).search(queries, 10)[1]
    settings = IndexSettings(kind=kind)  # ~300 vectors: IVF probes most lists; see the slow test
    index = build_index(vectors, settings)
    scores, ids = index.search(queries, 10)
    assert index.kind == kind and recall_at(ids, truth) >= 0.95
    again = build_index(vectors, settings).search(queries, 10)
    assert np.array_equal(again[1], ids) and np.array_equal(again[0], scores)


def test_auto_kind_small_k_and_edges():
    assert resolve_kind(10, IndexSettings()) == "flat"
    assert resolve_kind(10, IndexSettings(exact_max=5)) == "hnsw"
    assert resolve_kind(10, IndexSettings(exact_max=5, approximate="ivf")) == "ivf"
    assert default_nlist(10_000, None) == 256 and default_nlist(100_000, None) == 1265
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    scores, ids = build_index(x, IndexSettings(kind="hnsw")).search(x, 50)  # k > n: clipped
    assert ids.shape == (5, 5) and sorted(ids[0]) == [0, 1, 2, 3, 4] and (ids[:, 0] == range(5)).all()
    with pytest.raises(ValueError, match="non-empty"):
        build_index(np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        build_index(x, IndexSettings(use_gpu=True))  # no GPU here: a clear error, not a crash


@pytest.mark.slow
def test_recall_on_a_few_thousand_passages(embedder, tmp_path_factory):
    passages = wiki_passages(1000)[:3000]
    cache = tmp_path_factory.mktemp("vecs")
    vectors = encode_cached(embedder, [p.id for p in passages], [p.text for p in passages], cache)
    queries = embedder.encode([p.title for p in passages[::15]])
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]  # (nq, 10)
    assert recall_at(build_index(vectors, IndexSettings(kind="flat")).search(queries, 10)[1],
                     truth) == 1.0
    # measured here: ivf 0.904 (76 lists, nprobe 16), hnsw 0.996
    for kind, floor in (("ivf", 0.85), ("hnsw", 0.95)):
        ids = build_index(vectors, IndexSettings(kind=kind)).search(queries, 10)[1]
        assert recall_at(ids, truth) >= floor, kind


def test_vector_matrix_reads_arrow_vectors_as_to_pylist_does(tmp_path):
    """mine reads the embed shards' vectors straight from Arrow; the same numbers as the slow
    way, for a whole multi-chunk column, a slice (what a sharded index reads) and no rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from fret.stages.shared.embed import EMBEDDING_SCHEMA
    from fret.stages.shared.mine import vector_matrix

    rng = np.random.default_rng(0)
    rows = [{"id": str(i), "vector": v} for i, v in enumerate(rng.standard_normal((7, 5)).astype(np.float32))]
    for k, part in enumerate((rows[:3], rows[3:])):
        pq.write_table(pa.Table.from_pylist(part, schema=EMBEDDING_SCHEMA), tmp_path / f"p{k}.parquet")
    column = pa.concat_tables([pq.read_table(tmp_path / f"p{k}.parquet") for k in (0, 1)])["vector"]
    assert column.num_chunks == 2
    slow = np.asarray(column.to_pylist(), dtype=np.float32)
    assert vector_matrix(column).dtype == np.float32
    np.testing.assert_array_equal(vector_matrix(column), slow)
    np.testing.assert_array_equal(vector_matrix(column.slice(2, 4)), slow[2:6])
    assert vector_matrix(column.slice(0, 0)).shape[0] == 0
