"""The walk-through of notebooks 05 and 06 (nestref.tools.walkthrough, with the layer table's text
form in nestref.nest.accounting and its figures in nestref.run.plots): study cells opened as
``nestref study run`` opens them, and what is read back from them."""
import json

import matplotlib
import numpy as np
import pytest

from nestref.errors import InvalidArgumentError
from nestref.nest import architectures
from nestref.nest.accounting import format_layer_table, layer_table
from nestref.nest.networks import lenet5
from nestref.run import plots
from nestref.run.checkpoint import load_checkpoint
from nestref.tools import study, walkthrough

matplotlib.use("Agg")

# the quick budget, smaller still: seconds per run (as in test_study.py)
TINY = {
    **architectures.get("lenet-300-100").quick,
    "train_limit": 1000,
    "n_val": 200,
    "max_prune_rounds": 3,
    "max_growth_rounds": 1,
}
ARCH = "lenet-300-100"


def test_the_study_runs_dir_comes_from_the_environment_or_the_study_default(tmp_path):
    repo = tmp_path / "repo"
    assert walkthrough.study_runs_dir(repo, {}) == repo / "runs" / "study"
    assert walkthrough.study_runs_dir(repo, {"NESTREF_STUDY_RUNS": ""}) == repo / "runs/study"
    assert walkthrough.study_runs_dir(repo, {"NESTREF_STUDY_RUNS": "elsewhere/cells"}) == \
        repo / "elsewhere" / "cells"
    assert walkthrough.study_runs_dir(repo, {"NESTREF_STUDY_RUNS": str(tmp_path / "abs")}) == \
        tmp_path / "abs"


def test_the_walked_cells_are_the_studys_and_a_finished_one_is_only_loaded(tmp_path, mnist_dir):
    runs = tmp_path / "runs"
    overrides = {**TINY, "data_dir": str(mnist_dir)}
    nest_dir = study.cell_dir(runs, ARCH, "nest", 0)
    assert walkthrough.cell_state(nest_dir).startswith("not there")
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / "checkpoint.npz").touch()
    assert walkthrough.cell_state(interrupted).startswith("interrupted")
    with pytest.raises(InvalidArgumentError, match="NeST"):
        walkthrough.synthesize_cell(ARCH, "prune-only", runs, 0, overrides)
    with pytest.raises(InvalidArgumentError, match="method"):
        walkthrough.synthesize_cell(ARCH, "dense", runs, 0, overrides)

    seen = []
    nest = walkthrough.synthesize_cell(ARCH, "nest", runs, 0, overrides, test_limit=300,
                                       on_round=seen.append)
    assert nest["dir"] == nest_dir and walkthrough.cell_state(nest_dir).startswith("finished")
    assert nest["config"] == study.cell_config(ARCH, "nest", 0, overrides)
    assert nest["report"] == json.loads((nest_dir / "report.json").read_text())
    assert nest["history"] == seen and seen[0]["phase"] == "seed"

    baseline = walkthrough.synthesize_cell(ARCH, "prune-only", runs, 0, overrides, test_limit=300)
    assert baseline["dir"] == study.cell_dir(runs, ARCH, "prune-only", 0)
    assert baseline["config"] == study.cell_config(ARCH, "prune-only", 0, overrides,
                                                   nest["report"])
    assert baseline["report"]["config"]["dense_epochs"] == nest["report"]["epochs_before_pruning"]
    assert baseline["history"][0]["phase"] == "dense"

    rerun = []  # finished: loaded, no round runs again
    again = walkthrough.synthesize_cell(ARCH, "nest", runs, 0, overrides, test_limit=300,
                                        on_round=rerun.append)
    assert rerun == [] and again["history"] == nest["history"]
    assert again["report"]["test_error"] == nest["report"]["test_error"]

    # what the notebooks read back: the text lines and the survival counts
    report, history = nest["report"], nest["history"]
    lines = walkthrough.growth_lines(history)
    assert len(lines) == sum(r["phase"] == "grow" for r in history)
    assert all(line.startswith(f"round {r['round']}: +")
               for line, r in zip(lines, [r for r in history if r["phase"] == "grow"],
                                  strict=True))
    assert walkthrough.round_line(history[0]).split()[:2] == ["seed", "0"]
    summary = walkthrough.report_summary(report)
    assert f"test error {100 * report['test_error']:.2f}%" in summary
    assert f"{report['params']:,} params" in summary and len(summary.splitlines()) == 3

    net, _, _ = load_checkpoint(nest["dir"] / "checkpoint.npz")
    survival = walkthrough.unit_survival(history, report["alive"])
    positions = [i for i, _ in net.masked_layers()][:-1]
    assert survival["layers"] == positions
    assert survival["seed_alive"] == [int((~net.layers[p].grown).sum()) for p in positions]
    assert survival["grown_alive"] == [int(net.layers[p].grown.sum()) for p in positions]
    first_prune = next(i for i, r in enumerate(history) if r["phase"] == "prune")
    widths = history[first_prune - 1]["widths"]
    assert [s + g for s, g in zip(survival["seed_before"], survival["grown_before"],
                                  strict=True)] == widths[:len(positions)]
    assert survival["seed_before"] == history[0]["widths"][:len(positions)]  # seed units only


def _alive(per_layer):
    return {"per_layer": [{"layer": k, "seed": s, "grown": g} for k, s, g in per_layer]}


