"""The architecture table and the user's own architectures (mlp: and conv: specs)."""

import json

import numpy as np
import pytest

from nestref.cli.main import main
from nestref.core.layers import Conv2d, Dense, ReLU
from nestref.errors import InvalidArgumentError
from nestref.nest import architectures
from nestref.nest.accounting import DENSE_BASELINES, dense_baseline
from nestref.nest.architectures import TABLE, find_preset, get
from nestref.nest.config import PRESETS, SynthesisConfig, make_config
from nestref.nest.networks import ARCHITECTURES, build, lenet5, lenet_300_100
from nestref.nest.prune import DEFAULT_PRUNE_FRACTIONS
from nestref.run.synthesize import synthesize
from nestref.tools.paper import PAPER_ROWS


def test_every_table_reader_agrees_with_the_table():
    assert set(ARCHITECTURES) == set(DENSE_BASELINES) == set(DEFAULT_PRUNE_FRACTIONS) == set(TABLE)
    assert {row[0] for row in PAPER_ROWS} == set(TABLE)
    for name, entry in TABLE.items():
        assert DEFAULT_PRUNE_FRACTIONS[name] == entry.prune_fractions
        assert len(entry.prune_fractions) == len(build(name, width_scale=0.1).masked_layers())
        assert set(entry.presets) <= set(PRESETS)
        # the typed baseline (the paper's count) is what accounting counts on the dense network
        assert dense_baseline(name) == entry.dense_baseline == DENSE_BASELINES[name]
        dense_row = next(r for r in PAPER_ROWS if r[0] == name and r[1] == "dense baseline")
        assert (dense_row[3], dense_row[4]) == (
            entry.dense_baseline["params"],
            entry.dense_baseline["flops"],
        )


def test_lenet_presets_and_fractions_are_unchanged():
    assert DEFAULT_PRUNE_FRACTIONS == {
        "lenet-300-100": (0.1, 0.08, 0.04),
        "lenet5": (0.02, 0.08, 0.1, 0.04),
    }
    assert PRESETS["lenet-300-100"] == dict(
        arch="lenet-300-100",
        augment=True,
        growth_epochs=3,
        settle_epochs=20,
        prune_epochs=2,
        finetune_epochs=30,
        param_budgets=[3800, 7800],
        prune_floor_params=3000,
    )
    # one trajectory for both paper rows; "-accurate" reports its 7.8K selection
    assert PRESETS["lenet-300-100-accurate"] == {
        **PRESETS["lenet-300-100"],
        "report_selection": "budget-7800",
    }
    assert PRESETS["lenet5"] == dict(
        arch="lenet5",
        augment=True,
        width_scale=0.5,
        density=0.3,
        lr=0.02,
        prune_lr=0.01,
        weight_decay=5e-4,
        initial_epochs=2,
        growth_epochs=1,
        max_growth_rounds=3,
        growth_batches=10,
        settle_epochs=8,
        prune_epochs=2,
        prune_fractions=[0.03, 0.12, 0.15, 0.06],
        param_budgets=[5800],
        prune_floor_params=4500,
        finetune_epochs=10,
        max_prune_rounds=30,
    )


def test_lenet5_is_its_conv_spec_and_lenet_300_100_its_mlp_spec():
    for named, spec, kwargs in [
        (lenet5, "conv:c20k5-p2-c50k5-p2-d500-d10", dict(width_scale=0.5, density=0.3)),
        (lenet_300_100, "mlp:784-300-100-10", dict(width_scale=0.4, density=0.1)),
    ]:
        a, b = named(seed=3, **kwargs).to_arrays(), build(spec, seed=3, **kwargs).to_arrays()
        for key in a:
            if key != "spec":
                np.testing.assert_array_equal(a[key], b[key])
        assert json.loads(str(a["spec"]))["layers"] == json.loads(str(b["spec"]))["layers"]


