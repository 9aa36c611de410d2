"""Atomic, pickle-free saving of arrays: what every checkpoint and model file uses.

A file is written to a temporary name in the same directory, flushed to disk, then
renamed over the target. A rename within one directory is atomic, so a crash at any
moment leaves either the old file or the new one, never half of one. With
``keep_previous`` the file being replaced is first renamed to ``previous_path(path)``
(``checkpoint.npz`` -> ``checkpoint.prev.npz``), so the last good version survives even
a file that is later found corrupt. Files get the permissions the user's umask gives
(``mkstemp`` alone would make them private, 0600).

``hold_lock`` keeps a second process from writing the same output at the same time: two
writers of one run directory would each replace the other's files, and leave a report whose
numbers match neither run.
"""
import errno
import json
import os
import socket
import tempfile
import time
import tokenize
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import DiskFullError, OutputInUseError, OutputPathError


def previous_path(path):
    """Where ``keep_previous`` keeps the version before the latest: ``a/b.npz`` ->
    ``a/b.prev.npz``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def checkpoint_exists(path):
    """True if ``path`` or the version kept before it (``previous_path``) is on disk."""
    return Path(path).exists() or previous_path(path).exists()


def _umask_mode():
    mask = os.umask(0)  # the only way to read the umask is to set it; put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path, write, *, keep_previous=False):
    """Call ``write(file_object)`` on a temp file, then move it over ``path`` atomically.

    keep_previous: rename an existing ``path`` to ``previous_path(path)`` first (only
    once the new file is complete and on disk).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            # between these two renames only the previous version exists; readers fall back to it
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path, err) from err
        raise


def disk_full(path, err):
    """The DiskFullError for ``err`` (ENOSPC or EDQUOT) while writing ``path``."""
    what = "the disk is full" if err.errno == errno.ENOSPC else "the disk quota is used up"
    return DiskFullError(err.errno, f"cannot write {path}: {what} ({os.strerror(err.errno)}); "
                                    f"free space on {Path(path).parent} or write elsewhere, then "
                                    f"run the command again (a synthesis or training continues "
                                    f"from its last checkpoint with --resume)")


def save_arrays(path, arrays, *, keep_previous=False):
    """Save a dict of arrays as .npz, atomically. Strings and dicts go in as JSON strings."""
    def write(f):
        np.savez(f, **{k: to_array(v) for k, v in arrays.items()})
    atomic_write_bytes(path, write, keep_previous=keep_previous)


def load_arrays(path, error=ValueError):
    """Load a .npz written by ``save_arrays`` into a plain dict (no pickle).

    A missing file raises FileNotFoundError; an unreadable or corrupt one raises
    ``error`` (e.g. ``nestref.errors.CheckpointError``) naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise error(f"{path} is a directory, not a .npz file")
    try:
        with open(path, "rb") as f:
            is_zip = zipfile.is_zipfile(f)
            if is_zip:
                f.seek(0)
                with np.load(f, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
                others = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
                if not others:
                    return arrays
                raise ValueError(f"member(s) {others} are not .npy arrays")
    except PermissionError as err:
        raise error(f"{path}: permission denied; make the file readable (chmod u+r)") from err
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError, TypeError,
            SyntaxError, tokenize.TokenError, OverflowError, MemoryError, AttributeError,
            NotImplementedError) as err:
        # a tampered .npy header or zip directory can make numpy or zipfile fail in any of these
        # ways
        raise error(
            f"{path}: not a readable nestref .npz file ({type(err).__name__}: {err})"
        ) from err
    raise error(f"{path}: not a .npz file (not a zip archive); was it written by nestref?")


def check_writable_dir(path, what="--out"):
    """Make sure files can be written in directory ``path`` (which need not exist yet).

    Raises OutputPathError, naming ``what`` (the argument the path came from), when
    ``path`` is a file, lies under a regular file, or cannot be written. Called before
    any training, so that a run does not fail only when it first saves. Creates nothing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file, not a directory: choose a directory path")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputPathError(f"{what} {path} lies under {existing}, which is a regular file, "
                              f"not a directory: choose a path inside a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise OutputPathError(f"cannot write to {what} {path} ({existing}: {err.strerror or err}): "
                              f"choose a writable directory, or fix its permissions") from err


def save_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, default=_json_default).encode()
    atomic_write_bytes(path, lambda f: f.write(text))


def to_array(value):
    """What ``save_arrays`` stores for ``value``: the array, or a JSON string for a dict or list."""
    if isinstance(value, (dict, list)):
        return np.array(json.dumps(value, default=_json_default))
    return np.asarray(value)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


# ------------------------------------------------------------------------ one writer at a time
LOCK_SUFFIX = ".lock"
_UNWRITTEN_LOCK_SECONDS = 60  # a lock file still empty after this long was left by a crash


def _lock_holder(lock_path):
    """{"pid", "host", "since"} of the process holding ``lock_path``, or None if the file does not
    say (it is being written, or was left half-written)."""
    try:
        holder = json.loads(Path(lock_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _is_stale(lock_path, holder):
    """Was ``lock_path`` left by a process that is gone? (Only a process of this machine can be
    asked; a lock of another host's process is never taken over.)"""
    if holder is None:
        try:
            age = time.time() - Path(lock_path).stat().st_mtime
        except FileNotFoundError:
            return True
        return age > _UNWRITTEN_LOCK_SECONDS
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(holder["pid"], 0)  # signal 0: is there such a process?
    except ProcessLookupError:
        return True
    except PermissionError:  # there is one, of another user
        return False
    return False


@contextmanager
def hold_lock(lock_path, what):
    """Hold ``lock_path`` (created with O_EXCL, holding this process's pid and host) while the
    block runs; OutputInUseError naming ``what`` if a live process holds it. A lock left by a
    process that died (kill -9, a crash) is taken over. Creates the lock's directory if needed,
    and removes it again if it is left empty."""
    lock_path = Path(lock_path)
    made = [p for p in (lock_path.parent, *lock_path.parent.parents) if not p.exists()]
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(2):  # a second try after taking over a stale lock
            try:
                fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                holder = _lock_holder(lock_path)
                if not _is_stale(lock_path, holder):
                    who = ("another process" if holder is None else
                           f"process {holder['pid']} on {holder.get('host')}, since "
                           f"{holder.get('since')}")
                    raise OutputInUseError(
                        f"{what} is in use: {who} is writing it (lock {lock_path}); wait for it "
                        f"to finish, or choose another output (if no such process runs, delete "
                        f"{lock_path})") from None
                lock_path.unlink(missing_ok=True)
        else:
            raise OutputInUseError(f"{what} is in use: another process took over its stale lock "
                                   f"{lock_path} first; wait for it, or choose another output")
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        try:
            yield lock_path
        finally:
            lock_path.unlink(missing_ok=True)
    finally:
        for directory in made:  # innermost first; only the empty ones this call created
            try:
                directory.rmdir()
            except OSError:
                break
