"""nestref's own conformance adapter: the one place the conformance cases call nestref's operators.

An adapter is a module with ``OPS``: {op name: fn(inputs, params) -> {output name: array}},
inputs being the case's arrays (NumPy) by name and params its JSON parameters.
``conformance/README.md`` defines every op, its inputs, params and outputs; this
module is nestref's answer to it, and ``nestref conformance generate`` records
its answers as the expected outputs. A port (``ports/torch/``) writes the same
functions against its own operators.

Where nestref's public operator works on a layer or a network, the adapter builds
one from the case's arrays. Pruning and growth edit in place; the adapter returns
the edited arrays.
"""
import numpy as np

from ..core.layers import Conv2d, Dense, MaskedLayer, MaxPool2d, layer_from_config
from ..core.losses import softmax_cross_entropy
from ..core.network import Network
from ..core.optim import SGD
from ..nest import grow, prune
from ..nest.accounting import layer_table

LAYER_ARRAYS = ("weight", "mask", "bias", "area_mask")


# ------------------------------------------------------------------ builders
def _dense(inputs):
    w = inputs["weight"]
    layer = Dense(w.shape[1], w.shape[0], dtype=w.dtype)
    layer.weight, layer.mask, layer.bias = w.copy(), inputs["mask"].copy(), inputs["bias"].copy()
    return layer


def _conv(inputs, params):
    w = inputs["weight"]
    layer = Conv2d(
        w.shape[1], w.shape[0], w.shape[2], params["stride"], params["padding"], dtype=w.dtype
    )
    layer.weight, layer.mask, layer.bias = w.copy(), inputs["mask"].copy(), inputs["bias"].copy()
    layer.area_mask = inputs["area_mask"].copy() if "area_mask" in inputs else None
    return layer


def _network(inputs, params):
    """A Network from params["network"] = {"input_shape", "layers": [layer configs]} and the
    arrays ``layer{i}.weight/mask/bias[/area_mask]`` of every masked layer."""
    spec = params["network"]
    dtype = next(inputs[k].dtype for k in sorted(inputs) if k.endswith(".weight"))
    layers = [layer_from_config(cfg, dtype) for cfg in spec["layers"]]
    for i, layer in enumerate(layers):
        if isinstance(layer, MaskedLayer):
            for key in ("weight", "mask", "bias"):
                setattr(layer, key, inputs[f"layer{i}.{key}"].copy())
            layer.grown = np.zeros(layer.n_out, dtype=bool)
            if f"layer{i}.area_mask" in inputs:
                layer.area_mask = inputs[f"layer{i}.area_mask"].copy()
    return Network(layers, spec["input_shape"])


def _network_arrays(net):
    out = {}
    for i, layer in net.masked_layers():
        for key in LAYER_ARRAYS:
            value = getattr(layer, key, None)
            if value is not None:
                out[f"layer{i}.{key}"] = value
    return out


class _ReplayGenerator(np.random.Generator):
    """A Generator whose draws are the case's given arrays, in order.

    ``grow_feature_maps`` draws each candidate as ``mask = random(shape) < density``
    (plus ``integers`` if that mask is empty) and ``standard_normal(shape) * mask``.
    Replaying ``random`` as 0 where the given candidate is nonzero and 1 elsewhere,
    and ``standard_normal`` as the candidate itself, makes the drawn candidate
    exactly the given one (before the operator rescales it).
    """

    def __init__(self, arrays):
        super().__init__(np.random.PCG64(0))
        self._queue, self._current = list(arrays), None

    def random(self, size=None, dtype=np.float64, out=None):
        self._current = np.asarray(self._queue.pop(0), dtype=np.float64)
        if self._current.shape != tuple(np.atleast_1d(size)):
            raise ValueError(
                f"candidate of shape {self._current.shape} given where {size} is drawn"
            )
        return (self._current == 0).astype(np.float64)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return self._current

    def integers(self, *args, **kwargs):
        raise ValueError("a candidate with no nonzero weight was given; every candidate needs one")


