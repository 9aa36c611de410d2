"""Tests for nestref.data.datasets: the IDX format, finding/downloading/verifying MNIST, splits,
scaling."""

import gzip
import hashlib
import os
import struct
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nestref.data.datasets as data
from nestref.data.datasets import (
    MNIST,
    MNIST_FILES,
    IDXError,
    MNISTNotFoundError,
    default_cache_dir,
    load_mnist,
    read_idx,
    scale_pixels,
    train_val_split,
    write_idx,
)

NAMES = [name for name, _, _ in MNIST_FILES.values()]
UNREACHABLE = "http://127.0.0.1:9/"  # discard port: connection refused at once, no network needed


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Keep every test away from the user's NESTREF_DATA_DIR, ~/.cache, the checkout's
    data/mnist and the internet."""
    monkeypatch.delenv("NESTREF_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "checkout_data_dir", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    real_urlopen = urllib.request.urlopen

    def local_only_urlopen(url, *args, **kwargs):
        assert url.startswith(("file://", UNREACHABLE)), f"test tried to reach the network: {url}"
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only_urlopen)


# ---------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------

IDX_DTYPES = ["u1", "i1", "<i2", ">i2", "<i4", ">i4", "<f4", ">f4", "<f8", ">f8"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    array=st.sampled_from(IDX_DTYPES).flatmap(
        lambda dt: hnp.arrays(
            np.dtype(dt), hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)
        )
    )
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress, array):
    path = tmp_path / "array.idx"
    write_idx(path, array, compress=compress)
    back = read_idx(path)
    native = array.dtype.newbyteorder("=")
    assert back.dtype == native and back.dtype.isnative
    assert back.shape == array.shape
    # Compare bytes, not values: exact for NaN payloads and -0.0 too.
    assert back.tobytes() == array.astype(native).tobytes()
    assert back.flags.writeable


def test_write_idx_exact_bytes(tmp_path):
    write_idx(tmp_path / "a", np.array([1, 2, 3], dtype=np.uint8))
    assert (
        tmp_path / "a"
    ).read_bytes() == b"\x00\x00\x08\x01" + b"\x00\x00\x00\x03" + b"\x01\x02\x03"
    # Multi-byte types are big-endian whatever the array's byte order.
    write_idx(tmp_path / "b", np.array([[1, -2]], dtype="<i2"))
    assert (tmp_path / "b").read_bytes() == (
        b"\x00\x00\x0b\x02" + b"\x00\x00\x00\x01\x00\x00\x00\x02" + b"\x00\x01\xff\xfe"
    )


def test_compress_default_follows_extension(tmp_path):
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_idx(tmp_path / "x.gz", x)
    write_idx(tmp_path / "x", x)
    assert (tmp_path / "x.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "x").read_bytes()[:2] == b"\x00\x00"


def test_gzip_detected_by_content_not_name(tmp_path):
    x = np.arange(10, dtype=np.float64)
    write_idx(tmp_path / "raw.gz", x, compress=False)
    write_idx(tmp_path / "zipped", x, compress=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), x)
    np.testing.assert_array_equal(read_idx(tmp_path / "zipped"), x)


@pytest.mark.parametrize(
    "bad",
    [np.zeros(3, np.int64), np.zeros(3, bool), np.zeros(3, np.complex64), np.zeros(3, np.uint16)],
)
def test_write_idx_rejects_unsupported_dtype(tmp_path, bad):
    with pytest.raises(ValueError, match="dtype"):
        write_idx(tmp_path / "bad", bad)
    assert os.listdir(tmp_path) == []


def test_write_idx_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "x"
    write_idx(path, np.array([7], np.uint8))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(data.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_idx(path, np.arange(100, dtype=np.uint8))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["x"]  # no temp file left behind


def _header(code, dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


CORRUPT = {
    "wrong magic": (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab", "wrong magic"),
    "unknown type code": (_header(0x07, [2]) + b"ab", "unknown IDX type code 0x07"),
    "empty file": (b"", "truncated header"),
    "truncated header (fixed part)": (b"\x00\x00\x08", "truncated header"),
    "truncated header (dims)": (_header(0x08, [2, 3, 4])[:10], "truncated header"),
    "truncated payload": (
        _header(0x0C, [10]) + b"\x00" * 9,
        "header promises 40 payload bytes, file has 9",
    ),
    "trailing bytes": (_header(0x08, [3]) + b"abcd", "1 trailing bytes"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_idx_raises(tmp_path, case, gz):
    content, expected = CORRUPT[case]
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(IDXError, match=expected) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("damage", ["truncated", "bit flip", "bad header"])
def test_corrupt_gzip_raises(tmp_path, damage):
    rng = np.random.default_rng(0)
    good = gzip.compress(
        _header(0x08, [2000]) + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    )
    if damage == "truncated":
        bad = good[: len(good) // 2]
    elif damage == "bit flip":
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        bad = bytes(bad)
    else:
        bad = good[:2] + b"\x63" + good[3:]  # compression method 0x63 does not exist
    path = tmp_path / "images.gz"
    path.write_bytes(bad)
    with pytest.raises(IDXError, match="corrupt gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------------------
# load_mnist on small fake files
# ---------------------------------------------------------------------------


def write_fake_mnist(directory, *, n_train=50, n_test=20, seed=0, gz=True, only=None):
    """Write small fake MNIST files; return an MNIST_FILES-like spec with their real sizes and
    hashes."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    spec = {}
    for key, array in arrays.items():
        name = MNIST_FILES[key][0]
        path = directory / (f"{name}.gz" if gz else name)
        if only is None or key in only:
            write_idx(path, array)
        payload = _header(0x08, array.shape) + array.tobytes()
        spec[key] = (name, len(payload), hashlib.sha256(payload).hexdigest())
    return spec, arrays


