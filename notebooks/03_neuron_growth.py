# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Neuron growth
#
# Connection growth (notebook 2) can only open connections that exist as dormant ones.
# A new **neuron** brings connections that did not exist at all. Which ones? NeST's
# answer is the **bridging gradient** (`nestref.nest.grow`; [docs/nest.md](../docs/nest.md),
# "Neuron growth").
#
# Put a new neuron $h$ in hidden layer $l$, with input weights $w^{in}$ from the
# activations $x^{(l-1)}$ of the layer below and output weights $w^{out}$ into the
# pre-activations $u^{(l+1)}$ of the layer above. While its ReLU is on, it adds
# $\Delta u^{(l+1)}_m = w^{out}_m \sum_n w^{in}_n\,x^{(l-1)}_n$, so to first order the loss
# changes by
#
# $$\Delta L \approx \sum_{m,n} G_{mn}\; w^{out}_m\, w^{in}_n,
#   \qquad G_{mn} = \operatorname{mean}_{\text{batch}}\;
#   x^{(l-1)}_n\,\frac{\partial \ell}{\partial u^{(l+1)}_m}.$$
#
# $G_{mn}$ is the gradient of a hypothetical *direct* weight $n \to m$ that skips layer
# $l$: the bridging gradient, shape $(\text{units of } l{+}1, \text{units of } l{-}1)$.
#
# `grow_neurons` ranks the pairs $(m, n)$ by $|G_{mn}|$; a new neuron takes the top
# `birth_ratio` ($\beta$) fraction. For each pair, with $d = \sqrt{|G_{mn}|}$:
# $w^{in}_n \mathrel{+}= d$ and $w^{out}_m \mathrel{+}= -\operatorname{sign}(G_{mn})\,d$, so
# that
# $w^{out}_m w^{in}_n = -G_{mn}$: down the gradient. Input weights stay $\ge 0$, so with
# inputs $\ge 0$ (pixels, ReLU outputs) the neuron starts switched on (**[ours]**; the
# paper's random sign per pair is `sign="random"`). Then the weights are rescaled to
# look like their layers' weights times a **birth strength** $\alpha$, tried on a ladder
# from large to small until the loss on the growth batch goes down (**[ours]**).
#
# The neuron is one unit, so $w^{out} \otimes w^{in}$ also has cross terms for pairs it
# did not choose; the first-order argument is a heuristic, and the ladder is the check.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from nestref.core.network import next_masked
from nestref.core.optim import SGD
from nestref.core.train import evaluate, fit, prepare_inputs
from nestref.data.datasets import load_splits
from nestref.nest.grow import (
    birth_strength_ladder,
    grow_feature_maps,
    grow_neurons,
    network_bridging_gradient,
)
from nestref.nest.networks import lenet5, lenet_300_100

# %matplotlib inline
print("birth-strength ladder:", [round(a, 4) for a in birth_strength_ladder()])

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
# ## The seed and the growth batch
#
# The same seed as in notebook 2 (LeNet-120-40 at 10% density, one epoch), and a random
# batch of training images to grow on, as `synthesize` draws one each round.

# %%
net = lenet_300_100(width_scale=0.4, density=0.1, seed=0)
opt = SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-4)
x_train, x_val = prepare_inputs(train_images, net), prepare_inputs(val_images, net)
fit(net, opt, (x_train, train_labels), None, epochs=1, batch_size=64, rng=0)

pick = np.random.default_rng(0).choice(len(x_train), size=500 if QUICK else 1000, replace=False)
xb, yb = x_train[pick], train_labels[pick]
seed_net = net.copy()                       # the network before any neuron is born
print(f"{net.name}: widths {net.widths()}; growth batch {xb.shape}; "
      f"validation error {100 * evaluate(net, x_val, val_labels)['error']:.2f}%")

# %% [markdown]
# ## The bridging gradient
#
# For hidden layer 0 (784 → **120** → 40) the bridge goes from the pixels straight to the
# 40 units of the next hidden layer: $G$ is $(40, 784)$. For hidden layer 2
# (120 → **40** → 10) it goes from the 120 first-layer units to the 10 outputs: $(10, 120)$.
# Each row of the first, reshaped to 28×28, is a picture of which pixels a direct wire
# into unit $m$ should carry, and with which sign (red: the loss wants the wire
# negative, blue: positive; $w^{out}_m w^{in}_n = -G_{mn}$).

