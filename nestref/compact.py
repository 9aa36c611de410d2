"""Compaction: a pruned network as a physically smaller one, for inference only.

A masked network still multiplies by every zero it has pruned. ``compact(net)``
builds a ``CompactNetwork`` that does not:

    1. dead units are removed (on a copy, ``nestref.prune.remove_dead_neurons``),
       so every weight matrix shrinks to the surviving widths;
    2. each Dense layer is stored as CSR (data, indices, indptr) when its density is
       below ``sparse_below`` (0.3 by default) and multiplied with the Numba kernel
       ``nestref.kernels.csr_matmul``; denser ones stay dense matrices (BLAS);
    3. conv layers keep dense kernels with the masks applied (W*M), and their area masks.

``CompactNetwork.forward(x)`` gives the masked network's logits (up to float
rounding). ``save_compact`` / ``load_compact`` store it as an .npz (no pickle).
"""
import json

import numpy as np

from . import kernels
from .layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from .prune import remove_dead_neurons
from .storage import load_arrays, save_arrays

FORMAT = "nestref-compact"
VERSION = 1


# ======================================================= inference-only layers
class SparseDense:
    """u = x @ W.T + b with W (out, in) stored as CSR. x (N, in) -> (N, out)."""

    def __init__(self, data, indices, indptr, n_in, bias):
        self.data, self.indices, self.indptr = np.asarray(data), np.asarray(indices, np.int64), np.asarray(indptr, np.int64)
        self.n_in, self.bias = int(n_in), np.asarray(bias)
        if self.indptr.shape != (len(self.bias) + 1,) or not self.indptr[-1] == len(self.data) == len(self.indices):
            raise ValueError("CSR arrays do not fit together: need indptr (out+1,), indptr[-1] == len(data) == len(indices)")

    @classmethod
    def from_dense(cls, weight, bias):
        """weight (out, in), zeros where pruned."""
        rows, cols = np.nonzero(weight)  # row-major order: exactly CSR's order
        indptr = np.zeros(weight.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=weight.shape[0]), out=indptr[1:])
        return cls(weight[rows, cols], cols, indptr, weight.shape[1], bias)

    @property
    def n_out(self):
        return len(self.bias)

    def forward(self, x):
        return kernels.csr_matmul(x, self.data, self.indices, self.indptr, self.n_out) + self.bias

    def config(self):
        return {"type": "SparseDense", "n_in": self.n_in, "n_out": self.n_out, "nnz": len(self.data)}

    def arrays(self):
        return {"data": self.data, "indices": self.indices, "indptr": self.indptr, "bias": self.bias}

    @classmethod
    def from_arrays(cls, cfg, arrays):
        return cls(arrays["data"], arrays["indices"], arrays["indptr"], cfg["n_in"], arrays["bias"])


class DenseMatrix:
    """u = x @ W.T + b with W stored densely, transposed (in, out) for the product. x (N, in) -> (N, out)."""

    def __init__(self, weight_t, bias):
        self.weight_t, self.bias = np.ascontiguousarray(weight_t), np.asarray(bias)

    def forward(self, x):
        return x @ self.weight_t + self.bias

    def config(self):
        n_in, n_out = self.weight_t.shape
        return {"type": "DenseMatrix", "n_in": n_in, "n_out": n_out, "nnz": int(np.count_nonzero(self.weight_t))}

    def arrays(self):
        return {"weight_t": self.weight_t, "bias": self.bias}

    @classmethod
    def from_arrays(cls, cfg, arrays):
        return cls(arrays["weight_t"], arrays["bias"])


class ConvKernels:
    """A convolution with fixed kernels (W*M) and optional area mask; computed by ``Conv2d``'s forward.

    x (N, in_c, H, W) -> (N, out_c, Ho, Wo)
    """

    def __init__(self, kernel, bias, stride, padding, area_mask=None):
        out_c, in_c, k, _ = kernel.shape
        self.conv = Conv2d(in_c, out_c, k, stride, padding, dtype=kernel.dtype)
        self.conv.weight = np.asarray(kernel)
        self.conv.mask = np.ones_like(self.conv.weight)  # the kernel has its mask applied already
        self.conv.bias = np.asarray(bias)
        self.conv.area_mask = None if area_mask is None else np.asarray(area_mask)

    def forward(self, x):
        return self.conv.forward(x)

    def config(self):
        return {"type": "ConvKernels", "stride": self.conv.stride, "padding": self.conv.padding,
                "nnz": int(np.count_nonzero(self.conv.weight))}

    def arrays(self):
        found = {"kernel": self.conv.weight, "bias": self.conv.bias}
        if self.conv.area_mask is not None:
            found["area_mask"] = self.conv.area_mask
        return found

    @classmethod
    def from_arrays(cls, cfg, arrays):
        return cls(arrays["kernel"], arrays["bias"], cfg["stride"], cfg["padding"], arrays.get("area_mask"))