def test_spec_grammar():
    net = build("conv:c6k3-r-p2-c8k3-d12-d4", image_shape=(3, 14, 14), classes=4)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "Flatten", "Dense", "ReLU", "Dense"]
    assert net.input_shape == (3, 14, 14) and net.widths() == [6, 8, 12, 4]
    assert net.name == "conv:c6k3-r-p2-c8k3-d12-d4"
    mlp = build("mlp:64-20-20-5", width_scale=0.5)
    assert mlp.widths() == [10, 10, 5] and mlp.input_shape == (64,) and mlp.name == "mlp:64-10-10-5"
    assert [type(layer) for layer in mlp.layers] == [Dense, ReLU, Dense, ReLU, Dense]
    assert isinstance(build("conv:c2k3-d2").layers[0], Conv2d)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("mlp:784", "bad MLP spec"),
        ("mlp:784-0-10", "bad MLP spec"),
        ("mlp:a-b", "bad MLP spec"),
        ("conv:d10", "no convolution"),
        ("conv:c4k3-p2", "last stage must be the output dense"),
        ("conv:c4k3-d8-p2-d10", "after a dense stage"),
        ("conv:c4x3-d10", "'c4x3' is not a stage"),
        ("conv:c0k3-d10", "zero size"),
        ("resnet", "unknown architecture"),
    ],
)
def test_bad_specs_are_refused_at_the_door(spec, match):
    with pytest.raises(InvalidArgumentError, match=match):
        get(spec)
    with pytest.raises(ValueError, match="arch="):
        SynthesisConfig(arch=spec)


def test_data_shape_flows_into_the_network_or_is_refused_clearly():
    assert build("lenet-300-100", image_shape=(16, 16), classes=3).input_shape == (256,)
    assert build("lenet-300-100", image_shape=(16, 16), classes=3).widths()[-1] == 3
    net = build("lenet5", image_shape=(3, 32, 32), classes=100)
    assert net.input_shape == (3, 32, 32) and net.widths()[-1] == 100
    with pytest.raises(InvalidArgumentError, match="lenet5 cannot take these images"):
        build("lenet5", image_shape=(12, 12))
    with pytest.raises(InvalidArgumentError, match="takes 784 inputs.*256"):
        build("mlp:784-10", image_shape=(16, 16))
    with pytest.raises(
        InvalidArgumentError, match="ends in 10 outputs, but the data has 3 classes"
    ):
        build("mlp:784-10", classes=3)


def test_specs_get_derived_seeds_fractions_presets_and_recipes():
    mlp, conv = get("mlp:784-300-100-10"), get("conv:c20k5-p2-c50k5-p2-d500-d10")
    assert mlp.prune_fractions == TABLE["lenet-300-100"].prune_fractions
    assert conv.prune_fractions == TABLE["lenet5"].prune_fractions
    assert get("mlp:100-50-40-30-3").prune_fractions == (0.1, 0.08, 0.08, 0.04)
    assert get("conv:c4k3-c4k3-c4k3-d3").prune_fractions == (0.02, 0.08, 0.08, 0.04)
    assert mlp.recipe == TABLE["lenet-300-100"].recipe and conv.recipe == TABLE["lenet5"].recipe
    config = make_config("conv:c8k3-p2-d10", None, {"arch": "conv:c8k3-p2-d10"})
    assert (config.width_scale, config.density, config.lr) == (0.5, 0.3, 0.02)
    assert config.param_budgets == [] and config.augment is False
    assert find_preset("mlp:784-50-10")["width_scale"] == 0.4
    assert architectures.default_preset("lenet5") == "lenet5"
    assert architectures.default_preset("mlp:784-10") == "mlp:784-10"


def test_cli_takes_a_spec_and_refuses_a_bad_one(capsys):
    with pytest.raises(SystemExit) as info:
        main(["synthesize", "--arch", "mlp:784-x"])
    assert info.value.code == 2 and "bad MLP spec" in capsys.readouterr().err


@pytest.mark.slow
def test_custom_mlp_spec_synthesizes(tmp_path, mnist_dir):
    config = make_config(
        "mlp:784-60-30-10",
        None,
        dict(
            arch="mlp:784-60-30-10",
            data_dir=str(mnist_dir),
            train_limit=2000,
            n_val=400,
            initial_epochs=1,
            growth_epochs=1,
            max_growth_rounds=1,
            settle_epochs=1,
            prune_epochs=1,
            max_prune_rounds=2,
            finetune_epochs=1,
            growth_batch_size=256,
            growth_batches=2,
            max_error_increase=1.0,
            prune_floor_params=100,
            batch_size=100,
        ),
    )
    report = synthesize(config, tmp_path)
    assert report["arch"] == "mlp:784-60-30-10" and report["data"]["name"] == "mnist"
    weights = 784 * 60 + 60 * 30 + 30 * 10
    assert report["dense_baseline"] == {"params": weights + 60 + 30 + 10, "flops": 2 * weights}
    assert report["widths"][-1] == 10 and report["widths"][0] <= 60
    assert report["test_error"] < 0.6  # chance is 0.9; a 10%-dense seed, 1,600 images, a few epochs
    assert (tmp_path / "model.npz").exists()
