"""Checkpoints: a network, its optimizer's momentum and a run's state in one ``.npz``.

Checkpoints keep the version before the latest (``checkpoint.prev.npz`` beside
``checkpoint.npz``) until a new one is safely on disk; ``resume_checkpoint`` falls back
to it when the latest is missing or corrupt, and says so. Everything read back is
validated before a network is built from it: a tampered file raises
``CheckpointError`` naming the file and the field.
"""
import hashlib
import json
from pathlib import Path

import numpy as np

from ..checks import is_int, is_number
from ..core.network import Network
from ..core.optim import SGD
from ..data.storage import checkpoint_exists, load_arrays, previous_path, save_arrays, to_array
from ..errors import CheckpointError

__all__ = ["checkpoint_exists", "load_checkpoint", "load_network", "resume_checkpoint",
           "save_checkpoint"]


def save_checkpoint(path, net, optimizer=None, state=None, keep_previous=True):
    """Write network, momentum and a JSON-able ``state`` dict to ``path`` atomically.

    keep_previous: the file being replaced becomes ``<name>.prev.npz`` (see ``resume_checkpoint``).
    """
    arrays = dict(net.to_arrays())
    if optimizer is not None:
        arrays.update(optimizer.to_arrays())
        arrays["optimizer"] = {"lr": optimizer.lr, "momentum": optimizer.momentum,
                               "weight_decay": optimizer.weight_decay}
    arrays["state"] = state or {}
    # a digest of every array, so that a missing or altered one (an optional area mask too) is
    # caught on load
    arrays["manifest"] = {name: _digest(to_array(value)) for name, value in arrays.items()}
    save_arrays(path, arrays, keep_previous=keep_previous)


def _digest(array):
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:32]


_FLOAT_DTYPES = ("float32", "float64")
_LAYER_FIELDS = {
    "Dense": ("n_in", "n_out"),
    "Conv2d": ("in_c", "out_c", "kernel_size", "stride", "padding"),
    "MaxPool2d": ("kernel_size", "stride"),
    "ReLU": (),
    "Flatten": (),
}


def _json_field(path, arrays, key, kind):
    """arrays[key] decoded from JSON, checked to be a ``kind`` (dict or list)."""
    if key not in arrays:
        raise CheckpointError(
            f"{path}: no '{key}' inside; not a nestref checkpoint (or an incomplete one)"
        )
    value = arrays[key]
    if value.shape != () or value.dtype.kind != "U":
        raise CheckpointError(
            f"{path}: '{key}' must be a JSON string, got an array {value.dtype} {value.shape}"
        )
    try:
        decoded = json.loads(str(value))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: '{key}' is not valid JSON ({err})") from err
    if not isinstance(decoded, kind):
        raise CheckpointError(
            f"{path}: '{key}' must be a JSON {kind.__name__}, got {type(decoded).__name__}"
        )
    return decoded


def _array(path, arrays, key, shape, dtype_kind, dtype=None):
    if key not in arrays:
        raise CheckpointError(f"{path}: array '{key}' is missing; the file is incomplete")
    a = arrays[key]
    if a.shape != tuple(shape):
        raise CheckpointError(f"{path}: '{key}' has shape {a.shape}, the spec says {tuple(shape)}")
    if a.dtype.kind != dtype_kind or (dtype is not None and a.dtype != dtype):
        raise CheckpointError(
            f"{path}: '{key}' has dtype {a.dtype}, expected {dtype or dtype_kind}"
        )
    if dtype_kind == "f" and not np.isfinite(a).all():
        raise CheckpointError(f"{path}: '{key}' holds NaN or infinite values")
    return a


def _check_spec(path, arrays):
    """The network spec, checked field by field against the arrays, before anything is built
    from it."""
    spec = _json_field(path, arrays, "spec", dict)
    for key, ok, expected in (("name", lambda v: isinstance(v, str), "a string"),
                              ("input_shape", lambda v: isinstance(v, list) and len(v) in (1, 3)
                               and all(is_int(s) and 1 <= s <= 1 << 20 for s in v),
                               "a list of 1 or 3 positive integers"),
                              ("layers", lambda v: isinstance(v, list) and v
                               and all(isinstance(c, dict) for c in v),
                               "a non-empty list of layer dicts"),
                              ("dtype", lambda v: v in _FLOAT_DTYPES, f"one of {_FLOAT_DTYPES}")):
        if key not in spec or not ok(spec[key]):
            raise CheckpointError(
                f"{path}: spec field '{key}' must be {expected}, got {spec.get(key, '(missing)')!r}"
            )
    dtype = np.dtype(spec["dtype"])
    for i, cfg in enumerate(spec["layers"]):
        kind = cfg.get("type")
        if not isinstance(kind, str) or kind not in _LAYER_FIELDS:
            raise CheckpointError(
                f"{path}: spec layer {i} has unknown type {kind!r}; "
                f"expected one of {sorted(_LAYER_FIELDS)}"
            )
        for name in _LAYER_FIELDS[kind]:
            low = 0 if name == "padding" else 1
            if not (is_int(cfg.get(name)) and low <= cfg[name] <= 1 << 20):
                raise CheckpointError(f"{path}: spec layer {i} ({kind}) field '{name}' must be "
                                      f"an integer >= {low}, got {cfg.get(name, '(missing)')!r}")
        if kind == "Dense":
            shape = (cfg["n_out"], cfg["n_in"])
        elif kind == "Conv2d":
            shape = (cfg["out_c"], cfg["in_c"], cfg["kernel_size"], cfg["kernel_size"])
        else:
            continue
        weight = _array(path, arrays, f"layer{i}.weight", shape, "f", dtype)
        mask = _array(path, arrays, f"layer{i}.mask", shape, "f", dtype)
        _array(path, arrays, f"layer{i}.bias", shape[:1], "f", dtype)
        _array(path, arrays, f"layer{i}.grown", shape[:1], "b")
        if not np.isin(mask, (0, 1)).all():
            raise CheckpointError(f"{path}: 'layer{i}.mask' must hold only 0 and 1")
        if np.any(weight[mask == 0] != 0):
            raise CheckpointError(f"{path}: 'layer{i}.weight' is non-zero where its mask is 0")
    return spec


