"""Question answering sets: Natural Questions, HotpotQA (distractor), MIRACL.

Schemas read (field names as published):

- **Natural Questions**, either the *simplified* jsonl Google ships (`simplified-nq-train.jsonl`:
  example_id, question_text, document_text (space-tokenized, HTML tokens kept), document_url,
  long_answer_candidates[{start_token, end_token, top_level}], annotations[{annotation_id,
  long_answer{start_token, end_token, candidate_index}, short_answers, yes_no_answer}]) — the form
  most users have — or the Hugging Face `google-research-datasets/natural_questions` rows (id,
  document{title, url, html, tokens{token, is_html, ...}}, question{text, tokens},
  long_answer_candidates{...}, annotations{id, long_answer, short_answers, yes_no_answer}), as
  columns or as lists of records. Positive: the first annotated long answer, HTML tokens removed;
  negatives: other top-level candidates of the same page (>= `min_words` words), seeded.
- **HotpotQA** distractor, HF `hotpot_qa` (id, question, answer, supporting_facts{title, sent_id},
  context{title, sentences}) or the original JSON (_id, supporting_facts [[title, sent_id]],
  context [[title, [sentences]]]). Positive: the supporting paragraph that contains the answer
  (else the first supporting paragraph); negatives: distractor paragraphs, seeded.
- **MIRACL**, HF `miracl/miracl` (query_id, query, positive_passages[{docid, title, text}],
  negative_passages[...]). Positive: the first positive passage; negatives: annotated
  non-relevant passages, seeded. Pass `language=` (the MIRACL config, e.g. "sw").
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator
from urllib.parse import unquote

from fret.parts.convert.base import Context, columns, per_row, records, sample, text_of

# --- Natural Questions --------------------------------------------------------------------------


def _nq_title(url: str) -> str | None:
    """_nq_title('https://en.wikipedia.org//w/index.php?title=Email_marketing&amp;oldid=1') -> 'Email marketing'"""
    m = re.search(r"[?&]title=([^&]+)", url or "")
    return unquote(m.group(1)).replace("_", " ") if m else None


def _nq_view(row: dict) -> dict | None:
    """One NQ row, either schema, as {id, question, title, tokens, is_html, candidates, long_answers}."""
    if "question_text" in row:  # simplified jsonl
        tokens = row.get("document_text", "").split(" ")
        return {"id": row.get("example_id"), "question": text_of(row.get("question_text")),
                "title": _nq_title(row.get("document_url", "")), "tokens": tokens,
                "is_html": [t.startswith("<") and t.endswith(">") for t in tokens],
                "candidates": records(row.get("long_answer_candidates")),
                "long_answers": [a.get("long_answer") or {} for a in records(row.get("annotations"))]}
    if isinstance(row.get("question"), dict) and isinstance(row.get("document"), dict):  # HF
        doc, toks = row["document"], columns(row["document"].get("tokens"))
        ann = columns(row.get("annotations"))
        return {"id": row.get("id"), "question": text_of(row["question"].get("text")),
                "title": doc.get("title"), "tokens": toks.get("token", []),
                "is_html": toks.get("is_html", []),
                "candidates": records(row.get("long_answer_candidates")),
                "long_answers": records(ann.get("long_answer") or ann.get("long_answers"))}
    return None


def _index(long_answer: dict) -> int:
    """The candidate index of a long answer; -1 where the annotator found none."""
    value = long_answer.get("candidate_index")
    return -1 if value is None else int(value)


def _span_text(view: dict, start: int, end: int) -> str:
    return " ".join(t for t, h in zip(view["tokens"][start:end], view["is_html"][start:end]) if not h)


def _nq_row(i: int, row: dict, ctx: Context):
    view = _nq_view(row)
    if view is None:
        return ctx.reject(i, "unknown_schema", row, "expected simplified NQ (question_text) "
                          "or HF natural_questions (question.text, document.tokens)")
    oid = view["id"] if view["id"] is not None else i
    gold = next((la for la in view["long_answers"] if _index(la) >= 0), None)
    if not view["question"]:
        return ctx.reject(oid, "empty_question", row)
    if gold is None:
        return ctx.reject(oid, "no_long_answer", {"id": oid, "question": view["question"]})
    positive = _span_text(view, gold["start_token"], gold["end_token"])
    if not positive:
        return ctx.reject(oid, "empty_long_answer", {"id": oid, "question": view["question"]})
    others = [c for k, c in enumerate(view["candidates"])
              if k != gold["candidate_index"] and c.get("top_level")
              and (c["end_token"] <= gold["start_token"] or c["start_token"] >= gold["end_token"])]
    texts = [t for t in (_span_text(view, c["start_token"], c["end_token"]) for c in others)
             if len(t.split()) >= ctx.options["min_words"] and t != positive]
    negatives = sample(ctx.rng(oid), texts, ctx.options["max_negatives"])
    return ctx.unified(orig_id=oid, query=view["question"], positive=positive,
                       positive_title=view["title"], negatives=negatives,
                       negative_titles=[view["title"]] * len(negatives), task_type="qa",
                       symmetric=False, lineage={"candidate_index": gold["candidate_index"]})


def nq(rows: Iterable[dict], ctx: Context) -> Iterator:
    return per_row(rows, ctx, _nq_row)


# --- HotpotQA -----------------------------------------------------------------------------------


def _pairs(value, a: str, b: str) -> list[tuple]:
    """HF columns {a: [...], b: [...]} or the original [[x, y], ...] as a list of (x, y)."""
    if isinstance(value, dict):
        return list(zip(value.get(a) or [], value.get(b) or []))
    return [tuple(v) for v in value or []]


def _hotpotqa_row(i: int, row: dict, ctx: Context):
    oid = row.get("id", row.get("_id", i))
    question, answer = text_of(row.get("question")), text_of(row.get("answer"))
    paragraphs = {t: "".join(s).strip() for t, s in _pairs(row.get("context"), "title", "sentences")}
    gold_titles = list(dict.fromkeys(t for t, _ in _pairs(row.get("supporting_facts"), "title", "sent_id")))
    if not question:
        return ctx.reject(oid, "empty_question", row)
    if not gold_titles:
        return ctx.reject(oid, "no_supporting_facts", row)
    missing = [t for t in gold_titles if not paragraphs.get(t)]
    if missing:
        return ctx.reject(oid, "gold_paragraph_missing", row, f"not in context: {missing}")
    with_answer = [t for t in gold_titles if answer and answer.lower() in paragraphs[t].lower()]
    title = (with_answer or gold_titles)[0]
    distractors = [t for t in paragraphs if t not in gold_titles and paragraphs[t]]
    neg_titles = sample(ctx.rng(oid), distractors, ctx.options["max_negatives"])
    return ctx.unified(orig_id=oid, query=question, positive=paragraphs[title], positive_title=title,
                       negatives=[paragraphs[t] for t in neg_titles], negative_titles=neg_titles,
                       task_type="qa", symmetric=False,
                       lineage={"gold_titles": gold_titles, "type": row.get("type"),
                                "level": row.get("level")})


def hotpotqa(rows: Iterable[dict], ctx: Context) -> Iterator:
    return per_row(rows, ctx, _hotpotqa_row)


# --- MIRACL -------------------------------------------------------------------------------------


def _miracl_row(i: int, row: dict, ctx: Context):
    oid = row.get("query_id", i)
    query = text_of(row.get("query"))
    positives = [p for p in records(row.get("positive_passages")) if text_of(p.get("text"))]
    if not query:
        return ctx.reject(oid, "empty_question", row)
    if not positives:
        return ctx.reject(oid, "no_positive_passage", row)
    pos = positives[0]
    negs = [p for p in records(row.get("negative_passages")) if text_of(p.get("text"))]
    negs = sample(ctx.rng(oid), negs, ctx.options["max_negatives"])
    return ctx.unified(orig_id=oid, query=query, positive=text_of(pos["text"]),
                       positive_title=pos.get("title") or None,
                       negatives=[text_of(p["text"]) for p in negs],
                       negative_titles=[p.get("title") or None for p in negs], task_type="qa",
                       symmetric=False, lineage={"positive_docid": pos.get("docid"),
                                                 "negative_docids": [p.get("docid") for p in negs]})


def miracl(rows: Iterable[dict], ctx: Context) -> Iterator:
    return per_row(rows, ctx, _miracl_row)
