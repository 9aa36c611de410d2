"""NeST's growth phase: new connections, new neurons, new feature maps.

Read next to the growth section of Dai, Yin & Jha (NeST, IEEE Trans. Computers 2019)
and ../shared/NEST.md. Three operators, each guided by the loss:

* **Connection growth** (``growth_gradients``, ``grow_connections``,
  ``grow_network_connections``). The loss has a slope along every *dormant*
  connection too: G = dL/d(W*M), which a masked layer computes at every position.
  Activate the dormant connections with the largest |G|: they are where a weight
  would lower the loss fastest.

* **Neuron growth** (``bridging_gradient``, ``grow_neurons``). A new neuron in
  hidden Dense layer l links neuron n of layer l-1 to neuron m of layer l+1. Its
  effect to first order is that of a direct weight n -> m, whose gradient is the
  *bridging gradient* G[m, n] = mean over the batch of x_n^(l-1) * dl/du_m^(l+1).
  The new neuron takes the pairs with the largest |G| and sets its in/out weights
  so that w_out[m] * w_in[n] points down that gradient.

* **Feature-map growth** (``grow_feature_maps``). For a conv layer: try a few
  random kernel sets for one new output map and keep the one that lowers the batch
  loss the most (if any lowers it at all).

Every operator keeps the invariant W == 0 wherever M == 0, keeps the network's
dtype, changes widths only through ``nestref.models.add_units`` (which also grows
the optimizer's momentum buffers), and returns a report dataclass whose
``as_dict()`` is plain JSON-able data. Operators print nothing.

Decisions the paper leaves open are marked **[ours]** (see NEST.md).
"""
import math
from dataclasses import dataclass, field

import numpy as np

from .layers import Conv2d, Dense, MaskedLayer
from .losses import softmax_cross_entropy
from .models import add_units, loss_and_grads, next_masked

__all__ = [
    "growth_gradients",
    "ConnectionGrowthReport",
    "grow_connections",
    "grow_network_connections",
    "bridging_gradient",
    "birth_strength_ladder",
    "NeuronGrowthReport",
    "grow_neurons",
    "FeatureMapGrowthReport",
    "grow_feature_maps",
]

INITS = ("gradient", "zero")
SIGNS = ("positive", "random")


# ====================================================================== helpers
def _check_data(net, x, y):
    """x: (N, *net.input_shape) float, y: (N,) int labels, N >= 1."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or tuple(x.shape[1:]) != net.input_shape:
        raise ValueError(f"{net.name} expects x of shape (N, {', '.join(map(str, net.input_shape))}), got {x.shape}")
    if y.shape != (len(x),):
        raise ValueError(f"y must hold one label per example, shape ({len(x)},), got {y.shape}")
    if len(x) == 0:
        raise ValueError("the growth data (x, y) is empty")
    return x, y


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_fraction(name, value):
    """A number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def _masked_layer(net, position):
    layers = dict(net.masked_layers())
    if position not in layers:
        raise ValueError(f"layer {position} of {net.name} is not a Dense or Conv2d layer; "
                         f"masked layers are at positions {sorted(layers)}")
    return layers[position]


def _batch_loss(net, x, y):
    """Mean cross-entropy of net on (x, y), summed in float64 so that comparisons of
    nearly equal losses are not decided by float32 rounding of the mean."""
    logits = net.predict(x, batch_size=1000)
    loss, _ = softmax_cross_entropy(logits.astype(np.float64), y)
    return loss


def _mean_active_magnitude(layer, what):
    """mean |W| over the active connections: the scale new weights are given."""
    active = layer.mask != 0
    if not active.any():
        raise ValueError(f"{what} has no active connection, so there is no weight scale to copy")
    return float(np.abs(layer.weight[active]).mean())


