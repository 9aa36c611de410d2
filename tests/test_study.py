"""`nestref study`: the grid resumes run by run, prune-only gets NeST's epochs, and the
table (means, paired differences, t-intervals) comes from the rows alone."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nestref.cli.main import main
from nestref.errors import ReportError
from nestref.nest import architectures
from nestref.run.checkpoint import load_checkpoint
from nestref.run.plots import frontier_figure
from nestref.tools import study

# the quick budget, smaller still: seconds per run
TINY = {
    **architectures.get("lenet-300-100").quick,
    "train_limit": 1000,
    "n_val": 200,
    "max_prune_rounds": 3,
    "max_growth_rounds": 1,
}


def test_an_interrupted_grid_resumes_and_never_redoes_a_finished_run(
        tmp_path, mnist_dir, monkeypatch):
    runs, rows_path = tmp_path / "runs", tmp_path / "runs.json"
    overrides = {**TINY, "data_dir": str(mnist_dir)}
    calls = []
    real = study.synthesize

    def synthesize(config, out, resume=False, **kwargs):
        calls.append(config.mode)
        seen = []

        def interrupt_prune_only(rec):
            seen.append(rec["phase"])
            if config.mode == "prune-only" and len(calls) == 2 and seen.count("prune") == 2:
                raise KeyboardInterrupt
        return real(config, out, resume=resume, on_round=interrupt_prune_only, **kwargs)

    monkeypatch.setattr(study, "synthesize", synthesize)
    grid = dict(archs=["lenet-300-100"], methods=["nest", "prune-only"], seeds=[0], runs_dir=runs,
                rows_path=rows_path, overrides=overrides, jobs=1)
    with pytest.raises(KeyboardInterrupt):
        study.run_grid(**grid)
    nest_dir, prune_dir = (
        study.cell_dir(runs, "lenet-300-100", m, 0) for m in ("nest", "prune-only")
    )
    rows = json.loads(rows_path.read_text())
    assert {r["method"] for r in rows} == {"nest"}  # the finished run's rows are written at once
    assert not (prune_dir / "report.json").exists()
    _, _, saved = load_checkpoint(prune_dir / "checkpoint.npz")
    before = saved["history"]
    nest_written = (nest_dir / "report.json").stat().st_mtime_ns

    assert study.run_grid(**grid) == {("lenet-300-100", "nest", 0): "finished before",
                                      ("lenet-300-100", "prune-only", 0): "resumed"}
    assert calls == ["nest", "prune-only", "prune-only"]  # NeST was not run again
    assert (nest_dir / "report.json").stat().st_mtime_ns == nest_written
    history = json.loads((prune_dir / "history.json").read_text())
    assert [r["phase"] for r in before] == ["dense", "settle", "prune"]
    assert history[:len(before)] == before  # continued from the checkpoint, not started over
    rows = json.loads(rows_path.read_text())
    by = {(r["method"], r["selection"]): r for r in rows}
    assert len(rows) == 6 and set(by) == {(m, s) for m in ("nest", "prune-only")
                                          for s in ("target", "budget-3800", "budget-7800")}
    nest_report = json.loads((nest_dir / "report.json").read_text())
    for row in rows:  # equal training before pruning, read from the NeST sibling
        assert row["epochs_before_pruning"] == nest_report["epochs_before_pruning"]
        assert set(study.ROW_FIELDS) <= set(row) and row["augment"] is True and row["trajectory"]
        assert "nestref study run --arch lenet-300-100" in row["command"]
    assert json.loads((prune_dir / "report.json").read_text())["config"]["dense_epochs"] == \
        nest_report["epochs_before_pruning"]

    assert set(study.run_grid(**grid).values()) == {"finished before"}
    assert (
        len(calls) == 3 and json.loads(rows_path.read_text()) == rows
    )  # nothing run, no row twice
    with pytest.raises(ValueError, match="another config"):
        study.run_grid(**{**grid, "overrides": {**overrides, "finetune_epochs": 2}})


def test_prune_only_without_its_nest_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs the NeST run of the same arch and seed"):
        study.run_grid(
            ["lenet-300-100"],
            ["prune-only"],
            [0],
            tmp_path / "runs",
            tmp_path / "rows.json",
            overrides=TINY,
        )
    assert not (tmp_path / "rows.json").exists()


def synthetic_rows():
    """Three seeds of NeST and pruning only at one budget, and dense: made-up numbers for the
    table."""
    nest, prune, dense = [0.015, 0.016, 0.018], [0.017, 0.0165, 0.019], [0.0150, 0.0152, 0.0149]
    rows = []
    for method, errors, selection in (("nest", nest, "budget-3800"),
                                      ("prune-only", prune, "budget-3800"),
                                      ("dense", dense, "dense")):
        for seed, error in enumerate(errors):
            params = 266_610 if method == "dense" else 3700 + 10 * seed
            rows.append(
                {
                    "arch": "lenet-300-100",
                    "method": method,
                    "seed": seed,
                    "selection": selection,
                    "test_error": error,
                    "val_error": error + 0.001,
                    "params": params,
                    "flops": 2 * params,
                    "epochs_total": 90,
                    "epochs_before_pruning": 40,
                    "augment": True,
                    "wall_seconds": 1.0,
                    "commit": "0" * 40,
                    "command": "nestref study run",
                    "trajectory": []
                    if method == "dense"
                    else [[200_000 / 2**k, 0.012 + 0.0005 * k + 0.001 * seed] for k in range(8)],
                }
            )
    return rows


def test_the_paired_interval_is_the_hand_computed_one():
    (diff,) = study.paired_differences(synthetic_rows())
    # NeST minus pruning only per seed: -0.002, -0.0005, -0.001
    d = [-0.002, -0.0005, -0.001]
    mean = sum(d) / 3                                        # -0.00116667
    s = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)      # 0.00076376
    half = 4.302653 * s / math.sqrt(3)                       # t_{0.975, 2} = 4.302653
    assert (diff["arch"], diff["selection"], diff["n"], diff["seeds"]) == (
        "lenet-300-100",
        "budget-3800",
        3,
        [0, 1, 2],
    )
    assert diff["mean"] == pytest.approx(-0.0011666667, abs=1e-9)
    assert diff["low"] == pytest.approx(mean - half, abs=1e-9) and diff["low"] == pytest.approx(
        -0.0030640, abs=1e-6
    )
    assert diff["high"] == pytest.approx(0.0007307, abs=1e-6)
    assert study.verdict(diff) == "within noise (interval holds 0)"


def test_the_claims_are_read_from_the_rows_with_hand_computed_intervals():
    readings = {c["claim"]: c for c in study.claims(synthetic_rows())}
    paper = readings["lenet-300-100 NeST at <= 3.8K params reaches the paper's 1.58% test error"]
    # NeST errors 1.5, 1.6, 1.8%: mean 1.633%, s = 0.1528 points, half = 4.302653 s / sqrt(3)
    half = 4.302653 * np.std([0.015, 0.016, 0.018], ddof=1) / math.sqrt(3)
    assert half == pytest.approx(0.0037947, abs=1e-6)
    assert paper["reading"] == "holds (within noise of the paper)"
    assert paper["evidence"] == "ours 1.63% [1.25, 2.01] at 3.7K params, 3 seeds"
    flops = readings["lenet-300-100 NeST at <= 3.8K params needs at most the paper's 6.7K FLOPs"]
    # FLOPs 7400, 7420, 7440: mean 7420, s = 20, half = 4.302653 * 20 / sqrt(3) = 49.7
    assert flops["reading"] == "fails (ours higher)"
    assert flops["evidence"] == "ours 7.4K [7.4K, 7.5K], 3 seeds"
    dense = readings["lenet-300-100 NeST at <= 3.8K params is as accurate as the dense "
                     "network's (NeST minus dense, paired by seed)"]
    # per seed: 0.0, +0.08, +0.31 points
    d = np.array([0.015 - 0.0150, 0.016 - 0.0152, 0.018 - 0.0149])
    low = d.mean() - 4.302653 * d.std(ddof=1) / math.sqrt(3)
    assert dense["reading"] == "within noise (interval holds 0)" and low < 0
    assert dense["evidence"].startswith(f"{100 * d.mean():+.2f} points [{100 * low:+.2f}, ")
    pruned = readings["lenet-300-100 NeST at <= 3.8K params is as accurate as pruning only's "
                      "(NeST minus prune-only, paired by seed)"]
    assert pruned["evidence"] == "-0.12 points [-0.31, +0.07], 3 seeds"
    one_seed = [r for r in synthetic_rows() if r["seed"] == 0]
    assert {c["reading"] for c in study.claims(one_seed)} == {"one seed: no interval"}
    # an interval wholly above the paper's figure fails the claim
    worse = [dict(r, test_error=r["test_error"] + 0.01) if r["method"] == "nest" else r
             for r in synthetic_rows()]
    assert study.claims(worse)[0]["reading"] == "fails (ours higher)"
    assert "The paper's claims, read from these rows" in study.format_table(synthetic_rows())


def test_the_t_table_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 200):
        assert study.t975(df) == pytest.approx(
            stats.t.ppf(0.975, df), abs=3e-3 if df > 30 else 1e-6
        )


def test_the_table_and_figure_come_from_the_rows(tmp_path):
    rows = synthetic_rows()
    summary = {(s["method"], s["selection"]): s for s in study.summary_rows(rows)}
    nest = summary[("nest", "budget-3800")]
    assert nest["seeds"] == [0, 1, 2] and nest["test_error"] == pytest.approx(
        np.mean([0.015, 0.016, 0.018])
    )
    assert nest["test_error_std"] == pytest.approx(np.std([0.015, 0.016, 0.018], ddof=1))
    table = study.format_table(rows)
    assert "| lenet-300-100 | nest | budget-3800 | 3 | 1.63% +- 0.15 |" in table
    assert "NeST, compact: 1.58%, 3.8K, 6.7K" in table and "dense baseline: 1.60%" in table
    assert "over budget" not in table
    # a pruning-only run that stopped above the budget keeps its smallest round: flagged
    larger = [dict(r, params=4091) if (r["method"], r["seed"]) == ("prune-only", 0) else r
              for r in rows]
    flagged = {(s["method"], s["selection"]): s for s in study.summary_rows(larger)}
    assert flagged[("prune-only", "budget-3800")]["over_budget"] == 1
    assert flagged[("nest", "budget-3800")]["over_budget"] == 0
    assert "(1 over budget)" in study.format_table(larger)
    assert (
        "| lenet-300-100 | budget-3800 | 3 | -0.12 points | [-0.31, +0.07] points | within noise"
        in table
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# x\n\nbefore\n{study.README_BEGIN}\nold table\n{study.README_END}\nafter\n"
    )
    study.rewrite_readme(readme, table)
    text = readme.read_text()
    assert (
        "old table" not in text
        and table in text
        and text.startswith("# x\n\nbefore\n")
        and text.endswith("after\n")
    )
    study.rewrite_readme(readme, table)
    assert readme.read_text() == text  # rewriting is idempotent
    with pytest.raises(ValueError, match="no study table block"):
        study.rewrite_readme(_plain(tmp_path), table)
    # a variant's rows go into their own named block and leave the study's alone
    begin, end = study.readme_markers("flops")
    readme.write_text(text + f"{begin}\nold variant\n{end}\n")
    variant = [{**r, "overrides": {"area_rank": "flops"}} for r in rows]
    variant_table = study.format_table(variant)
    assert "The cells ran with --set area_rank=flops." in variant_table
    assert "The cells ran with" not in table
    study.rewrite_readme(readme, variant_table, "flops")
    assert readme.read_text() == text + f"{begin}\n{variant_table}\n{end}\n"
    with pytest.raises(ValueError, match="nestref study table other: begin"):
        study.rewrite_readme(readme, variant_table, "other")
    frontier_figure(rows, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 10_000


def _plain(tmp_path):
    path = tmp_path / "plain.md"
    path.write_text("# no markers\n")
    return path


def test_study_table_command(tmp_path, capsys):
    rows_path = tmp_path / "runs.json"
    rows_path.write_text(json.dumps(synthetic_rows()))
    assert (
        main(["study", "table", "--rows", str(rows_path), "--figure", str(tmp_path / "f.png")]) == 0
    )
    out = capsys.readouterr().out
    assert "NeST minus pruning only" in out and (tmp_path / "f.png").exists()
    rows_path.write_text("{not json")
    assert main(["study", "table", "--rows", str(rows_path), "--no-figure"]) == 1
    assert "not a readable JSON rows file" in capsys.readouterr().err
    assert main(["study", "table", "--rows", str(tmp_path / "typo.json"), "--no-figure"]) == 1
    assert "typo.json: no such file" in capsys.readouterr().err
    assert (
        main(
            ["study", "run", "--arch", "lenet-300-100", "--jobs", "0", "--runs-dir", str(tmp_path)]
        )
        == 2
    )
    assert "jobs must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows.append(dict(rows[0])), "rows 0 and .* are both"),
    (lambda rows: rows[1].pop("params"), "row 1 has no field 'params'"),
    (lambda rows: rows[2].update(test_error=None), "row 2 field 'test_error' must be a number"),
    (lambda rows: rows[2].update(test_error="0.01"), "row 2 field 'test_error' must be a number"),
    (lambda rows: rows[0].update(params=-5), "row 0 field 'params' must be an int >= 0"),
    (lambda rows: rows[0].update(seed="1"), "row 0 field 'seed'"),
    (lambda rows: rows[0].update(arch=None), "row 0 field 'arch' must be a name"),
    (lambda rows: rows[0].update(selection=3), "row 0 field 'selection'"),
    (lambda rows: rows[0].update(method="grow-only"), "row 0 field 'method' must be one of"),
    (lambda rows: rows.__setitem__(0, 7), "row 0 is a int"),
])
def test_a_malformed_rows_file_is_refused_by_row_and_field(tmp_path, capsys, change, message):
    rows = synthetic_rows()
    change(rows)
    (tmp_path / "runs.json").write_text(json.dumps(rows))
    with pytest.raises(ReportError, match=message):
        study.read_rows(tmp_path / "runs.json")
    assert main(["study", "table", "--rows", str(tmp_path / "runs.json"), "--no-figure"]) == 1
    assert "error:" in capsys.readouterr().err


def test_the_committed_rows_files_pass_the_row_checks():
    for path in sorted((Path(__file__).resolve().parents[1] / "figures" / "study").glob("*.json")):
        assert study.read_rows(path), path


def test_rows_are_added_atomically_and_replaced_by_key(tmp_path):
    path = tmp_path / "rows.json"
    rows = synthetic_rows()
    study.add_rows(path, rows[:3])
    study.add_rows(path, rows[2:])
    changed = {**rows[0], "test_error": 0.5}
    stored = study.add_rows(path, [changed])
    assert len(stored) == len(rows) and json.loads(path.read_text()) == stored
    assert [r["test_error"] for r in stored if r["method"] == "nest" and r["seed"] == 0] == [0.5]
    assert not list(tmp_path.glob(".*tmp"))


def test_cells_in_the_rows_file_are_finished_even_without_their_run_directories(tmp_path, mnist_dir,
                                                                                 monkeypatch):
    """A later session has the committed rows file but not runs/: nothing done is redone, and
    prune-only still gets the NeST sibling's epochs (from its rows)."""
    runs, rows_path = tmp_path / "runs", tmp_path / "runs.json"
    overrides = {**TINY, "data_dir": str(mnist_dir)}
    grid = dict(
        archs=["lenet-300-100"], seeds=[0], rows_path=rows_path, overrides=overrides, jobs=1
    )
    study.run_grid(methods=["nest"], runs_dir=runs, **grid)
    nest_rows = json.loads(rows_path.read_text())
    calls = []
    real = study.synthesize

    def synthesize(config, out, resume=False, **kwargs):
        calls.append((config.mode, config.dense_epochs))
        return real(config, out, resume=resume, **kwargs)

    monkeypatch.setattr(study, "synthesize", synthesize)
    fresh = tmp_path / "fresh-work-tree-runs"  # runs/ of the first session is gone
    status = study.run_grid(methods=["nest", "prune-only"], runs_dir=fresh, **grid)
    assert status == {("lenet-300-100", "nest", 0): "finished before",
                      ("lenet-300-100", "prune-only", 0): "ran"}
    assert calls == [("prune-only", nest_rows[0]["epochs_before_pruning"])]
    assert not study.cell_dir(fresh, "lenet-300-100", "nest", 0).exists()
    # where the data lives does not make another cell; other --set values do
    assert (
        study.finished_rows(rows_path, "lenet-300-100", "nest", 0, {**overrides, "data_dir": "x"})
        != []
    )
    assert (
        study.finished_rows(rows_path, "lenet-300-100", "nest", 0, {**overrides, "lr": 0.01}) == []
    )


