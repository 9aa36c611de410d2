"""The study's protocol (docs/nest.md#ours-choice, #ours-equal-budget, #ours-prune-stopping):
selections from one trajectory, equal epochs before pruning, the dense mode, the smoothed
stop ceiling, and the test set's isolation from every decision."""
import json

import numpy as np
import pytest

from nestref.nest import grow
from nestref.nest.config import SynthesisConfig, make_config
from nestref.nest.networks import build
from nestref.run.synthesize import choose_round, load_data, smooth, stop_ceiling, synthesize

TINY = dict(
    train_limit=2000,
    n_val=300,
    initial_epochs=1,
    growth_epochs=1,
    max_growth_rounds=2,
    patience=5,
    growth_batch_size=256,
    growth_batches=2,
    prune_epochs=1,
    max_prune_rounds=4,
    prune_fractions=[0.5, 0.4, 0.1],
    finetune_epochs=1,
    settle_epochs=1,
    max_error_increase=1.0,
    prune_floor_params=100,
    batch_size=100,
    smoothing=2,
    param_budgets=[1_000_000, 1],
)


def drop_timing(history):
    return [{k: v for k, v in rec.items() if k != "seconds"} for rec in history]


@pytest.fixture(scope="module")
def tiny_data(mnist_dir):
    return load_data(SynthesisConfig(data_dir=str(mnist_dir), **TINY))


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory, mnist_dir):
    """The same run twice: once as it is, once with the test labels permuted."""
    config = SynthesisConfig(data_dir=str(mnist_dir), **TINY)
    x_test, y_test = tiny_data["test"]
    shuffled = {**tiny_data, "test": (x_test, np.random.default_rng(1).permutation(y_test))}
    out = {}
    for name, data in (("plain", tiny_data), ("shuffled", shuffled)):
        out[name] = tmp_path_factory.mktemp(name)
        synthesize(config, out[name], data=data)
    return out


def read(out, name):
    return json.loads((out / name).read_text())


def test_permuted_test_labels_change_no_decision(runs):
    plain, shuffled = read(runs["plain"], "report.json"), read(runs["shuffled"], "report.json")
    assert drop_timing(read(runs["plain"], "history.json")) == drop_timing(
        read(runs["shuffled"], "history.json")
    )
    for key in ("selection", "chosen", "stop_reason", "growth_stop_reason", "epochs_total",
                "epochs_before_pruning", "params", "flops", "widths", "val_error"):
        assert plain[key] == shuffled[key], key
    for name, entry in plain["selections"].items():
        other = shuffled["selections"][name]
        assert {k: v for k, v in entry.items() if "test_error" not in k} == \
               {k: v for k, v in other.items() if "test_error" not in k}
    # the test labels were read (at the end): permuted, they give chance-level errors
    assert plain["test_error"] < 0.3 < shuffled["test_error"]


def test_every_selection_comes_from_one_trajectory(runs):
    out = runs["plain"]
    report, history = read(out, "report.json"), read(out, "history.json")
    prunes = [r for r in history if r["phase"] == "prune"]
    assert list(report["selections"]) == ["target", "budget-1000000", "budget-1"]
    assert report["selection"] == "budget-1000000"  # the first budget's, when the config names none
    smoothed = smooth([r["val_error"] for r in prunes], TINY["smoothing"])
    sel = report["selections"]
    assert sel["budget-1000000"]["round"] == prunes[int(np.argmin(smoothed))]["round"]
    assert sel["budget-1"]["round"] == prunes[-1]["round"]  # none within budget: the smallest round
    assert sel["budget-1"]["rule"] == "budget" and sel["target"]["rule"] == "target"
    finetunes = [r for r in history if r["phase"] == "finetune"]
    # one fine-tune per distinct chosen round, the headline's last; each selection tested once
    assert len(finetunes) == len({s["round"] for s in sel.values()})
    assert finetunes[-1]["chosen"]["round"] == sel["budget-1000000"]["round"]
    assert sorted(n for r in finetunes for n in r["selections"]) == sorted(sel)
    for entry in sel.values():
        assert (out / entry["model"]).exists() and 0 <= entry["test_error"] <= 1
        assert (
            entry["epochs"]
            == report["epochs_before_pruning"] + entry["round"] + TINY["finetune_epochs"]
        )
    assert report["test_error"] == sel["budget-1000000"]["test_error"]
    assert report["params"] == sel["budget-1000000"]["params"]
    # seed + 2 growth rounds + settle; then 4 prune rounds and every fine-tune
    assert report["epochs_before_pruning"] == 1 + 2 + 1
    assert report["epochs_total"] == 4 + 4 + len(finetunes)
    assert report["growth_stop_reason"].startswith("max_growth_rounds (2) reached")
    for rec in prunes:
        window = [
            r["val_error"]
            for r in prunes
            if rec["round"] - TINY["smoothing"] < r["round"] <= rec["round"]
        ]
        assert rec["smoothed_val_error"] == pytest.approx(np.mean(window))
        assert rec["stop_ceiling"] == pytest.approx(history[3]["val_error"] + 1.0)


