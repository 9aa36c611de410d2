"""Faults a user meets outside the happy path, each ending in one line that names the file, the
problem and a fix, with nothing lost: two writers of one output, an unfinished run taken as
finished, a default output that is somebody's file, a full disk, a closed pipe, channels-last
images, a YAML config, an unreadable directory.

Every test runs in a temporary directory of its own (tests/conftest.py), so a command's default
output lands there.
"""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_study import synthetic_rows

from nestref.cli.main import main, train_default_out
from nestref.data import storage
from nestref.data.datasets import load_dataset
from nestref.errors import DataError, DiskFullError, ModelFileError, OutputInUseError, one_line
from nestref.nest.networks import build
from nestref.run import export
from nestref.run.checkpoint import save_checkpoint
from nestref.run.run_files import LOCK, RUN_MARKER, check_run_dir, remove_interrupted_writes

REPO_ROOT = Path(__file__).resolve().parents[1]


def the_error(capsys):
    """The one error line a command printed (and no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def a_dead_pid():
    """The pid of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def write_lock(path, pid):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "since": "then"}))


# ------------------------------------------------------------------ default outputs
def test_train_does_not_default_to_the_run_directory_synthesize_writes(tmp_path, offline, capsys):
    """synthesize's default run of lenet-300-100 is runs/lenet-300-100/; train's checkpoint goes
    elsewhere, and train refuses to write into a synthesize run (it would replace its model)."""
    run = Path("runs/lenet-300-100")
    run.mkdir(parents=True)
    (run / RUN_MARKER).write_text("{}")
    (run / "model.npz").write_bytes(b"the synthesized model")
    assert train_default_out("lenet-300-100").parent != run
    # no data anywhere: exit 1 (the data), not 2 (an output refused)
    assert main(["train", "--epochs", "1", "--no-progress"]) == 1
    assert "MNIST not found" in the_error(capsys)
    for flags in ([], ["--overwrite"]):
        assert main(["train", "--out", str(run / "model.npz"), "--epochs", "1", *flags]) == 2
        line = the_error(capsys)
        assert "run directory of a `nestref synthesize` run" in line
        assert "choose another --out" in line
    assert (run / "model.npz").read_bytes() == b"the synthesized model"


def test_study_defaults_never_write_the_committed_rows_or_figure(tmp_path, monkeypatch, capsys):
    from nestref.cli import study as cli_study
    from nestref.tools import study
    ran = []
    monkeypatch.setattr(cli_study, "run_grid", lambda *args, **kwargs: ran.append(args))
    assert main(["study", "run", "--arch", "lenet5", "--quick"]) == 0
    runs_dir, rows_path = ran[0][3], ran[0][4]
    assert Path(runs_dir) == study.QUICK_RUNS and Path(rows_path) == study.QUICK_RUNS / "runs.json"
    assert main(["study", "run", "--arch", "lenet5"]) == 0
    assert Path(ran[1][4]) == study.DEFAULT_RUNS / "runs.json" != study.DEFAULT_ROWS
    assert "nestref study table --rows runs/study/runs.json" in capsys.readouterr().out
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(synthetic_rows()))
    assert main(["study", "table", "--rows", str(rows)]) == 0
    assert study.DEFAULT_FIGURE.is_file() and not Path("figures").exists()
    assert main(["study", "table", "--rows", str(rows), "--figure", "mine/f.png"]) == 0
    assert Path("mine/f.png").is_file()


# ------------------------------------------------------------------ one writer per output
def test_a_second_writer_of_one_output_is_refused_by_name(tmp_path):
    lock = tmp_path / "run" / LOCK
    with storage.hold_lock(lock, "run directory run"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputInUseError, match=f"run directory run is in use: process "
                                                   f"{os.getpid()}"):
            with storage.hold_lock(lock, "run directory run"):
                pass
    assert not lock.exists() and not lock.parent.exists()  # it made the directory, and removed it


