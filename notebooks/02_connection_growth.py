# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Connection growth
#
# NeST starts from a small, sparse **seed**: here LeNet-300-100 with every hidden width
# scaled by 0.4 (LeNet-120-40) and only 10% of the connections active. The first growth
# operator opens dormant connections, guided by the loss (`nestref.nest.grow`;
# [docs/nest.md](../docs/nest.md), "Connection growth"):
#
# 1. **Growth gradient.** For every masked layer, $G = \partial L/\partial (W \odot M)$,
#    computed at every position (notebook 1) and averaged over the growth data: by
#    default one pass over the training split (`growth_gradients`).
# 2. **Rank** the layer's *dormant* connections by $|G|$ and activate the top `ratio`
#    fraction ($\rho$, the growth ratio) of them, only ones with $|G| > 0$
#    (`grow_connections`; ties go to the lowest flat index).
# 3. **Initialise** each new weight one gradient step from zero: $w = -\eta\,G$, with $\eta$
#    the learning rate the next training phase starts with (**[ours]**; `init="zero"` is
#    the alternative). Active weights are not touched.
#
# Growth opens connections; training then sizes them.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from nestref.core.optim import SGD
from nestref.core.train import evaluate, fit, prepare_inputs
from nestref.data.datasets import load_splits
from nestref.nest.grow import grow_network_connections, growth_gradients
from nestref.nest.networks import lenet_300_100

# %matplotlib inline
print("imported nestref.nest.grow:", growth_gradients.__name__, grow_network_connections.__name__)

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
# ## The seed, briefly trained
#
# `lenet_300_100(width_scale=0.4, density=0.1)`: 784 → 120 → 40 → 10, 10% of each
# layer's connections active. One epoch of SGD gives the growth gradient something to
# say (an untrained network's gradient mostly says "learn anything").

# %%
net = lenet_300_100(width_scale=0.4, density=0.1, seed=0)
opt = SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-4)
x_train, x_val = prepare_inputs(train_images, net), prepare_inputs(val_images, net)
record = fit(net, opt, (x_train, train_labels), (x_val, val_labels), epochs=1, batch_size=64,
             rng=0)[-1]
densities = [round(layer.density(), 3) for _, layer in net.masked_layers()]
print(f"{net.name}: widths {net.widths()}, densities {densities}")
print(f"after 1 epoch: train loss {record['train_loss']:.3f}, "
      f"validation error {100 * record['val_error']:.2f}%")

# %% [markdown]
# ## The growth gradient
#
# `growth_gradients(net, x, y)` returns `{position: G}`, one array per masked layer
# shaped like its weight. For the first layer, $G$ is $(120, 784)$: row $j$ says, for
# every pixel, how much the loss would fall per unit of weight on the connection
# pixel → hidden unit $j$. Reshaped to 28×28, each row is a picture.

# %%
# one pass over the training split
gradients = growth_gradients(net, x_train, train_labels, batch_size=1000)
for position, _ in net.masked_layers():
    print(f"layer {position}: G {gradients[position].shape}, "
          f"max |G| {np.abs(gradients[position]).max():.2e}")

before = {position: layer.mask.copy() for position, layer in net.masked_layers()}
G0 = np.abs(gradients[0]) * (before[0] == 0)             # |G| over the first layer's dormant ones
units = np.argsort(-G0.sum(axis=1), kind="stable")[:5]   # the units growth cares about most
print("first-layer units with the largest total dormant |G|:", units)

# %%
control = net.copy()                    # the same network, not grown, for a comparison below
loss_before = {"growth data": evaluate(net, x_train, train_labels)["loss"],
               "validation": evaluate(net, x_val, val_labels)["loss"]}

reports = grow_network_connections(net, ratio=0.1, gradients=gradients, init="gradient", lr=opt.lr)

loss_after = {"growth data": evaluate(net, x_train, train_labels)["loss"],
              "validation": evaluate(net, x_val, val_labels)["loss"]}
print(f"{'layer':>5} {'dormant':>8} {'|G|>0':>8} {'grown':>7} {'threshold |G|':>14} "
      f"{'density':>16}")
for r, (position, layer) in zip(reports, net.masked_layers(), strict=True):
    print(f"{r.layer:>5} {r.dormant_before:>8} {r.candidates:>8} {r.added:>7} {r.threshold:>14.2e} "
          f"{before[position].mean():>7.3f} -> {layer.density():.3f}")
for name, value in loss_before.items():
    print(f"loss on {name:12s}: {value:.5f} -> {loss_after[name]:.5f} (just after growth)")

# %% [markdown]
# Each layer grew 10% of its dormant connections, the ones above its **threshold**: the
# smallest $|G|$ that made the cut. The loss falls a little at once: each new weight is
# one step down its own gradient, so to first order the loss drops by
# $\eta \sum G^2$ over the grown connections. But the new weights are tiny, $G$ being
# averaged over the whole training split: growth mainly *opens* the connections, and the
# next training phase sizes them.
#
# The new weights are exactly one gradient step from zero:

