"""Atomic, pickle-free saving of arrays: what every checkpoint and model file uses.

A file is written to a temporary name in the same directory, flushed to disk, then
renamed over the target. A rename within one directory is atomic, so a crash at any
moment leaves either the old file or the new one, never half of one. With
``keep_previous`` the file being replaced is first renamed to ``previous_path(path)``
(``checkpoint.npz`` -> ``checkpoint.prev.npz``), so the last good version survives even
a file that is later found corrupt. Files get the permissions the user's umask gives
(``mkstemp`` alone would make them private, 0600).
"""
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import OutputPathError


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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
            SyntaxError, OverflowError, MemoryError, AttributeError, NotImplementedError) as err:
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
