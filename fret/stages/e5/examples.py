"""Stage `examples` (E5-mistral): one JSON example per brainstormed task, in a sampled language.

Shard k maps onto brainstorm shard k (one task group). For each task, `examples_per_task`
examples each draw their attributes (query type, length, clarity, number of words,
difficulty, language; a target language for bitext) from a generator seeded by the task id and
example number. The group's template asks for one JSON object, validated by the group's
pydantic model (records.GROUPS); then every text is checked to be in its language
(fret.parts.langid). A malformed or wrong-language answer is asked again (bounded), then rejected
with the reason of its last try (`invalid_json`, `missing_field:label`,
`wrong_language:en!=de`, ...). Texts langid cannot judge (too short, unknown language, unsure)
are kept and counted (`langid_short`, `langid_unknown`, `langid_unsure`).
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Optional

from pydantic import Field, field_validator

from ...core.config import Section
from ...core.records import schema_of, stable_id
from ...core.stage import ShardOutput, Stage
from ...parts import langid
from ...parts.llm import GenerateRequest
from ...parts.prompts import load_template
from ..shared.ask import Ask, ask_all, request_seed
from .attributes import NUM_WORDS, default_language_weights, language_name, sample_attributes
from .records import GROUPS, Example, Invalid, answer_schema, first_json, validate


class LanguageCheck(Section):
    enabled: bool = True
    min_words: int = 4  # shorter texts are not judged (kept, counted as langid_short)
    min_confidence: float = 0.8  # a wrong guess under this is not trusted (langid_unsure)


class ExamplesSettings(Section):
    templates: dict[str, str] = {g: f"e5_example_{g}.jinja" for g in GROUPS}
    examples_per_task: int = Field(1, ge=1)
    max_tasks_per_group: Optional[int] = Field(None, ge=1)  # None = every brainstormed task
    languages: Optional[dict[str, float]] = None  # code -> weight; None = the 93, English dominant
    num_words: list[int] = NUM_WORDS
    chat: bool = True
    json_schema: bool = True  # send the group's JSON schema (enforced while decoding where the backend can)
    max_attempts: int = Field(3, ge=1)
    max_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    retry_temperature: float = 1.0
    language_check: LanguageCheck = LanguageCheck()

    @field_validator("languages")
    @classmethod
    def _weights(cls, weights):
        if weights is not None and (not weights or min(weights.values()) < 0
                                    or sum(weights.values()) <= 0):
            raise ValueError("languages needs at least one positive weight and none negative")
        return weights


def check_languages(answer: dict, group: str, attrs: dict, settings: LanguageCheck) -> dict:
    """Verdict per checked field; raises Invalid('wrong_language:en!=de') on the first wrong one."""
    verdicts = {}
    for field, which in GROUPS[group].checked.items():
        v = langid.check(answer[field], attrs[which], settings.min_words, settings.min_confidence)
        if v.rejects:
            raise Invalid(v.reason, f"{field}: detected {v.detected} (p={v.confidence:.2f})")
        verdicts[field] = v.status if v.status != "ok" else f"ok:{v.detected}"
    return verdicts


class ExamplesStage(Stage):
    name = "examples"
    Settings = ExamplesSettings
    schema = schema_of(Example)
    input = "brainstorm"
    uses_llm = True
    uses_model = True

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        missing = [g for g in GROUPS if g not in settings.templates]
        if missing:
            raise ValueError(f"examples.templates: no template for groups {missing}")
        self.templates = {g: load_template(settings.templates[g]) for g in GROUPS}
        self.weights = settings.languages or default_language_weights()

    def fingerprint(self) -> dict:
        from importlib.metadata import version
        return {"templates": {g: t.hash for g, t in self.templates.items()},
                "schemas": {g: answer_schema(g) for g in GROUPS}, "langid": version("langid")}

    def _request(self, task: dict, attrs: dict, key: str, attempt: int) -> GenerateRequest:
        s = self.settings
        group = task["group"]
        prompt = self.templates[group].render(
            task=task["task"], **attrs, language_name=language_name(attrs["language"]),
            target_language_name=language_name(attrs.get("target_language") or "")).strip()
        schema = answer_schema(group)
        return GenerateRequest(
            prompt=None if s.chat else prompt, messages=(("user", prompt),) if s.chat else None,
            max_tokens=s.max_tokens, top_p=s.top_p,
            temperature=s.temperature if attempt == 0 else s.retry_temperature,
            seed=request_seed(self.ctx.seed, key, attempt),
            json_schema=schema if s.json_schema else None)

    def _parse(self, text: str, group: str, attrs: dict):
        answer = validate(GROUPS[group].model, first_json(text, "{")).model_dump()
        checks = (check_languages(answer, group, attrs, self.settings.language_check)
                  if self.settings.language_check.enabled else {})
        return answer, checks

    def process(self, index: int) -> ShardOutput:
        s = self.settings
        tasks = self.ctx.read_shard("brainstorm", index)[:s.max_tasks_per_group]
        counts: Counter = Counter()
        plan = []  # (example id, task, attributes) in a fixed order
        for task in tasks:
            for k in range(s.examples_per_task):
                attrs = sample_attributes(self.ctx.rng("attributes", task["id"], k), task["group"],
                                          self.weights, s.num_words)
                plan.append((stable_id("example", task["id"], k, prefix="e-"), task, attrs))
        asks = [Ask(key=eid, request=lambda a, t=t, at=at, e=eid: self._request(t, at, e, a),
                    parse=lambda text, t=t, at=at: self._parse(text, t["group"], at))
                for eid, t, at in plan]
        answers, failures = ask_all(self.ctx.llm, asks, s.max_attempts, counts, stage=self.name)
        rows, rejects = [], []
        for eid, task, attrs in plan:
            if eid in failures:
                f = failures[eid]
                rejects.append(self.reject(eid, f.reason, raw=f.raw,
                                           detail=f"{task['group']} task {task['id']} "
                                                  f"({attrs['language']}), after {s.max_attempts} "
                                                  f"attempts: {f.detail}"))
                continue
            ans = answers[eid]
            answer, checks = ans.value
            counts.update(f"langid_{v}" for v in checks.values() if not v.startswith("ok"))
            q, p, n = (answer[f] for f in GROUPS[task["group"]].roles)
            rows.append(Example(
                id=eid, task_id=task["id"], group=task["group"], task_type=task["task_type"],
                task=task["task"], language=attrs["language"],
                target_language=attrs.get("target_language"), query=q, positive=p, negative=n,
                attributes=json.dumps(attrs, sort_keys=True),
                language_checks=json.dumps(checks, sort_keys=True), raw=ans.raw,
                attempts=ans.attempts).model_dump())
        return ShardOutput(rows=rows, rejects=rejects, rows_in=len(plan), counts=counts)
