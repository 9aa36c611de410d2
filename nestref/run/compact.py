"""Compaction: a pruned network as a physically smaller one, for inference only.

A masked network still multiplies by every zero it has pruned. ``compact(net)``
builds a ``CompactNetwork`` that does not:

    1. dead units are removed (on a copy, ``nestref.nest.prune.remove_dead_neurons``),
       so every weight matrix shrinks to the surviving widths;
    2. each Dense layer whose density is below ``sparse_below`` (0.3 by default)
       becomes a ``SparseDense``: CSR over the input units it uses (an input no
       weight reads, e.g. a border pixel, is not even gathered), multiplied by
       ``nestref.core.kernels.csr_chain`` (blocks of 64 examples through every sparse layer in a
       row, the examples shared among threads); denser ones stay
       ``nestref.core.layers.Dense`` with their pruned weights (BLAS);
    3. conv layers stay ``nestref.core.layers.Conv2d`` with the masks applied (W*M) and
       their area masks; ReLU, MaxPool2d and Flatten are ``nestref.core.layers``' own.

``CompactNetwork`` is a ``nestref.core.network.Network``: the same forward and predict.
``compact(net).predict(x)`` gives the masked network's logits (up to float rounding).
``save_compact`` / ``load_compact`` store it as an .npz (no pickle); ``load_compact``
checks everything it reads before any kernel sees it (``ModelFileError``).
"""

import json
import math
from pathlib import Path

import numpy as np

from ..core import kernels
from ..core.layers import Conv2d, Dense, Flatten, Layer, MaxPool2d, ReLU
from ..core.network import Network
from ..data.storage import load_arrays, save_arrays
from ..errors import InvalidArgumentError, ModelFileError
from ..nest.prune import remove_dead_neurons

FORMAT = "nestref-compact"
VERSION = 2


# ======================================================= the one new layer
class SparseDense(Layer):
    r"""$u = x W^\top + b$ with W (out, in) stored as CSR over the input units it uses.

    x (N, in) -> u (N, out). ``used``: the input units with a nonzero weight, ascending;
    ``local_indices`` count among them (0 .. len(used) - 1), so ``kernels.csr_chain`` gathers
    only those columns of x, a block of examples at a time. Inference only: no backward.
    """

    def __init__(self, data, indices, indptr, n_in, bias):
        self.data, self.bias = np.asarray(data), np.asarray(bias)
        indices, self.indptr = np.asarray(indices, np.int64), np.asarray(indptr, np.int64)
        self.n_in = int(n_in)
        if self.indptr.shape != (len(self.bias) + 1,) or not self.indptr[-1] == len(
            self.data
        ) == len(indices):
            raise ValueError(
                "CSR arrays do not fit together: need indptr (out+1,), indptr[-1] == len(data) == "
                "len(indices)"
            )
        self.used, self.local_indices = np.unique(indices, return_inverse=True)
        self.local_indices = self.local_indices.astype(np.int64).reshape(-1)

    @classmethod
    def from_dense(cls, weight, bias):
        """weight (out, in), zeros where pruned."""
        rows, cols = np.nonzero(weight)  # row-major order: exactly CSR's order
        indptr = np.zeros(weight.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=weight.shape[0]), out=indptr[1:])
        return cls(weight[rows, cols], cols, indptr, weight.shape[1], bias)

    @property
    def indices(self):
        """Column of each stored weight in the full input (0 .. n_in - 1)."""
        return self.used[self.local_indices]

    @property
    def n_out(self):
        return len(self.bias)

    def forward(self, x):
        return kernels.csr_chain(x, [self.chain_layer(relu=False)], columns=self.used)

    def chain_layer(self, relu, local=True):
        """(data, indices, indptr, bias, relu): this layer as one link of ``kernels.csr_chain``;
        local: indices among ``used`` (a first link), else among all n_in inputs."""
        indices = self.local_indices if local else self.indices
        return self.data, indices, self.indptr, self.bias, relu

    def backward(self, grad_out, input_grad=True, dense_weight_grad=False):
        raise NotImplementedError(
            "a compact network is for inference only; train the masked network"
        )

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.n_in,):
            raise ValueError(f"SparseDense takes ({self.n_in},) inputs, got {tuple(input_shape)}")
        return (self.n_out,)

    def config(self):
        return {
            "type": "SparseDense",
            "n_in": self.n_in,
            "n_out": self.n_out,
            "nnz": len(self.data),
        }

    def arrays(self):
        return {
            "data": self.data,
            "indices": self.indices,
            "indptr": self.indptr,
            "bias": self.bias,
        }


