"""MedMCQA (multiple-choice medical exam questions).

Schema (HF `openlifescienceai/medmcqa`): id, question, opa, opb, opc, opd, cop, choice_type, exp,
subject_name, topic_name. `cop` is 0-3 on the hub (a ClassLabel); the original JSON release numbers
the options 1-4, so pass `cop_base=1` for those files.

Decision: the query is the question alone (a retrieval query does not come with answer options).
With `positive="explanation"` (default) the positive is the expert explanation `exp`, which states
and justifies the answer; rows without one are rejected (`no_explanation`) and there is no
provided negative. With `positive="answer"` the positive is the correct option's text and the
negatives are the wrong options (a short-answer retrieval task).
"""
from __future__ import annotations

from typing import Iterable, Iterator

from fret.parts.convert.base import Context, per_row, text_of

OPTIONS = ("opa", "opb", "opc", "opd")


def _medmcqa_row(i: int, row: dict, ctx: Context):
    mode, base = ctx.options["positive"], ctx.options["cop_base"]
    oid = row.get("id", i)
    question = text_of(row.get("question"))
    options = [text_of(row.get(k)) for k in OPTIONS]
    cop = row.get("cop")
    if not question:
        return ctx.reject(oid, "empty_question", row)
    if not isinstance(cop, int) or not 0 <= cop - base < len(OPTIONS):
        return ctx.reject(oid, "no_correct_option", row, f"cop={cop!r} with cop_base={base}")
    answer = options[cop - base]
    lineage = {"subject": row.get("subject_name"), "topic": row.get("topic_name"),
               "answer": answer, "choice_type": row.get("choice_type")}
    if mode == "explanation":
        exp = text_of(row.get("exp"))
        if not exp:
            return ctx.reject(oid, "no_explanation", row)
        return ctx.unified(orig_id=oid, query=question, positive=exp, task_type="qa",
                           symmetric=False, lineage=lineage)
    if not answer:
        return ctx.reject(oid, "empty_correct_option", row)
    wrong = [o for k, o in enumerate(options) if k != cop - base and o and o != answer]
    return ctx.unified(orig_id=oid, query=question, positive=answer, negatives=wrong,
                       task_type="qa", symmetric=False, lineage=lineage)


def medmcqa(rows: Iterable[dict], ctx: Context) -> Iterator:
    mode = ctx.options["positive"]
    if mode not in ("explanation", "answer"):
        raise ValueError(f"converter 'medmcqa': positive must be 'explanation' or 'answer', not {mode!r}")
    return per_row(rows, ctx, _medmcqa_row)
