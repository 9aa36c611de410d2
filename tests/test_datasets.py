"""Any data set: where it is found, how it is recognised and checked, what a run reports."""

import gzip
import hashlib
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nestref.data.datasets as data
from nestref import SOURCE_ROOT
from nestref.cli.main import main
from nestref.data.datasets import (
    MNIST_FILES,
    DataError,
    Dataset,
    load_dataset,
    load_path,
    load_splits,
    write_idx,
)
from nestref.errors import NestrefError
from nestref.nest.accounting import dense_baseline
from nestref.nest.config import SynthesisConfig
from nestref.run.synthesize import load_data, synthesize

NAMES = {key: name for key, (name, _, _) in MNIST_FILES.items()}


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No $NESTREF_DATA_DIR, no checkout copy, an empty cache, no network."""
    monkeypatch.delenv("NESTREF_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "checkout_data_dir", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"test tried to reach the network: {url}")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)


def make_arrays(side=12, classes=3, n_train=300, n_test=60, seed=0, channels=None):
    """A learnable little data set: class k lights up the k-th horizontal band of the image."""
    rng = np.random.default_rng(seed)
    shape = (side, side) if channels is None else (channels, side, side)

    def split(n):
        labels = rng.integers(0, classes, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, *shape)).astype(np.uint8)
        band = side // classes
        for i, k in enumerate(labels):
            images[i, ..., k * band : (k + 1) * band, :] += 180
        return images, labels

    (tx, ty), (vx, vy) = split(n_train), split(n_test)
    return {"train_images": tx, "train_labels": ty, "test_images": vx, "test_labels": vy}


def write_idx_dataset(directory, arrays, gz=True):
    directory.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        write_idx(directory / (NAMES[key] + (".gz" if gz else "")), array)
    return directory


def idx_payload(array):
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}[array.dtype]
    return (
        bytes([0, 0, code, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def pretend_known(monkeypatch, arrays):
    """Make `arrays` the 'MNIST' of MNIST_FILES, so recognition by checksum can be tested small."""
    spec = {
        key: (NAMES[key], len(idx_payload(a)), hashlib.sha256(idx_payload(a)).hexdigest())
        for key, a in arrays.items()
    }
    monkeypatch.setattr(data, "MNIST_FILES", spec)


# --------------------------------------------------------------------------- loading


def test_idx_dataset_of_another_size_and_class_count(tmp_path):
    arrays = make_arrays(side=12, classes=3)
    d = write_idx_dataset(tmp_path / "bands", arrays)
    ds = load_dataset(d)
    assert isinstance(ds, Dataset) and ds.name == "bands" and ds.source == str(d)
    assert ds.image_shape == (12, 12) and ds.classes == 3
    assert ds.train_labels.dtype == np.int64 and not ds.train_images.flags.writeable
    np.testing.assert_array_equal(ds.train_images, arrays["train_images"])
    # the checksum is the payloads', so raw and gzip copies of the same arrays agree
    raw = load_dataset(write_idx_dataset(tmp_path / "raw", arrays, gz=False))
    assert raw.checksum == ds.checksum and len(ds.checksum) == 64
    other = load_dataset(write_idx_dataset(tmp_path / "other", make_arrays(seed=1)))
    assert other.checksum != ds.checksum


def test_npz_dataset(tmp_path):
    arrays = make_arrays(side=10, classes=4, channels=3)
    path = tmp_path / "colour.npz"
    np.savez(
        path,
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"].astype(np.int64),
    )
    ds = load_dataset(path)
    assert (ds.name, ds.image_shape, ds.classes, ds.source) == ("colour", (3, 10, 10), 4, str(path))
    # the same arrays as IDX files have the same checksum
    assert load_dataset(write_idx_dataset(tmp_path / "idx", arrays)).checksum == ds.checksum


def test_known_dataset_recognised_by_its_digests_in_any_format(tmp_path, monkeypatch):
    arrays = make_arrays(side=28, classes=10, n_train=40, n_test=20)
    pretend_known(monkeypatch, arrays)
    d = write_idx_dataset(tmp_path / "not-called-mnist", arrays)
    assert load_dataset(d).name == "mnist"
    path = tmp_path / "keras.npz"
    np.savez(
        path,
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"],
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"],
    )
    assert load_dataset(path).name == "mnist"
    assert load_dataset(path).checksum == load_dataset(d).checksum


def test_another_dataset_in_a_directory_called_mnist_does_not_pass_for_mnist(tmp_path):
    ds = load_dataset(write_idx_dataset(tmp_path / "mnist", make_arrays()))
    assert ds.name == "mnist-custom"


def test_a_dataset_derived_from_mnist_is_its_own_not_a_corrupt_mnist(tmp_path, monkeypatch):
    """Same labels, other images (inverted, say): a data set of its own, loaded under its own
    name, never refused as a damaged MNIST nor reported as MNIST."""
    arrays = make_arrays(side=28, classes=10, n_train=40, n_test=20)
    pretend_known(monkeypatch, arrays)
    derived = {**arrays, "train_images": 255 - arrays["train_images"],
               "test_images": 255 - arrays["test_images"]}
    for place in (write_idx_dataset(tmp_path / "inverted", derived),
                  write_idx_dataset(tmp_path / "mnist", derived)):
        ds = load_dataset(place)
        assert ds.name == {"inverted": "inverted", "mnist": "mnist-custom"}[place.name]
        np.testing.assert_array_equal(ds.train_images, derived["train_images"])
        assert ds.checksum != load_dataset(write_idx_dataset(tmp_path / "m", arrays)).checksum
    np.savez(tmp_path / "inverted.npz", x_train=derived["train_images"],
             y_train=arrays["train_labels"], x_test=derived["test_images"],
             y_test=arrays["test_labels"])
    assert load_dataset(tmp_path / "inverted.npz").name == "inverted"
    # MNIST where nestref finds it itself is still checked file by file
    d = write_idx_dataset(tmp_path / "found" / "mnist", derived)
    with pytest.raises(data.IDXError, match="checksum mismatch.*download it again"):
        data.load_mnist(d, download=False)


BAD = {
    "negative label": (
        lambda a: {**a, "train_labels": a["train_labels"].astype(np.int8) - 1},
        "labels must be 0..classes-1, found -1",
    ),
    "test label beyond the training classes": (
        lambda a: {
            **a,
            "test_labels": np.where(
                np.arange(len(a["test_labels"])) == 0, 7, a["test_labels"]
            ).astype(np.uint8),
        },
        "label 7 is outside 0..2",
    ),
    "float images outside [0, 1]": (
        lambda a: {**a, "train_images": a["train_images"].astype(np.float32)},
        r"float images must be within \[0, 1\] \(found 0..2[0-9][0-9]\); store uint8",
    ),
    "NaN images": (
        lambda a: {**a, "train_images": np.full(a["train_images"].shape, np.nan, np.float32)},
        r"float images must be finite; 43,200 values are NaN or infinite",
    ),
    "1-based labels": (
        lambda a: {**a, "train_labels": a["train_labels"] + 1, "test_labels": a["test_labels"] + 1},
        r"class\(es\) 0 of 0..3 have none \(labels 1..K\? subtract 1\)",
    ),
    "a stray label": (
        lambda a: {**a, "train_labels": np.where(np.arange(len(a["train_labels"])) == 0, 9,
                                                 a["train_labels"]).astype(np.uint8)},
        r"class\(es\) 3, 4, 5, 6, 7, 8 of 0..9 have none",
    ),
    "a label no image count could reach": (
        lambda a: {**a, "train_labels": np.where(np.arange(len(a["train_labels"])) == 0, 10**9,
                                                 a["train_labels"].astype(np.int32))},
        "label 1000000000 with only 300 training images",
    ),
    "train and test image shapes differ": (
        lambda a: {**a, "test_images": a["test_images"][:, :10, :10].copy()},
        "differ in shape",
    ),
    "count mismatch": (
        lambda a: {**a, "train_labels": a["train_labels"][:-1].copy()},
        "299 labels",
    ),
    "flat images": (
        lambda a: {**a, "train_images": a["train_images"].reshape(300, -1).copy()},
        "expected images of shape",
    ),
    "int32 images": (
        lambda a: {**a, "train_images": a["train_images"].astype(np.int32)},
        "dtype int32",
    ),
    "one class only": (
        lambda a: {
            **a,
            "train_labels": np.zeros(300, np.uint8),
            "test_labels": np.zeros(60, np.uint8),
        },
        "at least 2 classes",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_dataset_is_refused_with_a_named_error(tmp_path, case):
    change, expected = BAD[case]
    d = write_idx_dataset(tmp_path / "d", change(make_arrays()))
    with pytest.raises(DataError, match=expected):
        load_dataset(d)


def test_npz_problems(tmp_path):
    arrays = make_arrays()
    path = tmp_path / "part.npz"
    np.savez(path, x_train=arrays["train_images"], y_train=arrays["train_labels"])
    with pytest.raises(DataError, match="missing array.*x_test, y_test"):
        load_dataset(path)
    path = tmp_path / "float.npz"
    np.savez(
        path,
        x_train=arrays["train_images"] * 1.0,
        y_train=arrays["train_labels"],
        x_test=arrays["test_images"] / 255.0,
        y_test=arrays["test_labels"],
    )
    with pytest.raises(DataError, match="within \\[0, 1\\]"):
        load_dataset(path)
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(path)
    objects = tmp_path / "objects.npz"
    np.savez(
        objects,
        x_train=np.array([None, 1], dtype=object),
        y_train=arrays["train_labels"],
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"],
    )
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(objects)


def test_unreadable_file_is_a_data_error_not_a_permission_traceback(tmp_path, monkeypatch):
    d = write_idx_dataset(tmp_path / "d", make_arrays())
    real_open = open

    def no_permission(path, *args, **kwargs):
        if str(path).endswith(NAMES["test_labels"] + ".gz"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_permission)
    with pytest.raises(
        DataError, match="cannot read the file \\(Permission denied\\).*chmod"
    ) as info:
        load_dataset(d)
    assert NAMES["test_labels"] in str(info.value)
    code = main(["train", "--data-dir", str(d), "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "run" / "model.npz")])
    assert code == 1  # a data problem (see nestref.errors: exit codes)


# --------------------------------------------------------------------------- search order


def test_search_order(tmp_path, monkeypatch):
    given_dir = write_idx_dataset(tmp_path / "given", make_arrays(seed=1))
    env_dir = write_idx_dataset(tmp_path / "env", make_arrays(seed=2))
    # MNIST's places hold MNIST-shaped (fake) files
    checkout = write_idx_dataset(tmp_path / "checkout", make_arrays(28, 10, 40, 20, seed=3))
    cache = write_idx_dataset(data.default_cache_dir(), make_arrays(28, 10, 40, 20, seed=4))
    monkeypatch.setenv("NESTREF_DATA_DIR", str(env_dir))
    monkeypatch.setattr(data, "checkout_data_dir", lambda: checkout)
    assert load_dataset(given_dir).source == str(given_dir)
    assert load_dataset().source == str(env_dir)
    monkeypatch.delenv("NESTREF_DATA_DIR")
    # without the environment variable, MNIST's places: the checkout, then the cache
    assert load_mnist_source(monkeypatch) == str(checkout)
    monkeypatch.setattr(data, "checkout_data_dir", lambda: None)
    assert load_mnist_source(monkeypatch) == str(cache)


def load_mnist_source(monkeypatch):
    """load_dataset() with MNIST's checksums switched off for the fake files (verify=False)."""
    real = data.load_mnist
    monkeypatch.setattr(data, "load_mnist", lambda *a, **k: real(*a, **{**k, "verify": False}))
    try:
        return load_dataset(download=False).source
    finally:
        monkeypatch.setattr(data, "load_mnist", real)


