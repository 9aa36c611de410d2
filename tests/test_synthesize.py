"""A small NeST synthesis on an MNIST subset: growth grows, pruning prunes, resume is exact."""
import json
import shutil

import numpy as np
import pytest

from nestref.cli.main import main
from nestref.core.network import Network
from nestref.data.storage import load_arrays
from nestref.errors import DataError, OutputExistsError, TrainingDiverged
from nestref.nest.config import PRESETS, SynthesisConfig, make_config, parse_override
from nestref.run.checkpoint import resume_checkpoint
from nestref.run.compact import load_compact
from nestref.run.run_files import check_run_dir, clear_run_files
from nestref.run.synthesize import choose_round, load_data, over_budget_warnings, synthesize

TINY = dict(
    train_limit=3000,
    n_val=500,
    initial_epochs=1,
    growth_epochs=1,
    max_growth_rounds=2,
    patience=5,
    growth_batch_size=256,
    growth_batches=4,
    prune_epochs=1,
    max_prune_rounds=3,
    prune_fractions=[0.5, 0.4, 0.1],
    finetune_epochs=1,
    settle_epochs=1,
    max_error_increase=1.0,
    prune_floor_params=100,
    batch_size=100,
)


@pytest.fixture(scope="module")
def tiny_data(mnist_dir):
    return load_data(SynthesisConfig(data_dir=str(mnist_dir), **TINY))


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("run")
    config = SynthesisConfig(data_dir=str(mnist_dir), **TINY)
    report = synthesize(config, out, data=tiny_data)
    return out, report


def test_growth_grows_and_pruning_prunes(tiny_run):
    out, report = tiny_run
    history = json.loads((out / "history.json").read_text())
    phases = [r["phase"] for r in history]
    assert phases == ["seed", "grow", "grow", "settle", "prune", "prune", "prune", "finetune"]
    seed, grown = history[0], history[2]
    assert grown["params"] > seed["params"]
    assert any(
        w_g > w_s for w_g, w_s in zip(grown["widths"][:-1], seed["widths"][:-1], strict=True)
    )  # neurons were born
    prune_params = [r["params"] for r in history if r["phase"] == "prune"]
    assert prune_params[0] < grown["params"] and all(
        b < a for a, b in zip(prune_params, prune_params[1:], strict=False)
    )
    for rec in history:
        assert {
            "phase",
            "params",
            "flops",
            "widths",
            "densities",
            "val_error",
            "seconds",
            "alive",
        } <= set(rec)
    assert all(r["pruning"][0]["threshold"] > 0 for r in history if r["phase"] == "prune")


