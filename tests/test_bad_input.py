"""Bad input and faults, in process: tampered checkpoints, configs and reports, bad API arguments.

Every case asserts the named error (or, where tampering leaves a valid file, the same result):
never a crash, never a silently different answer. The command line's cases are in
test_cli_errors.py.
"""
import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestref.cli.main import main as cli_main
from nestref.core.layers import Conv2d, Dense, MaxPool2d
from nestref.core.losses import softmax_cross_entropy
from nestref.core.optim import SGD
from nestref.core.train import evaluate, fit
from nestref.data.storage import (
    atomic_write_bytes,
    load_arrays,
    previous_path,
    save_arrays,
)
from nestref.errors import (
    CheckpointError,
    ConfigError,
    InvalidArgumentError,
    NestrefError,
    OutputExistsError,
    OutputPathError,
    ReportError,
    TrainingDiverged,
)
from nestref.nest.config import (
    RESUME_SAFE_FIELDS,
    SynthesisConfig,
    make_config,
    read_config_file,
    resume_conflicts,
)
from nestref.nest.networks import lenet5, lenet_300_100
from nestref.run.checkpoint import load_checkpoint, resume_checkpoint, save_checkpoint
from nestref.run.compact import compact
from nestref.run.run_files import (
    check_run_dir,
    clear_run_files,
    is_run_directory,
    mark_run_directory,
)
from nestref.run.synthesize import read_report

FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def small_net(arch="lenet-300-100"):
    if arch == "lenet5":
        net = lenet5(width_scale=0.1, density=0.5, seed=3)
        conv = net.layers[0]
        conv.area_mask = np.ones((conv.n_out, conv.n_in, 24, 24), conv.weight.dtype)
        conv.area_mask[0, 0, :3] = 0
        return net
    return lenet_300_100(width_scale=0.05, density=0.5, seed=3)


@pytest.fixture(scope="module", params=["lenet-300-100", "lenet5"])
def checkpoint(request, tmp_path_factory):
    """A valid checkpoint (its bytes and arrays) and the logits its network gives on a probe
    batch."""
    net = small_net(request.param)
    opt = SGD(net, lr=0.05, momentum=0.9)
    path = tmp_path_factory.mktemp("ck") / "checkpoint.npz"
    save_checkpoint(path, net, opt, {"epoch": 1})
    x = np.random.default_rng(0).random((4, *net.input_shape), dtype=np.float32)
    return Checkpoint((path.read_bytes(), load_arrays(path), x, net.forward(x)), request.param)


class Checkpoint(tuple):
    """(file bytes, arrays, probe batch, its logits), with a short repr for hypothesis' reports."""

    def __new__(cls, parts, arch):
        self = super().__new__(cls, parts)
        self.arch = arch
        return self

    def __repr__(self):
        return f"<checkpoint of a small {self.arch}>"


def rewrite(tmp_path, arrays):
    path = tmp_path / "tampered.npz"
    with zipfile.ZipFile(path, "w") as z:
        for key, value in arrays.items():
            with z.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
    return path


def loads_the_same_or_names_the_problem(path, x, logits, strict=True):
    """The property every tampered checkpoint must have.

    strict: the file keeps its manifest (digests of every array), so any change is caught
    and what loads is the original. Without the manifest (an older checkpoint) each field
    is still checked: what loads is a network that runs.
    """
    try:
        net, _, _ = load_checkpoint(path)
    except CheckpointError as err:
        assert str(path) in str(err)
        return "refused"
    if strict:
        np.testing.assert_array_equal(net.forward(x), logits)
    else:
        out = net.forward(np.zeros((2, *net.input_shape), np.float32))
        assert out.ndim == 2 and len(out) == 2 and np.isfinite(out).all()
    return "same"


def without_manifest(arrays, drop):
    return {k: v for k, v in arrays.items() if k != "manifest"} if drop else arrays


# ------------------------------------------------------------------- checkpoints
@FAST
@given(data=st.data())
def test_a_checkpoint_missing_an_array_is_refused(checkpoint, tmp_path, data):
    raw, arrays, x, logits = checkpoint
    drop = data.draw(st.booleans())
    key = data.draw(st.sampled_from(sorted(without_manifest(arrays, drop))))
    tampered = {k: v for k, v in without_manifest(arrays, drop).items() if k != key}
    outcome = loads_the_same_or_names_the_problem(
        rewrite(tmp_path, tampered), x, logits, strict=not drop
    )
    # without its manifest, only the optimizer's settings, the state or an area mask may go
    # unnoticed
    optional = ("optimizer", "state", "manifest") + (
        () if not drop else tuple(k for k in arrays if "area_mask" in k)
    )
    assert outcome == "refused" or key in optional


