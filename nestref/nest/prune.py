"""Pruning: NeST's second half.

Read next to the pruning section of Dai, Yin & Jha (NeST, IEEE Trans. Computers 2019)
and docs/nest.md ("Pruning"). The rules first, as pure functions on arrays:

    ``smallest_first``       the removal order: ascending score, ties to the lowest index
    ``magnitude_prune``      connection pruning: the ``fraction`` of active |w| that is smallest
    ``strongest_input_per_unit``  what an output unit keeps **[ours]**
                             (docs/nest.md#ours-connectivity-guard)
    ``area_contributions``   partial-area convolution: mean |(I_i * K_oi)(p)|
    ``area_prune``           partial-area convolution: the smallest contributions go
    ``area_prune_by_flops``  the same by contribution per FLOP, a share of the FLOPs a round
                             **[ours]** (docs/nest.md#ours-area-by-flops)

then the drivers, which check their arguments at the door, call the rules and write
the result into a network: ``prune_by_magnitude`` (one layer), ``prune_network`` (every
layer, with the connectivity guard of ``nestref.nest.connectivity``), ``prune_partial_area``,
``remove_dead_neurons`` (units with no inputs or no outputs; the function is preserved),
``prune_neurons_by_activation`` (optional). Drivers edit the network in place and
return a report (a dataclass with ``as_dict()``). Pruning only ever deactivates: a
connection set to mask 0 here is never set back to 1, and W is set to 0 wherever M is.

Counts are ``floor(fraction * n)`` with the shared 1e-9 slack of ``nestref.nest.rounding``
**[ours]** (docs/nest.md#ours-count-rounding).
"""
from dataclasses import asdict, dataclass, field

import numpy as np

from ..checks import check_fraction, check_number, is_number
from ..core import kernels
from ..core.layers import Conv2d, Dense, MaskedLayer, input_map_product, split_by_input_map
from ..core.network import keep_units, next_masked
from ..errors import InvalidArgumentError
from . import architectures
from .connectivity import (
    as_seen_by_next,
    bias_shift,
    has_input,
    has_output,
    hidden_positions,
    longest_safe_prefix,
    reachable_units,
)
from .rounding import floor_count

__all__ = [
    "DEFAULT_PRUNE_FRACTIONS", "smallest_first", "magnitude_prune", "strongest_input_per_unit",
    "area_contributions", "area_prune", "contribution_per_flop", "area_prune_by_flops",
    "prune_by_magnitude",
    "prune_network", "layer_area_contributions",
    "prune_partial_area", "remove_dead_neurons", "layer_input", "prune_neurons_by_activation",
    "reachable_units", "PruneReport", "AreaPruneReport", "NeuronRemovalReport",
]

# Per-masked-layer fractions of one pruning round, by architecture [ours]
# (docs/nest.md#ours-prune-fractions): the values and their reasons are in
# nestref.nest.architectures (Architecture.prune_fractions).
DEFAULT_PRUNE_FRACTIONS = {
    name: entry.prune_fractions for name, entry in architectures.TABLE.items()
}


# ================================================================= the rules
def smallest_first(scores, candidates):
    r"""The removal order: flat indices j with candidates_j, by ascending (score_j, j).

    scores, candidates: same shape (any); returns (number of candidates,) int64.
    """
    flat = np.flatnonzero(candidates)
    return flat[np.argsort(scores.reshape(-1)[flat], kind="stable")]