def _fixed(layer, weight, bias, area_mask=None):
    """``layer`` (a fresh Dense or Conv2d) computing with these weights, every position active."""
    layer.weight, layer.bias = np.asarray(weight), np.asarray(bias)
    layer.mask = np.ones_like(layer.weight)  # the mask is applied to the weight already
    if area_mask is not None:
        layer.area_mask = np.asarray(area_mask)
    return layer


def _layer_arrays(layer):
    """The arrays ``save_compact`` stores for one layer (none for ReLU, pooling, flatten)."""
    if isinstance(layer, SparseDense):
        return layer.arrays()
    if isinstance(layer, (Dense, Conv2d)):
        found = {"weight": layer.weight, "bias": layer.bias}
        if getattr(layer, "area_mask", None) is not None:
            found["area_mask"] = layer.area_mask
        return found
    return {}


# ============================================================ the network
class CompactNetwork(Network):
    """An inference-only ``Network`` of compact layers.

    forward: x (N, *input_shape) -> logits (N, n_classes)

    A run of ``SparseDense`` layers, each maybe followed by a ``ReLU`` (a compact MLP, or a
    LeNet-5's classifier after its Flatten), is computed in one ``kernels.csr_chain`` call: a
    block of examples goes through every layer of the run while it is in cache.
    """

    def forward(self, x):
        self._check_input(x)
        for run in self._runs():
            if isinstance(run[0], SparseDense):
                sparse = [(layer, position + 1 < len(run) and isinstance(run[position + 1], ReLU))
                          for position, layer in enumerate(run) if isinstance(layer, SparseDense)]
                # the first link reads only its used inputs; the others read every output of
                # the link before them
                links = [layer.chain_layer(relu, local=link == 0)
                         for link, (layer, relu) in enumerate(sparse)]
                x = kernels.csr_chain(x, links, columns=sparse[0][0].used)
            else:
                x = run[0].forward(x)
        return x

    def _runs(self):
        """self.layers cut into runs: [SparseDense, ReLU?, SparseDense, ReLU?, ...], or one
        other layer."""
        runs = []
        for layer in self.layers:
            joins = runs and isinstance(runs[-1][0], SparseDense) and (
                isinstance(layer, SparseDense) and isinstance(runs[-1][-1], (SparseDense, ReLU))
                or isinstance(layer, ReLU) and isinstance(runs[-1][-1], SparseDense))
            if joins:
                runs[-1].append(layer)
            else:
                runs.append([layer])
        return runs

    def summary(self):
        """One config dict per layer: type, sizes, and ``nnz`` (stored nonzero weights) where
        there are weights; conv layers say whether they have a ``partial_area``."""
        rows = []
        for layer in self.layers:
            row = layer.config()
            if isinstance(layer, (Dense, Conv2d)):
                row["nnz"] = int(np.count_nonzero(layer.weight))
            if isinstance(layer, Conv2d):
                row["partial_area"] = layer.area_mask is not None
            rows.append(row)
        return rows

    def to_arrays(self):
        """A dict of plain arrays (npz-ready, no pickle); inverse: ``from_arrays``."""
        spec = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "layers": self.summary(),
        }
        found = {"spec": np.array(json.dumps(spec))}
        for i, layer in enumerate(self.layers):
            found.update({f"layer{i}.{key}": value for key, value in _layer_arrays(layer).items()})
        return found

    @classmethod
    def from_arrays(cls, arrays, source="the arrays"):
        """Inverse of ``to_arrays``, after checking every field (errors name ``source``)."""
        return _ModelReader(arrays, source).network()

    def __repr__(self):
        shape = self.input_shape
        return f"CompactNetwork({self.name!r}, input_shape={shape}, layers={self.summary()})"


def _compact_layer(layer, sparse_below):
    if isinstance(layer, Dense):
        weight = layer.effective_weight()
        if layer.density() < sparse_below:
            return SparseDense.from_dense(weight, layer.bias.copy())
        return _fixed(Dense(layer.n_in, layer.n_out, dtype=weight.dtype), weight, layer.bias.copy())
    if isinstance(layer, Conv2d):
        area = None if layer.area_mask is None else layer.area_mask.copy()
        conv = Conv2d(
            layer.n_in,
            layer.n_out,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            dtype=layer.weight.dtype,
        )
        return _fixed(conv, layer.effective_weight(), layer.bias.copy(), area)
    if isinstance(layer, ReLU):
        return ReLU()
    if isinstance(layer, MaxPool2d):
        return MaxPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, Flatten):
        return Flatten()
    raise TypeError(f"compact does not know layer {layer!r}")


