"""FEVER (fact checking) in its original release form.

Claims (`train.jsonl`, `shared_task_dev.jsonl`): {id, verifiable, label, claim, evidence}, where
evidence is a list of evidence sets, each a list of [annotation_id, evidence_id, wiki_title,
sentence_id] (title and sentence are null for NOT ENOUGH INFO). Sentences come from the
`wiki-pages/wiki-NNN.jsonl` dump: {id: title, text, lines: "0\\tsentence\\tlink...\\n1\\t..."},
given as the `wiki_pages` option: a file, a folder of such files, or an iterable of page dicts.
Only the pages the claims cite are kept in memory.

Positive: the sentences of the first evidence set found in the pages, joined in order; title: the
first page's title. Negative: other sentences of that page that no evidence set of the claim
cites, seeded. NOT ENOUGH INFO claims are rejected (they have no evidence to retrieve).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable, Iterator

from fret.parts.convert.base import Context, per_row, sample, text_of
from fret.parts.convert.load import load_rows

_PTB = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}",
        "-COLON-": ":"}


def decode(text: str) -> str:
    """FEVER's escaped tokens back to text. decode('Ann_-LRB-film-RRB-') -> 'Ann (film)'"""
    for k, v in _PTB.items():
        text = text.replace(k, v)
    return text.replace("_", " ") if " " not in text else text


def parse_lines(lines: str) -> dict[int, str]:
    """The `lines` field of a wiki page. parse_lines('0\\tA b.\\tA\\n1\\t') -> {0: 'A b.'}"""
    out = {}
    for line in lines.split("\n"):
        parts = line.split("\t")
        if len(parts) > 1 and parts[0].isdigit() and parts[1].strip():
            out[int(parts[0])] = parts[1].strip()
    return out


def _iter_pages(pages) -> Iterator[dict]:
    if isinstance(pages, (str, Path)):
        path = Path(pages)
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"wiki_pages: no *.jsonl files in {path}")
        for f in files:
            yield from load_rows(f)
    else:
        yield from pages


def load_pages(pages, wanted: set[str]) -> dict[str, dict[int, str]]:
    """Sentences of the wanted pages: {title: {sentence_id: text}}."""
    found = {}
    for page in _iter_pages(pages):
        if page.get("id") in wanted:
            found[page["id"]] = parse_lines(page.get("lines") or "")
    return found


def _evidence_sets(row: dict) -> list[list[tuple[str, int]]]:
    """[[title, sentence id], ...] per evidence set; entries of another shape are not evidence."""
    sets = []
    evidence = row.get("evidence")
    for group in evidence if isinstance(evidence, list) else []:
        items = [(e[2], int(e[3])) for e in (group if isinstance(group, list) else [])
                 if isinstance(e, list) and len(e) >= 4 and isinstance(e[2], str)
                 and (isinstance(e[3], int) or (isinstance(e[3], str) and e[3].isdigit()))]
        if items:
            sets.append(items)
    return sets


def _fever_row(i: int, row: dict, ctx: Context, pages: dict[str, dict[int, str]]):
    oid = row.get("id", i)
    claim, label = text_of(row.get("claim")), row.get("label")
    sets = _evidence_sets(row)
    if not claim:
        return ctx.reject(oid, "empty_claim", row)
    if label not in ctx.options["labels"]:
        reason = "not_enough_info" if label == "NOT ENOUGH INFO" else "label_not_used"
        return ctx.reject(oid, reason, row, f"label {label!r}")
    usable = [s for s in sets if all(sid in pages.get(t, {}) for t, sid in s)]
    if not usable:
        missing = sorted({t for s in sets for t, sid in s if sid not in pages.get(t, {})})
        return ctx.reject(oid, "evidence_not_in_wiki_pages" if sets else "no_evidence", row,
                          f"missing pages/sentences: {missing[:5]}")
    chosen = sorted(set(usable[0]), key=lambda e: (usable[0].index(e)))
    positive = " ".join(decode(pages[t][sid]) for t, sid in chosen)
    first = chosen[0][0]
    cited = {sid for s in sets for t, sid in s if t == first}
    others = [decode(text) for sid, text in sorted(pages[first].items())
              if sid not in cited and len(text.split()) >= ctx.options["min_words"]]
    negatives = sample(ctx.rng(oid), others, ctx.options["max_negatives"])
    return ctx.unified(orig_id=oid, query=claim, positive=positive, positive_title=decode(first),
                       negatives=negatives, negative_titles=[decode(first)] * len(negatives),
                       task_type="fact_check", symmetric=False,
                       lineage={"label": label, "evidence": [[t, sid] for t, sid in chosen]})


def fever(rows: Iterable[dict], ctx: Context) -> Iterator:
    if ctx.options["wiki_pages"] is None:
        raise ValueError("converter 'fever' needs the wiki_pages option (the wiki-pages folder of the "
                         "FEVER release, a wiki-NNN.jsonl file, or page dicts)")
    rows = list(rows)
    wanted = {title for row in rows for s in _evidence_sets(row) for title, _ in s}
    pages = load_pages(ctx.options["wiki_pages"], wanted)
    return per_row(rows, ctx, functools.partial(_fever_row, pages=pages))
