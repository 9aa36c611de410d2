"""The end-to-end walk-through of notebooks 05 and 06: one arch's NeST and pruning-only cells of
the study (``nestref.tools.study``), run or loaded exactly as ``nestref study run`` makes them, and
read back as text and plain data.

This module stands above ``nestref.tools.study`` and below the command line (nothing in nestref
imports it). It prints nothing: the notebooks print the lines it returns, and draw the
dicts it returns with ``nestref.run.plots``.
"""
import json
import os
from pathlib import Path

from ..errors import InvalidArgumentError
from ..run.run_files import CHECKPOINT
from ..run.synthesize import load_data, read_report, synthesize
from . import study

RUNS_ENV = "NESTREF_STUDY_RUNS"
WALKED_METHODS = ("nest", "prune-only")


def study_runs_dir(repo, environ=None):
    """Where the study's cells live: ``$NESTREF_STUDY_RUNS`` (a relative path is taken from the
    repository root ``repo``), else ``repo/runs/study``, the default of ``nestref study run``."""
    value = (os.environ if environ is None else environ).get(RUNS_ENV)
    path = Path(value).expanduser() if value else study.DEFAULT_RUNS
    return path if path.is_absolute() else Path(repo) / path


def cell_state(out_dir):
    """What ``synthesize(..., resume=True)`` will do with a cell's directory, in words."""
    out = Path(out_dir)
    if (out / "report.json").exists():
        return "finished: will be loaded, nothing retrained"
    if (out / CHECKPOINT).exists():
        return "interrupted: will resume from its checkpoint"
    return "not there: will run from the start"


def synthesize_cell(arch, method, runs_dir, seed=0, overrides=None, test_limit=None,
                    on_round=None):
    """Run, resume or load one study cell: ``synthesize(study.cell_config(...),
    study.cell_dir(...), resume=True)``, the config ``nestref study run`` gives it.

    method: "nest" or "prune-only"; prune-only reads its training budget from the NeST cell's
    report.json (same arch, seed and runs_dir), so that cell must have finished first.
    test_limit: keep only the first test_limit test images (quick mode; None keeps them all).
    Returns {"dir", "config", "report", "history"} (report.json's and history.json's dicts).
    """
    if method not in WALKED_METHODS:
        raise InvalidArgumentError(f"method must be one of {list(WALKED_METHODS)}, got {method!r}")
    nest_report = None
    if method != "nest":
        nest_dir = study.cell_dir(runs_dir, arch, "nest", seed)
        if not (nest_dir / "report.json").exists():
            raise InvalidArgumentError(
                f"the {method} cell of {arch} seed {seed} takes its budget from the finished NeST "
                f"cell, and {nest_dir} holds none: walk the nest cell first, or run "
                f"`nestref study run --arch {arch} --seed {seed}`")
        nest_report = read_report(nest_dir / "report.json")
    config = study.cell_config(arch, method, seed, overrides, nest_report)
    out = study.cell_dir(runs_dir, arch, method, seed)
    data = None
    if test_limit is not None:
        data = load_data(config)
        data["test"] = tuple(part[:test_limit] for part in data["test"])
    report = synthesize(config, out, resume=True, on_round=on_round, data=data)
    history = json.loads((out / "history.json").read_text())
    return {"dir": out, "config": config, "report": report, "history": history}


# ------------------------------------------------------------------------- reading a run
def round_line(record):
    """One history record as one line: phase, round, params, widths, validation error."""
    return (f"{record['phase']:>8} {record['round']:3d}  params {record['params']:8,}  "
            f"widths {record['widths']}  val error {100 * record['val_error']:.2f}%")


def report_summary(report):
    """A run's report.json in three lines: test error and size, widths, how pruning ended."""
    return "\n".join([
        f"test error {100 * report['test_error']:.2f}% "
        f"(compact model: {100 * report['compact_test_error']:.2f}%), "
        f"{report['params']:,} params ({report['params_compression']:.1f}x smaller than dense), "
        f"{report['flops']:,} FLOPs ({report['flops_compression']:.1f}x)",
        f"widths {report['widths']}; "
        f"largest network during growth: {report['max_params_during_growth']:,} params",
        f"pruning stopped: {report['stop_reason']}; chosen: {report['chosen']}",
    ])


def growth_lines(history):
    """One line per growth round: connections grown per layer, units born per hidden layer
    (with the birth strength kept), validation error."""
    lines = []
    for record in history:
        if record["phase"] != "grow":
            continue
        connections = [c["added"] for c in record["connections"]]
        units = ", ".join(
            f"layer {u['layer']}: +{u['added']}"
            + (f" (alpha {u['birth_strength']:.3g})" if u.get("birth_strength") else "")
            for u in record["units"])
        lines.append(f"round {record['round']}: +{sum(connections):,} connections {connections}; "
                     f"{units}; val error {100 * record['val_error']:.2f}%")
    return lines


def unit_survival(history, final_alive):
    """Hidden units by provenance when pruning began and in the final network.

    history: the run's records (each carries ``alive``, ``synthesize.survivors`` of its
    network); final_alive: the report's ``alive``. Returns {"layers": positions,
    "seed_before", "grown_before", "seed_alive", "grown_alive"}, lists of ints per layer.
    """
    first_prune = next((i for i, r in enumerate(history) if r["phase"] == "prune"), None)
    if not first_prune:  # None (no pruning round) or 0 (no record before it)
        raise InvalidArgumentError("the history has no pruning round after a growth or dense "
                                   "phase: is it a finished NeST or prune-only run's?")
    before = {p["layer"]: p for p in history[first_prune - 1]["alive"]["per_layer"]}
    after = {p["layer"]: p for p in final_alive["per_layer"]}
    layers = sorted(before)
    return {"layers": layers,
            "seed_before": [before[k]["seed"] for k in layers],
            "grown_before": [before[k]["grown"] for k in layers],
            "seed_alive": [after[k]["seed"] if k in after else 0 for k in layers],
            "grown_alive": [after[k]["grown"] if k in after else 0 for k in layers]}


def survival_lines(survival):
    """``unit_survival``'s dict in words: per hidden layer, then overall."""
    s = survival
    lines = [f"hidden layer {k}: seed {s['seed_alive'][i]}/{s['seed_before'][i]} survive, "
             f"grown {s['grown_alive'][i]}/{s['grown_before'][i]}"
             for i, k in enumerate(s["layers"])]
    lines.append(f"overall: {sum(s['seed_alive'])} of {sum(s['seed_before'])} seed units and "
                 f"{sum(s['grown_alive'])} of {sum(s['grown_before'])} grown units survive")
    return lines


# --------------------------------------------------------------------------- the study
def arch_rows(rows_path, arch):
    """The study's rows of one arch (every seed, method and selection), [] if none yet."""
    return [row for row in study.read_rows(rows_path) if row["arch"] == arch]
