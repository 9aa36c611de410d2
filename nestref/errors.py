"""The errors nestref raises for a user's mistake or a bad file: one type per kind of problem.

Each derives from :class:`NestrefError`, which the command line prints as one line (the
problem and the fix) instead of a traceback, and also from the built-in type a Python caller
would expect (``ValueError``, ``FileExistsError``), so ``except ValueError`` keeps working.
Messages name the file or argument, what was expected, and how to fix it.

``exit_code`` is what ``nestref`` exits with for each kind (README: "Commands"): 2 when
the command itself must change (an argument, the config, the output directory), 1 when a
file, the data or the run failed.
"""
import errno


class NestrefError(Exception):
    """Base of every error that is the user's to fix (bad argument, file, config, data)."""

    exit_code = 1


class InvalidArgumentError(NestrefError, ValueError):
    """A function argument or hyperparameter is out of range or of the wrong type."""

    exit_code = 2


class ConfigError(NestrefError, ValueError):
    """A config file, preset or ``--set key=value`` is unreadable or invalid."""

    exit_code = 2


class DataError(NestrefError, ValueError):
    """A data set (IDX or npz) is missing, unreadable, corrupt or inconsistent."""


class ModelFileError(NestrefError, ValueError):
    """A saved model (``model.npz``) is unreadable, incomplete or inconsistent."""


class CheckpointError(NestrefError, ValueError):
    """A checkpoint is unreadable, incomplete, or does not match the run it should resume."""


class ReportError(NestrefError, ValueError):
    """A run's ``report.json`` or ``history.json`` is unreadable or lacks a field."""


class OutputExistsError(NestrefError, FileExistsError):
    """An output path already holds files the user did not ask to overwrite."""

    exit_code = 2


class OutputInUseError(NestrefError, FileExistsError):
    """Another process is writing the same output (its lock file names it)."""

    exit_code = 2


class DiskFullError(NestrefError, OSError):
    """A file could not be written because its disk (or the user's quota on it) is full.

    Made as ``DiskFullError(errno, message)``; it reads as the message alone."""

    def __str__(self):
        return self.strerror


class OutputPathError(NestrefError, ValueError):
    """An output path cannot be created or written (read-only, or under a regular file)."""

    exit_code = 2


class TrainingDiverged(NestrefError, RuntimeError):
    """The loss became NaN or infinite; the message says which checkpoint to resume and what to
    lower."""


def one_line(err):
    """What a command prints after "error: " for ``err``: its message, and an OSError as
    'path: reason', the way the user named the path."""
    if isinstance(err, OSError) and not isinstance(err, NestrefError):
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # a write that storage.py did not make
            return (f"cannot write {err.filename or 'the output'}: the disk is full "
                    f"({err.strerror}); free space on it or write elsewhere, then run the command "
                    f"again (a synthesis or training continues with --resume)")
        if isinstance(err, PermissionError) and err.filename is not None:
            return (f"{err.filename}: permission denied; give yourself access (chmod u+rw, u+rwx "
                    f"for a directory) or use another path")
        if err.filename is not None and err.strerror:
            return f"{err.filename}: {err.strerror}"
    return str(err) or type(err).__name__
