"""E5-mistral's task groups, the pydantic model that validates each group's JSON answer, and the
records the `brainstorm` and `examples` stages hand on.

Each group's answer has three texts; `roles` maps them onto (query, positive, negative):
classification puts the input text, its label and the misleading label there; STS and bitext
their S1, S2, S3. `checked` says which language each text must be in (bitext: S1 in the
source language, S2 and S3 in the target language; labels are not checked).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, model_validator

from ...core.records import Record
from ..shared.ask import Invalid  # noqa: F401  (parsers here raise it; importers find it here too)

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def norm_text(text: str) -> str:
    """norm_text('  Retrieve the  Docs!') -> 'retrieve the docs' (for de-duplication)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")  # small models add chatter keys; they are not used

    @model_validator(mode="after")
    def _distinct(self):
        texts = [norm_text(v) for v in self.model_dump().values()]
        if len(set(texts)) < len(texts):
            raise ValueError("identical_texts")
        return self


class ShortLong(_Answer):
    user_query: Text
    positive_document: Text
    hard_negative_document: Text


class LongShort(_Answer):
    input_text: Text
    label: Text
    misleading_label: Text


class ShortShort(ShortLong):
    pass


class LongLong(_Answer):
    input: Text
    positive_document: Text
    hard_negative_document: Text


class STS(_Answer):
    S1: Text
    S2: Text
    S3: Text


class Bitext(STS):
    pass


@dataclass(frozen=True)
class Group:
    model: type[_Answer]
    task_type: str
    symmetric: bool
    roles: tuple[str, str, str]  # answer fields -> (query, positive, negative)
    checked: dict  # answer field -> "language" | "target_language"


_DOCS = {"positive_document": "language", "hard_negative_document": "language"}
GROUPS: dict[str, Group] = {
    "short_long": Group(ShortLong, "retrieval", False,
                        ("user_query", "positive_document", "hard_negative_document"),
                        {"user_query": "language", **_DOCS}),
    "long_short": Group(LongShort, "classification", False,
                        ("input_text", "label", "misleading_label"), {"input_text": "language"}),
    "short_short": Group(ShortShort, "short_short", False,
                         ("user_query", "positive_document", "hard_negative_document"),
                         {"user_query": "language", **_DOCS}),
    "long_long": Group(LongLong, "long_long", False,
                       ("input", "positive_document", "hard_negative_document"),
                       {"input": "language", **_DOCS}),
    "sts": Group(STS, "sts", True, ("S1", "S2", "S3"),
                 {"S1": "language", "S2": "language", "S3": "language"}),
    "bitext": Group(Bitext, "bitext", True, ("S1", "S2", "S3"),
                    {"S1": "language", "S2": "target_language", "S3": "target_language"}),
}


def answer_schema(group: str) -> str:
    """The group's answer as a JSON schema, its properties in the prompt's order (the models'
    field order). Decoders that enforce a schema write the properties in the order given: sorted,
    they had the model write the hard negative first and the query last, after the documents."""
    return json.dumps(GROUPS[group].model.model_json_schema())


def first_json(text: str, opener: str):
    """The first JSON value starting with `opener` in an answer, fences and chatter around it
    ignored. first_json('Sure! ```json\\n["a", "b"]\\n```', '[') -> ['a', 'b']"""
    start = text.find(opener)
    if start < 0:
        raise Invalid("no_json", f"no {opener!r} in the answer")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise Invalid("invalid_json", f"{exc.msg} at char {exc.pos}") from None
    except RecursionError:  # '[[[[...' from a model stuck repeating a token
        raise Invalid("invalid_json", "nested too deeply") from None
    return value


def validate(model: type[BaseModel], value) -> BaseModel:
    """model.model_validate with one countable reason: 'missing_field:label', 'identical_texts'."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing":
            raise Invalid(f"missing_field:{field}", err["msg"]) from None
        if "identical_texts" in err["msg"]:
            raise Invalid("identical_texts") from None
        kind = "not_an_object" if not isinstance(value, dict) else f"invalid_field:{field}"
        raise Invalid(kind, err["msg"]) from None


class Task(Record):
    """One brainstormed task description, kept with its group."""
    id: str
    group: str
    task_type: str
    task: str
    request: int  # which brainstorm request of the group produced it
    position: int  # its place in that request's list
    raw: str  # the LLM's raw answer (the whole list)
    attempts: int


class Example(Record):
    """One generated example of a task, texts mapped onto (query, positive, negative)."""
    id: str
    task_id: str
    group: str
    task_type: str
    task: str
    language: str
    target_language: Optional[str] = None  # bitext only
    query: str
    positive: str
    negative: str
    attributes: str  # JSON: the sampled attributes that went into the prompt
    language_checks: str  # JSON: {field: verdict status (+ detected code)}
    raw: str
    attempts: int
