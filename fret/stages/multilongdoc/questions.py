"""Stage `questions` of MultiLongDoc: one question per long document.

A paragraph of each document is drawn (seeded by the document id) among its paragraphs
(blocks between blank lines) of at least `min_paragraph_words` words that are prose: blocks
whose lines are mostly indented (code, grammar rules in the Python docs) are skipped. The
paragraph, cut to `max_paragraph_words`, goes after BGE-M3's prompt, quoted as given
(BGE-M3, arXiv 2402.03216): the English one, or the Chinese one for documents whose language is `zh`.
The request carries `regex` (default: one line ending at its only question mark, per language), which
backends with constrained decoding enforce; `grammar` (EBNF) replaces it where set. Every answer
is checked all the same: one that is not one question is asked again (bounded), then rejected
with its reason:
`empty_answer`, `extra_content` (more than the question), `not_a_question` (no question
mark), `multiple_questions`, `too_long`. Rows are Query records (passage_id = the document
id, task_type `long_doc`) plus the paragraph, so the shared `mine` stage reads them as is.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Optional

from pydantic import Field, field_validator

from ...core.config import Section
from ...core.records import Query, schema_of, stable_id
from ...core.stage import ShardOutput, Stage
from ...parts.corpus import word_spans
from ...parts.llm import GenerateRequest
from ...parts.prompts import load_template
from ..e5.records import Invalid
from ..shared.ask import Ask, ask_all, request_seed

DEFAULT_TASK = "Given a question, retrieve the long document that answers it"
_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:question|q|问题)\s*[:：]\s*(?:\*\*)?\s*", re.I)
_QUOTES = "\"'“”‘’「」`"
# One line of at most 24 words of at most 24 characters, one question mark, at its end. The
# bounds matter: with an unbounded line SmolLM2 ran past `max_tokens` (96) before it asked
# anything, and a cut answer has no question mark; with words bounded in number only, it wrote
# one endless "word" without spaces instead. The mark is the ASCII one: allowed a full-width
# "？" as well, SmolLM2 ended English questions with it. Chinese is written without spaces, so
# its question is bounded in characters instead, and may end with either mark.
QUESTION_REGEX = r"([^\n? ]{1,24} ){0,23}[^\n? ]{1,24}\?"
QUESTION_REGEX_ZH = r"[^\n?？]{1,64}[?？]"


class QuestionsSettings(Section):
    templates: dict[str, str] = {"en": "mld_question_en.jinja", "zh": "mld_question_zh.jinja"}
    task: str = DEFAULT_TASK  # the task description of every exported example
    min_paragraph_words: int = Field(40, ge=1)
    max_paragraph_words: int = Field(300, ge=1)
    max_question_words: int = Field(64, ge=1)
    chat: bool = True
    max_attempts: int = Field(3, ge=1)
    max_tokens: int = 96
    temperature: float = 0.0
    retry_temperature: float = 0.8
    limit: Optional[int] = Field(None, ge=1)  # documents per shard, for small demos
    # The answer's form per language (as `templates`: "en" serves every language without its
    # own), enforced while decoding; one string = the same for all; null = off.
    regex: Optional[dict[str, str]] = {"en": QUESTION_REGEX, "zh": QUESTION_REGEX_ZH}
    grammar: Optional[str] = None  # an EBNF grammar (`root ::= ...`); when set, used instead of regex

    @field_validator("regex", mode="before")
    @classmethod
    def _one_for_all(cls, v):
        return {"en": v} if isinstance(v, str) else v

    @field_validator("regex")
    @classmethod
    def _has_en(cls, v):
        if v is not None and "en" not in v:
            raise ValueError("questions.regex needs an 'en' entry (used for every language "
                             "without its own)")
        return v


class MLDQuestion(Query):
    paragraph: int  # index of the paragraph among the document's blocks
    paragraph_text: str


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of blocks between blank lines.
    paragraphs('A b.\\n\\nC d.') -> [(0, 4), (6, 10)]"""
    spans, pos = [], 0
    for m in re.finditer(r"\n[ \t]*\n", text + "\n\n"):
        if text[pos:m.start()].strip():
            spans.append((pos, m.start()))
        pos = m.end()
    return spans


def is_prose(block: str) -> bool:
    """Mostly unindented lines: is_prose('Text\\n   code') -> False (half indented is not prose)."""
    lines = [ln for ln in block.splitlines() if ln.strip()]
    indented = sum(1 for ln in lines if ln.startswith(("   ", "\t")))
    return indented * 2 < len(lines)


