"""Corpus sources on real files (JSONL, Parquet, datasets folders, bundled Wikipedia) and chunking."""
from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter, ValidationError

from fret.parts.corpus import (CorpusError, CorpusSettings, SourceSettings, chunk_document,
                         iter_documents, iter_passages, word_spans)
from fret.core.records import Document, Passage, Reject

LONG = ("The river rises in the northern hills and flows south for two hundred kilometres. "
        "Along its course it feeds several lakes, the largest of which is used for fishing. "
        "Farmers have drawn water from it for centuries, and old mills still stand on its banks. ")


def source(**kw):
    return TypeAdapter(SourceSettings).validate_python(kw)


def split(items):
    docs = [x for x in items if isinstance(x, Document)]
    rejects = [x for x in items if isinstance(x, Reject)]
    assert len(docs) + len(rejects) == len(items)
    return docs, rejects


# ---------------------------------------------------------------- JSONL

def test_jsonl_bad_rows_become_rejects_naming_file_and_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"title": "River", "text": LONG}).encode(),                 # 1 ok
        b'{"text": "caf\xe9 au lait is a coffee drink"}',                      # 2 latin-1 byte
        b'{"text": "unterminated',                                             # 3 bad JSON
        json.dumps({"body": "no text field here"}).encode(),                   # 4
        json.dumps({"text": "   "}).encode(),                                  # 5 empty
        b"",                                                                   # 6 blank: skipped
        json.dumps(["a", "list"]).encode(),                                    # 7 not an object
        json.dumps({"text": 42}).encode(),                                     # 8 wrong type
        json.dumps({"title": "River", "text": LONG}).encode(),                 # 9 duplicate of 1
        json.dumps({"text": "Zürich liegt am Zürichsee.", "lang": "de"}).encode(),  # 10 ok
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    src = source(type="jsonl", path=str(path), language_field="lang")
    docs, rejects = split(list(iter_documents(src)))

    assert [d.origin for d in docs] == [f"{path}:1", f"{path}:10"]
    assert docs[0].title == "River" and docs[0].text == LONG.strip()
    assert docs[1].language == "de" and docs[0].language == "en"
    by_line = {int(re.search(r":(\d+)", r.detail[len(str(path)):]).group(1)): r for r in rejects}
    assert {n: r.reason for n, r in by_line.items()} == {
        2: "invalid_utf8", 3: "malformed_json", 4: "missing_text_field", 5: "empty_text",
        7: "not_an_object", 8: "bad_text_type", 9: "duplicate"}
    assert all(r.detail.startswith(f"{path}:") and r.stage == "corpus" for r in rejects)
    assert "caf" in by_line[2].raw  # the bad line is kept (with a replacement character)
    assert len({r.id for r in rejects}) == len(rejects)


def test_doc_ids_stable_and_content_based(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"text": LONG}) + "\n" + json.dumps({"text": LONG + " More."}) + "\n")
    b.write_text(json.dumps({"text": LONG + " More."}) + "\n" + json.dumps({"text": LONG}) + "\n")
    ids_a = [d.doc_id for d in iter_documents(source(type="jsonl", path=str(a)))]
    ids_b = [d.doc_id for d in iter_documents(source(type="jsonl", path=str(b)))]
    assert ids_a == ids_b[::-1] and len(set(ids_a)) == 2  # same text, same id: not the line
    other = [d.doc_id for d in iter_documents(source(type="jsonl", path=str(a), name="other"))]
    assert set(other).isdisjoint(ids_a)  # the source label is part of the id


def test_missing_paths_raise_corpus_error_naming_them(tmp_path):
    for kw in ({"type": "jsonl", "path": str(tmp_path / "nope.jsonl")},
               {"type": "parquet", "path": str(tmp_path / "nope" / "*.parquet")},
               {"type": "hf", "name_or_path": str(tmp_path / "no_dataset")}):
        with pytest.raises(CorpusError, match=re.escape(str(tmp_path))) as err:
            list(iter_documents(source(**kw)))
        assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no .jsonl"):
        list(iter_documents(source(type="jsonl", path=str(tmp_path / "empty"))))


# ---------------------------------------------------------------- Parquet and datasets

def test_parquet_file_folder_and_glob(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"body": [LONG, None, "Second text here."], "name": ["A", "B", "C"]}),
                   folder / "part-0.parquet")
    pq.write_table(pa.table({"body": ["Third text."], "name": ["D"]}), folder / "part-1.parquet")
    for path in (folder, folder / "*.parquet"):
        src = source(type="parquet", path=str(path), text_field="body", title_field="name")
        docs, rejects = split(list(iter_documents(src)))
        assert [d.title for d in docs] == ["A", "C", "D"]
        assert [r.reason for r in rejects] == ["empty_text"]
        assert rejects[0].detail.startswith(f"{folder / 'part-0.parquet'}:row 1")
    with pytest.raises(CorpusError, match="no column 'text'"):
        list(iter_documents(source(type="parquet", path=str(folder))))