def test_unit_survival_counts_by_provenance_from_the_records():
    history = [
        {"phase": "seed", "alive": _alive([(0, 12, 0), (2, 4, 0)])},
        {"phase": "grow", "alive": _alive([(0, 12, 5), (2, 4, 3)])},
        {"phase": "prune", "alive": _alive([(0, 10, 5), (2, 4, 1)])},
    ]
    survival = walkthrough.unit_survival(history, _alive([(0, 9, 2), (2, 3, 0)]))
    assert survival == {"layers": [0, 2], "seed_before": [12, 4], "grown_before": [5, 3],
                        "seed_alive": [9, 3], "grown_alive": [2, 0]}
    assert walkthrough.survival_lines(survival) == [
        "hidden layer 0: seed 9/12 survive, grown 2/5",
        "hidden layer 2: seed 3/4 survive, grown 0/3",
        "overall: 12 of 16 seed units and 2 of 8 grown units survive",
    ]
    with pytest.raises(InvalidArgumentError, match="no pruning round"):
        walkthrough.unit_survival(history[:2], _alive([]))


def test_the_layer_table_text_holds_every_row_and_the_totals():
    net = lenet5(width_scale=0.5, density=0.3, seed=0)
    net.layers[0].area_mask = np.ones((10, 1, 24, 24))
    net.layers[0].area_mask[:, :, :12] = 0
    rows = layer_table(net)
    lines = format_layer_table(rows).splitlines()
    assert len(lines) == len(rows) + 2 and lines[0].split()[:2] == ["layer", "type"]
    for row, line in zip(rows, lines[1:-1], strict=True):
        assert line.split()[:2] == [str(row["position"]), row["type"]]
        assert f"{row['params']:,}" in line and f"{row['flops']:,}" in line
    assert lines[1].endswith("area kept 0.50") and "area kept" not in lines[-2]
    total = lines[-1].split()
    assert total[0] == "total"
    assert total[1:] == [f"{sum(r[key] for r in rows):,}" for key in ("active", "params", "flops")]


def test_arch_rows_keeps_one_arch_and_needs_no_file(tmp_path):
    path = tmp_path / "runs.json"
    assert walkthrough.arch_rows(path, ARCH) == []
    row = {"method": "nest", "selection": "target", "test_error": 0.01, "val_error": 0.01,
           "params": 4000, "flops": 8000, "epochs_total": 200, "epochs_before_pruning": 40,
           "wall_seconds": 100.0, "commit": "0" * 40}
    rows = [{**row, "arch": ARCH, "seed": 0}, {**row, "arch": "lenet5", "seed": 0},
            {**row, "arch": ARCH, "seed": 1}]
    path.write_text(json.dumps(rows))
    assert walkthrough.arch_rows(path, ARCH) == [rows[0], rows[2]]


# ------------------------------------------------------------------------------ figures
def _history():
    return [{"phase": "seed", "round": 0, "params": 900, "val_error": 0.2},
            {"phase": "prune", "round": 1, "params": 500, "val_error": 0.1},
            {"phase": "prune", "round": 2, "params": 300, "val_error": 0.15}]


def test_validation_error_curve_marks_the_chosen_round():
    ax = plots.validation_error_curve(_history(), chosen_round=2)
    marks = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [2, 2]
    ax = plots.validation_error_curve(_history())
    assert not [line for line in ax.get_lines() if line.get_linestyle() == ":"]


def test_error_vs_size_draws_each_runs_rounds_and_its_final_point():
    runs = [("NeST", {"params": 310, "test_error": 0.12}, _history()),
            ("pruning only", {"params": 450, "test_error": 0.3}, _history()[:2])]
    ax = plots.error_vs_size(runs, "title")
    lines = ax.get_lines()
    assert len(lines) == 4 and ax.get_title() == "title"
    assert list(lines[0].get_xdata()) == [500, 300]
    assert np.allclose(lines[0].get_ydata(), [10, 15])
    assert list(lines[1].get_xdata()) == [310] and np.allclose(lines[1].get_ydata(), [12])
    assert list(lines[2].get_xdata()) == [500] and np.allclose(lines[3].get_ydata(), [30])


def test_unit_survival_bars_draws_the_counts():
    survival = {"layers": [0, 2], "seed_before": [12, 4], "grown_before": [5, 3],
                "seed_alive": [9, 3], "grown_alive": [2, 0]}
    ax = plots.unit_survival_bars(survival)
    heights = [[bar.get_height() for bar in bars] for bars in ax.containers]
    assert heights == [[12, 4], [9, 3], [5, 3], [2, 0]]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["hidden layer 0", "hidden layer 2"]



def test_area_masks_on_image_overlays_each_kept_area_where_it_sits():
    area = np.zeros((3, 1, 24, 24))
    area[0, 0, :12] = 1          # map 0: the top half of its positions
    area[2, 0, 5, 7] = 1         # map 2: one position
    image = np.random.default_rng(0).random((28, 28))
    fig = plots.area_masks_on_image(area, image, max_cols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 4 and len(visible) == 3  # 2 x 2 panels, one spare hidden
    assert [ax.get_title() for ax in visible] == ["map 0: 288/576", "map 1: 0/576", "map 2: 1/576"]
    for o, ax in enumerate(visible):
        base, overlay = (im.get_array() for im in ax.get_images())
        assert np.array_equal(base, image)
        shown = ~np.ma.getmaskarray(overlay)
        expected = np.zeros((28, 28), bool)
        expected[2:26, 2:26] = area[o, 0] != 0  # a valid 5x5 conv's outputs sit 2 pixels in
        assert np.array_equal(shown, expected)
