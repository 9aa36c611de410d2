"""NeST's growth phase: new connections, new neurons, new feature maps.

Read next to the growth section of Dai, Yin & Jha (NeST, IEEE Trans. Computers 2019)
and docs/nest.md ("Growth"). The module has two halves.

**The rules** are pure functions on arrays, one per formula, with no argument checks
(their callers check at the door):

* connection growth: ``select_growth(mask, G, ratio)``;
* neuron growth: ``bridging_gradient(x_prev, delta_next)``, ``rank_pairs``,
  ``pairs_per_neuron``, ``neuron_weights(G, count, birth_ratio, signs)``,
  ``mean_active_magnitude``, ``match_layer_scale``, ``strength_ladder``;
* feature-map growth: ``random_sparse_kernels``, ``choose_candidate``.

**The drivers** check their arguments (``nestref.checks``), take the arrays out of a
network, call the rules and write the result back: ``growth_gradients``,
``grow_connections``, ``grow_network_connections``, ``network_bridging_gradient``,
``birth_strength_ladder``, ``grow_neurons``, ``grow_feature_maps``. Every driver keeps
the invariant W == 0 wherever M == 0, keeps the network's dtype, changes widths only through
``nestref.core.network.add_units`` (which also grows the optimizer's momentum buffers), and
returns a report dataclass whose ``as_dict()`` is plain JSON-able data. Drivers print
nothing.

Decisions the paper leaves open are marked **[ours]**, each with its anchor in
docs/nest.md.
"""
from dataclasses import dataclass, field

import numpy as np

from ..checks import (
    check_choice,
    check_examples,
    check_fraction,
    check_positive_int,
    check_positive_number,
    is_number,
)
from ..core.layers import Conv2d, Dense, MaskedLayer
from ..core.losses import softmax_cross_entropy
from ..core.network import add_units, loss_and_grads, next_masked
from ..errors import InvalidArgumentError
from .rounding import ceil_count, floor_count

__all__ = [
    "select_growth", "bridging_gradient", "rank_pairs", "pairs_per_neuron", "neuron_weights",
    "mean_active_magnitude", "match_layer_scale", "strength_ladder", "birth_strength_ladder",
    "random_sparse_kernels", "choose_candidate",
    "growth_gradients", "ConnectionGrowthReport", "grow_connections", "grow_network_connections",
    "network_bridging_gradient", "NeuronGrowthReport", "grow_neurons",
    "FeatureMapGrowthReport", "grow_feature_maps",
]

INITS = ("gradient", "zero")
SIGNS = ("positive", "random")


# ================================================================= the rules
def select_growth(mask, G, ratio):
    r"""Connection growth: the dormant connections to activate, the top ``ratio`` by |G|.

    With D = {j : M_j = 0} the dormant connections and G = dL/d(W*M),

    .. math::
        k = \min\big(\lfloor \rho\,|D| \rfloor,\ |\{j \in D : |G_j| > 0\}|\big),
        \qquad \text{grow the } k \text{ connections of } D \text{ with the largest } |G_j|

    ties going to the lowest flat index. Floor, so growth never exceeds the fraction
    asked for **[ours]** (docs/nest.md#ours-count-rounding).

    mask, G: (O, I) for a dense layer, (O, C, k, k) for a conv; ratio: rho in (0, 1].
    returns: bool, mask's shape, True at the newly activated connections.
    """
    dormant = np.flatnonzero(mask.reshape(-1) == 0)                # ascending flat indices
    g_abs = np.abs(G.reshape(-1)[dormant])
    order = np.argsort(-g_abs, kind="stable")                      # equal |G|: lowest index first
    k = min(floor_count(ratio, dormant.size), int(np.count_nonzero(g_abs > 0)))
    grown = np.zeros(mask.size, dtype=bool)
    grown[dormant[order[:k]]] = True
    return grown.reshape(mask.shape)


