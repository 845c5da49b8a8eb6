"""Stage `queries`: the LLM writes a task description and a query for each seed passage.

The task type of each passage is drawn (seeded by passage id) from `task_types`; the few-shot
template asks for `Task: ...` then `Query: ...`, and the request carries that line format as a
regular expression (`regex`; or an EBNF `grammar`) that backends with constrained decoding
enforce. Every answer is parsed and checked all the same. A malformed answer is asked again
(new seed, `retry_temperature`) up to `max_attempts` times, then rejected with the reason of its
last try.
With `from_file`, the stage reads the user's own queries instead and calls no LLM, so that
`mine` + `rerank` relabel an existing data set.
"""
from __future__ import annotations

import functools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Optional

from pydantic import Field

from ...core.config import ExistingPath, Section
from ...core.errors import FretError
from ...core.records import Query, schema_of, stable_id
from ...core.stage import ShardOutput, Stage
from ...parts.decontam import words
from ...parts.jsonl import BadLine, json_lines
from ...parts.langid import check as check_language
from ...parts.llm import GenerateRequest
from ...parts.prompts import load_template
from ...parts.quality import copy_overlap
from ..shared.ask import Ask, Invalid, ask_all, request_seed


class TaskType(Section):
    label: str  # how the prompt names it
    task: str  # the default task description (user queries without one get it)
    weight: float = 1.0
    symmetric: bool = False


DEFAULT_TASK_TYPES = {
    "qa": TaskType(label="question answering",
                   task="Given a question, find a passage that answers the question"),
    "fact_check": TaskType(label="fact checking",
                           task="Given a claim, find a passage that supports or refutes the claim"),
    "web_search": TaskType(label="web search",
                           task="Given a web search query, find a passage that answers it"),
    "similar_sentence": TaskType(label="similar sentence retrieval", symmetric=True,
                                 task="Given a sentence, find a sentence with the same meaning"),
}


# The answer after the template's final "Task:": a task line, then one query line (the space
# is optional for chat mode, where the answer does not continue the prompt's line).
QUERY_REGEX = r" ?Given [^\n]+\nQuery: [^\n]+"


class QueriesSettings(Section):
    template: str = "fret_query.jinja"
    task_types: dict[str, TaskType] = DEFAULT_TASK_TYPES
    chat: bool = False  # send the prompt as one user message instead of a completion
    max_attempts: int = 3
    max_tokens: int = 64
    temperature: float = 0.0
    retry_temperature: float = 0.8
    max_query_words: int = 48
    # A query whose word trigrams are this share or more of its passage's copies it (measured
    # with benchmarks/bench_synthetic.py: small LLMs copy the first sentence; 1.0 = off).
    max_copy_overlap: float = Field(0.5, ge=0, le=1)
    check_language: bool = True  # reject a query that langid judges to be in another language than its passage
    # Few-shot prompts written in a passage's language, by language code; other languages get
    # `template` (SmolLM2 given English examples writes English queries for Spanish passages).
    language_templates: dict[str, str] = {"es": "fret_query_es.jinja"}
    # The values that give the behaviour of runs made before these keys (left out of their hash)
    new_keys = {"max_copy_overlap": 1.0, "check_language": False, "language_templates": {}}
    max_passage_words: int = 200  # the passage is cut to this many words inside the prompt
    regex: Optional[str] = QUERY_REGEX  # the answer's line format, enforced while decoding; null = off
    grammar: Optional[str] = None  # an EBNF grammar (`root ::= ...`); when set, used instead of regex
    from_file: Optional[ExistingPath] = None  # JSONL/Parquet: query, [task], [task_type], [positive_id], [id], [language]
    shard_size: int = 32  # rows per shard when reading from_file


def _norm(text: str) -> str:
    """_norm('The  Cat, sat!') -> 'the cat sat'"""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


QUERY_PREFIXES = ("query:", "question:", "claim:", "sentence:", "search query:")


def _first_block(text: str) -> list[str]:
    """Non-empty lines up to the first blank line after some content. '\nA\nB\n\nC' -> ['A', 'B']"""
    block: list[str] = []
    for line in text.splitlines():
        if line.strip():
            block.append(line.strip())
        elif block:
            break
    return block


