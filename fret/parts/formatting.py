"""How texts are formatted for an embedding model: one `Formatting`, shared by `fret train` and `fret eval`.

Three styles:

- `gecko`: Gecko's `task: {task} | query: {query}` for queries (and symmetric targets) and
  `title: {title} | text: {text}` for documents.
- `prompts`: fixed prefixes, e5/bge-style (`query: ` / `passage: `), or the base model's own
  sentence-transformers prompts.
- `plain`: the text as it is.

A trained model records its formatting twice: exactly, in `fret_training.json` (read back by
`from_record`), and as sentence-transformers prompts (`st_prompts`) named `query` and
`document`, so `SentenceTransformer(path).encode_query(...)` / `encode_document(...)` reproduce
training. Prompts are prefixes, so a Gecko document prompt cannot carry each document's title:
it says `title: none`, as training did for documents without one.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

STYLES = ("gecko", "prompts", "plain")
GECKO_QUERY = "task: {task} | query: {query}"
GECKO_DOCUMENT = "title: {title} | text: {text}"
E5_QUERY_PREFIX, E5_DOCUMENT_PREFIX = "query: ", "passage: "


@dataclass(frozen=True)
class Formatting:
    style: str  # gecko | prompts | plain
    query: str = "{query}"  # template; {task} and {query}
    document: str = "{text}"  # template; {title} and {text}
    default_task: Optional[str] = None  # the task used where an input has none (gecko only)
    tasks: dict[str, str] = field(default_factory=dict)  # task type -> its most frequent task (gecko)

    def format_query(self, text: str, task: Optional[str] = None) -> str:
        """Formatting('gecko', GECKO_QUERY, GECKO_DOCUMENT, 'Find it').format_query('who?') -> 'task: Find it | query: who?'"""
        return self.query.format(task=task or self.default_task or "none", query=text)

    def format_document(self, text: str, title: Optional[str] = None, task: Optional[str] = None,
                        symmetric: bool = False) -> str:
        """A target text: formatted as a query where the task is symmetric (STS, bitext), else as a document."""
        if symmetric:
            return self.format_query(text, task)
        return self.document.format(title=title or "none", text=text)

    def st_prompts(self) -> dict[str, str]:
        """sentence-transformers prompts (prefixes): `query`, `document`, and `query_<task type>` per task type.

        gecko with default task 'Find it' -> {'query': 'task: Find it | query: ', 'document': 'title: none | text: '}
        """
        if self.style == "plain":
            return {}
        prompts = {"query": self.format_query(""), "document": self.format_document("")}
        for task_type, task in sorted(self.tasks.items()):
            prompts[f"query_{task_type}"] = self.format_query("", task)
        return prompts

    def describe(self) -> str:
        """One line for logs: which formatting, and with which task."""
        if self.style == "plain":
            return "plain (no formatting)"
        if self.style == "gecko":
            return f"gecko ({self.format_query('QUERY')!r}, {self.format_document('TEXT', 'TITLE')!r})"
        return f"prompts ({self.format_query('QUERY')!r}, {self.format_document('TEXT')!r})"

    def to_dict(self) -> dict:
        return asdict(self)


PLAIN = Formatting("plain")


def gecko(default_task: Optional[str], tasks: Optional[dict[str, str]] = None) -> Formatting:
    return Formatting("gecko", GECKO_QUERY, GECKO_DOCUMENT, default_task, dict(tasks or {}))


def prefixes(query_prefix: str, document_prefix: str) -> Formatting:
    """prefixes('query: ', 'passage: ').format_query('who?') -> 'query: who?'"""
    return Formatting("prompts", _escape(query_prefix) + "{query}", _escape(document_prefix) + "{text}")


def _escape(prefix: str) -> str:
    return prefix.replace("{", "{{").replace("}", "}}")


def st_config_prompts(folder: Path) -> dict[str, str]:
    """The prompts a sentence-transformers folder declares (config_sentence_transformers.json), if any."""
    path = Path(folder) / "config_sentence_transformers.json"
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("prompts") or {})


def model_prompts(folder: Path) -> Optional[Formatting]:
    """A model's own query/document prompts as a Formatting, or None where it declares none.

    Document prompts go by several names across models (`document`, `passage`, `corpus`).
    """
    prompts = st_config_prompts(folder)
    query = prompts.get("query")
    document = next((prompts[k] for k in ("document", "passage", "corpus") if prompts.get(k) is not None), None)
    if not query and not document:
        return None
    return prefixes(query or "", document or "")


def from_record(record: dict) -> Optional[Formatting]:
    """The formatting a fret_training.json records; None for records that hold none."""
    found = record.get("formatting")
    if not found or "style" not in found:
        return None
    return Formatting(**found)


def recorded(folder: Path) -> tuple[Optional[Formatting], str]:
    """(formatting, where it came from) for a model folder: fret's record first, then its prompts."""
    folder = Path(folder)
    record = folder / "fret_training.json"
    if record.is_file():
        found = from_record(json.loads(record.read_text()))
        if found is not None:
            return found, "recorded by fret train"
    found = model_prompts(folder) if folder.is_dir() else None
    if found is not None:
        return found, "the model's sentence-transformers prompts"
    return None, "the model records none"
