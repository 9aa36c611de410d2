"""Each Numba kernel against its NumPy twin, and the twins against first principles."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nestref import kernels
from nestref.layers import Conv2d
from nestref.models import lenet5


shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 8), st.integers(1, 8))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, k=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_im2col_col2im_twins_agree(shape, k, stride, padding, dtype, seed):
    n, c, h, w = shape
    if kernels.output_size(h, k, stride, padding) < 1 or kernels.output_size(w, k, stride, padding) < 1:
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
    if kernels.output_size(h, k, stride, padding) < 1 or kernels.output_size(w, k, stride, padding) < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    cols = rng.standard_normal(kernels.im2col_numpy(x, k, k, stride, padding).shape)
    lhs = (kernels.im2col_numba(x, k, k, stride, padding) * cols).sum()
    rhs = (x * kernels.col2im_numba(cols, shape, k, k, stride, padding)).sum()
    assert lhs == pytest.approx(rhs, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, k=st.integers(1, 3), stride=st.integers(1, 3), ties=st.booleans(), seed=st.integers(0, 2**16))
def test_maxpool_twins_agree(shape, k, stride, ties, seed):
    n, c, h, w = shape
    if k > h or k > w:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, shape).astype(np.float32) if ties else rng.standard_normal(shape).astype(np.float32)
    out_np, arg_np = kernels.maxpool_forward_numpy(x, k, stride)
    out_nb, arg_nb = kernels.maxpool_forward_numba(x, k, stride)
    np.testing.assert_array_equal(out_np, out_nb)
    np.testing.assert_array_equal(arg_np, arg_nb)  # first maximum on ties, in both
    g = rng.standard_normal(out_np.shape).astype(np.float32)
    np.testing.assert_allclose(kernels.maxpool_backward_numpy(g, arg_np, shape),
                               kernels.maxpool_backward_numba(g, arg_nb, shape), rtol=1e-6, atol=1e-6)
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
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_backend_name_is_validated():
    with pytest.raises(ValueError, match="'numpy' or 'numba'"):
        kernels.use_backend("cuda")
    assert kernels.backend() == "numba"
    assert isinstance(Conv2d(1, 1, 1), Conv2d)