# ----------------------------------------------------------------- the ops
def dense_forward(inputs, params):
    return {"y": _dense(inputs).forward(inputs["x"])}


def dense_backward(inputs, params):
    layer = _dense(inputs)
    layer.forward(inputs["x"])
    grad_x = layer.backward(inputs["grad_y"])
    return {"grad_x": grad_x, "grad_weight": layer.grad_weight, "grad_bias": layer.grad_bias}


def conv2d_forward(inputs, params):
    return {"y": _conv(inputs, params).forward(inputs["x"])}


def conv2d_backward(inputs, params):
    layer = _conv(inputs, params)
    layer.forward(inputs["x"])
    grad_x = layer.backward(inputs["grad_y"])
    return {"grad_x": grad_x, "grad_weight": layer.grad_weight, "grad_bias": layer.grad_bias}


def maxpool2d(inputs, params):
    pool = MaxPool2d(params["kernel_size"], params["stride"])
    y = pool.forward(inputs["x"])
    return {"y": y, "argmax": pool._argmax, "grad_x": pool.backward(inputs["grad_y"])}


def softmax_cross_entropy_op(inputs, params):
    loss, grad = softmax_cross_entropy(inputs["logits"], inputs["labels"])
    return {"loss": np.float64(loss), "grad_logits": grad}


def sgd_step(inputs, params):
    w = inputs["weight"]
    layer = Dense(1, 1, dtype=w.dtype)  # any masked layer: SGD reads only its arrays (any shape)
    layer.weight, layer.mask, layer.bias = w.copy(), inputs["mask"].copy(), inputs["bias"].copy()
    layer.grad_weight, layer.grad_bias = inputs["grad_weight"], inputs["grad_bias"]
    net = Network([layer], (layer.n_in,), name="sgd")
    optimizer = SGD(
        net, lr=params["lr"], momentum=params["momentum"], weight_decay=params["weight_decay"]
    )
    optimizer.velocity[0] = {
        "weight": inputs["velocity_weight"].copy(),
        "bias": inputs["velocity_bias"].copy(),
    }
    optimizer.step()
    v = optimizer.velocity[0]
    return {
        "weight": layer.weight,
        "bias": layer.bias,
        "velocity_weight": v["weight"],
        "velocity_bias": v["bias"],
    }


def growth_gradient(inputs, params):
    net = _network(inputs, params)
    gradients = grow.growth_gradients(
        net,
        inputs["x"],
        inputs["y"],
        batch_size=params["batch_size"],
        n_batches=params.get("n_batches"),
    )
    return {f"layer{i}.gradient": g for i, g in gradients.items()}


def growth_connections(inputs, params):
    w = inputs["weight"]
    layer = Dense(1, 1, dtype=w.dtype)  # grow_connections reads only weight, mask and the gradient
    layer.weight, layer.mask = w.copy(), inputs["mask"].copy()
    # the driver applies grow.select_growth(mask, G, ratio) and gives the grown weights -lr * G (or
    # 0); "indices" lists them by |G| descending, ties by ascending flat index
    report = grow.grow_connections(
        layer, params["ratio"], gradient=inputs["gradient"], init=params["init"], lr=params["lr"]
    )
    return {"weight": layer.weight, "mask": layer.mask, "indices": report.indices.astype(np.int64)}


def growth_bridging_gradient(inputs, params):
    return {"G": grow.bridging_gradient(inputs["x_prev"], inputs["delta_next"])}


def growth_neuron_weights(inputs, params):
    G, draws = inputs["G"], np.asarray(inputs["signs"], dtype=np.float64)
    # a case lists one sign draw per pair in rank order (so ports need no RNG); the rule takes
    # them at the pairs' places (M, I)
    chunk = grow.pairs_per_neuron(params["birth_ratio"], G.size)
    used = grow.rank_pairs(G)[:params["count"] * chunk]
    if draws.size < used.size:
        raise ValueError(f"signs holds {draws.size} draws, {used.size} are needed")
    signs = np.ones(G.shape)
    signs.flat[used] = draws[:used.size]
    w_in, w_out = grow.neuron_weights(G, params["count"], params["birth_ratio"], signs)
    added = w_in.any(axis=1) & w_out.any(axis=0)  # a neuron whose weights cancel is not added
    return {"w_in": w_in[added], "w_out": w_out[:, added]}


