"""Write the teaching notebooks (notebooks/NN_*.ipynb) from the cell sources below.

    python scripts/make_notebooks.py          # rewrite every notebook, outputs cleared
    python scripts/make_notebooks.py 03 04    # only these
    python scripts/run_notebooks.py           # then execute them, saving outputs

This file is the single source of the notebooks' text and code: edit a cell here,
regenerate, re-run. ``tests/test_notebooks.py`` checks that the committed notebooks
hold exactly these cells. Cell ids are derived from the notebook's name and the
cell's position, so regenerating an unchanged notebook changes nothing.
"""
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def md(text):
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(text):
    return ("code", textwrap.dedent(text).strip("\n"))


# The first code cell of every notebook: the mode switch and where things are.
SETUP = '''
QUICK = os.environ.get("NESTREF_QUICK", "0") == "1"   # 1: small data, few epochs, nothing written to the repo
REPO = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").exists())
FIGURES = REPO / "figures" / "notebooks"               # full mode saves the figures the README links here
if not QUICK:
    FIGURES.mkdir(parents=True, exist_ok=True)
print(f"mode: {'quick (NESTREF_QUICK=1)' if QUICK else 'full'}")
'''

DATA = '''
mnist = load_mnist()   # looks in $NESTREF_DATA_DIR, then ~/.cache/nestref/mnist, then downloads
images, labels = mnist.train_images, mnist.train_labels
if QUICK:
    images, labels = images[:3000], labels[:3000]
train_images, train_labels, val_images, val_labels = train_val_split(images, labels, n_val=500 if QUICK else 5000, seed=0)
print(f"{len(train_images)} training / {len(val_images)} validation images (split off MNIST's training set)")
'''


