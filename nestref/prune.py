"""Pruning: NeST's second half.

    connections   ``prune_by_magnitude`` (one layer), ``prune_network`` (every layer,
                  guarded so that the network never disconnects)
    neurons       ``remove_dead_neurons`` (units with no inputs or no outputs; the
                  function is preserved), ``prune_neurons_by_activation`` (optional)
    areas         ``area_contributions``, ``prune_partial_area``: partial-area convolution
    reachability  ``reachable_units``: which units the input still reaches

Operators edit the network in place and return a report (a dataclass with
``as_dict()``). Pruning only ever deactivates: a connection set to mask 0 here is
never set back to 1, and W is set to 0 wherever M is.

Counts are ``floor(fraction * n)``, with a 1e-9 slack so that float rounding cannot
turn e.g. 0.29 * 100 into 28 **[ours]**.
"""
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import architectures
from . import kernels
from .layers import Conv2d, Dense, Flatten, MaskedLayer, MaxPool2d, ReLU
from .models import keep_units, next_masked

# Per-masked-layer fractions of one pruning round, by architecture: the rule and its
# reasons are in nestref.architectures (Architecture.prune_fractions).
DEFAULT_PRUNE_FRACTIONS = {name: entry.prune_fractions for name, entry in architectures.TABLE.items()}


# ===================================================================== reports
@dataclass
class PruneReport:
    """What one pruning step did to one layer.

    layer: position in net.layers; fraction: the fraction asked for;
    active_before: active connections (or, for areas, kept (o, i, p) triples) before;
    removed: how many were deactivated; requested: floor(fraction * active_before);
    threshold: the largest |w| (or mean |contribution|) removed, None if none was;
    stopped_short: True when fewer than requested were removed, and reason says why.
    """
    layer: int
    fraction: float
    active_before: int
    removed: int
    threshold: float | None
    stopped_short: bool = False
    reason: str = ""
    requested: int = 0
    kind: str = "connections"

    def as_dict(self):
        return asdict(self)


@dataclass
class AreaPruneReport(PruneReport):
    """A ``PruneReport`` of partial-area pruning; kind == "area".

    kernels_deactivated: kernels (o, i) whose whole area is now pruned, so their
    weights were deactivated too (they touch no output any more) **[ours]**.
    """
    kind: str = "area"
    kernels_deactivated: int = 0


@dataclass
class NeuronRemovalReport:
    """Units removed from the hidden layers of a network.

    layers: one dict per hidden masked layer, with at least position, type,
        width_before, width_after, removed, removed_grown, removed_seed (provenance:
        how many of the removed units were grown vs in the seed), plus the counts of
        the criterion (see the operator's docstring).
    criterion: "dead" (``remove_dead_neurons``) or "activation".
    rounds: passes over the layers until nothing more was removed.
    """
    layers: list = field(default_factory=list)
    criterion: str = "dead"
    rounds: int = 0

    @property
    def removed(self):
        """Units removed over all layers."""
        return sum(entry["removed"] for entry in self.layers)

    def as_dict(self):
        return {"criterion": self.criterion, "rounds": self.rounds, "removed": self.removed,
                "layers": [dict(entry) for entry in self.layers]}


# =============================================================== reachability
def reachable_units(net, masks=None, area_masks=None):
    """Which units of every layer the input reaches through active connections.

    A Dense unit is reachable if an active weight connects it to a reachable input;
    a conv output position (o, p) if an active weight of some kernel (o, i) whose
    area keeps p reads a reachable input position of map i; max-pool passes a window
    on if any of it is reachable; ReLU and Flatten pass units through (Flatten:
    map c's reachable positions become the matching columns of its H*W block).
    Biases do not count: they carry no signal from the input.

    masks, area_masks: optional {position: array} used in place of that layer's own
    mask / area_mask (to ask "what if" without editing the network).
    Returns one bool array per layer, shaped like that layer's output for one example;
    the last one says which output units are reachable.
    """
    masks, area_masks = masks or {}, area_masks or {}
    reach = np.ones(net.input_shape, dtype=bool)
    per_layer = []
    for position, layer in enumerate(net.layers):
        if isinstance(layer, Dense):
            active = masks.get(position, layer.mask) != 0
            reach = (active.astype(np.float64) @ reach.astype(np.float64)) > 0
        elif isinstance(layer, Conv2d):
            area = area_masks.get(position, layer.area_mask)
            reach = _conv_reach(layer, reach, masks.get(position, layer.mask), area)
        elif isinstance(layer, MaxPool2d):
            pooled, _ = kernels.maxpool_forward_numpy(reach[None].astype(np.float64), layer.kernel_size, layer.stride)
            reach = pooled[0] > 0
        elif isinstance(layer, (ReLU, Flatten)):
            reach = reach.reshape(layer.output_shape(reach.shape))
        else:
            raise TypeError(f"reachable_units does not know layer {layer!r}")
        per_layer.append(reach)
    return per_layer


