"""The errors meant for the user, and how every `fret` command ends (docs/errors.md).

Exit codes: 2 for usage and input the user can fix before running (a wrong setting or flag, a
missing file, settings that do not match the data), 1 for a failure while running (a dead server,
a corrupt shard, a full disk, a run folder another command is writing), 130 for Ctrl-C. Every
error is printed as `fret: error: MESSAGE` on stderr, one line per problem, and warnings as
`fret: warning: MESSAGE`; `--debug` (or FRET_DEBUG=1) adds the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Iterable, NoReturn

PREFIX = "fret: error: "
DEBUG_HINT = "run with --debug (or FRET_DEBUG=1) for the traceback"
RESUMABLE = ("run", "generate", "train")  # an interrupted one resumes with the same command


class FretError(Exception):
    exit_code = 2


class ConfigError(FretError, ValueError):
    """A pipeline file, flag or override is wrong; the message is meant for the user as is."""


class RunError(FretError):
    """A failure at run time that the user can fix; the message says how."""
    exit_code = 1


class Problems:
    """Every problem a check finds, so that a command reports them all at once before it works.

        problems = Problems()
        problems.check(resolve_embedder, "x", "--model")   # a FretError becomes a line
        problems.add("--limit 0: expected a number >= 1")
        problems.raise_if_any()                            # ConfigError, one line per problem
    """

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)

    def check(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs); a FretError it raises is recorded instead (None returned)."""
        try:
            return fn(*args, **kwargs)
        except FretError as exc:
            for line in str(exc).splitlines():
                self.add(line)
            return None

    def extend(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.add(line)

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError("\n".join(self.lines))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with fret's error style: a usage mistake is one `fret: error:` line (exit 2)
    naming the command and where its help is, not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def warn(message: str) -> None:
    """A warning for the user: one line on stderr, as errors are."""
    print(f"fret: warning: {message}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def debug_wanted(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("FRET_DEBUG", "") not in ("", "0")


def guarded(main: Callable[[list[str]], int], argv: list[str], command: str) -> int:
    """Run a command's `main(argv)` under the error contract and return its exit code."""
    debug = debug_wanted(argv)
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    try:
        return main(argv)
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        again = ("; finished work is kept: run the same command again to resume"
                 if command in RESUMABLE else "")
        print(f"fret: interrupted{again}", file=sys.stderr)
        return 130
    except FretError as exc:  # user errors: one clear line each (several for several problems)
        if debug:
            traceback.print_exc()
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(PREFIX + line, file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a read-only folder, a full disk, a bad --html path: names the path
        if debug:
            traceback.print_exc()
        print(PREFIX + _one_line(exc), file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"{PREFIX}unexpected {type(exc).__name__}: {_one_line(exc)[:500]} ({DEBUG_HINT})",
              file=sys.stderr)
        return 1
