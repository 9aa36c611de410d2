# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Pruning
#
# The second half of NeST removes what the grown network does not need
# (`nestref.nest.prune`; [docs/nest.md](../docs/nest.md), "Pruning"):
#
# * **connections**, by magnitude: per layer, deactivate the `fraction` $\gamma$ of the
#   active connections with the smallest $|w|$, retrain, repeat (`prune_network`);
# * **neurons** left with no active inputs or no active outputs, without changing what
#   the network computes (`remove_dead_neurons`);
# * **areas** of convolutions: each kernel (input map $i$ → output map $o$) is applied
#   only at the output positions where it contributes most (`area_contributions`,
#   `prune_partial_area`): *partial-area convolution*.
#
# And then count what is left: parameters and FLOPs per layer (`nestref.nest.accounting`).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from nestref.core.optim import SGD
from nestref.core.train import evaluate, fit, prepare_inputs
from nestref.data.datasets import load_splits
from nestref.nest.accounting import count_flops, count_params, layer_table
from nestref.nest.networks import lenet5, lenet_300_100
from nestref.nest.prune import (
    DEFAULT_PRUNE_FRACTIONS,
    layer_area_contributions,
    layer_input,
    prune_network,
    prune_partial_area,
    remove_dead_neurons,
)

# %matplotlib inline
print("default pruning fractions per round:", DEFAULT_PRUNE_FRACTIONS)

# %%
# NESTREF_QUICK=1: small data, few epochs, nothing written to the repository
QUICK = os.environ.get("NESTREF_QUICK", "0") == "1"
REPO = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").exists())
FIGURES = REPO / "figures" / "notebooks"   # full mode saves the figures the README links here
if not QUICK:
    FIGURES.mkdir(parents=True, exist_ok=True)
print(f"mode: {'quick (NESTREF_QUICK=1)' if QUICK else 'full'}")

# %%
# MNIST from $NESTREF_DATA_DIR, else the checkout's data/mnist or the cache (else downloaded),
# split as synthesize splits it: a fixed validation part of the training set
splits = load_splits(n_val=500 if QUICK else 5000, seed=0, train_limit=3000 if QUICK else None)
(train_images, train_labels), (val_images, val_labels) = splits["train"], splits["val"]
print(f"{len(train_images)} training / {len(val_images)} validation images "
      "(split off MNIST's training set)")

# %% [markdown]
# ## A network to prune
#
# The dense LeNet-300-100 (266,610 parameters), trained briefly. In a NeST run the grown
# network takes its place; the operators do not care where a network came from.

# %%
net = lenet_300_100(seed=0)
x_train, x_val = prepare_inputs(train_images, net), prepare_inputs(val_images, net)
n_fit = len(x_train) if QUICK else 20000
fit(net, SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-4),
    (x_train[:n_fit], train_labels[:n_fit]), None, epochs=1, batch_size=64, rng=0)
print(f"{net.name}: {count_params(net):,} params, {count_flops(net):,} FLOPs, "
      f"validation error {100 * evaluate(net, x_val, val_labels)['error']:.2f}%")

# %% [markdown]
# ## Magnitude pruning, round by round
#
# `prune_network(net, fractions)` prunes every masked layer in one round. Each layer
# removes `floor(fraction × active)` of its smallest-$|w|$ active connections; the
# **threshold** in its report is the largest $|w|$ removed. Two guards: each output unit
# keeps its strongest input, and no output unit may be cut off from the input.
#
# The default fractions for LeNet-300-100 ([docs/nest.md](../docs/nest.md)) are
# $(0.1, 0.08, 0.04)$ per round: one uniform fraction starves the 10-unit output layer
# (**[ours]**, measured). To see a lot happen in four rounds, we prune five times harder
# here, $(0.5, 0.4, 0.2)$, with a short retraining after each round. The histograms show
# $|w|$ over each layer's active weights *before* each round's pruning, and the round's
# threshold in red: the gap that pruning cuts at zero is refilled by retraining.

# %%
fractions = [5 * f for f in DEFAULT_PRUNE_FRACTIONS["lenet-300-100"]]
n_retrain = 1000 if QUICK else 10000
rounds = []
for round_ in range(4):
    magnitudes = [np.abs(layer.weight[layer.mask != 0]) for _, layer in net.masked_layers()]
    reports = prune_network(net, fractions)
    error_pruned = evaluate(net, x_val, val_labels)["error"]
    fit(net, SGD(net, lr=0.02, momentum=0.9, weight_decay=1e-4),
        (x_train[:n_retrain], train_labels[:n_retrain]), None, epochs=1, batch_size=64, rng=round_)
    rounds.append({"magnitudes": magnitudes, "reports": reports, "params": count_params(net),
                   "error_pruned": error_pruned,
                   "error_retrained": evaluate(net, x_val, val_labels)["error"]})

print(f"{'round':>5} {'params':>8} {'val error pruned':>17} {'retrained':>10}   "
      "per layer: removed (threshold |w|)")