@pytest.mark.parametrize("origin", ["argument", "environment"])
def test_a_given_place_that_is_not_a_dataset_is_an_error_never_a_fall_back(
    tmp_path, monkeypatch, origin
):
    write_idx_dataset(data.default_cache_dir(), make_arrays())  # a fall-back that must not be used
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.txt").write_text("hello")
    for target in (tmp_path / "mnsit", tmp_path / "empty", tmp_path / "x.txt"):
        if origin == "environment":
            monkeypatch.setenv("NESTREF_DATA_DIR", str(target))
            call, named = (lambda: load_dataset()), "NESTREF_DATA_DIR"
        else:
            call, named = (lambda target=target: load_dataset(target)), "--data-dir"
        with pytest.raises(DataError) as info:
            call()
        assert str(target) in str(info.value) and named in str(info.value)


def test_cli_names_the_misspelt_data_dir_and_the_flag(tmp_path, capsys):
    code = main(
        [
            "synthesize",
            "--data-dir",
            str(tmp_path / "mnsit"),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "mnsit" in err and "--data-dir" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_not_found_message_names_the_cli_flag(tmp_path, monkeypatch):
    with pytest.raises(data.MNISTNotFoundError) as info:
        load_dataset(download=False)
    assert isinstance(info.value, NestrefError) and isinstance(info.value, FileNotFoundError)
    assert "--data-dir" in str(info.value) and "NESTREF_DATA_DIR" in str(info.value)


def test_the_checkout_holds_mnist():
    root = SOURCE_ROOT
    for name, size, sha256 in MNIST_FILES.values():
        payload = gzip.decompress((root / "data" / "mnist" / f"{name}.gz").read_bytes())
        assert len(payload) == size and hashlib.sha256(payload).hexdigest() == sha256


# --------------------------------------------------------------------------- tampering


def _tamper(raw, kind, position, value):
    position %= max(1, len(raw))
    if kind == "truncate":
        return raw[:position]
    if kind == "append":
        return raw + bytes([value]) * (1 + position % 7)
    if kind == "header byte":
        i = position % min(len(raw), 16)
        return raw[:i] + bytes([(raw[i] + 1 + value % 255) % 256]) + raw[i + 1 :]
    i = position
    return raw[:i] + bytes([raw[i] ^ (1 + value % 255)]) + raw[i + 1 :]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(sorted(NAMES)),
    kind=st.sampled_from(["truncate", "append", "header byte", "flip"]),
    position=st.integers(0, 10**6),
    value=st.integers(0, 255),
    gz=st.booleans(),
)
def test_tampered_idx_gives_a_named_error_or_a_valid_dataset(
    tmp_path_factory, key, kind, position, value, gz
):
    arrays = make_arrays(side=8, classes=3, n_train=30, n_test=12)
    d = write_idx_dataset(tmp_path_factory.mktemp("tamper"), arrays, gz=False)
    path = d / NAMES[key]
    tampered = _tamper(path.read_bytes(), kind, position, value)
    path.write_bytes(gzip.compress(tampered) if gz else tampered)
    try:
        ds = load_path(d)
    except DataError as err:  # IDXError is one
        assert str(d) in str(err) or "train and test" in str(err)
        return
    # what loads is a consistent data set (a flipped pixel is another data set, and says so)
    assert kind in ("flip", "header byte")
    assert ds.train_images.shape[1:] == ds.test_images.shape[1:]
    assert len(ds.train_images) == len(ds.train_labels) and len(ds.test_images) == len(
        ds.test_labels
    )
    assert ds.train_labels.min() >= 0 and ds.test_labels.max() < ds.classes
    assert (
        ds.checksum
        != load_path(write_idx_dataset(tmp_path_factory.mktemp("clean"), arrays)).checksum
    )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(sorted(NAMES)),
    kind=st.sampled_from(["truncate", "append"]),
    position=st.integers(0, 10**6),
    value=st.integers(0, 255),
)
def test_truncated_or_extended_idx_is_always_refused(tmp_path_factory, key, kind, position, value):
    d = write_idx_dataset(
        tmp_path_factory.mktemp("tamper"), make_arrays(side=8, n_train=30, n_test=12), gz=False
    )
    path = d / NAMES[key]
    raw = path.read_bytes()
    path.write_bytes(_tamper(raw, kind, position % len(raw), value))
    with pytest.raises(data.IDXError) as info:
        load_path(d)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- splits and a run


