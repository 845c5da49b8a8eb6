"""Ask the LLM for many answers at once, parse each, ask again for the malformed ones.

Used by FRet `queries`, the E5 stages and MultiLongDoc `questions`. Each attempt is one batched `generate`
call over every request still pending; a request's seed depends on its key and the attempt,
so a retry is a fresh draw and a rerun is the same draw (answers also come from the request
cache). After `max_attempts`, the last failure's reason and raw answer are returned for the
reject file. Requests carry the stage's constraint (JSON schema, regex or EBNF grammar) so that
backends that can enforce it do; every answer is parsed and validated here all the same. A
constraint the backend cannot compile stops the stage with an error naming it.

Counts: `attempts` (requests sent), `retry_<reason>` (every invalid answer, by reason),
`first_valid` and `first_invalid_<reason>` (how the first attempts fared: how good the LLM is at
the stage's form, before retries hide it).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from ...core.records import stable_id
from ...parts.llm import GenerateRequest, LLMError
from ...parts.llm.grammar import GrammarError


class Invalid(ValueError):
    """An LLM answer that cannot be used; `reason` is short and countable."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class Ask:
    key: str
    request: Callable[[int], GenerateRequest]  # attempt -> request
    parse: Callable[[str], Any]  # answer text -> value, or raise Invalid


@dataclass
class Answer:
    value: Any
    raw: str
    attempts: int


@dataclass
class Failure:
    reason: str
    detail: str
    raw: str


def request_seed(run_seed: int, key: str, attempt: int) -> int:
    """A 32-bit seed per (run seed, request key, attempt)."""
    return int(stable_id(run_seed, key, attempt)[:8], 16)


def ask_all(llm, asks: list[Ask], max_attempts: int, counts: Counter,
            stage: str = "") -> tuple[dict[str, Answer], dict[str, Failure]]:
    pending = {a.key: a for a in asks}
    answers: dict[str, Answer] = {}
    failures: dict[str, Failure] = {}
    for attempt in range(max_attempts):
        if not pending:
            break
        batch = list(pending.values())
        try:
            generations = llm.generate([a.request(attempt) for a in batch])
        except GrammarError as err:
            raise LLMError(f"stage {stage or '?'}: {err}") from err
        counts["attempts"] += len(batch)
        for ask, gen in zip(batch, generations):
            if gen.finish_reason == "prompt_too_long":  # the backend sent nothing; a retry cannot fit either
                failures[ask.key] = Failure("prompt_too_long", "the prompt does not fit llm.max_length", "")
                counts["prompt_too_long"] += 1
                del pending[ask.key]
                continue
            try:
                value = ask.parse(gen.text)
            except Invalid as err:
                failures[ask.key] = Failure(err.reason, err.detail, gen.text)
                reason = err.reason.split(":")[0]
                counts[f"retry_{reason}"] += 1
                if attempt == 0:
                    counts[f"first_invalid_{reason}"] += 1
                continue
            if attempt == 0:
                counts["first_valid"] += 1
            answers[ask.key] = Answer(value, gen.text, attempt + 1)
            failures.pop(ask.key, None)
            del pending[ask.key]
    return answers, failures  # answered keys were popped: what is left failed
