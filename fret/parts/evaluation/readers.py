"""Evaluation data readers. Every malformed input raises EvalDataError naming the file (and line).

Formats: BEIR folders (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), SQuAD v1.1 JSON read as
retrieval (XQuAD), STS Benchmark TSV (first 7 fields), CSV `text,category` train/test folders
(Banking77), and parallel text for bitext matching.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from fret.core.errors import ConfigError
from fret.parts.jsonl import strict_json_lines


class EvalDataError(ConfigError):
    """An evaluation file that is missing or malformed: named with the line, exit 2."""


@dataclass
class Retrieval:
    corpus: dict[str, tuple[str | None, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _need(path: Path, hint: str) -> Path:
    if not path.exists():
        raise EvalDataError(f"{path}: missing ({hint})")
    return path


def _open_text(path: Path, newline: str | None = None) -> io.StringIO:
    """The file as text to read or iterate (like open()), or EvalDataError naming the bad byte."""
    try:
        return io.StringIO(path.read_bytes().decode("utf-8"), newline=newline)
    except UnicodeDecodeError as e:
        raise EvalDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


# BEIR fields and the types the model can take (a title may be null).
_BEIR_TYPES = {"_id": (str, int), "text": (str,), "title": (str, type(None))}


def _jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = []
    for origin, row in strict_json_lines(path, EvalDataError):
        missing = [k for k in required if k not in row]
        if missing:
            raise EvalDataError(f"{origin}: missing field(s) {missing}")
        wrong = [k for k, types in _BEIR_TYPES.items()
                 if k in row and (not isinstance(row[k], types) or isinstance(row[k], bool))]
        if wrong:
            raise EvalDataError(f"{origin}: field(s) {wrong} of the wrong type (_id: a string or "
                                "number, text: a string, title: a string or null)")
        rows.append(row)
    if not rows:
        raise EvalDataError(f"{path}: empty")
    return rows


def read_beir(folder: Path, split: str = "test") -> Retrieval:
    hint = "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv"
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalDataError(f"{folder}: not a folder ({hint})")
    corpus = {str(r["_id"]): (r.get("title") or None, r["text"])
              for r in _jsonl(_need(folder / "corpus.jsonl", hint), ("_id", "text"))}
    queries = {str(r["_id"]): r["text"] for r in _jsonl(_need(folder / "queries.jsonl", hint), ("_id", "text"))}
    qrels_path = _need(folder / "qrels" / f"{split}.tsv", hint)
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(qrels_path) as f:
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if n == 1 and fields[0] == "query-id":
                continue
            if not line.strip():
                continue
            if len(fields) != 3:
                raise EvalDataError(f"{qrels_path}:{n}: expected query-id<TAB>corpus-id<TAB>score, got {len(fields)} fields")
            try:
                score = int(float(fields[2]))
            except (ValueError, OverflowError):  # 'x', 'nan', 'inf'
                raise EvalDataError(f"{qrels_path}:{n}: score {fields[2]!r} is not a number") from None
            qrels.setdefault(fields[0], {})[fields[1]] = score
    unknown = sorted(set(qrels) - set(queries))
    if unknown:
        raise EvalDataError(f"{qrels_path}: {len(unknown)} query ids not in queries.jsonl (first: {unknown[0]!r})")
    if not any(s > 0 for rel in qrels.values() for s in rel.values()):
        raise EvalDataError(f"{qrels_path}: no relevant (score > 0) pairs")
    return Retrieval(corpus, {q: queries[q] for q in qrels}, qrels)


def _squad_shape(articles: list) -> None:
    """TypeError or KeyError unless every article, paragraph and question has text where it must."""
    for a in articles:
        if not isinstance(a.get("title"), (str, type(None))):
            raise TypeError(f"title {a['title']!r} is not a string")
        for p in a["paragraphs"]:
            if not isinstance(p["context"], str):
                raise TypeError(f"context {p['context']!r} is not a string")
            for qa in p["qas"]:
                if not isinstance(qa["question"], str):
                    raise TypeError(f"question {qa['question']!r} is not a string")


def _squad(path: Path) -> list[dict]:
    try:
        data = json.loads(_open_text(_need(Path(path), "SQuAD v1.1 JSON")).read())
        articles = data["data"]
        _squad_shape(articles)
    except json.JSONDecodeError as err:
        raise EvalDataError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise EvalDataError(f"{path}: not JSON (nested too deeply)") from None
    except KeyError as err:
        raise EvalDataError(f"{path}: not SQuAD v1.1 (data[].paragraphs[].context/qas[].question): "
                            f"missing {err}") from None
    except (TypeError, AttributeError) as err:  # a list or number where an object belongs
        raise EvalDataError(f"{path}: not SQuAD v1.1 (data[].paragraphs[].context/qas[].question): "
                            f"{' '.join(str(err).split())[:200]}") from None
    return articles


def read_squad_retrieval(path: Path, corpus_from: Path | None = None) -> Retrieval:
    """SQuAD/XQuAD as retrieval: corpus = paragraphs, queries = questions, each relevant to its own
    paragraph. Doc ids are positions ('a3-p1'), so `corpus_from` (another language's XQuAD file,
    paragraphs in the same order) gives cross-lingual retrieval."""
    articles = _squad(path)
    queries, qrels, docs = {}, {}, {}
    for ai, a in enumerate(articles):
        for pi, p in enumerate(a["paragraphs"]):
            doc = f"a{ai}-p{pi}"
            docs[doc] = (a.get("title"), p["context"])
            for qi, qa in enumerate(p["qas"]):
                qid = str(qa.get("id", f"{doc}-q{qi}"))
                queries[qid] = qa["question"]
                qrels[qid] = {doc: 1}
    if corpus_from is not None:
        other = _squad(corpus_from)
        shape = [len(a["paragraphs"]) for a in articles]
        if [len(a["paragraphs"]) for a in other] != shape:
            raise EvalDataError(f"{corpus_from}: paragraphs do not line up with {path} (different article/paragraph counts)")
        docs = {f"a{ai}-p{pi}": (a.get("title"), p["context"])
                for ai, a in enumerate(other) for pi, p in enumerate(a["paragraphs"])}
    return Retrieval(docs, queries, qrels)


def read_sts(path: Path) -> list[tuple[str, str, float]]:
    """STS Benchmark TSV: genre, file, year, id, score, sentence1, sentence2 (extra fields ignored)."""
    path = _need(Path(path), "STS Benchmark TSV")
    pairs = []
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")[:7]
            if len(fields) < 7:
                raise EvalDataError(f"{path}:{n}: expected 7 tab-separated fields "
                                    f"(genre, file, year, id, score, sentence1, sentence2), got {len(fields)}")
            try:
                score = float(fields[4])
            except ValueError:
                score = math.nan
            if not math.isfinite(score):  # 'x', and 'nan' or 'inf' that float() takes
                raise EvalDataError(f"{path}:{n}: score {fields[4]!r} is not a number")
            pairs.append((fields[5], fields[6], score))
    if len(pairs) < 2:
        raise EvalDataError(f"{path}: fewer than 2 pairs")
    return pairs


def _csv_split(path: Path) -> tuple[list[str], list[str]]:
    path = _need(path, "a classification folder holds train.csv and test.csv with header text,category")
    with _open_text(path, newline="") as f:
        reader = csv.DictReader(f)
        try:
            if not reader.fieldnames or not {"text", "category"} <= set(reader.fieldnames):
                raise EvalDataError(f"{path}: header must have columns text,category; found {reader.fieldnames}")
            texts, labels = [], []
            for n, row in enumerate(reader, 2):
                if row["text"] is None or row["category"] is None:
                    raise EvalDataError(f"{path}:{n}: missing text or category")
                texts.append(row["text"])
                labels.append(row["category"])
        except csv.Error as err:  # e.g. a field over csv's size limit (an unclosed quote)
            raise EvalDataError(f"{path}:{reader.line_num}: {err}") from None
    if not texts:
        raise EvalDataError(f"{path}: no rows")
    return texts, labels


def read_classification(folder: Path):
    """((train texts, train labels), (test texts, test labels)) from FOLDER/train.csv, FOLDER/test.csv."""
    folder = Path(folder)
    train, test = _csv_split(folder / "train.csv"), _csv_split(folder / "test.csv")
    if len(set(train[1])) < 2:
        raise EvalDataError(f"{folder / 'train.csv'}: needs at least 2 categories")
    return train, test


def _parallel_side(path: Path) -> list[str]:
    path = _need(Path(path), "bitext side: SQuAD JSON (questions) or one sentence per line")
    if path.suffix == ".json":
        return [qa["question"] for a in _squad(path) for p in a["paragraphs"] for qa in p["qas"]]
    lines = _open_text(path).read().splitlines()
    return [line for line in lines if line.strip()]


def read_bitext(src: Path, tgt: Path) -> tuple[list[str], list[str]]:
    """Aligned sentences: two text files line by line, or two XQuAD files question by question."""
    a, b = _parallel_side(src), _parallel_side(tgt)
    if len(a) != len(b):
        raise EvalDataError(f"{tgt}: {len(b)} sentences, but {src} has {len(a)}; bitext sides must align")
    return a, b