# =========================================================================== 01
NB01 = [
    md(r"""
    # 1. Masked layers and backprop

    NeST changes a network's connections all the time: growth switches dormant
    connections on, pruning switches active ones off. nestref never reshapes a weight
    tensor to do that. Every weight tensor $W$ has a **mask** $M$ of the same shape,
    $M_{ji} \in \{0, 1\}$, and the layer computes with the *effective weight* $W \odot M$:

    * $M_{ji} = 1$: the connection $i \to j$ is **active**;
    * $M_{ji} = 0$: it is **dormant**, and $W_{ji} = 0$ too. That is the invariant every
      operation keeps: **$W = 0$ wherever $M = 0$**.

    This notebook takes the two masked layers of `nestref.layers`, `Dense` and `Conv2d`,
    at toy sizes, writes their forward and backward passes out with shapes, checks the
    backward pass against finite differences, and shows the one fact NeST's growth is
    built on: **a dormant connection has no weight, but it has a gradient.**
    Nothing here needs MNIST; quick and full mode are the same.
    """),
    code('''
    import os
    from pathlib import Path

    import numpy as np
    import matplotlib.pyplot as plt

    import nestref
    from nestref.layers import Conv2d, Dense, ReLU
    from nestref.models import Network, loss_and_grads
    from nestref.optim import SGD

    %matplotlib inline
    np.set_printoptions(precision=3, suppress=True, linewidth=110)
    print("nestref", nestref.__version__)
    '''),
    code(SETUP),
    md(r"""
    ## A masked `Dense` layer

    `Dense(n_in, n_out, density)` draws a random mask with a `density` fraction of ones
    and He-normal weights on it. We use float64 here: finite differences need the
    precision (the real networks are float32).
    """),
    code('''
    dense = Dense(5, 3, density=0.5, rng=0, dtype=np.float64)
    print("mask M (out, in) =", dense.mask.shape)
    print(dense.mask)
    print("weight W: zero wherever M is (-0. is a zero too: a negative draw times a 0 mask)")
    print(dense.weight)
    print("bias b:", dense.bias, "  grown (provenance, per output unit):", dense.grown)
    '''),
    md(r"""
    ### Forward

    For a batch of $N$ examples:

    | symbol | meaning | shape here |
    |---|---|---|
    | $x$ | input | $(N, \text{in}) = (4, 5)$ |
    | $W, M$ | weight, mask | $(\text{out}, \text{in}) = (3, 5)$ |
    | $b$ | bias | $(\text{out},) = (3,)$ |
    | $u = x\,(W \odot M)^\top + b$ | output (pre-activation) | $(N, \text{out}) = (4, 3)$ |

    ### Backward

    The layer receives $\delta = \partial L / \partial u$, shape $(N, \text{out})$, and returns
    $\partial L / \partial x$. On the way it stores two gradients:

    | quantity | formula | shape | stored as |
    |---|---|---|---|
    | $\partial L/\partial (W\odot M)$ | $\delta^\top x$ | $(\text{out}, \text{in})$ | `grad_weight` |
    | $\partial L/\partial b$ | $\sum_n \delta_n$ | $(\text{out},)$ | `grad_bias` |
    | $\partial L/\partial x$ | $\delta\,(W \odot M)$ | $(N, \text{in})$ | returned |

    Note what `grad_weight` is: the gradient with respect to the *effective* weight, at
    **every** position. $(\delta^\top x)_{ji} = \sum_n \delta_{nj} x_{ni}$ does not involve
    $M_{ji}$ at all. The gradient with respect to $W$ itself is $(\delta^\top x) \odot M$;
    that is what the optimizer applies (`nestref.optim.SGD` masks it).
    """),
    code('''
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5))
    u = dense.forward(x)
    delta = rng.standard_normal(u.shape)      # stands in for dL/du, sent down by the layers above
    grad_x = dense.backward(delta)

    print("shapes: x", x.shape, "-> u", u.shape, "| grad_weight", dense.grad_weight.shape, "| grad_x", grad_x.shape)
    print("u           == x (W*M)^T + b :", np.allclose(u, x @ dense.effective_weight().T + dense.bias))
    print("grad_weight == delta^T x     :", np.allclose(dense.grad_weight, delta.T @ x))
    print("grad_bias   == sum_n delta_n :", np.allclose(dense.grad_bias, delta.sum(axis=0)))
    print("grad_x      == delta (W*M)   :", np.allclose(grad_x, delta @ dense.effective_weight()))
    '''),
    md(r"""
    ### Finite-difference check

    Take the scalar $L = \sum_{n,j} u_{nj}\,\delta_{nj}$: its gradient with respect to $u$ is
    exactly $\delta$, so the backward pass above computed $\partial L/\partial(W\odot M)$,
    $\partial L/\partial b$ and $\partial L/\partial x$ of this $L$. Central differences,
    $\big(L(\theta+\varepsilon) - L(\theta-\varepsilon)\big)/2\varepsilon$, give the same numbers
    without calculus.

    To nudge a *dormant* entry of $W \odot M$ we need a layer in which it can move: a copy
    with the mask opened everywhere (`mask[...] = 1`). Because $W$ is zero at the dormant
    positions, the copy computes exactly the same function, and its weight **is** the
    effective weight of the original.
    """),
    code('''
    def numerical_gradient(f, array, eps=1e-6):
        """Central differences of the scalar f() with respect to every entry of `array` (edited in place, restored)."""
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
        "d L / d(W*M)  (every position)": (dense.grad_weight, numerical_gradient(loss_opened, opened.weight)),
        "d L / d b": (dense.grad_bias, numerical_gradient(loss_masked, dense.bias)),
        "d L / d x": (grad_x, numerical_gradient(loss_masked, x)),
    }
    for name, (analytic, numeric) in checks.items():
        print(f"{name:32s} relative error {relative_error(analytic, numeric):.1e}")
        assert relative_error(analytic, numeric) < 1e-6
    '''),
    md(r"""
    ## A masked `Conv2d` layer

    `Conv2d(in_c, out_c, k)` holds $W, M$ of shape $(O, C, k, k)$. Its forward pass is a
    cross-correlation (what every DL framework calls convolution):

    $$u_{n,o,i,j} = b_o + \sum_{c,a,b} x_{n,c,i+a,j+b}\,(W\odot M)_{o,c,a,b}$$

    computed as **one matrix product** on unfolded patches (im2col). With $x$ of shape
    $(N, C, H, W) = (2, 2, 5, 5)$, $k = 3$, stride 1, no padding, the output is
    $H_o \times W_o = 3 \times 3$:

    | step | formula | shape |
    |---|---|---|
    | unfold | `cols = im2col(x)`: row $(n,i,j)$ = patch $x_{n,:,i:i+k,j:j+k}$ flattened | $(N H_o W_o, C k k) = (18, 18)$ |
    | product | `cols @ (W*M).reshape(O, C*k*k).T + b` | $(N H_o W_o, O) = (18, 3)$ |
    | fold back | reshape to $(N, H_o, W_o, O)$, transpose | $(N, O, H_o, W_o) = (2, 3, 3, 3)$ |

    Backward, from $\delta$ of shape $(N, O, H_o, W_o)$, transposed to $g$ of shape $(N H_o W_o, O)$:

    | quantity | formula | shape |
    |---|---|---|
    | `grad_weight` $=\partial L/\partial(W\odot M)$ | $(g^\top\,\text{cols})$ reshaped | $(O, C, k, k) = (3, 2, 3, 3)$ |
    | `grad_bias` | $\sum$ of $g$ over rows | $(O,)$ |
    | $\partial L/\partial\,\text{cols}$ | $g\,(W\odot M)$ reshaped $(O, Ckk)$ | $(18, 18)$ |
    | $\partial L/\partial x$ | `col2im`: each patch's gradient added back where the patch came from | $(2, 2, 5, 5)$ |

    As for `Dense`, `grad_weight` does not look at the mask.
    """),
    code('''
    conv = Conv2d(2, 3, 3, density=0.5, rng=0, dtype=np.float64)
    xc = rng.standard_normal((2, 2, 5, 5))
    uc = conv.forward(xc)
    print("x", xc.shape, "-> cols", conv._cols.shape, "-> u", uc.shape)
    print("row 0 of cols is the patch x[0, :, 0:3, 0:3]:", np.array_equal(conv._cols[0], xc[0, :, 0:3, 0:3].ravel()))

    # the definition, one output at a time, against the layer's single matrix product
    V = conv.effective_weight()
    direct = np.zeros_like(uc)
    for n, o, i, j in np.ndindex(*uc.shape):
        direct[n, o, i, j] = conv.bias[o] + (xc[n, :, i:i + 3, j:j + 3] * V[o]).sum()
    print("max |im2col product - direct loop| =", np.abs(uc - direct).max())
    '''),
    code('''
    delta_c = rng.standard_normal(uc.shape)
    grad_xc = conv.backward(delta_c)
    print("grad_weight", conv.grad_weight.shape, "| grad_bias", conv.grad_bias.shape, "| grad_x", grad_xc.shape)

    opened_conv = Conv2d(2, 3, 3, dtype=np.float64)
    opened_conv.weight[...] = conv.effective_weight()
    opened_conv.bias[...] = conv.bias
    def loss_opened():
        return float((opened_conv.forward(xc) * delta_c).sum())


    def loss_masked():
        return float((conv.forward(xc) * delta_c).sum())


    checks = {
        "d L / d(W*M)  (every position)": (conv.grad_weight, numerical_gradient(loss_opened, opened_conv.weight)),
        "d L / d b": (conv.grad_bias, numerical_gradient(loss_masked, conv.bias)),
        "d L / d x": (grad_xc, numerical_gradient(loss_masked, xc)),
    }
    for name, (analytic, numeric) in checks.items():
        print(f"{name:32s} relative error {relative_error(analytic, numeric):.1e}")
        assert relative_error(analytic, numeric) < 1e-6
    '''),
    md(r"""
    ## Through a whole network

    `Network` chains layers; `loss_and_grads(net, x, y)` runs the forward pass, the mean
    softmax cross-entropy, and the backward pass, leaving `grad_weight` in every masked
    layer. The same check, now through a ReLU and the loss, for the first layer's
    effective weight:
    """),
    code('''
    net = Network([Dense(6, 4, density=0.4, rng=2, dtype=np.float64), ReLU(),
                   Dense(4, 3, density=0.6, rng=3, dtype=np.float64)], input_shape=(6,), name="toy")
    net.layers[0].bias[...] = 0.1   # keeps pre-activations off ReLU's kink at 0 (see below)
    xn = np.abs(rng.standard_normal((8, 6)))           # non-negative inputs, like pixels
    yn = rng.integers(0, 3, size=8)
    loss, logits = loss_and_grads(net, xn, yn)
    analytic = net.layers[0].grad_weight.copy()

    opened_net = net.copy()
    opened_net.layers[0].mask[...] = 1                 # same function: W is 0 where M was 0
    numeric = numerical_gradient(lambda: loss_and_grads(opened_net, xn, yn)[0], opened_net.layers[0].weight)
    print(f"loss {loss:.4f}; first layer dL/d(W*M): relative error {relative_error(analytic, numeric):.1e}")
    assert relative_error(analytic, numeric) < 1e-6
    '''),
    md(r"""
    Why the bias: hidden unit 2 of this toy layer has no active input, so with a zero bias
    its pre-activation is exactly 0, where ReLU has a kink. The backward pass takes ReLU's
    slope there as 0 (`x > 0`), while a finite difference that opens one of its inputs sees
    the slope 1 on one side. Without the bias the check fails, by design of the kink, not of
    the code. It is also a fact about growth: a unit whose pre-activation is never positive
    passes no gradient back, so **no connection into it can ever be grown**.
    """),
    md(r"""
    ## Why a dormant connection still has a gradient

    $\partial L/\partial(W\odot M)_{ji} = \sum_n \delta_{nj}\,x_{ni}$ is how fast the loss would
    fall if the connection $i \to j$ existed and its weight moved. It only needs the input
    $x_i$ and the error signal $\delta_j$, and both are there whether or not $i \to j$ is
    active. That number is NeST's **growth gradient**: connection growth (notebook 2) opens
    the dormant connections where it is largest.

    It is zero only when $x_{ni}\,\delta_{nj}$ sums to zero, e.g. when input $i$ is zero on
    every example (an MNIST pixel that is black in every image): such a connection can
    never grow.
    """),
    code('''
    layer = Dense(16, 8, density=0.3, rng=4, dtype=np.float64)
    xs = np.abs(rng.standard_normal((32, 16)))
    xs[:, 3] = 0.0                                      # input 3 is zero on every example
    layer.forward(xs)
    layer.backward(rng.standard_normal((32, 8)))

    dormant = layer.mask == 0
    g = layer.grad_weight
    print(f"{dormant.sum()} dormant connections; nonzero gradient at {np.count_nonzero(g[dormant])} of them")
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
    '''),
    md(r"""
    ## The invariant through training

    `nestref.optim.SGD` (momentum and weight decay included) masks the gradient before it
    enters the momentum buffer and re-masks buffer and weight after each step, so a dormant
    weight cannot drift into life through momentum or decay. A hundred steps on a toy
    problem: the loss falls, the dormant positions keep a nonzero gradient, and their
    weights stay exactly zero.
    """),
    code('''
    net = Network([Dense(10, 8, density=0.3, rng=5), ReLU(), Dense(8, 4, density=0.3, rng=6)], (10,), name="toy")
    masks_at_start = [layer.mask.copy() for _, layer in net.masked_layers()]
    opt = SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-3)
    xt = np.abs(rng.standard_normal((64, 10))).astype(np.float32)
    yt = rng.integers(0, 4, size=64)

    losses, dormant_weight, dormant_grad = [], [], []
    for step in range(100):
        loss, _ = loss_and_grads(net, xt, yt)
        opt.step()
        losses.append(loss)
        dormant_weight.append(max(np.abs(lay.weight[lay.mask == 0]).max() for _, lay in net.masked_layers()))
        dormant_grad.append(max(np.abs(lay.grad_weight[lay.mask == 0]).max() for _, lay in net.masked_layers()))

    assert max(dormant_weight) == 0.0
    assert all(np.array_equal(m, lay.mask) for m, (_, lay) in zip(masks_at_start, net.masked_layers()))
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; max |W| at dormant positions over all steps: {max(dormant_weight)}")

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
    '''),
    md(r"""
    **Next:** notebook 2 uses this gradient on a real seed network: it averages
    `grad_weight` over the training data and opens the dormant connections where it is largest.
    """),
]

