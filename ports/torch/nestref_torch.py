"""NeST's operators in PyTorch: an independent port, written from conformance/README.md.

It does not import nestref. Layers are plain functions on tensors; gradients come
from autograd (the growth gradient is autograd's gradient w.r.t. the *effective*
weight W*M, which is defined at dormant positions too). The grow-and-prune rules
are written out below; ``adapter.py`` maps the conformance ops onto them.

A network is (spec, params): spec is the case's {"input_shape", "layers": [configs]},
params a list with, for each layer, None or a dict of tensors
{"weight", "mask", "bias"[, "area_mask"]}.
"""
import math

import torch
import torch.nn.functional as F

MASKED = ("Dense", "Conv2d")


# ===================================================================== layers
def dense(x, w_eff, bias):
    """x (N, I), w_eff (O, I), bias (O,) -> (N, O)."""
    return x @ w_eff.T + bias


def conv2d(x, w_eff, bias, stride, padding, area_mask=None):
    """x (N, C, H, W), w_eff (O, C, k, k) -> (N, O, Ho, Wo).

    With an area mask (O, C, Ho, Wo), input map i reaches output map o only where
    area_mask[o, i] is 1: one convolution per input map, each masked, then summed.
    """
    if area_mask is None:
        return F.conv2d(x, w_eff, bias, stride=stride, padding=padding)
    y = None
    for i in range(x.shape[1]):
        part = (
            F.conv2d(x[:, i : i + 1], w_eff[:, i : i + 1], None, stride=stride, padding=padding)
            * area_mask[:, i]
        )
        y = part if y is None else y + part
    return y + bias.view(1, -1, 1, 1)


def forward(spec, params, x, weights=None):
    """The network's logits; ``weights`` optionally replaces each masked layer's W*M (autograd
    leaves)."""
    h = x
    for i, cfg in enumerate(spec["layers"]):
        kind = cfg["type"]
        if kind in MASKED:
            p = params[i]
            w = weights[i] if weights is not None else p["weight"] * p["mask"]
            if kind == "Dense":
                h = dense(h, w, p["bias"])
            else:
                h = conv2d(h, w, p["bias"], cfg["stride"], cfg["padding"], p.get("area_mask"))
        elif kind == "MaxPool2d":
            h = F.max_pool2d(h, cfg["kernel_size"], cfg["stride"])
        elif kind == "ReLU":
            h = torch.relu(h)
        elif kind == "Flatten":
            # channel-major: map c owns columns c*H*W ... (c+1)*H*W - 1
            h = h.reshape(h.shape[0], -1)
        else:
            raise ValueError(f"unknown layer type {kind!r}")
    return h


def masked_positions(spec):
    return [i for i, cfg in enumerate(spec["layers"]) if cfg["type"] in MASKED]


def shapes(spec):
    """[(input shape, output shape)] of every layer, for one example."""
    shape, out = tuple(spec["input_shape"]), []
    for cfg in spec["layers"]:
        x = torch.zeros((1, *shape))
        if cfg["type"] == "Dense":
            new = (cfg["n_out"],)
        elif cfg["type"] == "Conv2d":
            new = tuple(
                F.conv2d(
                    x,
                    torch.zeros(cfg["out_c"], cfg["in_c"], cfg["kernel_size"], cfg["kernel_size"]),
                    stride=cfg["stride"],
                    padding=cfg["padding"],
                ).shape[1:]
            )
        elif cfg["type"] == "MaxPool2d":
            new = tuple(F.max_pool2d(x, cfg["kernel_size"], cfg["stride"]).shape[1:])
        elif cfg["type"] == "Flatten":
            new = (math.prod(shape),)
        else:
            new = shape
        out.append((shape, new))
        shape = new
    return out


def next_masked(spec, position):
    """(position of the next masked layer, columns each unit feeds there: 1, or H*W after a
    Flatten)."""
    nxt = next(j for j in masked_positions(spec) if j > position)
    for j in range(position + 1, nxt):
        if spec["layers"][j]["type"] == "Flatten":
            _, h, w = shapes(spec)[j][0]
            return nxt, h * w
    return nxt, 1


def mean_cross_entropy(logits, labels):
    return F.cross_entropy(logits, labels)


def batch_loss(spec, params, x, y):
    """Mean cross-entropy, the logits taken to float64 first (the decisions compare nearly equal
    losses)."""
    with torch.no_grad():
        return float(mean_cross_entropy(forward(spec, params, x).double(), y))


