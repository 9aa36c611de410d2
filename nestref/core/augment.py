"""Random affine distortions of training images (off by default).

The paper's MNIST results are reported with distortions of the training images;
this is the option that reproduces that setting. Each image gets its own small
rotation, scaling, shear and shift about the image centre. The test and validation
images are never distorted. When a run uses it, its report says so.
"""
import numpy as np

from ..errors import InvalidArgumentError
from . import kernels


def random_affine_matrices(
    n, shape, rng, max_rotation=12.0, max_scale=0.1, max_shear=0.1, max_shift=2.0
):
    """n random (2, 3) maps from output pixel (y, x, 1) to input position, about the centre.

    Rotation in degrees, scale as a fraction (1 +- max_scale), shear as a fraction,
    shift in pixels; each drawn uniformly and independently per image.
    """
    h, w = shape
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation, n))
    scale = 1.0 + rng.uniform(-max_scale, max_scale, n)
    shear = rng.uniform(-max_shear, max_shear, n)
    shift = rng.uniform(-max_shift, max_shift, (n, 2))
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # inverse map (output -> input): rotate/scale/shear around the centre, then shift
    linear = np.empty((n, 2, 2))  # filled in place: np.stack costs more than the arithmetic
    linear[:, 0, 0], linear[:, 0, 1] = cos, -sin + shear * cos
    linear[:, 1, 0], linear[:, 1, 1] = sin, cos + shear * sin
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    maps = np.empty((n, 2, 3))
    maps[:, :, :2], maps[:, :, 2] = linear, centre - linear @ centre - shift
    return maps


def random_affine(x, rng, **limits):
    """Distort a batch of images, every channel of an image alike; same shape out.

    x: (N, H, W) or (N, C, H, W) in [0, 1], or (N, D) of square one-channel images (D = side**2).
    """
    n = len(x)
    if x.ndim in (3, 4):
        channels, (h, w) = (x.shape[1] if x.ndim == 4 else 1), x.shape[-2:]
    else:
        side = int(round(np.sqrt(x[0].size)))
        if side * side != x[0].size:
            raise InvalidArgumentError(
                f"augment needs images: a flat input of {x[0].size} values is not a square "
                "one-channel image; set augment=false (or use a conv: architecture)")
        channels, h, w = 1, side, side
    matrices = random_affine_matrices(n, (h, w), rng, **limits)
    images = x.reshape(n * channels, h, w)
    if channels > 1:
        matrices = np.repeat(matrices, channels, axis=0)
    warped = kernels.affine_warp(images, matrices)
    return warped.reshape(x.shape)