@FAST
@given(data=st.data())
def test_a_checkpoint_array_of_the_wrong_shape_dtype_or_value_is_refused(
    checkpoint, tmp_path, data
):
    raw, arrays, x, logits = checkpoint
    drop = data.draw(st.booleans())
    key = data.draw(
        st.sampled_from(sorted(k for k in arrays if k.startswith(("layer", "velocity"))))
    )
    original = arrays[key]
    how = data.draw(st.sampled_from(["shape", "dtype", "nan", "inf", "scalar", "string", "value"]))
    if how == "shape":
        bad = np.zeros(original.shape[:-1] + (original.shape[-1] + 1,), original.dtype)
    elif how == "dtype":
        bad = original.astype(np.int32 if original.dtype != np.int32 else np.float32)
    elif how in ("nan", "inf"):
        bad = original.astype(np.float32 if original.dtype == bool else original.dtype)
        bad.reshape(-1)[0] = np.nan if how == "nan" else np.inf
    elif how == "scalar":
        bad = np.float32(1.0)
    elif how == "string":
        bad = np.array("x")
    else:  # a plausible value: caught by the manifest only
        bad = original.copy()
        bad.reshape(-1)[0] = not bad.reshape(-1)[0] if bad.dtype == bool else bad.reshape(-1)[0] + 1
    tampered = without_manifest({**arrays, key: bad}, drop)
    outcome = loads_the_same_or_names_the_problem(
        rewrite(tmp_path, tampered), x, logits, strict=not drop
    )
    assert outcome == "refused" or (drop and how == "value")


@FAST
@given(data=st.data())
def test_a_bogus_spec_is_refused(checkpoint, tmp_path, data):
    raw, arrays, x, logits = checkpoint
    drop = data.draw(st.booleans())
    spec = json.loads(str(arrays["spec"]))
    how = data.draw(
        st.sampled_from(
            ["not json", "top level", "field", "layer field", "layer type", "drop layer"]
        )
    )
    if how == "not json":
        text = data.draw(st.text(max_size=20).filter(lambda t: not _is_json(t)))
    else:
        if how == "top level":
            spec = data.draw(JSON.filter(lambda v: not isinstance(v, dict)))
        elif how == "field":
            spec[data.draw(st.sampled_from(sorted(spec)))] = data.draw(JSON)
        elif how == "layer field":
            i = data.draw(st.integers(0, len(spec["layers"]) - 1))
            keys = sorted(spec["layers"][i])
            spec["layers"][i][data.draw(st.sampled_from(keys))] = data.draw(
                JSON | st.integers(-3, 10**7)
            )
        elif how == "layer type":
            spec["layers"][0]["type"] = data.draw(
                st.sampled_from(["Dense", "Conv2d", "ReLU", "Flatten", "MaxPool2d", "Nope"])
            )
        else:
            del spec["layers"][data.draw(st.integers(0, len(spec["layers"]) - 1))]
        text = json.dumps(spec)
    tampered = without_manifest({**arrays, "spec": np.array(text)}, drop)
    loads_the_same_or_names_the_problem(rewrite(tmp_path, tampered), x, logits, strict=not drop)


def _is_json(text):
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@FAST
@given(data=st.data())
def test_a_corrupted_or_truncated_checkpoint_file_is_refused(checkpoint, tmp_path, data):
    raw, _, x, logits = checkpoint
    blob = bytearray(raw)
    if data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= data.draw(st.integers(1, 255))
    path = tmp_path / "corrupt.npz"
    path.write_bytes(bytes(blob))
    loads_the_same_or_names_the_problem(path, x, logits)


def test_a_checkpoint_that_is_a_directory_or_absent_or_unreadable_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.npz")
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path / "dir.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(CheckpointError, match="not a zip archive"):
        load_checkpoint(tmp_path / "text.npz")