def bridging_gradient(x_prev, delta_next):
    r"""The bridging gradient: the slope of the loss along a direct weight n -> m.

    .. math::
        G_{mn} = \sum_b \delta_{bm}\, x_{bn}
               = \frac{1}{B} \sum_b \frac{\partial \ell_b}{\partial u^{(l+1)}_{bm}}\, x^{(l-1)}_{bn}

    where delta = dL/du^(l+1) of the *mean* loss L = (1/B) sum_b l_b, so each of its
    rows already carries the 1/B: G is the batch mean of the per-example products.

    x_prev: (B, I), the input of hidden layer l; delta_next: (B, M), dL/du of layer l+1.
    returns G: (M, I).
    """
    return delta_next.T @ x_prev


def rank_pairs(G):
    r"""The pairs (m, n) with G_mn != 0 as flat indices m*I + n, by |G_mn| descending.

    Ties go to the lowest flat index (a stable sort on -|G|). G: (M, I) -> (P,), P <= M*I.
    """
    order = np.argsort(-np.abs(G.reshape(-1)), kind="stable")
    return order[:np.count_nonzero(G)]                             # a zero-G pair would add nothing


def pairs_per_neuron(birth_ratio, n_pairs):
    r"""How many ranked pairs one new neuron takes: :math:`\max(1, \lceil \beta P \rceil)`."""
    return max(1, ceil_count(birth_ratio, n_pairs))


def neurons_to_add(neuron_fraction, target_width, width):
    r"""How many neurons (or feature maps) a layer grows in one round:
    :math:`\min(\max(1, \lfloor f T \rfloor), T - n)`, for the target architecture's width
    T and the layer's width n; 0 once the layer is at the cap."""
    return max(0, min(max(1, floor_count(neuron_fraction, target_width)), target_width - width))


def neuron_weights(G, count, birth_ratio, signs):
    r"""Neuron growth: in/out weights of up to ``count`` new neurons, before rescaling.

    Neuron j takes the j-th chunk of ``pairs_per_neuron`` pairs of ``rank_pairs(G)``
    **[ours]** (docs/nest.md#ours-neuron-chunks); per pair (m, n), with s = signs[m, n],
    :math:`d = \sqrt{|G_{mn}|}`:  :math:`w^{in}_j[n] \mathrel{+}= s d,\
    w^{out}_j[m] \mathrel{+}= -s\,\mathrm{sign}(G_{mn})\, d`, so w_out[m] w_in[n] points down
    the gradient. signs = +1 keep w_in >= 0 **[ours]** (docs/nest.md#ours-positive-sign).

    G, signs: (M, I). returns w_in (k, I), w_out (M, k), k <= count: one neuron per
    non-empty chunk (a neuron whose weights cancel has a zero row / column).
    """
    order, chunk = rank_pairs(G), pairs_per_neuron(birth_ratio, G.size)
    g, s_all = G.reshape(-1), signs.reshape(-1)
    rows_in, cols_out = [], []
    for j in range(count):
        idx = order[j * chunk:(j + 1) * chunk]
        if idx.size == 0:
            break
        m, n = np.divmod(idx, G.shape[1])
        d = np.sqrt(np.abs(g[idx]).astype(np.float64))
        s = s_all[idx].astype(np.float64)
        rows_in.append(np.bincount(n, weights=s * d, minlength=G.shape[1]))
        cols_out.append(np.bincount(m, weights=-s * np.sign(g[idx]) * d, minlength=G.shape[0]))
    return np.array(rows_in).reshape(-1, G.shape[1]), np.array(cols_out).reshape(-1, G.shape[0]).T


def mean_active_magnitude(weight, mask):
    r"""The scale of a layer's weights: :math:`\operatorname{mean}_{M_j \ne 0} |W_j|`. Any shape."""
    return float(np.abs(weight[mask != 0]).mean())


def match_layer_scale(w_in, w_out, scale_in, scale_out):
    r"""Rescale new neurons so that their weights look like those of their layers.

    .. math::
        w^{in}_j \leftarrow w^{in}_j\,\frac{s_{in}}{\operatorname{mean}_{w \ne 0}|w^{in}_j|},\qquad
        w^{out}_j \leftarrow w^{out}_j\,\frac{s_{out}}{\operatorname{mean}_{w \ne 0}|w^{out}_j|}

    with s_in, s_out the mean |active weight| of layers l and l+1
    (``mean_active_magnitude``). The birth strength alpha multiplies both afterwards.
    w_in: (k, I), w_out: (M, k), each row / column with a nonzero; returns the same shapes.
    """
    w_in = w_in * (scale_in / np.array([np.abs(r[r != 0]).mean() for r in w_in]))[:, None]
    w_out = w_out * (scale_out / np.array([np.abs(c[c != 0]).mean() for c in w_out.T]))[None, :]
    return w_in, w_out