def magnitude_prune(weight, mask, fraction, protect=None):
    r"""Connection pruning: deactivate the ``fraction`` of active connections with the smallest |w|.

    With A = {j : M_j != 0} the active connections and P the protected ones,

    .. math::
        k = \min\big(\lfloor \gamma\,|A| \rfloor,\ |A \setminus P|\big), \qquad
        M'_j = 0 \text{ for the } k \text{ smallest } |W_j|,\ j \in A \setminus P

    ties going to the lowest flat index; the threshold reported is the largest |w| removed.

    weight, mask: (O, I) or (O, C, k, k); fraction: gamma in [0, 1); protect: bool of
    the same shape or None. returns (mask after, same dtype; threshold: float, None if k == 0).
    """
    active = mask != 0
    order = smallest_first(np.abs(weight), active if protect is None else active & ~protect)
    removed = order[:min(floor_count(fraction, int(active.sum())), order.size)]
    mask_after = mask.copy()
    mask_after.flat[removed] = 0
    return mask_after, float(np.abs(weight).reshape(-1)[removed].max()) if removed.size else None


def strongest_input_per_unit(weight, mask):
    r"""What each output unit keeps **[ours]** (docs/nest.md#ours-connectivity-guard).

    Bool of the weight's shape, True at :math:`\arg\max_{j:\,M_{oj} \ne 0} |W_{oj}|` for each
    unit o with an active input (ties: lowest index). weight, mask: (O, ...).
    """
    active = (mask != 0).reshape(len(mask), -1)
    score = np.where(active, np.abs(weight).reshape(len(weight), -1), -1.0)
    protect = np.zeros(active.shape, dtype=bool)
    units = np.flatnonzero(active.any(axis=1))
    protect[units, score[units].argmax(axis=1)] = True
    return protect.reshape(mask.shape)


def area_contributions(kernel, x, stride=1, padding=0, batch_size=256):
    r"""Partial-area convolution: how much input map i adds to output map o at position p.

    .. math::
        S_{oip} = \frac{1}{N} \sum_{b} \big|(x_{b,i} \star K_{oi})(p)\big|

    kernel: (O, C, k, k), the effective kernel W*M (no area mask: this is what the
    kernel would add there); x: (N, C, H, W), the layer's input.
    returns S: (O, C, Ho, Wo), float64.
    """
    o, c, k, _ = kernel.shape
    ho, wo = (kernels.output_size(size, k, stride, padding) for size in x.shape[2:])
    total = np.zeros((o, c, ho * wo))
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        cols, per_map = split_by_input_map(
            kernels.im2col(chunk, k, k, stride, padding), kernel, len(chunk)
        )
        for i in range(c):
            total[:, i, :] += np.abs(input_map_product(cols, per_map, i)).sum(axis=0).T
    return (total / len(x)).reshape(o, c, ho, wo)


def area_prune(scores, area, mask, fraction):
    r"""Partial-area convolution: drop the ``fraction`` of kept (o, i, p) with the smallest S_oip.

    Candidates are the kept positions of kernels with an active weight (a kernel with
    none adds nothing anywhere) **[ours]** (docs/nest.md#ours-area-candidates):

    .. math::
        C = \{(o,i,p) : A_{oip} \ne 0,\ \exists j\, M_{oij} \ne 0\}, \qquad
        A'_{oip} = 0 \text{ for the } \lfloor \gamma |C| \rfloor \text{ smallest } S_{oip} \in C

    scores, area: (O, C, Ho, Wo); mask: the kernel mask (O, C, k, k); fraction in [0, 1).
    returns (area after, same dtype; threshold: the largest S removed, None if none).
    """
    candidates = (area != 0) & (mask != 0).any(axis=(2, 3))[:, :, None, None]
    removed = smallest_first(scores, candidates)[:floor_count(fraction, int(candidates.sum()))]
    area_after = area.copy()
    area_after.flat[removed] = 0
    return area_after, float(scores.reshape(-1)[removed].max()) if removed.size else None


def contribution_per_flop(scores, mask):
    """S_oip / n_oi: what a kept position adds per multiply-add it costs, n_oi being the
    active weights of kernel (o, i) **[ours]** (docs/nest.md#ours-area-by-flops).

    scores: (O, C, Ho, Wo); mask: the kernel mask (O, C, k, k). A kernel with no active
    weight keeps its S (it is never a candidate). Returns (O, C, Ho, Wo).
    """
    return scores / np.maximum((mask != 0).sum(axis=(2, 3))[:, :, None, None], 1)


