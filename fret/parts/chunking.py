"""Splitting documents into passages: on sentence boundaries where possible, never mid-word,
of balanced sizes, with ids from content. Each CJK character counts as one word.
"""
from __future__ import annotations

import re

from fret.core.records import Document, Passage, Reject, stable_id


def corpus_reject(reason: str, detail: str, raw: str = "", *key: object) -> Reject:
    return Reject(id=stable_id("corpus", reason, detail, *key, prefix="r-"), stage="corpus",
                  reason=reason, detail=detail, raw=raw[:2000])


_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*$")


def word_spans(text: str) -> list[tuple[int, int]]:
    """word_spans('Hi there.') -> [(0, 2), (3, 9)]"""
    return [m.span() for m in _WORD.finditer(text)]


def even_sizes(n: int, limit: int) -> list[int]:
    """Fewest near-equal parts of at most limit: even_sizes(53, 50) -> [27, 26]."""
    parts = -(-n // limit)
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def overlapped_sizes(n: int, passage_words: int, overlap: int) -> list[int]:
    """New words per passage, cutting n words into the fewest passages of at most passage_words
    where each after the first repeats `overlap` words, all as even as possible (so none is tiny).

    overlapped_sizes(11, 10, 0) -> [6, 5]; overlapped_sizes(14, 10, 4) -> [9, 5]: passages of 9
    and 4 + 5 words (even_sizes(14, 6) would start with a 5-word passage).
    """
    k = 1 + max(0, -(-(n - passage_words) // (passage_words - overlap)))
    total = n + overlap * (k - 1)  # words of all passages, the repeated ones counted again
    words = [total // k + (1 if i < total % k else 0) for i in range(k)]
    return words[:1] + [w - overlap for w in words[1:]]


def sentence_units(text: str, spans: list[tuple[int, int]], max_words: int) -> list[int]:
    """Word counts of consecutive sentences, none above max_words.

    sentence_units('A b. C d e.', spans, 9) -> [2, 3]. A sentence ends at terminal punctuation or a
    line break; an over-long one is cut into even pieces of at most max_words (on word boundaries).
    """
    units, start = [], 0
    for i, (a, b) in enumerate(spans):
        nxt = spans[i + 1][0] if i + 1 < len(spans) else len(text)
        if _SENTENCE_END.search(text[a:b]) or "\n" in text[b:nxt] or i + 1 == len(spans):
            units += even_sizes(i + 1 - start, max_words)
            start = i + 1
    return units


def balanced_groups(units: list[int], limit: int) -> list[int]:
    """Group consecutive units into the fewest groups of at most `limit` words, as even as possible.

    balanced_groups([60, 30, 30, 40], 120) -> [2, 2]: sizes 90 + 70, where greedy packing would
    give 120 + 40. Dynamic programming on (number of groups, sum of squared slack); returns the
    number of units in each group.
    """
    n = len(units)
    best: list[tuple[int, int, int]] = [(0, 0, 0)] + [(n + 1, 0, 0)] * n  # (groups, slack², prev)
    for i in range(1, n + 1):
        size, j = 0, i
        while j > 0 and size + units[j - 1] <= limit:
            size += units[j - 1]
            j -= 1
            cand = (best[j][0] + 1, best[j][1] + (limit - size) ** 2, j)
            best[i] = min(best[i], cand)
    counts, i = [], n
    while i > 0:
        counts.append(i - best[i][2])
        i = best[i][2]
    return counts[::-1]


def chunk_document(doc: Document, passage_words: int = 120, min_words: int = 20,
                   overlap_words: int = 0) -> tuple[list[Passage], list[Reject]]:
    """Split a document into passages; each passage is a verbatim slice of the text."""
    spans = word_spans(doc.text)
    if len(spans) < min_words:
        return [], [corpus_reject("too_short", f"{doc.origin}: {len(spans)} words < min_words={min_words}",
                            doc.text, doc.doc_id)]
    limit = passage_words - overlap_words  # new words per passage; the overlap comes on top
    units = sentence_units(doc.text, spans, limit)
    sizes, pos = [], 0
    for n_units in balanced_groups(units, limit):
        sizes.append(sum(units[pos:pos + n_units]))
        pos += n_units
    if len(sizes) > 1 and min(sizes) < min_words:  # the first passage has no overlap to pad it
        sizes = overlapped_sizes(len(spans), passage_words, overlap_words)
    passages, rejects, first = [], [], 0
    for chunk, n_new in enumerate(sizes):
        lo = max(0, first - overlap_words) if chunk else 0
        hi = first + n_new
        text = doc.text[spans[lo][0]:spans[hi - 1][1]]
        first = hi
        if hi - lo < min_words:
            rejects.append(corpus_reject("too_short", f"{doc.origin}: chunk {chunk} has {hi - lo} words",
                                   text, doc.doc_id, chunk))
            continue
        passages.append(Passage(
            id=stable_id(doc.doc_id, chunk, text, prefix="p-"), doc_id=doc.doc_id, title=doc.title,
            text=text, language=doc.language, source=doc.source, chunk=chunk, n_words=hi - lo))
    return passages, rejects
