# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. LeNet-5 end to end
#
# The target is LeNet-5 as in Caffe (conv 20@5×5, max-pool, conv 50@5×5, max-pool, dense 500,
# dense 10; 431,080 parameters, 4.59M FLOPs). The seed (preset `lenet5`) has half the maps and
# units (10, 25, 250) with 30% of the connections active; the preset asks for the best
# network with at most 5,800 parameters, the paper's NeST row. The first "mask" figure below
# shows conv-1 kernels, and a section shows the partial areas the convolutions kept.
#
# `nestref.run.synthesize.synthesize(config, out_dir)` runs NeST's whole schedule
# ([docs/nest.md](../docs/nest.md), "Schedule"): **seed** (the target architecture, narrower
# and sparse) → rounds of **growth** (connections, neurons, feature maps; training after
# each) until validation error stops improving → **settle** (train to convergence) → rounds
# of **pruning** (magnitude, partial areas, dead units; retraining after each) down to a
# floor → **choose** the round that meets the target on smoothed validation error →
# **fine-tune** → **compact**.
# Every decision uses a validation split of the training set; the test set is evaluated
# once, at the end. `mode="prune-only"` is the baseline: the dense network, trained
# and then pruned by the same rules.
#
# **Full mode** walks through the study's seed-0 NeST and pruning-only runs of LeNet-5
# (`nestref.tools.study`, [docs/study.md](../docs/study.md)): the cells
# `runs/study/lenet5/nest/seed-0` and `runs/study/lenet5/prune-only/seed-0`
# (under `$NESTREF_STUDY_RUNS` instead of `runs/study` if that is set; a relative path counts
# from the repository root). Their rows, with those of the other seeds, are in
# `figures/study/runs.json`; the command that makes them (and the dense cell) is
#
#     nestref study run --arch lenet5 --seed 0
#
# `nestref.tools.walkthrough.synthesize_cell` opens each cell as that command does:
# `synthesize(study.cell_config(...), study.cell_dir(...), resume=True)`, the pruning-only
# cell with the budget read from the NeST cell's `report.json`. A finished cell is loaded
# and goes straight to compaction and reporting: nothing is retrained. An interrupted one
# continues from its last finished round; a missing one is run here with exactly the
# study's config, which takes as long as the command would (and `nestref study run` adds
# its rows when it next reads the cell). **Quick mode** (`NESTREF_QUICK=1`) runs a miniature
# synthesis (the arch's quick budget, a few thousand images) through the same functions
# into a temporary directory: the same code path, numbers that mean nothing. The last
# section reads the study's rows of every seed, in both modes.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from nestref.core.train import prepare_inputs
from nestref.nest import architectures
from nestref.nest.accounting import format_layer_table, layer_table
from nestref.nest.config import PRESETS
from nestref.run import plots
from nestref.run.checkpoint import load_checkpoint
from nestref.run.compact import load_compact
from nestref.run.synthesize import load_data
from nestref.tools.paper import comparison_table
from nestref.tools.study import DEFAULT_ROWS, cell_dir, format_table
from nestref.tools.walkthrough import (
    arch_rows,
    cell_state,
    growth_lines,
    report_summary,
    round_line,
    study_runs_dir,
    survival_lines,
    synthesize_cell,
    unit_survival,
)

# %matplotlib inline
print("the preset, on top of SynthesisConfig's defaults:", PRESETS["lenet5"])

# %%
# NESTREF_QUICK=1: small data, few epochs, nothing written to the repository
QUICK = os.environ.get("NESTREF_QUICK", "0") == "1"
REPO = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").exists())
FIGURES = REPO / "figures" / "notebooks"   # full mode saves the figures the README links here
if not QUICK:
    FIGURES.mkdir(parents=True, exist_ok=True)
print(f"mode: {'quick (NESTREF_QUICK=1)' if QUICK else 'full'}")

# %%
ARCH, SEED = "lenet5", 0
if QUICK:
    # never the study's directories; a fresh miniature study each time
    RUNS = Path(tempfile.mkdtemp(prefix="nestref-quick-nb06-"))
    overrides, test_limit = dict(architectures.get(ARCH).quick), 500  # the arch's quick budget
else:
    RUNS, overrides, test_limit = study_runs_dir(REPO), {}, None
    print(f"study cells under {RUNS.relative_to(REPO) if RUNS.is_relative_to(REPO) else RUNS}")
for method in ("nest", "prune-only"):
    out = cell_dir(RUNS, ARCH, method, SEED)
    print(f"{method:>10}: {out.relative_to(RUNS)} ({cell_state(out)})")


# %% [markdown]
# ## NeST
#
# `on_round` is called after every round that actually runs here (none, when a finished
# cell is loaded). In quick mode the test set is cut to 500 images; in full mode the
# data is loaded exactly as the study loads it.

# %%
def print_round(record):
    print(round_line(record), flush=True)


nest = synthesize_cell(ARCH, "nest", RUNS, SEED, overrides, test_limit, on_round=print_round)
report, history = nest["report"], nest["history"]
print(f"\n{report_summary(report)}")

# %% [markdown]
# ## The grow-then-prune curve
#
# Parameters and FLOPs per round (log scale), and validation error, with the phases
# shaded: the network first grows from the seed, then shrinks far below it.
# `nestref.run.plots` draws from the plain history records in `history.json`.

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
plots.grow_prune_curve(history, ax=axes[0])
plots.validation_error_curve(history, ax=axes[1],
                             chosen_round=(report["chosen"] or {}).get("round"))
