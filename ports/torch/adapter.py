"""The PyTorch port's conformance adapter: ``OPS`` maps every op of conformance/README.md to the
port.

    nestref conformance check ports/torch/adapter.py

Each function takes the case's inputs (NumPy arrays) and params (JSON values) and
returns its outputs as NumPy arrays; all the work happens in torch (``nestref_torch``).
"""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

_here = Path(__file__).resolve().parent
if "nestref_torch" in sys.modules:
    nt = sys.modules["nestref_torch"]
else:
    _spec = importlib.util.spec_from_file_location("nestref_torch", _here / "nestref_torch.py")
    nt = importlib.util.module_from_spec(_spec)
    sys.modules["nestref_torch"] = nt
    _spec.loader.exec_module(nt)


def _t(array):
    return torch.from_numpy(np.ascontiguousarray(array))


def _np(tensor):
    return tensor.detach().cpu().numpy()


def _layer(inputs, prefix=""):
    p = {k: _t(inputs[prefix + k]) for k in ("weight", "mask", "bias") if prefix + k in inputs}
    if prefix + "area_mask" in inputs:
        p["area_mask"] = _t(inputs[prefix + "area_mask"])
    return p


def _network(inputs, params):
    spec = params["network"]
    layers = [(_layer(inputs, f"layer{i}.") if cfg["type"] in nt.MASKED else None)
              for i, cfg in enumerate(spec["layers"])]
    return spec, layers


def _network_outputs(params_list):
    out = {}
    for i, p in enumerate(params_list):
        if p is not None:
            out.update({f"layer{i}.{k}": _np(v) for k, v in p.items()})
    return out


def _layer_grads(run, inputs):
    """Autograd of one layer: grads w.r.t. x, the effective weight W*M (every position) and the
    bias."""
    x = _t(inputs["x"]).clone().requires_grad_()
    w_eff = (_t(inputs["weight"]) * _t(inputs["mask"])).requires_grad_()
    bias = _t(inputs["bias"]).clone().requires_grad_()
    run(x, w_eff, bias).backward(_t(inputs["grad_y"]))
    return {"grad_x": _np(x.grad), "grad_weight": _np(w_eff.grad), "grad_bias": _np(bias.grad)}


def dense_forward(inputs, params):
    return {
        "y": _np(
            nt.dense(_t(inputs["x"]), _t(inputs["weight"]) * _t(inputs["mask"]), _t(inputs["bias"]))
        )
    }


def dense_backward(inputs, params):
    return _layer_grads(nt.dense, inputs)


def _conv(params, inputs):
    area = _t(inputs["area_mask"]) if "area_mask" in inputs else None
    return lambda x, w, b: nt.conv2d(x, w, b, params["stride"], params["padding"], area)


def conv2d_forward(inputs, params):
    w_eff = _t(inputs["weight"]) * _t(inputs["mask"])
    return {"y": _np(_conv(params, inputs)(_t(inputs["x"]), w_eff, _t(inputs["bias"])))}


def conv2d_backward(inputs, params):
    return _layer_grads(_conv(params, inputs), inputs)


def maxpool2d(inputs, params):
    x = _t(inputs["x"]).clone().requires_grad_()
    y, argmax = torch.nn.functional.max_pool2d(
        x, params["kernel_size"], params["stride"], return_indices=True
    )
    y.backward(_t(inputs["grad_y"]))
    return {"y": _np(y), "argmax": _np(argmax).astype(np.int64), "grad_x": _np(x.grad)}


def softmax_cross_entropy(inputs, params):
    logits = _t(inputs["logits"]).clone().requires_grad_()
    loss = nt.mean_cross_entropy(logits, _t(inputs["labels"]))
    loss.backward()
    return {"loss": np.float64(loss.item()), "grad_logits": _np(logits.grad)}


def sgd_step(inputs, params):
    """v <- momentum v + (dL/dW * M + decay W); W <- (W - lr v) * M; the bias likewise, unmasked,
    undecayed."""
    w, m, b = _t(inputs["weight"]), _t(inputs["mask"]), _t(inputs["bias"])
    v_w = (params["momentum"] * _t(inputs["velocity_weight"]) + _t(inputs["grad_weight"]) * m
           + params["weight_decay"] * w) * m
    v_b = params["momentum"] * _t(inputs["velocity_bias"]) + _t(inputs["grad_bias"])
    return {"weight": _np((w - params["lr"] * v_w) * m), "bias": _np(b - params["lr"] * v_b),
            "velocity_weight": _np(v_w), "velocity_bias": _np(v_b)}