def test_resume_falls_back_to_the_previous_checkpoint_when_the_latest_is_corrupt(tmp_path):
    path = tmp_path / "checkpoint.npz"
    net = small_net()
    save_checkpoint(path, net, SGD(net, lr=0.1), {"epoch": 1})
    net.layers[0].bias += 1  # the second checkpoint differs
    save_checkpoint(path, net, SGD(net, lr=0.1), {"epoch": 2})
    assert previous_path(path).exists()
    assert resume_checkpoint(path)[2:] == ({"epoch": 2}, None)
    path.write_bytes(path.read_bytes()[:100])  # the latest is cut short
    _, _, state, warning = resume_checkpoint(path)
    assert (
        state == {"epoch": 1} and "checkpoint.prev.npz" in warning and "checkpoint.npz" in warning
    )
    path.unlink()  # the moment between the two renames: only the previous one exists
    assert resume_checkpoint(path)[2] == {"epoch": 1}
    previous_path(path).write_bytes(b"garbage")
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="neither checkpoint"):
        resume_checkpoint(path)


def test_outputs_get_the_users_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", lambda f: f.write(b"x"))
        save_arrays(tmp_path / "b.npz", {"x": np.zeros(2)}, keep_previous=True)
        save_arrays(tmp_path / "b.npz", {"x": np.ones(2)}, keep_previous=True)
    finally:
        os.umask(old)
    for name in ("a.bin", "b.npz", "b.prev.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


# ----------------------------------------------------------------------- configs
@FAST
@given(key=st.sampled_from(sorted(SynthesisConfig().to_dict())), value=JSON)
def test_any_config_value_is_accepted_valid_or_refused_by_name(key, value):
    try:
        config = make_config(None, None, {key: value})
    except ConfigError as err:
        assert key in str(err)
        return
    config.validate()  # what was accepted is valid


@FAST
@given(top=JSON.filter(lambda v: not isinstance(v, dict)))
def test_a_config_file_whose_top_level_is_not_an_object_is_refused(tmp_path, top):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(top))
    with pytest.raises(ConfigError, match="top level"):
        read_config_file(path)


@FAST
@given(blob=st.binary(max_size=40), suffix=st.sampled_from([".json", ".toml", ".cfg"]))
def test_a_config_file_of_random_bytes_is_refused_or_read(tmp_path, blob, suffix):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(blob)
    try:
        values = read_config_file(path)
    except ConfigError as err:
        assert str(path) in str(err)
        return
    assert isinstance(values, dict)


def test_a_config_path_that_is_a_directory_or_missing_is_named(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        read_config_file(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "none.toml")


@pytest.mark.parametrize("overrides, message", [
    ({"prune_fractions": [0.1]}, "prune_fractions.*3 numbers for lenet-300-100"),
    ({"arch": "lenet5", "prune_fractions": [0.1, 0.1, 0.1]}, "4 numbers for lenet5"),
    ({"arch": "mlp:784-50-10", "prune_fractions": [0.1]}, "2 numbers for mlp:784-50-10"),
    ({"arch": "conv:c4k3-p2-d10", "prune_fractions": [0.1, 0.1, 0.1]}, "2 numbers for conv:"),
    ({"train_limit": 500, "n_val": 500}, "n_val.*< train_limit"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"data_dir": 3}, "data_dir=3"),
])
def test_incoherent_configs_fail_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(None, None, overrides)


def test_safe_changes_on_resume_are_allowed_others_are_named():
    saved = SynthesisConfig().to_dict()
    assert (
        resume_conflicts(saved, SynthesisConfig(lr=0.01, prune_lr=0.001, data_dir="/x"), "prune", 3)
        == []
    )
    assert (
        resume_conflicts(saved, SynthesisConfig(finetune_epochs=2, prune_epochs=4), "prune", 0)
        == []
    )
    assert [
        k for k, _, _ in resume_conflicts(saved, SynthesisConfig(prune_epochs=4), "prune", 1)
    ] == ["prune_epochs"]
    assert [
        k for k, _, _ in resume_conflicts(saved, SynthesisConfig(growth_epochs=4), "settle", 0)
    ] == ["growth_epochs"]
    assert [
        k for k, _, _ in resume_conflicts(saved, SynthesisConfig(growth_ratio=0.2), "grow", 0)
    ] == ["growth_ratio"]
    # a run stopped between the epochs of its settle step has started settling
    assert resume_conflicts(saved, SynthesisConfig(settle_epochs=9), "settle", 0) == []
    assert [
        k for k, _, _ in resume_conflicts(saved, SynthesisConfig(settle_epochs=9), "settle", 0,
                                          mid_step=True)
    ] == ["settle_epochs"]
    # a run written before a field existed did what the field's default does
    older = {k: v for k, v in saved.items() if k != "area_rank"}
    assert resume_conflicts(older, SynthesisConfig(), "prune", 3) == []
    assert [k for k, _, _ in resume_conflicts(older, SynthesisConfig(area_rank="flops"), "prune",
                                              3)] == ["area_rank"]
    assert set(RESUME_SAFE_FIELDS) >= {"lr", "prune_lr", "data_dir", "finetune_epochs"}


