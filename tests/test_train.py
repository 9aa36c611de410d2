"""The training loop on real MNIST, divergence, checkpoints and resume, and the train command."""
import numpy as np
import pytest

from nestref.cli.main import main
from nestref.core.optim import SGD, cosine
from nestref.core.train import evaluate, fit, prepare_inputs
from nestref.data import storage
from nestref.data.datasets import train_val_split
from nestref.errors import TrainingDiverged
from nestref.nest.networks import lenet5, lenet_300_100
from nestref.run.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def small_mnist(mnist):
    tx, ty, vx, vy = train_val_split(
        mnist.train_images[:6000], mnist.train_labels[:6000], n_val=1000, seed=0
    )
    return (tx, ty), (vx, vy)


def test_short_training_learns_dense(small_mnist):
    (tx, ty), (vx, vy) = small_mnist
    net = lenet_300_100(width_scale=0.4, density=0.2, seed=0)
    opt = SGD(net, lr=0.05, momentum=0.9)
    records = fit(
        net,
        opt,
        (prepare_inputs(tx, net), ty),
        (prepare_inputs(vx, net), vy),
        epochs=2,
        batch_size=64,
    )
    assert len(records) == 2 and records[1]["train_loss"] < records[0]["train_loss"]
    assert records[-1]["val_error"] < 0.15  # chance is 0.9


@pytest.mark.slow
def test_short_training_learns_cnn(small_mnist):
    (tx, ty), (vx, vy) = small_mnist
    net = lenet5(width_scale=0.5, seed=0)
    opt = SGD(net, lr=0.02, momentum=0.9)
    fit(net, opt, (prepare_inputs(tx[:3000], net), ty[:3000]), None, epochs=1, batch_size=32)
    assert evaluate(net, prepare_inputs(vx, net), vy)["error"] < 0.2


def test_nan_loss_stops_with_a_clear_message():
    net = lenet_300_100(width_scale=0.1, seed=0)
    x = np.random.default_rng(0).random((64, 784)).astype(np.float32)
    x[5, 3] = np.nan
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at epoch 1, batch 1/1 with lr=0.1"
    ):
        fit(net, SGD(net, lr=0.1), (x, np.zeros(64, np.int64)), None, epochs=1, batch_size=64)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, small_mnist):
    (tx, ty), _ = small_mnist
    tx, ty = tx[:1000], ty[:1000]

    def fresh():
        net = lenet_300_100(width_scale=0.2, density=0.3, seed=1)
        return net, SGD(net, lr=0.05, momentum=0.9), (prepare_inputs(tx, net), ty)

    net, opt, train = fresh()
    fit(
        net,
        opt,
        train,
        None,
        epochs=3,
        schedule=cosine(0.05),
        batch_size=50,
        rng=np.random.default_rng(4),
    )

    net2, opt2, train = fresh()
    rng = np.random.default_rng(4)
    fit(net2, opt2, train, None, epochs=3, schedule=cosine(0.05), batch_size=50, rng=rng,
        on_epoch=lambda r: r["epoch"] == 1 and save_checkpoint(tmp_path / "ck.npz", net2, opt2,
                                                                {"rng": rng.bit_generator.state}))
    net3, opt3, state = load_checkpoint(tmp_path / "ck.npz")
    rng3 = np.random.default_rng()
    rng3.bit_generator.state = state["rng"]
    fit(
        net3,
        opt3,
        train,
        None,
        epochs=3,
        schedule=cosine(0.05),
        batch_size=50,
        rng=rng3,
        start_epoch=1,
    )
    for (_, a), (_, b) in zip(net.masked_layers(), net3.masked_layers(), strict=True):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_a_crash_while_writing_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    net = lenet_300_100(width_scale=0.1, seed=0)
    save_checkpoint(path, net, state={"epoch": 1})
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, net, state={"epoch": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temp file left behind
    monkeypatch.undo()
    assert load_checkpoint(path)[2] == {"epoch": 1}


def test_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        load_checkpoint(bad)


def test_train_command_end_to_end(tmp_path, mnist_dir, capsys):
    out = tmp_path / "m.npz"
    args = ["train", "--arch", "lenet-300-100", "--epochs", "1", "--data-dir", str(mnist_dir),
            "--out", str(out), "--no-progress", "--width-scale", "0.2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "test error" in text and out.exists()
    error = float(text.split("test error ")[1].split("%")[0])
    assert error < 10.0
    assert main(args[:4] + ["2"] + args[5:] + ["--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    _, _, state = load_checkpoint(out)
    assert state["epoch"] == 2


def test_train_command_without_data_says_where_it_looked(tmp_path, offline, capsys):
    code = main(["train", "--data-dir", str(tmp_path / "empty"), "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "run" / "model.npz")])
    err = capsys.readouterr().err
    assert code == 1 and "empty" in err and "NESTREF_DATA_DIR" in err