def assert_same(mnist, arrays):
    for key, array in arrays.items():
        np.testing.assert_array_equal(getattr(mnist, key), array)


def test_load_fake_shapes_and_dtypes(tmp_path):
    d = tmp_path / "fake"
    _, arrays = write_fake_mnist(d)
    m = load_mnist(d, download=False, verify=False)
    assert isinstance(m, MNIST)
    assert m.train_images.shape == (50, 28, 28) and m.train_images.dtype == np.uint8
    assert m.test_images.shape == (20, 28, 28) and m.test_images.dtype == np.uint8
    assert m.train_labels.shape == (50,) and m.train_labels.dtype == np.int64
    assert m.test_labels.shape == (20,) and m.test_labels.dtype == np.int64
    assert m.source == str(d)
    assert_same(m, arrays)
    assert repr(m) == f"MNIST(train=50, test=20, source={str(d)!r})"


def test_loaded_arrays_are_read_only(tmp_path):
    write_fake_mnist(tmp_path)
    m = load_mnist(tmp_path, download=False, verify=False)
    with pytest.raises(ValueError, match="read-only"):
        m.train_images[0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        m.test_labels[0] = 1


def test_verify_passes_with_matching_checksums(tmp_path, monkeypatch):
    spec, arrays = write_fake_mnist(tmp_path, gz=False)
    monkeypatch.setattr(data, "MNIST_FILES", spec)
    assert_same(load_mnist(tmp_path, download=False, verify=True), arrays)


def test_verify_rejects_wrong_checksum(tmp_path):
    write_fake_mnist(tmp_path)
    with pytest.raises(IDXError, match="checksum mismatch") as info:
        load_mnist(tmp_path, download=False, verify=True)
    message = str(info.value)
    name, _, expected_sha = MNIST_FILES["train_images"]
    assert str(tmp_path / f"{name}.gz") in message
    assert expected_sha in message
    assert "download it again" in message


def test_raw_preferred_over_gz_and_mixing_allowed(tmp_path):
    write_fake_mnist(tmp_path, seed=1, gz=True)
    _, raw = write_fake_mnist(tmp_path, seed=2, gz=False, only={"train_images", "test_labels"})
    m = load_mnist(tmp_path, download=False, verify=False)
    np.testing.assert_array_equal(m.train_images, raw["train_images"])
    np.testing.assert_array_equal(m.test_labels, raw["test_labels"])


def test_count_mismatch_raises(tmp_path):
    write_fake_mnist(tmp_path)
    labels_path = tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(labels_path, np.zeros(49, np.uint8))
    with pytest.raises(IDXError) as info:
        load_mnist(tmp_path, download=False, verify=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "50 images" in message and "49 labels" in message


def test_labels_out_of_range_raise(tmp_path):
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(20, 10, np.uint8))
    with pytest.raises(IDXError, match="0..9") as info:
        load_mnist(tmp_path, download=False, verify=False)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


@pytest.mark.parametrize("bad", [np.zeros((50, 27, 28), np.uint8), np.zeros((50, 28, 28), np.int32),
                                 np.zeros((50, 784), np.uint8)])
def test_wrong_image_shape_or_dtype_raises(tmp_path, bad):
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", bad)
    with pytest.raises(IDXError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, download=False, verify=False)


def test_corrupt_file_in_directory_raises_idx_error(tmp_path):
    write_fake_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(IDXError, match="t10k-images-idx3-ubyte.gz: corrupt gzip"):
        load_mnist(tmp_path, download=False, verify=False)


# ---------------------------------------------------------------------------
# Search order
# ---------------------------------------------------------------------------


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "nestref" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "nestref" / "mnist"


def test_search_order(tmp_path, monkeypatch):
    arg_dir, env_dir = tmp_path / "arg", tmp_path / "env"
    cache_dir = default_cache_dir()  # under the tmp XDG_CACHE_HOME set by isolated_env
    assert str(cache_dir).startswith(str(tmp_path))
    _, from_arg = write_fake_mnist(arg_dir, seed=1)
    _, from_env = write_fake_mnist(env_dir, seed=2)
    _, from_cache = write_fake_mnist(cache_dir, seed=3)
    monkeypatch.setenv("NESTREF_DATA_DIR", str(env_dir))

    m = load_mnist(arg_dir, download=False, verify=False)
    assert m.source == str(arg_dir)
    assert_same(m, from_arg)

    m = load_mnist(download=False, verify=False)
    assert m.source == str(env_dir)
    assert_same(m, from_env)

    # A given directory is the only one looked at: without the files it is an error,
    # never a silent fall-back to another directory (this changed on purpose).
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist(tmp_path / "empty", download=False, verify=False)
    assert str(tmp_path / "empty") in str(info.value) and str(env_dir) not in str(info.value)

    # The checkout's data/mnist comes after the environment and before the cache.
    checkout = tmp_path / "checkout"
    _, from_checkout = write_fake_mnist(checkout, seed=4)
    monkeypatch.setattr(data, "checkout_data_dir", lambda: checkout)
    assert load_mnist(download=False, verify=False).source == str(env_dir)
    monkeypatch.delenv("NESTREF_DATA_DIR")
    m = load_mnist(download=False, verify=False)
    assert m.source == str(checkout)
    assert_same(m, from_checkout)

    monkeypatch.setattr(data, "checkout_data_dir", lambda: None)
    m = load_mnist(download=False, verify=False)
    assert m.source == str(cache_dir)
    assert_same(m, from_cache)


# ---------------------------------------------------------------------------
# Download (file:// mirrors)
# ---------------------------------------------------------------------------


def leftovers(directory):
    return [f for f in os.listdir(directory) if f.endswith(".tmp")]


def test_download_from_file_mirror(tmp_path, monkeypatch):
    mirror, target = tmp_path / "mirror", tmp_path / "target"
    spec, arrays = write_fake_mnist(mirror)
    monkeypatch.setattr(data, "MNIST_FILES", spec)
    m = load_mnist(target, mirrors=(mirror.as_uri() + "/",), timeout=5)
    assert m.source == str(target)
    assert_same(m, arrays)
    assert sorted(os.listdir(target)) == sorted(f"{name}.gz" for name in NAMES)
    # Second call reads the local copies: the mirror is no longer needed.
    for f in mirror.iterdir():
        f.unlink()
    assert_same(load_mnist(target, mirrors=(mirror.as_uri(),)), arrays)


def test_download_goes_to_cache_dir_by_default(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    spec, arrays = write_fake_mnist(mirror)
    monkeypatch.setattr(data, "MNIST_FILES", spec)
    m = load_mnist(mirrors=(mirror.as_uri(),))  # base URL without trailing slash is fine too
    assert m.source == str(default_cache_dir())
    assert_same(m, arrays)


def test_download_fetches_only_missing_files(tmp_path, monkeypatch):
    mirror, target = tmp_path / "mirror", tmp_path / "target"
    spec, arrays = write_fake_mnist(target, gz=False, only={"train_images", "test_images"})
    write_fake_mnist(mirror, only={"train_labels", "test_labels"})
    monkeypatch.setattr(data, "MNIST_FILES", spec)
    assert_same(load_mnist(target, mirrors=(mirror.as_uri(),)), arrays)


def test_bad_mirror_then_good_mirror(tmp_path, monkeypatch):
    bad, good, target = tmp_path / "bad", tmp_path / "good", tmp_path / "target"
    write_fake_mnist(bad, seed=99)  # right names, wrong content
    (bad / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    spec, arrays = write_fake_mnist(good, seed=0)
    monkeypatch.setattr(data, "MNIST_FILES", spec)
    mirrors = (UNREACHABLE, bad.as_uri(), good.as_uri())
    m = load_mnist(target, mirrors=mirrors, timeout=5)
    assert_same(m, arrays)
    assert leftovers(target) == []
    assert len(os.listdir(target)) == 4


def test_no_mirror_works(tmp_path, monkeypatch):
    empty_mirror, bad_mirror = tmp_path / "empty-mirror", tmp_path / "bad-mirror"
    empty_mirror.mkdir()
    write_fake_mnist(bad_mirror, seed=5)  # checksums will not match the real MNIST_FILES
    target, env_dir = tmp_path / "target", tmp_path / "env"
    monkeypatch.setenv("NESTREF_DATA_DIR", str(env_dir))
    mirrors = (empty_mirror.as_uri() + "/", UNREACHABLE, bad_mirror.as_uri() + "/")
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist(target, mirrors=mirrors, timeout=5)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for name in NAMES:
        assert name in message
        assert f"{empty_mirror.as_uri()}/{name}.gz" in message  # attempts and the how-to-fix URLs
        assert f"{bad_mirror.as_uri()}/{name}.gz: checksum mismatch" in message
    # the given directory is the only one searched (and the download target)
    assert str(target) in message and f"Download into {target} failed" in message
    # An unreachable mirror is given up after one attempt: one line, not four.
    assert message.count(UNREACHABLE) == 1
    assert "NESTREF_DATA_DIR" in message and "data_dir=" in message and "--data-dir" in message
    assert leftovers(target) == []
    assert os.listdir(target) == []


def test_download_false_raises_not_found(tmp_path):
    target = tmp_path / "target"
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist(target, download=False)
    message = str(info.value)
    assert all(name in message for name in NAMES)
    assert str(target) in message
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist(download=False)
    assert str(default_cache_dir()) in str(info.value)
    assert "download=False" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in message
    assert not target.exists()  # nothing created when not downloading


# ---------------------------------------------------------------------------
# Real MNIST
# ---------------------------------------------------------------------------


def test_real_mnist_shapes(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_images.dtype == np.uint8
    assert mnist.train_labels.shape == (60000,) and mnist.train_labels.dtype == np.int64
    assert mnist.test_labels.shape == (10000,) and mnist.test_labels.dtype == np.int64


def test_real_mnist_labels(mnist):
    counts = np.bincount(mnist.train_labels, minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist.test_labels, minlength=10).sum() == 10000
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test_labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_real_mnist_pixel_statistics(mnist):
    # Via a histogram of the 256 pixel values, in chunks: exact, and no 376 MB temporary
    # (np.bincount and np.std would each make an 8-byte copy of all 47M pixels).
    chunks = np.array_split(mnist.train_images, 10)
    counts = sum(np.bincount(chunk.ravel(), minlength=256) for chunk in chunks)
    counts = counts.astype(np.float64)
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert round(mean, 4) == 0.1307
    assert round(std, 4) == 0.3081


def test_real_mnist_verifies(mnist_dir):
    # The `mnist` fixture already loads with verify=True; this says so explicitly.
    m = load_mnist(mnist_dir, download=False, verify=True)
    assert m.source == str(mnist_dir)


def test_real_mnist_split_and_scale(mnist):
    tr_x, tr_y, va_x, va_y = train_val_split(mnist.train_images, mnist.train_labels)
    assert tr_x.shape == (55000, 28, 28) and va_x.shape == (5000, 28, 28)
    assert tr_y.shape == (55000,) and va_y.shape == (5000,)
    assert set(np.unique(va_y)) == set(range(10))
    x = scale_pixels(va_x)
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0


# ---------------------------------------------------------------------------
# train_val_split and scale_pixels
# ---------------------------------------------------------------------------


def test_split_sizes_disjoint_and_complete():
    ids = np.arange(100)
    images, labels = ids.reshape(100, 1, 1) * np.ones((1, 2, 2), int), ids % 10
    tr_x, tr_y, va_x, va_y = train_val_split(images, labels, n_val=30, seed=1)
    assert tr_x.shape == (70, 2, 2) and va_x.shape == (30, 2, 2)
    assert tr_y.shape == (70,) and va_y.shape == (30,)
    tr_ids, va_ids = tr_x[:, 0, 0], va_x[:, 0, 0]
    assert set(tr_ids).isdisjoint(va_ids)
    assert sorted(np.concatenate([tr_ids, va_ids]).tolist()) == ids.tolist()
    np.testing.assert_array_equal(tr_y, tr_ids % 10)  # images and labels stay paired
    np.testing.assert_array_equal(va_y, va_ids % 10)
    assert tr_x.dtype == images.dtype and va_y.dtype == labels.dtype


def test_split_is_deterministic():
    x, y = np.arange(1000), np.arange(1000) % 10
    a = train_val_split(x, y, n_val=100, seed=0)
    b = train_val_split(x, y, n_val=100, seed=0)
    c = train_val_split(x, y, n_val=100, seed=1)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("n_val", [0, -1, 10, 11, 2.5, True, "3", None])
def test_split_rejects_bad_n_val(n_val):
    with pytest.raises(ValueError, match="n_val"):
        train_val_split(np.zeros((10, 2)), np.zeros(10), n_val=n_val)


def test_split_accepts_numpy_int_and_rejects_length_mismatch():
    assert len(train_val_split(np.zeros(10), np.zeros(10), n_val=np.int64(3))[2]) == 3
    with pytest.raises(ValueError, match="length"):
        train_val_split(np.zeros(10), np.zeros(9), n_val=3)


def test_scale_pixels():
    x = np.array([[0, 51], [128, 255]], dtype=np.uint8)
    s = scale_pixels(x)
    assert s.dtype == np.float32 and s.shape == x.shape
    np.testing.assert_allclose(s, x / 255.0, rtol=1e-7)
    assert s[0, 0] == 0.0 and s[1, 1] == 1.0
    with pytest.raises(TypeError, match="uint8"):
        scale_pixels(s)