def floor_count(fraction, n):
    """floor(fraction * n) with a 1e-9 slack: 0.29 * 100 is 28.999999999999996."""
    return math.floor(fraction * n + 1e-9)


def smallest_first(scores, candidates):
    """Flat indices where candidates holds, by ascending score; ties keep ascending index."""
    flat = torch.nonzero(candidates.reshape(-1)).reshape(-1)
    return flat[torch.argsort(scores.reshape(-1)[flat], stable=True)]


# ===================================================================== growth
def growth_gradient(spec, params, x, y, batch_size, n_batches=None):
    """dL/d(W*M) of the mean loss over the batches, each batch weighted by its size."""
    positions = masked_positions(spec)
    sums = {i: torch.zeros(params[i]["weight"].shape, dtype=torch.float64) for i in positions}
    starts = list(range(0, len(x), batch_size))[:n_batches]
    seen = 0
    for start in starts:
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        weights = [None] * len(spec["layers"])
        for i in positions:
            weights[i] = (params[i]["weight"] * params[i]["mask"]).detach().requires_grad_()
        loss = mean_cross_entropy(forward(spec, params, xb, weights), yb)
        grads = torch.autograd.grad(loss, [weights[i] for i in positions])
        for i, g in zip(positions, grads, strict=True):
            sums[i] += len(xb) * g.double()
        seen += len(xb)
    return {i: (sums[i] / seen).to(params[i]["weight"].dtype) for i in positions}


def grow_connections(weight, mask, gradient, ratio, init, lr):
    """Activate floor(ratio * dormant) dormant connections with the largest |G| > 0 (ties: lowest
    index)."""
    weight, mask = weight.clone(), mask.clone()
    dormant = torch.nonzero(mask.reshape(-1) == 0).reshape(-1)
    g_abs = gradient.reshape(-1)[dormant].abs()
    order = torch.argsort(-g_abs, stable=True)
    take = order[:min(floor_count(ratio, len(dormant)), int((g_abs > 0).sum()))]
    indices = dormant[take]
    values = (
        -lr * gradient.reshape(-1)[indices] if init == "gradient" else torch.zeros(len(indices))
    )
    weight.view(-1)[indices] = values.to(weight.dtype)
    mask.view(-1)[indices] = 1
    return weight, mask, indices


def bridging_gradient(x_prev, delta_next):
    """G[m, n] = sum_i delta_next[i, m] * x_prev[i, n]: (M, I)."""
    return delta_next.T @ x_prev


def neuron_weights(G, count, birth_ratio, signs):
    """Unscaled (w_in (k, I), w_out (M, k)) of up to ``count`` neurons; signs[r] for the r-th pair
    by rank."""
    m_out, n_in = G.shape
    g = G.reshape(-1).double()
    chunk = max(1, math.ceil(birth_ratio * g.numel() - 1e-9))
    order = torch.argsort(-g.abs(), stable=True)[:int((g != 0).sum())]
    rows, cols = [], []
    for j in range(count):
        idx = order[j * chunk:(j + 1) * chunk]
        if idx.numel() == 0:
            break
        d = g[idx].abs().sqrt()
        s = signs[j * chunk:j * chunk + idx.numel()].double()
        w_in = torch.zeros(n_in, dtype=torch.float64).index_add_(0, idx % n_in, s * d)
        w_out = torch.zeros(m_out, dtype=torch.float64).index_add_(
            0, idx // n_in, -s * torch.sign(g[idx]) * d
        )
        if bool(w_in.any()) and bool(w_out.any()):   # a neuron whose weights cancel adds nothing
            rows.append(w_in)
            cols.append(w_out)
    w_in = torch.stack(rows) if rows else torch.zeros((0, n_in), dtype=torch.float64)
    w_out = torch.stack(cols, dim=1) if cols else torch.zeros((m_out, 0), dtype=torch.float64)
    return w_in, w_out


def _mean_active_abs(p):
    return float(p["weight"][p["mask"] != 0].abs().double().mean())


