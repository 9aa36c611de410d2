"""The training loop: minibatch SGD, evaluation, checkpoints.

The loop knows no screen: it reports through the callbacks ``on_batch`` and
``on_epoch`` and through the records it returns. A loss that stops being finite
raises ``TrainingDiverged`` at once, naming the epoch, batch and learning rate.

Checkpoints keep the version before the latest (``checkpoint.prev.npz`` beside
``checkpoint.npz``) until a new one is safely on disk; ``resume_checkpoint`` falls back
to it when the latest is missing or corrupt, and says so. Everything read back is
validated before a network is built from it: a tampered file raises
``CheckpointError`` naming the file and the field.
"""
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from .checks import check_int, check_positive_int, is_int, is_number
from .data import scale_pixels
from .errors import CheckpointError, InvalidArgumentError, TrainingDiverged
from .losses import check_labels, softmax_cross_entropy
from .models import Network, loss_and_grads
from .optim import SGD
from .reproducible import one_blas_thread
from .storage import checkpoint_exists, load_arrays, previous_path, save_arrays, to_array

__all__ = [
    "TrainingDiverged",
    "checkpoint_exists",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_network",
    "minibatches",
    "prepare_inputs",
    "resume_checkpoint",
    "save_checkpoint",
    "train_epoch",
]


def prepare_inputs(images, net):
    """uint8 images (N, 28, 28) -> float32 in [0, 1] shaped (N, *net.input_shape)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        x = scale_pixels(images)
    elif images.dtype.kind == "f":
        x = np.asarray(images, dtype=np.float32)
    else:
        raise InvalidArgumentError(
            f"images must be uint8 pixels (0..255) or floats in [0, 1], got dtype {images.dtype}"
        )
    if x.ndim < 1 or x.size != len(x) * int(np.prod(net.input_shape)):
        raise InvalidArgumentError(f"images of shape {images.shape} cannot be shaped as (N, "
                                   f"{', '.join(map(str, net.input_shape))}) for {net.name}")
    return x.reshape((len(x),) + net.input_shape)


def minibatches(n, batch_size, rng):
    """Index arrays of a random permutation of range(n), in chunks of batch_size (last may be
    short)."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _check_xy(name, xy, net):
    """(x, y) a pair of arrays the network can take: float x (N, *input_shape), integer labels
    y (N,)."""
    if not isinstance(xy, (tuple, list)) or len(xy) != 2:
        raise InvalidArgumentError(
            f"{name} must be an (x, y) pair of arrays, got {type(xy).__name__}"
        )
    x, y = xy
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise InvalidArgumentError(f"{name} x must be a float array (scale uint8 pixels with "
                                   f"nestref.data.scale_pixels or nestref.train.prepare_inputs), "
                                   f"got {kind}")
    if tuple(x.shape[1:]) != net.input_shape:
        raise InvalidArgumentError(f"{name} x must have shape "
                                   f"(N, {', '.join(map(str, net.input_shape))}) "
                                   f"for {net.name}, got {x.shape}")
    y = np.asarray(y)
    if y.shape != (len(x),):
        raise InvalidArgumentError(
            f"{name} y must be one label per example, shape ({len(x)},), got {y.shape}"
        )
    check_labels(y, net.widths()[-1], f"{name} labels")
    return x, y


def train_epoch(net, optimizer, x, y, batch_size, rng, on_batch=None, epoch=0, augment=None):
    """One pass over (x, y) in random minibatches.

    x: (N, *net.input_shape) float; y: (N,) int. Returns {"loss", "error"} averaged
    over the epoch's examples. on_batch(batch_index, n_batches, loss) after every step.
    augment(x_batch, rng) -> x_batch, if given, distorts each batch (see nestref.augment).
    """
    batches = minibatches(len(x), batch_size, rng)
    total_loss = total_wrong = 0.0
    for b, idx in enumerate(batches):
        xb = x[idx] if augment is None else augment(x[idx], rng)
        loss, logits = loss_and_grads(net, xb, y[idx])
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} at epoch {epoch + 1}, batch {b + 1}/{len(batches)} "
                f"with lr={optimizer.lr:g}: "
                f"lower the learning rate (or check the inputs for NaN/inf)")
        optimizer.step()
        total_loss += loss * len(idx)
        total_wrong += int((logits.argmax(axis=1) != y[idx]).sum())
        if on_batch is not None:
            on_batch(b, len(batches), loss)
    return {"loss": total_loss / len(x), "error": total_wrong / len(x)}


@one_blas_thread()
def evaluate(net, x, y, batch_size=1000):
    """Mean loss and error rate of ``net`` on (x, y). Returns {"loss", "error"}.

    x: (N, *net.input_shape) float; y: (N,) integer labels in [0, n_classes).
    """
    x, y = _check_xy("evaluate's", (x, y), net)
    if len(x) == 0:
        raise InvalidArgumentError("evaluate needs at least one example, got an empty x")
    logits = net.predict(x, check_positive_int("batch_size", batch_size))
    loss, _ = softmax_cross_entropy(logits, y)
    return {"loss": loss, "error": float((logits.argmax(axis=1) != y).mean())}


@one_blas_thread()
def fit(net, optimizer, train, val, epochs, schedule=None, batch_size=64, rng=0, start_epoch=0,
        on_epoch=None, on_batch=None, augment=None):
    """Train for epochs ``start_epoch .. epochs-1``; returns one record per epoch.

    train, val: (x, y) pairs already shaped for the network. schedule(epoch, epochs)
    sets the learning rate at the start of each epoch (None keeps optimizer.lr).
    rng: a seed or a np.random.Generator (pass the same Generator to resume exactly).
    on_epoch(record) is called after each epoch (e.g. to write a checkpoint).
    augment(x_batch, rng): optional distortion of every training batch.
    BLAS computes on one thread meanwhile, so the result is the same on any core count
    (``nestref.reproducible``).
    """
    epochs = check_int("epochs", epochs, minimum=0)
    batch_size = check_positive_int("batch_size", batch_size)
    start_epoch = check_int("start_epoch", start_epoch, minimum=0)
    train = _check_xy("train", train, net)
    if len(train[0]) == 0 and epochs > start_epoch:
        raise InvalidArgumentError(
            "train holds no examples; pass at least one (x, y) pair to train on"
        )
    if val is not None:
        val = _check_xy("val", val, net)
    if not (isinstance(rng, np.random.Generator) or is_int(rng)):
        raise InvalidArgumentError(
            f"rng must be an integer seed or a numpy Generator, got {type(rng).__name__}"
        )
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    records = []
    for epoch in range(start_epoch, epochs):
        if schedule is not None:
            optimizer.lr = schedule(epoch, epochs)
        t0 = time.perf_counter()
        stats = train_epoch(net, optimizer, *train, batch_size, rng, on_batch, epoch, augment)
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "lr": optimizer.lr, "train_loss": stats["loss"],
                  "train_error": stats["error"], "seconds": seconds}
        if val is not None and len(val[0]):
            v = evaluate(net, *val)
            record.update(val_loss=v["loss"], val_error=v["error"])
        records.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return records


# ---------------------------------------------------------------- checkpoints
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
