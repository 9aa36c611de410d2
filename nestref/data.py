"""MNIST for nestref: the IDX file format, finding/downloading/verifying MNIST, and splits.

This is where MNIST enters nestref:

* ``read_idx`` / ``write_idx`` read and write the IDX format MNIST is stored in
  (raw or gzip-compressed).
* ``load_mnist`` finds the four MNIST files on disk (or downloads them), checks
  their SHA-256 and shapes, and returns an ``MNIST`` record of NumPy arrays.
* ``train_val_split`` carves a fixed validation set out of the training set.
* ``scale_pixels`` turns uint8 pixels into float32 inputs in [0, 1].

IDX layout (all multi-byte numbers big-endian)::

    byte 0-1   0x00 0x00            magic
    byte 2     type code            0x08 uint8, 0x09 int8, 0x0B int16,
                                    0x0C int32, 0x0D float32, 0x0E float64
    byte 3     ndim
    then       ndim x uint32        the dimensions
    then       prod(dims) items     the payload, C order

This module imports only the standard library and NumPy, and prints nothing.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import secrets
import shutil
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import numpy as np

__all__ = [
    "IDXError",
    "MNISTNotFoundError",
    "read_idx",
    "write_idx",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST",
    "default_cache_dir",
    "load_mnist",
    "train_val_split",
    "scale_pixels",
]


class IDXError(ValueError):
    """A file is not a valid IDX file, is corrupt, or is not the MNIST it should be.

    The message always starts with the offending file's path.
    """


class MNISTNotFoundError(FileNotFoundError):
    """The MNIST files are not on disk and could not be downloaded.

    The message lists the missing files, every directory searched, what each
    download attempt said, and how to fix it.
    """


# ---------------------------------------------------------------------------
# IDX format
# ---------------------------------------------------------------------------

# IDX type code -> dtype as stored on disk (big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# (dtype kind, itemsize) -> IDX type code, so any byte order of a supported dtype can be written.
_IDX_CODES = {(dt.kind, dt.itemsize): code for code, dt in _IDX_DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"


def _one_line(err: BaseException) -> str:
    """`err` as a single line, for messages that list several errors."""
    return " ".join(str(err).split()) or type(err).__name__


def _read_payload(path: str | os.PathLike) -> bytes:
    """Return the bytes of `path`, gunzipped if it starts with the gzip magic 1f 8b."""
    with open(path, "rb") as f:
        return _gunzip_if_gzip(f.read(), path)


def _gunzip_if_gzip(data: bytes, source) -> bytes:
    # Sniff the content, not the name: people rename files, and some mirrors
    # hand out .gz names for files that are already decompressed.
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise IDXError(f"{source}: corrupt gzip stream: {_one_line(e)}") from e


def _parse_idx(data: bytes, path: str | os.PathLike) -> np.ndarray:
    """Decode the (decompressed) bytes of an IDX file; `path` is only used in error messages."""
    if len(data) < 4:
        raise IDXError(
            f"{path}: truncated header: file has {len(data)} bytes, an IDX header needs at least 4"
        )
    if data[0] != 0 or data[1] != 0:
        raise IDXError(
            f"{path}: wrong magic: first two bytes are {data[:2].hex()}, an IDX file starts with 0000"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise IDXError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXError(
            f"{path}: truncated header: {ndim} dims need {header_len} header bytes, file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _IDX_DTYPES[code]
    count = math.prod(shape)
    promised, present = count * dtype.itemsize, len(data) - header_len
    if present < promised:
        raise IDXError(
            f"{path}: truncated: header promises {promised} payload bytes, file has {present}"
        )
    if present > promised:
        raise IDXError(
            f"{path}: {present - promised} trailing bytes: header promises {promised} payload bytes, "
            f"file has {present}"
        )
    # astype copies into native byte order, so the result is writable and owns its memory.
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    return flat.astype(dtype.newbyteorder("=")).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected from its first bytes, not its name).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    np.ndarray
        A new, writable array with the header's shape and dtype (uint8, int8,
        int16, int32, float32 or float64) in native byte order.

    Raises
    ------
    IDXError
        Wrong magic, unknown type code, truncated header or payload, trailing
        bytes, or a corrupt gzip stream. The message starts with `path`.
    OSError
        The file cannot be opened (e.g. FileNotFoundError).
    """
    return _parse_idx(_read_payload(path), path)


