"""The `fret` command line (forms fixed in DESIGN.md; scripts call them).

Every command ends an error in one line on stderr and exits 2 for usage and input errors, 1 for
failures at run time (an unexpected exception included) and 130 for Ctrl-C. `--debug` (anywhere
on the line) or FRET_DEBUG=1 also prints the traceback, for bug reports.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from . import __version__
from .core.errors import FretError

DEBUG_HINT = "run with --debug (or FRET_DEBUG=1) for the traceback"
RESUMABLE = ("run", "generate", "train")  # an interrupted one resumes with the same command


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipeline", type=Path, help="pipeline file, e.g. pipelines/fret.yaml")
    p.add_argument("--run-dir", type=Path, required=True, help="the run folder (created if missing)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting by dotted path, e.g. --set sample.size=16 (repeatable)")
    p.add_argument("--restart", action="store_true",
                   help="delete the stage's output and start it over (needed after changing settings)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="where shards are made: this process (local, the default) or a Ray "
                        "cluster (ray); overrides the pipeline file's executor.kind")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="with --executor ray: none starts a local Ray for this run; 'auto' joins "
                        "this node's cluster; ray://HOST:PORT a remote one")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fret", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"fret {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error (also FRET_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every stage of a pipeline in order")
    _pipeline_args(run)
    gen = sub.add_parser("generate", help="run one stage of a pipeline")
    gen.add_argument("stage")
    _pipeline_args(gen)
    rep = sub.add_parser("report", help="print a run's per-stage counts and example rows")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--html", type=Path, help="also write a self-contained HTML report")
    rep.add_argument("--examples", type=int, default=2, help="example rows per stage")
    exp = sub.add_parser("export", help="publish unified shards (e.g. RUN/export or RUN/mix)")
    exp.add_argument("shard_dir", type=Path)
    exp.add_argument("--push-to-hub", metavar="REPO", required=True, help="e.g. user/my-fret-data")
    exp.add_argument("--private", action="store_true")
    exp.add_argument("--token-env", default="HF_TOKEN", help="environment variable holding the token")
    sub.add_parser("train", help="fine-tune an embedding model on unified shards", add_help=False)
    sub.add_parser("eval", help="evaluate an embedding model", add_help=False)
    return parser


def _run(args) -> int:
    from .core.config import ConfigError
    from .core.executors import make_executor
    from .core.lock import folder_lock
    from .core.runner import open_run, run_pipeline
    ctx = open_run(args.pipeline, args.run_dir, args.overrides)
    stages = [args.stage] if args.command == "generate" else None
    if stages:
        from .stages import stage_class
        stage_class(ctx.config.pipeline, args.stage)  # a clear error for an unknown stage
    kind = args.executor or ctx.config.executor.kind
    if args.ray_address and kind != "ray":
        raise ConfigError("--ray-address needs --executor ray (or executor.kind: ray)")
    with folder_lock(ctx.run_dir):  # one writer per run folder, for the whole command
        run_one, close = make_executor(ctx.config.executor, kind, args.ray_address)
        try:
            results = run_pipeline(ctx, stages, restart=args.restart, progress=not args.quiet,
                                   run_one=run_one)
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
        from .parts.train.cli import main as train_main
        return train_main(argv[1:])
    if argv and argv[0] == "eval":
        from .parts.evaluation.cli import main as eval_main
        return eval_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command in ("run", "generate"):
        return _run(args)
    if args.command == "export":
        from .parts.hub import push
        print(push(args.shard_dir, args.push_to_hub, args.private, args.token_env))
        return 0
    if args.command == "report":
        from .report import report
        _check_shards(args.run_dir)
        return report(args.run_dir, html=args.html, examples=args.examples)
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    debug = "--debug" in argv or os.environ.get("FRET_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere, also after train/eval
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        again = ("; finished work is kept: run the same command again to resume"
                 if command in RESUMABLE else "")
        print(f"fret: interrupted{again}", file=sys.stderr)
        return 130
    except FretError as exc:  # user errors are one clear line (several for several bad keys)
        if debug:
            traceback.print_exc()
        print(f"fret: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a read-only folder, a full disk, a bad --html path: names the path
        if debug:
            traceback.print_exc()
        print(f"fret: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"fret: error: unexpected {type(exc).__name__}: {_one_line(exc)[:500]} "
              f"({DEBUG_HINT})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