def growth_gradient(inputs, params):
    spec, layers = _network(inputs, params)
    grads = nt.growth_gradient(spec, layers, _t(inputs["x"]), _t(inputs["y"]), params["batch_size"],
                               params.get("n_batches"))
    return {f"layer{i}.gradient": _np(g) for i, g in grads.items()}


def growth_connections(inputs, params):
    w, m, idx = nt.grow_connections(
        _t(inputs["weight"]),
        _t(inputs["mask"]),
        _t(inputs["gradient"]),
        params["ratio"],
        params["init"],
        params["lr"],
    )
    return {"weight": _np(w), "mask": _np(m), "indices": _np(idx).astype(np.int64)}


def growth_bridging_gradient(inputs, params):
    return {"G": _np(nt.bridging_gradient(_t(inputs["x_prev"]), _t(inputs["delta_next"])))}


def growth_neuron_weights(inputs, params):
    w_in, w_out = nt.neuron_weights(
        _t(inputs["G"]), params["count"], params["birth_ratio"], _t(inputs["signs"])
    )
    return {"w_in": _np(w_in), "w_out": _np(w_out)}


def growth_feature_map(inputs, params):
    spec, layers = _network(inputs, params)
    (_, after), losses, loss_before, added = nt.grow_feature_map(
        spec, layers, params["position"], _t(inputs["x"]), _t(inputs["y"]),
        _t(inputs["candidates_in"]), _t(inputs["candidates_out"]))
    return {
        "losses": np.array(losses),
        "loss_before": np.float64(loss_before),
        "added": np.int64(added),
        **_network_outputs(after),
    }


def prune_magnitude(inputs, params):
    w, m = _t(inputs["weight"]), _t(inputs["mask"])
    protect = nt.strongest_input_per_unit(w, m) if params.get("output_unit_guard") else None
    w_after, m_after, threshold = nt.magnitude_prune(w, m, params["fraction"], protect)
    return {
        "mask_after": _np(m_after),
        "weight_after": _np(w_after),
        "threshold": np.float64(threshold),
    }


def prune_dead_units(inputs, params):
    spec, layers = _network(inputs, params)
    spec, layers = nt.remove_dead_units(spec, layers)
    with torch.no_grad():
        logits = nt.forward(spec, layers, _t(inputs["x"]))
    return {"logits": _np(logits), **_network_outputs(layers)}


def prune_partial_area(inputs, params):
    spec, layers = _network(inputs, params)
    scores, area, weight, mask = nt.prune_partial_area(
        spec, layers, params["position"], params["fraction"], _t(inputs["x"]),
        params.get("rank", "contribution"),
    )
    return {
        "contributions": _np(scores),
        "area_mask": _np(area),
        "weight": _np(weight),
        "mask": _np(mask),
    }


def accounting_count(inputs, params):
    spec = params["network"]
    masks, areas = {}, {}
    for i, cfg in enumerate(spec["layers"]):
        if cfg["type"] == "Dense":
            masks[i] = _t(inputs.get(f"layer{i}.mask", np.ones((cfg["n_out"], cfg["n_in"]))))
        elif cfg["type"] == "Conv2d":
            k = cfg["kernel_size"]
            masks[i] = _t(inputs.get(f"layer{i}.mask", np.ones((cfg["out_c"], cfg["in_c"], k, k))))
            if f"layer{i}.area_mask" in inputs:
                areas[i] = _t(inputs[f"layer{i}.area_mask"])
    rows = nt.count(spec, masks, areas)
    return {"params": np.int64(sum(r[0] for r in rows)), "flops": np.int64(sum(r[1] for r in rows)),
            "layer_params": np.array([r[0] for r in rows], np.int64),
            "layer_flops": np.array([r[1] for r in rows], np.int64)}


OPS = {
    "dense.forward": dense_forward,
    "dense.backward": dense_backward,
    "conv2d.forward": conv2d_forward,
    "conv2d.backward": conv2d_backward,
    "maxpool2d": maxpool2d,
    "softmax_cross_entropy": softmax_cross_entropy,
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