def _temp_path_for(path: Path) -> Path:
    # Same directory as the target, so os.replace is a rename within one
    # filesystem and therefore atomic. Hidden, and unique per writer.
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_idx(path: str | os.PathLike, array, compress: bool | None = None) -> None:
    """Write `array` as an IDX file, atomically.

    Parameters
    ----------
    path : str or path-like
    array : array_like
        dtype uint8, int8, int16, int32, float32 or float64 (any byte order),
        at most 255 dims, each dim < 2**32.
    compress : bool or None
        True: gzip. False: raw. None (default): gzip iff `path` ends with ".gz".

    The data goes to a temporary file in the same directory which then replaces
    `path` in one step, so a crash leaves either the old file or the new one,
    never half a file.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"{path}: cannot write dtype {array.dtype} as IDX; "
            "supported: uint8, int8, int16, int32, float32, float64"
        )
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"{path}: IDX allows at most 255 dims each < 2**32, got shape {array.shape}")
    if compress is None:
        compress = path.name.endswith(".gz")

    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(_IDX_DTYPES[code], copy=False).tobytes(order="C")
    if compress:
        # mtime=0 makes the output byte-for-byte reproducible; level 6 is
        # nearly as small as 9 and several times faster on big arrays.
        data = gzip.compress(data, compresslevel=6, mtime=0)

    tmp = _temp_path_for(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------

# key -> (file name without .gz, size of the decompressed file in bytes, sha256 of the decompressed file)
MNIST_FILES: dict[str, tuple[str, int, str]] = {
    "train_images": (
        "train-images-idx3-ubyte",
        47_040_016,
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte",
        60_008,
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte",
        7_840_016,
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte",
        10_008,
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}

# Base URLs, tried in order; a file is fetched from <base><name>.gz.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


@dataclass(frozen=True, eq=False)
class MNIST:
    """The MNIST arrays, as returned by `load_mnist`.

    Attributes
    ----------
    train_images : np.ndarray, uint8, shape (60000, 28, 28)
    train_labels : np.ndarray, int64, shape (60000,), values 0..9
    test_images : np.ndarray, uint8, shape (10000, 28, 28)
    test_labels : np.ndarray, int64, shape (10000,), values 0..9
    source : str
        The directory the files were read from.

    `load_mnist` makes the arrays read-only: one MNIST object is often shared
    (e.g. by every test), so an in-place edit would silently leak into other
    users. Copy first (``x = m.train_images.copy()``) if you need to modify.
    eq=False because element-wise array comparison has no single truth value.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __repr__(self) -> str:
        return (
            f"MNIST(train={len(self.train_labels)}, test={len(self.test_labels)}, "
            f"source={self.source!r})"
        )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/nestref/mnist`` if XDG_CACHE_HOME is set, else ``~/.cache/nestref/mnist``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "nestref" / "mnist"