def _conv_reach(layer, reach_in, mask, area):
    """reach_in (C, H, W) bool -> (O, Ho, Wo) bool; a convolution of booleans (as counts > 0)."""
    o, c, k = layer.n_out, layer.n_in, layer.kernel_size
    _, ho, wo = layer.output_shape(reach_in.shape)
    cols = kernels.im2col_numpy(reach_in[None].astype(np.float64), k, k, layer.stride, layer.padding)  # (P, C*k*k)
    active = (mask != 0).astype(np.float64).reshape(o, c, k * k)
    if area is None:
        hits = (cols @ active.reshape(o, -1).T) > 0  # (P, O)
    else:
        cols = cols.reshape(-1, c, k * k)
        kept = (area != 0).reshape(o, c, ho * wo)
        hits = np.zeros((ho * wo, o), dtype=bool)
        for i in range(c):
            hits |= ((cols[:, i, :] @ active[:, i, :].T) > 0) & kept[:, i, :].T
    return hits.T.reshape(o, ho, wo)


def _longest_safe_prefix(net, requested, reach_after):
    """The largest k <= requested whose first-k removals keep every reachable output reachable.

    reach_after(k) -> bool (n_outputs,): output reachability with the first k removals
    applied. Removing more connections can only remove paths, so reachability is
    monotone in k and a binary search finds k exactly.
    Returns (k, output units the (k+1)-th removal would disconnect).
    """
    before = reachable_units(net)[-1].reshape(-1)

    def safe(k):
        return not np.any(before & ~reach_after(k).reshape(-1))

    if safe(requested):
        return requested, []
    lo, hi = 0, requested  # safe(0) holds: nothing removed
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if safe(mid):
            lo = mid
        else:
            hi = mid
    lost = np.flatnonzero(before & ~reach_after(hi).reshape(-1))
    return lo, lost.tolist()


# ========================================================= connection pruning
def _check_fraction(fraction):
    if not (isinstance(fraction, (int, float, np.integer, np.floating)) and 0.0 <= fraction < 1.0):
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
    return float(fraction)


def _count(fraction, n):
    """floor(fraction * n), robust to float rounding (see the module docstring)."""
    return int(math.floor(fraction * n + 1e-9))


def _smallest_first(scores, candidates):
    """Flat indices where ``candidates`` holds, by ascending score; ties: lowest flat index first."""
    flat = np.flatnonzero(candidates)
    return flat[np.argsort(scores.reshape(-1)[flat], kind="stable")]


def _plan_magnitude(layer, fraction, protect):
    """(prune order of the unprotected active connections, requested count, active count)."""
    if not isinstance(layer, MaskedLayer):
        raise TypeError(f"can only prune a Dense or Conv2d layer, got {layer!r}")
    fraction = _check_fraction(fraction)
    active = layer.mask != 0
    if protect is None:
        protect = np.zeros(active.shape, dtype=bool)
    else:
        protect = np.asarray(protect)
        if protect.dtype != bool or protect.shape != active.shape:
            raise ValueError(f"protect must be a bool array of the weight's shape {active.shape}, "
                             f"got {protect.dtype} {protect.shape}")
    n_active = int(active.sum())
    order = _smallest_first(np.abs(layer.weight), active & ~protect)
    return order, _count(fraction, n_active), n_active


def _deactivate(layer, flat_indices):
    where = np.unravel_index(flat_indices, layer.mask.shape)
    layer.mask[where] = 0
    layer.weight[where] = 0


