"""Decontamination: drop training rows whose query or positive overlaps user-given evaluation sets.

API (what the `mix` stage calls):

    index = build_index({"stsb": "evaldata/stsb/sts-test.csv", "nq": "beir/nq"}, ngram=8)
    kept, dropped = decontaminate(rows, index, threshold=0.5)   # dropped: list[Reject]

Evaluation sets: a BEIR folder (corpus.jsonl: title/text; queries.jsonl: text), an STS file
(tab-separated, the first 7 fields genre, file, year, id, score, sentence1, sentence2), SQuAD or
XQuAD JSON (paragraphs and questions), a JSONL
file (each object's "text", "query", "positive", "sentence1", "sentence2" fields) or plain text
(one text per line). Texts are normalized (`normalize`), split into words (CJK and Thai characters
count as one word each) and every word n-gram is stored, hashed, per evaluation set.

A training text is contaminated by set S when the fraction of its n-grams found in S reaches
`threshold`, or when it is shorter than n words and equals (normalized) a text of S. The reason
names the field and the set: `contaminated_query:stsb`, `contaminated_positive:nq`. Texts of S
shorter than n words only match exactly: a short evaluation sentence inside a long training
passage is not caught. Memory is about 100 bytes per distinct n-gram.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from fret.core.records import Reject
from fret.parts.jsonl import strict_json_lines

_WS = re.compile(r"\s+")
_WORD = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+")


@functools.lru_cache(maxsize=1)
def _punctuation() -> dict[int, str]:
    """Every Unicode punctuation code point (category P*) -> a space; built once (~0.3 s)."""
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}


def normalize(text: str) -> str:
    """NFKC, lowercase, punctuation removed, whitespace collapsed. normalize(' Ｈi,  there! ') -> 'hi there'"""
    text = unicodedata.normalize("NFKC", text).lower().translate(_punctuation())
    return _WS.sub(" ", text).strip()


def words(text: str) -> list[str]:
    """Normalized words; CJK/Thai characters one each. words('Hi, 東京!') -> ['hi', '東', '京']"""
    return _WORD.findall(normalize(text))


def _h(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def ngrams(text: str, n: int) -> set[int]:
    """Hashed word n-grams of a text (empty when it has fewer than n words)."""
    w = words(text)
    return {_h(" ".join(w[i:i + n])) for i in range(len(w) - n + 1)}


@dataclass
class EvalSet:
    name: str
    ngrams: set[int] = field(default_factory=set)
    exact: set[int] = field(default_factory=set)  # hashes of normalized whole texts
    texts: int = 0


@dataclass
class NgramIndex:
    ngram: int = 8
    sets: dict[str, EvalSet] = field(default_factory=dict)

    def add(self, name: str, texts: Iterable[str]) -> EvalSet:
        es = self.sets.setdefault(name, EvalSet(name))
        for text in texts:
            if not text or not text.strip():
                continue
            es.texts += 1
            es.exact.add(_h(" ".join(words(text))))
            es.ngrams |= ngrams(text, self.ngram)
        return es

    def match(self, text: str, threshold: float) -> tuple[str, float] | None:
        """(set name, overlap fraction) of the first set that contaminates `text`, else None."""
        w = words(text)
        if not w:
            return None
        grams = {_h(" ".join(w[i:i + self.ngram])) for i in range(len(w) - self.ngram + 1)}
        whole = _h(" ".join(w))
        for name, es in self.sets.items():
            if whole in es.exact:
                return name, 1.0
            if grams:
                frac = len(grams & es.ngrams) / len(grams)
                if frac >= threshold:
                    return name, frac
        return None


# --- reading evaluation sets --------------------------------------------------------------------


def read_beir(folder: Path) -> Iterator[str]:
    for fname in ("corpus.jsonl", "queries.jsonl"):
        path = folder / fname
        if not path.exists():
            continue
        for n, line in enumerate(path.open(encoding="utf-8"), 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
                yield obj.get("text") or ""


def read_sts(path: Path) -> Iterator[str]:
    """STS-B TSV: keep the first 7 fields (some rows carry 2 more); sentences are fields 6 and 7."""
    for n, line in enumerate(path.open(encoding="utf-8"), 1):
        fields = line.rstrip("\n").split("\t")[:7]
        if len(fields) < 7:
            raise ValueError(f"{path}:{n}: expected 7 tab-separated fields, got {len(fields)}")
        yield fields[5]
        yield fields[6]


def _is_sts(path: Path) -> bool:
    with path.open(encoding="utf-8") as f:
        fields = f.readline().rstrip("\n").split("\t")
    try:
        float(fields[4])
    except (IndexError, ValueError):
        return False
    return len(fields) >= 7


def read_jsonl(path: Path) -> Iterator[str]:
    for _, obj in strict_json_lines(path):
        for key in ("text", "query", "positive", "sentence1", "sentence2"):
            if isinstance(obj.get(key), str):
                yield obj[key]


def read_squad(path: Path) -> Iterator[str]:
    """SQuAD / XQuAD JSON: every paragraph and question."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not SQuAD JSON (a 'data' list of articles): {e}") from None
    for article in data:
        for para in article.get("paragraphs", []):
            yield para.get("context") or ""
            yield from (qa.get("question") or "" for qa in para.get("qas", []))


def read_eval_texts(path: str | Path) -> Iterator[str]:
    """Texts of one evaluation set, its kind told from the path (see the module doc)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "corpus.jsonl").exists() and not (path / "queries.jsonl").exists():
            raise ValueError(f"{path}: not a BEIR folder (no corpus.jsonl or queries.jsonl)")
        return read_beir(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation set not found: {path}")
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".json":
        return read_squad(path)
    if _is_sts(path):
        return read_sts(path)
    return (line.rstrip("\n") for line in path.open(encoding="utf-8"))


def build_index(sets: dict[str, str | Path] | list[str | Path], *, ngram: int = 8) -> NgramIndex:
    """An index over named evaluation sets; a list names each set by its file or folder stem."""
    named = sets if isinstance(sets, dict) else {Path(p).name.split(".")[0]: p for p in sets}
    index = NgramIndex(ngram=ngram)
    for name, path in named.items():
        index.add(name, read_eval_texts(path))
    return index


def decontaminate(rows: Iterable[dict], index: NgramIndex, *, threshold: float = 0.5,
                  fields: tuple[str, ...] = ("query", "positive")) -> tuple[list[dict], list[Reject]]:
    """Rows kept, and a Reject (reason `contaminated_FIELD:SET`) for each row dropped."""
    kept, dropped = [], []
    for row in rows:
        hit = None
        for f in fields:
            m = index.match(row.get(f) or "", threshold)
            if m:
                hit = (f, *m)
                break
        if hit is None:
            kept.append(row)
            continue
        f, name, frac = hit
        dropped.append(Reject(id=row["id"], stage="decontam", reason=f"contaminated_{f}:{name}",
                              detail=f"{frac:.2f} of {f} {index.ngram}-grams in {name}",
                              raw=json.dumps(row, ensure_ascii=False, default=str)))
    return kept, dropped