# %%
r = reports[0]
grown_weights = net.layers[0].weight.flat[r.indices]
print("first layer: new weights == -lr * G at the grown positions:",
      np.allclose(grown_weights, -opt.lr * gradients[0].flat[r.indices]))
print(f"their sizes: median |w| {np.median(np.abs(grown_weights)):.1e}, "
      f"against {np.median(np.abs(net.layers[0].weight[before[0] == 1])):.1e} "
      "for the weights already there")

# %% [markdown]
# ## Where the gradient points, and what grew
#
# Top row: $|G|$ of five first-layer units over their dormant pixels. Middle: the
# unit's active inputs before growth. Bottom: after growth, the new connections in red.
# The growth gradient follows the strokes of the digits, and it concentrates: these units
# grew far more than the layer's average, the 10% is per layer, not per unit. Pixels at
# the border, black in every image, have $G = 0$ and can never be grown; so do all inputs
# of a unit that is never active (notebook 1), which is why some rows of $G$ are empty.

# %%
fig, axes = plt.subplots(3, len(units), figsize=(2.2 * len(units), 7))
after = net.layers[0].mask
for col, unit in enumerate(units):
    axes[0, col].imshow(G0[unit].reshape(28, 28), cmap="magma")
    axes[0, col].set_title(f"unit {unit}: |G|")
    axes[1, col].imshow(before[0][unit].reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
    axes[1, col].set_title(f"before: {int(before[0][unit].sum())} inputs")
    rgb = np.ones((784, 3))
    rgb[before[0][unit] == 1] = 0.0                                 # old: black
    rgb[(after[unit] == 1) & (before[0][unit] == 0)] = (0.85, 0.1, 0.1)   # new: red
    axes[2, col].imshow(rgb.reshape(28, 28, 3))
    axes[2, col].set_title(f"after: +{int(after[unit].sum() - before[0][unit].sum())} (red)")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("connection growth in the first layer")
fig.tight_layout()
if not QUICK:
    fig.savefig(FIGURES / "02_growth_gradient.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## The histogram of $|G|$ and the threshold
#
# Each report keeps $|G|$ at every connection that was dormant before growth
# (`gradient_abs`) and the threshold. Log scale: the gradient spans many orders of
# magnitude. Everything right of the red line grew.

# %%
fig, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 3.2))
for ax, r in zip(axes, reports, strict=True):
    g = r.gradient_abs[r.gradient_abs > 0]
    ax.hist(np.log10(g), bins=60, color="#888888")
    ax.axvline(np.log10(r.threshold), color="red", label=f"threshold {r.threshold:.1e}")
    ax.set_title(f"layer {r.layer}: {r.added} of {r.dormant_before} grown\n"
                 f"({r.dormant_before - len(g)} have G = 0 exactly)", fontsize=9)
    ax.set_xlabel("log10 |G| over dormant connections")
    ax.legend(fontsize=8)
fig.tight_layout()
if not QUICK:
    fig.savefig(FIGURES / "02_gradient_histogram.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# The smaller layers' masks, whole: black = active before growth, red = grown.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [3, 1]})
for ax, (position, layer) in zip(axes, net.masked_layers()[1:], strict=True):
    rgb = np.ones(layer.mask.shape + (3,))
    rgb[before[position] == 1] = 0.0
    rgb[(layer.mask == 1) & (before[position] == 0)] = (0.85, 0.1, 0.1)
    ax.imshow(rgb, aspect="auto", interpolation="nearest")
    ax.set_title(f"layer {position} mask {layer.mask.shape}: "
                 f"{int(before[position].sum())} active "
                 f"+ {int(layer.mask.sum() - before[position].sum())} grown", fontsize=9)
    ax.set_xlabel("input unit")
    ax.set_ylabel("output unit")
plt.show()

# %% [markdown]
# ## Does it help? One epoch later
#
# Train the grown network and the un-grown copy (`control`, saved before growth) for one
# more epoch each, with the same batches. Growth adds capacity where the loss asked for
# it; whether that shows after one epoch on this data is what the numbers below say,
# not what we assume (quick mode's small data makes the difference noise).

# %%
results = {}
for name, model in (("grown", net), ("not grown", control)):
    model_opt = SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-4)
    fit(model, model_opt, (x_train, train_labels), None, epochs=1, batch_size=64, rng=1)
    results[name] = evaluate(model, x_val, val_labels)
    active = sum(int(layer.mask.sum()) for _, layer in model.masked_layers())
    print(f"{name:>9}: {active:6d} active connections, "
          f"validation loss {results[name]['loss']:.4f}, "
          f"error {100 * results[name]['error']:.2f}%")

# %% [markdown]
# **Next:** notebook 3 grows *neurons*, with a gradient for connections that do not
# exist even as dormant ones: the bridging gradient.
