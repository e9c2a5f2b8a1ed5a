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
def reported_as_exit(on_error=None):
    """Around a command-line entry point: a DannError becomes `error: <message>` on stderr (once;
    the run's log file records it too) and exit 2, also when Hydra's `instantiate` wrapped it
    ("Error in call to target ..."); `on_error()`, if given, runs before the exit. A run stopped by
    SIGTERM (after its checkpoint is saved) exits 143. Imports nothing heavy: entry points
    report config errors before torch and Lightning load."""
    try:
        yield
    except SystemExit as e:
        if type(e).__name__ != "SIGTERMException":  # Lightning's, raised after a SIGTERM
            raise
        log.error("stopped by SIGTERM")
        raise SystemExit(EXIT_SIGTERM) from None
    except Exception as e:
        error = users_error(e)
        if error is None:
            raise
        _to_log_files(f"{type(error).__name__}: {error}")
        if on_error is not None:
            on_error()
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None


def users_error(e: BaseException) -> DannError | None:
    """`e` itself if it is a DannError, or the DannError Hydra's InstantiationException wraps."""
    while e is not None and not isinstance(e, DannError):
        e = e.__cause__ if type(e).__name__ == "InstantiationException" else None
    return e


def _to_log_files(message: str) -> None:
    """An ERROR record to the file handlers `log` reaches (Hydra's <run dir>/<script>.log), not
    to the console: the terminal gets the message once, as `error: ...`."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), None)
    logger = log
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
        logger = logger.parent if logger.propagate else None