def test_prune_only_and_dense_get_the_epochs_they_are_given(tiny_data, tmp_path, mnist_dir):
    base = {**TINY, "max_prune_rounds": 1, "param_budgets": []}
    prune_only = synthesize(
        SynthesisConfig(data_dir=str(mnist_dir), mode="prune-only", dense_epochs=3, **base),
        tmp_path / "p",
        data=tiny_data,
    )
    history = read(tmp_path / "p", "history.json")
    assert [(r["phase"], r["epochs"]) for r in history] == [
        ("dense", 2),
        ("settle", 3),
        ("prune", 4),
        ("finetune", 5),
    ]
    assert (prune_only["epochs_before_pruning"], prune_only["epochs_total"]) == (3, 5)
    assert prune_only["growth_stop_reason"] is None and prune_only["selection"] == "target"
    dense = synthesize(
        SynthesisConfig(data_dir=str(mnist_dir), mode="dense", dense_epochs=2, **base),
        tmp_path / "d",
        data=tiny_data,
    )
    history = read(tmp_path / "d", "history.json")
    assert [(r["phase"], r["epochs"]) for r in history] == [("dense", 1), ("settle", 2)]
    assert dense["selection"] == "dense" and list(dense["selections"]) == ["dense"]
    assert (
        dense["params"] == 266_610 and dense["epochs_total"] == dense["epochs_before_pruning"] == 2
    )
    assert dense["selections"]["dense"]["test_error"] == dense["test_error"] < 0.3


def test_the_ceiling_never_stops_pruning_on_one_reading(tiny_data, tmp_path, mnist_dir):
    # a ceiling at the settled error itself: any worse reading is "too wrong", yet pruning
    # goes on until `smoothing` rounds can be averaged
    config = SynthesisConfig(
        data_dir=str(mnist_dir),
        **{
            **TINY,
            "max_error_increase": 0.0,
            "max_relative_error_increase": 0.0,
            "smoothing": 3,
            "max_prune_rounds": 6,
            "max_growth_rounds": 1,
        },
    )
    report = synthesize(config, tmp_path, data=tiny_data)
    prunes = [r for r in read(tmp_path, "history.json") if r["phase"] == "prune"]
    assert len(prunes) >= 3
    fired = [
        r["round"]
        for r in prunes
        if r["round"] >= 3 and r["smoothed_val_error"] > r["stop_ceiling"]
    ]
    if report["stop_reason"] == "validation error ceiling exceeded":
        assert prunes[-1]["round"] == fired[0]  # it stops at the first smoothed excess, not before
    else:
        assert not fired


def test_even_smoothing_averages_exactly_that_many_rounds():
    errors = [0.1, 0.2, 0.4, 0.8, 1.6]
    np.testing.assert_allclose(smooth(errors, 2), [0.15, 0.3, 0.6, 1.2, 1.6])
    np.testing.assert_allclose(
        smooth(errors, 4),
        [(0.1 + 0.2 + 0.4) / 3, 0.375, 0.75, (0.4 + 0.8 + 1.6) / 3, (0.8 + 1.6) / 2],
    )
    np.testing.assert_allclose(smooth(errors, 3), [0.15, 0.7 / 3, 1.4 / 3, 2.8 / 3, 1.2])
    np.testing.assert_allclose(smooth(errors, 1), errors)
    params = [50, 40, 30, 20, 10]
    rounds = [{"params": p, "val_error": e} for p, e in zip(params, errors, strict=True)]
    assert choose_round(rounds, 2, target_error=0.35)[0] == 1


