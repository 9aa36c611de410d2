"""The training loop: minibatch SGD, evaluation, checkpoints.

The loop knows no screen: it reports through the callbacks ``on_batch`` and
``on_epoch`` and through the records it returns. A loss that stops being finite
raises ``TrainingDiverged`` at once, naming the epoch, batch and learning rate.
"""
import json
import math
import time

import numpy as np

from .data import scale_pixels
from .losses import softmax_cross_entropy
from .models import Network, loss_and_grads
from .optim import SGD
from .storage import load_arrays, save_arrays


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def prepare_inputs(images, net):
    """uint8 images (N, 28, 28) -> float32 in [0, 1] shaped (N, *net.input_shape)."""
    x = scale_pixels(images) if images.dtype == np.uint8 else np.asarray(images, dtype=np.float32)
    return x.reshape((len(x),) + net.input_shape)


def minibatches(n, batch_size, rng):
    """Index arrays of a random permutation of range(n), in chunks of batch_size (last may be short)."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


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
                f"loss became {loss} at epoch {epoch + 1}, batch {b + 1}/{len(batches)} with lr={optimizer.lr:g}: "
                f"lower the learning rate (or check the inputs for NaN/inf)")
        optimizer.step()
        total_loss += loss * len(idx)
        total_wrong += int((logits.argmax(axis=1) != y[idx]).sum())
        if on_batch is not None:
            on_batch(b, len(batches), loss)
    return {"loss": total_loss / len(x), "error": total_wrong / len(x)}


def evaluate(net, x, y, batch_size=1000):
    """Mean loss and error rate of ``net`` on (x, y). Returns {"loss", "error"}."""
    logits = net.predict(x, batch_size)
    loss, _ = softmax_cross_entropy(logits, y)
    return {"loss": loss, "error": float((logits.argmax(axis=1) != y).mean())}


def fit(net, optimizer, train, val, epochs, schedule=None, batch_size=64, rng=0, start_epoch=0,
        on_epoch=None, on_batch=None, augment=None):
    """Train for epochs ``start_epoch .. epochs-1``; returns one record per epoch.

    train, val: (x, y) pairs already shaped for the network. schedule(epoch, epochs)
    sets the learning rate at the start of each epoch (None keeps optimizer.lr).
    rng: a seed or a np.random.Generator (pass the same Generator to resume exactly).
    on_epoch(record) is called after each epoch (e.g. to write a checkpoint).
    augment(x_batch, rng): optional distortion of every training batch.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
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
def save_checkpoint(path, net, optimizer=None, state=None):
    """Write network, momentum and a JSON-able ``state`` dict to ``path`` atomically."""
    arrays = dict(net.to_arrays())
    if optimizer is not None:
        arrays.update(optimizer.to_arrays())
        arrays["optimizer"] = {"lr": optimizer.lr, "momentum": optimizer.momentum,
                               "weight_decay": optimizer.weight_decay}
    arrays["state"] = state or {}
    save_arrays(path, arrays)


def load_checkpoint(path):
    """Read a checkpoint: returns (net, optimizer or None, state dict)."""
    arrays = load_arrays(path)
    if "spec" not in arrays:
        raise ValueError(f"{path}: not a nestref checkpoint (no network spec inside)")
    net = Network.from_arrays(arrays)
    optimizer = None
    if "optimizer" in arrays:
        opt = json.loads(str(arrays["optimizer"]))
        optimizer = SGD(net, **opt)
        optimizer.load_arrays(arrays)
    return net, optimizer, json.loads(str(arrays.get("state", "{}")))