def strength_ladder(alpha_max, alpha_min, factor):
    r"""The birth strengths to try, largest first **[ours]**
    (docs/nest.md#ours-birth-strength-ladder).

    :math:`(\alpha_{max}, \alpha_{max}/f, \alpha_{max}/f^2, \dots)` down to the last value
    >= alpha_min (with a relative slack of 1e-9). Floats in; a tuple of floats out.
    """
    # alpha_max / factor**k, not repeated division, so that rounding errors do not add up
    ladder, k = [], 0
    while alpha_max / factor ** k >= alpha_min * (1 - 1e-9):
        ladder.append(float(alpha_max / factor ** k))
        k += 1
    return tuple(ladder)


def random_sparse_kernels(shape, density, scale, rng):
    r"""Feature-map growth: one random candidate for a new map's kernels (or outgoing weights).

    Gaussian on a random mask of the layer's density (at least one active entry),
    rescaled to the layer's mean |active weight|:
    :math:`w = z \odot m \cdot s / \operatorname{mean}_{m_j=1}|z_j|`, with z ~ N(0, 1) and
    m_j ~ Bernoulli(density).
    shape: e.g. (C, k, k); returns a float64 array of that shape.
    """
    mask = rng.random(shape) < density
    if not mask.any():
        mask.flat[rng.integers(mask.size)] = True
    w = rng.standard_normal(shape) * mask
    return w * (scale / np.abs(w[mask]).mean())


def choose_candidate(losses, loss_before):
    r"""Feature-map growth: the candidate that lowers the loss the most, if any lowers it.

    :math:`j^* = \arg\min_j L_j`, kept only if :math:`L_{j^*} < L_{before}`; ties: the first.
    losses: (candidates,); returns j* or None.
    """
    best = int(np.argmin(losses))
    return best if losses[best] < loss_before else None


# ============================================================ door helpers
def _masked_layer(net, position):
    layers = dict(net.masked_layers())
    if position not in layers:
        raise InvalidArgumentError(f"layer {position} of {net.name} is not a Dense or Conv2d "
                                   f"layer; masked layers are at positions {sorted(layers)}")
    return layers[position]


def _batch_loss(net, x, y):
    """Mean cross-entropy of net on (x, y), summed in float64 so that comparisons of
    nearly equal losses are not decided by float32 rounding of the mean."""
    logits = net.predict(x, batch_size=1000)
    loss, _ = softmax_cross_entropy(logits.astype(np.float64), y)
    return loss


def _weight_scale(layer, what):
    """``mean_active_magnitude`` of a layer, or an error if it has no active connection."""
    if not (layer.mask != 0).any():
        raise InvalidArgumentError(f"{what} has no active connection, so there is no weight "
                                   f"scale to copy")
    return mean_active_magnitude(layer.weight, layer.mask)


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
    x, y = check_examples(net, x, y, "the growth data")
    batch_size = check_positive_int("batch_size", batch_size)
    if n_batches is not None:
        n_batches = check_positive_int("n_batches", n_batches)
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


def _layer_gradient(layer, gradient):
    """``gradient``, or the layer's stored one, checked against the weight's shape."""
    if gradient is None:
        gradient = layer.grad_weight
        if gradient is None:
            raise InvalidArgumentError("the layer holds no gradient: run a backward pass first, "
                                       "or pass gradient= (e.g. from growth_gradients)")
    gradient = np.asarray(gradient)
    if gradient.shape != layer.weight.shape:
        raise InvalidArgumentError(f"gradient must have the weight's shape {layer.weight.shape}, "
                                   f"got {gradient.shape}")
    if not np.all(np.isfinite(gradient)):
        raise InvalidArgumentError("gradient holds NaN or inf")
    return gradient


