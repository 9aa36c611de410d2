# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Masked layers and backprop
#
# NeST changes a network's connections all the time: growth switches dormant
# connections on, pruning switches active ones off. nestref never reshapes a weight
# tensor to do that. Every weight tensor $W$ has a **mask** $M$ of the same shape,
# $M_{ji} \in \{0, 1\}$, and the layer computes with the *effective weight* $W \odot M$:
#
# * $M_{ji} = 1$: the connection $i \to j$ is **active**;
# * $M_{ji} = 0$: it is **dormant**, and $W_{ji} = 0$ too. That is the invariant every
#   operation keeps: **$W = 0$ wherever $M = 0$**.
#
# This notebook takes the two masked layers of `nestref.core.layers`, `Dense` and `Conv2d`,
# at toy sizes, writes their forward and backward passes out with shapes, checks the
# backward pass against finite differences, and shows the one fact NeST's growth is
# built on: **a dormant connection has no weight, but it has a gradient.**
# Nothing here needs MNIST; quick and full mode are the same.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import nestref
from nestref.core.layers import Conv2d, Dense, ReLU
from nestref.core.network import Network, loss_and_grads
from nestref.core.optim import SGD

# %matplotlib inline
np.set_printoptions(precision=3, suppress=True, linewidth=110)
print("nestref", nestref.__version__)

# %%
# NESTREF_QUICK=1: small data, few epochs, nothing written to the repository
QUICK = os.environ.get("NESTREF_QUICK", "0") == "1"
REPO = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").exists())
FIGURES = REPO / "figures" / "notebooks"   # full mode saves the figures the README links here
if not QUICK:
    FIGURES.mkdir(parents=True, exist_ok=True)
print(f"mode: {'quick (NESTREF_QUICK=1)' if QUICK else 'full'}")

# %% [markdown]
# ## A masked `Dense` layer
#
# `Dense(n_in, n_out, density)` draws a random mask with a `density` fraction of ones
# and He-normal weights on it. We use float64 here: finite differences need the
# precision (the real networks are float32).

# %%
dense = Dense(5, 3, density=0.5, rng=0, dtype=np.float64)
print("mask M (out, in) =", dense.mask.shape)
print(dense.mask)
print("weight W: zero wherever M is (-0. is a zero too: a negative draw times a 0 mask)")
print(dense.weight)
print("bias b:", dense.bias, "  grown (provenance, per output unit):", dense.grown)

# %% [markdown]
# ### Forward
#
# For a batch of $N$ examples:
#
# | symbol | meaning | shape here |
# |---|---|---|
# | $x$ | input | $(N, \text{in}) = (4, 5)$ |
# | $W, M$ | weight, mask | $(\text{out}, \text{in}) = (3, 5)$ |
# | $b$ | bias | $(\text{out},) = (3,)$ |
# | $u = x\,(W \odot M)^\top + b$ | output (pre-activation) | $(N, \text{out}) = (4, 3)$ |
#
# ### Backward
#
# The layer receives $\delta = \partial L / \partial u$, shape $(N, \text{out})$, and returns
# $\partial L / \partial x$. On the way it stores two gradients:
#
# | quantity | formula | shape | stored as |
# |---|---|---|---|
# | $\partial L/\partial (W\odot M)$ | $\delta^\top x$ | $(\text{out}, \text{in})$ | `grad_weight` |
# | $\partial L/\partial b$ | $\sum_n \delta_n$ | $(\text{out},)$ | `grad_bias` |
# | $\partial L/\partial x$ | $\delta\,(W \odot M)$ | $(N, \text{in})$ | returned |
#
# Note what `grad_weight` is: the gradient with respect to the *effective* weight, at
# **every** position. $(\delta^\top x)_{ji} = \sum_n \delta_{nj} x_{ni}$ does not involve
# $M_{ji}$ at all. The gradient with respect to $W$ itself is $(\delta^\top x) \odot M$;
# that is what the optimizer applies (`nestref.core.optim.SGD` masks it).

# %%
rng = np.random.default_rng(1)
x = rng.standard_normal((4, 5))
u = dense.forward(x)
delta = rng.standard_normal(u.shape)      # stands in for dL/du, sent down by the layers above
grad_x = dense.backward(delta)