def _with_new_map(spec, params, position, kernel_in, w_out):
    """A copy of (spec, params) with one more output map in conv ``position``."""
    nxt, block = next_masked(spec, position)
    spec = {**spec, "layers": [dict(c) for c in spec["layers"]]}
    spec["layers"][position]["out_c"] += 1
    if spec["layers"][nxt]["type"] == "Conv2d":
        spec["layers"][nxt]["in_c"] += 1
    else:
        spec["layers"][nxt]["n_in"] += block
    params = [None if p is None else dict(p) for p in params]
    p, q = params[position], params[nxt]
    kernel_in, w_out = kernel_in.to(p["weight"].dtype), w_out.to(q["weight"].dtype)
    p["weight"] = torch.cat([p["weight"], kernel_in[None]])
    p["mask"] = torch.cat([p["mask"], (kernel_in != 0)[None].to(p["mask"].dtype)])
    p["bias"] = torch.cat([p["bias"], torch.zeros(1, dtype=p["bias"].dtype)])
    if "area_mask" in p:
        p["area_mask"] = torch.cat([p["area_mask"], torch.ones_like(p["area_mask"][:1])])
    # the new map is input channel C of a next conv, or the last H*W columns of a next dense layer
    q["weight"] = torch.cat(
        [q["weight"], w_out[:, None] if q["weight"].ndim == 4 else w_out], dim=1
    )
    new_mask = (w_out != 0).to(q["mask"].dtype)
    q["mask"] = torch.cat(
        [q["mask"], new_mask[:, None] if q["mask"].ndim == 4 else new_mask], dim=1
    )
    if "area_mask" in q:
        q["area_mask"] = torch.cat([q["area_mask"], torch.ones_like(q["area_mask"][:, :1])], dim=1)
    return spec, params


def grow_feature_map(spec, params, position, x, y, candidates_in, candidates_out):
    """Try each candidate (rescaled to its layer's mean |active w|) as a new map; keep the best if
    it lowers the loss."""
    nxt, _ = next_masked(spec, position)
    loss_before = batch_loss(spec, params, x, y)
    scale_in, scale_out = _mean_active_abs(params[position]), _mean_active_abs(params[nxt])
    trials, losses = [], []
    for c_in, c_out in zip(candidates_in.double(), candidates_out.double(), strict=True):
        kernel_in = c_in * (scale_in / float(c_in[c_in != 0].abs().mean()))
        w_out = c_out * (scale_out / float(c_out[c_out != 0].abs().mean()))
        trial = _with_new_map(spec, params, position, kernel_in, w_out)
        trials.append(trial)
        losses.append(batch_loss(*trial, x, y))
    best = min(range(len(losses)), key=lambda j: (losses[j], j))
    added = losses[best] < loss_before
    return (trials[best] if added else (spec, params)), losses, loss_before, added


# ==================================================================== pruning
def strongest_input_per_unit(weight, mask):
    """Bool (weight's shape): each output unit's largest-|w| active input (ties: the first)."""
    active = (mask != 0).reshape(mask.shape[0], -1)
    score = torch.where(
        active,
        weight.reshape(mask.shape[0], -1).abs(),
        torch.full_like(active, -1.0, dtype=weight.dtype),
    )
    protect = torch.zeros_like(active)
    units = torch.nonzero(active.any(dim=1)).reshape(-1)
    protect[units, score[units].argmax(dim=1)] = True
    return protect.reshape(mask.shape)


def magnitude_prune(weight, mask, fraction, protect=None):
    """Deactivate floor(fraction * active) of the unprotected active connections, smallest |w|
    first."""
    weight, mask = weight.clone(), mask.clone()
    active = mask != 0
    protect = torch.zeros_like(active) if protect is None else protect
    order = smallest_first(weight.abs(), active & ~protect)
    removed = order[:min(floor_count(fraction, int(active.sum())), len(order))]
    threshold = float(weight.reshape(-1)[removed].abs().max()) if len(removed) else math.nan
    mask.view(-1)[removed] = 0
    weight.view(-1)[removed] = 0
    return weight, mask, threshold


def _pair_active(p):
    pair = (p["mask"] != 0).any(dim=3).any(dim=2)
    if "area_mask" in p:
        pair = pair & (p["area_mask"] != 0).any(dim=3).any(dim=2)
    return pair


def _has_input(p):
    return _pair_active(p).any(dim=1) if p["weight"].ndim == 4 else (p["mask"] != 0).any(dim=1)


def _has_output(spec, params, position):
    nxt, block = next_masked(spec, position)
    q = params[nxt]
    if q["weight"].ndim == 4:
        return _pair_active(q).any(dim=0)
    return (q["mask"] != 0).reshape(q["mask"].shape[0], -1, block).any(dim=2).any(dim=0)