# ========================================================== connection growth
def growth_gradients(net, x, y, batch_size=256, n_batches=None):
    """G = dL/d(W*M) for every masked layer, averaged over the growth data.

    One pass over (x, y) in order, in batches of ``batch_size`` (or only the first
    ``n_batches`` of them). Each batch's mean gradient is weighted by its size, so
    the result equals the gradient of the mean loss over all examples seen.

    x: (N, *net.input_shape); y: (N,)
    returns {position: G} with G shaped like that layer's weight, in its dtype.
    Leaves the last batch's gradients in the layers (as any backward pass does).
    """
    x, y = _check_data(net, x, y)
    batch_size = _check_positive_int("batch_size", batch_size)
    if n_batches is not None:
        n_batches = _check_positive_int("n_batches", n_batches)
    starts = list(range(0, len(x), batch_size))[:n_batches]
    sums = {i: np.zeros(layer.weight.shape, np.float64) for i, layer in net.masked_layers()}
    seen = 0
    for start in starts:
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        loss_and_grads(net, xb, yb, dense_weight_grad=True)  # dormant positions too
        for i, layer in net.masked_layers():
            sums[i] += len(xb) * layer.grad_weight
        seen += len(xb)
    return {i: (sums[i] / seen).astype(layer.weight.dtype) for i, layer in net.masked_layers()}


def _connection_count(ratio, n_dormant):
    """How many dormant connections ``ratio`` asks for: floor(ratio * n_dormant) **[ours]**.

    Floor, so that growth never exceeds the requested fraction; the 1e-9 keeps
    float artefacts such as 0.29 * 100 = 28.999999999999996 from losing one.
    """
    return int(math.floor(ratio * n_dormant + 1e-9))


@dataclass
class ConnectionGrowthReport:
    """What ``grow_connections`` did to one layer.

    indices: flat indices (into the weight) of the grown connections, largest |G| first.
    gradient_abs: |G| at every dormant connection before growth (flat order), for
    histograms; ``as_dict`` keeps only a summary of it.
    """
    layer: object            # position in net.layers (None when called on a bare layer)
    ratio: float
    n_connections: int       # size of the weight tensor
    active_before: int
    dormant_before: int
    candidates: int          # dormant connections with |G| > 0
    requested: int           # floor(ratio * dormant_before)
    added: int
    threshold: float         # smallest |G| grown, 0.0 if nothing grown
    init: str
    lr: float
    indices: np.ndarray = field(repr=False, default=None)
    gradient_abs: np.ndarray = field(repr=False, default=None)

    def as_dict(self):
        g = self.gradient_abs if self.gradient_abs is not None else np.zeros(0)
        return {
            "layer": self.layer, "ratio": self.ratio, "n_connections": self.n_connections,
            "active_before": self.active_before, "dormant_before": self.dormant_before,
            "candidates": self.candidates, "requested": self.requested, "added": self.added,
            "threshold": self.threshold, "init": self.init, "lr": self.lr,
            "gradient_abs_max": float(g.max()) if g.size else 0.0,
            "gradient_abs_median": float(np.median(g)) if g.size else 0.0,
        }


def grow_connections(layer, ratio, gradient=None, init="gradient", lr=0.01, position=None):
    """Activate the dormant connections of one masked layer where |G| is largest.

    layer: a Dense or Conv2d; G = ``gradient`` if given, else ``layer.grad_weight``
    (left by the last backward pass), shaped like ``layer.weight``.

    Rule (NEST.md, "Connection growth"):
      * candidates are the dormant connections (mask == 0) with |G| > 0;
      * grow floor(ratio * n_dormant) of them **[ours]** (never more than there are
        candidates), where n_dormant counts *all* of this layer's dormant connections;
      * by |G|, largest first; ties go to the lowest flat index (a stable sort on -|G|);
      * new weight = -lr * G, one gradient step from zero, with lr the learning rate
        the next training phase starts with (``init="gradient"``, **[ours]**), or 0
        (``init="zero"``, the paper's alternative). Active weights are not touched.

    position: only recorded in the report (``grow_network_connections`` passes it).
    A layer with no dormant connection is not an error: the report says added=0.
    Returns a ``ConnectionGrowthReport``.
    """
    if not isinstance(layer, MaskedLayer):
        raise ValueError(f"grow_connections needs a Dense or Conv2d layer, got {type(layer).__name__}")
    ratio = _check_fraction("ratio", ratio)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if gradient is None:
        gradient = layer.grad_weight
        if gradient is None:
            raise ValueError("the layer holds no gradient: run a backward pass first, or pass gradient= "
                             "(e.g. from growth_gradients)")
    gradient = np.asarray(gradient)
    if gradient.shape != layer.weight.shape:
        raise ValueError(f"gradient must have the weight's shape {layer.weight.shape}, got {gradient.shape}")
    if not np.all(np.isfinite(gradient)):
        raise ValueError("gradient holds NaN or inf")

    dormant = np.flatnonzero(layer.mask.reshape(-1) == 0)          # ascending flat indices
    g_abs = np.abs(gradient.reshape(-1)[dormant])
    # stable sort on -|G|: equal |G| keep ascending flat order, i.e. lowest index first
    order = np.argsort(-g_abs, kind="stable")
    candidates = int(np.count_nonzero(g_abs > 0))
    requested = _connection_count(ratio, len(dormant))
    take = order[:min(requested, candidates)]                      # the |G| > 0 ones come first
    indices = dormant[take]

    if init == "gradient":
        values = (-lr * gradient.reshape(-1)[indices]).astype(layer.weight.dtype)
    else:
        values = np.zeros(len(indices), layer.weight.dtype)
    layer.weight.flat[indices] = values
    layer.mask.flat[indices] = 1

    n_total = layer.weight.size
    return ConnectionGrowthReport(
        layer=position, ratio=ratio, n_connections=int(n_total), active_before=int(n_total - len(dormant)),
        dormant_before=int(len(dormant)), candidates=candidates, requested=requested, added=int(len(indices)),
        threshold=float(g_abs[take[-1]]) if len(take) else 0.0, init=init, lr=float(lr),
        indices=indices, gradient_abs=g_abs)