# =========================================================================== 02
NB02 = [
    md(r"""
    # 2. Connection growth

    NeST starts from a small, sparse **seed**: here LeNet-300-100 with every hidden width
    scaled by 0.4 (LeNet-120-40) and only 10% of the connections active. The first growth
    operator opens dormant connections, guided by the loss (`nestref.grow`, NEST.md
    "Connection growth"):

    1. **Growth gradient.** For every masked layer, $G = \partial L/\partial (W \odot M)$,
       computed at every position (notebook 1) and averaged over the growth data: by
       default one pass over the training split (`growth_gradients`).
    2. **Rank** the layer's *dormant* connections by $|G|$ and activate the top `ratio`
       fraction ($\rho$, the growth ratio) of them, only ones with $|G| > 0$
       (`grow_connections`; ties go to the lowest flat index).
    3. **Initialise** each new weight one gradient step from zero: $w = -\eta\,G$, with $\eta$
       the learning rate the next training phase starts with (**[ours]**; `init="zero"` is
       the alternative). Active weights are not touched.

    Growth opens connections; training then sizes them.
    """),
    code('''
    import os
    from pathlib import Path

    import numpy as np
    import matplotlib.pyplot as plt

    from nestref.data import load_mnist, train_val_split
    from nestref.grow import grow_network_connections, growth_gradients
    from nestref.models import lenet_300_100
    from nestref.optim import SGD
    from nestref.train import evaluate, fit, prepare_inputs

    %matplotlib inline
    print("imported nestref.grow:", growth_gradients.__name__, grow_network_connections.__name__)
    '''),
    code(SETUP),
    code(DATA),
    md(r"""
    ## The seed, briefly trained

    `lenet_300_100(width_scale=0.4, density=0.1)`: 784 → 120 → 40 → 10, 10% of each
    layer's connections active. One epoch of SGD gives the growth gradient something to
    say (an untrained network's gradient mostly says "learn anything").
    """),
    code('''
    net = lenet_300_100(width_scale=0.4, density=0.1, seed=0)
    opt = SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-4)
    x_train, x_val = prepare_inputs(train_images, net), prepare_inputs(val_images, net)
    record = fit(net, opt, (x_train, train_labels), (x_val, val_labels), epochs=1, batch_size=64, rng=0)[-1]
    print(f"{net.name}: widths {net.widths()}, densities {[round(layer.density(), 3) for _, layer in net.masked_layers()]}")
    print(f"after 1 epoch: train loss {record['train_loss']:.3f}, validation error {100 * record['val_error']:.2f}%")
    '''),
    md(r"""
    ## The growth gradient

    `growth_gradients(net, x, y)` returns `{position: G}`, one array per masked layer
    shaped like its weight. For the first layer, $G$ is $(120, 784)$: row $j$ says, for
    every pixel, how much the loss would fall per unit of weight on the connection
    pixel → hidden unit $j$. Reshaped to 28×28, each row is a picture.
    """),
    code('''
    gradients = growth_gradients(net, x_train, train_labels, batch_size=1000)   # one pass over the training split
    for position, layer in net.masked_layers():
        print(f"layer {position}: G {gradients[position].shape}, max |G| {np.abs(gradients[position]).max():.2e}")

    before = {position: layer.mask.copy() for position, layer in net.masked_layers()}
    G0 = np.abs(gradients[0]) * (before[0] == 0)             # |G| over the first layer's dormant connections
    units = np.argsort(-G0.sum(axis=1), kind="stable")[:5]   # the units growth cares about most
    print("first-layer units with the largest total dormant |G|:", units)
    '''),
    code('''
    control = net.copy()                    # the same network, not grown, for a comparison below
    loss_before = {"growth data": evaluate(net, x_train, train_labels)["loss"], "validation": evaluate(net, x_val, val_labels)["loss"]}

    reports = grow_network_connections(net, ratio=0.1, gradients=gradients, init="gradient", lr=opt.lr)

    loss_after = {"growth data": evaluate(net, x_train, train_labels)["loss"], "validation": evaluate(net, x_val, val_labels)["loss"]}
    print(f"{'layer':>5} {'dormant':>8} {'|G|>0':>8} {'grown':>7} {'threshold |G|':>14} {'density':>16}")
    for r, (position, layer) in zip(reports, net.masked_layers()):
        print(f"{r.layer:>5} {r.dormant_before:>8} {r.candidates:>8} {r.added:>7} {r.threshold:>14.2e} "
              f"{before[position].mean():>7.3f} -> {layer.density():.3f}")
    for name in loss_before:
        print(f"loss on {name:12s}: {loss_before[name]:.5f} -> {loss_after[name]:.5f} (just after growth)")
    '''),
    md(r"""
    Each layer grew 10% of its dormant connections, the ones above its **threshold**: the
    smallest $|G|$ that made the cut. The loss falls a little at once: each new weight is
    one step down its own gradient, so to first order the loss drops by
    $\eta \sum G^2$ over the grown connections. But the new weights are tiny, $G$ being
    averaged over the whole training split: growth mainly *opens* the connections, and the
    next training phase sizes them.

    The new weights are exactly one gradient step from zero:
    """),
    code('''
    r = reports[0]
    grown_weights = net.layers[0].weight.flat[r.indices]
    print("first layer: new weights == -lr * G at the grown positions:",
          np.allclose(grown_weights, -opt.lr * gradients[0].flat[r.indices]))
    print(f"their sizes: median |w| {np.median(np.abs(grown_weights)):.1e}, "
          f"against {np.median(np.abs(net.layers[0].weight[before[0] == 1])):.1e} for the weights already there")
    '''),
    md(r"""
    ## Where the gradient points, and what grew

    Top row: $|G|$ of five first-layer units over their dormant pixels. Middle: the
    unit's active inputs before growth. Bottom: after growth, the new connections in red.
    The growth gradient follows the strokes of the digits, and it concentrates: these units
    grew far more than the layer's average, the 10% is per layer, not per unit. Pixels at
    the border, black in every image, have $G = 0$ and can never be grown; so do all inputs
    of a unit that is never active (notebook 1), which is why some rows of $G$ are empty.
    """),
    code('''
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
    '''),
    md(r"""
    ## The histogram of $|G|$ and the threshold

    Each report keeps $|G|$ at every connection that was dormant before growth
    (`gradient_abs`) and the threshold. Log scale: the gradient spans many orders of
    magnitude. Everything right of the red line grew.
    """),
    code('''
    fig, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 3.2))
    for ax, r in zip(axes, reports):
        g = r.gradient_abs[r.gradient_abs > 0]
        ax.hist(np.log10(g), bins=60, color="#888888")
        ax.axvline(np.log10(r.threshold), color="red", label=f"threshold {r.threshold:.1e}")
        ax.set_title(f"layer {r.layer}: {r.added} of {r.dormant_before} grown\\n"
                     f"({r.dormant_before - len(g)} have G = 0 exactly)", fontsize=9)
        ax.set_xlabel("log10 |G| over dormant connections")
        ax.legend(fontsize=8)
    fig.tight_layout()
    if not QUICK:
        fig.savefig(FIGURES / "02_gradient_histogram.png", dpi=100, bbox_inches="tight")
    plt.show()
    '''),
    md(r"""
    The smaller layers' masks, whole: black = active before growth, red = grown.
    """),
    code('''
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    for ax, (position, layer) in zip(axes, net.masked_layers()[1:]):
        rgb = np.ones(layer.mask.shape + (3,))
        rgb[before[position] == 1] = 0.0
        rgb[(layer.mask == 1) & (before[position] == 0)] = (0.85, 0.1, 0.1)
        ax.imshow(rgb, aspect="auto", interpolation="nearest")
        ax.set_title(f"layer {position} mask {layer.mask.shape}: {int(before[position].sum())} active "
                     f"+ {int(layer.mask.sum() - before[position].sum())} grown", fontsize=9)
        ax.set_xlabel("input unit")
        ax.set_ylabel("output unit")
    plt.show()
    '''),
    md(r"""
    ## Does it help? One epoch later

    Train the grown network and the un-grown copy (`control`, saved before growth) for one
    more epoch each, with the same batches. Growth adds capacity where the loss asked for
    it; whether that shows after one epoch on this data is what the numbers below say,
    not what we assume (quick mode's small data makes the difference noise).
    """),
    code('''
    results = {}
    for name, model in (("grown", net), ("not grown", control)):
        model_opt = SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-4)
        fit(model, model_opt, (x_train, train_labels), None, epochs=1, batch_size=64, rng=1)
        results[name] = evaluate(model, x_val, val_labels)
        active = sum(int(layer.mask.sum()) for _, layer in model.masked_layers())
        print(f"{name:>9}: {active:6d} active connections, validation loss {results[name]['loss']:.4f}, "
              f"error {100 * results[name]['error']:.2f}%")
    '''),
    md(r"""
    **Next:** notebook 3 grows *neurons*, with a gradient for connections that do not
    exist even as dormant ones: the bridging gradient.
    """),
]

