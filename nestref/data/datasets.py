"""Data for nestref: the IDX file format, finding and checking a data set, and its splits.

This is where data enters nestref:

* ``read_idx`` / ``write_idx`` read and write the IDX format MNIST is stored in
  (raw or gzip-compressed).
* ``load_dataset`` loads a data set: MNIST by default, or any directory in MNIST's IDX
  layout, or an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``. It
  validates what it reads and returns a ``Dataset`` that carries its name, where it was
  read from and a checksum, so every report says what it was measured on.
* ``load_mnist`` loads MNIST itself, checked against its known SHA-256 digests.
* ``load_splits`` / ``split_dataset`` make the (train, validation, test) splits that
  training and synthesis both use; ``train_val_split`` carves the validation set out.
* ``scale_pixels`` turns uint8 pixels into float32 inputs in [0, 1].

Where the data comes from (``load_dataset``), first match wins:

1. ``data_dir`` (``--data-dir`` on the command line), if given: it must exist and be a
   data set, else ``DataError`` naming it; there is no fall-back to another directory.
2. ``$NESTREF_DATA_DIR``, if set: the same rule, the error names the variable.
3. ``data/mnist`` of the repository, when nestref runs from a checkout (the four MNIST
   files ship with the source, so a fresh clone works offline).
4. ``default_cache_dir()``: ``~/.cache/nestref/mnist`` (or ``$XDG_CACHE_HOME/nestref/mnist``).
5. A download of MNIST into that cache, each file verified by SHA-256 before it is kept.

Known data sets are recognised by the SHA-256 of their files' decompressed payloads
(``KNOWN_DATASETS``; today MNIST). A data set whose digests match none is named after its
directory or file and validated: images (N, H, W) or (N, C, H, W) of uint8 (or floats in
[0, 1]), integer labels in 0..classes-1, one label per image, train and test agreeing in
image shape. A directory whose files match MNIST's digests only in part is a damaged
MNIST and is refused.

IDX layout (all multi-byte numbers big-endian)::

    byte 0-1   0x00 0x00            magic
    byte 2     type code            0x08 uint8, 0x09 int8, 0x0B int16,
                                    0x0C int32, 0x0D float32, 0x0E float64
    byte 3     ndim
    then       ndim x uint32        the dimensions
    then       prod(dims) items     the payload, C order

This module stands on the ground floor: it imports only the standard library, NumPy,
``nestref.errors`` and ``nestref.data.storage``, and prints nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import numpy as np

from .. import SOURCE_ROOT
from ..errors import DataError
from .storage import atomic_write_bytes

__all__ = [
    "DataError",
    "IDXError",
    "MNISTNotFoundError",
    "read_idx",
    "write_idx",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "KNOWN_DATASETS",
    "Dataset",
    "MNIST",
    "default_cache_dir",
    "checkout_data_dir",
    "load_dataset",
    "load_mnist",
    "split_dataset",
    "load_splits",
    "train_val_split",
    "scale_pixels",
]


class IDXError(DataError):
    """A file is not a valid IDX file, is corrupt, or is not the data set it should be.

    The message always starts with the offending file's path.
    """


class MNISTNotFoundError(DataError, FileNotFoundError):
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
    """Return the bytes of `path`, gunzipped if it starts with the gzip magic 1f 8b.

    A missing file raises FileNotFoundError; any other reason the file cannot be read
    (permissions, a directory in its place, an I/O error) raises DataError naming it.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        reason = e.strerror or _one_line(e)
        raise DataError(
            f"{path}: cannot read the file ({reason}); make it readable (e.g. chmod u+r) "
            "or point to another copy"
        ) from e
    return _gunzip_if_gzip(raw, path)


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
            f"{path}: wrong magic: first two bytes are {data[:2].hex()}, "
            "an IDX file starts with 0000"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise IDXError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXError(
            f"{path}: truncated header: {ndim} dims need {header_len} header bytes, "
            f"file has {len(data)}"
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
            f"{path}: {present - promised} trailing bytes: "
            f"header promises {promised} payload bytes, "
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
    FileNotFoundError
        There is no file at `path`.
    DataError
        The file exists but cannot be read (permissions, a directory, I/O error).
    """
    return _parse_idx(_read_payload(path), path)


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

    The bytes go through ``storage.atomic_write_bytes``: a crash leaves either
    the old file or the new one, never half a file.
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
        raise ValueError(
            f"{path}: IDX allows at most 255 dims each < 2**32, got shape {array.shape}"
        )
    if compress is None:
        compress = path.name.endswith(".gz")

    data = _idx_bytes(array, code)
    if compress:
        # mtime=0 makes the output byte-for-byte reproducible; level 6 is
        # nearly as small as 9 and several times faster on big arrays.
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, lambda f: f.write(data))


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    """The IDX encoding (header + big-endian payload) of `array` with type code `code`."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(_IDX_DTYPES[code], copy=False).tobytes(order="C")


# ---------------------------------------------------------------------------
# Data sets: MNIST and the others
# ---------------------------------------------------------------------------

# The four arrays of a data set, in the order digests are combined into its checksum.
DATASET_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
# Their names inside an .npz (the Keras convention).
NPZ_KEYS = {
    "train_images": "x_train",
    "train_labels": "y_train",
    "test_images": "x_test",
    "test_labels": "y_test",
}

# key -> (file name without .gz, bytes of the decompressed file, sha256 of the decompressed file)
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


def _known_datasets() -> dict[str, dict[str, str]]:
    # Read MNIST_FILES at call time, so the one table of MNIST's digests is MNIST_FILES.
    return {"mnist": {key: sha for key, (_, _, sha) in MNIST_FILES.items()}}


# name -> {key: SHA-256 of the decompressed IDX payload}; a data set whose four digests
# all match an entry is that data set.
KNOWN_DATASETS = _known_datasets()

# Base URLs, tried in order; a file is fetched from <base><name>.gz.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_IDX_NAMES = ", ".join(n for n, _, _ in MNIST_FILES.values()) + "; each raw or .gz"
_FIX_HINT = (
    "pass --data-dir on the command line (data_dir=... from Python) a directory in MNIST's "
    f"IDX layout ({_IDX_NAMES}) or an .npz holding x_train, y_train, x_test, y_test"
)


# report.json's data name for splits handed to synthesize() without a description
GIVEN_DATA = "data given to synthesize()"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set's four arrays and what it is, as returned by `load_dataset`.

    Attributes
    ----------
    train_images : np.ndarray, shape (N, H, W) or (N, C, H, W), uint8 (or float32 in [0, 1])
    train_labels : np.ndarray, int64, shape (N,), values 0..classes-1
    test_images : np.ndarray, shape (M, *train_images.shape[1:])
    test_labels : np.ndarray, int64, shape (M,)
    source : str
        The directory (or .npz file) the arrays were read from.
    name : str
        "mnist" when the files' digests match `KNOWN_DATASETS`, else the directory's
        (or file's) name.
    checksum : str
        SHA-256 over the four payload digests (see `dataset_checksum`): equal for the
        same arrays however they are stored (raw, gzip or npz).
    classes : int
        Number of classes: the output width a network for this data set needs.

    The arrays are read-only: one Dataset is often shared (e.g. by every test), so
    an in-place edit would silently leak into other users. Copy first if you need to.
    eq=False because element-wise array comparison has no single truth value.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    name: str = "mnist"
    checksum: str = ""
    classes: int = 10

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image: (H, W) or (C, H, W)."""
        return tuple(int(s) for s in self.train_images.shape[1:])

    def describe(self) -> dict:
        """What a report records about the data: name, source, checksum, shapes, sizes."""
        return {
            "name": self.name,
            "source": self.source,
            "checksum": self.checksum,
            "image_shape": list(self.image_shape),
            "classes": self.classes,
            "n_train": len(self.train_labels),
            "n_test": len(self.test_labels),
        }

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.train_labels)}, test={len(self.test_labels)}, "
            f"image_shape={self.image_shape}, classes={self.classes}, source={self.source!r})"
        )


class MNIST(Dataset):
    """A `Dataset` that is MNIST (as returned by `load_mnist`): images uint8 (N, 28, 28),
    labels int64 0..9."""

    def __repr__(self) -> str:
        return (
            f"MNIST(train={len(self.train_labels)}, test={len(self.test_labels)}, "
            f"source={self.source!r})"
        )


def dataset_checksum(digests: dict[str, str]) -> str:
    """SHA-256 of the four payload digests, one ``key=digest`` line each in `DATASET_KEYS` order."""
    text = "".join(f"{key}={digests[key]}\n" for key in DATASET_KEYS)
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/nestref/mnist`` if XDG_CACHE_HOME is set, else ``~/.cache/nestref/mnist``.
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "nestref" / "mnist"


def checkout_data_dir() -> Path | None:
    """The repository's ``data/mnist`` when nestref runs from a source checkout, else None.

    A checkout is recognised by the ``pyproject.toml`` beside the package; an installed
    wheel has neither, and then the cache (and a download) is where MNIST comes from.
    """
    root = SOURCE_ROOT
    directory = root / "data" / "mnist"
    if (root / "pyproject.toml").is_file() and directory.is_dir():
        return directory
    return None


def _unique(dirs: list[Path]) -> list[Path]:
    unique, seen = [], set()
    for d in dirs:
        key = os.path.abspath(d)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _mnist_candidates(data_dir) -> list[Path]:
    """Where `load_mnist` looks: `data_dir` alone if given, else env, checkout, cache."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    dirs = []
    env = os.environ.get("NESTREF_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    checkout = checkout_data_dir()
    if checkout is not None:
        dirs.append(checkout)
    dirs.append(default_cache_dir())
    return _unique(dirs)


def _find_files(directory: Path) -> dict[str, Path]:
    """key -> path for each IDX-layout file present in `directory` (raw preferred over .gz)."""
    found = {}
    try:
        for key, (name, _, _) in MNIST_FILES.items():
            for candidate in (directory / name, directory / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
    except PermissionError as e:  # the directory cannot be searched: name it, not a file in it
        raise DataError(
            f"{directory}: cannot read the directory (permission denied); make it readable "
            f"(chmod u+rx {directory}) or point to another copy of the data"
        ) from e
    return found


# ------------------------------------------------------------------ download


def _mirror_unreachable(err: BaseException) -> bool:
    """True if `err` means the whole mirror is out of reach, so its other files needn't be tried."""
    if isinstance(err, urllib.error.HTTPError):
        return False  # the server answered; another file may well exist
    if isinstance(err, urllib.error.URLError):
        return not isinstance(err.reason, FileNotFoundError)  # file:// mirror missing one file
    return isinstance(err, (TimeoutError, ConnectionError))


def _download_one(url: str, dest: Path, size: int, sha256: str, timeout: float) -> None:
    """Fetch `url`; keep it as `dest` (atomically) only if its decompressed payload has `sha256`."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        raw = response.read()
    payload = _gunzip_if_gzip(raw, url)
    actual = hashlib.sha256(payload).hexdigest()
    if actual != sha256:
        raise IDXError(
            f"{url}: checksum mismatch: expected sha256 {sha256} ({size} bytes), "
            f"got {actual} ({len(payload)} bytes)"
        )
    atomic_write_bytes(dest, lambda f: f.write(raw))


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


def _not_found_message(
    dirs: list[Path], target: Path, download: bool, attempts: list[str], mirrors
) -> str:
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
        lines.append(f"Download into {target} failed:")
        lines.extend(f"  {a}" for a in attempts)
    else:
        lines.append("Download: no mirrors given.")
    base = (tuple(mirrors) or MNIST_MIRRORS)[0]
    base = base if base.endswith("/") else base + "/"
    lines += [
        "To fix, do one of:",
        "  - on the command line, pass --data-dir DIR, a directory holding the four files "
        "(from Python: load_mnist(data_dir=...));",
        "  - set the environment variable NESTREF_DATA_DIR to such a directory;",
        "  - download these four files into one of the directories above:",
    ]
    lines.extend(f"      {base}{name}.gz" for name in all_names)
    return "\n".join(lines)


# ------------------------------------------------------------------ reading and checking


def _read_payloads(paths: dict[str, Path]) -> dict[str, bytes]:
    payloads = {}
    for key, path in paths.items():
        try:
            payloads[key] = _read_payload(path)
        except FileNotFoundError as e:  # vanished between listing and reading
            raise DataError(f"{path}: the file disappeared while being read") from e
    return payloads


def _check_mnist_pair(images: np.ndarray, labels: np.ndarray, image_path, label_path) -> None:
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


def _read_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


def _load_mnist_from(directory: Path, paths: dict[str, Path], verify: bool, payloads=None) -> MNIST:
    arrays, digests = {}, {}
    payloads = _read_payloads(paths) if payloads is None else payloads
    for key, payload in payloads.items():  # read once; hash and parse the same bytes
        path = paths[key]
        digests[key] = hashlib.sha256(payload).hexdigest()
        name, size, sha256 = MNIST_FILES[key]
        if verify and digests[key] != sha256:
            raise IDXError(
                f"{path}: checksum mismatch: expected sha256 {sha256} ({size} bytes decompressed), "
                f"got {digests[key]} ({len(payload)} bytes). "
                "The file is corrupt or not the original "
                f"{name}; delete it and download it again."
            )
        arrays[key] = _parse_idx(payload, path)
    for split in ("train", "test"):
        _check_mnist_pair(
            arrays[f"{split}_images"],
            arrays[f"{split}_labels"],
            paths[f"{split}_images"],
            paths[f"{split}_labels"],
        )
    for split in ("train", "test"):
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"].astype(np.int64)
    return MNIST(
        **_read_only(arrays),
        source=str(directory),
        name="mnist",
        checksum=dataset_checksum(digests),
        classes=10,
    )


def _identify(digests: dict[str, str]) -> str | None:
    """The known data set whose four digests these all are, else None.

    A data set the user points at that shares only some files with MNIST (its labels, say,
    with other images) is a data set of its own, named after its file or directory and never
    "mnist": it may well be derived from MNIST on purpose, so it is not refused as a corrupt
    copy. MNIST's own files, where nestref finds them itself, are checked file by file
    (``load_mnist``, ``verify``).
    """
    for name, known in _known_datasets().items():
        if all(digests[key] == known[key] for key in DATASET_KEYS):
            return name
    return None


def channels_last_problem(shape) -> str | None:
    """What to do about images of ``shape`` that look channels last (N, H, W, C), or None.

    nestref's images are channels first (N, C, H, W), as PyTorch's; Keras and PIL write them
    channels last, with 1, 3 or 4 channels at the end."""
    shape = tuple(shape)
    if len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        n, h, w, c = shape
        return (f"images of shape {shape} are channels last (N, H, W, C); nestref takes channels "
                f"first: transpose to (N, C, H, W) = {(n, c, h, w)}, e.g. "
                f"np.transpose(x, (0, 3, 1, 2))")
    return None


def _check_images(images: np.ndarray, where: str) -> np.ndarray:
    if channels_last_problem(images.shape):
        raise DataError(f"{where}: {channels_last_problem(images.shape)}")
    if images.ndim not in (3, 4) or images.shape[0] < 1 or 0 in images.shape[1:]:
        raise DataError(
            f"{where}: expected images of shape (N, H, W) or (N, C, H, W) with N >= 1, "
            f"got shape {images.shape}"
        )
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind == "f":
        finite = np.isfinite(images)
        if not finite.all():
            raise DataError(f"{where}: float images must be finite; {int((~finite).sum()):,} "
                            f"values are NaN or infinite")
        if images.min() < 0 or images.max() > 1:
            raise DataError(
                f"{where}: float images must be within [0, 1] "
                f"(found {float(images.min()):g}..{float(images.max()):g}); "
                "store uint8 pixels 0..255 or scale them to [0, 1]"
            )
        return images.astype(np.float32)
    raise DataError(
        f"{where}: expected uint8 pixels (or floats in [0, 1]), got dtype {images.dtype}"
    )


def _check_labels(labels: np.ndarray, n_images: int, where: str, image_where: str) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{where}: expected integer labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if len(labels) != n_images:
        raise DataError(f"{image_where} has {n_images} images but {where} has {len(labels)} labels")
    if labels.min() < 0:
        raise DataError(f"{where}: labels must be 0..classes-1, found {int(labels.min())}")
    return labels.astype(np.int64)


def _validated(arrays: dict[str, np.ndarray], where: dict[str, str]) -> tuple[dict, int]:
    """Check a data set's four arrays.

    Returns them (images uint8 or float32, labels int64) and the class count.
    """
    out = {}
    for split in ("train", "test"):
        images = _check_images(arrays[f"{split}_images"], where[f"{split}_images"])
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = _check_labels(
            arrays[f"{split}_labels"],
            len(images),
            where[f"{split}_labels"],
            where[f"{split}_images"],
        )
    if out["train_images"].shape[1:] != out["test_images"].shape[1:]:
        raise DataError(
            f"train and test images differ in shape: {where['train_images']} has "
            f"{out['train_images'].shape[1:]}, "
            f"{where['test_images']} has {out['test_images'].shape[1:]}"
        )
    classes = int(out["train_labels"].max()) + 1
    if classes < 2:
        raise DataError(
            f"{where['train_labels']}: all labels are 0; a classifier needs at least 2 classes"
        )
    # the largest label sets the output width: a stray or 1-based label must not widen it
    # silently (bincount is safe to size now: classes <= len(labels) is checked first)
    if classes > len(out["train_labels"]):
        raise DataError(f"{where['train_labels']}: label {classes - 1} with only "
                        f"{len(out['train_labels'])} training images; labels must be "
                        f"0..classes-1 with every class among the training images")
    missing = np.flatnonzero(np.bincount(out["train_labels"], minlength=classes) == 0)
    if missing.size:
        shown = ", ".join(str(c) for c in missing[:10]) + (", ..." if missing.size > 10 else "")
        hint = " (labels 1..K? subtract 1)" if missing.tolist() == [0] else ""
        raise DataError(f"{where['train_labels']}: labels must be 0..classes-1 with every class "
                        f"among the training images; class(es) {shown} of 0..{classes - 1} "
                        f"have none{hint}")
    if out["test_labels"].max() >= classes:
        raise DataError(
            f"{where['test_labels']}: label {int(out['test_labels'].max())} "
            f"is outside 0..{classes - 1}, "
            f"the classes of the training labels ({where['train_labels']})"
        )
    return out, classes


def _custom_name(path: Path) -> str:
    name = path.stem if path.is_file() else path.name
    # a directory called "mnist" that is not MNIST must not pass for it in a report
    return f"{name}-custom" if name in _known_datasets() else name


def _load_idx_dataset(directory: Path, paths: dict[str, Path]) -> Dataset:
    payloads = _read_payloads(paths)
    digests = {key: hashlib.sha256(p).hexdigest() for key, p in payloads.items()}
    where = {key: str(path) for key, path in paths.items()}
    known = _identify(digests)
    if known == "mnist":
        return _load_mnist_from(
            directory, paths, verify=False, payloads=payloads
        )  # digests matched
    arrays = {key: _parse_idx(payloads[key], paths[key]) for key in DATASET_KEYS}
    arrays, classes = _validated(arrays, where)
    return Dataset(
        **_read_only(arrays),
        source=str(directory),
        name=_custom_name(directory),
        checksum=dataset_checksum(digests),
        classes=classes,
    )


def _load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS.values() if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; a data set .npz holds "
                    f"x_train, y_train, x_test, y_test (it has {', '.join(npz.files) or 'none'})"
                )
            return {key: np.asarray(npz[name]) for key, name in NPZ_KEYS.items()}
    except DataError:
        raise
    except PermissionError as e:
        raise DataError(
            f"{path}: cannot read the file ({e.strerror}); make it readable (e.g. chmod u+r)"
        ) from e
    except (
        zipfile.BadZipFile,
        ValueError,
        EOFError,
        OSError,
    ) as e:  # pickled object arrays are ValueErrors
        raise DataError(f"{path}: not a readable .npz of plain arrays ({_one_line(e)})") from e


def _load_npz_dataset(path: Path) -> Dataset:
    arrays = _load_npz_arrays(path)
    where = {key: f"{path}[{name}]" for key, name in NPZ_KEYS.items()}
    digests = {}
    for key, array in arrays.items():
        code = _IDX_CODES.get((array.dtype.kind, array.dtype.itemsize))
        if (
            key.endswith("labels")
            and array.dtype.kind in "iu"
            and array.size
            and 0 <= array.min()
            and array.max() < 256
        ):
            code, array = 0x08, array.astype(np.uint8)  # labels hash as MNIST's uint8 IDX files do
        encoded = _idx_bytes(array, code) if code is not None else array.tobytes()
        digests[key] = hashlib.sha256(encoded).hexdigest()
    known = _identify(digests)
    arrays, classes = _validated(arrays, where)
    name = known if known is not None else _custom_name(path)
    return Dataset(
        **_read_only(arrays),
        source=str(path),
        name=name,
        checksum=dataset_checksum(digests),
        classes=classes,
    )


def load_path(path: str | os.PathLike, origin: str = "data_dir") -> Dataset:
    """Load the data set at `path`: a directory in MNIST's IDX layout or an ``.npz``.

    `origin` (e.g. "--data-dir", "NESTREF_DATA_DIR") is named in the errors, so the
    user knows which setting to correct.

    Raises
    ------
    DataError
        `path` does not exist, is neither such a directory nor an .npz, or its arrays
        fail validation (shapes, dtypes, labels, train/test agreement); IDXError
        (a DataError) for a corrupt IDX file or a damaged known data set.
    """
    p = Path(path).expanduser()
    if origin == "NESTREF_DATA_DIR":
        fix = (
            f"To fix, set NESTREF_DATA_DIR to a directory in MNIST's IDX layout ({_IDX_NAMES}) or "
            "an .npz holding x_train, y_train, x_test, y_test, or unset it to use MNIST"
        )
    else:
        fix = f"To fix, {_FIX_HINT}; or set NESTREF_DATA_DIR to one; or omit {origin} to use MNIST"
    if not p.exists():
        raise DataError(f"{origin} {p}: no such file or directory. {fix}")
    if p.is_file():
        if p.suffix != ".npz":
            raise DataError(f"{origin} {p}: a file, but not an .npz. {fix}")
        return _load_npz_dataset(p)
    paths = _find_files(p)
    if len(paths) < len(MNIST_FILES):
        absent = [MNIST_FILES[k][0] for k in MNIST_FILES if k not in paths]
        raise DataError(
            f"{origin} {p}: not a data set: missing {', '.join(absent)} (each raw or .gz). {fix}"
        )
    return _load_idx_dataset(p, paths)


def load_dataset(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: tuple[str, ...] = MNIST_MIRRORS,
    timeout: float = 30,
) -> Dataset:
    """Find and load the data set to train on, in the search order of the module docstring.

    Parameters
    ----------
    data_dir : str or path-like, optional
        A directory in MNIST's IDX layout or an .npz with x_train, y_train, x_test,
        y_test. Given, it is the only place looked at.
    download, mirrors, timeout
        As for `load_mnist`, used only when nothing is given and MNIST is not on disk.

    Returns
    -------
    Dataset
        Read-only arrays with the data set's name, source and checksum.

    Raises
    ------
    DataError
        `data_dir` or ``$NESTREF_DATA_DIR`` is not a data set, or a data set fails
        validation; MNISTNotFoundError (a DataError) when MNIST is nowhere to be found.
    """
    if data_dir is not None:
        return load_path(data_dir, "--data-dir")
    env = os.environ.get("NESTREF_DATA_DIR")
    if env:
        return load_path(env, "NESTREF_DATA_DIR")
    return load_mnist(None, download=download, mirrors=mirrors, timeout=timeout)


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
        The directory to read (and, with `download`, to download missing files into).
        Given, it is the only directory looked at.
    download : bool
        If no directory holds the files, download the missing ones into `data_dir`, or
        without it into `default_cache_dir()` (created if needed).
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

    Search order without `data_dir`: ``$NESTREF_DATA_DIR``, the checkout's
    ``data/mnist`` (`checkout_data_dir`), then `default_cache_dir()`. The first
    directory holding all four files (each as ``<name>`` or ``<name>.gz``; raw
    preferred) wins. Downloads are always checked against `MNIST_FILES`; a mismatch is
    discarded and the next mirror is tried.

    Raises
    ------
    MNISTNotFoundError
        The files are nowhere to be found and could not be downloaded.
    IDXError
        A file is corrupt, fails its checksum (with verify=True), or has the
        wrong shape, dtype, label range, or image/label count.
    DataError
        A file cannot be read (e.g. permissions).
    """
    dirs = _mnist_candidates(data_dir)
    found, paths = _complete_dir(dirs)
    if found is not None:
        return _load_mnist_from(found, paths, verify)
    target = dirs[0] if data_dir is not None else default_cache_dir()
    attempts = []
    if download:
        attempts = _download_missing(target, mirrors, timeout)
        found, paths = _complete_dir([target])
        if found is not None:
            return _load_mnist_from(found, paths, verify)
    raise MNISTNotFoundError(_not_found_message(dirs, target, download, attempts, mirrors))


def _complete_dir(dirs):
    """The first of `dirs` holding every file of `MNIST_FILES`, with the files' paths;
    (None, None) when none does."""
    for d in dirs:
        paths = _find_files(d)
        if len(paths) == len(MNIST_FILES):
            return d, paths
    return None, None


# ---------------------------------------------------------------------------
# Splits and preprocessing
# ---------------------------------------------------------------------------


def split_dataset(
    dataset: Dataset, n_val: int = 5000, seed: int = 0, train_limit: int | None = None
) -> dict:
    """The splits every run uses: a fixed validation part of the training set, and the test set.

    Parameters
    ----------
    dataset : Dataset
    n_val : int
        Validation images taken out of the training set (`train_val_split`).
    seed : int
        Seed of the split.
    train_limit : int, optional
        Use only the first `train_limit` training images (quick runs, tests).

    Returns
    -------
    dict
        ``"train"``, ``"val"``, ``"test"``: (images, labels) pairs (images as stored,
        labels int64); ``"source"``: where the data was read; ``"dataset"``:
        `Dataset.describe()`; ``"image_shape"`` and ``"classes"``.
    """
    images, labels = dataset.train_images, dataset.train_labels
    if train_limit is not None:
        images, labels = images[:train_limit], labels[:train_limit]
    if (
        isinstance(n_val, (int, np.integer))
        and not isinstance(n_val, bool)
        and n_val >= len(images)
    ):
        raise DataError(
            f"n_val={n_val} leaves no training images out of {len(images)}: "
            f"choose n_val below {len(images)}"
        )
    tx, ty, vx, vy = train_val_split(images, labels, n_val=n_val, seed=seed)
    return {
        "train": (tx, ty),
        "val": (vx, vy),
        "test": (dataset.test_images, dataset.test_labels),
        "source": dataset.source,
        "dataset": dataset.describe(),
        "image_shape": dataset.image_shape,
        "classes": dataset.classes,
    }


def load_splits(
    data_dir=None, n_val: int = 5000, seed: int = 0, train_limit: int | None = None
) -> dict:
    """`split_dataset` of `load_dataset(data_dir)`: the splits of ``train`` and ``synthesize``."""
    return split_dataset(load_dataset(data_dir), n_val=n_val, seed=seed, train_limit=train_limit)


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
        raise ValueError(
            f"n_val must satisfy 0 < n_val < {n} (the number of examples), got {n_val}"
        )
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