def test_one_splitting_function_for_train_and_synthesize(tmp_path):
    d = write_idx_dataset(tmp_path / "bands", make_arrays())
    splits = load_splits(d, n_val=50, seed=0, train_limit=200)
    config = SynthesisConfig(data_dir=str(d), n_val=50, train_limit=200)
    same = load_data(config)
    for part in ("train", "val", "test"):
        for a, b in zip(splits[part], same[part], strict=True):
            np.testing.assert_array_equal(a, b)
    assert (
        len(splits["train"][0]) == 150
        and splits["classes"] == 3
        and splits["image_shape"] == (12, 12)
    )
    with pytest.raises(DataError, match="n_val=200 leaves no training images"):
        load_splits(d, n_val=200, train_limit=200)


TINY = dict(
    n_val=60,
    initial_epochs=1,
    growth_epochs=1,
    max_growth_rounds=1,
    patience=5,
    growth_batch_size=100,
    growth_batches=2,
    prune_epochs=1,
    max_prune_rounds=2,
    finetune_epochs=1,
    settle_epochs=1,
    max_error_increase=1.0,
    prune_floor_params=10,
    batch_size=50,
    width_scale=0.2,
    density=0.3,
)


@pytest.mark.slow
def test_generated_idx_dataset_runs_through_synthesize(tmp_path, capsys):
    d = write_idx_dataset(
        tmp_path / "bands16", make_arrays(side=16, classes=4, n_train=400, n_test=80)
    )
    out = tmp_path / "run"
    args = [
        "synthesize",
        "--arch",
        "lenet5",
        "--data-dir",
        str(d),
        "--out",
        str(out),
        "--no-progress",
    ]
    for key, value in {
        **TINY,
        "lr": 0.02,
        "prune_lr": 0.01,
        "augment": False,
        "prune_fractions": [0.05, 0.1, 0.2, 0.05],
    }.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    ds = load_dataset(d)
    assert report["data"] == {**ds.describe(), "image_shape": [16, 16]}
    assert report["data"]["name"] == "bands16" and f"sha256 {ds.checksum}" in printed
    assert report["widths"][-1] == 4  # the output width is the data's class count
    assert report["dense_baseline"] == dense_baseline("lenet5", image_shape=(16, 16), classes=4)
    assert "| paper |" not in printed  # the paper measured on MNIST: its rows are not shown beside
    assert report["test_error"] < 0.75  # chance is 0.75 on four balanced classes


