"""Shared fixtures: where the real MNIST is, MNIST itself (loaded once per test session), no
data."""

import os
from pathlib import Path

import pytest

from nestref.data.datasets import MNIST_FILES, load_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]


def _holds_mnist(directory: Path) -> bool:
    return all(
        (directory / name).is_file() or (directory / f"{name}.gz").is_file()
        for name, _, _ in MNIST_FILES.values()
    )


@pytest.fixture(autouse=True)
def _work_in_a_temporary_directory(tmp_path_factory, monkeypatch):
    """Every test runs in an empty temporary directory of its own: a command's default output
    (runs/..., figures/...) lands there, never in the repository or the user's directory."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """A directory holding the real MNIST files: $NESTREF_DATA_DIR, else the repository's
    data/mnist.

    Skips the test if neither has them, or fails it if NESTREF_REQUIRE_MNIST=1
    (CI sets that, so the real-data tests cannot silently vanish there).
    """
    candidates = []
    if os.environ.get("NESTREF_DATA_DIR"):
        candidates.append(Path(os.environ["NESTREF_DATA_DIR"]).expanduser())
    candidates.append(REPO_ROOT / "data" / "mnist")
    for directory in candidates:
        if _holds_mnist(directory):
            return directory
    message = "real MNIST not found; looked in: " + ", ".join(str(d) for d in candidates)
    if os.environ.get("NESTREF_REQUIRE_MNIST") == "1":
        pytest.fail(message + " (NESTREF_REQUIRE_MNIST=1, so this is an error)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """The real MNIST (an `nestref.data.datasets.MNIST`, read-only arrays), verified against its
    checksums."""
    return load_mnist(mnist_dir, download=False)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No MNIST anywhere (no $NESTREF_DATA_DIR, no checkout copy, an empty cache) and no
    network: every download attempt fails at once."""
    import urllib.error

    monkeypatch.delenv("NESTREF_DATA_DIR", raising=False)
    monkeypatch.setattr("nestref.data.datasets.checkout_data_dir", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def refuse(url, timeout=None):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("nestref.data.datasets.urllib.request.urlopen", refuse)
