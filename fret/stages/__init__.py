"""The stage registry: pipeline kind -> its stages in order, each `module:Class` (imported lazily).

Each pipeline package (fret, e5, multilongdoc, mixture, recipe) declares its `STAGES`; the stages
several pipelines run live in `shared`. A pipeline's settings model is the `Settings` of its
stages, one section each, in this order (fret.core.config.pipeline_model). This module imports
nothing but those lists and the errors, so the config loader looks stages up here without a circle.
"""
from __future__ import annotations

import importlib

from ..core.errors import ConfigError
from . import e5, fret, mixture, multilongdoc, recipe

PIPELINES: dict[str, dict[str, str]] = {
    "fret": fret.STAGES,
    "mixture": mixture.STAGES,
    "e5": e5.STAGES,
    "multilongdoc": multilongdoc.STAGES,
    "recipe": recipe.STAGES,
}


def stage_class(kind: str, name: str):
    stages = PIPELINES.get(kind)
    if stages is None:
        raise ConfigError(f"unknown pipeline {kind!r}; known: {', '.join(sorted(PIPELINES))}")
    target = stages.get(name)
    if target is None:
        raise ConfigError(f"pipeline {kind!r} has no stage {name!r}; its stages: {', '.join(stages)}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