def _candidate_dirs(data_dir) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get("NESTREF_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(default_cache_dir())
    unique, seen = [], set()
    for d in dirs:
        key = os.path.abspath(d)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _find_files(directory: Path) -> dict[str, Path]:
    """key -> path for each MNIST file present in `directory` (raw preferred over .gz)."""
    found = {}
    for key, (name, _, _) in MNIST_FILES.items():
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def _mirror_unreachable(err: BaseException) -> bool:
    """True if `err` means the whole mirror is out of reach, so its other files needn't be tried."""
    if isinstance(err, urllib.error.HTTPError):
        return False  # the server answered; another file may well exist
    if isinstance(err, urllib.error.URLError):
        return not isinstance(err.reason, FileNotFoundError)  # file:// mirror missing one file
    return isinstance(err, (TimeoutError, ConnectionError))


def _download_one(url: str, dest: Path, size: int, sha256: str, timeout: float) -> None:
    """Fetch `url` to `dest` atomically, keeping it only if its decompressed payload has `sha256`."""
    tmp = _temp_path_for(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "xb") as f:
            shutil.copyfileobj(response, f)
        payload = _gunzip_if_gzip(tmp.read_bytes(), url)
        actual = hashlib.sha256(payload).hexdigest()
        if actual != sha256:
            raise IDXError(
                f"{url}: checksum mismatch: expected sha256 {sha256} ({size} bytes), "
                f"got {actual} ({len(payload)} bytes)"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _download_missing(target: Path, mirrors, timeout: float) -> list[str]:
    """Download the MNIST files missing from `target`; return one line per failed attempt."""
    attempts = []
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return [f"{target}: cannot create directory: {_one_line(e)}"]
    for base in mirrors:
        base = base if base.endswith("/") else base + "/"
        missing = [k for k in MNIST_FILES if k not in _find_files(target)]
        for key in missing:
            name, size, sha256 = MNIST_FILES[key]
            url = f"{base}{name}.gz"
            try:
                _download_one(url, target / f"{name}.gz", size, sha256, timeout)
            except IDXError as e:  # its message already starts with the URL
                attempts.append(_one_line(e))
            except (OSError, ValueError, HTTPException) as e:  # URLError and timeouts are OSErrors
                attempts.append(f"{url}: {_one_line(e)}")
                if _mirror_unreachable(e):
                    break
    return attempts


def _not_found_message(dirs: list[Path], download: bool, attempts: list[str], mirrors) -> str:
    all_names = [name for name, _, _ in MNIST_FILES.values()]
    lines = [
        "MNIST not found: no directory holds all four files "
        f"({', '.join(all_names)}; each raw or .gz).",
        "Looked in, in this order:",
    ]
    for d in dirs:
        if not d.is_dir():
            lines.append(f"  {d}  (no such directory)")
        else:
            found = _find_files(d)
            absent = [MNIST_FILES[k][0] for k in MNIST_FILES if k not in found]
            lines.append(f"  {d}  (missing: {', '.join(absent)})")
    if not download:
        lines.append("Download: not attempted (download=False).")
    elif attempts:
        lines.append(f"Download into {dirs[0]} failed:")
        lines.extend(f"  {a}" for a in attempts)
    else:
        lines.append("Download: no mirrors given.")
    base = (tuple(mirrors) or MNIST_MIRRORS)[0]
    base = base if base.endswith("/") else base + "/"
    lines += [
        "To fix, do one of:",
        "  - pass load_mnist(data_dir=...) a directory holding the four files;",
        "  - set the environment variable NESTREF_DATA_DIR to such a directory;",
        "  - download these four files into one of the directories above:",
    ]
    lines.extend(f"      {base}{name}.gz" for name in all_names)
    return "\n".join(lines)


def _check_pair(images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IDXError(
            f"{image_path}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IDXError(
            f"{label_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise IDXError(
            f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise IDXError(f"{label_path}: labels must be 0..9, found {int(labels.max())}")


def _load_from(directory: Path, paths: dict[str, Path], verify: bool) -> MNIST:
    arrays = {}
    for key, path in paths.items():
        payload = _read_payload(path)  # read once; hash and parse the same bytes
        if verify:
            name, size, sha256 = MNIST_FILES[key]
            actual = hashlib.sha256(payload).hexdigest()
            if actual != sha256:
                raise IDXError(
                    f"{path}: checksum mismatch: expected sha256 {sha256} ({size} bytes decompressed), "
                    f"got {actual} ({len(payload)} bytes). The file is corrupt or not the original "
                    f"{name}; delete it and download it again."
                )
        arrays[key] = _parse_idx(payload, path)
    for split in ("train", "test"):
        _check_pair(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                    paths[f"{split}_images"], paths[f"{split}_labels"])
    for split in ("train", "test"):
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"].astype(np.int64)
    for a in arrays.values():
        a.flags.writeable = False
    return MNIST(**arrays, source=str(directory))


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    verify: bool = True,
    mirrors: tuple[str, ...] = MNIST_MIRRORS,
    timeout: float = 30,
) -> MNIST:
    """Find (or download), check and load MNIST.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Directory to look in first.
    download : bool
        If no directory holds the files, download the missing ones into the
        first directory searched (created if needed).
    verify : bool
        Check each file's decompressed SHA-256 against `MNIST_FILES`.
    mirrors : tuple of str
        Base URLs tried in order; file ``<name>.gz`` is fetched from
        ``<base><name>.gz``. ``file://`` URLs work.
    timeout : float
        Seconds, passed to ``urllib.request.urlopen``.

    Returns
    -------
    MNIST
        Read-only arrays: images uint8 (N, 28, 28), labels int64 (N,).

    Search order: `data_dir`, then ``$NESTREF_DATA_DIR``, then
    `default_cache_dir()`. The first directory holding all four files (each as
    ``<name>`` or ``<name>.gz``; raw preferred) wins. Downloads are always
    checked against `MNIST_FILES`; a mismatch is deleted and the next mirror
    is tried.

    Raises
    ------
    MNISTNotFoundError
        The files are nowhere to be found and could not be downloaded.
    IDXError
        A file is corrupt, fails its checksum (with verify=True), or has the
        wrong shape, dtype, label range, or image/label count.
    """
    dirs = _candidate_dirs(data_dir)
    for d in dirs:
        paths = _find_files(d)
        if len(paths) == len(MNIST_FILES):
            return _load_from(d, paths, verify)

    attempts = []
    if download:
        attempts = _download_missing(dirs[0], mirrors, timeout)
        paths = _find_files(dirs[0])
        if len(paths) == len(MNIST_FILES):
            return _load_from(dirs[0], paths, verify)
    raise MNISTNotFoundError(_not_found_message(dirs, download, attempts, mirrors))


# ---------------------------------------------------------------------------
# Splits and preprocessing
# ---------------------------------------------------------------------------


def train_val_split(images: np.ndarray, labels: np.ndarray, n_val: int = 5000, seed: int = 0):
    """Split the training set into a training part and a fixed validation part.

    The validation part is what every decision (growth, pruning, early
    stopping, hyperparameters) is made on; the test set is used only to
    report the final result, so that number is not tuned to.

    Parameters
    ----------
    images : np.ndarray, shape (N, ...)
    labels : np.ndarray, shape (N,)
    n_val : int
        Size of the validation part, 0 < n_val < N.
    seed : int
        Seed of the ``np.random.default_rng`` permutation; the same seed always
        gives the same split.

    Returns
    -------
    train_images : shape (N - n_val, ...)
    train_labels : shape (N - n_val,)
    val_images : shape (n_val, ...)
    val_labels : shape (n_val,)
        New arrays (copies), dtypes unchanged, each part in its original order.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"images and labels differ in length: {n} vs {len(labels)}")
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)):
        raise ValueError(f"n_val must be an int, got {type(n_val).__name__} {n_val!r}")
    if not 0 < n_val < n:
        raise ValueError(f"n_val must satisfy 0 < n_val < {n} (the number of examples), got {n_val}")
    perm = np.random.default_rng(seed).permutation(n)
    # Sorting keeps each part in the original order: the split chooses who
    # goes where, shuffling for training is the training loop's business.
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """Map uint8 pixels 0..255 to float32 in [0, 1] (divide by 255), same shape.

    Pixels are scaled, not standardised (no mean subtraction): NeST's neuron
    growth needs inputs >= 0, and standardising would make most pixels negative.

    Parameters
    ----------
    images : np.ndarray, uint8, any shape

    Returns
    -------
    np.ndarray, float32, same shape, values in [0, 1]
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        # Scaling twice (already-float input) would be a silent bug.
        raise TypeError(f"scale_pixels expects uint8 pixels, got {images.dtype}")
    return images.astype(np.float32) / np.float32(255)