def test_synthesize_and_train_refuse_an_output_another_process_writes(tmp_path, offline, capsys):
    run, model = tmp_path / "run", tmp_path / "dense" / "model.npz"
    for lock in (run / LOCK, model.with_name("model.npz.lock")):
        write_lock(lock, os.getpid())  # a live process: this one
    assert main(["synthesize", "--out", str(run)]) == 2
    line = the_error(capsys)
    assert f"run directory {run} is in use" in line and f"delete {run / LOCK}" in line
    assert main(["train", "--out", str(model), "--epochs", "1"]) == 2
    assert f"--out {model} is in use" in the_error(capsys)


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, offline, capsys):
    run, model = tmp_path / "run", tmp_path / "dense" / "model.npz"
    for lock in (run / LOCK, model.with_name("model.npz.lock")):
        write_lock(lock, a_dead_pid())
    # the run goes on until the data is missing (exit 1), and leaves no lock behind
    assert main(["synthesize", "--out", str(run), "--no-progress"]) == 1
    assert "MNIST not found" in the_error(capsys) and not (run / LOCK).exists()
    assert main(["train", "--out", str(model), "--epochs", "1", "--no-progress"]) == 1
    assert "MNIST not found" in the_error(capsys)
    assert not model.with_name("model.npz.lock").exists()


# ------------------------------------------------------------------ interrupted writes
def test_a_write_cut_short_never_blocks_the_rerun(tmp_path):
    """kill -9 while a run writes its first checkpoint: the marker and a temporary file are
    left; the same command (with or without --resume) starts the run, and the file goes."""
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_MARKER).write_text("{}")
    left = run / ".checkpoint.npz.x1y2z3.tmp"
    left.write_bytes(b"half a checkpoint")
    assert check_run_dir(run, resume=True) is False
    assert check_run_dir(run) is False
    remove_interrupted_writes(run)
    assert not left.exists() and (run / RUN_MARKER).exists()


# ------------------------------------------------------------------ unfinished runs
def unfinished_run(tmp_path, phase, report=False):
    run = tmp_path / phase
    net = build("mlp:784-10", seed=0)
    save_checkpoint(run / "checkpoint.npz", net, None,
                    {"run": {"phase": phase, "round": 2},
                     "config": {"arch": "mlp:784-10", "mode": "nest"}})
    if report:
        (run / "report.json").write_text("{}")
    return run