print("shapes: x", x.shape, "-> u", u.shape, "| grad_weight", dense.grad_weight.shape,
      "| grad_x", grad_x.shape)
print("u           == x (W*M)^T + b :", np.allclose(u, x @ dense.effective_weight().T + dense.bias))
print("grad_weight == delta^T x     :", np.allclose(dense.grad_weight, delta.T @ x))
print("grad_bias   == sum_n delta_n :", np.allclose(dense.grad_bias, delta.sum(axis=0)))
print("grad_x      == delta (W*M)   :", np.allclose(grad_x, delta @ dense.effective_weight()))


# %% [markdown]
# ### Finite-difference check
#
# Take the scalar $L = \sum_{n,j} u_{nj}\,\delta_{nj}$: its gradient with respect to $u$ is
# exactly $\delta$, so the backward pass above computed $\partial L/\partial(W\odot M)$,
# $\partial L/\partial b$ and $\partial L/\partial x$ of this $L$. Central differences,
# $\big(L(\theta+\varepsilon) - L(\theta-\varepsilon)\big)/2\varepsilon$, give the same
# numbers without calculus.
#
# To nudge a *dormant* entry of $W \odot M$ we need a layer in which it can move: a copy
# with the mask opened everywhere (`mask[...] = 1`). Because $W$ is zero at the dormant
# positions, the copy computes exactly the same function, and its weight **is** the
# effective weight of the original.

