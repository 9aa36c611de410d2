"""SGD with momentum that respects connection masks, and learning-rate schedules.

Masked weights stay exactly zero: the gradient is masked before it enters the
momentum buffer, and the buffer and the weight are re-masked after every step, so a
dormant connection cannot drift into life through momentum or weight decay.

A layer that ran its sparse kernels (``nestref.core.layers.Dense`` below ``SPARSE_BELOW``,
``Conv2d`` below ``CONV_SPARSE_BELOW`` or, with an area mask, ``CONV_AREA_SPARSE_BELOW``)
hands over its gradient at the active positions only; the step then touches those
positions only, with the same arithmetic. Dormant positions of the buffer and the
weight are zero already: the full re-masking runs once whenever the layer's active
positions (its ``Support``) change.
"""
import math

import numpy as np

from . import kernels


class SGD:
    """SGD with (heavy-ball) momentum and L2 weight decay on the active weights.

    v <- momentum * v + (dL/dW * M + weight_decay * W);  W <- (W - lr * v) * M
    Biases get the same rule without mask and without decay.

    ``velocity[position]`` holds {"weight": ..., "bias": ...} for the masked layer at
    ``net.layers[position]``; unit surgery (``nestref.core.network.add_units``) edits it.
    """

    def __init__(self, net, lr=0.01, momentum=0.9, weight_decay=0.0):
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.net, self.lr, self.momentum, self.weight_decay = (
            net,
            float(lr),
            float(momentum),
            float(weight_decay),
        )
        self.velocity = {
            i: {"weight": np.zeros_like(layer.weight), "bias": np.zeros_like(layer.bias)}
            for i, layer in net.masked_layers()
        }
        # position -> the Support whose dormant positions are zero in velocity and weight
        self._masked_for = {}

    def step(self):
        """One update from the gradients the last ``net.backward`` left in the layers."""
        for i, layer in self.net.masked_layers():
            active = layer.active_weight_gradient()
            if active is None:
                self._dense_step(layer, self.velocity[i])
            else:
                self._sparse_step(i, layer, *active)

    def _dense_step(self, layer, v):
        self._contiguous(layer, v)
        kernels.sgd_dense(layer.weight, v["weight"], layer.mask, layer.grad_weight, self.lr,
                          self.momentum, self.weight_decay)
        self._bias_step(layer, v)

    @staticmethod
    def _contiguous(layer, v):
        # the kernels update flat views: they must not be copies
        if not (layer.weight.flags.c_contiguous and v["weight"].flags.c_contiguous):
            layer.weight, v["weight"] = (
                np.ascontiguousarray(layer.weight),
                np.ascontiguousarray(v["weight"]),
            )

    def _sparse_step(self, i, layer, support, grad_active):
        """The dense step's arithmetic at the support's positions (the active ones) only."""
        v = self.velocity[i]
        # new active positions: clear the dormant ones once
        if self._masked_for.get(i) is not support:
            v["weight"] *= layer.mask
            layer.weight *= layer.mask
            self._masked_for[i] = support
        self._contiguous(layer, v)
        kernels.sgd_at_positions(
            layer.weight,
            v["weight"],
            np.ascontiguousarray(layer.mask),
            support.flat,
            grad_active,
            self.lr,
            self.momentum,
            self.weight_decay,
        )
        self._bias_step(layer, v)

    def _bias_step(self, layer, v):
        v["bias"] *= self.momentum
        v["bias"] += layer.grad_bias
        layer.bias -= self.lr * v["bias"]

    def to_arrays(self):
        """Momentum buffers as a flat dict of arrays (for checkpoints)."""
        return {f"velocity{i}.{k}": a for i, v in self.velocity.items() for k, a in v.items()}

    def load_arrays(self, arrays):
        self._masked_for = {}
        for i, v in self.velocity.items():
            for k in v:
                v[k] = np.array(arrays[f"velocity{i}.{k}"])


# ------------------------------------------------------------------ schedules
def constant(lr):
    """lr(epoch) = lr."""
    return lambda epoch, epochs: lr


def cosine(lr, final_fraction=0.0):
    """Cosine decay from ``lr`` at epoch 0 to ``lr * final_fraction`` after the last epoch."""
    def schedule(epoch, epochs):
        t = epoch / max(1, epochs)
        return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t)))
    return schedule


def step_decay(lr, drop=0.1, every=10):
    """lr * drop ** (epoch // every)."""
    return lambda epoch, epochs: lr * drop ** (epoch // every)


SCHEDULES = {"constant": constant, "cosine": cosine, "step": step_decay}
