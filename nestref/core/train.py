"""The training loop: minibatch SGD and evaluation. No files: checkpoints are
``nestref.run.checkpoint``'s.

The loop knows no screen: it reports through the callbacks ``on_batch`` and
``on_epoch`` and through the records it returns. A loss that stops being finite
raises ``TrainingDiverged`` at once, naming the epoch, batch and learning rate.
"""
import math
import time

import numpy as np

from ..checks import check_int, check_positive_int, is_int
from ..data.datasets import scale_pixels
from ..errors import InvalidArgumentError, TrainingDiverged
from .losses import check_labels, softmax_cross_entropy
from .network import loss_and_grads
from .reproducible import one_blas_thread

__all__ = ["evaluate", "fit", "minibatches", "prepare_inputs", "train_epoch"]


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
                                   f"nestref.data.datasets.scale_pixels or "
                                   f"nestref.core.train.prepare_inputs), got {kind}")
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
    augment(x_batch, rng) -> x_batch, if given, distorts each batch (see nestref.core.augment).
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
    (``nestref.core.reproducible``).
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