# =========================================================================== 03
NB03 = [
    md(r"""
    # 3. Neuron growth

    Connection growth (notebook 2) can only open connections that exist as dormant ones.
    A new **neuron** brings connections that did not exist at all. Which ones? NeST's
    answer is the **bridging gradient** (`nestref.grow`, NEST.md "Neuron growth").

    Put a new neuron $h$ in hidden layer $l$, with input weights $w^{in}$ from the
    activations $x^{(l-1)}$ of the layer below and output weights $w^{out}$ into the
    pre-activations $u^{(l+1)}$ of the layer above. While its ReLU is on, it adds
    $\Delta u^{(l+1)}_m = w^{out}_m \sum_n w^{in}_n\,x^{(l-1)}_n$, so to first order the loss changes by

    $$\Delta L \approx \sum_{m,n} G_{mn}\; w^{out}_m\, w^{in}_n,
      \qquad G_{mn} = \operatorname{mean}_{\text{batch}}\; x^{(l-1)}_n\,\frac{\partial \ell}{\partial u^{(l+1)}_m}.$$

    $G_{mn}$ is the gradient of a hypothetical *direct* weight $n \to m$ that skips layer
    $l$: the bridging gradient, shape $(\text{units of } l{+}1, \text{units of } l{-}1)$.

    `grow_neurons` ranks the pairs $(m, n)$ by $|G_{mn}|$; a new neuron takes the top
    `birth_ratio` ($\beta$) fraction. For each pair, with $d = \sqrt{|G_{mn}|}$:
    $w^{in}_n \mathrel{+}= d$ and $w^{out}_m \mathrel{+}= -\operatorname{sign}(G_{mn})\,d$, so that
    $w^{out}_m w^{in}_n = -G_{mn}$: down the gradient. Input weights stay $\ge 0$, so with
    inputs $\ge 0$ (pixels, ReLU outputs) the neuron starts switched on (**[ours]**; the
    paper's random sign per pair is `sign="random"`). Then the weights are rescaled to
    look like their layers' weights times a **birth strength** $\alpha$, tried on a ladder
    from large to small until the loss on the growth batch goes down (**[ours]**).

    The neuron is one unit, so $w^{out} \otimes w^{in}$ also has cross terms for pairs it
    did not choose; the first-order argument is a heuristic, and the ladder is the check.
    """),
    code('''
    import os
    from pathlib import Path

    import numpy as np
    import matplotlib.pyplot as plt

    from nestref.data import load_mnist, train_val_split
    from nestref.grow import birth_strength_ladder, bridging_gradient, grow_feature_maps, grow_neurons
    from nestref.models import lenet5, lenet_300_100, next_masked
    from nestref.optim import SGD
    from nestref.train import evaluate, fit, prepare_inputs

    %matplotlib inline
    print("birth-strength ladder:", [round(a, 4) for a in birth_strength_ladder()])
    '''),
    code(SETUP),
    code(DATA),
    md(r"""
    ## The seed and the growth batch

    The same seed as in notebook 2 (LeNet-120-40 at 10% density, one epoch), and a random
    batch of training images to grow on, as `synthesize` draws one each round.
    """),
    code('''
    net = lenet_300_100(width_scale=0.4, density=0.1, seed=0)
    opt = SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-4)
    x_train, x_val = prepare_inputs(train_images, net), prepare_inputs(val_images, net)
    fit(net, opt, (x_train, train_labels), None, epochs=1, batch_size=64, rng=0)

    pick = np.random.default_rng(0).choice(len(x_train), size=500 if QUICK else 1000, replace=False)
    xb, yb = x_train[pick], train_labels[pick]
    seed_net = net.copy()                       # the network before any neuron is born
    print(f"{net.name}: widths {net.widths()}; growth batch {xb.shape}; "
          f"validation error {100 * evaluate(net, x_val, val_labels)['error']:.2f}%")
    '''),
    md(r"""
    ## The bridging gradient

    For hidden layer 0 (784 → **120** → 40) the bridge goes from the pixels straight to the
    40 units of the next hidden layer: $G$ is $(40, 784)$. For hidden layer 2
    (120 → **40** → 10) it goes from the 120 first-layer units to the 10 outputs: $(10, 120)$.
    Each row of the first, reshaped to 28×28, is a picture of which pixels a direct wire
    into unit $m$ should carry, and with which sign (red: the loss wants the wire
    negative, blue: positive; $w^{out}_m w^{in}_n = -G_{mn}$).
    """),
    code('''
    bridges = {position: bridging_gradient(net, position, xb, yb) for position in (0, 2)}
    for position, G in bridges.items():
        print(f"hidden layer {position}: bridging gradient {G.shape}, max |G| {np.abs(G).max():.2e}")

    fig = plt.figure(figsize=(13, 6.2))
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 1.1])
    for col, position in enumerate((0, 2)):
        G = bridges[position]
        ax = fig.add_subplot(grid[0, 2 * col:2 * col + 2])
        vmax = np.abs(G).max()
        im = ax.imshow(G, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
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
    '''),
    md(r"""
    ## One neuron is born

    `grow_neurons(net, 0, 1, x, y, birth_ratio=0.05, birth_strength=ladder)`: one new unit
    in hidden layer 0, taking the top 5% of the $40 \times 784$ pairs. The report says which
    birth strengths it tried, the loss with each, and the one it kept.
    """),
    code('''
    report = grow_neurons(net, 0, 1, xb, yb, birth_ratio=0.05, birth_strength=birth_strength_ladder())
    unit = report.units[0]
    print(f"added {report.added} neuron (unit {unit}, grown={net.layers[0].grown[unit]}); widths now {net.widths()}")
    print(f"it took {report.pairs_per_neuron[0]} pairs; birth strength kept: {report.birth_strength:.4g}")
    for alpha, loss in zip(report.ladder, report.ladder_losses):
        print(f"  alpha {alpha:.4g}: growth-batch loss {loss:.5f}  ({'kept' if alpha == report.birth_strength else 'loss went up'})")
    print(f"growth-batch loss {report.loss_before:.5f} -> {report.loss_after:.5f}")
    print(f"validation loss   {evaluate(seed_net, x_val, val_labels)['loss']:.5f} -> {evaluate(net, x_val, val_labels)['loss']:.5f}")
    '''),
    code('''
    w_in = net.layers[0].weight[unit]           # (784,): from the pixels
    w_out = net.layers[2].weight[:, unit]       # (40,): into the next hidden layer
    print(f"input weights: {np.count_nonzero(w_in)} nonzero, all >= 0: {bool((w_in >= 0).all())}; "
          f"output weights: {np.count_nonzero(w_out)} nonzero")
    print("masks are exactly the nonzeros:", np.array_equal(net.layers[0].mask[unit] == 1, w_in != 0),
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
    '''),
    md(r"""
    ## Why a ladder of birth strengths

    The ladder stops at the first $\alpha$ that lowers the loss, so the report holds only
    the strengths it tried. To see the whole curve, grow the same neuron on copies of
    the seed with one $\alpha$ at a time (a single-value `birth_strength` is a ladder of
    one: the report then has that loss even when no neuron is added). Large $\alpha$ blows
    the loss up: the neuron's ~1500 all-positive inputs add up. Small $\alpha$ is safe but
    does little. The kept value is the largest safe one on the ladder.
    """),
    code('''
    alphas = np.geomspace(1e-3, 1.0, 13)
    losses = [grow_neurons(seed_net.copy(), 0, 1, xb, yb, birth_strength=a).ladder_losses[0] for a in alphas]

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.semilogx(alphas, losses, "o-", label="loss with the new neuron")
    ax.axhline(report.loss_before, color="k", ls="--", label="loss without it")
    ax.semilogx(report.ladder, report.ladder_losses, "s", color="red", ms=9, mfc="none", label="ladder tried")
    ax.set_xlabel("birth strength alpha")
    ax.set_ylabel("growth-batch loss")
    ax.set_ylim(top=max(report.loss_before * 1.5, min(losses) * 2))
    ax.legend()
    plt.show()
    best = alphas[int(np.argmin(losses))]
    print(f"lowest loss at alpha ~ {best:.3g}; the ladder kept {report.birth_strength:.3g}")
    '''),
    md(r"""
    ### The sign rule

    With `sign="random"` (the paper's rule) each pair draws its sign at random, so about
    half the input weights are negative. On inputs $\ge 0$ the neuron's pre-activation can
    then be negative: switched off, and a switched-off ReLU passes no gradient, so it may
    never learn (notebook 1). A neuron that takes one pair is off on every image when its
    one input weight came out negative; with many pairs the signs average out. So: for
    neurons taking 1, 10, 100 and 1568 pairs (`birth_ratio` = pairs / all pairs), ten random
    draws each, over the validation images, how often is the newborn neuron on?
    """),
    code('''
    n_pairs = bridges[0].size
    print(f"{'pairs':>6} {'sign':>9} {'added':>6} {'dead on arrival':>16} {'mean share of images where on':>30}")
    for pairs in (1, 10, 100, 1568):
        for sign in ("positive", "random"):
            on_shares = []
            for draw in range(10 if sign == "random" else 1):      # sign="positive" does not draw
                trial = seed_net.copy()
                r = grow_neurons(trial, 0, 1, xb, yb, birth_ratio=pairs / n_pairs, birth_strength=birth_strength_ladder(),
                                 sign=sign, rng=draw)
                if r.added:
                    unit_ = r.units[0]
                    pre_activation = x_val @ trial.layers[0].weight[unit_] + trial.layers[0].bias[unit_]
                    on_shares.append((pre_activation > 0).mean())
            dead = sum(share == 0 for share in on_shares)
            mean_on = f"{100 * np.mean(on_shares):.1f}%" if on_shares else "-"
            print(f"{pairs:>6} {sign:>9} {len(on_shares):>3}/{10 if sign == 'random' else 1:<2} {dead:>16} {mean_on:>30}")
    '''),
    md(r"""
    Read the `added` column too: a neuron that is off on every image changes no output, so
    it cannot lower the loss, and the ladder never adds one. That is why no added neuron is
    dead on arrival, and why some random draws were not added at all. What random signs
    cost beyond that is the share of images on which the new neuron is on.
    """),
    md(r"""
    ### Several neurons at once

    Asked for $k$ neurons, `grow_neurons` gives neuron $j$ the $j$-th chunk of the ranked
    pairs (**[ours]**), so they do not all copy the strongest pairs. Four new units in hidden
    layer 2, whose bridge (first-layer units → 10 outputs) has 121 × 10 pairs, so 5% is
    61 pairs each (the neuron born above is one of the 121; it takes part like any other):
    """),
    code('''
    r = grow_neurons(net, 2, 4, xb, yb, birth_ratio=0.05, birth_strength=birth_strength_ladder())
    print({key: value for key, value in r.as_dict().items() if key not in ("ladder", "ladder_losses")})
    print("widths now", net.widths())
    '''),
    md(r"""
    ## Feature-map growth (LeNet-5)

    For a convolution there is no bridging gradient in `nestref` (the paper gives none for
    feature maps). `grow_feature_maps` follows the paper's words instead: draw `candidates`
    random kernel sets for the new map (its input kernels in this layer and its outgoing
    weights in the next, each on a random mask of its layer's density and scaled to its
    layer's mean $|w|$), evaluate the batch loss with each, and keep the best, if it lowers
    the loss at all.

    The seed is the `lenet5` preset's: `lenet5(width_scale=0.5, density=0.3)`, i.e. conv 10,
    conv 25, dense 250, dense 10, with 30% of the connections active.
    """),
    code('''
    net5 = lenet5(width_scale=0.5, density=0.3, seed=0)
    n5 = 1500 if QUICK else 10000                       # LeNet-5 is slower: a part of the training split
    x5 = prepare_inputs(train_images[:n5], net5)
    fit(net5, SGD(net5, lr=0.02, momentum=0.9, weight_decay=5e-4), (x5, train_labels[:n5]), None,
        epochs=1, batch_size=64, rng=0)
    xb5, yb5 = x5[:300 if QUICK else 500], train_labels[:300 if QUICK else 500]
    print(f"{net5.name}: widths {net5.widths()}, trained on {n5} images; growth batch {xb5.shape}")

    map_reports = {}
    for position in (0, 2):
        map_reports[position] = grow_feature_maps(net5, position, 2, xb5, yb5, candidates=5 if QUICK else 10, rng=0)
        r = map_reports[position]
        print(f"conv layer {position}: added {r.added} of {r.requested} maps (units {r.units}), "
              f"loss {r.loss_before:.4f} -> {r.loss_after:.4f} {r.reason}")
    print("widths now", net5.widths())
    '''),
    code('''
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, (position, r) in zip(axes, map_reports.items()):
        for j, losses in enumerate(r.candidate_losses):
            kept = j < r.added
            ax.plot(np.arange(len(losses)) + 0.15 * j, losses, "o", label=f"map {j + 1}" + ("" if kept else " (none kept)"))
        ax.axhline(r.loss_before, color="k", ls="--", label="loss before the first map")
        ax.set_title(f"conv layer {position}: batch loss with each random candidate", fontsize=9)
        ax.set_xlabel("candidate")
        ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()
    '''),
    md(r"""
    The first map each layer kept. A conv-1 map has one 5×5 input kernel and a 5×5 kernel
    into every conv-2 map; a conv-2 map has a kernel from every conv-1 map, and its
    outgoing weights are the 4×4 = 16 columns it owns in the flattened input of the dense
    layer (`add_units` put them at the map's flattened position), one row per dense unit.
    Grey: dormant (each drawn at its layer's density).
    """),
    code('''
    for position, r in map_reports.items():
        if not r.added:
            print(f"conv layer {position}: no map was kept, nothing to show")
            continue
        new_map = r.units[0]
        nxt, block = next_masked(net5, position)
        kernels_in = np.ma.masked_equal(net5.layers[position].weight[new_map], 0)      # (C, 5, 5)
        following = net5.layers[nxt]
        if block == 1:
            outgoing = np.ma.masked_equal(following.weight[:, new_map], 0)             # (maps of the next conv, 5, 5)
        else:
            outgoing = np.ma.masked_equal(following.weight[:, new_map * block:(new_map + 1) * block], 0)  # (units, H*W)
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
        axes[0, 0].set_title(f"conv layer {position}, new map {new_map}: its {len(kernels_in)} input kernel(s)",
                             fontsize=9, loc="left")
        vmax = np.abs(outgoing).max()
        if block == 1:
            for k, kernel in enumerate(outgoing[:12]):
                axes[1, k].imshow(kernel, cmap=cmap, vmin=-vmax, vmax=vmax)
            axes[1, 0].set_title(f"its kernels into the first 12 of {len(outgoing)} maps of layer {nxt}",
                                 fontsize=9, loc="left")
        else:
            big = fig.add_subplot(2, 1, 2)
            big.imshow(outgoing.T, cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
            big.set_title(f"its {block} flattened positions (rows) into the {outgoing.shape[0]} units of dense "
                          f"layer {nxt} (columns)", fontsize=9, loc="left")
            big.set_yticks([])
        plt.show()
    '''),
    md(r"""
    Random candidates are a blunt tool next to the bridging gradient: with a few
    candidates, whether one beats the current loss is luck, and the report says so when
    none did. **Next:** notebook 4, the other half of NeST: pruning.
    """),
]

