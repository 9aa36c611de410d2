"""Parameters and FLOPs of a masked network, counted the way docs/nest.md says ("Counting").

    params = active weights + one bias per unit of every masked layer
    FLOPs  = 2 x the multiply-accumulates that touch an active weight:
             Dense:  2 * active weights
             Conv2d: 2 * sum over kernels (o, i) of active weights of (o, i) x the
                     output positions (o, i) is applied at (all Ho*Wo without an
                     area mask, the kept ones with one)
             pooling, ReLU and bias additions are not counted

These rules reproduce the paper's dense baselines exactly (``DENSE_BASELINES``, read
from ``nestref.nest.architectures``; the tests recompute them from the dense networks).
``dense_baseline`` counts the dense network of any architecture, for any data shape. A kernel
whose area is pruned everywhere touches nothing, so its weights count neither as params nor as FLOPs
(``nestref.nest.prune.prune_partial_area`` deactivates such kernels anyway).
"""
import numpy as np

from ..core.layers import Conv2d, Dense
from .architectures import TABLE
from .networks import build

DENSE_BASELINES = {name: dict(entry.dense_baseline) for name, entry in TABLE.items()}


def dense_baseline(arch, image_shape=None, classes=None):
    """{"params", "flops"} of the dense network of ``arch`` (a name or a spec) for images of
    ``image_shape`` and ``classes`` classes (default: MNIST's), counted by the rules above."""
    net = build(arch, image_shape=image_shape, classes=classes)
    return {"params": count_params(net), "flops": count_flops(net)}


def _layer_counts(layer, out_shape):
    """(active weights that count, FLOPs) of one masked layer; out_shape: its output for one
    example."""
    active = layer.mask != 0
    if isinstance(layer, Dense):
        n_active = int(active.sum())
        return n_active, 2 * n_active
    if isinstance(layer, Conv2d):
        per_kernel = active.sum(axis=(2, 3))  # (O, C) active weights of kernel (o, i)
        _, ho, wo = out_shape
        if layer.area_mask is None:
            positions = np.full(per_kernel.shape, ho * wo)
        else:
            positions = (layer.area_mask != 0).sum(axis=(2, 3))
        return int(per_kernel[positions > 0].sum()), 2 * int((per_kernel * positions).sum())
    raise TypeError(f"no counting rule for {layer!r}")


def layer_table(net):
    """One dict per masked layer: position, type, shape (of the weight), width (output
    units), active, total (connections), density, params, flops; conv layers add
    area_density (kept fraction of (o, i, p), 1.0 without an area mask) and
    flops_weighted_area (the layer's FLOPs over what its active kernels would cost on the
    whole area)."""
    shapes = net.shapes()
    rows = []
    for position, layer in net.masked_layers():
        counted, flops = _layer_counts(layer, shapes[position][1])
        row = {
            "position": position,
            "type": type(layer).__name__,
            "shape": list(layer.weight.shape),
            "width": layer.n_out,
            "active": int((layer.mask != 0).sum()),
            "total": int(layer.mask.size),
            "density": layer.density(),
            "params": counted + layer.n_out,
            "flops": flops,
        }
        if isinstance(layer, Conv2d):
            area = layer.area_mask
            row["area_density"] = 1.0 if area is None else float((area != 0).mean())
            # the kept area weighted by what it costs: FLOPs with the area mask over FLOPs
            # of the same active kernels on the whole area (1 - this is the area's saving)
            whole = 2 * int((layer.mask != 0).sum()) * int(np.prod(shapes[position][1][1:]))
            row["flops_weighted_area"] = flops / whole if whole else 1.0
        rows.append(row)
    return rows


def count_params(net):
    """Active weights + biases of every unit of every masked layer (int)."""
    return sum(row["params"] for row in layer_table(net))


def count_flops(net):
    """2 x multiply-accumulates that touch an active weight (int); see the module docstring."""
    return sum(row["flops"] for row in layer_table(net))


def compression(net, arch):
    """How many times smaller than the dense baseline of ``arch``:
    {"params": .., "flops": .., "params_x": baseline / params, "flops_x": baseline / flops}."""
    if arch not in DENSE_BASELINES:
        raise ValueError(
            f"no dense baseline for {arch!r}; expected one of {sorted(DENSE_BASELINES)}"
        )
    params, flops = count_params(net), count_flops(net)
    base = DENSE_BASELINES[arch]
    return {"params": params, "flops": flops,
            "params_x": base["params"] / params if params else float("inf"),
            "flops_x": base["flops"] / flops if flops else float("inf")}


def format_layer_table(rows):
    """``layer_table``'s rows as a fixed-width text table, with a total line; a conv layer
    with an area mask adds the fraction of its area kept."""
    lines = [f"{'layer':>5} {'type':>6} {'weight shape':>18} {'active':>8} {'density':>8} "
             f"{'params':>8} {'FLOPs':>9}"]
    for row in rows:
        area = row.get("area_density")
        lines.append(f"{row['position']:>5} {row['type']:>6} {tuple(row['shape'])!s:>18} "
                     f"{row['active']:>8,} {row['density']:>8.3f} {row['params']:>8,} "
                     f"{row['flops']:>9,}" + ("" if area is None else f"   area kept {area:.2f}"))
    lines.append(f"{'total':>5} {'':>6} {'':>18} {sum(r['active'] for r in rows):>8,} {'':>8} "
                 f"{sum(r['params'] for r in rows):>8,} {sum(r['flops'] for r in rows):>9,}")
    return "\n".join(lines)
