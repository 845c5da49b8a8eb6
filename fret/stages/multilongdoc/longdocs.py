"""Stage `longdocs` of MultiLongDoc: whole long documents, one row each.

Sources are those of fret.parts.corpus (wiki, jsonl, parquet, hf) plus `pydoc`: the help topics
that ship with CPython itself (`pydoc_data.topics`, the text `help("TOPIC")` shows: sections
of the Python Language Reference and Library Reference, up to ~8,500 words each). It is the
embedded default because it is real, long, edited prose that is there wherever Python is; the
bundled Wikipedia extracts are summaries of at most a few hundred words.

Length: a document shorter than `min_tokens` is rejected (`too_short`). Tokens are counted as
words by fret.parts.corpus.word_spans (runs of non-space characters; each CJK character counts as
one) unless `tokenizer` names a Hugging Face tokenizer folder, whose token count is used.
Rows are `LongDoc`s (a Passage with its token count), with id = the document id, so the
shared `embed` and `mine` stages work on them unchanged.
"""
from __future__ import annotations

import itertools
import sys
from collections import Counter
from typing import Annotated, Iterator, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ...core.config import Section
from ...parts.corpus import (HFSource, JsonlSource, ParquetSource, WikiSource, _Fields, corpus_reject,
                      _row_document, iter_documents, word_spans)
from ...core.records import Document, Passage, Reject, schema_of
from ...core.stage import ShardOutput
from ..shared.corpus import CorpusStage


class PydocSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["pydoc"]
    limit: Optional[int] = Field(None, ge=1)


LongDocSource = Annotated[Union[PydocSource, WikiSource, JsonlSource, ParquetSource, HFSource],
                          Field(discriminator="type")]


class LongDocsSettings(Section):
    sources: list[LongDocSource] = [PydocSource(type="pydoc")]
    min_tokens: int = Field(1000, ge=1)
    tokenizer: Optional[str] = None  # None = words (fret.parts.corpus.word_spans); else a tokenizer folder
    docs_per_shard: int = Field(16, ge=1)


class LongDoc(Passage):
    n_tokens: int


def iter_pydoc(src: PydocSource) -> Iterator[Document | Reject]:
    """CPython's help topics, sorted by name: Documents titled by topic name."""
    from pydoc_data.topics import topics
    fields = _Fields(text_field="text", title_field="title", id_field="title", language="en")
    label = f"pydoc-{sys.version_info.major}.{sys.version_info.minor}"
    for key in sorted(topics)[:src.limit]:
        yield _row_document({"title": key, "text": topics[key]}, fields, label,
                            f"pydoc_data.topics:{key}")


def iter_source(src) -> Iterator[Document | Reject]:
    return iter_pydoc(src) if src.type == "pydoc" else iter_documents(src)


class LongDocsStage(CorpusStage):
    """Reuses CorpusStage's streaming and shard layout; keeps documents whole instead of chunking."""
    name = "longdocs"
    Settings = LongDocsSettings
    schema = schema_of(LongDoc)

    def fingerprint(self) -> dict:
        return {"python": sys.version.split()[0]} if any(
            s.type == "pydoc" for s in self.settings.sources) else {}

    def _items(self):
        return itertools.chain.from_iterable(iter_source(s) for s in self.settings.sources)

    def _count_tokens(self, text: str) -> int:
        if self.settings.tokenizer is None:
            return len(word_spans(text))
        if getattr(self, "_tok", None) is None:
            from transformers import AutoTokenizer
            self._tok = AutoTokenizer.from_pretrained(self.settings.tokenizer)
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def process(self, index: int) -> ShardOutput:
        s = self.settings
        rows, rejects, counts = [], [], Counter()
        items = self._take(index)
        unit = "words" if s.tokenizer is None else "tokens"
        for item in items:
            if isinstance(item, Reject):
                rejects.append(item)
                continue
            n = self._count_tokens(item.text)
            if n < s.min_tokens:
                rejects.append(corpus_reject("too_short", f"{item.origin}: {n} {unit} < min_tokens="
                                       f"{s.min_tokens}", item.text, item.doc_id))
                continue
            counts["documents"] += 1
            counts["tokens"] += n
            rows.append(LongDoc(id=item.doc_id, doc_id=item.doc_id, title=item.title,
                                text=item.text, language=item.language, source=item.source,
                                chunk=0, n_words=len(word_spans(item.text)),
                                n_tokens=n).model_dump())
        return ShardOutput(rows=rows, rejects=rejects, rows_in=len(items), counts=counts)