def test_the_stop_ceiling_scales_with_the_settled_error():
    assert stop_ceiling(0.01, 0.01, 0.5) == pytest.approx(0.02)   # MNIST: the one-point floor
    assert stop_ceiling(0.12, 0.01, 0.5) == pytest.approx(0.18)  # a harder data set: half its error
    assert stop_ceiling(0.12, 0.01, 0.0) == pytest.approx(0.13)


def test_config_selections_and_modes():
    accurate = make_config("lenet-300-100-accurate")
    compact = make_config("lenet-300-100")
    assert (
        accurate.selection_names()
        == compact.selection_names()
        == ["target", "budget-3800", "budget-7800"]
    )
    assert (compact.headline_selection(), accurate.headline_selection()) == (
        "budget-3800",
        "budget-7800",
    )
    assert {k: v for k, v in accurate.to_dict().items() if k != "report_selection"} == \
           {k: v for k, v in compact.to_dict().items() if k != "report_selection"}  # one trajectory
    assert make_config("lenet5").selection_names() == ["target", "budget-5800"]
    assert make_config(None, overrides={"param_budget": 900}).param_budgets == [
        900
    ]  # the earlier key
    assert make_config(None, overrides={"mode": "dense"}).selection_names() == ["dense"]
    with pytest.raises(ValueError, match="dense_epochs=5: expected null in mode 'nest'"):
        make_config(None, overrides={"dense_epochs": 5})
    with pytest.raises(ValueError, match="dense_epochs=2: expected >= settle_epochs"):
        make_config(None, overrides={"mode": "prune-only", "dense_epochs": 2})
    with pytest.raises(ValueError, match="report_selection='budget-5'"):
        make_config(None, overrides={"report_selection": "budget-5", "param_budgets": [6]})
    with pytest.raises(ValueError, match="param_budgets"):
        make_config(None, overrides={"param_budgets": [5, 5]})


def test_new_neurons_take_the_scale_they_are_given():
    net = build("mlp:20-8-6-3", width_scale=1.0, density=0.5, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 20)).astype(np.float32), rng.integers(0, 3, 64)
    report = grow.grow_neurons(net, 0, 1, x, y, birth_ratio=0.5, birth_strength=(1e-3,),
                               weight_scales=(2.0, 3.0))
    assert report.added == 1
    unit = report.units[0]
    w_in = net.layers[0].weight[unit][net.layers[0].mask[unit] != 0]
    assert np.abs(w_in).mean() == pytest.approx(1e-3 * 2.0, rel=1e-5)
    with pytest.raises(ValueError, match="weight_scales"):
        grow.grow_neurons(net, 0, 1, x, y, weight_scales=(1.0, -1.0))


def test_a_short_round_names_the_chunk_rule():
    net = build("mlp:20-8-6-3", width_scale=1.0, density=1.0, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 20)).astype(np.float32), rng.integers(0, 3, 64)
    # beta = 0.25 of the 6 x 20 pairs: 30 pairs per neuron, so 4 chunks for 6 neurons asked
    report = grow.grow_neurons(net, 0, 6, x, y, birth_ratio=0.25, birth_strength=(1e-3,))
    assert report.added == 4
    assert "30 pairs per neuron" in report.reason and "make 4 chunks" in report.reason
    assert "chunk rule caps a round" in report.reason


def test_flops_weighted_kept_area_of_a_conv():
    from nestref.nest import accounting
    net = build("conv:c4k3-p2-d10", width_scale=1.0, density=1.0, seed=0)
    conv = net.layers[[i for i, _ in net.masked_layers()][0]]
    (row,) = [r for r in accounting.layer_table(net) if r["type"] == "Conv2d"]
    assert row["flops_weighted_area"] == 1.0
    out_c, in_c, h, w = conv.n_out, conv.n_in, 26, 26
    area = np.ones((out_c, in_c, h, w), dtype=np.float32)
    area[0, :, : h // 2] = 0           # map 0 keeps half its area ...
    conv.mask[1] = 0                   # ... map 1 has no active weight: it costs nothing either way
    conv.weight[1] = 0
    conv.area_mask = area
    (row,) = [r for r in accounting.layer_table(net) if r["type"] == "Conv2d"]
    # maps 0, 2, 3 are equally dense (density 1): (0.5 + 1 + 1) / 3 of their whole-area FLOPs
    assert row["flops_weighted_area"] == pytest.approx(2.5 / 3)
    assert row["area_density"] == pytest.approx(1 - 0.5 / out_c)