def grow_network_connections(net, ratio, gradients, init="gradient", lr=0.01, layers=None):
    """``grow_connections`` on every masked layer of ``net`` (or the positions in ``layers``).

    ratio: one number for all layers, or a sequence with one per grown layer.
    gradients: {position: G} as returned by ``growth_gradients``; None uses each
    layer's stored ``grad_weight``.
    Returns one ``ConnectionGrowthReport`` per grown layer, in order.
    """
    positions = [i for i, _ in net.masked_layers()] if layers is None else list(layers)
    for p in positions:
        _masked_layer(net, p)
    if isinstance(ratio, (list, tuple, np.ndarray)):
        ratios = list(ratio)
        if len(ratios) != len(positions):
            raise ValueError(f"ratio has {len(ratios)} entries but {len(positions)} layers grow ({positions})")
    else:
        ratios = [ratio] * len(positions)
    reports = []
    for p, r in zip(positions, ratios):
        if gradients is not None and p not in gradients:
            raise ValueError(f"gradients has no entry for layer {p} (has {sorted(gradients)})")
        g = None if gradients is None else gradients[p]
        reports.append(grow_connections(net.layers[p], r, g, init=init, lr=lr, position=p))
    return reports


# ============================================================== neuron growth
def _check_bridgeable(net, position):
    """Neuron growth needs Dense layer l followed by a Dense layer l+1. Returns l+1's position."""
    layer = _masked_layer(net, position)
    if not isinstance(layer, Dense):
        raise ValueError(f"layer {position} of {net.name} is a {type(layer).__name__}: neuron growth "
                         f"(bridging gradient) is for hidden Dense layers; use grow_feature_maps for conv layers")
    if position == net.masked_layers()[-1][0]:
        raise ValueError(f"layer {position} of {net.name} is the output layer; neurons grow in hidden layers only")
    nxt, block = next_masked(net, position)
    if not isinstance(net.layers[nxt], Dense) or block != 1:
        raise ValueError(f"layer {position} of {net.name} feeds a {type(net.layers[nxt]).__name__}; "
                         f"the bridging gradient is defined for Dense -> Dense only")
    return nxt


def _bridging_gradient_and_loss(net, position, x, y):
    nxt = _check_bridgeable(net, position)
    x, y = _check_data(net, x, y)
    # the backward pass below overwrites the stored gradients of the layers after
    # position; put them back so that this function has no side effect on them
    saved = {i: (layer.grad_weight, layer.grad_bias) for i, layer in net.masked_layers()}
    a = x
    for i, layer in enumerate(net.layers):
        if i == position:
            x_prev = a                                  # x^(l-1): (N, n_in of layer l)
        a = layer.forward(a)
    loss, grad = softmax_cross_entropy(a, y)            # grad already carries the 1/N of the mean
    for i in range(len(net.layers) - 1, nxt, -1):
        grad = net.layers[i].backward(grad)             # ends as dL/du^(l+1): (N, n_out of l+1)
    for i, layer in net.masked_layers():
        layer.grad_weight, layer.grad_bias = saved[i]
    # sum_i dL/du_m(i) * x_n(i) = mean_i dl_i/du_m * x_n, since dL/du = dl/du / N
    return grad.T @ x_prev, loss


