"""fret: training data for text-embedding models, made with LLMs, and a trainer to use it.

The command forms are listed in README.md ("Commands"); scripts call them. Every command checks
its settings, paths, models and flags before it starts work and reports every problem at once.
Errors are one line each on stderr (`fret: error: ...`); exit 2 for usage and input errors, 1 for
failures while running (an unexpected exception included), 130 for Ctrl-C (docs/errors.md).
`--debug` (anywhere on the line) or FRET_DEBUG=1 also prints the traceback, for bug reports.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .core.errors import ArgumentParser, ConfigError, Problems, guarded


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipeline", type=Path, help="pipeline file, e.g. pipelines/fret.yaml")
    p.add_argument("--run-dir", type=Path, required=True, help="the run folder (created if missing)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting by dotted path, e.g. --set sample.size=16 (repeatable)")
    p.add_argument("--restart", action="store_true",
                   help="delete the output of the stage (with `run`: of every stage) and start it "
                        "over (needed after changing settings)")
    p.add_argument("--allow-empty", action="store_true",
                   help="go on when a stage ends with 0 rows (by default the command stops there)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="where shards are made: this process (local, the default) or a Ray "
                        "cluster (ray); overrides the pipeline file's executor.kind")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="with --executor ray: none starts a local Ray for this run; 'auto' joins "
                        "this node's cluster; ray://HOST:PORT a remote one")


def _stage_lists() -> str:
    """The stages of every pipeline, in order, for `fret generate --help`."""
    from .stages import PIPELINES
    lines = ["stages, in the order `fret run` makes them (pipeline: from the file's `pipeline:` key):"]
    lines += [f"  {kind + ':':<14}{' -> '.join(stages)}" for kind, stages in PIPELINES.items()]
    return "\n".join(lines)


COMMANDS = {  # name -> the one line `fret --help` shows
    "run": "run every stage of a pipeline file in order, resuming what is done",
    "generate": "run one stage of a pipeline file (its earlier stages must be done)",
    "report": "print a run's per-stage counts, rejects and example rows (--html: a page)",
    "train": "fine-tune an embedding model on unified shards (fret train --help)",
    "eval": "evaluate an embedding model, or an LLM teacher with --rerank (fret eval --help)",
    "export": "publish unified shards (RUN/export, RUN/mix) to the Hugging Face Hub",
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="fret", description=__doc__.split("\n\n")[0],
                            epilog="`fret COMMAND --help` describes each command; errors and exit "
                                   "codes: docs/errors.md")
    parser.add_argument("--version", action="version", version=f"fret {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error (also FRET_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=ArgumentParser)
    run = sub.add_parser("run", help=COMMANDS["run"], description=COMMANDS["run"])
    _pipeline_args(run)
    run.add_argument("--restart-from", metavar="STAGE",
                     help="start this stage and every later one over; earlier stages resume")
    gen = sub.add_parser("generate", help=COMMANDS["generate"], description=COMMANDS["generate"],
                         epilog=_stage_lists(), formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("stage", help="a stage of the pipeline (listed below)")
    _pipeline_args(gen)
    rep = sub.add_parser("report", help=COMMANDS["report"], description=COMMANDS["report"])
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--html", type=Path, help="also write a self-contained HTML report")
    rep.add_argument("--examples", type=int, default=2, help="example rows per stage")
    sub.add_parser("train", help=COMMANDS["train"], add_help=False)
    sub.add_parser("eval", help=COMMANDS["eval"], add_help=False)
    exp = sub.add_parser("export", help=COMMANDS["export"], description=COMMANDS["export"])
    exp.add_argument("shard_dir", type=Path)
    exp.add_argument("--push-to-hub", metavar="REPO", required=True, help="e.g. user/my-fret-data")
    exp.add_argument("--private", action="store_true")
    exp.add_argument("--token-env", default="HF_TOKEN", help="environment variable holding the token")
    return parser


def _check_run(args):
    """Everything `run`/`generate` can check before the first stage: the pipeline file with its
    --set items, the stage, the flags, and the settings, templates, models and LLM of the stages
    it will run. Every problem at once; the run folder is not touched."""
    from .core.config import load_pipeline_with_origin
    from .core.preflight import check_pipeline
    from .stages import PIPELINES
    config, origin = load_pipeline_with_origin(args.pipeline, args.overrides)
    problems = Problems()
    names = list(PIPELINES[config.pipeline])
    if args.command == "generate":
        if args.stage not in names:
            problems.add(f"generate: pipeline {config.pipeline!r} has no stage {args.stage!r}; its "
                         f"stages: {', '.join(names)}")
        names = [s for s in names if s == args.stage]
    restart_from = getattr(args, "restart_from", None)
    if restart_from is not None and restart_from not in names:
        problems.add(f"--restart-from {restart_from}: not a stage of pipeline {config.pipeline!r}; "
                     f"its stages: {', '.join(names)}")
    if restart_from and args.restart:
        problems.add("--restart and --restart-from: give one (--restart starts every stage over)")
    kind = args.executor or config.executor.kind
    if args.ray_address and kind != "ray":
        problems.add("--ray-address needs --executor ray (or executor.kind: ray)")
    if kind == "ray":
        import importlib.util
        if importlib.util.find_spec("ray") is None:
            problems.add(f"--executor ray (or executor.kind: ray) needs Ray: pip install 'fret[ray]'")
    if args.run_dir.exists() and not args.run_dir.is_dir():
        problems.add(f"--run-dir {args.run_dir}: a file, not a folder")
    problems.extend(check_pipeline(config, origin, names))
    problems.raise_if_any()
    return config, kind


def _run(args) -> int:
    from .core.executors import make_executor
    from .core.lock import folder_lock
    from .core.runner import open_run, refuse_mixing_first, run_pipeline
    from .stages import PIPELINES
    config, kind = _check_run(args)
    ctx = open_run(args.pipeline, args.run_dir, args.overrides, config=config)
    ctx.command, ctx.allow_empty = args.command, args.allow_empty
    stages = [args.stage] if args.command == "generate" else None
    with folder_lock(ctx.run_dir):  # one writer per run folder, for the whole command
        refuse_mixing_first(ctx, stages or list(PIPELINES[config.pipeline]), args.restart,
                            getattr(args, "restart_from", None))
        run_one, close = make_executor(ctx.config.executor, kind, args.ray_address)
        try:
            results = run_pipeline(ctx, stages, restart=args.restart, progress=not args.quiet,
                                   run_one=run_one, restart_from=getattr(args, "restart_from", None))
        finally:
            close()
    for name, manifest in results.items():
        t = manifest.get("totals", {})
        rejected = sum(t.get("rejected", {}).values())
        print(f"{name:>10}: {t.get('rows_out', 0)} rows out, {rejected} rejected -> "
              f"{ctx.stage_dir(name)}")
    return 0


def _check_shards(run_dir: Path) -> None:
    """A damaged shard is named with its fix before the report reads it; checksums are verified
    (a full read): a report is where a user asks whether the data is sound."""
    from .core import shards
    from .report import stage_dirs
    for stage_dir in stage_dirs(run_dir):
        bad = shards.damaged_shards(stage_dir, shards.load_manifest(stage_dir), verify=True)
        for name, problem in sorted(bad.items()):
            raise shards.ShardError(f"{stage_dir / name} is damaged ({problem}); "
                                    f"{shards.redo_hint(stage_dir / name)}")


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "train":
        from .parts.train.cli import run as train
        return train(argv[1:])
    if argv and argv[0] == "eval":
        from .parts.evaluation.cli import run as evaluate
        return evaluate(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command in ("run", "generate"):
        return _run(args)
    if args.command == "export":
        from .parts.hub import check, push
        check(args.shard_dir, args.push_to_hub, args.token_env)
        print(push(args.shard_dir, args.push_to_hub, args.private, args.token_env))
        return 0
    if args.command == "report":
        from .report import report
        if args.examples < 0:
            raise ConfigError(f"--examples {args.examples}: expected 0 or more")
        _check_shards(args.run_dir)
        return report(args.run_dir, html=args.html, examples=args.examples)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = next((a for a in argv if not a.startswith("-")), "")
    return guarded(_dispatch, argv, command)


if __name__ == "__main__":
    sys.exit(main())
