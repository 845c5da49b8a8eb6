"""Fuzzed corpus sources (JSONL, gzipped JSONL, Parquet, saved `datasets` folders): random and
mutated files give a CorpusError naming the file, or every row back as a Document or a Reject
with its reason; never another exception, never a row silently lost."""
import gzip
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import example, given
from hypothesis import strategies as st

from fret.core.records import Document, Reject
from fret.core.errors import FretError
from fret.parts.corpus import (CorpusError, HFSource, JsonlSource, ParquetSource, chunk_document,
                               iter_documents, word_spans)
from fret.stages.fret.queries import DEFAULT_TASK_TYPES, read_user_queries, user_query
from fret.stages.shared.ask import Invalid
from fuzzing import fuzz, json_values, mutated, mutated_tree

ROWS = [
    {"id": "1", "title": "Amazon", "text": "The Amazon is the largest river by discharge.", "lang": "en"},
    {"id": "2", "title": None, "text": "El río nace en los Andes del Perú.", "lang": "es"},
    {"id": "3", "title": "東京", "text": "東京は日本の首都です。", "lang": "ja"},
]
FIELDS = dict(id_field="id", title_field="title", language_field="lang")
JSONL = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS).encode()


def _lines_in(data: bytes) -> int:
    """Rows a JSONL file holds: every line but the blank ones (undecodable lines are rows too)."""
    n = 0
    for raw in data.split(b"\n"):
        try:
            n += bool(raw.decode("utf-8").strip())
        except UnicodeDecodeError:
            n += 1
    return n