def _one_error(capsys):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0], captured.out


def test_the_study_commands_mistakes_are_one_line_and_checked_before_anything_is_written(
        tmp_path, monkeypatch, capsys):
    rows_path = tmp_path / "runs.json"
    rows = synthetic_rows()
    rows_path.write_text(json.dumps([{k: v for k, v in rows[0].items() if k != "commit"}]))
    assert main(["study", "table", "--rows", str(rows_path)]) == 1
    line, _ = _one_error(capsys)
    assert "row 0 has no field 'commit'" in line and "run its cell again" in line
    assert main(["study", "table", "--rows", str(rows_path), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err  # --debug shows where
    rows_path.write_text(json.dumps(rows))
    figure = tmp_path / "f.png"
    assert main(["study", "table", "--rows", str(rows_path), "--readme", "nope.md",
                 "--figure", str(figure)]) == 2
    line, out = _one_error(capsys)
    assert "--readme nope.md: no such file" in line and out == "" and not figure.exists()
    (tmp_path / "afile").write_text("a file")
    assert main(["study", "table", "--rows", str(rows_path), "--figure",
                 str(tmp_path / "afile" / "f.png")]) == 2
    line, out = _one_error(capsys)
    assert "--figure's directory" in line and "afile is a file" in line and out == ""

    def no_training(*args, **kwargs):
        raise AssertionError("a cell trained before the outputs were checked")

    monkeypatch.setattr(study, "synthesize", no_training)
    for where, said in ((["--rows", str(tmp_path / "afile" / "runs.json")], "--rows' directory"),
                        (["--runs-dir", str(tmp_path / "afile" / "runs")], "--runs-dir"),
                        (["--rows", str(tmp_path)], "is a directory; --rows is the rows file")):
        assert main(["study", "run", "--arch", "lenet-300-100", "--method", "nest", "--seed", "0",
                     "--runs-dir", str(tmp_path / "runs"), *where]) == 2
        line, _ = _one_error(capsys)
        assert said in line
    # a finished cell whose report lacks a field: named, with the fix
    cell = study.cell_dir(tmp_path / "runs", "lenet-300-100", "nest", 0)
    cell.mkdir(parents=True)
    (cell / "report.json").write_text(json.dumps({"arch": "lenet-300-100", "mode": "nest"}))
    assert main(["study", "run", "--arch", "lenet-300-100", "--method", "nest", "--seed", "0",
                 "--runs-dir", str(tmp_path / "runs")]) == 1
    line, _ = _one_error(capsys)
    assert f"{cell / 'report.json'}: no field 'seed'" in line
    assert f"delete the directory {cell}" in line


def test_a_cell_killed_while_writing_its_first_checkpoint_runs_again(tmp_path, mnist_dir, capsys):
    """kill -9 during the first checkpoint's write leaves the run's marker and a temporary file:
    the same command runs the cell (study run has no --overwrite, and needs none)."""
    runs = tmp_path / "runs"
    cell = study.cell_dir(runs, "lenet-300-100", "nest", 0)
    cell.mkdir(parents=True)
    (cell / "nestref-run.json").write_text("{}")
    (cell / ".checkpoint.npz.k9x2ab.tmp").write_bytes(b"half a checkpoint")
    settings = [f"--set={key}={json.dumps(value)}" for key, value in TINY.items()]
    assert main(["study", "run", "--arch", "lenet-300-100", "--method", "nest", "--seed", "0",
                 "--runs-dir", str(runs), "--data-dir", str(mnist_dir), *settings]) == 0
    assert "seed 0: ran" in capsys.readouterr().out
    assert (cell / "report.json").is_file() and not list(cell.glob(".*.tmp"))
    assert [r["method"] for r in study.read_rows(runs / "runs.json")][0] == "nest"