def cut_words(text: str, n: int) -> str:
    """The first n words of text, verbatim: cut_words('a  b c', 2) -> 'a  b'."""
    spans = word_spans(text)
    return text if len(spans) <= n else text[:spans[n - 1][1]]


def parse_question(text: str, max_words: int) -> str:
    """'Question: "What is X?"' -> 'What is X?'; Invalid(reason) unless it is one question."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        raise Invalid("empty_answer")
    if len(lines) > 1:
        raise Invalid("extra_content", f"{len(lines)} lines")
    q = _PREFIX.sub("", lines[0]).strip().strip(_QUOTES).strip()
    marks = q.count("?") + q.count("？")
    if marks == 0:
        raise Invalid("not_a_question", "no question mark")
    if marks > 1:
        raise Invalid("multiple_questions", f"{marks} question marks")
    if not q.endswith(("?", "？")):
        raise Invalid("extra_content", "text after the question mark")
    if len(word_spans(q)) > max_words:
        raise Invalid("too_long", f"{len(word_spans(q))} words > {max_words}")
    return q


class QuestionsStage(Stage):
    name = "questions"
    Settings = QuestionsSettings
    schema = schema_of(MLDQuestion)
    input = "longdocs"
    uses_llm = True
    uses_model = True

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.templates = {lang: load_template(name) for lang, name in settings.templates.items()}
        if "en" not in self.templates:
            raise ValueError("questions.templates needs an 'en' template (used for every language "
                             "without its own)")

    def fingerprint(self) -> dict:
        return {"templates": {k: t.hash for k, t in self.templates.items()}}

    def pick_paragraph(self, doc: dict) -> Optional[tuple[int, str]]:
        s = self.settings
        blocks = [doc["text"][a:b].strip() for a, b in paragraphs(doc["text"])]
        usable = [i for i, b in enumerate(blocks)
                  if len(word_spans(b)) >= s.min_paragraph_words and is_prose(b)]
        if not usable:
            return None
        i = self.ctx.rng("paragraph", doc["id"]).choice(usable)
        return i, cut_words(blocks[i], s.max_paragraph_words)

    def _request(self, doc: dict, paragraph: str, attempt: int) -> GenerateRequest:
        s = self.settings
        lang = doc["language"].split("-")[0].lower()
        prompt = self.templates.get(lang, self.templates["en"]).render(paragraph=paragraph).strip()
        return GenerateRequest(
            prompt=None if s.chat else prompt, messages=(("user", prompt),) if s.chat else None,
            max_tokens=s.max_tokens,
            temperature=s.temperature if attempt == 0 else s.retry_temperature,
            seed=request_seed(self.ctx.seed, doc["id"], attempt),
            regex=None if s.grammar or s.regex is None else s.regex.get(lang, s.regex["en"]),
            grammar=s.grammar)

    def process(self, index: int) -> ShardOutput:
        s = self.settings
        docs = self.ctx.read_shard("longdocs", index)[:s.limit]
        counts: Counter = Counter()
        rejects, picked = [], {}
        for doc in docs:
            choice = self.pick_paragraph(doc)
            if choice is None:
                rejects.append(self.reject(doc["id"], "no_paragraph",
                                           detail=f"no prose block of {s.min_paragraph_words}+ words"))
            else:
                picked[doc["id"]] = choice
        asks = [Ask(key=d["id"], request=lambda a, d=d: self._request(d, picked[d["id"]][1], a),
                    parse=lambda text: parse_question(text, s.max_question_words))
                for d in docs if d["id"] in picked]
        answers, failures = ask_all(self.ctx.llm, asks, s.max_attempts, counts, stage=self.name)
        rows = []
        for doc in docs:
            if doc["id"] in failures:
                f = failures[doc["id"]]
                rejects.append(self.reject(doc["id"], f.reason, raw=f.raw,
                                           detail=f"after {s.max_attempts} attempts: {f.detail}"))
            elif doc["id"] in answers:
                ans, (para, text) = answers[doc["id"]], picked[doc["id"]]
                rows.append(MLDQuestion(
                    id=stable_id("mld", doc["id"], para, prefix="q-"), passage_id=doc["id"],
                    task_type="long_doc", task=s.task, query=ans.value, language=doc["language"],
                    raw=ans.raw, attempts=ans.attempts, paragraph=para,
                    paragraph_text=text).model_dump())
        return ShardOutput(rows=rows, rejects=rejects, rows_in=len(docs), counts=counts)