def area_prune_by_flops(scores, area, mask, fraction):
    r"""Partial-area convolution by cost **[ours]** (docs/nest.md#ours-area-by-flops): drop the
    kept (o, i, p) of the smallest contribution per FLOP, up to ``fraction`` of the layer's
    area FLOPs.

    A position of kernel (o, i) costs its n_oi active weights, so with the candidates C of
    ``area_prune``, the order is by S_oip / n_oi and the cut is the longest prefix R with

    .. math::
        \sum_{(o,i,p) \in R} n_{oi} \ \le\ \gamma \sum_{(o,i,p) \in C} n_{oi}

    scores, area: (O, C, Ho, Wo); mask: the kernel mask (O, C, k, k); fraction in [0, 1).
    returns (area after, same dtype; threshold: the largest S / n removed, None if none).
    """
    cost = np.broadcast_to((mask != 0).sum(axis=(2, 3))[:, :, None, None], scores.shape)
    candidates = (area != 0) & (cost > 0)
    per_flop = contribution_per_flop(scores, mask)
    order = smallest_first(per_flop, candidates)
    spent = np.cumsum(cost.reshape(-1)[order])
    goal = floor_count(fraction, int(spent[-1])) if spent.size else 0
    removed = order[:int(np.searchsorted(spent, goal, side="right"))]
    area_after = area.copy()
    area_after.flat[removed] = 0
    return area_after, float(per_flop.reshape(-1)[removed].max()) if removed.size else None


# ================================================================ the drivers
def _check_layer_fraction(layer, fraction, protect=None):
    if not isinstance(layer, MaskedLayer):
        raise TypeError(f"can only prune a Dense or Conv2d layer, got {layer!r}")
    fraction = check_fraction("fraction", fraction, include_zero=True, include_one=False)
    if protect is not None:
        protect = np.asarray(protect)
        if protect.dtype != bool or protect.shape != layer.mask.shape:
            raise InvalidArgumentError(f"protect must be a bool array of the weight's shape "
                                       f"{layer.mask.shape}, got {protect.dtype} {protect.shape}")
    return fraction, protect


def _deactivate(layer, flat_indices):
    where = np.unravel_index(flat_indices, layer.mask.shape)
    layer.mask[where] = 0
    layer.weight[where] = 0


def prune_by_magnitude(layer, fraction, protect=None, position=-1):
    """``magnitude_prune`` on one layer: W and M are set to 0 where it removes.

    count = floor(fraction * active connections); ties break by lowest flat index.
    protect: optional bool array of the weight's shape; protected connections are
    never pruned (if fewer unprotected active connections than the count exist, all
    of them go and the report says it stopped short). No connectivity guard here:
    ``prune_network`` adds it. position: only labels the report.
    """
    fraction, protect = _check_layer_fraction(layer, fraction, protect)
    active = layer.mask != 0
    prunable = active if protect is None else active & ~protect
    n_active, n_prunable = int(active.sum()), int(prunable.sum())
    mask_after, threshold = magnitude_prune(layer.weight, layer.mask, fraction, protect)
    removed = active & (mask_after == 0)
    layer.mask[removed] = 0
    layer.weight[removed] = 0
    k, requested = int(removed.sum()), floor_count(fraction, n_active)
    reason = "" if k == requested else f"only {n_prunable} unprotected active connections"
    return PruneReport(layer=position, fraction=fraction, active_before=n_active, removed=k,
                       threshold=threshold, stopped_short=k < requested, reason=reason,
                       requested=requested)


def _per_layer_fractions(fractions, n_layers):
    if is_number(fractions):
        fractions = [fractions] * n_layers
    fractions = list(fractions)
    if len(fractions) != n_layers:
        raise InvalidArgumentError(f"fractions must be a number or one per masked layer "
                                   f"({n_layers}), got {len(fractions)}")
    return [check_fraction("fraction", f, include_zero=True, include_one=False) for f in fractions]


