"""Runs stages over shards with resume: the one local executor every pipeline shares.

For each output shard not yet listed in RUN/STAGE/_manifest.json under the same settings hash:
process it, write rejects and rows under temporary names, rename, then record the shard in the
manifest (the "done" marker, written last). A kill loses at most the shard in flight; LLM
answers already received are in the request cache.

Before a stage deletes (--restart) or writes anything, its upstream stages must have finished with
sound shards and its settings must match its shards; a damaged shard of the stage itself is redone.
The settings files are written when the command first writes data (or finishes), so a refused
command leaves those of the data on disk.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml

from ..parts.llm.base import Usage
from ..stages import PIPELINES, stage_class
from . import shards
from .config import load_pipeline
from .errors import RunError, warn
from .progress import Progress
from .executor_settings import check_threads, resolve_threads
from .records import REJECT_SCHEMA
from .stage import RunContext, Stage, StageError


def settings_hash(stage: Stage, upstream: dict[str, str]) -> str:
    blob = json.dumps({
        "stage": stage.name,
        "settings": stage.settings.model_dump(mode="json"),
        "fingerprint": stage.fingerprint(),
        "llm": stage.ctx.llm_identity() if stage.uses_llm else None,
        "seed": stage.ctx.seed,
        "upstream": upstream,
    }, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fix(ctx: RunContext, name: str, restart: bool = False) -> str:
    """The command that (re)makes one stage, with the user's own pipeline file, run folder and
    --set items: 'fret generate corpus pipelines/fret.yaml --run-dir runs/demo --set sample.size=8'.
    Under `fret run`, a restart is `fret run ... --restart-from STAGE` (that stage and every later
    one, so the run goes on in one command)."""
    verb = "run" if restart and ctx.command == "run" else "generate"
    return shards.stage_command(name, ctx.pipeline_path, ctx.run_dir, ctx.overrides, restart, verb)


def _inputs(stage: Stage) -> list[str]:
    return ([stage.input] if stage.input else []) + list(stage.depends)


def _finished_upstream(ctx: RunContext, stage: Stage, name: str) -> str:
    """The settings hash of a finished upstream stage whose shards are all sound, or a clear error."""
    stage_dir = ctx.stage_dir(name)
    manifest = shards.load_manifest(stage_dir)
    if not manifest.get("complete"):
        raise StageError(f"stage {stage.name!r} needs stage {name!r}, which has not finished in "
                         f"{ctx.run_dir}: run `{_fix(ctx, name)}` first (or `fret run`)")
    # checksums once per command: `fret run` verified this stage when it planned it
    bad = shards.damaged_shards(stage_dir, manifest, verify=name not in ctx.verified)
    ctx.verified.add(name)
    if bad:
        shard, problem = next(iter(sorted(bad.items())))
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise shards.ShardError(
            f"{stage_dir / shard}{more} is damaged ({problem}); stage {stage.name!r} reads it. "
            f"Redo the damaged shards with `{_fix(ctx, name)}` (or start {name!r} over with --restart)")
    return manifest["settings_hash"]


def _upstream_hashes(ctx: RunContext, stage: Stage) -> dict[str, str]:
    return {name: _finished_upstream(ctx, stage, name) for name in _inputs(stage)}


def _refuse_mixing(ctx: RunContext, name: str, digest: str) -> None:
    manifest = shards.load_manifest(ctx.stage_dir(name))
    if manifest.get("shards") and manifest.get("settings_hash") != digest:
        later = "" if ctx.command == "run" else " (later stages will then ask to be restarted too)"
        raise StageError(
            f"stage {name!r} in {ctx.run_dir} was made with other settings or inputs "
            f"(hash {manifest.get('settings_hash')} there, {digest} now); refusing to mix old and "
            f"new shards. Start it over with: {_fix(ctx, name, restart=True)}{later}")


def refuse_mixing_first(ctx: RunContext, names: list[str], restart: bool = False,
                        restart_from: Optional[str] = None) -> None:
    """Before any stage runs: the refusal a stage of `names` would give for settings that do not
    match its shards. A stage's hash follows from its settings and its inputs' hashes (those this
    command makes first, else those on disk), so a changed setting of a late stage stops the
    command before the early stages work."""
    if restart:
        return
    first = names.index(restart_from) if restart_from in names else len(names)
    digests: dict[str, str] = {}
    for name in names[:first]:
        stage = make_stage(ctx, name)
        upstream = {u: digests[u] if u in digests else shards.load_manifest(ctx.stage_dir(u)).get("settings_hash")
                    for u in _inputs(stage)}
        digests[name] = settings_hash(stage, upstream)
        _refuse_mixing(ctx, name, digests[name])


def make_stage(ctx: RunContext, name: str) -> Stage:
    return stage_class(ctx.config.pipeline, name)(ctx, getattr(ctx.config, name))


def _usage(ctx: RunContext) -> Usage:
    llm = ctx._llm
    return Usage(**asdict(llm.usage)) if llm is not None else Usage()


def _sum_into(total: dict, part: dict) -> None:
    for k, v in part.items():
        if isinstance(v, dict):
            _sum_into(total.setdefault(k, {}), v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            total[k] = total.get(k, 0) + v


def _drop_damaged(ctx: RunContext, stage_dir: Path, manifest: dict) -> None:
    """Forget (and delete) damaged shards of the stage being resumed, so they are redone; their
    checksums are verified, as the next stage (or the user) reads them next."""
    ctx.verified.add(stage_dir.name)
    # Temporary files left by a killed attempt: this command holds the run lock and has not
    # started a worker yet, so no live writer owns them.
    for tmp in [*stage_dir.glob("*.tmp"), *(stage_dir / shards.REJECTS).glob("*.tmp")]:
        tmp.unlink(missing_ok=True)
    for name, problem in sorted(shards.damaged_shards(stage_dir, manifest, verify=True).items()):
        warn(f"{stage_dir / name} is damaged ({problem}); redoing it")
        del manifest["shards"][name]
        for path in (stage_dir / name, stage_dir / shards.REJECTS / name):
            path.unlink(missing_ok=True)


def _stop_if_empty(ctx: RunContext, stage: Stage, totals: dict) -> None:
    """A stage that ends with 0 rows stops the command with the likely cause, unless the user
    asked to go on (`--allow-empty`): a later stage would only fail on the empty input."""
    if totals.get("rows_out", 0) or ctx.allow_empty:
        return
    rejected = Counter(totals.get("rejected") or {})
    empty_inputs = [n for n in _inputs(stage)
                    if not shards.load_manifest(ctx.stage_dir(n)).get("totals", {}).get("rows_out")]
    if rejected:
        top = ", ".join(f"{reason} {n}" for reason, n in rejected.most_common(3))
        cause = (f"every row was rejected (top reasons: {top}; the rows are in "
                 f"{ctx.stage_dir(stage.name) / shards.REJECTS})")
    elif empty_inputs:
        cause = f"its input stage {empty_inputs[0]!r} has 0 rows"
    else:
        cause = (f"it read {totals.get('rows_in', 0)} rows: is the source empty or binary, or filtered "
                 f"out by the stage's settings?")
    raise RunError(f"stage {stage.name!r} ended with 0 rows in {ctx.stage_dir(stage.name)}: {cause}; "
                   f"stopped here (add --allow-empty to go on with an empty stage)")


@dataclass
class StagePlan:
    """What the driver decided for one stage: its settings hash, manifest and the shards to make."""
    stage: Stage
    stage_dir: Path
    digest: str
    manifest: dict
    todo: list[int]


def plan_stage(ctx: RunContext, name: str, restart: bool = False,
               on_work: Optional[Callable[[], None]] = None) -> StagePlan:
    """Check upstream and settings, (re)start the manifest and list the shards not yet done.

    Every executor plans through here, so local and Ray runs make the same shards."""
    stage = make_stage(ctx, name)
    stage_dir = ctx.stage_dir(name)
    upstream = _upstream_hashes(ctx, stage)  # checked before anything is deleted
    digest = settings_hash(stage, upstream)
    if not restart:
        _refuse_mixing(ctx, name, digest)
    elif on_work:
        on_work()
    if restart and stage_dir.exists():
        shutil.rmtree(stage_dir)
    manifest = shards.load_manifest(stage_dir)
    if manifest.get("settings_hash") != digest:
        manifest = {"stage": name, "settings_hash": digest, "shards": {}}
    _drop_damaged(ctx, stage_dir, manifest)
    if stage.uses_model:  # the threads a model computes with change its output: recorded, checked
        mixed = check_threads(manifest, resolve_threads(ctx.config.executor), name, ctx.run_dir)
        if mixed:
            raise StageError(mixed)
    manifest.update(settings=stage.settings.model_dump(mode="json"), upstream=upstream,
                    complete=False)
    todo = [i for i in stage.shard_indices() if shards.shard_name(i) not in manifest["shards"]]
    if todo and on_work:
        on_work()
    return StagePlan(stage, stage_dir, digest, manifest, todo)


def process_shard(stage: Stage, index: int) -> dict:
    """Make one shard (rows and rejects written under unique temporary names, then renamed) and
    return its manifest entry; the caller records it. Runs wherever the stage's model lives."""
    ctx, stage_dir = stage.ctx, stage.ctx.stage_dir(stage.name)
    started, before = time.monotonic(), _usage(ctx)
    out = stage.process(index)
    after = _usage(ctx)
    reasons = Counter(r.reason for r in out.rejects)
    checks = {}  # size and checksum of each file, to tell later that it is still what was written
    if out.rejects:
        rejects = shards.write_table(stage_dir / shards.REJECTS / shards.shard_name(index),
                                     [r.model_dump() for r in out.rejects], REJECT_SCHEMA)
        checks.update(rejects_bytes=rejects.bytes, rejects_sha256=rejects.sha256)
    written = shards.write_table(stage_dir / shards.shard_name(index), out.rows, stage.schema)
    return {
        "rows_in": out.rows_in, "rows_out": written.rows, "bytes": written.bytes,
        "sha256": written.sha256, **checks, "rejected": dict(reasons),
        "counts": dict(out.counts),
        "llm": asdict(after.minus(before)),
        "seconds": round(time.monotonic() - started, 3),
    }