def test_hf_saved_dataset_and_local_json_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"text": [LONG, "", "A short second text."], "title": ["x", "y", "z"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)}).save_to_disk(
        str(tmp_path / "saved_dict"))
    (tmp_path / "jsondir").mkdir()
    (tmp_path / "jsondir" / "train.jsonl").write_text(
        "".join(json.dumps({"text": t, "title": ti}) + "\n" for t, ti in zip(*rows.values())))

    got = {}
    for name, split_name in (("saved", "train"), ("saved_dict", "test"), ("jsondir", "train")):
        src = source(type="hf", name_or_path=str(tmp_path / name), split=split_name)
        docs, rejects = split(list(iter_documents(src)))
        assert [r.reason for r in rejects] == ["empty_text"]
        assert f":{split_name}:1" in rejects[0].detail
        got[name] = [(d.title, d.text) for d in docs]
    assert got["saved"] == got["saved_dict"] == got["jsondir"] == [("x", LONG.strip()),
                                                                    ("z", "A short second text.")]
    with pytest.raises(CorpusError, match="no split 'dev'"):
        list(iter_documents(source(type="hf", name_or_path=str(tmp_path / "saved_dict"),
                                   split="dev")))
    limited = list(iter_documents(source(type="hf", name_or_path=str(tmp_path / "saved"),
                                         streaming=True, limit=1)))
    assert [d.title for d in limited if isinstance(d, Document)] == ["x"]


# ---------------------------------------------------------------- bundled Wikipedia

def test_wiki_languages_kept_and_order_deterministic():
    src = source(type="wiki", languages=["en", "es", "fr"], limit=40)
    first = list(iter_documents(src))
    docs, _ = split(first)
    assert [d.language for d in docs] == ["en"] * 40 + ["es"] * 40 + ["fr"] * 40
    assert all(d.title and d.text for d in docs)
    assert [d.doc_id for d in docs] == [d.doc_id for d in iter_documents(src)]
    with pytest.raises(CorpusError, match="'xx'"):
        list(iter_documents(source(type="wiki", languages=["xx"])))


# ---------------------------------------------------------------- chunking

def _check_passages(doc, passages, limit, overlap):
    """Verbatim slices that tile the text, each starting `overlap` words before the last end."""
    assert passages, doc.text[:80]
    spans = word_spans(doc.text)
    word = 0
    for p in passages:
        assert p.text and p.text.strip() == p.text
        assert p.n_words == len(word_spans(p.text)) <= limit
        start, end = spans[word][0], spans[word + p.n_words - 1][1]
        assert p.text == doc.text[start:end]  # starts and ends on word boundaries
        word = max(0, word + p.n_words - overlap)
    assert word + overlap >= len(spans) and end == spans[-1][1]  # nothing left over


def test_chunking_invariants_on_wiki_and_long_docs():
    docs = [d for d in iter_documents(source(type="wiki", languages=["en", "fr"], limit=150))
            if isinstance(d, Document)]
    long_doc = Document(doc_id="d-long", text=LONG * 12 + "\n\nA final paragraph closes it.",
                        source="test", origin="t:1")
    no_punct = Document(doc_id="d-np", text=" ".join(f"w{i}" for i in range(500)), source="t")
    for limit, min_words, overlap in ((120, 20, 0), (50, 10, 0), (60, 10, 15)):
        for doc in docs + [long_doc, no_punct]:
            passages, rejects = chunk_document(doc, limit, min_words, overlap)
            if len(word_spans(doc.text)) < min_words:
                assert not passages and [r.reason for r in rejects] == ["too_short"]
                continue
            _check_passages(doc, passages, limit, overlap)
            assert all(p.n_words >= min_words for p in passages)
            assert rejects == []  # a long document loses nothing (min_words <= half a passage)
            again, _ = chunk_document(doc, limit, min_words, overlap)
            assert [p.id for p in again] == [p.id for p in passages]
            assert len({p.id for p in passages}) == len(passages)
            assert [p.chunk for p in passages] == sorted(p.chunk for p in passages)
    # balanced: 7 sentences of ~15 words in passages of <= 50 words -> even sizes, no tiny tail
    passages, _ = chunk_document(long_doc, 50, 10, 0)
    sizes = [p.n_words for p in passages]
    assert max(sizes) - min(sizes) <= 20, sizes
    # sentence boundaries are used: every passage but an over-long sentence's ends a sentence
    assert all(p.text.endswith(".") for p in passages)


def test_short_document_rejected_and_cjk_counted_per_character():
    doc = Document(doc_id="d-s", text="Too short to use.", source="t", origin="f.jsonl:3")
    passages, rejects = chunk_document(doc, 120, 20)
    assert not passages and rejects[0].reason == "too_short" and "f.jsonl:3" in rejects[0].detail
    zh = Document(doc_id="d-zh", text="北京是中国的首都。" * 30, source="t", language="zh")
    passages, _ = chunk_document(zh, 100, 20)
    assert all(20 <= p.n_words <= 100 for p in passages) and "".join(
        p.text for p in passages) == zh.text


def test_iter_passages_and_settings_validation(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": LONG * 3}) + "\n{broken\n")
    settings = CorpusSettings(sources=[{"type": "jsonl", "path": str(path)}], passage_words=40,
                              min_words=10)
    items = list(iter_passages(settings))
    n = len(items) - 1
    assert n >= -(-len((LONG * 3).split()) // 40)
    assert [type(x).__name__ for x in items] == ["Passage"] * n + ["Reject"]
    with pytest.raises(CorpusError, match=rf"{re.escape(str(path))}:2.*malformed_json"):
        list(iter_passages(settings.model_copy(update={"on_error": "fail"})))
    with pytest.raises(ValidationError, match="pathh"):
        CorpusSettings(sources=[{"type": "jsonl", "pathh": "x"}])
    with pytest.raises(ValidationError, match="'wiki', 'jsonl', 'parquet', 'hf'"):
        CorpusSettings(sources=[{"type": "csv", "path": "x"}])
    assert isinstance(items[0], Passage) and items[0].source == "jsonl"
