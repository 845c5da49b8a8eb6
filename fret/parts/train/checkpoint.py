"""Checkpoints: OUTPUT/checkpoints/step-00000500/ with the weights, optimizer, scheduler, the
random state of every rank and the run's fingerprint. A checkpoint folder is written under a
temporary name and renamed into place, so a kill leaves either the old set or the new one.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from fret.parts.train import dist

PREFIX = "step-"


def step_dir(root: Path, step: int) -> Path:
    """step_dir(Path('out/checkpoints'), 500) -> Path('out/checkpoints/step-00000500')"""
    return root / f"{PREFIX}{step:08d}"


def latest(root: Path) -> Optional[Path]:
    done = sorted(p for p in root.glob(f"{PREFIX}*") if p.is_dir() and (p / "meta.json").exists())
    return done[-1] if done else None


def save(root: Path, step: int, fingerprint: str, settings: dict, model, optimizer, scheduler,
         keep: int) -> Path:
    """Collective: every rank calls it; rank 0 writes the shared state, each rank its RNG."""
    rank, _ = dist.world()
    final = step_dir(root, step)
    staging = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    dist.barrier()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, staging / f"rng-{rank}.pt")
    dist.barrier()
    if rank == 0:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, staging / "state.pt")
        (staging / "meta.json").write_text(json.dumps(
            {"step": step, "fingerprint": fingerprint, "settings": settings}, indent=2) + "\n")
        staging.rename(final)
        for old in sorted(p for p in root.glob(f"{PREFIX}*") if p.is_dir() and p.suffix != ".tmp")[:-keep]:
            shutil.rmtree(old)
    dist.barrier()
    return final


def load(folder: Path, fingerprint: str, model, optimizer, scheduler) -> int:
    """Restore a checkpoint into the live objects; returns its step. Refuses another run's checkpoint."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta["fingerprint"] != fingerprint:
        from fret.core.errors import ConfigError
        raise ConfigError(
            f"{folder}: checkpoint was made with other settings or data (fingerprint "
            f"{meta['fingerprint']} != {fingerprint}); run the same command with --restart to "
            f"train from scratch")
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rank, _ = dist.world()
    rng = torch.load(folder / f"rng-{rank}.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return int(meta["step"])