def compact(net, sparse_below=0.3):
    """A ``CompactNetwork`` computing the same logits as ``net`` (which is not modified).

    sparse_below: Dense layers with density (after dead units are gone) below it are
    stored as CSR, the others densely.
    """
    if not isinstance(net, Network):
        raise InvalidArgumentError(f"compact needs a nestref.core.network.Network, got "
                                   f"{type(net).__name__}")
    if (
        isinstance(sparse_below, bool)
        or not isinstance(sparse_below, (int, float))
        or not 0 <= sparse_below <= 1
    ):
        raise ValueError(f"sparse_below must be a number in [0, 1], got {sparse_below!r}")
    pruned = net.copy()
    remove_dead_neurons(pruned)
    return CompactNetwork(
        [_compact_layer(layer, sparse_below) for layer in pruned.layers],
        pruned.input_shape,
        name=f"{net.name}-compact",
    )


def save_compact(path, cnet):
    """Write ``cnet`` to ``path`` (.npz, atomic, no pickle)."""
    save_arrays(path, cnet.to_arrays())


def load_compact(path):
    """Read a ``CompactNetwork`` written by ``save_compact``; ``ModelFileError`` if it is wrong."""
    path = Path(path)
    try:
        arrays = load_arrays(path)
    except (OSError, ValueError) as err:  # missing, unreadable, not an npz
        raise ModelFileError(
            f"{path}: cannot read it as a compact model ({err}); give the model.npz that "
            f"`nestref synthesize` wrote"
        ) from err
    return CompactNetwork.from_arrays(arrays, source=str(path))


# ============================================================ validation
_REWRITE = ("the file is damaged or not a nestref compact model: "
            "write it again with nestref.run.compact.save_compact")