# =========================================================================== 04
NB04 = [
    md(r"""
    # 4. Pruning

    The second half of NeST removes what the grown network does not need
    (`nestref.prune`, NEST.md "Pruning"):

    * **connections**, by magnitude: per layer, deactivate the `fraction` $\gamma$ of the
      active connections with the smallest $|w|$, retrain, repeat (`prune_network`);
    * **neurons** left with no active inputs or no active outputs, without changing what
      the network computes (`remove_dead_neurons`);
    * **areas** of convolutions: each kernel (input map $i$ → output map $o$) is applied only
      at the output positions where it contributes most (`area_contributions`,
      `prune_partial_area`): *partial-area convolution*.

    And then count what is left: parameters and FLOPs per layer (`nestref.accounting`).
    """),
    code('''
    import os
    from pathlib import Path

    import numpy as np
    import matplotlib.pyplot as plt

    from nestref.accounting import count_flops, count_params, layer_table
    from nestref.data import load_mnist, train_val_split
    from nestref.models import lenet5, lenet_300_100
    from nestref.optim import SGD
    from nestref.prune import (DEFAULT_PRUNE_FRACTIONS, area_contributions, layer_input, prune_network,
                               prune_partial_area, remove_dead_neurons)
    from nestref.train import evaluate, fit, prepare_inputs

    %matplotlib inline
    print("default pruning fractions per round:", DEFAULT_PRUNE_FRACTIONS)
    '''),
    code(SETUP),
    code(DATA),
    md(r"""
    ## A network to prune

    The dense LeNet-300-100 (266,610 parameters), trained briefly. In a NeST run the grown
    network takes its place; the operators do not care where a network came from.
    """),
    code('''
    net = lenet_300_100(seed=0)
    x_train, x_val = prepare_inputs(train_images, net), prepare_inputs(val_images, net)
    n_fit = len(x_train) if QUICK else 20000
    fit(net, SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-4), (x_train[:n_fit], train_labels[:n_fit]), None,
        epochs=1, batch_size=64, rng=0)
    print(f"{net.name}: {count_params(net):,} params, {count_flops(net):,} FLOPs, "
          f"validation error {100 * evaluate(net, x_val, val_labels)['error']:.2f}%")
    '''),
    md(r"""
    ## Magnitude pruning, round by round

    `prune_network(net, fractions)` prunes every masked layer in one round. Each layer
    removes `floor(fraction × active)` of its smallest-$|w|$ active connections; the
    **threshold** in its report is the largest $|w|$ removed. Two guards: each output unit
    keeps its strongest input, and no output unit may be cut off from the input.

    NEST.md's default fractions for LeNet-300-100 are $(0.1, 0.08, 0.04)$ per round: one
    uniform fraction starves the 10-unit output layer (**[ours]**, measured). To see a lot
    happen in four rounds, we prune five times harder here, $(0.5, 0.4, 0.2)$, with a short
    retraining after each round. The histograms show $|w|$ over each layer's active weights
    *before* each round's pruning, and the round's threshold in red: the gap that pruning
    cuts at zero is refilled by retraining.
    """),
    code('''
    fractions = [5 * f for f in DEFAULT_PRUNE_FRACTIONS["lenet-300-100"]]
    n_retrain = 1000 if QUICK else 10000
    rounds = []
    for round_ in range(4):
        magnitudes = [np.abs(layer.weight[layer.mask != 0]) for _, layer in net.masked_layers()]
        reports = prune_network(net, fractions)
        error_pruned = evaluate(net, x_val, val_labels)["error"]
        fit(net, SGD(net, lr=0.02, momentum=0.9, weight_decay=1e-4), (x_train[:n_retrain], train_labels[:n_retrain]),
            None, epochs=1, batch_size=64, rng=round_)
        rounds.append({"magnitudes": magnitudes, "reports": reports, "params": count_params(net),
                       "error_pruned": error_pruned, "error_retrained": evaluate(net, x_val, val_labels)["error"]})

    print(f"{'round':>5} {'params':>8} {'val error pruned':>17} {'retrained':>10}   per layer: removed (threshold |w|)")
    for i, r in enumerate(rounds, 1):
        per_layer = "  ".join(f"{p.removed:6d} ({p.threshold:.3f})" for p in r["reports"])
        print(f"{i:>5} {r['params']:>8,} {100 * r['error_pruned']:>16.2f}% {100 * r['error_retrained']:>9.2f}%   {per_layer}")
    '''),
    code('''
    fig, axes = plt.subplots(len(rounds), 3, figsize=(12, 2.1 * len(rounds)), sharex="col")
    for i, r in enumerate(rounds):
        for j, (magnitude, report) in enumerate(zip(r["magnitudes"], r["reports"])):
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
    '''),
    md(r"""
    ## Dead neurons

    Pruning connections leaves some hidden neurons with no active input, or no active
    output. `remove_dead_neurons` deletes them, rows and columns (and optimizer momentum,
    if given). A neuron with no outputs affects nothing. A neuron with no inputs still
    outputs a constant, $\mathrm{relu}(b)$: that constant times its outgoing weights is
    folded into the next layer's bias before it goes (**[ours]**). Either way the
    network computes the same function, to float rounding.

    A fifth round at the same fractions, before its retraining, leaves neurons without
    outputs. Magnitude pruning rarely takes *every* input of a unit, so to see the folding
    at work we also cut the inputs of one hidden unit of layer 2 by hand (the one with the
    largest bias, so that its constant output $\mathrm{relu}(b)$ is not zero), as a long
    pruning run eventually does:
    """),
    code('''
    prune_network(net, fractions)
    hidden = net.layers[2]
    cut = int(np.argmax(hidden.bias))
    hidden.weight[cut] = 0
    hidden.mask[cut] = 0
    print(f"cut every input of layer-2 unit {cut}; it now outputs relu({hidden.bias[cut]:.4f}) on every image")

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
    print(f"validation error {100 * evaluate(net, x_val, val_labels)['error']:.2f}% before the round's retraining, ", end="")
    fit(net, SGD(net, lr=0.02, momentum=0.9, weight_decay=1e-4), (x_train[:n_retrain], train_labels[:n_retrain]),
        None, epochs=1, batch_size=64, rng=5)
    print(f"{100 * evaluate(net, x_val, val_labels)['error']:.2f}% after")
    '''),
    md(r"""
    ## Partial-area convolution (LeNet-5)

    A convolution kernel $K_{oi}$ slides over the whole input map $i$. But a digit sits in
    the middle of the image: near the border many kernels add almost nothing. For every
    (output map $o$, input map $i$, output position $p$), `area_contributions` measures the
    mean over the data of $|(I_i \star K_{oi})(p)|$; `prune_partial_area` switches off the
    `fraction` of the $(o, i, p)$ with the smallest values. The result is an `area_mask` of
    shape $(O, C, H_o, W_o)$ on the `Conv2d`: kernel $(o, i)$ is applied only where it is 1,
    and FLOPs count only those positions.

    A half-width dense LeNet-5 (conv 10, conv 25, dense 250), trained briefly:
    """),
    code('''
    net5 = lenet5(width_scale=0.5, seed=0)
    n5 = 1500 if QUICK else 10000
    x5, x5_val = prepare_inputs(train_images[:n5], net5), prepare_inputs(val_images, net5)
    fit(net5, SGD(net5, lr=0.02, momentum=0.9, weight_decay=5e-4), (x5, train_labels[:n5]), None,
        epochs=1, batch_size=64, rng=0)
    x_area = x5[:256]                   # the data the contributions are measured on
    conv1 = net5.layers[0]
    contributions = area_contributions(conv1, x_area)          # (O, C, Ho, Wo) = (10, 1, 24, 24)
    print(f"{net5.name}: validation error {100 * evaluate(net5, x5_val, val_labels)['error']:.2f}%; "
          f"conv 1 contributions {contributions.shape}")
    '''),
    code('''
    before5 = net5.copy()
    area_report = prune_partial_area(net5, 0, 0.6, x_area)          # conv 1: 60% of (o, i, p)
    area_report2 = prune_partial_area(net5, 2, 0.6, layer_input(net5, 2, x_area))   # conv 2, on its own input
    for r in (area_report, area_report2):
        print(f"conv layer {r.layer}: {r.removed:,} of {r.active_before:,} (o, i, p) pruned, "
              f"threshold {r.threshold:.3g}, kernels with no area left: {r.kernels_deactivated}")
    print(f"validation error {100 * evaluate(before5, x5_val, val_labels)['error']:.2f}% -> "
          f"{100 * evaluate(net5, x5_val, val_labels)['error']:.2f}% (no retraining yet)")
    fit(net5, SGD(net5, lr=0.01, momentum=0.9, weight_decay=5e-4), (x5, train_labels[:n5]), None,
        epochs=1, batch_size=64, rng=1)
    print(f"after one epoch of retraining: {100 * evaluate(net5, x5_val, val_labels)['error']:.2f}%")
    '''),
    md(r"""
    On a validation digit: the top row shows where each conv-1 kernel contributes (the
    mean $|I \star K|$ per output position); the bottom row shows the digit with the kept
    area of each kernel in colour. Output position $(i, j)$ of a 5×5 kernel reads the window
    centred on pixel $(i{+}2, j{+}2)$, so the 24×24 mask is drawn inset by 2 pixels.
    """),
    code('''
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
    '''),
    md(r"""
    ## Counting: params and FLOPs per layer

    `layer_table(net)` gives one row per masked layer. **params** = active weights + one
    bias per unit; **FLOPs** = 2 × the multiply-accumulates that touch an active weight,
    and for a convolution only at the positions its area keeps (`area_density` is the kept
    fraction of $(o, i, p)$). These rules reproduce the paper's dense baselines exactly
    (266,610 / 532.4K for LeNet-300-100; 431,080 / 4,586K for LeNet-5).
    """),
    code('''
    def print_table(title, rows):
        print(title)
        print(f"  {'layer':>5} {'type':>6} {'weight shape':>18} {'density':>8} {'area':>6} {'params':>9} {'FLOPs':>11}")
        for row in rows:
            area = f"{row['area_density']:.2f}" if "area_density" in row else "-"
            print(f"  {row['position']:>5} {row['type']:>6} {str(tuple(row['shape'])):>18} {row['density']:>8.3f} "
                  f"{area:>6} {row['params']:>9,} {row['flops']:>11,}")
        print(f"  {'total':>5} {'':>6} {'':>18} {'':>8} {'':>6} {sum(r['params'] for r in rows):>9,} "
              f"{sum(r['flops'] for r in rows):>11,}")


    print_table("dense LeNet-300-100", layer_table(lenet_300_100()))
    print_table("LeNet-300-100 after the pruning above", layer_table(net))
    print_table("half-width LeNet-5 before area pruning", layer_table(before5))
    print_table("... after", layer_table(net5))
    '''),
    code('''
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
    '''),
    md(r"""
    The convolutions hold few parameters but most of the FLOPs; partial areas attack
    exactly those. **Next:** notebooks 5 and 6 put growth and pruning together:
    `nestref.synthesize` runs the whole schedule.
    """),
]