# ----------------------------------------------------------------------- reports
GOOD_REPORT = {
    "arch": "lenet-300-100",
    "mode": "nest",
    "test_error": 0.02,
    "params": 4000,
    "flops": 8000,
    "params_compression": 66.6,
    "flops_compression": 66.5,
    "data": {"name": "mnist"},
}


@FAST
@given(data=st.data())
def test_a_tampered_report_is_refused_by_field(tmp_path, data):
    report = dict(GOOD_REPORT)
    key = data.draw(st.sampled_from(sorted(report)))
    if data.draw(st.booleans()):
        del report[key]
    else:
        report[key] = data.draw(JSON)
    (tmp_path / "report.json").write_text(json.dumps(report))
    try:
        loaded = read_report(tmp_path)
    except ReportError as err:
        assert key in str(err) and "report.json" in str(err)
        return
    assert loaded == report  # a replacement that is itself valid


def test_reports_with_data_given_from_python_or_huge_counts_print_or_are_refused(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps({**GOOD_REPORT, "data": None}))
    assert cli_main(["report", str(tmp_path)]) == 0
    assert "data given to synthesize()" in capsys.readouterr().out
    (tmp_path / "report.json").write_text(json.dumps({**GOOD_REPORT, "params": 10**400}))
    assert cli_main(["report", str(tmp_path)]) == 1
    assert "field 'params' is missing or not an int" in capsys.readouterr().err


def test_a_report_that_is_not_json_or_absent_is_named(tmp_path):
    with pytest.raises(ReportError, match="not found"):
        read_report(tmp_path)
    (tmp_path / "report.json").write_text("{")
    with pytest.raises(ReportError, match="not a readable JSON"):
        read_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text(
        json.dumps({k: v for k, v in GOOD_REPORT.items() if k != "mode"})
    )
    with pytest.raises(ReportError, match="'mode'"):
        read_report(tmp_path)


# ------------------------------------------------------------- output directories
def prepare_run_dir(out, resume=False, overwrite=False):
    """What ``synthesize`` does to its directory before training (here with no data to load)."""
    has_checkpoint = check_run_dir(out, resume=resume, overwrite=overwrite)
    if overwrite:
        clear_run_files(out)
    return has_checkpoint


def test_out_dirs_of_other_files_or_runs_are_refused_and_overwrite_keeps_other_files(tmp_path):
    out = tmp_path / "run"
    assert prepare_run_dir(out) is False and not out.exists()  # nothing created before it is needed
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="notes.txt.*--overwrite"):
        prepare_run_dir(out)
    mark_run_directory(out, {"arch": "lenet5"})
    (out / "figures").mkdir()
    for name in ("report.json", "checkpoint.npz", "figures/validation_error.png",
                 "figures/mine.png"):
        (out / name).write_text("x")
    (out / "notes.txt").unlink()
    (out / "figures" / "mine.png").unlink()
    with pytest.raises(OutputExistsError, match="--resume.*--overwrite"):
        prepare_run_dir(out)
    assert prepare_run_dir(out, resume=True) is True
    (out / "notes.txt").write_text("mine")
    (out / "figures" / "mine.png").write_text("mine")
    assert prepare_run_dir(out, overwrite=True) is False
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "figures",
        "figures/mine.png",
        "notes.txt",
    ]
    with pytest.raises(InvalidArgumentError, match="exclude each other"):
        prepare_run_dir(out, resume=True, overwrite=True)


RUN_WRITES = ["model.npz", "report.json", "history.json", "checkpoint.npz", "checkpoint.prev.npz",
              "figures/grow_prune_curve.png", "rounds/prune-001.npz", "rounds/finetuned-012.npz",
              "selections/target/model.npz", "selections/budget-3800/model.npz",
              "selections/dense/.model.npz.abc.tmp"]


