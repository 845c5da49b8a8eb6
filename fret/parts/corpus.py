"""Text sources (bundled Wikipedia, JSONL, Parquet, Hugging Face datasets) and chunking.

`iter_documents(source)` yields a `Document` per usable row and a `Reject` (reason + file:line)
per bad one; a source that cannot be opened at all raises `CorpusError` naming the path.
`chunk_document` splits a document into passages of at most `passage_words` words, on sentence
boundaries where it can, balanced so that no tail passage is needlessly tiny.

Length rules: a document shorter than `min_words` words is rejected as a whole (`too_short`):
there is too little in it to write a query about. A long document is cut into the fewest passages
that fit, as even in size as sentence boundaries allow. Where sentence boundaries would leave a
passage under `min_words` (a long sentence next to a short one), that document is cut evenly on
word boundaries instead, so no text of a long document is lost (with min_words <= half the passage
size). Words are runs of non-space characters; each CJK character counts as one.
"""
from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Annotated, Iterator, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fret.core.errors import FretError
from fret.core.records import Document, Passage, Reject, stable_id
from fret.parts import bundled
from fret.parts.chunking import chunk_document, corpus_reject, word_spans  # noqa: F401  (corpus API)
from fret.parts.jsonl import BadLine, json_lines


class CorpusError(FretError, ValueError):
    """A source that cannot be read at all; the message is one line naming the path."""


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Optional[str] = None  # label stored in Document.source; part of the doc id
    text_field: str = "text"
    title_field: Optional[str] = "title"
    id_field: Optional[str] = None
    language_field: Optional[str] = None
    language: str = "en"
    limit: Optional[int] = Field(None, ge=1)


class WikiSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["wiki"]
    languages: list[str] = ["en", "es", "fr"]
    limit: Optional[int] = Field(None, ge=1)  # per language


class JsonlSource(_Fields):
    type: Literal["jsonl"]
    path: str  # a file (.jsonl or .jsonl.gz), a folder of them, or a glob


class ParquetSource(_Fields):
    type: Literal["parquet"]
    path: str  # a file, a folder of *.parquet, or a glob


class HFSource(_Fields):
    type: Literal["hf"]
    name_or_path: str
    split: str = "train"
    config: Optional[str] = None
    streaming: Optional[bool] = None  # None: stream hub names, load local paths


SourceSettings = Annotated[
    Union[WikiSource, JsonlSource, ParquetSource, HFSource], Field(discriminator="type")]


class CorpusSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[SourceSettings] = [WikiSource(type="wiki")]
    passage_words: int = Field(120, ge=1)
    min_words: int = Field(20, ge=1)
    overlap_words: int = Field(0, ge=0)
    docs_per_shard: int = Field(1000, ge=1)
    on_error: Literal["reject", "fail"] = "reject"

    @model_validator(mode="after")
    def _overlap_fits(self):
        if self.overlap_words * 2 > self.passage_words:
            raise ValueError("overlap_words must be at most half of passage_words")
        return self


# ---------------------------------------------------------------- sources



def _row_document(row: object, src: _Fields, label: str, origin: str) -> Document | Reject:
    """Validate one row (a dict from JSON, Parquet or datasets) into a Document or a Reject."""
    raw = json.dumps(row, ensure_ascii=False, default=str) if not isinstance(row, str) else row
    if not isinstance(row, dict):
        return corpus_reject("not_an_object", f"{origin}: expected a JSON object", raw)
    if src.text_field not in row:
        return corpus_reject("missing_text_field", f"{origin}: no field {src.text_field!r}", raw)
    text = row[src.text_field]
    if text is not None and not isinstance(text, str):
        return corpus_reject("bad_text_type", f"{origin}: field {src.text_field!r} is "
                       f"{type(text).__name__}, not a string", raw)
    if not text or not text.strip():
        return corpus_reject("empty_text", f"{origin}: field {src.text_field!r} is empty", raw)
    title = row.get(src.title_field) if src.title_field else None
    title = str(title) if title is not None else None
    language = str(row.get(src.language_field) or src.language) if src.language_field else src.language
    key = row.get(src.id_field) if src.id_field else None
    return Document(doc_id=stable_id(label, key, title, text.strip(), prefix="d-"), title=title,
                    text=text.strip(), language=language, source=label, origin=origin)