def _guarded_magnitude_prune(net, position, layer, fraction, protect):
    """``magnitude_prune``, cut to the longest prefix of its removals that keeps every
    reachable output unit reachable. Returns (removals kept, smallest |w| first; why cut)."""
    mask_after, _ = magnitude_prune(layer.weight, layer.mask, fraction, protect)
    removals = smallest_first(np.abs(layer.weight), (layer.mask != 0) & (mask_after == 0))

    def reach_after(k):
        mask = layer.mask.copy()
        mask[np.unravel_index(removals[:k], mask.shape)] = 0
        return reachable_units(net, masks={position: mask})[-1]

    k, lost = longest_safe_prefix(net, removals.size, reach_after)
    return removals[:k], _disconnect_reason(k, lost)


def _disconnect_reason(k, lost):
    if not lost:
        return ""
    return f"pruning more than {k} would disconnect output unit(s) {lost} from the input"


def prune_network(net, fractions):
    """One round of magnitude pruning over every masked layer, in order; returns one report each.

    fractions: a number (every layer) or one per masked layer, e.g.
    ``DEFAULT_PRUNE_FRACTIONS["lenet-300-100"]``. Each layer loses the connections
    ``magnitude_prune`` picks, with two guards **[ours]** (docs/nest.md#ours-connectivity-guard):

    * each unit of the output layer keeps its largest-|w| active input
      (``strongest_input_per_unit`` is protected), so no output unit loses its last input;
    * no output unit that the input reaches now may become unreachable
      (``reachable_units``). If the removals would cut one off, the layer prunes the
      longest run of its smallest ones that does not (binary search: reachability
      only shrinks as more go), and its report says stopped_short with the reason.

    Hidden units left without inputs or outputs stay; ``remove_dead_neurons`` removes them.
    """
    layers = net.masked_layers()
    per_layer = _per_layer_fractions(fractions, len(layers))
    reports = []
    for index, ((position, layer), fraction) in enumerate(zip(layers, per_layer, strict=True)):
        is_output = index == len(layers) - 1
        protect = strongest_input_per_unit(layer.weight, layer.mask) if is_output else None
        active = layer.mask != 0
        n_active, requested = int(active.sum()), floor_count(fraction, int(active.sum()))
        removed, cut = _guarded_magnitude_prune(net, position, layer, fraction, protect)
        reasons = [cut] if cut else []
        n_prunable = int((active if protect is None else active & ~protect).sum())
        if n_prunable < requested:
            reasons.insert(0, f"each output unit keeps its strongest input: only {n_prunable} "
                              f"prunable")
        threshold = float(np.abs(layer.weight).reshape(-1)[removed[-1]]) if removed.size else None
        _deactivate(layer, removed)
        reports.append(PruneReport(layer=position, fraction=float(fraction), active_before=n_active,
                                   removed=int(removed.size), threshold=threshold,
                                   stopped_short=removed.size < requested,
                                   reason="; ".join(reasons), requested=requested))
    return reports


def layer_area_contributions(layer, x, batch_size=256):
    """``area_contributions`` of a Conv2d layer on its input.

    x: (N, in_c, H, W) -> (out_c, in_c, Ho, Wo)."""
    if not isinstance(layer, Conv2d):
        raise TypeError(f"area_contributions needs a Conv2d layer, got {layer!r}")
    if x.ndim != 4 or x.shape[1] != layer.n_in or len(x) == 0:
        raise InvalidArgumentError(f"x must be a non-empty batch (N, {layer.n_in}, H, W) for "
                                   f"{layer!r}, got {x.shape}")
    return area_contributions(layer.effective_weight(), x, layer.stride, layer.padding, batch_size)


