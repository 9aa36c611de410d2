"""The paper's networks and NeST's seed networks, built from ``nestref.nest.architectures``.

``build`` makes any architecture of the table (the two LeNets, or an ``mlp:``/``conv:`` spec);
``lenet_300_100`` and ``lenet5`` build the paper's baselines and, with ``width_scale < 1`` and
``density < 1``, NeST's sparse seed networks.
"""
import functools

import numpy as np

from ..checks import is_int, is_number
from ..core.layers import MaskedLayer
from ..core.network import Network
from ..errors import InvalidArgumentError
from . import architectures


def lenet_300_100(
    width_scale=1.0, density=1.0, seed=0, dtype=np.float32, image_shape=None, classes=None
):
    """LeNet-300-100: 784 -> 300 -> 100 -> 10 with ReLU.

    width_scale scales the hidden widths (0.4 gives NeST's LeNet-120-40 seed);
    density is the fraction of active connections in every layer. image_shape and
    classes (of another data set) change the input size and the output width.
    x: (N, 784) -> logits (N, 10)
    """
    return build("lenet-300-100", width_scale, density, seed, dtype, image_shape, classes)


def lenet5(width_scale=1.0, density=1.0, seed=0, dtype=np.float32, image_shape=None, classes=None):
    """LeNet-5 as in Caffe: conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2, dense 500, ReLU, dense
    10.

    Like Caffe's, there is no ReLU after the convolutions. width_scale scales the
    feature maps and the hidden dense width; density is the active fraction.
    x: (N, 1, 28, 28) -> logits (N, 10)
    """
    return build("lenet5", width_scale, density, seed, dtype, image_shape, classes)


def build(
    arch, width_scale=1.0, density=1.0, seed=0, dtype=np.float32, image_shape=None, classes=None
):
    """A network by the name (or spec) the command line uses, from ``nestref.nest.architectures``.

    ``build("lenet5", width_scale=0.5)``; ``build("mlp:784-300-100-10")``;
    ``build("lenet5", image_shape=(3, 32, 32), classes=100)`` for another data set.
    """
    entry = architectures.get(arch)
    _check_seed_args(width_scale, density, seed, dtype)
    rng = np.random.default_rng(seed)
    layers, input_shape, name = entry.build_layers(
        width_scale, density, rng, dtype, image_shape, classes
    )
    for i, layer in enumerate(layers):
        # a layer with no connection passes nothing on: training would run, and learn nothing
        if isinstance(layer, MaskedLayer) and not layer.mask.any():
            raise InvalidArgumentError(
                f"density {density:g} leaves layer {i} ({type(layer).__name__}, "
                f"{layer.mask.size:,} possible connections) with none active; use a density of "
                f"at least {min(1.0, 3 / layer.mask.size):.2g}"
            )
    return Network(layers, input_shape, name=name)


# every named architecture's builder (specs go through ``build``)
ARCHITECTURES = {name: functools.partial(build, name) for name in architectures.names()}


def _check_seed_args(width_scale, density, seed, dtype):
    for name, value, high in (("width_scale", width_scale, 10.0), ("density", density, 1.0)):
        if not (is_number(value) and 0.0 < value <= high):
            raise InvalidArgumentError(f"{name} must be a number in (0, {high:g}], got {value!r}")
    if not (
        seed is None
        or isinstance(seed, (np.random.Generator, np.random.SeedSequence))
        or (is_int(seed) and seed >= 0)
    ):
        raise InvalidArgumentError(
            f"seed must be an integer >= 0 (or a numpy Generator), got {seed!r}"
        )
    try:
        kind = np.dtype(dtype)
    except TypeError:
        kind = None
    if kind not in (np.float32, np.float64):
        raise InvalidArgumentError(
            f"dtype must be np.float32 or np.float64 (the weights are real numbers), got {dtype!r}"
        )
