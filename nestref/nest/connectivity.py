"""What pruning must not break: reachability, and which units are dead.

These are the guards around the paper's pruning rules (``nestref.nest.prune``), not rules
of the paper:

    reachability  ``reachable_units``: which units the input still reaches;
                  ``longest_safe_prefix``: how much of a removal order keeps every
                  reachable output unit reachable **[ours]**
                  (docs/nest.md#ours-connectivity-guard)
    dead units    ``has_input``, ``has_output``: units with no active inputs / outputs;
                  ``bias_shift``: what a unit with a constant output adds to the next
                  layer, so that removing it can fold that into the next layer's bias
                  **[ours]** (docs/nest.md#ours-bias-folding)

Nothing here edits a network.
"""
import numpy as np

from ..core import kernels
from ..core.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from ..core.network import next_masked


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
            as_float = reach[None].astype(np.float64)
            pooled, _ = kernels.maxpool_forward_numpy(as_float, layer.kernel_size, layer.stride)
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
    # (P, C*k*k)
    cols = kernels.im2col_numpy(reach_in[None].astype(np.float64), k, k, layer.stride,
                                layer.padding)
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


def longest_safe_prefix(net, requested, reach_after):
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


# ================================================================= dead units
def hidden_positions(net):
    """Positions of the masked layers whose units can be removed: every one but the last."""
    return [position for position, _ in net.masked_layers()[:-1]]


def pair_active(layer):
    """Conv2d: (O, C) bool, kernel (o, i) has an active weight and keeps some area."""
    pair = (layer.mask != 0).any(axis=(2, 3))
    if layer.area_mask is not None:
        pair &= (layer.area_mask != 0).any(axis=(2, 3))
    return pair


def has_input(layer):
    """Bool per output unit: some active connection feeds it."""
    if isinstance(layer, Conv2d):
        return pair_active(layer).any(axis=1)
    return (layer.mask != 0).any(axis=1)


def has_output(net, position):
    """Bool per unit of layer ``position``: some active connection of the next layer reads it."""
    nxt, block = next_masked(net, position)
    following = net.layers[nxt]
    if isinstance(following, Conv2d):
        return pair_active(following).any(axis=0)
    return (following.mask != 0).reshape(following.n_out, -1, block).any(axis=(0, 2))


def as_seen_by_next(net, position, values):
    """The constant outputs ``values`` (one per unit of layer ``position``) as the next masked
    layer sees them, after the layers in between."""
    nxt, _ = next_masked(net, position)
    for layer in net.layers[position + 1:nxt]:
        if isinstance(layer, ReLU):
            values = np.maximum(values, 0)
        elif not isinstance(layer, (MaxPool2d, Flatten)):  # max of a constant map is that constant
            raise NotImplementedError(f"cannot pass a constant unit through {layer!r}")
    return values


def bias_shift(net, position, units, constants):
    """What ``units`` of layer ``position``, each outputting a constant, add to the next layer.

    Returns (shift of the next layer's bias (n_out,), bool per unit: foldable exactly).
    Dense next: constant * the unit's outgoing weights (all H*W of them after a Flatten).
    Conv next: a constant input map adds constant * (sum of the kernel) at every
    output position whose window lies inside the input and whose area keeps that
    kernel. With padding 0 every window lies inside, so the shift is one number per
    output map when each kernel's area is all kept or all pruned; otherwise (padding,
    or a partly pruned area) the shift depends on the position and the unit is not
    foldable (unless its constant is 0) **[ours]** (docs/nest.md#ours-bias-folding).
    """
    nxt, block = next_masked(net, position)
    following = net.layers[nxt]
    if len(units) == 0:
        return np.zeros(following.n_out), np.zeros(0, dtype=bool)
    weight = following.effective_weight().astype(np.float64)
    constants = np.asarray(constants, dtype=np.float64)
    if isinstance(following, Dense):
        # (n_out, len(units))
        outgoing = weight.reshape(following.n_out, -1, block)[:, units, :].sum(axis=2)
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