def grow_connections(layer, ratio, gradient=None, init="gradient", lr=0.01, position=None):
    """Connection growth on one masked layer: ``select_growth``, then the new weights.

    layer: a Dense or Conv2d; G = ``gradient`` if given, else ``layer.grad_weight``
    (left by the last backward pass), shaped like ``layer.weight``. The connections
    ``select_growth(layer.mask, G, ratio)`` picks get mask 1 and weight -lr * G, one
    gradient step from zero, with lr the learning rate the next training phase starts
    with (``init="gradient"``, **[ours]**, docs/nest.md#ours-growth-init), or 0
    (``init="zero"``, the paper's alternative). Active weights are not touched.

    position: only recorded in the report (``grow_network_connections`` passes it).
    A layer with no dormant connection is not an error: the report says added=0.
    Returns a ``ConnectionGrowthReport``.
    """
    if not isinstance(layer, MaskedLayer):
        raise InvalidArgumentError(f"grow_connections needs a Dense or Conv2d layer, "
                                   f"got {type(layer).__name__}")
    ratio = check_fraction("ratio", ratio)
    check_choice("init", init, INITS)
    lr = check_positive_number("lr", lr)
    gradient = _layer_gradient(layer, gradient)

    grown = select_growth(layer.mask, gradient, ratio)
    new_weights = -lr * gradient[grown] if init == "gradient" else 0
    layer.weight[grown] = np.asarray(new_weights).astype(layer.weight.dtype)
    dormant = np.flatnonzero(layer.mask.reshape(-1) == 0)
    layer.mask[grown] = 1

    g_abs = np.abs(gradient.reshape(-1)[dormant])
    indices = np.flatnonzero(grown)
    grown_abs = np.abs(gradient.reshape(-1)[indices])
    indices = indices[np.argsort(-grown_abs, kind="stable")]
    return ConnectionGrowthReport(
        layer=position, ratio=ratio, n_connections=int(layer.weight.size),
        active_before=int(layer.weight.size - len(dormant)), dormant_before=int(len(dormant)),
        candidates=int(np.count_nonzero(g_abs > 0)), requested=floor_count(ratio, len(dormant)),
        added=int(len(indices)), threshold=float(grown_abs.min()) if len(indices) else 0.0,
        init=init, lr=lr, indices=indices, gradient_abs=g_abs)


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
            raise InvalidArgumentError(f"ratio has {len(ratios)} entries but {len(positions)} "
                                       f"layers grow ({positions})")
    else:
        ratios = [ratio] * len(positions)
    for p in positions:
        if gradients is not None and p not in gradients:
            raise InvalidArgumentError(f"gradients has no entry for layer {p} "
                                       f"(has {sorted(gradients)})")
    return [grow_connections(net.layers[p], r, None if gradients is None else gradients[p],
                             init=init, lr=lr, position=p)
            for p, r in zip(positions, ratios, strict=True)]


# ============================================================== neuron growth
def _check_bridgeable(net, position):
    """Neuron growth needs Dense layer l followed by a Dense layer l+1. Returns l+1's position."""
    layer = _masked_layer(net, position)
    if not isinstance(layer, Dense):
        raise InvalidArgumentError(f"layer {position} of {net.name} is a {type(layer).__name__}: "
                                   f"neuron growth (bridging gradient) is for hidden Dense "
                                   f"layers; use grow_feature_maps for conv layers")
    if position == net.masked_layers()[-1][0]:
        raise InvalidArgumentError(f"layer {position} of {net.name} is the output layer; neurons "
                                   f"grow in hidden layers only")
    nxt, block = next_masked(net, position)
    if not isinstance(net.layers[nxt], Dense) or block != 1:
        raise InvalidArgumentError(f"layer {position} of {net.name} feeds a "
                                   f"{type(net.layers[nxt]).__name__}; the bridging gradient is "
                                   f"defined for Dense -> Dense only")
    return nxt