# ===================================================================== 05, 06
QUICK_OVERRIDES = {
    "lenet-300-100": dict(train_limit=1500, n_val=300, initial_epochs=1, growth_epochs=1, settle_epochs=1,
                          max_growth_rounds=2, growth_batch_size=500, prune_epochs=1, max_prune_rounds=5,
                          finetune_epochs=1, prune_fractions=[0.3, 0.25, 0.1], max_error_increase=1.0),
    "lenet5": dict(train_limit=800, n_val=200, initial_epochs=1, growth_epochs=1, settle_epochs=0,
                   max_growth_rounds=1, growth_batches=2, growth_batch_size=200, feature_map_candidates=3,
                   prune_epochs=1, max_prune_rounds=2, finetune_epochs=1, prune_fractions=[0.1, 0.2, 0.3, 0.1],
                   max_error_increase=1.0),
}


def end_to_end(number, preset, title, intro, extra_cells):
    """The cells of notebook 05 / 06: one preset's synthesis, its baseline, and what they found."""
    quick = "\n".join(f"{' ' * 16}{key}={value!r}," for key, value in QUICK_OVERRIDES[preset].items()).strip()
    return [
        md(f"""
        # {int(number)}. {title} end to end

        {intro}

        `nestref.synthesize.synthesize(config, out_dir)` runs NeST's whole schedule (NEST.md
        "Schedule"): **seed** (the target architecture, narrower and sparse) → rounds of
        **growth** (connections, neurons, feature maps; training after each) until validation
        error stops improving → **settle** (train to convergence) → rounds of **pruning**
        (magnitude, partial areas, dead units; retraining after each) down to a floor → **choose**
        the round that meets the target on smoothed validation error → **fine-tune** → **compact**.
        Every decision uses a validation split of the training set; the test set is evaluated
        once, at the end. `mode="prune-only"` is the baseline: the dense network, trained
        and then pruned by the same rules.

        **Full mode** calls `synthesize(..., resume=True)` on `runs/{preset}` and
        `runs/{preset}-prune-only` in the repository: the directories that
        `nestref synthesize --arch {preset}` (and `--mode prune-only`) write. If those runs have
        finished, `synthesize` loads their last checkpoint and goes straight to compaction and
        reporting: nothing is retrained. If one was interrupted, it continues from its last
        finished round; if it does not exist, this notebook runs it in full, which takes as
        long as the command line would. **Quick mode** (`NESTREF_QUICK=1`) runs a miniature
        synthesis on a few thousand images in a temporary directory: the same code path,
        numbers that mean nothing.
        """),
        code('''
        import json
        import os
        import shutil
        import tempfile
        from pathlib import Path

        import numpy as np
        import matplotlib.pyplot as plt
        from IPython.display import Markdown, display

        from nestref import plots
        from nestref.accounting import layer_table
        from nestref.compact import load_compact
        from nestref.config import PRESETS, make_config
        from nestref.paper import comparison_table
        from nestref.synthesize import hidden_layers, load_data, synthesize
        from nestref.train import load_checkpoint, prepare_inputs

        %matplotlib inline
        print("the preset, on top of SynthesisConfig's defaults:", PRESETS[@PRESET@])
        '''.replace("@PRESET@", repr(preset))),
        code(SETUP),
        code(f'''
        PRESET = {preset!r}
        if QUICK:
            RUNS = Path(tempfile.gettempdir()) / "nestref-quick" / "nb{number}"   # never the full runs' directories
            shutil.rmtree(RUNS, ignore_errors=True)                                # a fresh miniature run each time
            overrides = dict(
                {quick}
            )
        else:
            RUNS = REPO / "runs"
            overrides = {{}}
        out_dirs = {{"nest": RUNS / PRESET, "prune-only": RUNS / f"{{PRESET}}-prune-only"}}
        configs = {{mode: make_config(PRESET, overrides={{**overrides, "mode": mode}}) for mode in out_dirs}}

        # resume needs the config a run started with (where the data lives does not count)
        for mode, out in out_dirs.items():
            state = "finished: will be loaded" if (out / "report.json").exists() else (
                "interrupted: resumable" if (out / "checkpoint.npz").exists() else "not there")
            print(f"{{mode:>10}}: {{out.relative_to(RUNS.parent) if not QUICK else out.name}} ({{state}})")
        '''),
        md("""
        ## NeST

        `on_round` is called after every round that actually runs here (none, when a finished
        run is loaded). In quick mode the test set is cut to 500 images; in full mode the
        data is loaded exactly as the command line loads it.
        """),
        code('''
        def print_round(record):
            print(f"{record['phase']:>8} {record['round']:3d}  params {record['params']:8,}  widths {record['widths']}  "
                  f"val error {100 * record['val_error']:.2f}%", flush=True)


        data = None
        if QUICK:
            data = load_data(configs["nest"])
            data["test"] = tuple(part[:500] for part in data["test"])
        report = synthesize(configs["nest"], out_dirs["nest"], resume=True, on_round=print_round, data=data)
        history = json.loads((out_dirs["nest"] / "history.json").read_text())
        print(f"\\ntest error {100 * report['test_error']:.2f}% (compact model: {100 * report['compact_test_error']:.2f}%), "
              f"{report['params']:,} params ({report['params_compression']:.1f}x smaller than dense), "
              f"{report['flops']:,} FLOPs ({report['flops_compression']:.1f}x)")
        print(f"widths {report['widths']}; largest network during growth: {report['max_params_during_growth']:,} params")
        print(f"pruning stopped: {report['stop_reason']}; chosen: {report['chosen']}")
        '''),
        md("""
        ## The grow-then-prune curve

        Parameters and FLOPs per round (log scale), and validation error, with the phases
        shaded: the network first grows from the seed, then shrinks far below it.
        `nestref.plots` draws from the plain history records in `history.json`.
        """),
        code('''
        fig, axes = plt.subplots(1, 2, figsize=(13, 4))
        plots.grow_prune_curve(history, ax=axes[0])
        plots.validation_error_curve(history, ax=axes[1])
        chosen = report["chosen"]
        if chosen is not None:
            index = next(i for i, r in enumerate(history) if r["phase"] == "prune" and r["round"] == chosen["round"])
            axes[1].axvline(index, color="red", ls=":", label=f"chosen: prune round {chosen['round']}")
            axes[1].legend()
        fig.tight_layout()
        plt.show()
        plots.widths_and_densities(history, fig=plt.figure(figsize=(13, 4)))
        plt.show()
        '''),
        md("""
        What each growth round did: connections grown per layer, and neurons (or feature
        maps) born per hidden layer with the birth strength kept.
        """),
        code('''
        for record in history:
            if record["phase"] != "grow":
                continue
            connections = [c["added"] for c in record["connections"]]
            units = ", ".join(f"layer {u['layer']}: +{u['added']}"
                              + (f" (alpha {u['birth_strength']:.3g})" if u.get("birth_strength") else "")
                              for u in record["units"])
            print(f"round {record['round']}: +{sum(connections):,} connections {connections}; {units}; "
                  f"val error {100 * record['val_error']:.2f}%")
        '''),
        md("""
        ## The final architecture

        The run's last checkpoint holds the final masked network (after fine-tuning);
        `model.npz` holds its compact form (dead units gone, sparse layers in CSR), which
        computes the same logits.
        """),
        code('''
        net, _, _ = load_checkpoint(out_dirs["nest"] / "checkpoint.npz")
        rows = layer_table(net)
        print(f"{'layer':>5} {'type':>6} {'weight shape':>18} {'active':>8} {'density':>8} {'params':>8} {'FLOPs':>9}")
        for row in rows:
            print(f"{row['position']:>5} {row['type']:>6} {str(tuple(row['shape'])):>18} {row['active']:>8,} "
                  f"{row['density']:>8.3f} {row['params']:>8,} {row['flops']:>9,}"
                  + (f"   area kept {row['area_density']:.2f}" if "area_density" in row else ""))
        print(f"{'total':>5} {'':>6} {'':>18} {sum(r['active'] for r in rows):>8,} {'':>8} "
              f"{sum(r['params'] for r in rows):>8,} {sum(r['flops'] for r in rows):>9,}")
        assert rows == report["layers"]

        compact_net = load_compact(out_dirs["nest"] / "model.npz")
        x_test = prepare_inputs(load_data(configs["nest"])["test"][0][:500], net)   # the first 500 test images
        print("\\ncompact model:", [(layer["type"], layer.get("nnz")) for layer in compact_net.summary()])
        print(f"max |masked - compact| logits on {len(x_test)} test images: {np.abs(net.predict(x_test) - compact_net.predict(x_test)).max():.1e}")
        '''),
        code('''
        plots.first_layer_masks(net.layers[0].mask, fig=plt.figure(figsize=(12, 3.4)))
        plt.show()
        '''),
        *extra_cells,
        md("""
        ## Against the paper and the pruning-only baseline

        The baseline starts from the dense network, trained as long as the grown one, and
        prunes it with the same rules down to the same floor.
        """),
        code('''
        # In full mode a missing baseline is not started here (for LeNet-5 it is most of an
        # hour on 2 cores); set RUN_MISSING_BASELINE = True to run it from the notebook.
        RUN_MISSING_BASELINE = False
        runs = [("NeST", report, history)]
        if QUICK or RUN_MISSING_BASELINE or (out_dirs["prune-only"] / "report.json").exists():
            baseline = synthesize(configs["prune-only"], out_dirs["prune-only"], resume=True, on_round=print_round, data=data)
            runs.append(("pruning only", baseline, json.loads((out_dirs["prune-only"] / "history.json").read_text())))
        else:
            print(f"no finished pruning-only run in runs/{PRESET}-prune-only: the table shows NeST alone. Add it with")
            print(f"  nestref synthesize --arch {report['arch']} --mode prune-only --out runs/{PRESET}-prune-only")
        display(Markdown(comparison_table([(label, run) for label, run, _ in runs])))
        '''),
        md("""
        Along the way: validation error against size for every pruning round of both runs
        (log scale), with each run's chosen round, and the final test errors.
        """),
        code(f'''
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for (label, run, hist), colour in zip(runs, ("#2a9d8f", "#e76f51")):
            pruned = [r for r in hist if r["phase"] == "prune"]
            ax.semilogx([r["params"] for r in pruned], [100 * r["val_error"] for r in pruned], "o-", ms=3,
                        color=colour, label=f"{{label}}: pruning rounds (validation)")
            ax.semilogx([run["params"]], [100 * run["test_error"]], "*", ms=14, color=colour,
                        label=f"{{label}}: final, fine-tuned (test)")
        ax.set_xlabel("params (log scale; pruning goes from right to left)")
        ax.set_ylabel("error (%)")
        ax.set_title("{title}: error against size")
        ax.legend(fontsize=8)
        if not QUICK:
            fig.savefig(FIGURES / "{number}_tradeoff.png", dpi=100, bbox_inches="tight")
        plt.show()
        '''),
        md("""
        ## Seed and grown neurons: who survives?

        Every unit carries its provenance (`grown`: False for seed units, True for units
        born during growth). How many of each were there when pruning started, and how
        many survive to the final network? (NEST.md, "Provenance": a prototype found
        that on short budgets magnitude pruning removes grown neurons first.)
        """),
        code(f'''
        first_prune = next(i for i, r in enumerate(history) if r["phase"] == "prune")
        seed_widths, grown_widths = history[0]["widths"], history[first_prune - 1]["widths"]
        positions = hidden_layers(net)
        born_seed = np.array([seed_widths[k] for k in range(len(positions))])
        born_grown = np.array([grown_widths[k] - seed_widths[k] for k in range(len(positions))])
        alive_seed = np.array([int((~net.layers[p].grown).sum()) for p in positions])
        alive_grown = np.array([int(net.layers[p].grown.sum()) for p in positions])
        print("report['alive']:", report["alive"])
        for k, p in enumerate(positions):
            print(f"hidden layer {{p}}: seed {{alive_seed[k]}}/{{born_seed[k]}} survive, grown {{alive_grown[k]}}/{{born_grown[k]}}")
        print(f"overall: {{alive_seed.sum()}} of {{born_seed.sum()}} seed units and {{alive_grown.sum()}} of "
              f"{{born_grown.sum()}} grown units survive")

        fig, ax = plt.subplots(figsize=(8, 3.6))
        where = np.arange(len(positions))
        for offset, born, alive, colour, label in ((-0.2, born_seed, alive_seed, "#999999", "seed"),
                                                   (0.2, born_grown, alive_grown, "#2a9d8f", "grown")):
            ax.bar(where + offset, born, 0.38, color=colour, alpha=0.35, label=f"{{label}}: before pruning")
            ax.bar(where + offset, alive, 0.38, color=colour, label=f"{{label}}: survive")
        ax.set_xticks(where, [f"hidden layer {{p}}" for p in positions])
        ax.set_ylabel("units")
        ax.legend(fontsize=8)
        ax.set_title("{title}: seed vs grown units")
        if not QUICK:
            fig.savefig(FIGURES / "{number}_survival.png", dpi=100, bbox_inches="tight")
        plt.show()
        '''),
        md("""
        How to read this: the table puts the paper's claims beside what this implementation
        measured, on one seed and without augmentation unless the row says so. Where NeST's
        row is not better than the pruning-only row at the same size, growth did not pay
        off on this budget, and the survival chart shows how much of the grown capacity was
        kept at all. These numbers are measurements, not assumptions: see the README's
        results section for the runs behind the committed outputs.
        """),
    ]