def test_result_is_accurate_compact_and_reported(tiny_run, tiny_data):
    out, report = tiny_run
    assert report["test_error"] < 0.2  # chance is 0.9; 2,500 training images, a handful of epochs
    assert report["compact_test_error"] == pytest.approx(report["test_error"], abs=1e-4)
    assert report["params"] < report["max_params_during_growth"]
    assert report["params_compression"] == pytest.approx(266_610 / report["params"])
    assert json.loads((out / "report.json").read_text())["params"] == report["params"]
    for name in ("grow_prune_curve", "validation_error", "widths_densities", "first_layer_masks"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    cnet = load_compact(out / "model.npz")
    x = tiny_data["test"][0][:200].reshape(200, -1).astype(np.float32) / 255
    assert (cnet.predict(x).argmax(1) != tiny_data["test"][1][:200]).mean() < 0.3


def test_every_file_a_finished_run_wrote_is_its_own_so_overwrite_empties_a_copy(tiny_run, tmp_path):
    out, report = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert (copy / report["selections"]["target"]["model"]).is_file()
    assert any((copy / "rounds").glob("finetuned-*.npz")) and (copy / "nestref-run.json").is_file()
    with pytest.raises(OutputExistsError, match="holds a nestref run"):
        check_run_dir(copy)
    assert check_run_dir(copy, overwrite=True) is False
    clear_run_files(copy)
    assert list(copy.iterdir()) == []


def test_overwrite_with_data_that_cannot_load_leaves_the_old_run_as_it_was(tiny_run, tmp_path):
    out, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    config = SynthesisConfig(data_dir=str(tmp_path / "no-mnist-here"), **TINY)
    with pytest.raises(DataError, match="no-mnist-here: no such file"):
        synthesize(config, copy, overwrite=True)
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


def interrupt_in_second_pruning_round(config, out, data):
    """Start a run in ``out`` and stop it (KeyboardInterrupt) after its second pruning round."""
    seen = []

    def interrupt_in_pruning(rec):
        seen.append(rec["phase"])
        if seen.count("prune") == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(config, out, on_round=interrupt_in_pruning, data=data)


def test_interrupted_run_resumes_to_the_same_result(tiny_run, tiny_data, tmp_path, mnist_dir):
    out, report = tiny_run
    config = SynthesisConfig(data_dir=str(mnist_dir), **TINY)
    interrupt_in_second_pruning_round(config, tmp_path, tiny_data)
    assert not (tmp_path / "report.json").exists()
    resumed = synthesize(config, tmp_path, resume=True, data=tiny_data)
    assert resumed["params"] == report["params"] and resumed["test_error"] == report["test_error"]
    a = Network.from_arrays(load_arrays(out / "checkpoint.npz"))
    b = Network.from_arrays(load_arrays(tmp_path / "checkpoint.npz"))
    for (_, la), (_, lb) in zip(a.masked_layers(), b.masked_layers(), strict=True):
        np.testing.assert_array_equal(la.weight, lb.weight)
        np.testing.assert_array_equal(la.mask, lb.mask)


@pytest.mark.parametrize("stop_at_epoch", [3, 5])  # inside the dense step; inside settle
def test_a_run_interrupted_between_epochs_resumes_from_its_last_epoch(
        tiny_data, tmp_path, mnist_dir, stop_at_epoch):
    # a dense cell trains dense_epochs - settle_epochs (here 3) in one step: an interrupt
    # inside it must not throw away the epochs already trained
    config = SynthesisConfig(data_dir=str(mnist_dir), mode="dense",
                             **{**TINY, "train_limit": 1000, "dense_epochs": 5,
                                "settle_epochs": 2})
    whole = synthesize(config, tmp_path / "whole", data=tiny_data)
    epochs_started = []

    def interrupt(batch, n_batches, loss):
        epochs_started.append(batch == 0)
        if batch == 0 and sum(epochs_started) == stop_at_epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(config, tmp_path / "cut", on_batch=interrupt, data=tiny_data)
    _, _, saved, _ = resume_checkpoint(tmp_path / "cut" / "checkpoint.npz")
    assert saved["run"]["phase"] == ("seed" if stop_at_epoch <= 3 else "settle")
    assert saved["run"]["step_epochs"] == (stop_at_epoch - 1 if stop_at_epoch <= 3 else 1)
    resumed = synthesize(config, tmp_path / "cut", resume=True, data=tiny_data)
    assert resumed["test_error"] == whole["test_error"]
    assert resumed["epochs_total"] == whole["epochs_total"] == 5
    a = Network.from_arrays(load_arrays(tmp_path / "whole" / "checkpoint.npz"))
    b = Network.from_arrays(load_arrays(tmp_path / "cut" / "checkpoint.npz"))
    for (_, la), (_, lb) in zip(a.masked_layers(), b.masked_layers(), strict=True):
        np.testing.assert_array_equal(la.weight, lb.weight)


def test_resume_falls_back_to_the_previous_checkpoint_and_still_reaches_the_same_result(
        tiny_run, tiny_data, tmp_path, mnist_dir):
    out, report = tiny_run
    config = SynthesisConfig(data_dir=str(mnist_dir), **TINY)
    interrupt_in_second_pruning_round(config, tmp_path, tiny_data)
    assert (tmp_path / "checkpoint.prev.npz").exists()
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 cut short by a crash")
    warnings = []
    resumed = synthesize(config, tmp_path, resume=True, data=tiny_data, on_warning=warnings.append)
    assert (
        len(warnings) == 1
        and "checkpoint.prev.npz" in warnings[0]
        and resumed["warnings"] == warnings
    )
    assert resumed["params"] == report["params"] and resumed["test_error"] == report["test_error"]


def test_after_a_divergence_the_advice_given_works(tiny_data, tmp_path, mnist_dir):
    quick = {**TINY, "max_growth_rounds": 1, "max_prune_rounds": 1}
    advice = r"prune phase.*--resume --set prune_lr="
    with pytest.raises(TrainingDiverged, match=advice) as diverged:
        synthesize(
            SynthesisConfig(data_dir=str(mnist_dir), **quick, prune_lr=1e4),
            tmp_path,
            data=tiny_data,
        )
    assert str(tmp_path / "checkpoint.npz") in str(diverged.value)
    report = synthesize(
        SynthesisConfig(data_dir=str(mnist_dir), **quick, prune_lr=0.02),
        tmp_path,
        resume=True,
        data=tiny_data,
    )
    assert report["config"]["prune_lr"] == 0.02 and report["test_error"] < 0.5
    assert report["config_changes"] == [
        {"phase": "prune", "round": 0, "changed": {"prune_lr": [1e4, 0.02]}}
    ]


def test_resume_with_another_config_is_refused(tiny_run, tiny_data, mnist_dir):
    out, _ = tiny_run
    other = SynthesisConfig(data_dir=str(mnist_dir), **{**TINY, "growth_ratio": 0.2})
    with pytest.raises(ValueError, match="different config.*growth_ratio"):
        synthesize(other, out, resume=True, data=tiny_data)


def test_prune_only_mode_starts_dense(tiny_data, tmp_path, mnist_dir):
    config = SynthesisConfig(
        data_dir=str(mnist_dir), mode="prune-only", **{**TINY, "max_prune_rounds": 1}
    )
    report = synthesize(config, tmp_path, data=tiny_data)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["phase"] for r in history] == ["dense", "settle", "prune", "finetune"]
    assert history[0]["params"] == 266_610
    assert report["params"] < 266_610