fig.tight_layout()
plt.show()
plots.widths_and_densities(history, fig=plt.figure(figsize=(13, 4)))
plt.show()

# %% [markdown]
# What each growth round did: connections grown per layer, and neurons (or feature
# maps) born per hidden layer with the birth strength kept.

# %%
print("\n".join(growth_lines(history)))

# %% [markdown]
# ## The final architecture
#
# The run's last checkpoint holds the final masked network (after fine-tuning);
# `model.npz` holds its compact form (dead units gone, sparse layers in CSR), which
# computes the same logits.

# %%
net, _, _ = load_checkpoint(nest["dir"] / "checkpoint.npz")
rows = layer_table(net)
print(format_layer_table(rows))
assert rows == report["layers"]

compact_net = load_compact(nest["dir"] / "model.npz")
# the first 500 test images
x_test = prepare_inputs(load_data(nest["config"])["test"][0][:500], net)
print("\ncompact model:", [(layer["type"], layer.get("nnz")) for layer in compact_net.summary()])
gap = np.abs(net.predict(x_test) - compact_net.predict(x_test)).max()
print(f"max |masked - compact| logits on {len(x_test)} test images: {gap:.1e}")

# %%
plots.first_layer_masks(net.layers[0].mask, fig=plt.figure(figsize=(12, 3.4)))
plt.show()

# %% [markdown]
# ## Partial areas in the final network
#
# Pruning rounds also pruned the convolutions' areas (`area_fraction` of the kept
# (output map, input map, position) triples per round). On a test digit, in colour: where
# each conv-1 kernel of the final network is still applied (drawn inset by 2 pixels, as
# in notebook 4).

# %%
for row in rows:
    if "area_density" in row:
        print(f"conv layer {row['position']}: {100 * row['area_density']:.1f}% of (o, i, p) kept, "
              f"{row['flops']:,} FLOPs")
conv1 = net.layers[0]
if conv1.area_mask is None:
    print("this run pruned no areas (area_fraction = 0)")
else:
    plots.area_masks_on_image(conv1.area_mask, x_test[0, 0])
    plt.show()

# %% [markdown]
# ## Against the paper and the pruning-only baseline
#
# The baseline is the study's pruning-only cell of the same seed: the dense network,
# trained for as many epochs as the NeST run took before its pruning began (read from the
# NeST cell's report), then pruned by the same rules down to the same floor.

# %%
baseline = synthesize_cell(ARCH, "prune-only", RUNS, SEED, overrides, test_limit,
                           on_round=print_round)
runs = [("NeST", report, history), ("pruning only", baseline["report"], baseline["history"])]
print(f"epochs before pruning: NeST {report['epochs_before_pruning']}, "
      f"pruning only {baseline['report']['epochs_before_pruning']}")
display(Markdown(comparison_table([(label, run) for label, run, _ in runs])))

# %% [markdown]
# Along the way: validation error against size for every pruning round of both runs
# (log scale), with each run's chosen round, and the final test errors.

# %%
fig, ax = plt.subplots(figsize=(8, 4.5))
plots.error_vs_size(runs, "LeNet-5: error against size", ax=ax)
if not QUICK:
    fig.savefig(FIGURES / "06_tradeoff.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Seed and grown neurons: who survives?
#
# Every unit carries its provenance (`grown`: False for seed units, True for units
# born during growth). How many of each were there when pruning started, and how
# many survive to the final network? Every history record counts them (`alive`), so the
# record before the first pruning round has the first numbers and the report the second
# ([docs/nest.md](../docs/nest.md), "Provenance": a prototype found that on short budgets
# magnitude pruning removes grown neurons first.)

# %%
survival = unit_survival(history, report["alive"])
print("\n".join(survival_lines(survival)))
assert survival["seed_alive"] == [int((~net.layers[k].grown).sum()) for k in survival["layers"]]

fig, ax = plt.subplots(figsize=(8, 3.6))
plots.unit_survival_bars(survival, "LeNet-5: seed vs grown units", ax=ax)
if not QUICK:
    fig.savefig(FIGURES / "06_survival.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Every seed: the study's rows
#
# One seed says little about a difference of a few tenths of a point. The study
# (`nestref study run`) runs every arch × method × seed cell and writes one row per run and
# selection into `figures/study/runs.json`; the rows alone make its table and figure. Below,
# LeNet-5's rows: the table (`study.format_table`: mean ± std over seeds beside the
# paper's figure, then NeST minus pruning only paired by seed with its 95% t-interval, then
# the paper's claims read from the rows, `study.claims`), and the error-vs-params frontier
# (`plots.frontier_figure`: each method's pruning trajectories on validation, median and
# range over seeds, and each seed's test error at every selection).

# %%
study_rows = arch_rows(REPO / DEFAULT_ROWS, ARCH)
if study_rows:
    display(Markdown(format_table(study_rows)))
    plots.frontier_figure(study_rows)
    plt.show()
else:
    print(f"no study rows for {ARCH} in {DEFAULT_ROWS} yet; make them (all seeds) with\n"
          f"  nestref study run --arch {ARCH} --rows {DEFAULT_ROWS}")

# %% [markdown]
# How to read this: the comparison table puts the paper's figures beside what this
# implementation measured on seed 0; the study's table gives the same comparison over
# seeds, with intervals. Where NeST's row is not better than the pruning-only row at the
# same size, growth did not pay off on this budget, and the survival chart shows how much
# of the grown capacity was kept at all. These numbers are measurements, not assumptions:
# the study's rows record the commit and the command behind each of them.