def write_files(out, names):
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")


def test_overwrite_removes_every_file_a_finished_run_wrote_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    users = ["selections/target/notes.txt", "selections/My Run/model.npz", "rounds/mine.npz",
             "data/model.npz"]
    write_files(out, RUN_WRITES + users)
    mark_run_directory(out, {"arch": "lenet-300-100"})
    listed = "did not write .data, rounds/mine.npz, selections/My Run, selections/target/notes.txt."
    with pytest.raises(OutputExistsError, match=listed):
        prepare_run_dir(out)
    for name in users:
        (out / name).unlink()
    (out / "data").rmdir()
    (out / "selections" / "My Run").rmdir()
    # only the run's own files are left: it is refused as a run to resume or overwrite
    with pytest.raises(OutputExistsError, match="holds a nestref run.*--resume"):
        prepare_run_dir(out)
    (out / "checkpoint.npz").unlink()
    (out / "checkpoint.prev.npz").unlink()
    with pytest.raises(OutputExistsError, match="outputs.*no checkpoint"):
        prepare_run_dir(out)
    (out / "selections" / "target" / "notes.txt").write_text("mine")
    assert prepare_run_dir(out, overwrite=True) is False
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "selections", "selections/target", "selections/target/notes.txt"]


def test_files_named_like_a_runs_in_a_directory_no_run_wrote_are_never_removed(tmp_path):
    out = tmp_path / "mine"
    write_files(out, ["model.npz", "report.json", "selections/v1/model.npz", "notes.txt"])
    for flags in ({}, {"overwrite": True}, {"resume": True}):  # resume: there is no checkpoint
        with pytest.raises(OutputExistsError, match="model.npz, report.json, "
                                                    "selections/v1/model.npz.*write over them"):
            prepare_run_dir(out, **flags)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "model.npz", "model.npz", "notes.txt", "report.json"]


def test_a_run_from_before_the_marker_is_known_by_its_checkpoint(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    net = lenet_300_100(density=0.1, seed=0)
    save_checkpoint(out / "checkpoint.npz", net, SGD(net, 0.1), {})
    write_files(out, ["report.json", "rounds/prune-001.npz"])
    assert is_run_directory(out)
    with pytest.raises(OutputExistsError, match="holds a nestref run"):
        prepare_run_dir(out)
    assert prepare_run_dir(out, overwrite=True) is False and list(out.iterdir()) == []


def test_unwritable_out_dirs_are_refused_before_anything_runs(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="regular file"):
        prepare_run_dir(tmp_path / "file" / "run")
    with pytest.raises(OutputPathError, match="is a file"):
        prepare_run_dir(tmp_path / "file")
    if os.geteuid() != 0:  # root writes through read-only permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(OutputPathError, match="cannot write"):
                prepare_run_dir(ro / "run")
        finally:
            ro.chmod(0o755)


# ------------------------------------------------------------------ API arguments
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, bool])
def test_integer_inputs_to_forward_and_predict_are_refused_with_advice(dtype):
    net = lenet_300_100(width_scale=0.05)
    x = np.zeros((3, 784), dtype)
    for call in (net.forward, net.predict):
        with pytest.raises(InvalidArgumentError, match="scale_pixels"):
            call(x)