def prune_partial_area(net, position, fraction, x, batch_size=256, rank="contribution"):
    """Partial-area convolution on conv layer ``position``: ``area_prune`` of its
    ``area_contributions`` (``area_prune_by_flops`` with rank="flops" **[ours]**), under the
    connectivity guard of ``prune_network``.

    x: the layer's input (N, in_c, H, W); for the first layer that is the network
    input, else ``net.forward_until(position, x)``. Sets the layer's area_mask to 0
    where ``area_prune`` removes (creating it, all ones, if None); if that would cut an
    output unit the input reaches off, only the longest safe run of the smallest goes.
    A kernel whose whole area is gone has its weights deactivated **[ours]**
    (docs/nest.md#ours-area-candidates).
    Returns an ``AreaPruneReport`` (threshold: the largest mean |contribution| removed; per
    FLOP with rank="flops").
    """
    layer = net.layers[position]
    if not isinstance(layer, Conv2d):
        raise TypeError(f"layer {position} of {net.name} is {layer!r}, not a Conv2d")
    fraction = check_fraction("fraction", fraction, include_zero=True, include_one=False)
    rules = {"contribution": area_prune, "flops": area_prune_by_flops}
    if rank not in rules:
        raise InvalidArgumentError(f"rank must be one of {sorted(rules)}, got {rank!r}")
    x = np.asarray(x)
    expected = net.shapes()[position][0]
    if tuple(x.shape[1:]) != expected or len(x) == 0:
        raise InvalidArgumentError(f"x must be a non-empty batch of layer {position}'s input "
                                   f"(N, {', '.join(map(str, expected))}), got {x.shape}")
    scores = layer_area_contributions(layer, x, batch_size)
    if layer.area_mask is None:
        area = np.ones(scores.shape, layer.weight.dtype)
    else:
        area = layer.area_mask.copy()
    kernel_active = (layer.mask != 0).any(axis=(2, 3))
    n_kept = int(((area != 0) & kernel_active[:, :, None, None]).sum())
    area_after, _ = rules[rank](scores, area, layer.mask, fraction)
    # the guard keeps the longest safe prefix in the rule's own order
    ranking = scores if rank == "contribution" else contribution_per_flop(scores, layer.mask)
    removals = smallest_first(ranking, (area != 0) & (area_after == 0))

    def reach_after(k):
        trial = area.copy()
        trial[np.unravel_index(removals[:k], trial.shape)] = 0
        return reachable_units(net, area_masks={position: trial})[-1]

    k, lost = longest_safe_prefix(net, removals.size, reach_after)
    area[np.unravel_index(removals[:k], area.shape)] = 0
    layer.area_mask = area
    emptied = kernel_active & ~(area != 0).any(axis=(2, 3))
    layer.mask[emptied] = 0
    layer.weight[emptied] = 0
    return AreaPruneReport(layer=position, fraction=fraction, active_before=n_kept, removed=int(k),
                           threshold=float(ranking.reshape(-1)[removals[k - 1]]) if k else None,
                           stopped_short=k < removals.size, requested=int(removals.size),
                           reason=_disconnect_reason(k, lost),
                           kernels_deactivated=int(emptied.sum()))


# ============================================================ neuron removal
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