NB05 = end_to_end("05", "lenet-300-100", "LeNet-300-100", """The target is LeNet-300-100 (784 → 300 → 100 → 10, 266,610 parameters). The seed is
        LeNet-120-40 at 10% density; the preset asks for the best network with at most 3,800
        parameters, the paper's "NeST, compact" row.""", [])


NB06 = end_to_end("06", "lenet5", "LeNet-5", """The target is LeNet-5 as in Caffe (conv 20@5×5, max-pool, conv 50@5×5, max-pool, dense 500,
        dense 10; 431,080 parameters, 4.59M FLOPs). The seed (preset `lenet5`) has half the maps and
        units (10, 25, 250) with 30% of the connections active; the preset asks for the best
        network with at most 5,800 parameters, the paper's NeST row. The first "mask" figure below
        shows conv-1 kernels, and a section shows the partial areas the convolutions kept.""", [
    md("""
    ## Partial areas in the final network

    Pruning rounds also pruned the convolutions' areas (`area_fraction` of the kept
    (output map, input map, position) triples per round). On a test digit, in colour: where
    each conv-1 kernel of the final network is still applied (drawn inset by 2 pixels, as
    in notebook 4).
    """),
    code('''
    for row in rows:
        if "area_density" in row:
            print(f"conv layer {row['position']}: {100 * row['area_density']:.1f}% of (o, i, p) kept, "
                  f"{row['flops']:,} FLOPs")
    conv1 = net.layers[0]
    if conv1.area_mask is None:
        print("this run pruned no areas (area_fraction = 0)")
    else:
        digit = x_test[0, 0]
        cols = min(conv1.n_out, 10)
        rows_ = -(-conv1.n_out // cols)
        fig, axes = plt.subplots(rows_, cols, figsize=(1.5 * cols, 1.7 * rows_), squeeze=False)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_visible(False)
        for o, ax in zip(range(conv1.n_out), axes.flat):
            kept = np.zeros((28, 28))
            kept[2:26, 2:26] = conv1.area_mask[o, 0]
            ax.set_visible(True)
            ax.imshow(digit, cmap="gray_r")
            ax.imshow(np.ma.masked_equal(kept, 0), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(f"map {o}: {int(conv1.area_mask[o, 0].sum())}/576", fontsize=8)
        fig.tight_layout()
        plt.show()
    '''),
])


