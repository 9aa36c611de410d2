"""The sparse convolution path: kernel twins, sparse == dense (im2col + BLAS), gradient check.

Each sparse conv kernel is checked against its NumPy twin and against the dense product on
im2col columns (partial-area masks, strides and padding included); a Conv2d below
``CONV_SPARSE_BELOW`` must give the dense path's outputs, gradients and SGD steps within
float tolerance; and its gradients must match central finite differences.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestref.core import kernels
from nestref.core.layers import CONV_AREA_SPARSE_BELOW, CONV_SPARSE_BELOW, Conv2d, Support
from nestref.core.network import loss_and_grads
from nestref.core.optim import SGD
from nestref.nest.networks import lenet5

from gradcheck import numerical_gradient

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def dense_conv(x, weight, area, stride):
    """The oracle: im2col columns times W*M, one input map at a time so the area mask applies."""
    n, c_in, h, w = x.shape
    o, _, k, _ = weight.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    cols = kernels.im2col_numpy(x, k, k, stride, 0).reshape(n, ho * wo, c_in, k * k)
    per_map = np.einsum("npck,ock->nocp", cols, weight.reshape(o, c_in, k * k))
    if area is not None:
        per_map = per_map * area.reshape(o, c_in, ho * wo)[None]
    return per_map.sum(axis=2).reshape(n, o, ho, wo)


@FAST
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 9),
    c_in=st.integers(1, 4),
    c_out=st.integers(1, 5),
    side=st.integers(3, 10),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    density=st.floats(0.0, 1.0),
    with_area=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_sparse_conv_twins_agree_with_each_other_and_with_the_dense_product(
    seed, n, c_in, c_out, side, k, stride, density, with_area, dtype
):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, side, side)).astype(dtype)
    mask = (rng.random((c_out, c_in, k, k)) < density).astype(dtype)
    weight = (rng.standard_normal(mask.shape) * mask).astype(dtype)
    ho = (side - k) // stride + 1
    area = (rng.random((c_out, c_in, ho, ho)) < 0.7).astype(dtype) if with_area else None
    support = Support(mask)
    data = weight.reshape(-1)[support.flat]
    g = rng.standard_normal((n, c_out, ho, ho)).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    xt = np.ascontiguousarray(np.moveaxis(x, 0, -1))
    gt = np.ascontiguousarray(np.moveaxis(g, 0, -1))
    results = {}
    for name in ("numpy", "numba"):
        kernels.use_backend(name)
        try:
            assert np.array_equal(kernels.to_batch_last(x), xt)
            assert np.array_equal(kernels.from_batch_last(xt), x)
            results[name] = (
                kernels.from_batch_last(kernels.sparse_conv_forward(
                    xt, data, support.indices, support.indptr, area, k, k, stride, ho, ho)),
                kernels.from_batch_last(kernels.sparse_conv_input_grad(
                    gt, data, support.indices, support.indptr, area, x.shape[1:], k, k, stride)),
                kernels.sparse_conv_weight_grad(gt, xt, support.indices, support.indptr, area, k,
                                                k, stride),
            )
        finally:
            kernels.use_backend("numba")
    for a, b in zip(results["numpy"], results["numba"], strict=True):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    u, grad_x, grad_w = results["numpy"]
    np.testing.assert_allclose(u, dense_conv(x, weight, area, stride), rtol=tol, atol=tol)
    # the adjoint identities: <g, conv(x)> = <conv^T(g), x> = <dL/dW, W> at the active weights
    inner = float(np.sum(g.astype(np.float64) * u))
    np.testing.assert_allclose(float(np.sum(grad_x.astype(np.float64) * x)), inner,
                               rtol=tol, atol=tol * max(1, abs(inner)))
    np.testing.assert_allclose(float(np.sum(grad_w.astype(np.float64) * data)), inner,
                               rtol=tol, atol=tol * max(1, abs(inner)))


def twin_lenet5(density, seed=0, dtype=np.float32, area=True):
    """LeNet-5 twice, conv layers free to take the sparse path / forced onto the dense one."""
    sparse = lenet5(width_scale=0.4, density=density, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    dense = sparse.copy()
    for (_, a), (_, b) in zip(sparse.masked_layers(), dense.masked_layers(), strict=True):
        if isinstance(a, Conv2d):
            a.sparse_below = a.area_sparse_below = 2.0
            b.sparse_below = b.area_sparse_below = 0.0
    if area:
        x = rng.random((2, 1, 28, 28)).astype(dtype)
        for net in (sparse, dense):
            net.forward(x)
        areas = {}
        for i, layer in sparse.masked_layers():
            if isinstance(layer, Conv2d):
                ho = layer._x.shape[2] - layer.kernel_size + 1
                areas[i] = (rng.random((layer.n_out, layer.n_in, ho, ho)) < 0.8).astype(dtype)
        for net in (sparse, dense):
            for i, mask in areas.items():
                net.layers[i].area_mask = mask.copy()
    return sparse, dense


def test_lenet5_convs_below_the_crossover_take_the_sparse_path_with_no_flag():
    net = lenet5(density=CONV_SPARSE_BELOW / 2, seed=0)
    convs = [layer for _, layer in net.masked_layers() if isinstance(layer, Conv2d)]
    assert all(layer.uses_sparse_kernels() for layer in convs)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    loss_and_grads(net, x, np.arange(4))
    assert all(layer.active_weight_gradient() is not None for layer in convs)
    assert not lenet5(density=1.0).layers[0].uses_sparse_kernels()
    assert 0 < CONV_SPARSE_BELOW <= CONV_AREA_SPARSE_BELOW < 1


@pytest.mark.parametrize("area", [False, True])
@pytest.mark.parametrize("dtype, tol", [(np.float32, 5e-5), (np.float64, 1e-11)])
def test_sparse_convs_give_the_dense_paths_outputs_gradients_and_steps(dtype, tol, area):
    sparse, dense = twin_lenet5(0.15, dtype=dtype, area=area)
    optimizers = [SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-3) for net in (sparse, dense)]
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.random((6, 1, 28, 28)).astype(dtype)
        logits = [net.forward(x) for net in (sparse, dense)]
        np.testing.assert_allclose(logits[0], logits[1], rtol=tol, atol=tol)
        grad = rng.standard_normal(logits[0].shape).astype(dtype)
        grads_in = [net.backward(grad) for net in (sparse, dense)]
        np.testing.assert_allclose(grads_in[0], grads_in[1], rtol=tol, atol=tol)
        for (_, a), (_, b) in zip(sparse.masked_layers(), dense.masked_layers(), strict=True):
            if not isinstance(a, Conv2d):
                continue
            assert a.active_weight_gradient() is not None and b.active_weight_gradient() is None
            support, values = a.active_weight_gradient()
            np.testing.assert_allclose(values, b.grad_weight.reshape(-1)[support.flat],
                                       rtol=tol, atol=tol)
            # every position, dormant ones included (growth's), computed when read
            np.testing.assert_allclose(a.grad_weight, b.grad_weight, rtol=tol, atol=tol)
            np.testing.assert_allclose(a.grad_bias, b.grad_bias, rtol=tol, atol=tol)
        for optimizer in optimizers:
            optimizer.step()
        for (_, a), (_, b) in zip(sparse.masked_layers(), dense.masked_layers(), strict=True):
            np.testing.assert_allclose(a.weight, b.weight, rtol=tol, atol=tol)
            assert np.all(a.weight[a.mask == 0] == 0)


@pytest.mark.parametrize("padding, stride", [(0, 1), (1, 2)])
def test_sparse_conv_gradients_match_finite_differences(padding, stride):
    rng = np.random.default_rng(3)
    layer = Conv2d(2, 3, 3, stride=stride, padding=padding, density=0.3, rng=rng,
                   dtype=np.float64)
    layer.sparse_below = layer.area_sparse_below = 2.0  # sparse, whatever the crossover
    assert layer.uses_sparse_kernels()
    x = rng.standard_normal((2, 2, 7, 7))
    out_shape = layer.forward(x).shape
    layer.area_mask = (rng.random((3, 2, *out_shape[2:])) < 0.7).astype(np.float64)
    g = rng.standard_normal(out_shape)

    def loss():
        return float(np.sum(layer.forward(x) * g))

    loss()
    grad_x = layer.backward(g)
    grad_w = layer.grad_weight.copy()
    np.testing.assert_allclose(grad_x, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)
    # a dormant weight is masked out of the loss, so finite differences see the active ones
    numeric = numerical_gradient(loss, layer.weight)
    active = layer.mask == 1
    np.testing.assert_allclose(grad_w[active], numeric[active], rtol=1e-6, atol=1e-7)


def test_the_sparse_conv_follows_a_mask_edit_between_forward_and_backward():
    sparse, dense = twin_lenet5(0.15, area=False)
    sparse.layers[2].sparse_below = 0.5  # no area mask here
    x = np.random.default_rng(2).random((3, 1, 28, 28), dtype=np.float32)
    for net in (sparse, dense):
        net.forward(x)
        net.layers[2].mask[:] = 1.0  # now dense: the backward must not use a stale support
    assert not sparse.layers[2].uses_sparse_kernels()
    grad = np.ones((3, 10), dtype=np.float32)
    np.testing.assert_allclose(sparse.backward(grad), dense.backward(grad), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sparse.layers[2].grad_weight, dense.layers[2].grad_weight,
                               rtol=1e-5, atol=1e-5)