def _expand(path: str, suffixes: tuple[str, ...]) -> list[Path]:
    """A file, a folder (searched recursively for the suffixes) or a glob -> sorted files."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes))
        if not files:
            raise CorpusError(f"{path}: folder has no {'/'.join(suffixes)} files")
        return files
    files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
    if not files:
        raise CorpusError(f"{path}: no such file or folder")
    return files


def _iter_wiki(src: WikiSource) -> Iterator[Document | Reject]:
    for lang in src.languages:
        fields = _Fields(text_field="extract", title_field="title", language=lang)
        try:
            path = bundled.wiki_summaries(lang)
        except bundled.MissingBundle as e:
            raise CorpusError(str(e)) from None
        articles = json.loads(path.read_text(encoding="utf-8"))
        for key in sorted(articles)[:src.limit]:
            yield _row_document(articles[key], fields, f"wiki-{lang}", f"{path.name}:{key}")


def _iter_jsonl(src: JsonlSource) -> Iterator[Document | Reject]:
    label = src.name or "jsonl"
    for path in _expand(src.path, (".jsonl", ".jsonl.gz", ".json")):
        for origin, row in json_lines(path, CorpusError):  # one bad line must not kill the file
            if isinstance(row, BadLine):
                yield corpus_reject(row.reason, row.message, row.raw)
            else:
                yield _row_document(row, src, label, origin)


def _iter_parquet(src: ParquetSource) -> Iterator[Document | Reject]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    label = src.name or "parquet"
    for path in _expand(src.path, (".parquet",)):
        row_no = 0
        try:  # a damaged file fails on opening, or only at the page that is damaged
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            if src.text_field not in names:
                raise CorpusError(f"{path}: no column {src.text_field!r} (columns: {', '.join(names)})")
            wanted = [c for c in (src.text_field, src.title_field, src.id_field, src.language_field)
                      if c and c in names]
            for batch in pf.iter_batches(columns=list(dict.fromkeys(wanted)), batch_size=1024):
                for row in batch.to_pylist():
                    yield _row_document(row, src, label, f"{path}:row {row_no}")
                    row_no += 1
        except (OSError, pa.ArrowException, UnicodeDecodeError) as e:  # damaged text too
            raise CorpusError(f"{path}: not a readable Parquet file at row {row_no} "
                              f"({' '.join(str(e).split())})") from None
        if row_no != pf.metadata.num_rows:  # a damaged page header can read as an empty page
            raise CorpusError(f"{path}: damaged Parquet file: {pf.metadata.num_rows} rows "
                              f"recorded, {row_no} readable")


def _load_hf(src: HFSource):
    import datasets
    import pyarrow as pa

    local = Path(src.name_or_path).expanduser()
    if src.name_or_path.startswith(("/", ".", "~")) and not local.exists():
        raise CorpusError(f"{src.name_or_path}: no such file or folder")
    streaming = src.streaming if src.streaming is not None else not local.exists()
    try:
        if (local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if src.split not in ds:
                    raise CorpusError(f"{local}: no split {src.split!r} (have {', '.join(ds)})")
                ds = ds[src.split]
            return ds.to_iterable_dataset() if streaming else ds
        return datasets.load_dataset(src.name_or_path, src.config, split=src.split,
                                     streaming=streaming)
    except _HF_ERRORS + (pa.ArrowException,) as e:
        if isinstance(e, CorpusError):
            raise
        raise CorpusError(f"{src.name_or_path}: cannot load dataset ({_first_line(e)})") from None


# What a damaged save_to_disk folder raises from inside `datasets` (e.g. a state.json without
# '_fingerprint' is a KeyError; a table with no columns an IndexError).
_HF_ERRORS = (FileNotFoundError, ValueError, OSError, ConnectionError, KeyError, IndexError, TypeError)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _iter_hf(src: HFSource) -> Iterator[Document | Reject]:
    import pyarrow as pa

    label = src.name or src.name_or_path
    ds = _load_hf(src)
    names = getattr(ds, "column_names", None)
    if names is not None and src.text_field not in names:
        raise CorpusError(f"{src.name_or_path}: no column {src.text_field!r} "
                          f"(columns: {', '.join(names)})")
    n = 0
    try:  # a damaged data file may fail only at the rows it holds
        for n, row in enumerate(ds):
            yield _row_document(row, src, label, f"{src.name_or_path}:{src.split}:{n}")
    except (OSError, pa.ArrowException) as e:
        raise CorpusError(f"{src.name_or_path}: cannot read row {n} ({_first_line(e)})") from None


_READERS = {"wiki": _iter_wiki, "jsonl": _iter_jsonl, "parquet": _iter_parquet, "hf": _iter_hf}


def iter_documents(source: SourceSettings) -> Iterator[Document | Reject]:
    """Documents of one source in a fixed order, with a Reject for each bad row or duplicate."""
    seen: set[str] = set()
    kept = 0
    for item in _READERS[source.type](source):
        if isinstance(item, Document):
            if item.doc_id in seen:
                yield corpus_reject("duplicate", f"{item.origin}: same content as an earlier row",
                              item.text, item.doc_id)
                continue
            if source.limit is not None and kept >= source.limit and source.type != "wiki":
                return
            seen.add(item.doc_id)
            kept += 1
        yield item


def iter_passages(settings: CorpusSettings) -> Iterator[Passage | Reject]:
    """Every source in order, chunked. With on_error='fail' the first reject raises CorpusError."""
    for source in settings.sources:
        for item in iter_documents(source):
            if isinstance(item, Document):
                passages, rejects = chunk_document(item, settings.passage_words,
                                                   settings.min_words, settings.overlap_words)
                yield from passages
            else:
                rejects = [item]
            for rej in rejects:
                yield checked(settings, rej)


def checked(settings: CorpusSettings, rej: Reject) -> Reject:
    """With on_error='fail', a reject other than too_short stops the run with its reason."""
    if settings.on_error == "fail" and rej.reason != "too_short":
        raise CorpusError(f"{rej.detail} [{rej.reason}]")
    return rej