def repeats(text: str) -> bool:
    """A word trigram said twice: a greedy small model's loop. repeats('la guerra de la guerra de') -> True"""
    w = words(text)
    grams = [tuple(w[i:i + 3]) for i in range(len(w) - 2)]
    return len(set(grams)) < len(grams)


def parse_answer(text: str, passage: str, max_query_words: int, default_task: str,
                 max_copy_overlap: float = 1.0, language: Optional[str] = None) -> tuple[str, str, bool]:
    """'Given a claim...\nQuery: X' -> ('Given a claim...', 'X', False); Invalid(reason) otherwise.

    Small models often skip the task line and write 'Question: X': the query is kept and the
    task type's default description used, flagged by the third value (counted by the stage).
    """
    lines = _first_block(text)
    if not lines:
        raise Invalid("empty_answer")
    is_query = [ln.lower().startswith(QUERY_PREFIXES) for ln in lines]
    if True not in is_query:
        raise Invalid("no_query_line")
    at = is_query.index(True)
    query = lines[at].split(":", 1)[1].strip().strip('"').strip()
    task = lines[0].removeprefix("Task:").strip() if at > 0 else ""
    defaulted = not task
    task = task or default_task
    if not query:
        raise Invalid("empty_query")
    if len(query.split()) > max_query_words:
        raise Invalid("query_too_long")
    if _norm(query) == _norm(task):
        raise Invalid("query_equals_task")
    if len(query.split()) >= 6 and _norm(query) in _norm(passage):
        raise Invalid("copies_passage")
    if repeats(query):
        raise Invalid("repeats")
    # Queries under 4 words are not judged: a short keyword query shares words with any passage
    if max_copy_overlap < 1 and len(words(query)) >= 4 and copy_overlap(query, passage) >= max_copy_overlap:
        raise Invalid("copies_passage")
    if language and check_language(query, language).rejects:
        raise Invalid("wrong_language")
    return task, query, defaulted


def read_user_queries(path: Path) -> list[dict]:
    if path.suffix == ".parquet" or path.is_dir():
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            return pq.read_table(path).to_pylist()
        except (OSError, pa.ArrowException, UnicodeDecodeError) as e:
            raise FretError(f"queries.from_file: {path}: not a readable Parquet file "
                            f"({' '.join(str(e).split())[:300]})") from None
    rows = []
    for origin, row in json_lines(path, FretError):
        if isinstance(row, BadLine):
            rows.append({"_error": f"{row.message} [{row.reason}]"})
        elif not isinstance(row, dict):
            rows.append({"_error": f"{origin}: not a JSON object"})
        else:
            rows.append({**row, "_line": origin})
    return rows


def user_query(row: dict, task_types: dict[str, TaskType]) -> dict:
    """One row of the user's queries file as a Query row, or Invalid(reason) when it is not one."""
    query = row.get("query")
    query = str(query).strip() if isinstance(query, (str, int, float)) and query is not True else ""
    if not query:
        raise Invalid("missing_query")
    bad = [k for k in ("task", "task_type", "positive_id", "id", "language")
           if row.get(k) is not None and not isinstance(row[k], (str, int))]
    if bad:
        raise Invalid("bad_field", f"{', '.join(bad)}: expected a string")
    default_type = next(iter(task_types))
    tt = str(row.get("task_type") or default_type)
    task = str(row.get("task") or task_types.get(tt, task_types[default_type]).task)
    qid = str(row["id"]) if row.get("id") else stable_id("user", query, task, prefix="q-")
    pid = row.get("positive_id")
    return Query(id=qid, passage_id=None if pid is None else str(pid), task_type=tt, task=task,
                 query=query, language=str(row.get("language") or "en"), raw="", attempts=0,
                 origin="user").model_dump()


