"""The command line on bad input, run as a user runs it: a subprocess, its exit code and what it
prints.

Every error ends with one line naming the problem and the fix, no traceback (``--debug``
shows one), and the exit code of its kind: 2 the command must change, 1 a file or the
run failed. Nothing here reads MNIST: each case fails before the data would be loaded,
which is the point (fail early).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nestref.cli.main import main
from nestref.core.optim import SGD
from nestref.data import storage
from nestref.nest.networks import lenet_300_100
from nestref.run.checkpoint import save_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]


def nestref(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MPLBACKEND": "Agg",
           "NESTREF_DATA_DIR": str(cwd / "no-data-here"), "XDG_CACHE_HOME": str(cwd / "cache")}
    done = subprocess.run([sys.executable, "-m", "nestref", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def fails_clearly(result, code, *phrases):
    rc, out, err = result
    assert rc == code, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 1, err
    # one message, which may list several fields on its own lines
    message = err[err.index("error: "):]
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    return message


def train_checkpoint(path, arch_state="lenet-300-100"):
    net = lenet_300_100(width_scale=0.05)
    save_checkpoint(path, net, SGD(net, lr=0.05, momentum=0.9),
                    {"epoch": 1, "records": [], "rng": np.random.default_rng(0).bit_generator.state,
                     "arch": arch_state, "settings": {"width_scale": 0.05}})


@pytest.mark.parametrize(
    "content, phrase", [("[1, 2]", "top level must be an object"), ('{"lr": -1}', "lr=-1")]
)
def test_bad_config_files(tmp_path, content, phrase):
    (tmp_path / "c.json").write_text(content)
    fails_clearly(
        nestref("synthesize", "--config", "c.json", "--out", "run", cwd=tmp_path),
        2,
        "c.json",
        phrase,
    )
    assert not (tmp_path / "run").exists()


def test_config_that_is_a_directory_and_bad_set_values(tmp_path):
    (tmp_path / "configs").mkdir()
    fails_clearly(
        nestref("synthesize", "--config", "configs", cwd=tmp_path), 2, "configs is a directory"
    )
    fails_clearly(nestref("synthesize", "--set", "prune_fractions=[0.1]", cwd=tmp_path), 2,
                  "prune_fractions", "3 numbers for lenet-300-100")


def test_out_into_a_directory_of_other_files_is_refused_and_untouched(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "report.json").write_text("my own report")
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    fails_clearly(
        nestref("synthesize", "--out", "mine", cwd=tmp_path), 2, "(report.json)",
        "would write over them", "another directory",
    )
    fails_clearly(nestref("synthesize", "--out", "mine", "--overwrite", cwd=tmp_path), 2,
                  "(report.json)", "would write over them")
    (tmp_path / "mine" / "report.json").rename(tmp_path / "mine" / "my_report.json")
    fails_clearly(nestref("synthesize", "--out", "mine", cwd=tmp_path), 2, "my_report.json",
                  "notes.txt", "another directory", "--overwrite")
    assert (tmp_path / "mine" / "my_report.json").read_text() == "my own report"
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my notes"


def test_a_run_with_a_checkpoint_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "run").mkdir()
    train_checkpoint(tmp_path / "run" / "checkpoint.npz")
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    fails_clearly(nestref("synthesize", "--out", "run", cwd=tmp_path), 2, "--resume", "--overwrite")
    # a train checkpoint is not a synthesis checkpoint: resume says so, before any data is read
    fails_clearly(
        nestref("synthesize", "--out", "run", "--resume", cwd=tmp_path),
        1,
        "checkpoint.npz",
        "not a synthesis checkpoint",
    )
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before


def test_a_corrupt_checkpoint_without_a_previous_one_is_named(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.npz").write_bytes(b"PK\x03\x04 half a file")
    fails_clearly(
        nestref("synthesize", "--out", "run", "--resume", cwd=tmp_path), 1, "run/checkpoint.npz"
    )


def test_unwritable_out_fails_before_training(tmp_path):
    (tmp_path / "afile").write_text("x")
    fails_clearly(
        nestref("synthesize", "--out", "afile/run", cwd=tmp_path), 2, "afile", "regular file"
    )
    fails_clearly(
        nestref("train", "--out", "afile/model.npz", cwd=tmp_path), 2, "afile", "not a directory"
    )
    if os.geteuid() != 0:  # root writes through read-only permissions
        (tmp_path / "ro").mkdir(mode=0o555)
        fails_clearly(nestref("synthesize", "--out", "ro/run", cwd=tmp_path), 2, "cannot write")


def test_an_out_that_refuses_writes_is_named_before_training(tmp_path, monkeypatch, capsys):
    # the permission test above cannot fail as root (CI runs as root): here the directory
    # refuses the probe file whoever runs the test
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(storage.tempfile, "TemporaryFile", refuse)
    assert main(["synthesize", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to --out" in err and "Permission denied" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    ],
)
def test_train_refuses_bad_numbers(tmp_path, args, phrase):
    line = fails_clearly(nestref("train", "--out", "m.npz", *args, cwd=tmp_path), 2, phrase)
    assert "model:" not in line and not (tmp_path / "m.npz").exists()


def test_train_resume_with_another_arch_names_both(tmp_path):
    train_checkpoint(tmp_path / "m.npz")
    fails_clearly(
        nestref("train", "--resume", "--arch", "lenet5", "--out", "m.npz", cwd=tmp_path),
        2,
        "lenet-300-100",
        "lenet5",
    )
    fails_clearly(
        nestref("train", "--resume", "--width-scale", "0.5", "--out", "m.npz", cwd=tmp_path),
        2,
        "--width-scale",
        "0.05",
        "0.5",
    )


def test_train_does_not_replace_a_checkpoint_or_a_foreign_file(tmp_path):
    train_checkpoint(tmp_path / "m.npz")
    before = (tmp_path / "m.npz").read_bytes()
    fails_clearly(nestref("train", "--out", "m.npz", cwd=tmp_path), 2, "--resume", "--overwrite")
    assert (tmp_path / "m.npz").read_bytes() == before
    (tmp_path / "thesis.npz").write_text("not nestref's")
    fails_clearly(
        nestref("train", "--out", "thesis.npz", "--overwrite", cwd=tmp_path),
        2,
        "not a nestref checkpoint",
    )
    assert (tmp_path / "thesis.npz").read_text() == "not nestref's"


def test_report_of_missing_or_incomplete_runs(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text(
        json.dumps({"arch": "lenet-300-100", "test_error": 0.02})
    )
    fails_clearly(nestref("report", "run", cwd=tmp_path), 1, "run/report.json", "'mode'")
    (tmp_path / "run" / "report.json").write_text("[]")
    fails_clearly(nestref("report", "run", cwd=tmp_path), 1, "top level")


def test_debug_shows_the_traceback_and_usage_errors_exit_2(tmp_path):
    rc, _, err = nestref("report", "nowhere", "--debug", cwd=tmp_path)
    assert rc == 1 and "Traceback" in err and "ReportError" in err
    rc, _, err = nestref("train", "--epochs", "many", cwd=tmp_path)
    assert rc == 2 and "invalid int value" in err and "Traceback" not in err


def test_a_network_too_large_for_memory_is_one_line(tmp_path, mnist_dir):
    fails_clearly(nestref("train", "--arch", "mlp:784-999999999-10", "--epochs", "1",
                          "--data-dir", str(mnist_dir), cwd=tmp_path),
                  1, "out of memory", "smaller layer sizes")
