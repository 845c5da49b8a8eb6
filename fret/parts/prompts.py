"""Jinja2 prompt templates from `prompts/`, versioned by content hash.

A template name is looked up as a path first (absolute, or relative to the working directory),
then in the project's `prompts/` folder. `Template.hash` goes into stage settings hashes and
record lineage, so editing a template makes a stage refuse to mix old and new output.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from ..core.errors import FretError

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"


class PromptError(FretError, ValueError):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    source: str
    hash: str

    def render(self, **values) -> str:
        return _compile(self.source).render(**values)


@lru_cache(maxsize=None)
def _compile(source: str) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    return env.from_string(source)


def find_template(name: str) -> Path:
    candidates = [Path(name), PROMPTS_DIR / name, PROMPTS_DIR / f"{name}.jinja"]
    for path in candidates:
        if path.is_file():
            return path
    raise PromptError(f"prompt template {name!r} not found (looked in the working directory "
                      f"and {PROMPTS_DIR})")


def load_template(name: str) -> Template:
    path = find_template(name)
    source = path.read_text(encoding="utf-8")
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
    return Template(name=name, path=path, source=source, hash=digest)


def render(name: str, **values) -> str:
    return load_template(name).render(**values)