def network_bridging_gradient(net, position, x, y):
    """``bridging_gradient`` of hidden Dense layer ``position`` (layer l) on (x, y).

    x_prev = the input of layer l (``net.forward_until``), delta_next = dL/du of the
    next masked layer l+1 (u = its pre-activation): one forward and one partial
    backward pass. The layers' stored gradients are left as they were.

    x: (N, *net.input_shape); y: (N,)
    returns G: (n_out of the next masked layer, n_in of layer ``position``)
    Raises InvalidArgumentError for a conv layer or the output layer.
    """
    nxt = _check_bridgeable(net, position)
    x, y = check_examples(net, x, y, "the growth data")
    # the backward pass below overwrites the stored gradients of the layers after
    # position; put them back so that this function has no side effect on them
    saved = {i: (layer.grad_weight, layer.grad_bias) for i, layer in net.masked_layers()}
    x_prev = net.forward_until(position, x)                        # (N, n_in of layer l)
    logits = x_prev
    for layer in net.layers[position:]:
        logits = layer.forward(logits)
    _, delta = softmax_cross_entropy(logits, y)                    # carries the 1/N of the mean
    for layer in reversed(net.layers[nxt + 1:]):
        delta = layer.backward(delta)                              # ends as dL/du^(l+1): (N, M)
    for i, layer in net.masked_layers():
        layer.grad_weight, layer.grad_bias = saved[i]
    return bridging_gradient(x_prev, delta)


def _check_ladder(birth_strength):
    """A positive float or a sequence of them -> a tuple, largest first, no repeats."""
    values = [birth_strength] if np.isscalar(birth_strength) else list(birth_strength)
    if not values or not all(is_number(a) and a > 0 for a in values):
        raise InvalidArgumentError(f"birth_strength must be a positive number or a non-empty "
                                   f"sequence of them, got {birth_strength!r}")
    return tuple(sorted({float(a) for a in values}, reverse=True))


def birth_strength_ladder(alpha_max=0.3, alpha_min=0.003, factor=3):
    """``strength_ladder`` with its arguments checked: 0 < alpha_min <= alpha_max, factor > 1.

    birth_strength_ladder() == (0.3, 0.1, 0.0333.., 0.0111.., 0.0037..)
    """
    if not (is_number(alpha_min) and is_number(alpha_max) and 0 < alpha_min <= alpha_max):
        raise InvalidArgumentError(f"need 0 < alpha_min <= alpha_max < inf, "
                                   f"got {alpha_min!r}, {alpha_max!r}")
    if not (is_number(factor) and factor > 1):
        raise InvalidArgumentError(f"factor must be a number > 1, got {factor!r}")
    return strength_ladder(alpha_max, alpha_min, factor)


def _check_bridging(net, position, nxt, bridging, x, y):
    """The bridging gradient to use: computed now if None, else checked against the widths."""
    if bridging is None:
        return network_bridging_gradient(net, position, x, y)
    bridging = np.asarray(bridging)
    n_out, n_in = net.layers[nxt].n_out, net.layers[position].n_in
    if bridging.ndim != 2 or bridging.shape[0] > n_out or bridging.shape[1] > n_in:
        raise InvalidArgumentError(f"bridging must be (m <= {n_out}, n <= {n_in}) for layer "
                                   f"{position}, got shape {bridging.shape}")
    if not np.all(np.isfinite(bridging)):
        raise InvalidArgumentError("bridging holds NaN or inf")
    return bridging


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
                "pairs_per_neuron": list(self.pairs_per_neuron),
                "birth_strength": self.birth_strength,
                "ladder": list(self.ladder), "ladder_losses": list(self.ladder_losses),
                "loss_before": self.loss_before, "loss_after": self.loss_after, "sign": self.sign,
                "units": list(self.units), "reason": self.reason}


def _pair_signs(bridging, count, birth_ratio, sign, rng):
    """signs for ``neuron_weights``: all +1, or (sign="random") a +-1 draw per pair taken,
    drawn chunk by chunk in rank order."""
    signs = np.ones(bridging.shape)
    if sign == "random":
        order, chunk = rank_pairs(bridging), pairs_per_neuron(birth_ratio, bridging.size)
        for j in range(count):
            idx = order[j * chunk:(j + 1) * chunk]
            if idx.size == 0:
                break
            signs.flat[idx] = rng.choice([-1.0, 1.0], size=idx.size)
    return signs


