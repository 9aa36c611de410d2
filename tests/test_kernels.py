"""Each Numba kernel against its NumPy twin, and the twins against first principles."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestref.core import kernels
from nestref.core.layers import Conv2d
from nestref.nest.networks import lenet5

shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 8), st.integers(1, 8))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, k=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_im2col_col2im_twins_agree(shape, k, stride, padding, dtype, seed):
    n, c, h, w = shape
    if (
        kernels.output_size(h, k, stride, padding) < 1
        or kernels.output_size(w, k, stride, padding) < 1
    ):
        return
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    cols = kernels.im2col_numpy(x, k, k, stride, padding)
    np.testing.assert_array_equal(cols, kernels.im2col_numba(x, k, k, stride, padding))
    back_np = kernels.col2im_numpy(cols, shape, k, k, stride, padding)
    back_nb = kernels.col2im_numba(cols, shape, k, k, stride, padding)
    np.testing.assert_allclose(back_np, back_nb, rtol=1e-5, atol=1e-5)
    assert back_nb.dtype == dtype


@settings(max_examples=20, deadline=None)
@given(shape=shapes, k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1),
       seed=st.integers(0, 2**16))
def test_col2im_is_the_adjoint_of_im2col(shape, k, stride, padding, seed):
    """<im2col(x), c> == <x, col2im(c)> for all x, c: what backprop through im2col needs."""
    n, c, h, w = shape
    if (
        kernels.output_size(h, k, stride, padding) < 1
        or kernels.output_size(w, k, stride, padding) < 1
    ):
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    cols = rng.standard_normal(kernels.im2col_numpy(x, k, k, stride, padding).shape)
    lhs = (kernels.im2col_numba(x, k, k, stride, padding) * cols).sum()
    rhs = (x * kernels.col2im_numba(cols, shape, k, k, stride, padding)).sum()
    assert lhs == pytest.approx(rhs, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    shape=shapes,
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_maxpool_twins_agree(shape, k, stride, ties, seed):
    n, c, h, w = shape
    if k > h or k > w:
        return
    rng = np.random.default_rng(seed)
    x = (
        rng.integers(0, 3, shape).astype(np.float32)
        if ties
        else rng.standard_normal(shape).astype(np.float32)
    )
    out_np, arg_np = kernels.maxpool_forward_numpy(x, k, stride)
    out_nb, arg_nb = kernels.maxpool_forward_numba(x, k, stride)
    np.testing.assert_array_equal(out_np, out_nb)
    np.testing.assert_array_equal(arg_np, arg_nb)  # first maximum on ties, in both
    g = rng.standard_normal(out_np.shape).astype(np.float32)
    np.testing.assert_allclose(
        kernels.maxpool_backward_numpy(g, arg_np, shape),
        kernels.maxpool_backward_numba(g, arg_nb, shape),
        rtol=1e-6,
        atol=1e-6,
    )
    # first principles: each output is the max of its window
    for i in range(out_np.shape[2]):
        for j in range(out_np.shape[3]):
            window = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            np.testing.assert_array_equal(out_np[:, :, i, j], window.max(axis=(2, 3)))


def test_lenet5_same_with_either_backend():
    net = lenet5(width_scale=0.3, density=0.5, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).random((3, 1, 28, 28))
    results = []
    for name in ("numpy", "numba"):
        kernels.use_backend(name)
        try:
            logits = net.forward(x)
            grad_in = net.backward(np.ones_like(logits))
            results.append((logits, grad_in, net.layers[2].grad_weight.copy()))
        finally:
            kernels.use_backend("numba")
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_backend_name_is_validated():
    with pytest.raises(ValueError, match="'numpy' or 'numba'"):
        kernels.use_backend("cuda")
    assert kernels.backend() == "numba"
    assert isinstance(Conv2d(1, 1, 1), Conv2d)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), side=st.integers(3, 12), seed=st.integers(0, 2**16))
def test_affine_warp_twins_agree(n, side, seed):
    from nestref.core.augment import random_affine_matrices
    rng = np.random.default_rng(seed)
    images = rng.random((n, side, side)).astype(np.float32)
    matrices = random_affine_matrices(n, (side, side), rng, max_shift=3.0)
    np.testing.assert_allclose(kernels.affine_warp_numpy(images, matrices),
                               kernels.affine_warp_numba(images, matrices), rtol=1e-5, atol=1e-6)
    # far outside, half outside, turned over: every tap position the border handling meets,
    # on images with negative values and of another width
    wide = rng.standard_normal((n, side, side + 3))
    matrices = random_affine_matrices(n, wide.shape[1:], rng, max_rotation=180.0, max_scale=0.5,
                                      max_shear=0.5, max_shift=2.0 * side)
    np.testing.assert_allclose(kernels.affine_warp_numpy(wide, matrices),
                               kernels.affine_warp_numba(wide, matrices), rtol=1e-9, atol=1e-12)


def test_affine_warp_identity_and_shift():
    rng = np.random.default_rng(0)
    images = rng.random((2, 6, 7))
    identity = np.tile([[1.0, 0, 0], [0, 1, 0]], (2, 1, 1))
    np.testing.assert_array_equal(kernels.affine_warp_numba(images, identity), images)
    down = np.tile([[1.0, 0, 1], [0, 1, 0]], (2, 1, 1))  # output row y reads input row y + 1
    shifted = kernels.affine_warp_numba(images, down)
    np.testing.assert_array_equal(shifted[:, :-1], images[:, 1:])
    assert np.all(shifted[:, -1] == 0)  # outside the image reads zeros


def test_random_affine_keeps_shape_range_and_mass():
    from nestref.core.augment import random_affine
    x = np.zeros((50, 784), np.float32)
    x[:, 14 * 28 + 14] = 1.0  # one bright pixel in the centre
    out = random_affine(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert np.all(np.abs(out.sum(1) - 1) < 0.35)  # small distortions move, not destroy, the ink
    assert not np.array_equal(out, x)


def test_lenet_fast_paths_equal_the_twins():
    """Stride-1 valid im2col/col2im and the unrolled 2x2 pool are separate loops: check them at
    LeNet's shapes."""
    rng = np.random.default_rng(5)
    for shape in [(3, 1, 28, 28), (2, 20, 12, 12), (1, 3, 6, 9)]:
        x = rng.standard_normal(shape).astype(np.float32)
        cols = kernels.im2col_numba(x, 5, 5, 1, 0)
        np.testing.assert_array_equal(cols, kernels.im2col_numpy(x, 5, 5, 1, 0))
        np.testing.assert_allclose(
            kernels.col2im_numba(cols, shape, 5, 5, 1, 0),
            kernels.col2im_numpy(cols, shape, 5, 5, 1, 0),
            rtol=1e-5,
            atol=1e-5,
        )
        for a, b in zip(
            kernels.maxpool_forward_numba(x, 2, 2),
            kernels.maxpool_forward_numpy(x, 2, 2),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_sgd_dense_twins_agree_bit_for_bit(dtype, weight_decay):
    rng = np.random.default_rng(11)
    mask = (rng.random((30, 17)) < 0.4).astype(dtype)
    weight = rng.standard_normal(mask.shape).astype(dtype) * mask
    velocity = rng.standard_normal(mask.shape).astype(dtype) * mask
    grad = rng.standard_normal(mask.shape).astype(dtype)
    results = []
    for twin in (kernels.sgd_dense_numpy, kernels.sgd_dense_numba):
        w, v = weight.copy().reshape(-1), velocity.copy().reshape(-1)
        twin(w, v, mask.reshape(-1), grad.reshape(-1), dtype(0.05), dtype(0.9), dtype(weight_decay))
        results.append((w, v))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)
    w, v = results[0]
    expect_v = (0.9 * velocity + grad + weight_decay * weight) * mask
    np.testing.assert_allclose(v, expect_v.reshape(-1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(w, ((weight - 0.05 * expect_v) * mask).reshape(-1), rtol=1e-6,
                               atol=1e-6)
    assert not np.any(w[mask.reshape(-1) == 0]) and not np.any(v[mask.reshape(-1) == 0])
