"""The errors `dann` raises for bad input, and how the command line reports them.

A `DannError` is the user's to fix (a config value, a data file, a checkpoint): its message
says what is wrong and how to fix it. `reported_as_exit` turns one into that message on stderr
and exit status 2, with no stack trace; every other exception is a bug and keeps its trace.
"""

import contextlib
import logging
import sys

log = logging.getLogger("dann")

EXIT_USER_ERROR = 2


class DannError(Exception):
    """Bad input: the message names the field, file or checkpoint and the fix."""


class ConfigError(DannError, ValueError):
    """A config key or value that cannot be right (checked before any data is loaded)."""


class DataError(DannError, FileNotFoundError):
    """Missing data files: the message says which files are expected where."""


class InvalidDataError(DannError, ValueError):
    """Data files that are there but truncated, corrupt or inconsistent (e.g. class names)."""


class CheckpointError(DannError, RuntimeError):
    """A checkpoint that is missing, corrupt, unsafe or from another architecture."""


class DivergenceError(DannError, FloatingPointError):
    """A NaN or infinite loss."""


EXIT_SIGTERM = 143  # 128 + SIGTERM, what a shell reports for a job stopped by SIGTERM


@contextlib.contextmanager
def reported_as_exit():
    """Around a command-line entry point: a DannError becomes `error: <message>` and exit 2;
    a run stopped by SIGTERM (after its checkpoint is saved) exits 143."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        yield
    except DannError as e:
        log.error("%s: %s", type(e).__name__, e)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    except SIGTERMException:
        log.error("stopped by SIGTERM")
        raise SystemExit(EXIT_SIGTERM) from None