def test_choose_round_uses_smoothed_error():
    rounds = [{"params": p, "val_error": e} for p, e in
              [(1000, 0.020), (800, 0.021), (600, 0.019), (400, 0.030), (300, 0.026), (200, 0.040)]]
    # a lucky dip at 600 params is averaged with its neighbours, and no longer meets the target
    index, smoothed = choose_round(rounds, 3, target_error=0.022)
    assert index == 1 and smoothed[2] == pytest.approx((0.021 + 0.019 + 0.030) / 3)
    index, _ = choose_round(rounds, 1, target_error=0.022)  # unsmoothed, the dip wins
    assert index == 2
    index, _ = choose_round(rounds, 3, param_budget=450)
    assert rounds[index]["params"] <= 450


@pytest.mark.parametrize("overrides, message", [
    ({"growth_ratio": 1.5}, "growth_ratio=1.5: expected a number in \\(0, 1\\]"),
    ({"lr": -1}, "lr=-1: expected a number > 0"),
    ({"mode": "grow-only"}, "mode='grow-only'"),
    ({"max_prune_rounds": 2.5}, "max_prune_rounds=2.5: expected an integer"),
    ({"learning_rate": 0.1}, "unknown config key.*learning_rate"),
])
def test_bad_configs_fail_with_a_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config("lenet-300-100", overrides=overrides)