def bridging_gradient(net, position, x, y):
    """The bridging gradient of hidden Dense layer ``position`` (layer l).

    G[m, n] = mean over the batch of x_n^(l-1) * dl/du_m^(l+1): the gradient of the
    mean loss w.r.t. a hypothetical direct weight from neuron n of layer l-1 (the
    input of layer l) to neuron m of layer l+1 (u = pre-activation of the next
    masked layer). One forward and one (partial) backward pass on (x, y).

    x: (N, *net.input_shape); y: (N,)
    returns G: (n_out of the next masked layer, n_in of layer ``position``)
    Raises ValueError for a conv layer or the output layer. The layers' stored
    gradients are left as they were.
    """
    return _bridging_gradient_and_loss(net, position, x, y)[0]


def birth_strength_ladder(alpha_max=0.3, alpha_min=0.003, factor=3):
    """(alpha_max, alpha_max/factor, ...) down to the last value >= alpha_min **[ours]**.

    birth_strength_ladder() == (0.3, 0.1, 0.0333.., 0.0111.., 0.0037..)
    """
    if not (0 < alpha_min <= alpha_max and math.isfinite(alpha_max)):
        raise ValueError(f"need 0 < alpha_min <= alpha_max < inf, got {alpha_min!r}, {alpha_max!r}")
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    # alpha_max / factor**k, not repeated division: 0.3/3 is 0.1, not 0.09999999999999999
    ladder, k = [], 0
    while alpha_max / factor ** k >= alpha_min * (1 - 1e-9):
        ladder.append(float(alpha_max / factor ** k))
        k += 1
    return tuple(ladder)


def _check_ladder(birth_strength):
    """A positive float or a sequence of them -> a tuple, largest first, no repeats."""
    values = [birth_strength] if np.isscalar(birth_strength) else list(birth_strength)
    if not values or not all(isinstance(a, (int, float, np.floating, np.integer)) and not isinstance(a, bool)
                             and 0 < a < math.inf for a in values):
        raise ValueError(f"birth_strength must be a positive number or a non-empty sequence of them, "
                         f"got {birth_strength!r}")
    return tuple(sorted({float(a) for a in values}, reverse=True))


@dataclass
class NeuronGrowthReport:
    """What ``grow_neurons`` did to one hidden layer.

    ladder / ladder_losses: the birth strengths tried (largest first) and the batch
    loss with each; the first that beat loss_before is ``birth_strength``.
    bridging: the bridging gradient used (n_out of l+1, n_in of l); not in as_dict.
    """
    layer: int
    requested: int
    added: int
    birth_ratio: float
    pairs_per_chunk: int
    pairs_per_neuron: list   # pairs with |G| > 0 each added neuron took
    birth_strength: object   # the alpha kept, None if none
    ladder: list
    ladder_losses: list
    loss_before: float
    loss_after: float
    sign: str
    units: list              # indices of the new neurons in layer `layer`
    reason: str = ""
    bridging: np.ndarray = field(repr=False, default=None)

    def as_dict(self):
        return {"layer": self.layer, "requested": self.requested, "added": self.added,
                "birth_ratio": self.birth_ratio, "pairs_per_chunk": self.pairs_per_chunk,
                "pairs_per_neuron": list(self.pairs_per_neuron), "birth_strength": self.birth_strength,
                "ladder": list(self.ladder), "ladder_losses": list(self.ladder_losses),
                "loss_before": self.loss_before, "loss_after": self.loss_after, "sign": self.sign,
                "units": list(self.units), "reason": self.reason}