def _magnitude_report(position, fraction, layer, order, k, requested, n_active, reason):
    removed = order[:k]
    threshold = float(np.abs(layer.weight).reshape(-1)[removed].max()) if k else None
    _deactivate(layer, removed)
    return PruneReport(layer=position, fraction=float(fraction), active_before=n_active, removed=int(k),
                       threshold=threshold, stopped_short=k < requested, reason=reason, requested=requested)


def prune_by_magnitude(layer, fraction, protect=None, position=-1):
    """Deactivate the ``fraction`` of ``layer``'s active connections with the smallest |w|.

    count = floor(fraction * active connections); ties break by lowest flat index.
    W and M are set to 0 there. protect: optional bool array of the weight's shape;
    protected connections are never pruned (if fewer unprotected active connections
    than the count exist, all of them go and the report says it stopped short).
    No connectivity guard here: ``prune_network`` adds it. position: only labels the
    report (the layer's index in its network, if known).
    """
    order, requested, n_active = _plan_magnitude(layer, fraction, protect)
    k = min(requested, len(order))
    reason = "" if k == requested else f"only {len(order)} unprotected active connections"
    return _magnitude_report(position, fraction, layer, order, k, requested, n_active, reason)


def _strongest_input_per_unit(layer):
    """Bool mask (weight's shape) of each output unit's largest-|w| active input (ties: lowest index)."""
    active = (layer.mask != 0).reshape(layer.n_out, -1)
    score = np.where(active, np.abs(layer.weight).reshape(layer.n_out, -1), -1.0)
    protect = np.zeros(active.shape, dtype=bool)
    units = np.flatnonzero(active.any(axis=1))
    protect[units, score[units].argmax(axis=1)] = True
    return protect.reshape(layer.mask.shape)


def _per_layer_fractions(fractions, n_layers):
    if isinstance(fractions, (int, float, np.integer, np.floating)):
        fractions = [fractions] * n_layers
    fractions = list(fractions)
    if len(fractions) != n_layers:
        raise ValueError(f"fractions must be a number or one per masked layer ({n_layers}), got {len(fractions)}")
    return [_check_fraction(f) for f in fractions]


def prune_network(net, fractions):
    """One round of magnitude pruning over every masked layer, in order; returns one report each.

    fractions: a number (every layer) or one per masked layer, e.g.
    ``DEFAULT_PRUNE_FRACTIONS["lenet-300-100"]``. Each layer loses the requested
    smallest-|w| connections (``prune_by_magnitude``), with two guards:

    * each unit of the output layer keeps its largest-|w| active input (it is
      protected), so no output unit loses its last input;
    * no output unit that the input reaches now may become unreachable
      (``reachable_units``). If removing the requested count would cut one off,
      the layer prunes the longest run of its smallest connections that does not
      (found by binary search: reachability only shrinks as more go), and its
      report says stopped_short with the reason.

    Hidden units left without inputs or outputs stay; ``remove_dead_neurons`` removes them.
    """
    layers = net.masked_layers()
    per_layer = _per_layer_fractions(fractions, len(layers))
    reports = []
    for index, ((position, layer), fraction) in enumerate(zip(layers, per_layer)):
        protect = _strongest_input_per_unit(layer) if index == len(layers) - 1 else None
        order, requested, n_active = _plan_magnitude(layer, fraction, protect)
        wanted = min(requested, len(order))

        def reach_after(k, position=position, layer=layer, order=order):
            mask = layer.mask.copy()
            mask[np.unravel_index(order[:k], mask.shape)] = 0
            return reachable_units(net, masks={position: mask})[-1]

        k, lost = _longest_safe_prefix(net, wanted, reach_after)
        reasons = []
        if wanted < requested:
            reasons.append(f"each output unit keeps its strongest input: only {len(order)} prunable")
        if k < wanted:
            reasons.append(f"pruning more than {k} would disconnect output unit(s) {lost} from the input")
        reports.append(_magnitude_report(position, fraction, layer, order, k, requested, n_active, "; ".join(reasons)))
    return reports


# ============================================================ neuron removal
def _hidden_positions(net):
    return [position for position, _ in net.masked_layers()[:-1]]


def _pair_active(layer):
    """Conv2d: (O, C) bool, kernel (o, i) has an active weight and keeps some area."""
    pair = (layer.mask != 0).any(axis=(2, 3))
    if layer.area_mask is not None:
        pair &= (layer.area_mask != 0).any(axis=(2, 3))
    return pair


