"""The errors meant for the user: the CLI prints their message as one line.

`exit_code` is what `fret` exits with: 2 for usage and input errors (a wrong setting, a missing
file, settings that do not match the data), 1 for failures at run time (a corrupt shard, a run
folder another command is writing).
"""
import sys


class FretError(Exception):
    exit_code = 2


class ConfigError(FretError, ValueError):
    """A pipeline file or override is wrong; the message is meant for the user as is."""


class RunError(FretError):
    """A failure at run time that the user can fix; the message says how."""
    exit_code = 1


def warn(message: str) -> None:
    """A warning for the user: one line on stderr, as errors are."""
    print(f"fret: warning: {message}", file=sys.stderr, flush=True)