def record_shard(plan: StagePlan, index: int, entry: dict) -> None:
    """The "done" marker of one shard: only the driver calls this (one manifest writer)."""
    plan.manifest["shards"][shards.shard_name(index)] = entry
    shards.save_manifest(plan.stage_dir, plan.manifest)


def finish_stage(ctx: RunContext, plan: StagePlan) -> dict:
    totals: dict = {}
    for _, entry in sorted(plan.manifest["shards"].items()):  # shard order, however they finished
        _sum_into(totals, entry)
    plan.manifest.update(complete=True, totals=totals)
    plan.stage_dir.mkdir(parents=True, exist_ok=True)
    shards.save_manifest(plan.stage_dir, plan.manifest)
    _stop_if_empty(ctx, plan.stage, totals)
    return plan.manifest


def run_stage(ctx: RunContext, name: str, restart: bool = False, progress: bool = True,
              on_work: Optional[Callable[[], None]] = None) -> dict:
    """Run one stage; `on_work` is called when it is accepted and about to write shards (or delete)."""
    plan = plan_stage(ctx, name, restart, on_work)
    if plan.todo:
        plan.stage.setup()
    done = len(plan.manifest["shards"])  # a bar with the time left; periodic lines in a log
    with Progress(done + len(plan.todo), f"{name:>10}", unit="shard", initial=done,
                  enabled=progress) as bar:
        for index in plan.todo:
            entry = process_shard(plan.stage, index)
            record_shard(plan, index, entry)
            bar.update(1, note=f"{entry['rows_out']} rows, {sum(entry['rejected'].values())} rejected")
    return finish_stage(ctx, plan)