NOTEBOOKS = {
    "01_masked_layers_and_backprop": NB01,
    "02_connection_growth": NB02,
    "03_neuron_growth": NB03,
    "04_pruning": NB04,
    "05_lenet300_end_to_end": NB05,
    "06_lenet5_end_to_end": NB06,
}


def build(name, cells):
    """The notebook ``name`` as an nbformat object, outputs empty, stable cell ids."""
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell.id = f"{name[:2]}-{index:02d}"
        nb.cells.append(cell)
    return nb


def build_all():
    """{notebook name: notebook}, e.g. {"01_masked_layers_and_backprop": nb, ...}."""
    return {name: build(name, cells) for name, cells in NOTEBOOKS.items()}


def main(argv):
    wanted = argv or [name[:2] for name in NOTEBOOKS]
    unknown = [w for w in wanted if not any(name.startswith(w) for name in NOTEBOOKS)]
    if unknown:
        print(f"no notebook starts with {unknown}; have {sorted(NOTEBOOKS)}", file=sys.stderr)
        return 2
    NOTEBOOK_DIR.mkdir(exist_ok=True)
    for name, nb in build_all().items():
        if any(name.startswith(w) for w in wanted):
            nbformat.validate(nb)
            nbformat.write(nb, NOTEBOOK_DIR / f"{name}.ipynb")
            print(f"wrote notebooks/{name}.ipynb ({len(nb.cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