class QueriesStage(Stage):
    name = "queries"
    Settings = QueriesSettings
    schema = schema_of(Query)

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.input = None if settings.from_file else "sample"
        self.uses_llm = settings.from_file is None
        self.uses_model = self.uses_llm
        self.template = load_template(settings.template)
        self.by_language = {lang: load_template(name) for lang, name in settings.language_templates.items()}

    def fingerprint(self) -> dict:
        if self.settings.from_file:
            import hashlib
            return {"from_file_sha256": hashlib.sha256(Path(self.settings.from_file).read_bytes()).hexdigest()}
        languages = {lang: t.hash for lang, t in sorted(self.by_language.items())}
        return {"template": self.template.hash, **({"language_templates": languages} if languages else {})}

    def shard_indices(self) -> list[int]:
        if self.settings.from_file:
            self._user_rows = read_user_queries(Path(self.settings.from_file))
            per = self.settings.shard_size
            return list(range(max(1, -(-len(self._user_rows) // per))))
        return super().shard_indices()

    def process(self, index: int) -> ShardOutput:
        if self.settings.from_file:
            return self._user_shard(index)
        passages = self.ctx.read_shard("sample", index)
        s = self.settings
        names = list(s.task_types)
        weights = [s.task_types[n].weight for n in names]
        task_type = {p["id"]: self.ctx.rng("task_type", p["id"]).choices(names, weights)[0]
                     for p in passages}
        asks = [Ask(key=p["id"], request=functools.partial(self._request, p, task_type[p["id"]]),
                    parse=functools.partial(parse_answer, passage=p["text"],
                                            max_query_words=s.max_query_words,
                                            default_task=s.task_types[task_type[p["id"]]].task,
                                            max_copy_overlap=s.max_copy_overlap,
                                            language=p["language"] if s.check_language else None))
                for p in passages]
        counts: Counter = Counter()
        answers, failures = ask_all(self.ctx.llm, asks, s.max_attempts, counts, stage=self.name)
        rows, rejects = [], []
        for p in passages:  # input order
            if p["id"] in failures:
                f = failures[p["id"]]
                rejects.append(self.reject(p["id"], f.reason, detail=f"after {s.max_attempts} attempts",
                                           raw=f.raw))
                continue
            answer = answers[p["id"]]
            task, query, defaulted = answer.value
            counts["task_defaulted"] += defaulted
            tt = task_type[p["id"]]
            rows.append(Query(id=stable_id("query", p["id"], tt, prefix="q-"), passage_id=p["id"],
                              task_type=tt, task=task, query=query, language=p["language"],
                              raw=answer.raw, attempts=answer.attempts).model_dump())
        return ShardOutput(rows=rows, rejects=rejects, rows_in=len(passages), counts=counts)

    def _request(self, passage: dict, task_type: str, attempt: int) -> GenerateRequest:
        s = self.settings
        text = " ".join(passage["text"].split()[:s.max_passage_words])
        template = self.by_language.get(passage.get("language") or "", self.template)
        prompt = template.render(task_type=s.task_types[task_type].label, passage=text,
                                 title=passage.get("title") or "")
        return GenerateRequest(
            prompt=None if s.chat else prompt,
            messages=(("user", prompt),) if s.chat else None,
            max_tokens=s.max_tokens,
            temperature=s.temperature if attempt == 0 else s.retry_temperature,
            stop=("\nTask type:", "\nPassage:"),
            seed=request_seed(self.ctx.seed, passage["id"], attempt),
            regex=None if s.grammar else s.regex, grammar=s.grammar)

    def _user_shard(self, index: int) -> ShardOutput:
        s = self.settings
        chunk = self._user_rows[index * s.shard_size:(index + 1) * s.shard_size]
        rows, rejects = [], []
        for row in chunk:
            where = row.get("_line", str(s.from_file))
            if "_error" in row:
                rejects.append(self.reject(stable_id(row["_error"]), "malformed_row", detail=row["_error"]))
                continue
            try:
                rows.append(user_query(row, s.task_types))
            except Invalid as err:
                raw = json.dumps(row, default=str)
                rejects.append(self.reject(stable_id(where, raw), err.reason,
                                           detail=f"{where}: {err.detail}" if err.detail else where, raw=raw))
        return ShardOutput(rows=rows, rejects=rejects, rows_in=len(chunk))
