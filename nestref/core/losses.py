"""Softmax cross-entropy, the loss every nestref network is trained on."""
import numpy as np

from ..errors import InvalidArgumentError


def check_labels(labels, n_classes, name="labels"):
    """Raise InvalidArgumentError unless ``labels`` are integers in [0, n_classes).

    A label of -1 would otherwise index the last class, silently.
    """
    if labels.dtype.kind not in "iu":
        raise InvalidArgumentError(
            f"{name} must be integers in [0, {n_classes}), got dtype {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise InvalidArgumentError(
            f"{name} must be in [0, {n_classes}) (one per class), found {bad}"
        )


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    logits: (N, K) float; labels: (N,) int in [0, K)
    returns (loss: float, grad: (N, K)) where grad = dL/dlogits = (softmax - onehot) / N
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise InvalidArgumentError(
            f"expected logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}"
        )
    if logits.dtype.kind != "f":
        raise InvalidArgumentError(f"logits must be floats, got dtype {logits.dtype}")
    check_labels(labels, logits.shape[1])
    n = logits.shape[0]
    if n == 0:
        raise InvalidArgumentError(
            "the loss of an empty batch is undefined; pass at least one example"
        )
    shifted = logits - logits.max(axis=1, keepdims=True)  # exp cannot overflow
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    loss = -log_probs[rows, labels].mean()
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1.0
    return float(loss), grad / n