def _has_input(layer):
    """Bool per output unit: some active connection feeds it."""
    if isinstance(layer, Conv2d):
        return _pair_active(layer).any(axis=1)
    return (layer.mask != 0).any(axis=1)


def _has_output(net, position):
    """Bool per output unit of layer ``position``: some active connection of the next masked layer reads it."""
    nxt, block = next_masked(net, position)
    following = net.layers[nxt]
    if isinstance(following, Conv2d):
        return _pair_active(following).any(axis=0)
    return (following.mask != 0).reshape(following.n_out, -1, block).any(axis=(0, 2))


def _as_seen_by_next(net, position, values):
    """The constant outputs ``values`` (one per unit) after the layers between ``position`` and the next masked layer."""
    nxt, _ = next_masked(net, position)
    for layer in net.layers[position + 1:nxt]:
        if isinstance(layer, ReLU):
            values = np.maximum(values, 0)
        elif not isinstance(layer, (MaxPool2d, Flatten)):  # max of a constant map is that constant
            raise NotImplementedError(f"cannot pass a constant unit through {layer!r}")
    return values


def _bias_shift(net, position, units, constants):
    """What units ``units`` of layer ``position``, each outputting a constant, add to the next layer.

    Returns (shift of the next layer's bias (n_out,), bool per unit: foldable exactly).
    Dense next: constant * the unit's outgoing weights (all H*W of them after a Flatten).
    Conv next: a constant input map adds constant * (sum of the kernel) at every
    output position whose window lies inside the input and whose area keeps that
    kernel. With padding 0 every window lies inside, so the shift is one number per
    output map when each kernel's area is all kept or all pruned; otherwise (padding,
    or a partly pruned area) the shift depends on the position and the unit is not
    foldable (unless its constant is 0) **[ours]**.
    """
    nxt, block = next_masked(net, position)
    following = net.layers[nxt]
    if len(units) == 0:
        return np.zeros(following.n_out), np.zeros(0, dtype=bool)
    weight = following.effective_weight().astype(np.float64)
    constants = np.asarray(constants, dtype=np.float64)
    if isinstance(following, Dense):
        outgoing = weight.reshape(following.n_out, -1, block)[:, units, :].sum(axis=2)  # (n_out, len(units))
        return outgoing @ constants, np.ones(len(units), dtype=bool)
    kernel_sums = weight[:, units].sum(axis=(2, 3))  # (n_out, len(units))
    if following.area_mask is None:
        kept = np.ones_like(kernel_sums)
        uniform = np.ones(kernel_sums.shape, dtype=bool)
    else:
        area = (following.area_mask[:, units] != 0).reshape(following.n_out, len(units), -1)
        kept = area[:, :, 0].astype(np.float64)
        uniform = (area.min(axis=2) == area.max(axis=2)) | (kernel_sums == 0)
    foldable = (constants == 0) | ((following.padding == 0) & uniform.all(axis=0))
    shift = (kernel_sums * kept) @ np.where(foldable, constants, 0.0)
    return shift, foldable


def _removal_entry(layer, position):
    return {"position": position, "type": type(layer).__name__, "width_before": layer.n_out,
            "width_after": layer.n_out, "removed": 0, "removed_grown": 0, "removed_seed": 0}


def _remove_units(net, position, remove, optimizer, entry):
    layer = net.layers[position]
    entry["removed"] += int(remove.sum())
    entry["removed_grown"] += int(layer.grown[remove].sum())
    entry["removed_seed"] += int((~layer.grown[remove]).sum())
    keep_units(net, position, np.flatnonzero(~remove), optimizer)
    entry["width_after"] = net.layers[position].n_out