def open_run(pipeline: Path, run_dir: Path, overrides: list[str] = (), config=None) -> RunContext:
    """The run context of a pipeline file (validated here unless `config` is given, already
    validated); its resolved settings are saved when a command is accepted."""
    config = config if config is not None else load_pipeline(Path(pipeline), overrides)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(run_dir, config, Path(pipeline))
    ctx.overrides = list(overrides)
    return ctx


def save_settings(ctx: RunContext) -> None:
    resolved = ctx.config.model_dump(mode="json")
    shards.write_json(ctx.run_dir / "_settings.json", {"pipeline_file": str(ctx.pipeline_path),
                                                        "overrides": ctx.overrides,
                                                        "settings": resolved})
    shards.write_text(ctx.run_dir / "settings.yaml", yaml.safe_dump(resolved, sort_keys=False))


def run_pipeline(ctx: RunContext, stages: Optional[list[str]] = None, restart: bool = False,
                 progress: bool = True, run_one: Callable[..., dict] = run_stage,
                 restart_from: Optional[str] = None) -> dict[str, dict]:
    """Every stage in order; `run_one` is the executor's run_stage (local here, or Ray's).
    `restart_from`: that stage and every later one start over, the earlier ones resume."""
    names = list(stages or PIPELINES[ctx.config.pipeline])
    first = names.index(restart_from) if restart_from in names else len(names)
    ctx.progress = progress  # sub-runs of a recipe show bars only when their parent does
    results = {}
    saved = []

    def accepted() -> None:  # the settings of a command are saved once it writes, not before
        if not saved:
            save_settings(ctx)
            saved.append(True)

    try:
        for i, name in enumerate(names):
            results[name] = run_one(ctx, name, restart=restart or i >= first, progress=progress,
                                    on_work=accepted)
        accepted()  # a command that had nothing to do is accepted once it has checked every stage
    finally:
        ctx.close()
    return results

