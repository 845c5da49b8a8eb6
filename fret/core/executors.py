"""Choosing an executor: the local runner (this process) or Ray (fret.core.ray_executor)."""
from __future__ import annotations

from typing import Callable, Optional

from .executor_settings import ExecutorSettings
from .runner import run_stage


def make_executor(settings: ExecutorSettings, kind: Optional[str] = None,
                  address: Optional[str] = None) -> tuple[Callable[..., dict], Callable[[], None]]:
    """(run_one for runner.run_pipeline, close): the local runner, or a connected RayExecutor.
    Ray is imported only here, and a missing Ray is one line saying how to install it."""
    if (kind or settings.kind) == "local":
        return run_stage, lambda: None
    from .ray_executor import RayExecutor
    executor = RayExecutor(settings, address)
    return executor, executor.close
