"""The first command's table: the run is one seed, and the study's mean of the same recipe
stands beside it, read from the study's rows."""
import json
from pathlib import Path

import numpy as np
import pytest

from nestref.cli.main import _format_report, main
from nestref.nest import architectures
from nestref.tools.paper import comparison_table
from nestref.tools.study import cell_config, committed_rows_file, read_rows, study_mean_for

MNIST_SHA = "b8b7265f243a8ef26faf51807f6e84d36eebf065aa131b55e6b7203d6d099bdf"


def first_command_report(seed=0, **changes):
    """A report as `nestref synthesize --arch lenet-300-100` writes it (the figures made up)."""
    config = {**cell_config("lenet-300-100", "nest", seed).to_dict(), **changes}
    return {"arch": "lenet-300-100", "mode": "nest", "seed": seed, "selection": "budget-3800",
            "augment": config["augment"], "test_error": 0.0165, "params": 3591, "flops": 7100,
            "params_compression": 74.2, "flops_compression": 75.0,
            "dense_baseline": {"params": 266_610, "flops": 532_400},
            "data": {"name": "mnist", "checksum": MNIST_SHA}, "config": config}


def study_row(seed, error, params, selection="budget-3800", **changes):
    return {"arch": "lenet-300-100", "method": "nest", "seed": seed, "selection": selection,
            "test_error": error, "params": params, "flops": 2 * params, "val_error": error,
            "epochs_total": 90, "epochs_before_pruning": 40, "data_checksum": MNIST_SHA,
            "overrides": {}, **changes}


ROWS = [study_row(0, 0.0142, 3777), study_row(1, 0.0150, 3700), study_row(2, 0.0140, 3650),
        study_row(0, 0.0096, 10_900, selection="target"),
        study_row(3, 0.03, 3700, overrides={"lr": 0.5})]


def test_the_study_mean_is_of_the_same_selection_recipe_and_data():
    mean = study_mean_for(first_command_report(), ROWS)
    assert mean["seeds"] == [0, 1, 2]  # not the target row, nor the cell run with other settings
    assert mean["test_error"] == pytest.approx(np.mean([0.0142, 0.0150, 0.0140]))
    assert mean["params"] == pytest.approx(np.mean([3777, 3700, 3650]))


@pytest.mark.parametrize("report", [
    first_command_report(lr=0.5),  # the user changed a setting: not the study's recipe
    {**first_command_report(), "data": {"name": "fashion", "checksum": "0" * 64}},
    {**first_command_report(), "mode": "prune-only"},
])
def test_no_study_mean_for_another_recipe_or_data(report):
    assert study_mean_for(report, ROWS) is None


def test_the_table_shows_the_run_as_one_seed_and_the_mean_beside_it():
    report = first_command_report()
    mean = study_mean_for(report, ROWS)
    table = comparison_table([("NeST, seed 0", report)], [("NeST, mean of 3 seeds", mean, report)])
    run_line, mean_line = table.splitlines()[-2:]
    assert "| nestref | NeST, seed 0, augmented | 1.65% | 3.6K (74.2x)" in run_line
    assert mean_line.startswith(
        "| lenet-300-100 | nestref study | NeST, mean of 3 seeds | 1.44% +- ")
    assert f"({266_610 / mean['params']:.1f}x)" in mean_line


def test_the_first_command_prints_the_committed_study_mean():
    rows_file = committed_rows_file()
    if rows_file is None:
        pytest.skip("not a source checkout with the study's rows")
    printed = _format_report(first_command_report())
    mean = study_mean_for(first_command_report(), read_rows(rows_file))
    assert f"mean of {len(mean['seeds'])} seeds | {100 * mean['test_error']:.2f}%" in printed
    assert "one seed, one draw" in printed


def test_the_quick_first_command_runs_the_smoke_budget_beside_the_real_run(mnist_dir, capsys):
    # the tests run in an empty temporary directory (conftest), so runs/ is made there
    assert main(["synthesize", "--arch", "lenet-300-100", "--quick", "--no-progress",
                 "--data-dir", str(mnist_dir)]) == 0
    report = json.loads(Path("runs/lenet-300-100-quick/report.json").read_text())
    assert report["config"]["train_limit"] == architectures.get("lenet-300-100").quick[
        "train_limit"]
    assert not Path("runs/lenet-300-100").exists()  # the real run's place stays free
    assert "NeST [budget-3800], seed 0" in capsys.readouterr().out