def _bias_shift(spec, params, position, units, constants):
    """(shift of the next layer's bias, bool per unit: its constant output folds exactly)."""
    nxt, block = next_masked(spec, position)
    q, cfg = params[nxt], spec["layers"][nxt]
    w = (q["weight"] * q["mask"]).double()
    if w.ndim == 2:
        outgoing = w.reshape(w.shape[0], -1, block)[:, units, :].sum(dim=2)
        return outgoing @ constants, torch.ones(len(units), dtype=torch.bool)
    kernel_sums = w[:, units].sum(dim=(2, 3))
    if "area_mask" in q:
        area = (q["area_mask"][:, units] != 0).reshape(w.shape[0], len(units), -1)
        kept = area[:, :, 0].double()
        uniform = (area.all(dim=2) | ~area.any(dim=2)) | (kernel_sums == 0)
    else:
        kept, uniform = (
            torch.ones_like(kernel_sums),
            torch.ones(kernel_sums.shape, dtype=torch.bool),
        )
    # a constant map before a padded conv, or a partly kept area, shifts the output unevenly: not
    # foldable
    foldable = (constants == 0) | (torch.tensor(cfg["padding"] == 0) & uniform.all(dim=0))
    return (kernel_sums * kept) @ torch.where(
        foldable, constants, torch.zeros_like(constants)
    ), foldable


def _keep_units(spec, params, position, keep):
    nxt, block = next_masked(spec, position)
    p, q = params[position], params[nxt]
    for key in ("weight", "mask", "bias", "area_mask"):
        if key in p:
            p[key] = p[key][keep]
    cols = (keep[:, None] * block + torch.arange(block)[None]).reshape(-1)
    for key in ("weight", "mask", "area_mask"):
        if key in q:
            q[key] = q[key][:, cols]
    spec["layers"][position][
        "n_out" if spec["layers"][position]["type"] == "Dense" else "out_c"
    ] = len(keep)
    spec["layers"][nxt]["n_in" if spec["layers"][nxt]["type"] == "Dense" else "in_c"] = len(cols)


def remove_dead_units(spec, params):
    """Remove hidden units with no active inputs (folding their constant output into the next bias)
    or no active outputs; repeat until nothing changes; a layer keeps at least its lowest-index
    unit."""
    spec = {**spec, "layers": [dict(c) for c in spec["layers"]]}
    params = [None if p is None else dict(p) for p in params]
    hidden = masked_positions(spec)[:-1]
    changed = True
    while changed:
        changed = False
        for position in hidden:
            p = params[position]
            no_output = ~_has_output(spec, params, position)
            units = torch.nonzero(~_has_input(p) & ~no_output).reshape(-1)
            constants = p["bias"][units].double()
            nxt, _ = next_masked(spec, position)
            if any(spec["layers"][j]["type"] == "ReLU" for j in range(position + 1, nxt)):
                constants = torch.relu(constants)
            _, foldable = _bias_shift(spec, params, position, units, constants)
            remove = no_output.clone()
            remove[units[foldable]] = True
            if bool(remove.all()):
                remove[0] = False
            if not bool(remove.any()):
                continue
            folded = remove[units]
            shift, _ = _bias_shift(spec, params, position, units[folded], constants[folded])
            params[nxt]["bias"] = params[nxt]["bias"] + shift.to(params[nxt]["bias"].dtype)
            _keep_units(spec, params, position, torch.nonzero(~remove).reshape(-1))
            changed = True
    return spec, params


def reachable_outputs(spec, params, area_override=None):
    """Bool per output unit: reached from the input through active connections (biases carry no
    signal).

    area_override: optional (position, area mask) used in place of that layer's own area mask.
    """
    reach = torch.ones((1, *spec["input_shape"]), dtype=torch.float64)
    for i, cfg in enumerate(spec["layers"]):
        kind = cfg["type"]
        if kind == "Dense":
            reach = ((reach @ (params[i]["mask"] != 0).double().T) > 0).double()
        elif kind == "Conv2d":
            active = (params[i]["mask"] != 0).double()
            area = (
                area_override[1]
                if area_override and area_override[0] == i
                else params[i].get("area_mask")
            )
            if area is None:
                reach = (
                    F.conv2d(reach, active, stride=cfg["stride"], padding=cfg["padding"]) > 0
                ).double()
            else:
                hits = None
                for c in range(active.shape[1]):
                    part = (
                        F.conv2d(
                            reach[:, c : c + 1],
                            active[:, c : c + 1],
                            stride=cfg["stride"],
                            padding=cfg["padding"],
                        )
                        > 0
                    ) & (area[:, c] != 0)
                    hits = part if hits is None else hits | part
                reach = hits.double()
        elif kind == "MaxPool2d":
            reach = F.max_pool2d(reach, cfg["kernel_size"], cfg["stride"])
        elif kind == "Flatten":
            reach = reach.reshape(1, -1)
    return reach.reshape(-1) > 0


