"""Stage `brainstorm` (E5-mistral): per task group, the LLM lists task descriptions as JSON.

Shard k holds the tasks of the k-th group of `groups`. Each group gets `requests_per_group`
requests (different seeds) asking for about `tasks_per_request` tasks; with `json_schema`, each
request carries the schema of a JSON list of strings, enforced while decoding where the backend
can. An answer that is not a JSON list of strings is asked again (bounded), then rejected with
its reason. Task texts are
de-duplicated within their group on normalized text; duplicates go to the rejects file as
`duplicate_task`, items that are not a usable sentence as `bad_task`.
"""
from __future__ import annotations

import functools
import json
import re
from collections import Counter

from pydantic import Field, field_validator

from ...core.config import Section
from ...core.records import schema_of, stable_id
from ...core.stage import ShardOutput, Stage
from ...parts.llm import GenerateRequest
from ...parts.prompts import load_template
from ..shared.ask import Ask, ask_all, request_seed
from .records import GROUPS, Invalid, Task, first_json, norm_text


class BrainstormSettings(Section):
    template: str = "e5_brainstorm.jinja"
    groups: list[str] = list(GROUPS)
    requests_per_group: int = Field(1, ge=1)
    tasks_per_request: int = Field(20, ge=1)
    chat: bool = True  # send the prompt as a user message (chat template) or as plain text
    max_attempts: int = Field(3, ge=1)
    max_tokens: int = 1024
    temperature: float = 1.0  # the paper samples; requests differ by seed
    top_p: float = 1.0
    retry_temperature: float = 1.0
    min_task_words: int = 4
    plain_lists: bool = True  # no JSON list in the answer: read a numbered/bulleted list (counted)
    max_task_words: int = 60
    json_schema: bool = True  # send task_list_schema (enforced while decoding where the backend can)

    @field_validator("groups")
    @classmethod
    def _known(cls, groups):
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            raise ValueError(f"unknown task groups {unknown}; known: {', '.join(GROUPS)}")
        return groups


def task_list_schema(tasks: int, min_words: int) -> str:
    """The JSON schema of an answer: a list of task sentences.

    A bare list of strings let SmolLM2 close the list after one junk item ('", "', a preamble
    inside the brackets); the items' pattern asks for a capitalised sentence of at least
    `min_words` words with no quotes inside, and the list for at least a quarter of the tasks
    asked for, so the grammar steers a small model towards what `task_problem` accepts. The upper
    word bound and distinct items are checked after the fact: a bounded repeat made the grammar
    compile ten times slower, and distinctness cannot be said in a grammar.
    """
    word = r"[A-Za-z0-9,;:'()/.?&%+-]+"
    sentence = rf"[A-Z][A-Za-z]*( {word}){{{max(min_words - 1, 0)},}}"
    return json.dumps({"type": "array", "minItems": max(1, tasks // 4), "maxItems": tasks,
                       "items": {"type": "string", "pattern": sentence}})


class PlainList(list):
    """Tasks read from a numbered or bulleted list because the answer had no JSON list."""


_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+(.+?)\s*$")


def parse_task_list(text: str, plain_lists: bool = False) -> list:
    """'["Find a, b", "Given x"]' -> ['Find a, b', 'Given x']; Invalid otherwise.

    With plain_lists, an answer without JSON whose lines are list items ('1. Retrieve ...',
    '- Find ...') gives those items as a PlainList (small models rarely write JSON).
    """
    try:
        value = first_json(text, "[")
    except Invalid:
        items = [m.group(1).strip('"') for m in map(_ITEM.match, text.splitlines()) if m]
        if plain_lists and items:
            return PlainList(items)
        raise
    if not isinstance(value, list) or not value:
        raise Invalid("empty_list")
    return value


def task_problem(item, min_words: int, max_words: int) -> str:
    """Why a list item is not a task description ('' when it is one)."""
    if not isinstance(item, str):
        return f"not a string: {type(item).__name__}"
    n = len(item.split())
    if n < min_words:
        return f"{n} words < {min_words}"
    if n > max_words:
        return f"{n} words > {max_words}"
    return ""


class BrainstormStage(Stage):
    name = "brainstorm"
    Settings = BrainstormSettings
    schema = schema_of(Task)
    uses_llm = True
    uses_model = True

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.template = load_template(settings.template)
        self.list_schema = task_list_schema(settings.tasks_per_request, settings.min_task_words)

    def fingerprint(self) -> dict:
        # the schema is code, not a setting: a change of it must still restart the stage
        schema = self.list_schema if self.settings.json_schema else None
        return {"template": self.template.hash, "schema": schema}

    def shard_indices(self) -> list[int]:
        return list(range(len(self.settings.groups)))

    def _request(self, group: str, k: int, attempt: int) -> GenerateRequest:
        s = self.settings
        prompt = self.template.render(group=group, n=s.tasks_per_request).strip()
        return GenerateRequest(
            prompt=None if s.chat else prompt, messages=(("user", prompt),) if s.chat else None,
            max_tokens=s.max_tokens, top_p=s.top_p,
            temperature=s.temperature if attempt == 0 else s.retry_temperature,
            seed=request_seed(self.ctx.seed, f"brainstorm/{group}/{k}", attempt),
            json_schema=self.list_schema if s.json_schema else None)

    def process(self, index: int) -> ShardOutput:
        s = self.settings
        group = s.groups[index]
        counts: Counter = Counter()
        parse = functools.partial(parse_task_list, plain_lists=s.plain_lists)
        asks = [Ask(key=str(k), request=lambda a, k=k: self._request(group, k, a), parse=parse)
                for k in range(s.requests_per_group)]
        answers, failures = ask_all(self.ctx.llm, asks, s.max_attempts, counts, stage=self.name)
        rows, rejects, seen = [], [], set()
        for k in range(s.requests_per_group):
            key = str(k)
            if key in failures:
                f = failures[key]
                rejects.append(self.reject(stable_id("brainstorm", group, k), f.reason,
                                           detail=f"{group} request {k}, after {s.max_attempts} "
                                                  f"attempts: {f.detail}", raw=f.raw))
                continue
            ans = answers[key]
            counts["read_as_plain_list"] += isinstance(ans.value, PlainList)
            for pos, item in enumerate(ans.value):
                rid = stable_id("task", group, item, prefix="t-")
                problem = task_problem(item, s.min_task_words, s.max_task_words)
                if problem:
                    rejects.append(self.reject(stable_id(rid, k, pos), "bad_task",
                                               detail=f"{group}: {problem}", raw=str(item)))
                    continue
                text = " ".join(item.split())
                if norm_text(text) in seen:
                    rejects.append(self.reject(stable_id(rid, k, pos), "duplicate_task",
                                               detail=group, raw=text))
                    continue
                seen.add(norm_text(text))
                rows.append(Task(id=stable_id("task", group, norm_text(text), prefix="t-"),
                                 group=group, task_type=GROUPS[group].task_type, task=text,
                                 request=k, position=pos, raw=ans.raw,
                                 attempts=ans.attempts).model_dump())
        counts["tasks"] = len(rows)
        return ShardOutput(rows=rows, rejects=rejects, rows_in=s.requests_per_group, counts=counts)