def _new_neurons(net, position, nxt, bridging, count, birth_ratio, signs, weight_scales=None):
    """``neuron_weights`` and ``match_layer_scale`` at the current widths.

    A neuron whose chunk cancelled to zero is dropped; units grown since ``bridging``
    was computed get no pairs (zero padding). ``weight_scales``: (s_in, s_out) taken
    earlier (before the round's connection growth), or None: the layers' scales now.
    Returns w_in (k, n_in), w_out (n_out', k) and the pairs each kept neuron took.
    """
    w_in, w_out = neuron_weights(bridging, count, birth_ratio, signs)
    chunk, n_pairs = pairs_per_neuron(birth_ratio, bridging.size), int(np.count_nonzero(bridging))
    keep = w_in.any(axis=1) & w_out.any(axis=0)
    pairs = [int(min(chunk, n_pairs - j * chunk)) for j in np.flatnonzero(keep)]
    if not pairs:
        return w_in[keep], w_out[:, keep], pairs
    layer, nxt_layer = net.layers[position], net.layers[nxt]
    if weight_scales is None:
        weight_scales = (
            _weight_scale(layer, f"layer {position}"),
            _weight_scale(nxt_layer, f"layer {nxt}"),
        )
    scale_in, scale_out = weight_scales
    w_in, w_out = match_layer_scale(w_in[keep], w_out[:, keep], scale_in, scale_out)
    w_in = np.pad(w_in, ((0, 0), (0, layer.n_in - w_in.shape[1])))
    w_out = np.pad(w_out, ((0, nxt_layer.n_out - w_out.shape[0]), (0, 0)))
    return w_in, w_out, pairs