def _remove_dead_units_of(net, position, optimizer, entry):
    """One pass of ``remove_dead_neurons`` over layer ``position``; True if it removed any."""
    layer = net.layers[position]
    no_output = ~has_output(net, position)
    units = np.flatnonzero(~has_input(layer) & ~no_output)
    constants = as_seen_by_next(net, position, layer.bias[units].astype(np.float64))
    shift, foldable = bias_shift(net, position, units, constants)
    remove = no_output.copy()
    remove[units[foldable]] = True
    if remove.all():
        remove[0] = False                       # [ours] docs/nest.md#ours-keep-one-unit
    if not remove.any():
        return False
    folded = remove[units]  # the no-input units that go (all foldable ones, unless one was kept)
    if not folded.all():
        shift, _ = bias_shift(net, position, units[folded], constants[folded])
    following = net.layers[next_masked(net, position)[0]]
    following.bias += shift.astype(following.bias.dtype)
    entry["removed_no_input"] += int(folded.sum())
    entry["removed_no_output"] += int(remove[no_output].sum())
    _remove_units(net, position, remove, optimizer, entry)
    return True


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
      the next layer's bias before the unit goes **[ours]** (docs/nest.md#ours-bias-folding;
      ``connectivity.bias_shift`` says when that is exact after a convolution; a unit
      it would not be exact for stays).
    * At least one unit of each layer stays, the lowest-index one, even if dead
      **[ours]** (docs/nest.md#ours-keep-one-unit).

    Per-layer counts in the report: removed_no_input, removed_no_output, and
    dead_kept (units still without inputs or outputs at the end: unfoldable, or the last).
    """
    entries = {}
    for position in hidden_positions(net):
        entries[position] = _removal_entry(net.layers[position], position)
        entries[position].update(removed_no_input=0, removed_no_output=0, dead_kept=0)
    rounds = 0
    changed = True
    while changed:
        changed = False
        for position in hidden_positions(net):
            changed |= _remove_dead_units_of(net, position, optimizer, entries[position])
        rounds += changed
    for position in hidden_positions(net):
        layer = net.layers[position]
        entries[position]["dead_kept"] = int((~has_input(layer) | ~has_output(net, position)).sum())
    return NeuronRemovalReport(layers=list(entries.values()), criterion="dead", rounds=rounds)


def layer_input(net, position, x, batch_size=1000):
    """The input of layer ``position`` for network input x (N, *net.input_shape):
    ``net.forward_until(position, x, batch_size)``."""
    return net.forward_until(position, x, batch_size)


def prune_neurons_by_activation(net, x, threshold, optimizer=None, batch_size=1000):
    """Remove hidden Dense units whose mean |output| over x is below ``threshold`` (the paper's
    "magnitude of a neuron output").

    x: (N, *net.input_shape), the data to measure on. The output measured is what the
    next layer reads (after the ReLU). Layers are done in order, each measured after
    the previous one shrank. A removed unit's mean output over x is folded into the
    next layer's bias: the best constant stand-in for it, exact when its output never
    varies; if every unit of a layer falls below, the one with the largest mean
    |output| stays **[ours]** (docs/nest.md#ours-activation-pruning). Per-layer report
    keys add threshold and removed_low_activation.
    """
    threshold = check_number("threshold", threshold, minimum=0)
    if len(x) == 0:
        raise InvalidArgumentError("x must hold at least one example")
    entries = []
    for position in hidden_positions(net):
        layer = net.layers[position]
        if not isinstance(layer, Dense):
            continue
        nxt, block = next_masked(net, position)
        entry = _removal_entry(layer, position)
        entry.update(threshold=float(threshold), removed_low_activation=0)
        seen = net.forward_until(nxt, x, batch_size).reshape(len(x), layer.n_out, block)
        seen = seen.astype(np.float64)
        magnitude = np.abs(seen).mean(axis=(0, 2))
        remove = magnitude < threshold
        if remove.all():
            remove[np.argmax(magnitude)] = False
        if remove.any():
            following = net.layers[nxt]
            mean_seen = seen.mean(axis=0)[remove]  # (removed, block)
            weight = following.effective_weight().astype(np.float64)
            weight = weight.reshape(following.n_out, -1, block)
            shift = np.einsum("oub,ub->o", weight[:, np.flatnonzero(remove), :], mean_seen)
            following.bias += shift.astype(following.bias.dtype)
            entry["removed_low_activation"] = int(remove.sum())
            _remove_units(net, position, remove, optimizer, entry)
        entries.append(entry)
    return NeuronRemovalReport(layers=entries, criterion="activation", rounds=1)


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
    weights were deactivated too (they touch no output any more) **[ours]**
    (docs/nest.md#ours-area-candidates).
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
