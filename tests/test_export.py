"""ONNX export and `nestref predict`: the exported network computes what predict computes."""

import numpy as np
import pytest

from nestref.cli.main import main
from nestref.errors import DataError, ModelFileError
from nestref.nest.config import SynthesisConfig
from nestref.nest.networks import build
from nestref.run import export
from nestref.run.checkpoint import save_checkpoint
from nestref.run.synthesize import synthesize


def masked_run(tmp_path, arch, seed=0, **kwargs):
    """A run directory holding a pruned network with random masks, biases and partial areas."""
    rng = np.random.default_rng(seed)
    net = build(arch, density=0.5, seed=seed, **kwargs)
    shapes = net.shapes()
    for position, layer in net.masked_layers():
        layer.bias[:] = rng.standard_normal(layer.n_out).astype(np.float32)
        if hasattr(layer, "area_mask"):
            _, (_, ho, wo) = shapes[position]
            layer.area_mask = (rng.random((layer.n_out, layer.n_in, ho, wo)) < 0.5).astype(
                np.float32
            )
            layer.area_mask[0] = 1  # some kernels keep their whole area
            layer.area_mask[1, 0] = 0  # one kernel has none
    save_checkpoint(tmp_path / "checkpoint.npz", net)
    return tmp_path, net


def onnx_logits(path, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("lenet5", dict(width_scale=0.3)),
        ("conv:c6k3-r-p2-c8k3-d12-d4", dict(image_shape=(3, 14, 14), classes=4)),
        ("mlp:784-40-20-10", {}),
    ],
)
def test_onnx_round_trip_matches_predict(tmp_path, arch, kwargs):
    pytest.importorskip("onnx")
    run, net = masked_run(tmp_path, arch, **kwargs)
    path = export.export_onnx(run, tmp_path / "model.onnx")
    images = np.random.default_rng(1).integers(0, 256, (50, *net.input_shape), dtype=np.uint8)
    expected = export.predict_logits(run, images)
    got = onnx_logits(path, images.astype(np.float32) / np.float32(255))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_area_masks_are_exact_in_onnx(tmp_path):
    """A kernel restricted to part of the area must contribute nothing outside it."""
    pytest.importorskip("onnx")
    run, net = masked_run(tmp_path, "conv:c3k3-d2", image_shape=(2, 6, 6), classes=2)
    conv = net.layers[0]
    conv.area_mask[...] = 0
    conv.area_mask[0, 1, 2, 3] = 1  # map 0 sees input map 1 at one position only
    save_checkpoint(run / "checkpoint.npz", net)
    x = np.random.default_rng(0).random((7, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(
        onnx_logits(export.export_onnx(run, tmp_path / "m.onnx"), x),
        net.predict(x),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.slow
def test_synthesized_run_exports_and_predicts_from_the_command_line(tmp_path, mnist_dir, capsys):
    pytest.importorskip("onnx")
    run = tmp_path / "run"
    config = SynthesisConfig(
        arch="mlp:784-60-30-10",
        data_dir=str(mnist_dir),
        train_limit=1500,
        n_val=300,
        initial_epochs=1,
        growth_epochs=1,
        max_growth_rounds=1,
        settle_epochs=1,
        prune_epochs=1,
        max_prune_rounds=1,
        finetune_epochs=1,
        growth_batch_size=200,
        growth_batches=2,
        max_error_increase=1.0,
        batch_size=100,
    )
    report = synthesize(config, run)
    assert main(["export", str(run), "--onnx", str(tmp_path / "model.onnx")]) == 0
    assert "model.onnx" in capsys.readouterr().out
    written = (tmp_path / "model.onnx").read_bytes()
    (tmp_path / "model.onnx").write_bytes(b"the user's own model")
    assert main(["export", str(run), "--onnx", str(tmp_path / "model.onnx")]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "model.onnx").read_bytes() == b"the user's own model"
    assert main(["export", str(run), "--onnx", str(tmp_path / "model.onnx"), "--overwrite"]) == 0
    assert (tmp_path / "model.onnx").read_bytes() == written
    (tmp_path / "a.onnx").mkdir()
    assert main(["export", str(run), "--onnx", str(tmp_path / "a.onnx")]) == 2
    assert "is a directory: give the path of a file" in capsys.readouterr().err
    from nestref.data.datasets import load_mnist

    images = np.asarray(load_mnist(mnist_dir, download=False).test_images[:64])
    np.save(tmp_path / "images.npy", images)
    assert main(["predict", str(run), str(tmp_path / "images.npy")]) == 0
    printed = [int(line) for line in capsys.readouterr().out.split()]
    logits = export.predict_logits(run, images)
    assert printed == logits.argmax(axis=1).tolist()
    np.testing.assert_allclose(
        onnx_logits(tmp_path / "model.onnx", images.reshape(64, -1) / np.float32(255)),
        logits,
        rtol=0,
        atol=1e-5,
    )
    assert (
        report["test_error"] < 0.6
    )  # the printed classes are a trained network's, not chance (0.9)


def test_predict_validates_the_images(tmp_path, capsys):
    run, _ = masked_run(tmp_path, "lenet5", width_scale=0.2)
    good = np.zeros((3, 28, 28), np.uint8)
    np.testing.assert_array_equal(
        export.predict_logits(run, good),
        export.predict_logits(run, good[:, None].astype(np.float32)),
    )
    cases = {
        "int64": (good.astype(np.int64), "dtype int64: pass uint8"),
        "float 0-255": (good.astype(np.float32) + 200, "within \\[0, 1\\]"),
        "nan": (np.full((1, 28, 28), np.nan, np.float32), "finite"),
        "wrong size": (
            np.zeros((2, 27, 28), np.uint8),
            "do not fit the network's input \\(1, 28, 28\\)",
        ),
        "one image without N": (np.zeros((28, 28), np.uint8), "do not fit"),
    }
    for name, (images, match) in cases.items():
        with pytest.raises(DataError, match=match):
            export.predict_logits(run, images)
        np.save(tmp_path / f"{name}.npy", images)
        # exit code 1: a file or the data failed
        assert main(["predict", str(run), str(tmp_path / f"{name}.npy")]) == 1
        assert "error:" in capsys.readouterr().err
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npy: not a .npy file .*save the images with np.save"):
        export.predict_logits(run, tmp_path / "junk.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable .npy array .Object arrays"):
        export.predict_logits(run, tmp_path / "objects.npy")


def test_bad_run_or_missing_onnx_is_a_clear_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(ModelFileError, match="no checkpoint.npz inside"):
        export.load_network(tmp_path)
    # exit code 1: a file or the data failed
    assert main(["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "no such run directory" in capsys.readouterr().err
    run, _ = masked_run(tmp_path, "mlp:784-10")
    (run / "model.npz").write_bytes(b"a compact model, not a checkpoint")
    with pytest.raises(ModelFileError, match=f"pass the run directory {run} instead"):
        export.load_network(run / "model.npz")

    def no_onnx():
        raise ImportError("No module named 'onnx'")

    import builtins

    real_import = builtins.__import__

    def without_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            no_onnx()
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnx)
    # exit code 2: fix the set-up
    assert main(["export", str(run), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "pip install" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