def _short_reason(added, count, birth_ratio, bridging):
    """Why fewer than ``count`` neurons were born: the chunk rule's cap, or too few pairs."""
    chunk, n_pairs = pairs_per_neuron(birth_ratio, bridging.size), int(np.count_nonzero(bridging))
    chunks = -(-n_pairs // chunk)
    why = (f"{n_pairs} ranked pairs (nonzero bridging gradient) at {chunk} pairs per neuron "
           f"(ceil(birth_ratio {birth_ratio} x {bridging.size} pairs)) make {chunks} chunks")
    most = -(-bridging.size // chunk)  # the chunks there would be if every pair were nonzero
    if most < count:
        why += (f": the chunk rule caps a round at {most} neurons (about 1/birth_ratio), however "
                f"many pairs are nonzero; lower birth_ratio or neuron_fraction to grow more")
    elif chunks < count:
        why += ": too few pairs with a nonzero bridging gradient"
    if added < min(chunks, count):
        why += f"; {min(chunks, count) - added} neuron(s) cancelled to zero weights"
    return f"only {added} of {count} neurons: {why}"


def _set_neurons(net, position, nxt, units, w_in, w_out):
    """Write the new neurons' weights; their masks become exactly the nonzeros."""
    layer, nxt_layer = net.layers[position], net.layers[nxt]
    layer.weight[units, :] = w_in.astype(layer.weight.dtype)
    layer.mask[units, :] = layer.weight[units, :] != 0
    layer.bias[units] = 0
    nxt_layer.weight[:, units] = w_out.astype(nxt_layer.weight.dtype)
    nxt_layer.mask[:, units] = nxt_layer.weight[:, units] != 0


def _try_birth_strengths(net, position, nxt, w_in, w_out, ladder, x, y, loss_before):
    """The first alpha of ``ladder`` whose loss on (x, y) is below loss_before (None if
    none is), and the losses of the alphas tried; tried on a copy, net is untouched."""
    trial = net.copy()
    units = add_units(trial, position, len(w_in))
    losses = []
    for alpha in ladder:
        _set_neurons(trial, position, nxt, units, alpha * w_in, alpha * w_out)
        losses.append(_batch_loss(trial, x, y))
        if losses[-1] < loss_before:
            return alpha, losses
    return None, losses


def _check_weight_scales(weight_scales):
    """None, or (scale_in, scale_out) as a tuple of two positive numbers."""
    if weight_scales is None:
        return None
    weight_scales = tuple(
        check_positive_number(f"weight_scales[{k}]", v) for k, v in enumerate(weight_scales)
    )
    if len(weight_scales) != 2:
        raise InvalidArgumentError(
            f"weight_scales must be (scale_in, scale_out), got {len(weight_scales)} values"
        )
    return weight_scales


def grow_neurons(net, position, count, x, y, birth_ratio=0.05, birth_strength=(0.01,),
                 sign="positive", optimizer=None, rng=None, bridging=None, weight_scales=None):
    """Neuron growth: add up to ``count`` neurons to hidden Dense layer ``position`` (layer l).

    1. G = ``network_bridging_gradient(net, position, x, y)``, or ``bridging`` computed
       earlier on the pre-growth network (units added since then get no pairs).
    2. ``neuron_weights`` (signs +1 for sign="positive" **[ours]**,
       docs/nest.md#ours-positive-sign; a random +-1 per pair for sign="random", the
       paper's), then ``match_layer_scale`` to ``weight_scales`` = (mean |W_l|, mean
       |W_l+1|) if given (the driver takes them before the round's connection growth,
       whose near-zero new weights would shrink them **[ours]**,
       docs/nest.md#ours-neuron-scale), else the layers' scales now.
    3. Choosing alpha **[ours]** (docs/nest.md#ours-birth-strength-ladder): the first of
       ``birth_strength`` (one alpha or a ladder, tried largest first) whose loss on
       (x, y) is below the loss without new neurons. If none is, nothing is added and
       the network (and optimizer) are left exactly as they were; the report says why.
    Masks of the new rows / columns are exactly the nonzeros; biases 0.

    x: (N, *net.input_shape) with inputs >= 0 (pixels in [0, 1]); y: (N,)
    optimizer: if given, its momentum buffers grow with the layer (``add_units``).
    rng: seed or Generator, used by sign="random" only. Returns a ``NeuronGrowthReport``.
    """
    count = check_positive_int("count", count)
    birth_ratio = check_fraction("birth_ratio", birth_ratio)
    ladder = _check_ladder(birth_strength)
    check_choice("sign", sign, SIGNS)
    nxt = _check_bridgeable(net, position)
    x, y = check_examples(net, x, y, "the growth data")
    rng = np.random.default_rng(rng)
    bridging = _check_bridging(net, position, nxt, bridging, x, y)
    loss_before = _batch_loss(net, x, y)
    signs = _pair_signs(bridging, count, birth_ratio, sign, rng)
    weight_scales = _check_weight_scales(weight_scales)
    w_in, w_out, pairs = _new_neurons(
        net, position, nxt, bridging, count, birth_ratio, signs, weight_scales
    )
    report = NeuronGrowthReport(
        layer=position, requested=count, added=0, birth_ratio=birth_ratio,
        pairs_per_chunk=pairs_per_neuron(birth_ratio, bridging.size), pairs_per_neuron=[],
        birth_strength=None, ladder=[], ladder_losses=[], loss_before=loss_before,
        loss_after=loss_before, sign=sign, units=[], bridging=bridging)
    if not pairs:
        report.reason = "no pair (m, n) has a nonzero bridging gradient: no neuron to grow"
        return report
    alpha, report.ladder_losses = _try_birth_strengths(net, position, nxt, w_in, w_out, ladder,
                                                       x, y, loss_before)
    report.ladder = list(ladder[:len(report.ladder_losses)])
    if alpha is None:
        report.reason = (f"no birth strength in {list(ladder)} lowered the loss below "
                         f"{loss_before:.6g}: no neuron added")
        return report
    units = add_units(net, position, len(pairs), optimizer)
    _set_neurons(net, position, nxt, units, alpha * w_in, alpha * w_out)
    report.added, report.units, report.pairs_per_neuron = len(pairs), [int(u) for u in units], pairs
    report.birth_strength, report.loss_after = alpha, report.ladder_losses[-1]
    if len(pairs) < count:
        report.reason = _short_reason(len(pairs), count, birth_ratio, bridging)
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
                "candidates": self.candidates, "loss_before": self.loss_before,
                "loss_after": self.loss_after,
                "candidate_losses": [list(c) for c in self.candidate_losses],
                "units": list(self.units), "reason": self.reason}


def _outgoing_index(nxt_layer, unit, block):
    """Where feature map ``unit`` sits in the next masked layer's weight: a conv's
    input channel, or a dense layer's block of H*W flattened columns."""
    if isinstance(nxt_layer, Conv2d):
        return (slice(None), unit)                                  # (O', k', k')
    return (slice(None), slice(unit * block, (unit + 1) * block))    # (n_out', H*W)


def _set_feature_map(net, position, nxt, block, unit, kernel_in, w_out):
    layer, nxt_layer = net.layers[position], net.layers[nxt]
    layer.weight[unit] = kernel_in.astype(layer.weight.dtype)
    layer.mask[unit] = layer.weight[unit] != 0
    layer.bias[unit] = 0
    where = _outgoing_index(nxt_layer, unit, block)
    nxt_layer.weight[where] = w_out.astype(nxt_layer.weight.dtype)
    nxt_layer.mask[where] = nxt_layer.weight[where] != 0


def _feature_map_candidates(net, position, nxt, block, candidates, rng, x, y):
    """``candidates`` draws of ``random_sparse_kernels`` for one new map of layer ``position``
    (its kernels, then its outgoing weights), each tried on a copy: (draws, losses)."""
    layer, nxt_layer = net.layers[position], net.layers[nxt]
    # the new map copies the scale and density of the maps already there
    scale_in = _weight_scale(layer, f"layer {position}")
    scale_out = _weight_scale(nxt_layer, f"layer {nxt}")
    trial = net.copy()
    (unit,) = add_units(trial, position, 1)
    out_shape = trial.layers[nxt].weight[_outgoing_index(trial.layers[nxt], unit, block)].shape
    draws, losses = [], []
    for _ in range(candidates):
        kernel_in = random_sparse_kernels(layer.weight.shape[1:], layer.density(), scale_in, rng)
        w_out = random_sparse_kernels(out_shape, nxt_layer.density(), scale_out, rng)
        _set_feature_map(trial, position, nxt, block, unit, kernel_in, w_out)
        draws.append((kernel_in, w_out))
        losses.append(_batch_loss(trial, x, y))
    return draws, losses


def grow_feature_maps(net, position, count, x, y, candidates=10, optimizer=None, rng=None):
    """Feature-map growth: add up to ``count`` output maps to conv layer ``position``, one by one.

    For each new map (the paper: "randomly generate sets of kernels and pick the set
    that reduces the loss the most"): ``candidates`` draws of ``random_sparse_kernels``
    for the map's input kernels (C, k, k) and its outgoing weights in the next masked
    layer (a conv's (O', k', k') input slice, or after a Flatten the dense layer's
    block of H*W columns, which ``add_units`` places at the map's flattened position);
    bias 0; where a layer has a partial-area ``area_mask``, the new map's areas are
    whole. ``choose_candidate`` keeps the best if it lowers the loss on (x, y);
    otherwise no further map is added (the report says so). The batch loss never goes up.

    x: (N, *net.input_shape); y: (N,). Returns a ``FeatureMapGrowthReport``.
    """
    layer = _masked_layer(net, position)
    if not isinstance(layer, Conv2d):
        raise InvalidArgumentError(f"layer {position} of {net.name} is a {type(layer).__name__}: "
                                   f"feature maps grow in Conv2d layers; use grow_neurons for "
                                   f"Dense layers")
    count = check_positive_int("count", count)
    candidates = check_positive_int("candidates", candidates)
    x, y = check_examples(net, x, y, "the growth data")
    nxt, block = next_masked(net, position)
    rng = np.random.default_rng(rng)

    loss = _batch_loss(net, x, y)
    report = FeatureMapGrowthReport(layer=position, requested=count, added=0,
                                    candidates=candidates, loss_before=loss, loss_after=loss,
                                    candidate_losses=[], units=[])
    for j in range(count):
        draws, losses = _feature_map_candidates(net, position, nxt, block, candidates, rng, x, y)
        report.candidate_losses.append(losses)
        best = choose_candidate(losses, loss)
        if best is None:
            report.reason = (f"none of {candidates} random candidates for map {j + 1} lowered "
                             f"the loss below {loss:.6g}: added {report.added} of {count}")
            break
        (unit,) = add_units(net, position, 1, optimizer)
        _set_feature_map(net, position, nxt, block, unit, *draws[best])
        loss = losses[best]
        report.added += 1
        report.units.append(int(unit))
    report.loss_after = loss
    return report