def _neuron_weights(bridging, count, birth_ratio, sign, rng, n_in, n_out_next):
    """Unscaled in/out weights of up to ``count`` new neurons from the bridging gradient.

    Pairs (m, n) are ranked by |G| (stable: ties to the lowest flat index m*n_in + n);
    neuron j takes the j-th chunk of ceil(birth_ratio * n_pairs) pairs **[ours]**.
    For each pair, d = sqrt|G[m, n]| and s = +1 (sign="positive", **[ours]**) or a
    random +-1 (sign="random", the paper's):  w_in[n] += s*d, w_out[m] -= s*sign(G)*d.
    A neuron whose chunk holds no |G| > 0, or whose weights cancel to zero, is dropped.

    returns w_in (k, n_in), w_out (n_out_next, k), pairs per kept neuron, chunk size.
    """
    g = bridging.reshape(-1)
    n_pairs = g.size
    chunk = max(1, math.ceil(birth_ratio * n_pairs - 1e-9))   # - 1e-9: 0.05 * 60.0 may be 3.0000000000000004
    order = np.argsort(-np.abs(g), kind="stable")
    order = order[:np.count_nonzero(g)]                 # a zero-G pair would add nothing
    rows_in, cols_out, pairs = [], [], []
    for j in range(count):
        idx = order[j * chunk:(j + 1) * chunk]
        if idx.size == 0:
            break
        m, n = np.divmod(idx, bridging.shape[1])
        d = np.sqrt(np.abs(g[idx]).astype(np.float64))
        s = np.ones_like(d) if sign == "positive" else rng.choice([-1.0, 1.0], size=d.size)
        w_in = np.bincount(n, weights=s * d, minlength=bridging.shape[1])
        w_out = np.bincount(m, weights=-s * np.sign(g[idx]) * d, minlength=bridging.shape[0])
        if not (w_in.any() and w_out.any()):
            continue
        # pad to the current widths: units grown since G was computed get no pairs
        rows_in.append(np.pad(w_in, (0, n_in - w_in.size)))
        cols_out.append(np.pad(w_out, (0, n_out_next - w_out.size)))
        pairs.append(int(idx.size))
    w_in = np.array(rows_in).reshape(len(rows_in), n_in)
    w_out = np.array(cols_out).reshape(len(cols_out), n_out_next).T
    return w_in, w_out, pairs, chunk


def _set_neurons(net, position, nxt, units, w_in, w_out):
    """Write the new neurons' weights; their masks become exactly the nonzeros."""
    layer, nxt_layer = net.layers[position], net.layers[nxt]
    layer.weight[units, :] = w_in.astype(layer.weight.dtype)
    layer.mask[units, :] = layer.weight[units, :] != 0
    layer.bias[units] = 0
    nxt_layer.weight[:, units] = w_out.astype(nxt_layer.weight.dtype)
    nxt_layer.mask[:, units] = nxt_layer.weight[:, units] != 0


