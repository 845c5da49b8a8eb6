"""Fuzzed `fret eval` inputs (BEIR folders, SQuAD/XQuAD JSON, STS TSV, classification CSV, bitext):
a reader returns texts that are all strings, or raises EvalDataError naming the file; never
another exception. Seeds are the first rows of the real sets in ../shared/evaldata."""
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from conftest import EVALDATA
from fret.parts.evaluation.readers import (EvalDataError, read_beir, read_bitext, read_classification,
                                           read_squad_retrieval, read_sts)
from fuzzing import fuzz, mutated, mutated_tree

pytestmark = pytest.mark.skipif(not EVALDATA.exists(), reason="shared evaldata not present")


def _head(path: Path, lines: int) -> bytes:
    return b"".join(path.read_bytes().splitlines(keepends=True)[:lines]) if path.exists() else b""


def _squad_seed() -> dict:
    path = EVALDATA / "xquad" / "xquad.en.json"
    if not path.exists():
        return {}
    article = json.loads(path.read_text())["data"][0]
    paragraphs = [{**p, "qas": p["qas"][:2]} for p in article["paragraphs"][:2]]
    return {"version": "1.1", "data": [{"title": article["title"], "paragraphs": paragraphs}]}


SQUAD = _squad_seed()
STS = _head(EVALDATA / "stsb" / "sts-test.csv", 4)
TRAIN, TEST = _head(EVALDATA / "banking77" / "train.csv", 5), _head(EVALDATA / "banking77" / "test.csv", 4)
BEIR = {"corpus.jsonl": b'{"_id": "d1", "title": "T", "text": "Paris is in France."}\n'
                        b'{"_id": "d2", "text": "Berlin is in Germany."}\n',
        "queries.jsonl": b'{"_id": "q1", "text": "Where is Paris?"}\n{"_id": "q2", "text": "Berlin?"}\n',
        "qrels/test.tsv": b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n"}


def _all_text(*values) -> None:
    """What a reader hands the model must be strings (a title may be None)."""
    for v in values:
        assert isinstance(v, str), v


def _expect(read, where: Path):
    try:
        return read()
    except EvalDataError as err:
        assert str(where) in str(err), err
        return None


@fuzz(150)
@given(st.sampled_from(sorted(BEIR)).flatmap(lambda name: st.tuples(st.just(name), mutated(BEIR[name]))))
@example(("qrels/test.tsv", b"q1\td1\tinf\n"))
@example(("corpus.jsonl", b'{"_id": "d1", "text": 5}\n'))
@example(("corpus.jsonl", b'{"_id": "d1", "text": "' + b"\xff" + b'"}\n'))
@example(("queries.jsonl", b'{"_id": "q1", "text": ' + b"[" * 3000 + b"\n"))
def test_beir(damaged):
    name, data = damaged
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "qrels").mkdir()
        for n, content in BEIR.items():
            (folder / n).write_bytes(data if n == name else content)
        got = _expect(lambda: read_beir(folder), folder)
    if got:
        _all_text(*(t for _, t in got.corpus.values()), *got.queries.values())
        assert all(t is None or isinstance(t, str) for t, _ in got.corpus.values())


def _check_squad(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.json"
        path.write_bytes(data)
        got = _expect(lambda: read_squad_retrieval(path, corpus_from=path), path)
        if got:
            _all_text(*(t for _, t in got.corpus.values()), *got.queries.values())
            assert all(t is None or isinstance(t, str) for t, _ in got.corpus.values())
        pair = _expect(lambda: read_bitext(path, path), path)
        if pair:
            _all_text(*pair[0], *pair[1])


@fuzz(100)
@given(mutated_tree(SQUAD, max_ops=2))
@example({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1"}]}]}]})
@example({"data": [{"title": 5, "paragraphs": [{"context": 7, "qas": [{"question": ["q"]}]}]}]})
@example({"data": ["article"]})
def test_squad_tree(tree):
    _check_squad(json.dumps(tree).encode())


@fuzz(100)
@given(mutated(json.dumps(SQUAD, ensure_ascii=False).encode()))
@example(b"\xff")
@example(b"[" * 3000)
def test_squad_bytes(data):
    _check_squad(data)


@fuzz(150)
@given(mutated(STS))
@example(STS.replace(b"2.500", b"nan", 1))
def test_sts(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sts.tsv"
        path.write_bytes(data)
        pairs = _expect(lambda: read_sts(path), path)
    for a, b, score in pairs or []:
        _all_text(a, b)
        assert score == score and abs(score) != float("inf")


@fuzz(150)
@given(st.booleans(), mutated(TRAIN) | mutated(TEST))
@example(True, b"text,category\n\"" + b"x" * 200_000 + b"\",a\n")  # a field past csv's limit
def test_classification(train_side, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "train.csv").write_bytes(data if train_side else TRAIN)
        (folder / "test.csv").write_bytes(TEST if train_side else data)
        got = _expect(lambda: read_classification(folder), folder)
    for texts, labels in got or []:
        _all_text(*texts, *labels)


@fuzz(100)
@given(mutated(b"one sentence\nanother one\n"))
@example(b"\xffone\ntwo\n")
def test_bitext_lines(data):
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.txt", Path(tmp) / "b.txt"
        a.write_bytes(data)
        b.write_bytes(b"una frase\notra\n")
        pair = _expect(lambda: read_bitext(a, b), Path(tmp))
    if pair:
        _all_text(*pair[0], *pair[1])