def remove_dead_neurons(net, optimizer=None):
    """Delete hidden units with no active inputs or no active outputs; the function is preserved.

    Hidden units are the rows of every masked layer but the last (Dense neurons,
    Conv2d feature maps); the output layer never shrinks. Repeats over the layers
    until nothing changes (removing a unit can leave others without inputs or
    outputs). The optimizer's momentum buffers shrink with the layers.

    * No active outputs: the unit affects nothing; it is dropped.
    * No active inputs (but outputs): it outputs a constant, relu(bias) for a Dense
      unit before a ReLU, its bias everywhere for a conv map (max-pool of a constant
      map is the constant). That constant times its outgoing weights is folded into
      the next layer's bias before the unit goes **[ours]** (see ``_bias_shift`` for
      when that is exact after a convolution; a unit it would not be exact for stays).
    * At least one unit of each layer stays, the lowest-index one, even if dead **[ours]**.

    Per-layer counts in the report: removed_no_input, removed_no_output, and
    dead_kept (units still without inputs or outputs at the end: unfoldable, or the last).
    """
    entries = {}
    for position in _hidden_positions(net):
        entries[position] = _removal_entry(net.layers[position], position)
        entries[position].update(removed_no_input=0, removed_no_output=0, dead_kept=0)
    rounds = 0
    changed = True
    while changed:
        changed = False
        for position in _hidden_positions(net):
            layer, entry = net.layers[position], entries[position]
            no_output = ~_has_output(net, position)
            no_input = ~_has_input(layer) & ~no_output
            units = np.flatnonzero(no_input)
            constants = _as_seen_by_next(net, position, layer.bias[units].astype(np.float64))
            shift, foldable = _bias_shift(net, position, units, constants)
            remove = no_output.copy()
            remove[units[foldable]] = True
            if remove.all():
                remove[0] = False
            if not remove.any():
                continue
            folded = remove[units]  # the no-input units that go (all foldable ones, unless one was kept)
            if not folded.all():
                shift, _ = _bias_shift(net, position, units[folded], constants[folded])
            following = net.layers[next_masked(net, position)[0]]
            following.bias += shift.astype(following.bias.dtype)
            entry["removed_no_input"] += int(folded.sum())
            entry["removed_no_output"] += int(remove[no_output].sum())
            _remove_units(net, position, remove, optimizer, entry)
            changed = True
        rounds += changed
    for position in _hidden_positions(net):
        layer = net.layers[position]
        entries[position]["dead_kept"] = int((~_has_input(layer) | ~_has_output(net, position)).sum())
    return NeuronRemovalReport(layers=list(entries.values()), criterion="dead", rounds=rounds)


def layer_input(net, position, x, batch_size=1000):
    """The input of layer ``position`` for network input x (N, *net.input_shape), computed in batches."""
    if position == 0:
        return x
    parts = []
    for start in range(0, len(x), batch_size):
        h = x[start:start + batch_size]
        for layer in net.layers[:position]:
            h = layer.forward(h)
        parts.append(h)
    return np.concatenate(parts)


def prune_neurons_by_activation(net, x, threshold, optimizer=None, batch_size=1000):
    """Remove hidden Dense units whose mean |output| over x is below ``threshold`` (the paper's
    "magnitude of a neuron output").

    x: (N, *net.input_shape), the data to measure on. The output measured is what the
    next layer reads (after the ReLU). Layers are done in order, each measured after
    the previous one shrank. A removed unit's mean output over x is folded into the
    next layer's bias: the best constant stand-in for it **[ours]**, exact when its
    output never varies. If every unit of a layer falls below, the one with the largest
    mean |output| stays **[ours]**. Per-layer report keys add threshold and
    removed_low_activation.
    """
    if not (isinstance(threshold, (int, float, np.floating)) and threshold >= 0):
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    if len(x) == 0:
        raise ValueError("x must hold at least one example")
    entries = []
    for position in _hidden_positions(net):
        layer = net.layers[position]
        if not isinstance(layer, Dense):
            continue
        nxt, block = next_masked(net, position)
        entry = _removal_entry(layer, position)
        entry.update(threshold=float(threshold), removed_low_activation=0)
        seen = layer_input(net, nxt, x, batch_size).reshape(len(x), layer.n_out, block).astype(np.float64)
        magnitude = np.abs(seen).mean(axis=(0, 2))
        remove = magnitude < threshold
        if remove.all():
            remove[np.argmax(magnitude)] = False
        if remove.any():
            following = net.layers[nxt]
            mean_seen = seen.mean(axis=0)[remove]  # (removed, block)
            weight = following.effective_weight().astype(np.float64).reshape(following.n_out, -1, block)
            shift = np.einsum("oub,ub->o", weight[:, np.flatnonzero(remove), :], mean_seen)
            following.bias += shift.astype(following.bias.dtype)
            entry["removed_low_activation"] = int(remove.sum())
            _remove_units(net, position, remove, optimizer, entry)
        entries.append(entry)
    return NeuronRemovalReport(layers=entries, criterion="activation", rounds=1)