# %%
bridges = {position: network_bridging_gradient(net, position, xb, yb) for position in (0, 2)}
for position, G in bridges.items():
    print(f"hidden layer {position}: bridging gradient {G.shape}, "
          f"max |G| {np.abs(G).max():.2e}")

fig = plt.figure(figsize=(13, 6.2))
grid = fig.add_gridspec(2, 4, height_ratios=[1, 1.1])
for col, position in enumerate((0, 2)):
    G = bridges[position]
    ax = fig.add_subplot(grid[0, 2 * col:2 * col + 2])
    vmax = np.abs(G).max()
    im = ax.imshow(G, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto",
                   interpolation="nearest")
    ax.set_title(f"G of hidden layer {position}: {G.shape}")
    ax.set_xlabel("unit n of the layer below (pixels for layer 0)")
    ax.set_ylabel("unit m of the layer above")
    fig.colorbar(im, ax=ax)
G = bridges[0]
top_rows = np.argsort(-np.abs(G).sum(axis=1), kind="stable")[:4]
for col, m in enumerate(top_rows):
    ax = fig.add_subplot(grid[1, col])
    vmax = np.abs(G[m]).max()
    ax.imshow(G[m].reshape(28, 28), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_title(f"layer 0, row m = {m}")
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
if not QUICK:
    fig.savefig(FIGURES / "03_bridging_gradient.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## One neuron is born
#
# `grow_neurons(net, 0, 1, x, y, birth_ratio=0.05, birth_strength=ladder)`: one new unit
# in hidden layer 0, taking the top 5% of the $40 \times 784$ pairs. The report says which
# birth strengths it tried, the loss with each, and the one it kept.

# %%
report = grow_neurons(net, 0, 1, xb, yb, birth_ratio=0.05, birth_strength=birth_strength_ladder())
unit = report.units[0]
print(f"added {report.added} neuron (unit {unit}, grown={net.layers[0].grown[unit]}); "
      f"widths now {net.widths()}")
print(f"it took {report.pairs_per_neuron[0]} pairs; "
      f"birth strength kept: {report.birth_strength:.4g}")
for alpha, loss in zip(report.ladder, report.ladder_losses, strict=True):
    verdict = "kept" if alpha == report.birth_strength else "loss went up"
    print(f"  alpha {alpha:.4g}: growth-batch loss {loss:.5f}  ({verdict})")
print(f"growth-batch loss {report.loss_before:.5f} -> {report.loss_after:.5f}")
print(f"validation loss   {evaluate(seed_net, x_val, val_labels)['loss']:.5f} -> "
      f"{evaluate(net, x_val, val_labels)['loss']:.5f}")

# %%
w_in = net.layers[0].weight[unit]           # (784,): from the pixels
w_out = net.layers[2].weight[:, unit]       # (40,): into the next hidden layer
print(f"input weights: {np.count_nonzero(w_in)} nonzero, all >= 0: {bool((w_in >= 0).all())}; "
      f"output weights: {np.count_nonzero(w_out)} nonzero")
print("masks are exactly the nonzeros:",
      np.array_equal(net.layers[0].mask[unit] == 1, w_in != 0),
      np.array_equal(net.layers[2].mask[:, unit] == 1, w_out != 0))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 2.2]})