def _read(source) -> tuple[list[Document], list[Reject]]:
    """All of a source, or a CorpusError; rejects must say why and where."""
    items = list(iter_documents(source))
    docs = [i for i in items if isinstance(i, Document)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert len(docs) + len(rejects) == len(items)
    for r in rejects:
        assert r.reason and r.detail
    return docs, rejects


def _check_jsonl(data: bytes, gz: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("c.jsonl.gz" if gz else "c.jsonl")
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        docs, rejects = _read(JsonlSource(type="jsonl", path=str(path), **FIELDS))
    assert len(docs) + len(rejects) == _lines_in(data)


@fuzz(300)
@given(st.one_of(mutated(JSONL), st.binary(max_size=200)))
@example(b'{"text": "\\ud800 lone surrogate"}\n')
def test_jsonl_bytes(data):
    _check_jsonl(data)


@fuzz(60)
@given(st.lists(st.one_of(*(mutated_tree(r) for r in ROWS)), max_size=4), st.booleans())
def test_jsonl_rows(rows, gz):
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    _check_jsonl(text.encode("utf-8", "surrogatepass"), gz)  # a lone surrogate: invalid UTF-8


@fuzz(100)
@given(mutated(gzip.compress(JSONL, mtime=0)))
@example(gzip.compress(JSONL, mtime=0)[:-9])
def test_jsonl_gz_damaged(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.jsonl.gz"
        path.write_bytes(data)
        try:
            _read(JsonlSource(type="jsonl", path=str(path), **FIELDS))
        except CorpusError as err:
            assert str(path) in str(err)


# ---- chunking: a document long enough is cut into passages that hold every word, none too long

WORDS = st.sampled_from(["a", "Word", "end.", "why?", "東", "京", "\n", "\n\n", "x" * 30, "»", "…", "\u3000"])


@st.composite
def sizes(draw) -> tuple[int, int, int]:
    """(passage_words, min_words, overlap_words) as the settings allow them."""
    passage_words = draw(st.integers(2, 40))
    return (passage_words, draw(st.integers(1, passage_words // 2)),
            draw(st.integers(0, passage_words // 2)))


@fuzz(150)
@given(st.lists(WORDS, max_size=120).map(" ".join) | st.text(max_size=200), sizes())
@example("a b c d e f", (10, 5, 5))
def test_chunking_keeps_every_word(text, size):
    passage_words, min_words, overlap = size
    doc = Document(doc_id="d-1", text=text, source="fuzz", origin="f.jsonl:1")
    passages, rejects = chunk_document(doc, passage_words, min_words, overlap)
    words = len(word_spans(text))
    if words < min_words:
        assert not passages and [r.reason for r in rejects] == ["too_short"]
        return
    assert all(p.n_words <= passage_words and p.text in text for p in passages)
    assert not rejects
    covered = 0  # words up to the end of the last passage
    for p in passages:
        covered += p.n_words - min(overlap, covered)
    assert covered == words


# ---- Parquet: random column types, and damaged files


COLUMN_TYPES = {
    "string": st.text(max_size=30), "int": st.integers(-2**63, 2**63 - 1), "float": st.floats(),
    "bool": st.booleans(), "binary": st.binary(max_size=10), "list": st.lists(st.text(max_size=5), max_size=3),
    "struct": st.fixed_dictionaries({"a": st.text(max_size=5)}),
}


@st.composite
def tables(draw) -> pa.Table:
    """0-4 columns named like the fields the source reads, each of one random type, nulls included."""
    n = draw(st.integers(0, 5))
    names = draw(st.lists(st.sampled_from(["text", "title", "id", "lang", "other"]), min_size=0,
                          max_size=4, unique=True))
    columns = {}
    for name in names:
        values = st.none() | COLUMN_TYPES[draw(st.sampled_from(sorted(COLUMN_TYPES)))]
        columns[name] = draw(st.lists(values, min_size=n, max_size=n))
    return pa.Table.from_pydict(columns)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


PARQUET = _parquet_bytes(pa.Table.from_pylist(ROWS))
# One bit flipped in a page header of the `text` column: pyarrow 26 reads it as a page of no
# rows, without an error (found by test_parquet_damaged; the file records 3 rows).
_AT = PARQUET.find(b"\x15\x00\x15\x14\x15\x18,", PARQUET.find(b"discharge")) + 1
EMPTY_PAGE = PARQUET[:_AT] + bytes([PARQUET[_AT] ^ 1]) + PARQUET[_AT + 1:]


def _check_parquet(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.parquet"
        path.write_bytes(data)
        try:
            docs, rejects = _read(ParquetSource(type="parquet", path=str(path), **FIELDS))
        except CorpusError as err:
            assert str(path) in str(err)
            return
        assert len(docs) + len(rejects) == pq.ParquetFile(path).metadata.num_rows


@fuzz(60)
@given(tables())
def test_parquet_columns(table):
    _check_parquet(_parquet_bytes(table))


@fuzz(150)
@given(mutated(PARQUET))
@example(EMPTY_PAGE)
@example(b"")
@example(PARQUET.replace(b"Amazon", b"\xffmazon", 1))  # invalid UTF-8 in a string column
@example(PARQUET.replace(b"\x18\x04lang", b"\x18\x04\xf6ang", 1))  # ... and in a column name
def test_parquet_damaged(data):
    _check_parquet(data)


# ---- a `datasets` folder written by save_to_disk, with random rows and damaged files


@fuzz(10)
@given(tables(), st.sampled_from(["", "state.json", "dataset_info.json", "data-00000-of-00001.arrow"]),
       st.data())
@example(pa.table({}), "", None)
def test_hf_saved_folder(table, damage, data):
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        datasets.Dataset(table).save_to_disk(tmp)
        target = Path(tmp) / damage
        if damage and target.is_file():
            target.write_bytes(data.draw(mutated(target.read_bytes())))
        try:
            docs, rejects = _read(HFSource(type="hf", name_or_path=tmp, **FIELDS))
        except CorpusError as err:
            assert tmp in str(err)
            return
    if not damage:  # a damaged file that still loads: no crash is all we can ask
        assert len(docs) + len(rejects) == table.num_rows


@fuzz(50)
@given(st.lists(json_values(), max_size=4))
def test_jsonl_any_json(values):
    _check_jsonl("".join(json.dumps(v) + "\n" for v in values).encode())


# ---- the user's own queries (`queries.from_file`): every row a Query or a reject with its reason

QUERIES = (b'{"query": "who built the dam?", "task_type": "qa", "positive_id": "p-1", "id": "u1"}\n'
           b'{"query": "cats are mammals", "task": "Given a claim, find proof", "language": "en"}\n')


def _check_user_queries(name: str, data: bytes, lines: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            rows = read_user_queries(path)
        except FretError as err:
            assert str(path) in str(err)
            return
    assert lines is None or len(rows) == lines
    for row in rows:
        if "_error" not in row:
            try:
                assert user_query(row, DEFAULT_TASK_TYPES)["origin"] == "user"
            except Invalid as err:
                assert err.reason in ("missing_query", "bad_field")


@fuzz(80)
@given(mutated(QUERIES) | st.lists(mutated_tree(json.loads(QUERIES.splitlines()[0])), max_size=3).map(
    lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()))
@example(b'{"query": "q", "task_type": ["qa"]}\n')
@example(b'{"query": "q", "positive_id": 7}\n')
def test_user_queries_jsonl(data):
    _check_user_queries("q.jsonl", data, _lines_in(data))


@fuzz(30)
@given(tables().map(lambda t: t.rename_columns(["query" if c == "text" else c for c in t.column_names])))
def test_user_queries_parquet(table):
    _check_user_queries("q.parquet", _parquet_bytes(table), table.num_rows)