# ============================================================ partial areas
def area_contributions(layer, x, batch_size=256):
    """Mean over the batch of |(I_i * K_oi)(p)|: how much input map i adds to output map o at p.

    layer: Conv2d; x: its input (N, in_c, H, W). K is the effective kernel W*M; the
    area mask is ignored (this is what the kernel would add there).
    Returns (out_c, in_c, Ho, Wo), float64.
    """
    if not isinstance(layer, Conv2d):
        raise TypeError(f"area_contributions needs a Conv2d layer, got {layer!r}")
    if x.ndim != 4 or x.shape[1] != layer.n_in or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch (N, {layer.n_in}, H, W) for {layer!r}, got {x.shape}")
    o, c, k = layer.n_out, layer.n_in, layer.kernel_size
    _, ho, wo = layer.output_shape(x.shape[1:])
    kernel = layer.effective_weight().reshape(o, c, k * k)
    total = np.zeros((o, c, ho * wo))
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        cols = kernels.im2col(chunk, k, k, layer.stride, layer.padding).reshape(len(chunk), ho * wo, c, k * k)
        for i in range(c):
            total[:, i, :] += np.abs(cols[:, :, i, :] @ kernel[:, i, :].T).sum(axis=0).T
    return (total / len(x)).reshape(o, c, ho, wo)


def prune_partial_area(net, position, fraction, x, batch_size=256):
    """Partial-area convolution: prune the ``fraction`` of kept (o, i, p) with the smallest
    mean |contribution| (``area_contributions``) from conv layer ``position``.

    x: the layer's input (N, in_c, H, W), as for ``area_contributions``; for the
    first layer that is the network input, else ``layer_input(net, position, x)``.
    Candidates are the kept (o, i, p) whose kernel (o, i) has an active weight (a
    kernel with no active weight adds nothing anywhere) **[ours]**; count =
    floor(fraction * candidates); ties break by lowest flat index of (o, i, p). Sets
    the layer's area_mask to 0 there (creating it, all ones, if None). A kernel whose
    whole area is gone has its weights deactivated **[ours]**. The same connectivity
    guard as ``prune_network`` applies: no output unit the input reaches may be cut off.
    Returns an ``AreaPruneReport`` (threshold: the largest mean |contribution| removed).
    """
    layer = net.layers[position]
    if not isinstance(layer, Conv2d):
        raise TypeError(f"layer {position} of {net.name} is {layer!r}, not a Conv2d")
    fraction = _check_fraction(fraction)
    x = np.asarray(x)
    expected = net.shapes()[position][0]
    if tuple(x.shape[1:]) != expected or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of layer {position}'s input (N, {', '.join(map(str, expected))}), "
                         f"got {x.shape}")
    scores = area_contributions(layer, x, batch_size)
    area = np.ones(scores.shape, layer.weight.dtype) if layer.area_mask is None else layer.area_mask.copy()
    kernel_active = (layer.mask != 0).any(axis=(2, 3))
    candidates = (area != 0) & kernel_active[:, :, None, None]
    n_kept = int(candidates.sum())
    requested = _count(fraction, n_kept)
    order = _smallest_first(scores, candidates)

    def reach_after(k):
        trial = area.copy()
        trial[np.unravel_index(order[:k], trial.shape)] = 0
        return reachable_units(net, area_masks={position: trial})[-1]

    k, lost = _longest_safe_prefix(net, requested, reach_after)
    removed = order[:k]
    area[np.unravel_index(removed, area.shape)] = 0
    layer.area_mask = area
    emptied = kernel_active & ~(area != 0).any(axis=(2, 3))
    layer.mask[emptied] = 0
    layer.weight[emptied] = 0
    reason = f"pruning more than {k} would disconnect output unit(s) {lost} from the input" if k < requested else ""
    return AreaPruneReport(layer=position, fraction=fraction, active_before=n_kept, removed=int(k),
                           threshold=float(scores.reshape(-1)[removed].max()) if k else None,
                           stopped_short=k < requested, reason=reason, requested=requested,
                           kernels_deactivated=int(emptied.sum()))