def grow_neurons(net, position, count, x, y, birth_ratio=0.05, birth_strength=(0.01,), sign="positive",
                 optimizer=None, rng=None, bridging=None):
    """Add up to ``count`` neurons to hidden Dense layer ``position`` (layer l), by the bridging gradient.

    NEST.md, "Neuron growth":
      1. G = bridging_gradient(net, position, x, y) (or ``bridging``, computed earlier
         on the pre-growth network when several layers grow in one round: units
         added since then get no pairs). Only existing units take part.
      2. Rank the pairs (m, n) by |G|; neuron j takes the j-th chunk of
         ceil(birth_ratio * n_pairs) pairs (at least 1) **[ours]**; per pair, with
         d = sqrt|G[m, n]|: w_in[n] += d, w_out[m] += -sign(G[m, n]) * d, so that
         w_out[m] * w_in[n] points down the gradient. sign="positive" keeps w_in >= 0
         so the neuron starts in ReLU's active region (inputs are >= 0) **[ours]**;
         sign="random" draws s = +-1 per pair (w_in[n] += s*d, w_out[m] += -s*sign(G)*d),
         the paper's rule.
      3. Rescale each neuron: w_in *= alpha * mean|active W_l| / mean|w_in nonzero|,
         w_out likewise with layer l+1. Masks = exactly the nonzeros; bias 0.
      4. Choosing alpha **[ours]**: ``birth_strength`` is one alpha or a ladder (tried
         largest first, see ``birth_strength_ladder``); keep the largest alpha whose
         loss on (x, y) is below the loss without new neurons. If none is, add
         nothing: the network (and optimizer) are left exactly as they were.

    x: (N, *net.input_shape) with inputs >= 0 (pixels in [0, 1]); y: (N,)
    optimizer: if given, its momentum buffers grow with the layer (``add_units``).
    rng: seed or Generator, used by sign="random" only.
    Returns a ``NeuronGrowthReport``.
    """
    count = _check_positive_int("count", count)
    birth_ratio = _check_fraction("birth_ratio", birth_ratio)
    ladder = _check_ladder(birth_strength)
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    nxt = _check_bridgeable(net, position)
    x, y = _check_data(net, x, y)
    rng = np.random.default_rng(rng)
    layer, nxt_layer = net.layers[position], net.layers[nxt]
    if bridging is None:
        bridging, _ = _bridging_gradient_and_loss(net, position, x, y)
    else:
        bridging = np.asarray(bridging)
        if bridging.ndim != 2 or bridging.shape[0] > nxt_layer.n_out or bridging.shape[1] > layer.n_in:
            raise ValueError(f"bridging must be (m <= {nxt_layer.n_out}, n <= {layer.n_in}) for layer {position}, "
                             f"got shape {bridging.shape}")
        if not np.all(np.isfinite(bridging)):
            raise ValueError("bridging holds NaN or inf")
    loss_before = _batch_loss(net, x, y)

    w_in, w_out, pairs, chunk = _neuron_weights(bridging, count, birth_ratio, sign, rng, layer.n_in, nxt_layer.n_out)
    report = NeuronGrowthReport(
        layer=position, requested=count, added=0, birth_ratio=birth_ratio, pairs_per_chunk=chunk,
        pairs_per_neuron=[], birth_strength=None, ladder=[], ladder_losses=[], loss_before=loss_before,
        loss_after=loss_before, sign=sign, units=[], bridging=bridging)
    k = len(pairs)
    if k == 0:
        report.reason = "no pair (m, n) has a nonzero bridging gradient: no neuron to grow"
        return report

    # per-neuron scale so that the new weights look like the weights of their layer
    target_in = _mean_active_magnitude(layer, f"layer {position}")
    target_out = _mean_active_magnitude(nxt_layer, f"layer {nxt}")
    w_in = w_in * (target_in / np.array([np.abs(r[r != 0]).mean() for r in w_in]))[:, None]
    w_out = w_out * (target_out / np.array([np.abs(c[c != 0]).mean() for c in w_out.T]))[None, :]

    # try each alpha on a copy, so that a failed ladder leaves net untouched
    trial = net.copy()
    trial_units = add_units(trial, position, k)
    chosen = None
    for alpha in ladder:
        _set_neurons(trial, position, nxt, trial_units, alpha * w_in, alpha * w_out)
        report.ladder.append(alpha)
        report.ladder_losses.append(_batch_loss(trial, x, y))
        if report.ladder_losses[-1] < loss_before:
            chosen = alpha
            break
    if chosen is None:
        report.reason = (f"no birth strength in {list(ladder)} lowered the loss below {loss_before:.6g}: "
                         f"no neuron added")
        return report

    units = add_units(net, position, k, optimizer)
    _set_neurons(net, position, nxt, units, chosen * w_in, chosen * w_out)
    report.added, report.units, report.pairs_per_neuron = k, [int(u) for u in units], pairs
    report.birth_strength, report.loss_after = chosen, report.ladder_losses[-1]
    if k < count:
        report.reason = f"only {k} of {count} neurons got pairs with a nonzero bridging gradient"
    return report


# ========================================================= feature-map growth
@dataclass
class FeatureMapGrowthReport:
    """What ``grow_feature_maps`` did to one conv layer.

    candidate_losses[j]: the batch loss with each random candidate for the j-th map tried.
    """
    layer: int
    requested: int
    added: int
    candidates: int
    loss_before: float
    loss_after: float
    candidate_losses: list
    units: list
    reason: str = ""

    def as_dict(self):
        return {"layer": self.layer, "requested": self.requested, "added": self.added,
                "candidates": self.candidates, "loss_before": self.loss_before, "loss_after": self.loss_after,
                "candidate_losses": [list(c) for c in self.candidate_losses], "units": list(self.units),
                "reason": self.reason}


def _outgoing_index(nxt_layer, unit, block):
    """Where feature map ``unit`` sits in the next masked layer's weight: a conv's
    input channel, or a dense layer's block of H*W flattened columns."""
    if isinstance(nxt_layer, Conv2d):
        return (slice(None), unit)                                  # (O', k', k')
    return (slice(None), slice(unit * block, (unit + 1) * block))    # (n_out', H*W)