def test_wrong_shapes_and_non_arrays_to_forward_are_refused():
    net = lenet5(width_scale=0.1)
    with pytest.raises(InvalidArgumentError, match=r"\(N, 1, 28, 28\)"):
        net.forward(np.zeros((2, 784), np.float32))
    with pytest.raises(InvalidArgumentError, match="list"):
        net.forward([[0.0] * 784])
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        net.predict(np.zeros((2, 1, 28, 28), np.float32), batch_size=0)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, bool, "banana", np.complex64])
def test_builders_refuse_non_float_dtypes(dtype):
    for build in (lenet_300_100, lenet5):
        with pytest.raises(InvalidArgumentError, match="dtype"):
            build(width_scale=0.1, dtype=dtype)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width_scale": 0}, "width_scale"),
        ({"density": 1.5}, "density"),
        ({"width_scale": "big"}, "width_scale"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_builders_refuse_bad_numbers(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        lenet_300_100(**kwargs)


@FAST
@given(bad=st.sampled_from([-1, 10, 11, -100, 2**40]))
def test_labels_out_of_range_are_refused_by_the_loss_training_and_evaluation(bad):
    net = lenet_300_100(width_scale=0.05)
    x = np.zeros((4, 784), np.float32)
    y = np.array([0, 1, bad, 2])
    with pytest.raises(InvalidArgumentError, match=f"found {bad}"):
        softmax_cross_entropy(np.zeros((4, 10)), y)
    with pytest.raises(InvalidArgumentError, match=f"found {bad}"):
        evaluate(net, x, y)
    with pytest.raises(InvalidArgumentError, match=f"found {bad}"):
        fit(net, SGD(net), (x, y), None, epochs=1)


def test_float_labels_and_bad_loop_arguments_are_refused():
    net = lenet_300_100(width_scale=0.05)
    x, y = np.zeros((4, 784), np.float32), np.zeros(4, np.int64)
    with pytest.raises(InvalidArgumentError, match="integers"):
        softmax_cross_entropy(np.zeros((4, 10)), y.astype(float))
    for kwargs, message in (
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": -1}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"rng": "seed"}, "rng"),
    ):
        with pytest.raises(InvalidArgumentError, match=message):
            fit(net, SGD(net), (x, y), None, **{"epochs": 1, **kwargs})
    with pytest.raises(InvalidArgumentError, match="scale_pixels"):
        fit(net, SGD(net), (x.astype(np.uint8), y), None, epochs=1)
    with pytest.raises(InvalidArgumentError, match=r"shape \(4,\)"):
        evaluate(net, x, y[:3])


def test_the_error_types_are_what_callers_expect():
    assert issubclass(TrainingDiverged, RuntimeError) and issubclass(TrainingDiverged, NestrefError)
    for kind in (CheckpointError, ConfigError, ReportError, InvalidArgumentError):
        assert issubclass(kind, ValueError) and issubclass(kind, NestrefError)
    assert (
        ConfigError.exit_code == InvalidArgumentError.exit_code == OutputExistsError.exit_code == 2
    )
    assert CheckpointError.exit_code == TrainingDiverged.exit_code == 1


# ------------------------------------------------------------ the Python API's doors
@pytest.mark.parametrize("build, message", [
    (lambda: Dense(2.5, 3), "Dense needs integers n_in, n_out >= 1, got 2.5, 3"),
    (lambda: Dense("3", 5), "got '3', 5"),
    (lambda: Dense(True, 5), "got True, 5"),
    (lambda: Conv2d(1, 5, 2.5), "Conv2d needs integers"),
    (lambda: Conv2d(1, 5, 3, 1.5), r"got 1, 5, 3, 1.5, 0"),
    (lambda: Conv2d(1, 5, 3, padding=-1), "padding >= 0"),
    (lambda: MaxPool2d(2.5), "MaxPool2d needs integers"),
    (lambda: MaxPool2d(2, 0), "got 2, 0"),
    (lambda: lenet_300_100(classes=2.5), "classes must be an integer >= 2"),
    (lambda: lenet5(classes=True), "classes must be an integer >= 2"),
    (lambda: compact("x"), "compact needs a nestref.core.network.Network, got str"),
])
def test_the_api_refuses_sizes_that_are_not_integers_by_name(build, message):
    with pytest.raises(InvalidArgumentError, match=message):
        build()


def test_the_api_takes_numpy_integers_as_sizes():
    assert Dense(np.int64(3), np.int32(4)).weight.shape == (4, 3)
    assert MaxPool2d(np.int64(2)).stride == 2


def test_a_density_that_leaves_a_layer_without_connections_is_refused():
    with pytest.raises(InvalidArgumentError, match="density 1e-06 leaves layer .* none active"):
        lenet_300_100(density=1e-6, seed=0)
    assert lenet_300_100(density=0.001, seed=0).masked_layers()[-1][1].mask.any()


def test_number_checks_state_their_bounds_in_words():
    from nestref.checks import check_number
    with pytest.raises(InvalidArgumentError, match=r"^--weight-decay must be a finite number >= 0, "
                                                   r"got inf$"):
        check_number("--weight-decay", float("inf"), minimum=0)
    with pytest.raises(InvalidArgumentError, match=r"must be a finite number >= 0 and <= 1, got 2"):
        check_number("x", 2, minimum=0, maximum=1)
    assert check_number("x", 0.5, minimum=0, maximum=1) == 0.5
