"""The conformance cases: inputs and params of every case (``nestref.tools.conformance`` runs them).

Every random draw an operator would make (signs, candidate kernels) is an input
here, so no port depends on NumPy's generator. Inputs that decide a ranking
(which connection grows, which area is pruned) sit on coarse grids (small integers
or multiples of 1/8), where every float computation a port might do is exact:
ties are then real ties, broken by the rule, and never by rounding.
To add a case: append it to the list of its op's function, run
``nestref conformance generate`` and commit the new folder.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class Case:
    """One case: an op, the precision of its floats ("float32" or "float64"), its inputs
    and params, and a note saying what it is about."""
    name: str
    op: str
    dtype: str
    inputs: dict
    params: dict
    note: str = ""


# The rule a case tests when its note says nothing more particular: what a failure message quotes
# to a student (conformance/README.md, "Ops", has the full statements).
OP_RULES = {
    "dense.forward": "y = x (W*M)^T + b",
    "dense.backward": "grad_x = grad_y (W*M); grad_weight = grad_y^T x at every position, "
                      "dormant ones included; grad_bias = grad_y summed over the batch",
    "conv2d.forward": "cross-correlation of x with W*M, plus the bias at every output position",
    "conv2d.backward": "gradients w.r.t. x, W*M (every position) and the bias (grad_y summed "
                       "over N, Ho, Wo)",
    "maxpool2d": "the max of each window (floor output size, no partial windows); argmax the "
                 "first maximum in row-major order; grad_x routed to the argmax",
    "softmax_cross_entropy": "loss = mean over the batch of -log softmax(logits)[label]; "
                             "grad_logits = (softmax - onehot) / N",
    "growth.gradient": "G = dL/d(W*M) of the mean loss over all examples seen, at every "
                       "position",
    "growth.connections": "grow min(floor(ratio * dormant), dormant with |G| > 0) by |G| "
                          "descending, ties by ascending flat index; new weights -lr * G",
    "growth.bridging_gradient": "G = delta_next^T x_prev (delta_next already carries the 1/N)",
    "growth.feature_map": "each candidate rescaled to its layer's mean |active weight| and tried; "
                          "the lowest loss is added if below loss_before",
    "prune.magnitude": "the floor(fraction * active) active weights of smallest |w| go, ties by "
                       "ascending flat index; threshold = the largest |w| pruned",
    "prune.dead_units": "units with no active output go; units with no active input fold their "
                        "constant into the next bias and go; the logits do not change",
    "prune.partial_area": "contributions = mean |x_i * K_oi| at each (o, i, p); the "
                          "floor(fraction * candidates) smallest kept (o, i, p) are pruned, ties "
                          "by ascending flat index",
    "accounting.count": "params = active weights (of kernels kept somewhere) + biases; FLOPs = "
                        "2 x active weights x kept positions",
}


def _case(name, op, dtype, inputs, params=None, note=""):
    dt = np.dtype(dtype)
    cast = {
        k: (v.astype(dt) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
        for k, v in inputs.items()
    }
    return Case(name, op, dt.name, cast, params or {}, note or OP_RULES[op])


def _rng(seed):
    return np.random.default_rng(seed)


def _mask(rng, shape, density):
    return (rng.random(shape) < density).astype(np.float64)


def _grid(rng, shape, low=-4, high=4, step=0.125):
    """Integers in [low, high] times ``step``: values every float format holds exactly."""
    return rng.integers(low, high + 1, size=shape) * step


# ------------------------------------------------------------ network arrays
def conv_out(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def shapes(spec):
    """[(input shape, output shape)] of each layer of a network spec (nestref's layer configs)."""
    shape, out = tuple(spec["input_shape"]), []
    for cfg in spec["layers"]:
        kind = cfg["type"]
        if kind == "Dense":
            new = (cfg["n_out"],)
        elif kind == "Conv2d":
            _, h, w = shape
            new = (cfg["out_c"], conv_out(h, cfg["kernel_size"], cfg["stride"], cfg["padding"]),
                   conv_out(w, cfg["kernel_size"], cfg["stride"], cfg["padding"]))
        elif kind == "MaxPool2d":
            c, h, w = shape
            new = (
                c,
                conv_out(h, cfg["kernel_size"], cfg["stride"], 0),
                conv_out(w, cfg["kernel_size"], cfg["stride"], 0),
            )
        elif kind == "Flatten":
            new = (int(np.prod(shape)),)
        else:
            new = shape
        out.append((shape, new))
        shape = new
    return out


def weight_shape(cfg):
    if cfg["type"] == "Dense":
        return (cfg["n_out"], cfg["n_in"])
    return (cfg["out_c"], cfg["in_c"], cfg["kernel_size"], cfg["kernel_size"])


def dense_cfg(n_in, n_out):
    return {"type": "Dense", "n_in": n_in, "n_out": n_out}


def conv_cfg(in_c, out_c, k, stride=1, padding=0):
    return {
        "type": "Conv2d",
        "in_c": in_c,
        "out_c": out_c,
        "kernel_size": k,
        "stride": stride,
        "padding": padding,
    }


RELU, FLATTEN = {"type": "ReLU"}, {"type": "Flatten"}


def pool_cfg(k=2):
    return {"type": "MaxPool2d", "kernel_size": k, "stride": k}


def network_arrays(rng, spec, density=0.6, scale=0.5, bias=0.1):
    """Random masked weights (0 where the mask is 0) and biases for every masked layer of
    ``spec``."""
    arrays = {}
    for i, cfg in enumerate(spec["layers"]):
        if cfg["type"] in ("Dense", "Conv2d"):
            shape = weight_shape(cfg)
            mask = _mask(rng, shape, density)
            arrays[f"layer{i}.weight"] = rng.standard_normal(shape) * scale * mask
            arrays[f"layer{i}.mask"] = mask
            arrays[f"layer{i}.bias"] = rng.standard_normal(shape[0]) * bias
    return arrays


MLP = {
    "input_shape": [6],
    "layers": [dense_cfg(6, 5), RELU, dense_cfg(5, 4), RELU, dense_cfg(4, 3)],
}
CONVNET = {
    "input_shape": [1, 8, 8],
    "layers": [conv_cfg(1, 2, 3), pool_cfg(2), FLATTEN, dense_cfg(18, 4), RELU, dense_cfg(4, 3)],
}
CONVCONV = {"input_shape": [2, 7, 7],
            "layers": [conv_cfg(2, 3, 3), conv_cfg(3, 2, 3), FLATTEN, dense_cfg(18, 3)]}


def _xy(rng, spec, n, classes=3):
    x = rng.random((n, *spec["input_shape"]))
    return x, rng.integers(0, classes, n)


# ======================================================================= layers
def _dense_inputs(seed, n=4, i=6, o=5, density=0.5, stale=False, dormant_row=None):
    rng = _rng(seed)
    mask = _mask(rng, (o, i), density)
    if dormant_row is not None:
        mask[dormant_row] = 0
    weight = rng.standard_normal((o, i))
    if not stale:
        weight *= mask
    return {
        "x": rng.standard_normal((n, i)),
        "weight": weight,
        "mask": mask,
        "bias": rng.standard_normal(o),
        "grad_y": rng.standard_normal((n, o)),
    }


DENSE_VARIANTS = [
    ("basic", "float32", {"seed": 1}, ""),
    ("basic", "float64", {"seed": 1}, ""),
    ("dormant_row", "float32", {"seed": 2, "dormant_row": 3},
     "unit 3 has no active input: y[:, 3] = bias[3]"),
    ("stale_dormant_weights", "float64", {"seed": 3, "stale": True},
     "weights nonzero where the mask is 0: the layer computes with W*M, so they must not count"),
    ("single_example", "float32", {"seed": 4, "n": 1, "i": 3, "o": 2, "density": 1.0},
     "N = 1, dense mask"),
]


def dense_cases():
    cases = []
    for label, dtype, kw, note in DENSE_VARIANTS:
        full = _dense_inputs(**kw)
        fwd = {k: v for k, v in full.items() if k != "grad_y"}
        suffix = "f32" if dtype == "float32" else "f64"
        cases.append(
            _case(f"dense_forward_{label}_{suffix}", "dense.forward", dtype, fwd, note=note)
        )
        cases.append(
            _case(f"dense_backward_{label}_{suffix}", "dense.backward", dtype, full, note=note)
        )
    return cases


def _conv_inputs(seed, n=2, c=2, o=3, k=3, h=6, stride=1, padding=0, density=0.6, area=None,
                 dead_kernel=False):
    rng = _rng(seed)
    mask = _mask(rng, (o, c, k, k), density)
    if dead_kernel:
        mask[1, 0] = 0
    weight = rng.standard_normal((o, c, k, k)) * mask
    ho = conv_out(h, k, stride, padding)
    inputs = {"x": rng.standard_normal((n, c, h, h)), "weight": weight, "mask": mask,
              "bias": rng.standard_normal(o), "grad_y": rng.standard_normal((n, o, ho, ho))}
    if area is not None:
        inputs["area_mask"] = _mask(rng, (o, c, ho, ho), area)
    return inputs, {"stride": stride, "padding": padding}


CONV_VARIANTS = [
    ("basic", "float32", {"seed": 11}, ""),
    ("basic", "float64", {"seed": 11}, ""),
    ("stride2_pad1", "float64", {"seed": 12, "h": 7, "stride": 2, "padding": 1},
     "stride 2, padding 1, odd input"),
    ("area_mask", "float32", {"seed": 13, "area": 0.6},
     "partial-area convolution: area_mask (O, C, Ho, Wo)"),
    ("area_mask", "float64", {"seed": 14, "area": 0.5, "padding": 1},
     "partial-area convolution with padding"),
    ("dormant_kernel", "float32", {"seed": 15, "dead_kernel": True, "k": 1, "h": 4},
     "1x1 kernels; kernel (1, 0) wholly dormant"),
]


def conv_cases():
    cases = []
    for label, dtype, kw, note in CONV_VARIANTS:
        full, params = _conv_inputs(**kw)
        fwd = {k: v for k, v in full.items() if k != "grad_y"}
        suffix = "f32" if dtype == "float32" else "f64"
        cases.append(
            _case(f"conv2d_forward_{label}_{suffix}", "conv2d.forward", dtype, fwd, params, note)
        )
        cases.append(
            _case(f"conv2d_backward_{label}_{suffix}", "conv2d.backward", dtype, full, params, note)
        )
    return cases


def maxpool_cases():
    cases = []
    for name, dtype, shape, k, s, grid, note in [
        ("maxpool2d_2x2_f32", "float32", (2, 2, 6, 6), 2, 2, False, ""),
        ("maxpool2d_ties_f64", "float64", (1, 2, 4, 4), 2, 2, True,
         "values in {0, 1, 2}: ties go to the first maximum in row-major order"),
        ("maxpool2d_overlap_ties_f32", "float32", (1, 1, 7, 7), 3, 2, True,
         "3x3 windows, stride 2: windows overlap, the input gradient adds where they share an "
         "argmax"),
        ("maxpool2d_odd_f64", "float64", (2, 1, 5, 5), 2, 2, False,
         "5x5 input: the last row and column are dropped"),
    ]:
        rng = _rng(len(cases) + 21)
        x = rng.integers(0, 3, shape).astype(np.float64) if grid else rng.standard_normal(shape)
        ho = conv_out(shape[2], k, s, 0)
        cases.append(_case(name, "maxpool2d", dtype,
                           {"x": x, "grad_y": rng.standard_normal((*shape[:2], ho, ho))},
                           {"kernel_size": k, "stride": s}, note))
    return cases


def loss_cases():
    cases = []
    for name, dtype, n, k, scale, note in [
        ("softmax_cross_entropy_basic_f32", "float32", 5, 4, 1.0, ""),
        ("softmax_cross_entropy_basic_f64", "float64", 5, 4, 1.0, ""),
        ("softmax_cross_entropy_large_logits_f64", "float64", 3, 5, 1000.0,
         "logits of order 1000: exp overflows unless the row max is subtracted first"),
        ("softmax_cross_entropy_one_class_f32", "float32", 2, 1, 1.0, "K = 1: loss 0, gradient 0"),
    ]:
        rng = _rng(len(cases) + 31)
        cases.append(_case(name, "softmax_cross_entropy", dtype,
                           {"logits": rng.standard_normal((n, k)) * scale,
                            "labels": rng.integers(0, k, n)}, note=note))
    return cases


def sgd_cases():
    cases = []
    for name, dtype, shape, lr, momentum, wd, note in [
        ("sgd_step_momentum_decay_f32", "float32", (4, 5), 0.1, 0.9, 1e-3,
         "momentum and weight decay"),
        ("sgd_step_conv_f64", "float64", (2, 2, 3, 3), 0.05, 0.0, 0.0, "a conv weight, plain SGD"),
        ("sgd_step_stale_velocity_f64", "float64", (3, 4), 0.01, 0.5, 0.01,
         "velocity and gradient nonzero at dormant positions: both are masked, the weight stays 0 "
         "there"),
    ]:
        rng = _rng(len(cases) + 41)
        mask = _mask(rng, shape, 0.5)
        stale = "stale" in name
        cases.append(
            _case(
                name,
                "sgd.step",
                dtype,
                {
                    "weight": rng.standard_normal(shape) * mask,
                    "mask": mask,
                    "bias": rng.standard_normal(shape[0]),
                    "grad_weight": rng.standard_normal(shape),
                    "grad_bias": rng.standard_normal(shape[0]),
                    "velocity_weight": rng.standard_normal(shape) * (1 if stale else mask),
                    "velocity_bias": rng.standard_normal(shape[0]),
                },
                {"lr": lr, "momentum": momentum, "weight_decay": wd},
                note,
            )
        )
    return cases


# ======================================================================= growth
def growth_gradient_cases():
    cases = []
    for name, dtype, spec, n, batch, n_batches, area, note in [
        ("growth_gradient_mlp_f32", "float32", MLP, 8, 8, None, False,
         "dormant positions get a gradient too"),
        ("growth_gradient_mlp_f64", "float64", MLP, 8, 8, None, False, ""),
        ("growth_gradient_mlp_uneven_batches_f64", "float64", MLP, 8, 3, None, False,
         "batches of 3, 3, 2: G = (sum over batches of size * batch mean) / 8, the gradient "
         "of the mean loss over all 8 examples (not the mean of the 3 batch means)"),
        ("growth_gradient_mlp_n_batches_f32", "float32", MLP, 9, 4, 2, False,
         "only the first 2 batches (8 examples)"),
        ("growth_gradient_convnet_f32", "float32", CONVNET, 4, 4, None, False,
         "conv -> max-pool -> flatten -> dense: the flatten wiring is channel-major"),
        ("growth_gradient_convnet_area_f64", "float64", CONVNET, 4, 2, None, True,
         "the conv layer has a partial-area mask"),
        ("growth_gradient_mlp_uneven_batches_f32", "float32", MLP, 10, 4, None, False,
         "batches of 4, 4, 2: G = (sum over batches of size * batch mean) / 10, the gradient "
         "of the mean loss over all 10 examples (not the mean of the 3 batch means)"),
    ]:
        rng = _rng(len(cases) + 51)
        inputs = network_arrays(rng, spec)
        if area:
            inputs["layer0.area_mask"] = _mask(rng, (2, 1, 6, 6), 0.7)
        x, y = _xy(rng, spec, n)
        cases.append(_case(name, "growth.gradient", dtype, {**inputs, "x": x, "y": y},
                           {"network": spec, "batch_size": batch, "n_batches": n_batches}, note))
    return cases


def growth_connection_cases():
    cases = []
    specs = [
        ("growth_connections_basic_f32", "float32", (5, 6), 0.3, "gradient", 0.1, None, ""),
        ("growth_connections_ties_f64", "float64", (4, 5), 0.5, "gradient", 0.05, "ties",
         "|G| in {1, 2, 3}/8: equal |G| grow in ascending flat order"),
        ("growth_connections_zero_gradient_f32", "float32", (4, 4), 0.9, "gradient", 0.1, "zeros",
         "most dormant G are 0: only |G| > 0 are candidates, so fewer grow than requested"),
        ("growth_connections_init_zero_f64", "float64", (3, 6), 0.4, "zero", 0.1, None,
         "new weights start at 0"),
        ("growth_connections_no_dormant_f32", "float32", (3, 3), 0.5, "gradient", 0.1, "full",
         "every connection active: nothing grows, indices is empty"),
        ("growth_connections_conv_f64", "float64", (3, 2, 3, 3), 0.25, "gradient", 0.02, None,
         "conv weight: flat indices in C order over (O, C, k, k)"),
        ("growth_connections_floor_f32", "float32", (10, 20), 0.29, "gradient", 0.1, "hundred",
         "exactly 100 dormant: floor(0.29 * 100) = 29, not 28 "
         "(0.29 * 100 = 28.999999999999996)"),
    ]
    for name, dtype, shape, ratio, init, lr, kind, note in specs:
        rng = _rng(len(cases) + 61)
        mask = _mask(rng, shape, 0.5)
        if kind == "full":
            mask[...] = 1
        if kind == "hundred":
            mask = np.zeros(shape)
            mask.flat[rng.permutation(mask.size)[:100]] = 1
        gradient = _grid(rng, shape, -16, 16, 0.0625)
        if kind == "ties":
            gradient = rng.choice([-3, -2, -1, 1, 2, 3], size=shape) / 8
        if kind == "zeros":
            gradient *= rng.random(shape) < 0.3
        weight = rng.standard_normal(shape) * mask
        cases.append(_case(name, "growth.connections", dtype,
                           {"weight": weight, "mask": mask, "gradient": gradient},
                           {"ratio": ratio, "init": init, "lr": lr}, note))
    return cases


def bridging_cases():
    cases = []
    for name, dtype, n, i, m, note in [
        ("growth_bridging_gradient_basic_f32", "float32", 6, 5, 4, ""),
        ("growth_bridging_gradient_basic_f64", "float64", 6, 5, 4, ""),
        ("growth_bridging_gradient_single_example_f64", "float64", 1, 3, 2, "N = 1"),
        ("growth_bridging_gradient_zeros_f32", "float32", 5, 4, 3,
         "a silent input unit and a zero delta column"),
    ]:
        rng = _rng(len(cases) + 71)
        x_prev = np.maximum(rng.standard_normal((n, i)), 0)  # the output of a ReLU
        delta = rng.standard_normal((n, m)) / n               # dL/du for the mean loss carries 1/N
        if "zeros" in name:
            x_prev[:, 1] = 0
            delta[:, 2] = 0
        cases.append(_case(name, "growth.bridging_gradient", dtype,
                           {"x_prev": x_prev, "delta_next": delta}, note=note))
    return cases


DROPPED_NOTE = (
    "decides that a dropped neuron still uses up one of count: chunk = ceil(0.15 * 12) = 2; "
    "the first chunk's w_out cancels, so of count = 2 neurons only the second chunk's is "
    "returned (k = 1); the third chunk does not take the dropped one's place")


def neuron_weight_cases():
    cases = []
    for name, dtype, shape, count, ratio, signs, kind, note in [
        ("growth_neuron_weights_positive_f32", "float32", (4, 5), 2, 0.2, "positive", None,
         "all signs +1 (nestref's default): w_in >= 0"),
        ("growth_neuron_weights_random_signs_f64", "float64", (4, 5), 3, 0.15, "random", None,
         "signs[r] is the draw for the r-th pair by rank"),
        ("growth_neuron_weights_ties_f64", "float64", (3, 4), 2, 0.25, "random", "ties",
         "|G| in {1, 4}/16: equal |G| rank by ascending flat index m * I + n"),
        ("growth_neuron_weights_few_pairs_f32", "float32", (3, 3), 4, 0.3, "positive", "sparse",
         "only 4 nonzero G: chunks of 3 pairs, so 2 neurons though 4 were asked for"),
        ("growth_neuron_weights_cancel_f64", "float64", (2, 3), 2, 0.3, "random", "cancel",
         "the first neuron's pairs cancel (w_out = 0): it is dropped, the second is kept"),
        ("growth_neuron_weights_chunk_rounding_f64", "float64", (6, 10), 2, 0.05, "random", None,
         "ceil(0.05 * 60) = 3 pairs per neuron (0.05 * 60 = 3.0000000000000004)"),
        ("growth_neuron_weights_dropped_counts_f64", "float64", (3, 4), 2, 0.15, "random",
         "dropped", DROPPED_NOTE),
        ("growth_neuron_weights_dropped_counts_f32", "float32", (3, 4), 2, 0.15, "random",
         "dropped", DROPPED_NOTE),
    ]:
        rng = _rng(len(cases) + 81)
        G = _grid(rng, shape, -8, 8, 0.0625)
        if kind == "ties":
            G = rng.choice([-4, -1, 1, 4], size=shape) / 16
        if kind == "sparse":
            G = np.zeros(shape)
            G.flat[[1, 4, 6, 8]] = [0.5, -0.25, 0.125, 1.0]
        if kind == "dropped":
            # ranks: (0, 0), (0, 1) | (1, 2), (2, 3) | (2, 0), (1, 1): three chunks of 2
            G = np.array([[0.5, -0.5, 0.0, 0.0], [0.0, 0.0625, 0.25, 0.0],
                          [0.125, 0.0, 0.0, -0.25]])
        if kind == "cancel":
            # pairs (0, 0) and (0, 1) have equal |G| and signs +1, +1 but G of opposite sign:
            # w_out[0] cancels
            G = np.array([[0.5, -0.5, 0.0], [0.0, 0.0, 0.25]])
        draws = np.ones(G.size) if signs == "positive" else rng.choice([-1.0, 1.0], size=G.size)
        if kind in ("cancel", "dropped"):
            draws[:2] = 1.0  # w_out[0] = -s0 * sign(0.5) * d - s1 * sign(-0.5) * d = 0
        cases.append(_case(name, "growth.neuron_weights", dtype, {"G": G, "signs": draws},
                           {"count": count, "birth_ratio": ratio}, note))
    return cases


FEATURE_MAP_SCALE_NOTE = (
    "decides the weight scale and the new map's areas: some active weights are exactly 0 "
    "(mask 1, weight 0) and count in the mean |active weight| (mask == 1, not weight != 0); "
    "both convs have area masks, and the new map's area rows (its own, in conv 0, and its "
    "input channel's, in conv 1) are all ones")


def feature_map_cases():
    cases = []
    for name, dtype, spec, seed, k, note in [
        ("growth_feature_map_convnet_f32", "float32", CONVNET, 96, 4,
         "the new map's outgoing weights are a (4, 9) block: columns 18..26 of the dense layer"),
        ("growth_feature_map_convnet_f64", "float64", CONVNET, 99, 4, ""),
        ("growth_feature_map_convconv_f64", "float64", CONVCONV, 94, 3,
         "conv -> conv: the new map is input channel 3 of the next conv"),
        ("growth_feature_map_none_better_f32", "float32", CONVNET, 91, 3,
         "every candidate raises the loss: nothing is added, the network is unchanged"),
        ("growth_feature_map_zero_weights_area_f64", "float64", CONVCONV, 97, 3,
         FEATURE_MAP_SCALE_NOTE),
        ("growth_feature_map_zero_weights_area_f32", "float32", CONVCONV, 98, 3,
         FEATURE_MAP_SCALE_NOTE),
    ]:
        rng = _rng(seed)
        inputs = network_arrays(rng, spec)
        x, y = _xy(rng, spec, 6)
        layer = spec["layers"][0]
        in_shape = (layer["in_c"], layer["kernel_size"], layer["kernel_size"])
        nxt = next(
            j
            for j in range(1, len(spec["layers"]))
            if spec["layers"][j]["type"] in ("Dense", "Conv2d")
        )
        ncfg = spec["layers"][nxt]
        if ncfg["type"] == "Conv2d":
            out_shape = (ncfg["out_c"], ncfg["kernel_size"], ncfg["kernel_size"])
        else:
            _, h, w = shapes(spec)[nxt - 1][0]  # the (C, H, W) that the Flatten before it reads
            out_shape = (ncfg["n_out"], h * w)
        cand_in = rng.standard_normal((k, *in_shape)) * (rng.random((k, *in_shape)) < 0.7)
        cand_out = rng.standard_normal((k, *out_shape)) * (rng.random((k, *out_shape)) < 0.7)
        cand_in.reshape(k, -1)[:, 0] = 1.0  # at least one nonzero per candidate
        cand_out.reshape(k, -1)[:, 0] = 1.0
        if note is FEATURE_MAP_SCALE_NOTE:
            for i in (0, 1):   # about 30% of the active weights are 0, their masks still 1
                mask = inputs[f"layer{i}.mask"]
                inputs[f"layer{i}.weight"] *= ~((mask != 0) & (rng.random(mask.shape) < 0.3))
            conv0, conv1 = shapes(spec)[0][1], shapes(spec)[1][1]
            inputs["layer0.area_mask"] = _mask(rng, (3, 2, *conv0[1:]), 0.6)
            inputs["layer1.area_mask"] = _mask(rng, (2, 3, *conv1[1:]), 0.6)
        cases.append(_case(name, "growth.feature_map", dtype,
                           {**inputs, "x": x, "y": y, "candidates_in": cand_in,
                            "candidates_out": cand_out},
                           {"network": spec, "position": 0}, note))
    return cases


# ======================================================================== prune
GUARD_NOTE = (
    "decides the guard: the n = floor(fraction * active) smallest unprotected weights go, "
    "exactly n of them (a protected weight is skipped and the next smallest taken), not the "
    "n smallest of all minus the protected ones")


def magnitude_cases():
    cases = []
    for name, dtype, shape, fraction, guard, kind, note in [
        ("prune_magnitude_basic_f32", "float32", (5, 6), 0.3, False, None, ""),
        ("prune_magnitude_ties_f64", "float64", (4, 5), 0.4, False, "ties",
         "|w| in {1, 2}/4: equal |w| prune in ascending flat order"),
        ("prune_magnitude_zero_fraction_f32", "float32", (3, 4), 0.0, False, None,
         "fraction 0: nothing pruned, threshold NaN"),
        ("prune_magnitude_floor_f64", "float64", (10, 20), 0.29, False, "hundred",
         "exactly 100 active: floor(0.29 * 100) = 29"),
        ("prune_magnitude_output_guard_f32", "float32", (3, 4), 0.9, True, None,
         "output-unit guard where n = floor(0.9 * active) exceeds the unprotected weights: "
         "every unprotected one goes and each row's protected weight stays"),
        ("prune_magnitude_conv_f64", "float64", (2, 3, 3, 3), 0.5, False, None, "conv weight"),
        ("prune_magnitude_guard_ties_f64", "float64", (3, 4), 0.75, True, "ties",
         "guard with ties: the protected weight of a row is its first largest |w|"),
        ("prune_magnitude_all_dormant_f32", "float32", (2, 3), 0.5, True, "empty",
         "no active connection: nothing to prune, threshold NaN"),
        ("prune_magnitude_guard_skips_f32", "float32", (4, 5), 0.5, True, "weak_row",
         GUARD_NOTE),
        ("prune_magnitude_guard_skips_f64", "float64", (5, 4), 0.4, True, "weak_row",
         GUARD_NOTE),
    ]:
        rng = _rng(len(cases) + 101)
        mask = _mask(rng, shape, 0.7)
        if kind == "hundred":
            mask = np.zeros(shape)
            mask.flat[rng.permutation(mask.size)[:100]] = 1
        if kind == "empty":
            mask[...] = 0
        weight = _grid(rng, shape, -16, 16, 0.0625)
        weight[weight == 0] = 0.5
        if kind == "ties":
            weight = rng.choice([-2, -1, 1, 2], size=shape) / 4
        if kind == "weak_row":
            # row 0 is all active and smaller than every other weight: its protected largest
            # weight is among the n smallest of the layer
            mask[0] = 1
            weight[0] = rng.choice([-3, -2, -1, 1, 2, 3], size=shape[1]) / 128
        cases.append(_case(name, "prune.magnitude", dtype, {"weight": weight * mask, "mask": mask},
                           {"fraction": fraction, "output_unit_guard": guard}, note))
    return cases


def _dead_mlp(rng):
    spec = {
        "input_shape": [5],
        "layers": [dense_cfg(5, 6), RELU, dense_cfg(6, 4), RELU, dense_cfg(4, 3)],
    }
    a = network_arrays(rng, spec, density=1.0)
    for key in ("layer0", "layer2", "layer4"):
        a[f"{key}.bias"] = np.abs(a[f"{key}.bias"]) + 0.2
    m0, m2, m4 = a["layer0.mask"], a["layer2.mask"], a["layer4.mask"]
    m0[1] = 0  # layer-0 unit 1: no input, bias > 0 -> its relu(bias) folds into layer 2's bias
    m2[:, 3] = 0       # layer-0 unit 3: no output -> dropped
    m2[2] = 0          # layer-2 unit 2: no input -> folds into the output layer
    m2[1] = 0
    m2[1, 1] = 1  # layer-2 unit 1 reads only unit 1 of layer 0, which goes: it is dead in round 2
    m4[:, 0] = 0       # layer-2 unit 0: no output
    for i, m in ((0, m0), (2, m2), (4, m4)):
        a[f"layer{i}.weight"] *= m
    a["layer2.weight"][1, 1] = 0.7
    return spec, a


def dead_unit_cases():
    cases = []
    rng = _rng(111)
    spec, a = _dead_mlp(rng)
    x = rng.random((4, 5))
    cases.append(_case("prune_dead_units_mlp_f64", "prune.dead_units", "float64", {**a, "x": x},
                       {"network": spec},
                       "no-input units fold relu(bias) into the next bias; no-output units drop; "
                       "a second round removes a unit whose only input went"))
    cases.append(_case("prune_dead_units_mlp_f32", "prune.dead_units", "float32", {**a, "x": x},
                       {"network": spec}))

    rng = _rng(112)
    spec = {"input_shape": [4], "layers": [dense_cfg(4, 3), RELU, dense_cfg(3, 2)]}
    a = network_arrays(rng, spec, density=1.0)
    a["layer2.mask"][:] = 0
    a["layer2.weight"][:] = 0
    cases.append(_case("prune_dead_units_all_dead_f64", "prune.dead_units", "float64",
                       {**a, "x": rng.random((3, 4))}, {"network": spec},
                       "no hidden unit has an output: all go but the lowest-index one"))

    rng = _rng(113)
    spec = {"input_shape": [2, 7, 7],
            "layers": [conv_cfg(2, 3, 3), conv_cfg(3, 3, 3), FLATTEN, dense_cfg(27, 3)]}
    a = network_arrays(rng, spec, density=0.8)
    # map 1 of conv 0 has no input: its bias folds through conv 1 (padding 0)
    a["layer0.mask"][1] = 0
    a["layer0.weight"][1] = 0
    # map 0 of conv 1 has no input: folds into the dense bias, 9 columns each
    a["layer1.mask"][0] = 0
    a["layer1.weight"][0] = 0
    a["layer3.mask"][:, 9:18] = 0
    a["layer3.weight"][:, 9:18] = 0    # map 1 of conv 1 has no output
    cases.append(_case("prune_dead_units_convconv_f64", "prune.dead_units", "float64",
                       {**a, "x": rng.random((2, 2, 7, 7))}, {"network": spec},
                       "conv -> conv fold (kernel sums) and conv -> flatten -> dense fold "
                       "(H*W columns)"))

    rng = _rng(114)
    spec = {"input_shape": [1, 6, 6],
            "layers": [conv_cfg(1, 3, 3), conv_cfg(3, 2, 3, padding=1), FLATTEN, dense_cfg(32, 2)]}
    a = network_arrays(rng, spec, density=0.9)
    a["layer0.mask"][2] = 0
    a["layer0.weight"][2] = 0
    a["layer0.bias"][2] = 0.6
    cases.append(_case("prune_dead_units_padding_unfoldable_f32", "prune.dead_units", "float32",
                       {**a, "x": rng.random((2, 1, 6, 6))}, {"network": spec},
                       "a no-input map before a padded conv adds a position-dependent shift: "
                       "it stays"))
    for dtype, seed in (("float64", 115), ("float32", 116)):
        cases.append(_negative_bias_case(dtype, seed))
    cases.append(_area_mask_dead_case())
    cases.append(_kept_unit_case())
    return cases


def _negative_bias_case(dtype, seed):
    rng = _rng(seed)
    spec = {"input_shape": [4], "layers": [dense_cfg(4, 4), RELU, dense_cfg(4, 3)]}
    a = network_arrays(rng, spec, density=1.0)
    for unit, bias in ((1, -0.5), (2, 0.375)):   # no input: a constant relu(bias) goes on
        a["layer0.mask"][unit] = 0
        a["layer0.weight"][unit] = 0
        a["layer0.bias"][unit] = bias
    suffix = "f64" if dtype == "float64" else "f32"
    return _case(f"prune_dead_units_negative_bias_{suffix}", "prune.dead_units", dtype,
                 {**a, "x": rng.random((3, 4))}, {"network": spec},
                 "decides relu(bias) against the raw bias: units 1 (bias -0.5) and 2 (bias "
                 "0.375) of layer 0 have no input and a ReLU follows, so they fold relu(-0.5) = 0 "
                 "and 0.375 times their outgoing weights into layer 2's bias")


def _area_mask_dead_case():
    rng = _rng(117)
    spec = {"input_shape": [2, 6, 6],
            "layers": [conv_cfg(2, 4, 3), conv_cfg(4, 2, 3), FLATTEN, dense_cfg(8, 3)]}
    a = network_arrays(rng, spec, density=1.0)
    area0 = np.ones((4, 2, 4, 4))
    area1 = np.ones((2, 4, 2, 2))
    # map 0 of conv 0: active weights but its area pruned everywhere, so no input; its outgoing
    # kernels are kept everywhere (o = 0) or nowhere (o = 1): it folds into o = 0 only
    area0[0] = 0
    area1[1, 0] = 0
    # map 1: no active weight; kernel (0, 1) of conv 1 is kept at some positions only, so the
    # shift would depend on the position: it stays
    a["layer0.mask"][1] = 0
    a["layer0.weight"][1] = 0
    a["layer0.bias"][1] = 0.4
    area1[0, 1, 0, 1] = 0
    # map 2: active weights in conv 1 that read it, but their areas are pruned everywhere: no
    # output, it is dropped
    area1[:, 2] = 0
    a["layer0.area_mask"], a["layer1.area_mask"] = area0, area1
    return _case("prune_dead_units_area_mask_f64", "prune.dead_units", "float64",
                 {**a, "x": rng.random((2, 2, 6, 6))}, {"network": spec},
                 "decides that dead-unit tests read the area masks: a kernel counts as an "
                 "input or output only if it has an active weight and keeps some area. Map 0 "
                 "(area pruned everywhere) has no input and folds its bias through conv 1's "
                 "kernel (0, 0) alone (kernel (1, 0) is kept nowhere); map 1 (no input) stays, "
                 "its outgoing kernel (0, 1) being kept at some positions only; map 2 (outgoing "
                 "areas pruned everywhere) has no output and is dropped")


def _kept_unit_case():
    rng = _rng(118)
    spec = {"input_shape": [3], "layers": [dense_cfg(3, 3), RELU, dense_cfg(3, 2)]}
    a = network_arrays(rng, spec, density=1.0)
    a["layer0.mask"][:] = 0
    a["layer0.weight"][:] = 0
    a["layer0.bias"][:] = [0.5, 0.25, 0.75]
    return _case("prune_dead_units_kept_unit_f64", "prune.dead_units", "float64",
                 {**a, "x": rng.random((3, 3))}, {"network": spec},
                 "decides the kept unit's folding: no unit of layer 0 has an input, so all "
                 "would go; unit 0 stays and keeps emitting relu(0.5) itself (not folded), "
                 "units 1 and 2 fold into layer 2's bias")


AREA_NET = {"input_shape": [2, 6, 6], "layers": [conv_cfg(2, 3, 3), FLATTEN, dense_cfg(48, 3)]}
CONV_ONLY = {"input_shape": [1, 5, 5], "layers": [conv_cfg(1, 2, 3), conv_cfg(2, 1, 1)]}


# a 3x3 conv, then one that sums both maps over 3x3 windows: the last layer's single output
# stays reachable while many positions of the hidden maps lose every input
CONV_DEEP = {"input_shape": [1, 6, 6], "layers": [conv_cfg(1, 2, 3), conv_cfg(2, 1, 3)]}
# fractions at which the first position past the cut costs more than the budget left, and a
# later one less
FLOPS_F32, FLOPS_F64 = 0.45, 0.2
AREA_GUARD_NOTE = (
    "decides the guard: only the last layer's units (each output map position of a conv) must "
    "stay reachable, hidden positions may be cut off; the cut is the longest safe prefix of the "
    "removal order (removals after the first unsafe one are not taken, even if safe)")
FLOPS_PREFIX_NOTE = (
    "decides the 'flops' cut: the longest prefix of the order whose summed n_oi is at most "
    "floor(fraction * sum over the candidates of n_oi); the first position that does not fit "
    "ends the cut (later, cheaper ones are not taken)")


def partial_area_cases():
    cases = []
    for name, dtype, spec, fraction, kind, note in [
        ("prune_partial_area_basic_f32", "float32", AREA_NET, 0.3, None, ""),
        ("prune_partial_area_basic_f64", "float64", AREA_NET, 0.3, None, ""),
        ("prune_partial_area_existing_mask_f64", "float64", AREA_NET, 0.25, "existing",
         "an area mask already pruned: only kept (o, i, p) are candidates"),
        ("prune_partial_area_kernel_emptied_f32", "float32", AREA_NET, 0.5, "weak_kernel",
         "kernel (0, 1) is tiny: its whole area goes, so its weights are deactivated"),
        ("prune_partial_area_guard_f64", "float64", CONV_ONLY, 0.8, None,
         ("a 1x1 conv reads both maps: pruning both maps' area at one position would cut that "
          "output off, so it stops short")),
        ("prune_partial_area_by_flops_f32", "float32", AREA_NET, 0.3, "flops",
         "rank 'flops': contribution per active weight of the kernel, 30% of the area's MACs"),
        ("prune_partial_area_by_flops_f64", "float64", AREA_NET, 0.3, "flops",
         "rank 'flops': contribution per active weight of the kernel, 30% of the area's MACs"),
        ("prune_partial_area_guard_f32", "float32", CONV_ONLY, 0.7, None, AREA_GUARD_NOTE),
        ("prune_partial_area_guard_deep_f64", "float64", CONV_DEEP, 0.6, None,
         AREA_GUARD_NOTE),
        ("prune_partial_area_by_flops_prefix_f32", "float32", AREA_NET, FLOPS_F32, "flops",
         FLOPS_PREFIX_NOTE),
        ("prune_partial_area_by_flops_prefix_f64", "float64", AREA_NET, FLOPS_F64, "flops",
         FLOPS_PREFIX_NOTE),
    ]:
        rng = _rng(len(cases) + 121)
        a = network_arrays(rng, spec, density=0.8)
        if spec is CONV_DEEP:
            a["layer1.mask"][:] = 1
            a["layer1.weight"] = _grid(rng, (1, 2, 3, 3), 1, 8, 0.125)
        if spec is CONV_ONLY:
            a["layer1.mask"][:] = 1
            a["layer1.weight"] = np.array([0.5, -0.75]).reshape(1, 2, 1, 1)
        grid_w = _grid(rng, a["layer0.weight"].shape, -8, 8, 0.125)
        grid_w[grid_w == 0] = 0.25
        a["layer0.weight"] = grid_w * a["layer0.mask"]
        if kind == "weak_kernel":
            a["layer0.mask"][0, 1] = 1
            a["layer0.weight"][0, 1] = 0.0078125
        x = rng.integers(0, 4, (3, *spec["input_shape"])).astype(np.float64)
        if kind == "existing":
            a["layer0.area_mask"] = _mask(rng, (3, 2, 4, 4), 0.7)
        params = {"network": spec, "position": 0, "fraction": fraction}
        if kind == "flops":
            params["rank"] = "flops"
        cases.append(_case(name, "prune.partial_area", dtype, {**a, "x": x}, params, note))
    return cases


def accounting_cases():
    lenet300 = {"input_shape": [784], "layers": [dense_cfg(784, 300), RELU, dense_cfg(300, 100),
                                                 RELU, dense_cfg(100, 10)]}
    lenet5 = {"input_shape": [1, 28, 28],
              "layers": [conv_cfg(1, 20, 5), pool_cfg(2), conv_cfg(20, 50, 5), pool_cfg(2),
                         FLATTEN, dense_cfg(800, 500), RELU, dense_cfg(500, 10)]}
    cases = [
        _case("accounting_count_lenet300_dense", "accounting.count", "float32", {},
              {"network": lenet300},
              "dense baseline: 266,610 params, 532,400 FLOPs (no mask given: every layer dense)"),
        _case("accounting_count_lenet5_dense", "accounting.count", "float32", {},
              {"network": lenet5}, "dense baseline: 431,080 params, 4,586,000 FLOPs"),
    ]
    rng = _rng(131)
    a = network_arrays(rng, MLP, density=0.4)
    cases.append(_case("accounting_count_sparse_mlp", "accounting.count", "float32",
                       {k: v for k, v in a.items() if k.endswith(".mask")}, {"network": MLP}))
    a = network_arrays(rng, CONVCONV, density=0.5)
    masks = {k: v for k, v in a.items() if k.endswith(".mask")}
    area = _mask(rng, (3, 2, 5, 5), 0.6)
    area[0, 1] = 0  # kernel (0, 1) kept nowhere: its weights count neither as params nor FLOPs
    masks["layer0.mask"][0, 1, 1, 1] = 1
    masks["layer0.area_mask"] = area
    cases.append(_case("accounting_count_sparse_convconv_area", "accounting.count", "float32",
                       masks, {"network": CONVCONV},
                       "partial areas: a conv kernel's FLOPs count only its kept positions"))
    return cases


def all_cases():
    return (dense_cases() + conv_cases() + maxpool_cases() + loss_cases() + sgd_cases()
            + growth_gradient_cases() + growth_connection_cases() + bridging_cases()
            + neuron_weight_cases() + feature_map_cases() + magnitude_cases() + dead_unit_cases()
            + partial_area_cases() + accounting_cases())
