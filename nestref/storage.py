"""Atomic, pickle-free saving of arrays: what every checkpoint and model file uses.

A file is written to a temporary name in the same directory, flushed to disk, then
renamed over the target. A rename within one directory is atomic, so a crash at any
moment leaves either the old file or the new one, never half of one.
"""
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path, write):
    """Call ``write(file_object)`` on a temp file, then move it over ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_arrays(path, arrays):
    """Save a dict of arrays as .npz, atomically. Strings and dicts go in as JSON strings."""
    def write(f):
        np.savez(f, **{k: _to_array(v) for k, v in arrays.items()})
    atomic_write_bytes(path, write)


def load_arrays(path):
    """Load a .npz written by ``save_arrays`` into a plain dict (no pickle)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable nestref .npz file ({err})") from err


def save_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, default=_json_default).encode()
    atomic_write_bytes(path, lambda f: f.write(text))


def _to_array(value):
    if isinstance(value, (dict, list)):
        return np.array(json.dumps(value, default=_json_default))
    return np.asarray(value)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