for i, r in enumerate(rounds, 1):
    per_layer = "  ".join(f"{p.removed:6d} ({p.threshold:.3f})" for p in r["reports"])
    print(f"{i:>5} {r['params']:>8,} {100 * r['error_pruned']:>16.2f}% "
          f"{100 * r['error_retrained']:>9.2f}%   {per_layer}")

# %%
fig, axes = plt.subplots(len(rounds), 3, figsize=(12, 2.1 * len(rounds)), sharex="col")
for i, r in enumerate(rounds):
    for j, (magnitude, report) in enumerate(zip(r["magnitudes"], r["reports"], strict=True)):
        ax = axes[i, j]
        ax.hist(magnitude, bins=80, color="#888888")
        ax.axvline(report.threshold, color="red", label=f"threshold {report.threshold:.3f}")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_yticks([])
        if i == 0:
            ax.set_title(f"layer {report.layer}: |w| of the active weights")
        if j == 0:
            ax.set_ylabel(f"round {i + 1}")
for ax in axes[-1]:
    ax.set_xlabel("|w|")
fig.tight_layout()
if not QUICK:
    fig.savefig(FIGURES / "04_magnitude_histograms.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Dead neurons
#
# Pruning connections leaves some hidden neurons with no active input, or no active
# output. `remove_dead_neurons` deletes them, rows and columns (and optimizer momentum,
# if given). A neuron with no outputs affects nothing. A neuron with no inputs still
# outputs a constant, $\mathrm{relu}(b)$: that constant times its outgoing weights is
# folded into the next layer's bias before it goes (**[ours]**). Either way the
# network computes the same function, to float rounding.
#
# A fifth round at the same fractions, before its retraining, leaves neurons without
# outputs. Magnitude pruning rarely takes *every* input of a unit, so to see the folding
# at work we also cut the inputs of one hidden unit of layer 2 by hand (the one with the
# largest bias, so that its constant output $\mathrm{relu}(b)$ is not zero), as a long
# pruning run eventually does:

# %%
prune_network(net, fractions)
hidden = net.layers[2]
cut = int(np.argmax(hidden.bias))
hidden.weight[cut] = 0
hidden.mask[cut] = 0
print(f"cut every input of layer-2 unit {cut}; "
      f"it now outputs relu({hidden.bias[cut]:.4f}) on every image")

logits_before = net.predict(x_val)
widths_before = net.widths()
removal = remove_dead_neurons(net)
logits_after = net.predict(x_val)

print(f"widths {widths_before} -> {net.widths()}")
for entry in removal.as_dict()["layers"]:
    print(f"  layer {entry['position']}: removed {entry['removed']} "
          f"({entry['removed_no_input']} without inputs, folded into the next bias; "
          f"{entry['removed_no_output']} without outputs)")
print(f"max |logits before - logits after| over {len(x_val)} validation images: "
      f"{np.abs(logits_before - logits_after).max():.2e}")
print(f"validation error {100 * evaluate(net, x_val, val_labels)['error']:.2f}% "
      "before the round's retraining, ", end="")
fit(net, SGD(net, lr=0.02, momentum=0.9, weight_decay=1e-4),
    (x_train[:n_retrain], train_labels[:n_retrain]), None, epochs=1, batch_size=64, rng=5)
print(f"{100 * evaluate(net, x_val, val_labels)['error']:.2f}% after")

# %% [markdown]
# ## Partial-area convolution (LeNet-5)
#
# A convolution kernel $K_{oi}$ slides over the whole input map $i$. But a digit sits in
# the middle of the image: near the border many kernels add almost nothing. For every
# (output map $o$, input map $i$, output position $p$), `area_contributions` measures the
# mean over the data of $|(I_i \star K_{oi})(p)|$; `prune_partial_area` switches off the
# `fraction` of the $(o, i, p)$ with the smallest values. The result is an `area_mask`
# of shape $(O, C, H_o, W_o)$ on the `Conv2d`: kernel $(o, i)$ is applied only where it
# is 1, and FLOPs count only those positions.
#
# A half-width dense LeNet-5 (conv 10, conv 25, dense 250), trained briefly:

# %%
net5 = lenet5(width_scale=0.5, seed=0)
n5 = 1500 if QUICK else 10000
x5, x5_val = prepare_inputs(train_images[:n5], net5), prepare_inputs(val_images, net5)
fit(net5, SGD(net5, lr=0.02, momentum=0.9, weight_decay=5e-4), (x5, train_labels[:n5]), None,
    epochs=1, batch_size=64, rng=0)
x_area = x5[:256]                   # the data the contributions are measured on
conv1 = net5.layers[0]
contributions = layer_area_contributions(conv1, x_area)          # (O, C, Ho, Wo) = (10, 1, 24, 24)
print(f"{net5.name}: "
      f"validation error {100 * evaluate(net5, x5_val, val_labels)['error']:.2f}%; "
      f"conv 1 contributions {contributions.shape}")

# %%
before5 = net5.copy()
area_report = prune_partial_area(net5, 0, 0.6, x_area)          # conv 1: 60% of (o, i, p)
# conv 2, on its own input
area_report2 = prune_partial_area(net5, 2, 0.6, layer_input(net5, 2, x_area))
for r in (area_report, area_report2):
    print(f"conv layer {r.layer}: {r.removed:,} of {r.active_before:,} (o, i, p) pruned, "
          f"threshold {r.threshold:.3g}, kernels with no area left: {r.kernels_deactivated}")
print(f"validation error {100 * evaluate(before5, x5_val, val_labels)['error']:.2f}% -> "
      f"{100 * evaluate(net5, x5_val, val_labels)['error']:.2f}% (no retraining yet)")
fit(net5, SGD(net5, lr=0.01, momentum=0.9, weight_decay=5e-4), (x5, train_labels[:n5]), None,
    epochs=1, batch_size=64, rng=1)
print(f"after one epoch of retraining: {100 * evaluate(net5, x5_val, val_labels)['error']:.2f}%")

# %% [markdown]
# On a validation digit: the top row shows where each conv-1 kernel contributes (the
# mean $|I \star K|$ per output position); the bottom row shows the digit with the kept
# area of each kernel in colour. Output position $(i, j)$ of a 5×5 kernel reads the
# window centred on pixel $(i{+}2, j{+}2)$, so the 24×24 mask is drawn inset by 2 pixels.

# %%
digit = x5_val[0, 0]
maps = conv1.n_out
fig, axes = plt.subplots(2, maps, figsize=(1.5 * maps, 3.4))
for o in range(maps):
    axes[0, o].imshow(contributions[o, 0], cmap="magma")
    axes[0, o].set_title(f"map {o}", fontsize=8)
    kept = np.zeros((28, 28))
    kept[2:26, 2:26] = conv1.area_mask[o, 0]
    axes[1, o].imshow(digit, cmap="gray_r")
    axes[1, o].imshow(np.ma.masked_equal(kept, 0), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
    axes[1, o].set_title(f"{int(conv1.area_mask[o, 0].sum())} of 576", fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].set_ylabel("mean |I*K|", fontsize=8)
axes[1, 0].set_ylabel("kept area", fontsize=8)
fig.tight_layout()
if not QUICK:
    fig.savefig(FIGURES / "04_partial_area.png", dpi=100, bbox_inches="tight")
plt.show()


# %% [markdown]
# ## Counting: params and FLOPs per layer
#
# `layer_table(net)` gives one row per masked layer. **params** = active weights + one
# bias per unit; **FLOPs** = 2 × the multiply-accumulates that touch an active weight,
# and for a convolution only at the positions its area keeps (`area_density` is the
# kept fraction of $(o, i, p)$). These rules reproduce the paper's dense baselines
# exactly (266,610 / 532.4K for LeNet-300-100; 431,080 / 4,586K for LeNet-5).

# %%
def print_table(title, rows):
    print(title)
    print(f"  {'layer':>5} {'type':>6} {'weight shape':>18} {'density':>8} {'area':>6} "
          f"{'params':>9} {'FLOPs':>11}")
    for row in rows:
        area = f"{row['area_density']:.2f}" if "area_density" in row else "-"
        print(f"  {row['position']:>5} {row['type']:>6} {tuple(row['shape'])!s:>18} "
              f"{row['density']:>8.3f} {area:>6} {row['params']:>9,} {row['flops']:>11,}")
    print(f"  {'total':>5} {'':>6} {'':>18} {'':>8} {'':>6} "
          f"{sum(r['params'] for r in rows):>9,} "
          f"{sum(r['flops'] for r in rows):>11,}")


print_table("dense LeNet-300-100", layer_table(lenet_300_100()))
print_table("LeNet-300-100 after the pruning above", layer_table(net))
print_table("half-width LeNet-5 before area pruning", layer_table(before5))
print_table("... after", layer_table(net5))

# %%
fig, ax = plt.subplots(figsize=(7, 3.4))
rows_before, rows_after = layer_table(before5), layer_table(net5)
names = [f"{row['type']} {row['position']}" for row in rows_before]
where = np.arange(len(names))
ax.bar(where - 0.2, [row["flops"] for row in rows_before], 0.4, label="before area pruning")
ax.bar(where + 0.2, [row["flops"] for row in rows_after], 0.4, label="after")
ax.set_yscale("log")
ax.set_xticks(where, names)
ax.set_ylabel("FLOPs per image")
ax.set_title("half-width LeNet-5: where the FLOPs are")
ax.legend()
plt.show()

# %% [markdown]
# The convolutions hold few parameters but most of the FLOPs; partial areas attack
# exactly those. **Next:** notebooks 5 and 6 put growth and pruning together:
# `nestref.run.synthesize` runs the whole schedule.