def test_config_files_and_overrides(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('arch = "lenet5"\nlr = 0.03\nprune_fractions = [0.1, 0.1, 0.05, 0.02]\n')
    config = make_config(None, toml, dict([parse_override("seed=3")]))
    assert (config.arch, config.lr, config.seed) == ("lenet5", 0.03, 3)
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        make_config(None, bad)
    assert set(PRESETS) >= {"lenet-300-100", "lenet5"}


def test_synthesize_command_fails_before_training_without_data(tmp_path, offline, capsys):
    code = main(
        ["synthesize", "--arch", "lenet-300-100", "--out", str(tmp_path / "run"), "--no-progress"]
    )
    assert code == 1 and "MNIST not found" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
    assert main(["synthesize", "--set", "lr=-3", "--out", str(tmp_path / "run")]) == 2
    assert "lr=-3" in capsys.readouterr().err


@pytest.mark.parametrize("args, preset", [
    ([], "preset lenet-300-100"),                 # no --arch: the default arch, and its recipe
    (["--set", "arch=lenet5"], "preset lenet5"),
    (["--preset", "lenet5"], "preset lenet5"),
])
def test_synthesize_names_the_recipe_it_runs(tmp_path, offline, capsys, args, preset):
    assert main(["synthesize", *args, "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    assert f", {preset}, output" in capsys.readouterr().out


@pytest.mark.slow
def test_small_lenet5_synthesis_grows_maps_and_prunes_areas(tmp_path, mnist_dir):
    config = SynthesisConfig(
        data_dir=str(mnist_dir),
        arch="lenet5",
        width_scale=0.3,
        density=0.3,
        lr=0.02,
        prune_lr=0.01,
        **{
            **TINY,
            "train_limit": 1500,
            "n_val": 300,
            "max_growth_rounds": 1,
            "max_prune_rounds": 2,
            "prune_fractions": [0.1, 0.3, 0.4, 0.1],
            "area_fraction": 0.2,
            "growth_batches": 2,
        },
    )
    report = synthesize(config, tmp_path)
    history = json.loads((tmp_path / "history.json").read_text())
    grow_round = next(r for r in history if r["phase"] == "grow")
    assert grow_round["widths"][:2] > history[0]["widths"][:2]  # feature maps were born
    area = [a for r in history if r["phase"] == "prune" for a in r["partial_area"]]
    assert len(area) == 4 and all(a["removed"] > 0 for a in area)
    assert report["flops"] < grow_round["flops"]
    assert report["compact_test_error"] == pytest.approx(report["test_error"], abs=1e-4)


def test_load_run_returns_what_the_run_wrote(tiny_run):
    from nestref.run.synthesize import load_run
    out, report = tiny_run
    loaded, history, net = load_run(out)
    assert loaded["params"] == report["params"] and history[-1]["phase"] == "finetune"
    assert net.widths() == report["widths"]
    assert sum(p["grown"] for p in report["alive"]["per_layer"]) == report["alive"]["grown"]
    with pytest.raises(FileNotFoundError, match="finished nestref synthesize run"):
        load_run(out / "rounds")


def _report(arch, mode, test_error, params, flops, baseline):
    return {"arch": arch, "mode": mode, "test_error": test_error, "params": params,
            "flops": flops, "params_compression": baseline[0] / params,
            "flops_compression": baseline[1] / flops, "selection": "target"}


def test_nestref_report_puts_nest_dense_and_spec_runs_beside_the_paper(tmp_path, capsys):
    runs = {
        "l3": _report("lenet-300-100", "nest", 0.015, 3800, 7600, (266_610, 532_400)),
        "l3-dense": _report("lenet-300-100", "dense", 0.007, 266_610, 532_400, (266_610, 532_400)),
        "mlp": _report("mlp:784-64-10", "prune-only", 0.05, 2000, 4000, (50_890, 101_632)),
    }
    for name, report in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(report))
    assert main(["report", *(str(tmp_path / n) for n in runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("| lenet-300-100 | paper | NeST") for line in lines)
    ours = [line for line in lines if "| nestref |" in line]
    assert [line.split(" | ")[2] for line in ours] == [
        "NeST (l3) [target]", "dense (l3-dense) [target]", "pruning only (mlp) [target]"]
    assert "1.50% | 3.8K (70.2x)" in ours[0] and "0.70% | 266.6K (1.0x)" in ours[1]
    # no paper rows for an architecture the paper did not run
    assert not any("mlp:784-64-10 | paper" in line for line in lines)



def test_a_budget_selection_above_its_budget_is_warned_of():
    selections = {"target": {"param_budget": None, "params": 9000},
                  "budget-3800": {"param_budget": 3800, "params": 4100},
                  "budget-7800": {"param_budget": 7800, "params": 7100}}
    assert over_budget_warnings(selections) == [
        "selection budget-3800: pruning stopped at 4,100 params, above the budget of 3,800 "
        "(prune_floor_params, max_prune_rounds or max_error_increase ended it first); the "
        "selection is the run's smallest network"]


def test_the_report_carries_the_over_budget_warnings(tiny_run):
    _, report = tiny_run
    expected = over_budget_warnings(report["selections"])
    assert [w for w in report["warnings"] if w.startswith("selection ")] == expected
