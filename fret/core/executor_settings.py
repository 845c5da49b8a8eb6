"""The `executor:` block of a pipeline file: where stages run (this process, or a Ray cluster).

    executor:
      kind: ray              # local (default) | ray; `--executor` on the command line wins
      address: auto          # none: start a local Ray; auto: join this node's cluster; ray://HOST:PORT
      stages:
        rerank: {num_gpus: 1, workers: 8}
        embed: {num_gpus: 0.5, workers: 2}

Per-stage resources are per worker (a Ray actor for stages that hold a model, a Ray task
otherwise); `workers` is the size of a model stage's actor pool, and for a stage without a model
the fewest actors of a held pool it runs on (else tasks, as many as the cluster fits). None of
this changes a stage's output or its settings hash.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .section import Section


class StageResources(Section):
    num_cpus: float = Field(1, gt=0)
    num_gpus: Optional[float] = Field(None, ge=0)  # None: 0, or tensor_parallel_size for vLLM
    workers: int = Field(1, ge=1)
    resources: dict[str, float] = {}  # custom Ray resources, e.g. {accelerator_type:H100: 0.01}


class ExecutorSettings(Section):
    kind: Literal["local", "ray"] = "local"
    address: Optional[str] = None
    max_attempts: int = Field(3, ge=1)  # per shard, on system errors only (worker died, node lost)
    stages: dict[str, StageResources] = {}


def check_stage_names(settings: ExecutorSettings, stage_names, source: str) -> list[str]:
    """One error line per `executor.stages` key that is not a stage of the pipeline."""
    return [f"{source}: executor.stages.{name}: unknown stage; the pipeline's stages: "
            f"{', '.join(stage_names)}" for name in settings.stages if name not in stage_names]