def growth_feature_map(inputs, params):
    net = _network(inputs, params)
    draws = [
        a
        for pair in zip(inputs["candidates_in"], inputs["candidates_out"], strict=True)
        for a in pair
    ]
    report = grow.grow_feature_maps(
        net,
        params["position"],
        1,
        inputs["x"],
        inputs["y"],
        candidates=len(inputs["candidates_in"]),
        rng=_ReplayGenerator(draws),
    )
    return {
        "losses": np.asarray(report.candidate_losses[0], np.float64),
        "loss_before": np.float64(report.loss_before),
        "added": np.int64(report.added),
        **_network_arrays(net),
    }


def prune_magnitude(inputs, params):
    weight, mask = inputs["weight"], inputs["mask"]
    # the output-unit guard of prune_network: each row keeps its largest-|w| active weight
    protect = (
        prune.strongest_input_per_unit(weight, mask) if params.get("output_unit_guard") else None
    )
    mask_after, threshold = prune.magnitude_prune(weight, mask, params["fraction"], protect)
    weight_after = weight.copy()
    weight_after[(mask != 0) & (mask_after == 0)] = 0
    threshold = np.nan if threshold is None else threshold
    return {
        "mask_after": mask_after,
        "weight_after": weight_after,
        "threshold": np.float64(threshold),
    }


def prune_dead_units(inputs, params):
    net = _network(inputs, params)
    prune.remove_dead_neurons(net)
    return {"logits": net.forward(inputs["x"]), **_network_arrays(net)}


def prune_partial_area(inputs, params):
    net = _network(inputs, params)
    position = params["position"]
    contributions = prune.layer_area_contributions(net.layers[position], inputs["x"])
    prune.prune_partial_area(net, position, params["fraction"], inputs["x"],
                             rank=params.get("rank", "contribution"))
    layer = net.layers[position]
    return {
        "contributions": contributions,
        "area_mask": layer.area_mask,
        "weight": layer.weight,
        "mask": layer.mask,
    }


def accounting_count(inputs, params):
    spec = params["network"]
    layers = [layer_from_config(cfg, np.float32) for cfg in spec["layers"]]
    for i, layer in enumerate(layers):
        if isinstance(layer, MaskedLayer):
            # an absent mask is a dense layer: the baselines' masks would be megabytes of ones
            layer.mask = (
                inputs[f"layer{i}.mask"] if f"layer{i}.mask" in inputs else np.ones_like(layer.mask)
            )
            if f"layer{i}.area_mask" in inputs:
                layer.area_mask = inputs[f"layer{i}.area_mask"]
    rows = layer_table(Network(layers, spec["input_shape"]))
    return {
        "params": np.int64(sum(r["params"] for r in rows)),
        "flops": np.int64(sum(r["flops"] for r in rows)),
        "layer_params": np.array([r["params"] for r in rows], np.int64),
        "layer_flops": np.array([r["flops"] for r in rows], np.int64),
    }


OPS = {
    "dense.forward": dense_forward,
    "dense.backward": dense_backward,
    "conv2d.forward": conv2d_forward,
    "conv2d.backward": conv2d_backward,
    "maxpool2d": maxpool2d,
    "softmax_cross_entropy": softmax_cross_entropy_op,
    "sgd.step": sgd_step,
    "growth.gradient": growth_gradient,
    "growth.connections": growth_connections,
    "growth.bridging_gradient": growth_bridging_gradient,
    "growth.neuron_weights": growth_neuron_weights,
    "growth.feature_map": growth_feature_map,
    "prune.magnitude": prune_magnitude,
    "prune.dead_units": prune_dead_units,
    "prune.partial_area": prune_partial_area,
    "accounting.count": accounting_count,
}
