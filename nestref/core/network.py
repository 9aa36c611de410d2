"""Networks: a list of layers, and unit surgery.

``Network`` chains layers and keeps nothing but them and the shape of one input. The
paper's networks and NeST's seeds are built from it by ``nestref.nest.networks``.

``add_units`` / ``keep_units`` change the width of a hidden layer: the rows of the
layer and the matching columns of the next masked layer (and the optimizer's
momentum for both) grow or shrink together. Growth and pruning both go through them.
"""
import copy
import json

import numpy as np

from ..checks import check_positive_int
from ..errors import InvalidArgumentError
from .layers import Flatten, MaskedLayer, layer_from_config
from .losses import softmax_cross_entropy


class Network:
    """A feed-forward chain of layers.

    input_shape: the shape of one example, e.g. (784,) or (1, 28, 28).
    forward:  x (N, *input_shape) -> logits (N, n_classes)
    backward: dL/dlogits (N, n_classes) -> dL/dx; fills every masked layer's grads.
    """

    def __init__(self, layers, input_shape, name="network"):
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.name = name
        self.shapes()  # fail now, not at the first batch, if the layers do not chain

    def forward(self, x):
        self._check_input(x)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad, input_grad=True, dense_weight_grad=False):
        """Backpropagate dL/dlogits; returns dL/dx, or None with input_grad=False
        (training needs only the weights' gradients, and the first layer's input
        gradient is a whole GEMM, plus a col2im for a conv). dense_weight_grad: every
        masked layer computes grad_weight at every position now, sparse ones included
        (what growth needs); see ``nestref.core.layers``."""
        for depth, layer in enumerate(reversed(self.layers)):
            is_first = depth == len(self.layers) - 1
            grad = layer.backward(
                grad, input_grad=input_grad or not is_first, dense_weight_grad=dense_weight_grad
            )
        return grad

    def forward_until(self, position, x, batch_size=None):
        """The input of layer ``position``: x run through ``layers[:position]``.

        x: (N, *input_shape) -> the shape ``shapes()[position][0]`` for N examples;
        position 0 returns x itself. batch_size: None runs x at once, else in batches
        of that many examples (less memory).
        The layers keep the caches of the last batch, as after any forward pass.
        """
        if position == 0:
            return x
        if batch_size is not None:
            return np.concatenate([self.forward_until(position, x[start:start + batch_size])
                                   for start in range(0, len(x), batch_size)])
        for layer in self.layers[:position]:
            x = layer.forward(x)
        return x

    def _check_input(self, x):
        """Dtype and shape only: forward is the hot loop, so values are not scanned."""
        if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
            kind = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
            raise InvalidArgumentError(
                f"{self.name} expects float32 (or float64) inputs in [0, 1], got {kind}: "
                f"scale uint8 pixels with nestref.data.datasets.scale_pixels "
                f"(or nestref.core.train.prepare_inputs, which also reshapes)")
        if tuple(x.shape[1:]) != self.input_shape or len(x) == 0:
            raise InvalidArgumentError(
                f"{self.name} expects inputs of shape (N, {', '.join(map(str, self.input_shape))}) "
                f"with N >= 1, got {x.shape}")

    def predict(self, x, batch_size=1000):
        """Logits for x, computed in batches. x: (N, *input_shape) -> (N, n_classes).

        x is checked for its shape, not its values: pixels are floats in [0, 1]
        (``nestref.data.datasets.scale_pixels``), and a NaN gives NaN logits. A pass over x to check
        them would cost as much as a compact network's whole predict; ``nestref predict``
        checks its images before it calls this.
        """
        if isinstance(x, np.ndarray) and len(x) == 0 and tuple(x.shape[1:]) == self.input_shape:
            # the last layer with a bias says the dtype (a compact network has no masked layers)
            dtype = next((layer.bias.dtype for layer in reversed(self.layers)
                          if hasattr(layer, "bias")), np.float32)
            return np.zeros((0,) + tuple(self.shapes()[-1][1]), dtype=dtype)
        self._check_input(x)
        check_positive_int("batch_size", batch_size)
        return np.concatenate(
            [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        )

    def masked_layers(self):
        """[(position in self.layers, layer)] for every Dense and Conv2d, in order."""
        return [(i, layer) for i, layer in enumerate(self.layers) if isinstance(layer, MaskedLayer)]

    def shapes(self):
        """[(input shape, output shape)] of each layer for one example."""
        shapes, shape = [], self.input_shape
        for layer in self.layers:
            try:
                out = layer.output_shape(shape)
            except Exception as err:
                raise ValueError(
                    f"{self.name}: {layer!r} cannot take input of shape {shape}: {err}"
                ) from err
            if isinstance(layer, MaskedLayer) and shape[0] != layer.n_in:
                raise ValueError(
                    f"{self.name}: {layer!r} expects {layer.n_in} input units, gets {shape[0]}"
                )
            shapes.append((shape, out))
            shape = out
        return shapes

    def widths(self):
        """Output units of every masked layer, e.g. [300, 100, 10]."""
        return [layer.n_out for _, layer in self.masked_layers()]

    def copy(self):
        """An independent deep copy (caches included)."""
        return copy.deepcopy(self)

    # ------------------------------------------------------------ serialisation
    def to_arrays(self):
        """Everything needed to rebuild the network, as a dict of plain arrays (npz-ready, no
        pickle)."""
        spec = {"name": self.name, "input_shape": list(self.input_shape),
                "layers": [layer.config() for layer in self.layers],
                "dtype": str(self.masked_layers()[0][1].weight.dtype)}
        arrays = {"spec": np.array(json.dumps(spec))}
        for i, layer in self.masked_layers():
            for key in ("weight", "mask", "bias", "grown"):
                arrays[f"layer{i}.{key}"] = getattr(layer, key)
            extra = getattr(layer, "area_mask", None)
            if extra is not None:
                arrays[f"layer{i}.area_mask"] = extra
        return arrays

    @classmethod
    def from_arrays(cls, arrays):
        """Inverse of ``to_arrays``."""
        spec = json.loads(str(arrays["spec"]))
        dtype = np.dtype(spec["dtype"])
        layers = [layer_from_config(cfg, dtype) for cfg in spec["layers"]]
        for i, layer in enumerate(layers):
            if isinstance(layer, MaskedLayer):
                for key in ("weight", "mask", "bias", "grown"):
                    setattr(layer, key, np.array(arrays[f"layer{i}.{key}"]))
                if f"layer{i}.area_mask" in arrays:
                    layer.area_mask = np.array(arrays[f"layer{i}.area_mask"])
        return cls(layers, spec["input_shape"], spec["name"])

    def __repr__(self):
        return f"Network({self.name!r}, input_shape={self.input_shape}, layers={self.layers})"


def loss_and_grads(net, x, y, dense_weight_grad=False):
    """Forward and backward on one batch (softmax cross-entropy, mean over the batch).

    Leaves grad_weight / grad_bias in every masked layer (grad_weight computed at once
    at every position with dense_weight_grad=True, else when first read by sparse
    layers). Returns (loss, logits).
    """
    logits = net.forward(x)
    loss, grad = softmax_cross_entropy(logits, y)
    net.backward(grad, input_grad=False, dense_weight_grad=dense_weight_grad)
    return loss, logits


# ---------------------------------------------------------------- unit surgery
def next_masked(net, position):
    """The masked layer fed by masked layer ``position``, and how many of its inputs
    each of our units feeds: 1, or H*W when a Flatten sits between a conv and a dense.

    returns (next position, block size)
    """
    masked = [i for i, _ in net.masked_layers()]
    if position not in masked:
        raise ValueError(f"layer {position} of {net.name} is not a Dense or Conv2d layer")
    later = [i for i in masked if i > position]
    if not later:
        raise ValueError(
            f"layer {position} of {net.name} is the output layer; only hidden layers change width"
        )
    nxt = later[0]
    shapes = net.shapes()
    for i in range(position + 1, nxt):
        if isinstance(net.layers[i], Flatten):
            _, h, w = shapes[i][0]  # feature map c becomes columns c*h*w ... (c+1)*h*w - 1
            return nxt, h * w
    return nxt, 1


def _unit_index(n_units, block):
    """Column indices of each unit's block: (n_units, block)."""
    return np.arange(n_units * block).reshape(n_units, block)


def _resized(arrays, axis_of, resize):
    """``resize(array, axis)`` of every named array that exists, as a new dict."""
    return {name: resize(arrays[name], axis) for name, axis in axis_of.items()
            if arrays.get(name) is not None}


def keep_units(net, position, keep, optimizer=None):
    """Keep only the output units ``keep`` (sorted indices) of hidden masked layer ``position``.

    Shrinks the layer's rows and the next masked layer's matching columns (and the
    momentum buffers of ``optimizer``, if given, which must hold ``velocity[position]``
    dicts of arrays shaped like the parameters). Does not fold biases: see
    ``nestref.nest.prune`` for removal that preserves the function.
    """
    keep = np.asarray(keep, dtype=np.int64)
    layer = net.layers[position]
    if (
        keep.ndim != 1
        or (keep.size and (keep.min() < 0 or keep.max() >= layer.n_out))
        or np.any(np.diff(keep) <= 0)
    ):
        raise ValueError(
            f"keep must be sorted unique unit indices in [0, {layer.n_out}), got {keep}"
        )
    nxt, block = next_masked(net, position)
    cols = _unit_index(layer.n_out, block)[keep].reshape(-1)
    _resize_unit_arrays(net, optimizer, position, layer.output_unit_arrays,
                        lambda a, ax: np.take(a, keep, axis=ax))
    _resize_unit_arrays(net, optimizer, nxt, net.layers[nxt].input_unit_arrays,
                        lambda a, ax: np.take(a, cols, axis=ax))


def add_units(net, position, count, optimizer=None):
    """Append ``count`` new output units to hidden masked layer ``position``, all zero.

    New rows (layer ``position``) and columns (next masked layer) have weight 0,
    mask 0, bias 0 and ``grown = True``; the caller then opens connections by
    writing weights and masks. A partial-area mask, where there is one, starts whole
    (all ones) for the new units: only pruning restricts areas. Returns the new
    units' indices.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    layer = net.layers[position]
    nxt, block = next_masked(net, position)
    old = layer.n_out

    def append(a, axis, n):
        pad = [(0, 0)] * a.ndim
        pad[axis] = (0, n)
        return np.pad(a, pad, constant_values=False if a.dtype == bool else 0)

    old_next_in = net.layers[nxt].n_in
    _resize_unit_arrays(net, optimizer, position, layer.output_unit_arrays,
                        lambda a, ax: append(a, ax, count))
    _resize_unit_arrays(net, optimizer, nxt, net.layers[nxt].input_unit_arrays,
                        lambda a, ax: append(a, ax, count * block))
    layer, nxt_layer = net.layers[position], net.layers[nxt]
    layer.grown[old:] = True
    if getattr(layer, "area_mask", None) is not None:
        layer.area_mask[old:] = 1
    if getattr(nxt_layer, "area_mask", None) is not None:
        nxt_layer.area_mask[:, old_next_in:] = 1
    return np.arange(old, old + count)


def _resize_unit_arrays(net, optimizer, position, axis_of, resize):
    """Replace each of layer ``position``'s arrays named in ``axis_of`` (and the optimizer's
    momentum for it) by ``resize(array, axis)``, the axis being that array's unit axis."""
    layer = net.layers[position]
    current = {name: getattr(layer, name, None) for name in axis_of}
    for name, value in _resized(current, axis_of, resize).items():
        setattr(layer, name, value)
    # cached gradients no longer match the new shape
    layer.grad_weight = layer.grad_bias = None
    if optimizer is not None and position in optimizer.velocity:
        optimizer.velocity[position].update(_resized(optimizer.velocity[position], axis_of, resize))