def _random_sparse(shape, density, scale, rng):
    """Gaussian weights on a random mask of the given density (at least one active),
    rescaled so their mean |w| is ``scale``."""
    mask = rng.random(shape) < density
    if not mask.any():
        mask.flat[rng.integers(mask.size)] = True
    w = rng.standard_normal(shape) * mask
    return w * (scale / np.abs(w[mask]).mean())


def _set_feature_map(net, position, nxt, block, unit, kernel_in, w_out):
    layer, nxt_layer = net.layers[position], net.layers[nxt]
    layer.weight[unit] = kernel_in.astype(layer.weight.dtype)
    layer.mask[unit] = layer.weight[unit] != 0
    layer.bias[unit] = 0
    where = _outgoing_index(nxt_layer, unit, block)
    nxt_layer.weight[where] = w_out.astype(nxt_layer.weight.dtype)
    nxt_layer.mask[where] = nxt_layer.weight[where] != 0


def grow_feature_maps(net, position, count, x, y, candidates=10, optimizer=None, rng=None):
    """Add up to ``count`` output feature maps to conv layer ``position``, one at a time.

    For each new map (NEST.md, "Feature-map growth"; the paper: "randomly generate
    sets of kernels and pick the set that reduces the loss the most"):
      * draw ``candidates`` random kernel sets: the map's input kernels in layer
        ``position`` (C, k, k) and its outgoing weights in the next masked layer (a
        conv's (O', k', k') input slice, or after a Flatten the dense layer's block
        of H*W columns, which ``add_units`` places at the map's flattened position);
        each is Gaussian on a random mask of its layer's density, scaled to its
        layer's mean |active weight|; bias 0; where a layer has a partial-area
        ``area_mask``, the new map's areas are whole (all ones);
      * keep the candidate with the lowest loss on (x, y) if it is below the loss
        without the map; otherwise stop and add no further map (the report says so).
    So the batch loss never goes up.

    x: (N, *net.input_shape); y: (N,)
    Returns a ``FeatureMapGrowthReport``.
    """
    layer = _masked_layer(net, position)
    if not isinstance(layer, Conv2d):
        raise ValueError(f"layer {position} of {net.name} is a {type(layer).__name__}: feature maps grow in "
                         f"Conv2d layers; use grow_neurons for Dense layers")
    count = _check_positive_int("count", count)
    candidates = _check_positive_int("candidates", candidates)
    x, y = _check_data(net, x, y)
    nxt, block = next_masked(net, position)
    rng = np.random.default_rng(rng)

    loss = _batch_loss(net, x, y)
    report = FeatureMapGrowthReport(layer=position, requested=count, added=0, candidates=candidates,
                                    loss_before=loss, loss_after=loss, candidate_losses=[], units=[])
    for j in range(count):
        layer, nxt_layer = net.layers[position], net.layers[nxt]
        # the new map copies the scale and density of the maps already there
        scale_in = _mean_active_magnitude(layer, f"layer {position}")
        scale_out = _mean_active_magnitude(nxt_layer, f"layer {nxt}")
        trial = net.copy()
        (unit,) = add_units(trial, position, 1)
        out_shape = trial.layers[nxt].weight[_outgoing_index(trial.layers[nxt], unit, block)].shape
        draws, losses = [], []
        for _ in range(candidates):
            kernel_in = _random_sparse(layer.weight.shape[1:], layer.density(), scale_in, rng)
            w_out = _random_sparse(out_shape, nxt_layer.density(), scale_out, rng)
            _set_feature_map(trial, position, nxt, block, unit, kernel_in, w_out)
            draws.append((kernel_in, w_out))
            losses.append(_batch_loss(trial, x, y))
        report.candidate_losses.append(losses)
        best = int(np.argmin(losses))
        if not losses[best] < loss:
            report.reason = (f"none of {candidates} random candidates for map {j + 1} lowered the loss below "
                             f"{loss:.6g}: added {report.added} of {count}")
            break
        (unit,) = add_units(net, position, 1, optimizer)
        _set_feature_map(net, position, nxt, block, unit, *draws[best])
        loss = losses[best]
        report.added += 1
        report.units.append(int(unit))
    report.loss_after = loss
    return report