im = axes[0].imshow(w_in.reshape(28, 28), cmap="Greens")
axes[0].set_title(f"new unit {unit}: input weights (28x28)")
axes[0].set_xticks([])
axes[0].set_yticks([])
fig.colorbar(im, ax=axes[0], shrink=0.8)
axes[1].bar(np.arange(len(w_out)), w_out, color=np.where(w_out >= 0, "#2a9d8f", "#e76f51"))
axes[1].axhline(0, color="k", lw=0.5)
axes[1].set_title("output weights, into each unit of the next hidden layer")
axes[1].set_xlabel("unit m of layer 2")
fig.tight_layout()
if not QUICK:
    fig.savefig(FIGURES / "03_new_neuron.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Why a ladder of birth strengths
#
# The ladder stops at the first $\alpha$ that lowers the loss, so the report holds only
# the strengths it tried. To see the whole curve, grow the same neuron on copies of
# the seed with one $\alpha$ at a time (a single-value `birth_strength` is a ladder of
# one: the report then has that loss even when no neuron is added). Large $\alpha$ blows
# the loss up: the neuron's ~1500 all-positive inputs add up. Small $\alpha$ is safe but
# does little. The kept value is the largest safe one on the ladder.

# %%
alphas = np.geomspace(1e-3, 1.0, 13)
losses = [grow_neurons(seed_net.copy(), 0, 1, xb, yb, birth_strength=a).ladder_losses[0]
          for a in alphas]

fig, ax = plt.subplots(figsize=(7, 3.6))
ax.semilogx(alphas, losses, "o-", label="loss with the new neuron")
ax.axhline(report.loss_before, color="k", ls="--", label="loss without it")
ax.semilogx(report.ladder, report.ladder_losses, "s", color="red", ms=9, mfc="none",
            label="ladder tried")
ax.set_xlabel("birth strength alpha")
ax.set_ylabel("growth-batch loss")
ax.set_ylim(top=max(report.loss_before * 1.5, min(losses) * 2))
ax.legend()
plt.show()
best = alphas[int(np.argmin(losses))]
print(f"lowest loss at alpha ~ {best:.3g}; the ladder kept {report.birth_strength:.3g}")

# %% [markdown]
# ### The sign rule
#
# With `sign="random"` (the paper's rule) each pair draws its sign at random, so about
# half the input weights are negative. On inputs $\ge 0$ the neuron's pre-activation can
# then be negative: switched off, and a switched-off ReLU passes no gradient, so it may
# never learn (notebook 1). A neuron that takes one pair is off on every image when its
# one input weight came out negative; with many pairs the signs average out. So: for
# neurons taking 1, 10, 100 and 1568 pairs (`birth_ratio` = pairs / all pairs), ten
# random draws each, over the validation images, how often is the newborn neuron on?

# %%
n_pairs = bridges[0].size
print(f"{'pairs':>6} {'sign':>9} {'added':>6} {'dead on arrival':>16} "
      f"{'mean share of images where on':>30}")
for pairs in (1, 10, 100, 1568):
    for sign in ("positive", "random"):
        on_shares = []
        for draw in range(10 if sign == "random" else 1):      # sign="positive" does not draw
            trial = seed_net.copy()
            r = grow_neurons(trial, 0, 1, xb, yb, birth_ratio=pairs / n_pairs,
                             birth_strength=birth_strength_ladder(), sign=sign, rng=draw)
            if r.added:
                unit_ = r.units[0]
                pre_activation = x_val @ trial.layers[0].weight[unit_] + trial.layers[0].bias[unit_]
                on_shares.append((pre_activation > 0).mean())
        dead = sum(share == 0 for share in on_shares)
        mean_on = f"{100 * np.mean(on_shares):.1f}%" if on_shares else "-"
        print(f"{pairs:>6} {sign:>9} {len(on_shares):>3}/{10 if sign == 'random' else 1:<2} "
              f"{dead:>16} {mean_on:>30}")

# %% [markdown]
# Read the `added` column too: a neuron that is off on every image changes no output, so
# it cannot lower the loss, and the ladder never adds one. That is why no added neuron is
# dead on arrival, and why some random draws were not added at all. What random signs
# cost beyond that is the share of images on which the new neuron is on.

# %% [markdown]
# ### Several neurons at once
#
# Asked for $k$ neurons, `grow_neurons` gives neuron $j$ the $j$-th chunk of the ranked
# pairs (**[ours]**), so they do not all copy the strongest pairs. Four new units in
# hidden layer 2, whose bridge (first-layer units → 10 outputs) has 121 × 10 pairs, so 5% is
# 61 pairs each (the neuron born above is one of the 121; it takes part like any other):

# %%
r = grow_neurons(net, 2, 4, xb, yb, birth_ratio=0.05, birth_strength=birth_strength_ladder())
print({key: value for key, value in r.as_dict().items() if key not in ("ladder", "ladder_losses")})
print("widths now", net.widths())

# %% [markdown]
# ## Feature-map growth (LeNet-5)
#
# For a convolution there is no bridging gradient in `nestref` (the paper gives none for
# feature maps). `grow_feature_maps` follows the paper's words instead: draw `candidates`
# random kernel sets for the new map (its input kernels in this layer and its outgoing
# weights in the next, each on a random mask of its layer's density and scaled to its
# layer's mean $|w|$), evaluate the batch loss with each, and keep the best, if it lowers
# the loss at all.
#
# The seed is the `lenet5` preset's: `lenet5(width_scale=0.5, density=0.3)`, i.e.
# conv 10, conv 25, dense 250, dense 10, with 30% of the connections active.

# %%
net5 = lenet5(width_scale=0.5, density=0.3, seed=0)
n5 = 1500 if QUICK else 10000         # LeNet-5 is slower: a part of the training split
x5 = prepare_inputs(train_images[:n5], net5)
fit(net5, SGD(net5, lr=0.02, momentum=0.9, weight_decay=5e-4), (x5, train_labels[:n5]), None,
    epochs=1, batch_size=64, rng=0)
xb5, yb5 = x5[:300 if QUICK else 500], train_labels[:300 if QUICK else 500]
print(f"{net5.name}: widths {net5.widths()}, trained on {n5} images; growth batch {xb5.shape}")

map_reports = {}
for position in (0, 2):
    map_reports[position] = grow_feature_maps(net5, position, 2, xb5, yb5,
                                              candidates=5 if QUICK else 10, rng=0)
    r = map_reports[position]
    print(f"conv layer {position}: added {r.added} of {r.requested} maps (units {r.units}), "
          f"loss {r.loss_before:.4f} -> {r.loss_after:.4f} {r.reason}")
print("widths now", net5.widths())

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
for ax, (position, r) in zip(axes, map_reports.items(), strict=True):
    for j, losses in enumerate(r.candidate_losses):
        kept = j < r.added
        ax.plot(np.arange(len(losses)) + 0.15 * j, losses, "o",
                label=f"map {j + 1}" + ("" if kept else " (none kept)"))
    ax.axhline(r.loss_before, color="k", ls="--", label="loss before the first map")
    ax.set_title(f"conv layer {position}: batch loss with each random candidate", fontsize=9)
    ax.set_xlabel("candidate")
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# The first map each layer kept. A conv-1 map has one 5×5 input kernel and a 5×5
# kernel into every conv-2 map; a conv-2 map has a kernel from every conv-1 map, and its
# outgoing weights are the 4×4 = 16 columns it owns in the flattened input of the dense
# layer (`add_units` put them at the map's flattened position), one row per dense unit.
# Grey: dormant (each drawn at its layer's density).

# %%
for position, r in map_reports.items():
    if not r.added:
        print(f"conv layer {position}: no map was kept, nothing to show")
        continue
    new_map = r.units[0]
    nxt, block = next_masked(net5, position)
    kernels_in = np.ma.masked_equal(net5.layers[position].weight[new_map], 0)      # (C, 5, 5)
    following = net5.layers[nxt]
    if block == 1:
        # (maps of the next conv, 5, 5)
        outgoing = np.ma.masked_equal(following.weight[:, new_map], 0)
    else:
        # (units, H*W)
        outgoing = np.ma.masked_equal(
            following.weight[:, new_map * block:(new_map + 1) * block], 0)
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("#dddddd")
    fig, axes = plt.subplots(2, 12, figsize=(13, 2.6))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    vmax = np.abs(kernels_in).max()
    for k, kernel in enumerate(kernels_in[:12]):
        axes[0, k].imshow(kernel, cmap=cmap, vmin=-vmax, vmax=vmax)
    axes[0, 0].set_title(f"conv layer {position}, new map {new_map}: "
                         f"its {len(kernels_in)} input kernel(s)", fontsize=9, loc="left")
    vmax = np.abs(outgoing).max()
    if block == 1:
        for k, kernel in enumerate(outgoing[:12]):
            axes[1, k].imshow(kernel, cmap=cmap, vmin=-vmax, vmax=vmax)
        axes[1, 0].set_title(f"its kernels into the first 12 of {len(outgoing)} maps "
                             f"of layer {nxt}", fontsize=9, loc="left")
    else:
        big = fig.add_subplot(2, 1, 2)
        big.imshow(outgoing.T, cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto",
                   interpolation="nearest")
        big.set_title(f"its {block} flattened positions (rows) into the {outgoing.shape[0]} "
                      f"units of dense layer {nxt} (columns)", fontsize=9, loc="left")
        big.set_yticks([])
    plt.show()

# %% [markdown]
# Random candidates are a blunt tool next to the bridging gradient: with a few
# candidates, whether one beats the current loss is luck, and the report says so when
# none did. **Next:** notebook 4, the other half of NeST: pruning.