class Relu:
    """max(x, 0), without the backward caches of ``nestref.layers.ReLU``."""

    def forward(self, x):
        return np.maximum(x, 0)

    def config(self):
        return {"type": "Relu"}

    def arrays(self):
        return {}


class MaxPool:
    """Max over k x k windows with the given stride; (N, C, H, W) -> (N, C, Ho, Wo)."""

    def __init__(self, kernel_size, stride):
        self.kernel_size, self.stride = int(kernel_size), int(stride)

    def forward(self, x):
        return kernels.maxpool_forward(x, self.kernel_size, self.stride)[0]

    def config(self):
        return {"type": "MaxPool", "kernel_size": self.kernel_size, "stride": self.stride}

    def arrays(self):
        return {}


class FlattenMaps:
    """(N, C, H, W) -> (N, C*H*W), channel-major like ``nestref.layers.Flatten``."""

    def forward(self, x):
        return x.reshape(len(x), -1)

    def config(self):
        return {"type": "FlattenMaps"}

    def arrays(self):
        return {}


_FROM_ARRAYS = {
    "SparseDense": SparseDense.from_arrays,
    "DenseMatrix": DenseMatrix.from_arrays,
    "ConvKernels": ConvKernels.from_arrays,
    "Relu": lambda cfg, arrays: Relu(),
    "MaxPool": lambda cfg, arrays: MaxPool(cfg["kernel_size"], cfg["stride"]),
    "FlattenMaps": lambda cfg, arrays: FlattenMaps(),
}


# ============================================================ the network
class CompactNetwork:
    """An inference-only chain of compact layers. forward: x (N, *input_shape) -> logits (N, n_classes)."""

    def __init__(self, layers, input_shape, name="compact"):
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.name = name

    def forward(self, x):
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name} expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def predict(self, x, batch_size=1000):
        """Logits for x, computed in batches. x: (N, *input_shape) -> (N, n_classes)."""
        return np.concatenate([self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    def summary(self):
        """One config dict per layer (type, sizes, stored nonzeros)."""
        return [layer.config() for layer in self.layers]

    def to_arrays(self):
        """A dict of plain arrays (npz-ready, no pickle); inverse: ``from_arrays``."""
        spec = {"format": FORMAT, "version": VERSION, "name": self.name, "input_shape": list(self.input_shape),
                "layers": self.summary()}
        found = {"spec": np.array(json.dumps(spec))}
        for i, layer in enumerate(self.layers):
            found.update({f"layer{i}.{key}": value for key, value in layer.arrays().items()})
        return found

    @classmethod
    def from_arrays(cls, arrays):
        if "spec" not in arrays:
            raise ValueError("not a compact network: no spec inside")
        spec = json.loads(str(arrays["spec"]))
        if spec.get("format") != FORMAT or spec.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} v{VERSION} file: format={spec.get('format')!r}, version={spec.get('version')!r}")
        layers = []
        for i, cfg in enumerate(spec["layers"]):
            prefix = f"layer{i}."
            own = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
            layers.append(_FROM_ARRAYS[cfg["type"]](cfg, own))
        return cls(layers, spec["input_shape"], spec["name"])

    def __repr__(self):
        return f"CompactNetwork({self.name!r}, input_shape={self.input_shape}, layers={self.summary()})"


def _compact_layer(layer, sparse_below):
    if isinstance(layer, Dense):
        weight = layer.effective_weight()
        if layer.density() < sparse_below:
            return SparseDense.from_dense(weight, layer.bias.copy())
        return DenseMatrix(weight.T, layer.bias.copy())
    if isinstance(layer, Conv2d):
        area = None if layer.area_mask is None else layer.area_mask.copy()
        return ConvKernels(layer.effective_weight(), layer.bias.copy(), layer.stride, layer.padding, area)
    if isinstance(layer, ReLU):
        return Relu()
    if isinstance(layer, MaxPool2d):
        return MaxPool(layer.kernel_size, layer.stride)
    if isinstance(layer, Flatten):
        return FlattenMaps()
    raise TypeError(f"compact does not know layer {layer!r}")


def compact(net, sparse_below=0.3):
    """A ``CompactNetwork`` computing the same logits as ``net`` (which is not modified).

    sparse_below: Dense layers with density (after dead units are gone) below it are
    stored as CSR, the others densely.
    """
    if not 0.0 <= sparse_below <= 1.0:
        raise ValueError(f"sparse_below must be in [0, 1], got {sparse_below}")
    pruned = net.copy()
    remove_dead_neurons(pruned)
    return CompactNetwork([_compact_layer(layer, sparse_below) for layer in pruned.layers],
                          pruned.input_shape, name=f"{net.name}-compact")


def save_compact(path, cnet):
    """Write ``cnet`` to ``path`` (.npz, atomic, no pickle)."""
    save_arrays(path, cnet.to_arrays())


def load_compact(path):
    """Read a ``CompactNetwork`` written by ``save_compact``."""
    return CompactNetwork.from_arrays(load_arrays(path))