def test_export_and_predict_refuse_an_unfinished_run_unless_asked(tmp_path, capsys):
    images = tmp_path / "images.npy"
    np.save(images, np.zeros((3, 28, 28), np.uint8))
    grow = unfinished_run(tmp_path, "grow")
    assert main(["predict", str(grow), str(images)]) == 1
    line = the_error(capsys)
    assert "unfinished run: it stopped in its grow phase (round 2)" in line
    assert f"nestref synthesize --arch mlp:784-10 --mode nest --out {grow} --resume" in line
    assert "--unfinished" in line
    assert main(["predict", str(grow), str(images), "--unfinished"]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 3 and all(0 <= int(c) < 10 for c in printed)
    with pytest.raises(ModelFileError, match="before writing report.json"):
        export.load_network(unfinished_run(tmp_path, "done"))
    export.load_network(unfinished_run(tmp_path, "done", report=True) / "checkpoint.npz")
    pytest.importorskip("onnx")
    assert main(["export", str(grow), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "grow phase" in the_error(capsys) and not (tmp_path / "m.onnx").exists()
    assert main(["export", str(grow), "--onnx", str(tmp_path / "m.onnx"), "--unfinished"]) == 0


def test_a_damaged_checkpoint_of_a_run_given_by_its_directory_says_how_to_mend_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"damaged")
    with pytest.raises(ModelFileError) as info:
        export.load_network(run)
    message = str(info.value)
    assert "pass the run directory" not in message
    assert f"nestref synthesize --resume --out {run}" in message
    with pytest.raises(ModelFileError, match=f"pass the run directory {run} instead"):
        (run / "model.npz").write_bytes(b"a compact model")
        (run / "checkpoint.npz").unlink()
        save_checkpoint(run / "checkpoint.npz", build("mlp:784-10", seed=0))
        export.load_network(run / "model.npz")


# ------------------------------------------------------------------ messages
def test_a_full_disk_names_the_file_and_the_fix(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.os, "fsync", no_space)
    with pytest.raises(DiskFullError) as info:
        storage.save_json(tmp_path / "run" / "report.json", {"a": 1})
    line = one_line(info.value)
    assert line.startswith(f"cannot write {tmp_path / 'run' / 'report.json'}: the disk is full")
    assert "free space" in line and "--resume" in line
    assert not list((tmp_path / "run").iterdir())  # no half-written file left
    bare = one_line(OSError(errno.ENOSPC, "No space left on device", "fig.png"))
    assert bare.startswith("cannot write fig.png: the disk is full") and "free space" in bare


def test_a_closed_pipe_is_no_error(tmp_path):
    """`nestref predict RUN IMAGES | head -1`: head stops reading; nestref ends quietly, rc 0."""
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.npz", build("mlp:784-10", seed=0))
    np.save(tmp_path / "images.npy", np.zeros((100_000, 28, 28), np.uint8))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    reader = subprocess.Popen([sys.executable, "-m", "nestref", "predict", str(run),
                               str(tmp_path / "images.npy")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
    reader.stdout.readline()
    reader.stdout.close()  # as head does after its lines
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 0 and err == "", err


def test_channels_last_images_are_told_to_transpose(tmp_path):
    x = np.zeros((6, 28, 28, 1), np.uint8)
    y = np.arange(6) % 2
    np.savez(tmp_path / "hwc.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"channels last \(N, H, W, C\).*transpose to "
                                        r"\(N, C, H, W\) = \(6, 1, 28, 28\).*"
                                        r"np.transpose\(x, \(0, 3, 1, 2\)\)"):
        load_dataset(tmp_path / "hwc.npz")
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.npz", build("lenet5", width_scale=0.2, seed=0))
    with pytest.raises(DataError, match="channels last.*transpose"):
        export.predict_logits(run, x)


def test_a_config_not_in_toml_or_json_says_what_a_config_is(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("lr: 0.05\n")
    (tmp_path / "c").write_text("lr = 0.05\n")
    assert main(["synthesize", "--config", str(tmp_path / "c.yaml")]) == 2
    line = the_error(capsys)
    assert "c.yaml is YAML" in line and "TOML (.toml" in line and '{"lr": 0.05}' in line
    assert main(["synthesize", "--config", str(tmp_path / "c")]) == 2
    line = the_error(capsys)
    assert "is not valid JSON" in line and "c.toml" in line and '{"lr": 0.05}' in line


def test_an_unreadable_directory_is_named_with_a_fix(tmp_path, monkeypatch, capsys):
    """(As root nothing is unreadable, so the refusal is made by hand.)"""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    real_is_file = Path.is_file

    def refused(path):
        if path.parent == data_dir:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(Path, "is_file", refused)
    assert main(["train", "--data-dir", str(data_dir), "--out", str(tmp_path / "m.npz")]) == 1
    line = the_error(capsys)
    assert f"{data_dir}: cannot read the directory" in line and f"chmod u+rx {data_dir}" in line
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(Path, "iterdir", lambda path: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied", str(path))))
    assert main(["synthesize", "--out", str(run)]) == 2
    line = the_error(capsys)
    assert f"cannot read the directory {run}" in line and "chmod -R u+rwx" in line




def test_a_checkpoint_whose_array_header_breaks_off_is_named_not_a_traceback(tmp_path):
    """A flipped byte can cut a .npy header's dict short; numpy's parser then raises
    tokenize.TokenError, which is damage like any other (found by test_bad_input's fuzzing)."""
    import zipfile

    from nestref.errors import CheckpointError
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,"
    header += b" " * (118 - len(header)) + b"\n"
    with zipfile.ZipFile(tmp_path / "checkpoint.npz", "w") as archive:
        archive.writestr("state.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                         + header + bytes(12))
    with pytest.raises(CheckpointError, match="checkpoint.npz: not a readable nestref .npz file"):
        storage.load_arrays(tmp_path / "checkpoint.npz", error=CheckpointError)