class _ModelReader:
    """Checks a compact model's arrays completely, then builds the network.

    Every problem raises ``ModelFileError("<source>: <field>: <what is wrong>; <fix>")``.
    """

    def __init__(self, arrays, source):
        self.arrays, self.source = arrays, source

    def fail(self, field, problem):
        raise ModelFileError(f"{self.source}: {field}: {problem}; {_REWRITE}")

    def network(self):
        spec = self.spec()
        layers = [self.layer(i, cfg) for i, cfg in enumerate(spec["layers"])]
        try:
            net = CompactNetwork(layers, spec["input_shape"], spec["name"])
        except ValueError as err:  # the layers do not chain
            self.fail("spec.layers", f"the layers do not fit together ({err})")
        for i, (_, shape_out) in enumerate(net.shapes()):
            area = getattr(layers[i], "area_mask", None)
            if area is not None:
                expected = (layers[i].n_out, layers[i].n_in) + tuple(shape_out[1:])
                if area.shape != expected:
                    self.fail(f"layer{i}.area_mask", f"shape {area.shape}, expected {expected}")
        return net

    def spec(self):
        if "spec" not in self.arrays:
            self.fail("spec", f"missing (no spec inside: not a {FORMAT} file)")
        try:
            spec = json.loads(str(self.arrays["spec"]))
        except (ValueError, TypeError) as err:
            self.fail("spec", f"not JSON ({err})")
        if not isinstance(spec, dict):
            self.fail("spec", f"a {type(spec).__name__}, expected a JSON object")
        if spec.get("format") != FORMAT or spec.get("version") != VERSION:
            self.fail(
                "spec",
                f"not a {FORMAT} v{VERSION} file: format={spec.get('format')!r}, "
                f"version={spec.get('version')!r}",
            )
        shape = spec.get("input_shape")
        if not isinstance(shape, list) or not shape or not all(_is_count(s) for s in shape):
            self.fail("spec.input_shape", f"{shape!r}, expected a list of positive ints")
        if not isinstance(spec.get("name"), str):
            self.fail("spec.name", f"{spec.get('name')!r}, expected a string")
        if not isinstance(spec.get("layers"), list) or not spec["layers"]:
            self.fail("spec.layers", f"{spec.get('layers')!r}, expected a non-empty list")
        return spec

    def layer(self, i, cfg):
        field = f"spec.layers[{i}]"
        if not isinstance(cfg, dict) or cfg.get("type") not in _READERS:
            kind = cfg.get("type") if isinstance(cfg, dict) else cfg
            self.fail(field, f"unknown layer kind {kind!r}, expected one of {sorted(_READERS)}")
        return _READERS[cfg["type"]](self, i, cfg)

    def count(self, i, cfg, key, low=1):
        value = cfg.get(key)
        if not (_is_count(value, low)):
            self.fail(f"spec.layers[{i}].{key}", f"{value!r}, expected an int >= {low}")
        return value

    def array(self, i, key, shape, kind="f"):
        """layer{i}.{key}, checked: present, of the kind (f: finite floats, i: ints) and shape."""
        field = f"layer{i}.{key}"
        if field not in self.arrays:
            self.fail(field, "missing")
        a = np.asarray(self.arrays[field])
        if a.dtype.kind not in ("f" if kind == "f" else "iu"):
            self.fail(field, f"dtype {a.dtype}, expected {'floats' if kind == 'f' else 'integers'}")
        if tuple(a.shape) != tuple(shape):
            self.fail(field, f"shape {a.shape}, expected {tuple(shape)}")
        if kind == "f" and not np.all(np.isfinite(a)):
            self.fail(field, "holds NaN or inf")
        return a

    def stored_nonzeros(self, i, cfg, weight):
        """weight, once the spec's nnz is seen to count its nonzeros."""
        nnz = self.count(i, cfg, "nnz", 0)
        if nnz != np.count_nonzero(weight):
            self.fail(
                f"spec.layers[{i}].nnz",
                f"{nnz}, but layer{i}.weight has {np.count_nonzero(weight)} nonzeros",
            )
        return weight

    def sparse_dense(self, i, cfg):
        n_in, n_out, nnz = (
            self.count(i, cfg, "n_in"),
            self.count(i, cfg, "n_out"),
            self.count(i, cfg, "nnz", 0),
        )
        indptr = self.array(i, "indptr", (n_out + 1,), "i").astype(np.int64)
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != nnz:
            self.fail(
                f"layer{i}.indptr",
                f"row starts must rise from 0 to nnz={nnz}, got {indptr[0]} .. "
                f"{indptr[-1]}" + (" (falling somewhere)" if np.any(np.diff(indptr) < 0) else ""),
            )
        indices = self.array(i, "indices", (nnz,), "i")
        if nnz and (indices.min() < 0 or indices.max() >= n_in):
            bad = indices[(indices < 0) | (indices >= n_in)][0]
            self.fail(f"layer{i}.indices", f"column index {bad} out of range [0, {n_in})")
        return SparseDense(
            self.array(i, "data", (nnz,)), indices, indptr, n_in, self.array(i, "bias", (n_out,))
        )

    def dense(self, i, cfg):
        n_in, n_out = self.count(i, cfg, "n_in"), self.count(i, cfg, "n_out")
        weight = self.stored_nonzeros(i, cfg, self.array(i, "weight", (n_out, n_in)))
        return _fixed(
            Dense(n_in, n_out, dtype=weight.dtype), weight, self.array(i, "bias", (n_out,))
        )

    def conv(self, i, cfg):
        in_c, out_c, k = (self.count(i, cfg, key) for key in ("in_c", "out_c", "kernel_size"))
        stride, padding = self.count(i, cfg, "stride"), self.count(i, cfg, "padding", 0)
        weight = self.stored_nonzeros(i, cfg, self.array(i, "weight", (out_c, in_c, k, k)))
        partial_area = cfg.get("partial_area")
        if not isinstance(partial_area, bool):
            self.fail(f"spec.layers[{i}].partial_area", f"{partial_area!r}, expected true or false")
        if not partial_area and f"layer{i}.area_mask" in self.arrays:
            self.fail(
                f"layer{i}.area_mask", "present, but the spec says the layer has no partial area"
            )
        area = None
        if partial_area:
            area = np.asarray(self.arrays.get(f"layer{i}.area_mask", np.zeros(0)))
            shape = area.shape if area.ndim == 4 else (out_c, in_c, "Ho", "Wo")
            area = self.array(i, "area_mask", shape)  # its Ho, Wo are checked once the shapes chain
        conv = Conv2d(in_c, out_c, k, stride, padding, dtype=weight.dtype)
        return _fixed(conv, weight, self.array(i, "bias", (out_c,)), area)

    def pool(self, i, cfg):
        return MaxPool2d(self.count(i, cfg, "kernel_size"), self.count(i, cfg, "stride"))


def _is_count(value, low=1):
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and low <= value < 2**31
        and math.isfinite(value)
    )


_READERS = {
    "SparseDense": _ModelReader.sparse_dense,
    "Dense": _ModelReader.dense,
    "Conv2d": _ModelReader.conv,
    "MaxPool2d": _ModelReader.pool,
    "ReLU": lambda reader, i, cfg: ReLU(),
    "Flatten": lambda reader, i, cfg: Flatten(),
}