def test_resume_refuses_another_data_set(tmp_path):
    first = write_idx_dataset(tmp_path / "first", make_arrays(seed=1))
    second = write_idx_dataset(tmp_path / "second", make_arrays(seed=2))
    settings = {**TINY, "max_prune_rounds": 1, "prune_fractions": [0.2, 0.2, 0.1], "n_val": 60}
    config = SynthesisConfig(data_dir=str(first), **settings)
    synthesize(config, tmp_path / "run")
    again = SynthesisConfig(data_dir=str(second), **settings)
    with pytest.raises(ValueError, match="another data set"):
        synthesize(again, tmp_path / "run", resume=True)
    # the same data from another place resumes (the place is not part of what the run is)
    moved = write_idx_dataset(tmp_path / "moved", make_arrays(seed=1), gz=False)
    synthesize(SynthesisConfig(data_dir=str(moved), **settings), tmp_path / "run", resume=True)


def test_augmentation_takes_any_image_size_and_channels():
    from nestref.core.augment import random_affine

    rng = np.random.default_rng(0)
    colour = rng.random((4, 3, 10, 12)).astype(np.float32)
    out = random_affine(colour, np.random.default_rng(1))
    assert out.shape == colour.shape and not np.allclose(out, colour)
    # every channel of an image moves alike: a grey image stays grey
    grey = np.repeat(rng.random((4, 1, 10, 12)).astype(np.float32), 3, axis=1)
    warped = random_affine(grey, np.random.default_rng(1))
    np.testing.assert_array_equal(warped[:, 0], warped[:, 2])
    with pytest.raises(ValueError, match="not a square one-channel image"):
        random_affine(rng.random((2, 300)).astype(np.float32), rng)