# %%
def numerical_gradient(f, array, eps=1e-6):
    """Central differences of the scalar f() with respect to every entry of `array`.

    `array` is edited in place and restored."""
    grad = np.zeros_like(array)
    for idx in np.ndindex(*array.shape):
        old = array[idx]
        array[idx] = old + eps
        plus = f()
        array[idx] = old - eps
        minus = f()
        array[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def relative_error(analytic, numeric):
    return np.abs(analytic - numeric).max() / max(np.abs(numeric).max(), 1e-12)


opened = Dense(5, 3, dtype=np.float64)            # same shape, every connection active
opened.weight[...] = dense.effective_weight()
opened.bias[...] = dense.bias
assert np.allclose(opened.forward(x), dense.forward(x))   # same function

def loss_opened():
    return float((opened.forward(x) * delta).sum())


def loss_masked():
    return float((dense.forward(x) * delta).sum())


checks = {
    "d L / d(W*M)  (every position)":
        (dense.grad_weight, numerical_gradient(loss_opened, opened.weight)),
    "d L / d b": (dense.grad_bias, numerical_gradient(loss_masked, dense.bias)),
    "d L / d x": (grad_x, numerical_gradient(loss_masked, x)),
}
for name, (analytic, numeric) in checks.items():
    print(f"{name:32s} relative error {relative_error(analytic, numeric):.1e}")
    assert relative_error(analytic, numeric) < 1e-6

# %% [markdown]
# ## A masked `Conv2d` layer
#
# `Conv2d(in_c, out_c, k)` holds $W, M$ of shape $(O, C, k, k)$. Its forward pass is a
# cross-correlation (what every DL framework calls convolution):
#
# $$u_{n,o,i,j} = b_o + \sum_{c,a,b} x_{n,c,i+a,j+b}\,(W\odot M)_{o,c,a,b}$$
#
# computed as **one matrix product** on unfolded patches (im2col). With $x$ of shape
# $(N, C, H, W) = (2, 2, 5, 5)$, $k = 3$, stride 1, no padding, the output is
# $H_o \times W_o = 3 \times 3$:
#
# | step | formula | shape |
# |---|---|---|
# | unfold | `cols = im2col(x)`: one row per patch | $(N H_o W_o, C k k) = (18, 18)$ |
# | product | `cols @ (W*M).reshape(O, C*k*k).T + b` | $(N H_o W_o, O) = (18, 3)$ |
# | fold back | reshape to $(N, H_o, W_o, O)$, transpose | $(N, O, H_o, W_o) = (2, 3, 3, 3)$ |
#
# Row $(n, i, j)$ of `cols` is the patch $x_{n,:,i:i+k,j:j+k}$, flattened.
#
# Backward, from $\delta$ of shape $(N, O, H_o, W_o)$, transposed to $g$ of shape
# $(N H_o W_o, O)$:
#
# | quantity | formula | shape |
# |---|---|---|
# | `grad_weight` | $(g^\top\,\text{cols})$ reshaped | $(O, C, k, k) = (3, 2, 3, 3)$ |
# | `grad_bias` | $\sum$ of $g$ over rows | $(O,)$ |
# | $\partial L/\partial\,\text{cols}$ | $g\,(W\odot M)$ reshaped $(O, Ckk)$ | $(18, 18)$ |
# | $\partial L/\partial x$ | `col2im`: each patch's gradient added back in place | $(2, 2, 5, 5)$ |
#
# As for `Dense`, `grad_weight` is $\partial L/\partial(W\odot M)$ and does not look at the
# mask.

# %%
conv = Conv2d(2, 3, 3, density=0.5, rng=0, dtype=np.float64)
xc = rng.standard_normal((2, 2, 5, 5))
uc = conv.forward(xc)
print("x", xc.shape, "-> cols", conv._cols.shape, "-> u", uc.shape)
print("row 0 of cols is the patch x[0, :, 0:3, 0:3]:",
      np.array_equal(conv._cols[0], xc[0, :, 0:3, 0:3].ravel()))

# the definition, one output at a time, against the layer's single matrix product
V = conv.effective_weight()
direct = np.zeros_like(uc)
for n, o, i, j in np.ndindex(*uc.shape):
    direct[n, o, i, j] = conv.bias[o] + (xc[n, :, i:i + 3, j:j + 3] * V[o]).sum()
print("max |im2col product - direct loop| =", np.abs(uc - direct).max())

# %%
delta_c = rng.standard_normal(uc.shape)
grad_xc = conv.backward(delta_c)
print("grad_weight", conv.grad_weight.shape, "| grad_bias", conv.grad_bias.shape,
      "| grad_x", grad_xc.shape)

opened_conv = Conv2d(2, 3, 3, dtype=np.float64)
opened_conv.weight[...] = conv.effective_weight()
opened_conv.bias[...] = conv.bias
def loss_opened():
    return float((opened_conv.forward(xc) * delta_c).sum())


def loss_masked():
    return float((conv.forward(xc) * delta_c).sum())


checks = {
    "d L / d(W*M)  (every position)":
        (conv.grad_weight, numerical_gradient(loss_opened, opened_conv.weight)),
    "d L / d b": (conv.grad_bias, numerical_gradient(loss_masked, conv.bias)),
    "d L / d x": (grad_xc, numerical_gradient(loss_masked, xc)),
}
for name, (analytic, numeric) in checks.items():
    print(f"{name:32s} relative error {relative_error(analytic, numeric):.1e}")
    assert relative_error(analytic, numeric) < 1e-6

# %% [markdown]
# ## Through a whole network
#
# `Network` chains layers; `loss_and_grads(net, x, y)` runs the forward pass, the mean
# softmax cross-entropy, and the backward pass, leaving `grad_weight` in every masked
# layer. The same check, now through a ReLU and the loss, for the first layer's
# effective weight:

# %%
net = Network([Dense(6, 4, density=0.4, rng=2, dtype=np.float64), ReLU(),
               Dense(4, 3, density=0.6, rng=3, dtype=np.float64)], input_shape=(6,), name="toy")
net.layers[0].bias[...] = 0.1   # keeps pre-activations off ReLU's kink at 0 (see below)
xn = np.abs(rng.standard_normal((8, 6)))           # non-negative inputs, like pixels
yn = rng.integers(0, 3, size=8)
loss, logits = loss_and_grads(net, xn, yn)
analytic = net.layers[0].grad_weight.copy()

opened_net = net.copy()
opened_net.layers[0].mask[...] = 1                 # same function: W is 0 where M was 0
numeric = numerical_gradient(lambda: loss_and_grads(opened_net, xn, yn)[0],
                             opened_net.layers[0].weight)
print(f"loss {loss:.4f}; first layer dL/d(W*M): "
      f"relative error {relative_error(analytic, numeric):.1e}")
assert relative_error(analytic, numeric) < 1e-6

# %% [markdown]
# Why the bias: hidden unit 2 of this toy layer has no active input, so with a zero bias
# its pre-activation is exactly 0, where ReLU has a kink. The backward pass takes ReLU's
# slope there as 0 (`x > 0`), while a finite difference that opens one of its inputs sees
# the slope 1 on one side. Without the bias the check fails, by design of the kink, not of
# the code. It is also a fact about growth: a unit whose pre-activation is never positive
# passes no gradient back, so **no connection into it can ever be grown**.

# %% [markdown]
# ## Why a dormant connection still has a gradient
#
# $\partial L/\partial(W\odot M)_{ji} = \sum_n \delta_{nj}\,x_{ni}$ is how fast the loss
# would fall if the connection $i \to j$ existed and its weight moved. It only needs the input
# $x_i$ and the error signal $\delta_j$, and both are there whether or not $i \to j$ is
# active. That number is NeST's **growth gradient**: connection growth (notebook 2) opens
# the dormant connections where it is largest.
#
# It is zero only when $x_{ni}\,\delta_{nj}$ sums to zero, e.g. when input $i$ is zero on
# every example (an MNIST pixel that is black in every image): such a connection can
# never grow.

# %%
layer = Dense(16, 8, density=0.3, rng=4, dtype=np.float64)
xs = np.abs(rng.standard_normal((32, 16)))
xs[:, 3] = 0.0                                      # input 3 is zero on every example
layer.forward(xs)
layer.backward(rng.standard_normal((32, 8)))

dormant = layer.mask == 0
g = layer.grad_weight
print(f"{dormant.sum()} dormant connections; "
      f"nonzero gradient at {np.count_nonzero(g[dormant])} of them")
print(f"the {np.count_nonzero(dormant[:, 3])} dormant connections from input 3 (always 0):",
      "gradient", np.unique(g[:, 3][dormant[:, 3]]))

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
vmax = np.abs(g).max()
axes[0].imshow(layer.mask, cmap="gray_r", vmin=0, vmax=1)
axes[0].set_title("mask M (black: active)")
axes[1].imshow(g, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
axes[1].set_title("grad_weight = dL/d(W*M): dense")
im = axes[2].imshow(g * layer.mask, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
axes[2].set_title("grad_weight * M: what SGD applies")
for ax in axes:
    ax.set_xlabel("input i")
    ax.set_ylabel("output j")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# ## The invariant through training
#
# `nestref.core.optim.SGD` (momentum and weight decay included) masks the gradient before it
# enters the momentum buffer and re-masks buffer and weight after each step, so a dormant
# weight cannot drift into life through momentum or decay. A hundred steps on a toy
# problem: the loss falls, the dormant positions keep a nonzero gradient, and their
# weights stay exactly zero.

# %%
net = Network([Dense(10, 8, density=0.3, rng=5), ReLU(), Dense(8, 4, density=0.3, rng=6)], (10,),
              name="toy")
masks_at_start = [layer.mask.copy() for _, layer in net.masked_layers()]
opt = SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-3)
xt = np.abs(rng.standard_normal((64, 10))).astype(np.float32)
yt = rng.integers(0, 4, size=64)

losses, dormant_weight, dormant_grad = [], [], []
for _step in range(100):
    loss, _ = loss_and_grads(net, xt, yt)
    opt.step()
    losses.append(loss)
    dormant_weight.append(max(np.abs(lay.weight[lay.mask == 0]).max()
                              for _, lay in net.masked_layers()))
    dormant_grad.append(max(np.abs(lay.grad_weight[lay.mask == 0]).max()
                            for _, lay in net.masked_layers()))

assert max(dormant_weight) == 0.0
assert all(
    np.array_equal(m, lay.mask)
    for m, (_, lay) in zip(masks_at_start, net.masked_layers(), strict=True)
)
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
      f"max |W| at dormant positions over all steps: {max(dormant_weight)}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(losses)
axes[0].set_title("training loss")
axes[1].plot(dormant_grad, label="max |grad_weight| at dormant positions")
axes[1].plot(dormant_weight, label="max |W| at dormant positions")
axes[1].legend()
axes[1].set_title("dormant: a gradient, never a weight")
for ax in axes:
    ax.set_xlabel("SGD step")
plt.show()

# %% [markdown]
# **Next:** notebook 2 uses this gradient on a real seed network: it averages
# `grad_weight` over the training data and opens the dormant connections where it is
# largest.