def _build_network(path, arrays):
    spec = _check_spec(path, arrays)
    masked = {i for i, cfg in enumerate(spec["layers"]) if cfg["type"] in ("Dense", "Conv2d")}
    layer_keys = {k.split(".")[0] for k in arrays if k.startswith("layer")}
    stray = sorted(layer_keys - {f"layer{i}" for i in masked})
    if stray:
        raise CheckpointError(
            f"{path}: arrays of {stray} have no masked layer at that position in the spec"
        )
    if spec["layers"][-1]["type"] != "Dense":
        raise CheckpointError(f"{path}: the spec must end with a Dense layer (the logits), got "
                              f"{spec['layers'][-1].get('type')!r}")
    try:
        net = Network.from_arrays(arrays)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{path}: the network spec does not describe a working network: {err}"
        ) from err
    shapes = net.shapes()
    for i, layer in net.masked_layers():
        if any(s < 1 for s in shapes[i][1]):
            raise CheckpointError(
                f"{path}: spec layer {i} produces an empty output of shape {shapes[i][1]}"
            )
        area = getattr(layer, "area_mask", None)
        if area is not None:
            expected = (layer.n_out, layer.n_in) + tuple(shapes[i][1][1:])
            _array(path, arrays, f"layer{i}.area_mask", expected, "f", layer.weight.dtype)
            if not np.isin(area, (0, 1)).all():
                raise CheckpointError(f"{path}: 'layer{i}.area_mask' must hold only 0 and 1")
    return net


def load_network(path):
    """A network saved with ``save_arrays(path, net.to_arrays())`` (or a checkpoint), validated."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    return _build_network(path, load_arrays(path, error=CheckpointError))


def load_checkpoint(path):
    """Read a checkpoint: returns (net, optimizer or None, state dict).

    Raises CheckpointError, naming the file and the field, for a missing, unreadable,
    incomplete or inconsistent checkpoint; nothing is built from an unchecked array.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    arrays = load_arrays(path, error=CheckpointError)
    if "manifest" in arrays:  # checkpoints from before the manifest are checked field by field only
        manifest = _json_field(path, arrays, "manifest", dict)
        names = set(arrays) - {"manifest"}
        missing, extra = sorted(set(manifest) - names), sorted(names - set(manifest))
        if missing or extra:
            raise CheckpointError(f"{path}: array(s) {missing or extra} are "
                                  f"{'missing' if missing else 'unexpected'}; "
                                  f"the file is incomplete or was altered")
        altered = sorted(k for k in names if manifest[k] != _digest(arrays[k]))
        if altered:
            raise CheckpointError(f"{path}: array(s) {altered} do not match the checkpoint's "
                                  f"manifest; the file was altered or damaged")
    net = _build_network(path, arrays)
    optimizer = None
    if "optimizer" in arrays:
        opt = _json_field(path, arrays, "optimizer", dict)
        if (set(opt) != {"lr", "momentum", "weight_decay"}
                or not all(is_number(v) for v in opt.values())):
            raise CheckpointError(
                f"{path}: 'optimizer' must hold the numbers lr, momentum, weight_decay, got {opt}"
            )
        try:
            optimizer = SGD(net, **opt)
        except ValueError as err:
            raise CheckpointError(f"{path}: 'optimizer' settings are invalid: {err}") from err
        for i, layer in net.masked_layers():
            _array(path, arrays, f"velocity{i}.weight", layer.weight.shape, "f")
            _array(path, arrays, f"velocity{i}.bias", layer.bias.shape, "f")
        optimizer.load_arrays(arrays)
    state = _json_field(path, arrays, "state", dict) if "state" in arrays else {}
    return net, optimizer, state


def resume_checkpoint(path):
    """Load the checkpoint at ``path`` to resume from, falling back to the one kept before it.

    Returns (net, optimizer, state, warning): ``warning`` is None when ``path`` was read,
    else a sentence saying why the previous checkpoint (``previous_path(path)``) was used.
    Raises CheckpointError when neither can be read.
    """
    path, prev = Path(path), previous_path(path)
    try:
        return (*load_checkpoint(path), None)
    except CheckpointError as err:
        if not prev.exists():
            raise
        problem = str(err)
    try:
        net, optimizer, state = load_checkpoint(prev)
    except CheckpointError as err:
        raise CheckpointError(f"neither checkpoint can be read: {problem}; and {err}. "
                              f"Start again with --overwrite") from err
    return net, optimizer, state, (f"{problem}; resumed from the previous checkpoint {prev} "
                                   f"instead (one step earlier)")