def area_contributions(weight, mask, x, stride, padding):
    """Mean over the batch of |(x_i * K_oi)(p)|: (O, C, Ho, Wo) in float64."""
    o, c, k, _ = weight.shape
    n = x.shape[0]
    kernel = (weight * mask).reshape(o, c, k * k)
    cols = F.unfold(x, k, padding=padding, stride=stride).reshape(n, c, k * k, -1)  # (N, C, k*k, P)
    ho = (x.shape[2] + 2 * padding - k) // stride + 1
    wo = (x.shape[3] + 2 * padding - k) // stride + 1
    total = torch.zeros((o, c, ho * wo), dtype=torch.float64)
    for i in range(c):
        total[:, i] = (
            torch.einsum("nkp,ok->nop", cols[:, i], kernel[:, i]).abs().double().sum(dim=0)
        )
    return (total / n).reshape(o, c, ho, wo)


def prune_partial_area(spec, params, position, fraction, x, rank="contribution"):
    """Prune floor(fraction * kept) of the (o, i, p) with an active kernel, smallest mean
    |contribution| first, without cutting any reachable output off the input; a kernel whose area is
    all gone loses its weights. rank "flops": order by contribution / active weights of the
    kernel, and prune as many as cost at most floor(fraction * the candidates' cost)."""
    p, cfg = dict(params[position]), spec["layers"][position]
    scores = area_contributions(p["weight"], p["mask"], x, cfg["stride"], cfg["padding"])
    area = (
        p["area_mask"].clone()
        if "area_mask" in p
        else torch.ones(scores.shape, dtype=p["weight"].dtype)
    )
    kernel_active = (p["mask"] != 0).any(dim=3).any(dim=2)
    candidates = (area != 0) & kernel_active[:, :, None, None]
    if rank == "flops":
        cost = (p["mask"] != 0).sum(dim=(2, 3)).to(scores.dtype)[:, :, None, None]
        cost = cost.expand(scores.shape)
        order = smallest_first(torch.where(candidates, scores / cost.clamp(min=1), 0.0),
                               candidates)
        spent = torch.cumsum(cost.reshape(-1)[order], 0)
        goal = floor_count(fraction, int(spent[-1])) if len(order) else 0
        requested = int((spent <= goal).sum())
    else:
        requested = floor_count(fraction, int(candidates.sum()))
        order = smallest_first(scores, candidates)
    before = reachable_outputs(spec, params)

    def safe(k):
        trial = area.clone()
        trial.view(-1)[order[:k]] = 0
        return not bool((before & ~reachable_outputs(spec, params, (position, trial))).any())

    k = requested
    if not safe(requested):
        lo, hi = 0, requested
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if safe(mid) else (lo, mid)
        k = lo
    area.view(-1)[order[:k]] = 0
    emptied = kernel_active & ~(area != 0).any(dim=3).any(dim=2)
    weight, mask = p["weight"].clone(), p["mask"].clone()
    weight[emptied] = 0
    mask[emptied] = 0
    return scores, area, weight, mask


# ================================================================= accounting
def count(spec, masks, area_masks):
    """(params, FLOPs) per masked layer: active weights + biases; 2 x MACs that touch an active
    weight."""
    out = []
    for i, ((_, out_shape), cfg) in enumerate(zip(shapes(spec), spec["layers"], strict=True)):
        if cfg["type"] == "Dense":
            active = int((masks[i] != 0).sum())
            out.append((active + cfg["n_out"], 2 * active))
        elif cfg["type"] == "Conv2d":
            per_kernel = (masks[i] != 0).sum(dim=(2, 3))
            if i in area_masks:
                positions = (area_masks[i] != 0).sum(dim=(2, 3))
            else:
                positions = torch.full_like(per_kernel, out_shape[1] * out_shape[2])
            # a kernel kept at no position touches nothing: its weights count neither as params nor
            # FLOPs
            out.append(
                (
                    int(per_kernel[positions > 0].sum()) + cfg["out_c"],
                    2 * int((per_kernel * positions).sum()),
                )
            )
    return out
