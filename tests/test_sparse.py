"""The sparse training path: kernel twins, sparse == dense, and no stale structure.

Each CSR kernel is checked against its NumPy twin and against the dense product;
a Dense layer below ``SPARSE_BELOW`` must give the dense path's outputs, gradients
and SGD steps within float tolerance; and whatever edits a mask (in place, through a
view, by replacing it, by unit surgery), the next use of the layer follows the edit.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestref.core import kernels
from nestref.core.layers import SPARSE_BELOW, Dense, Support
from nestref.core.network import add_units, keep_units, loss_and_grads
from nestref.core.optim import SGD
from nestref.nest.networks import lenet_300_100

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_sparse(rng, n_out, n_in, density, dtype):
    mask = (rng.random((n_out, n_in)) < density).astype(dtype)
    weight = (rng.standard_normal((n_out, n_in)) * mask).astype(dtype)
    support = Support(mask)
    return weight, mask, support, weight.reshape(-1)[support.flat]


@FAST
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(0, 300),
    n_in=st.integers(1, 40),
    n_out=st.integers(1, 30),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_sparse_kernel_twins_agree_with_each_other_and_with_dense_products(
    seed, n, n_in, n_out, density, dtype
):
    rng = np.random.default_rng(seed)
    weight, _, support, data = random_sparse(rng, n_out, n_in, density, dtype)
    xt = rng.standard_normal((n_in, n)).astype(dtype)
    gt = rng.standard_normal((n_out, n)).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    args = (support.indices, support.indptr)
    cases = [
        ("sparse_forward", (xt, data, *args, n_out), weight @ xt),
        ("sparse_input_grad", (gt, data, *args, n_in), weight.T @ gt),
        ("sparse_weight_grad", (gt, xt, *args), (gt @ xt.T).reshape(-1)[support.flat]),
    ]
    for name, arguments, dense in cases:
        numpy_twin, numba_twin = (
            getattr(kernels, f"{name}_{backend}") for backend in ("numpy", "numba")
        )
        a, b = numpy_twin(*arguments), numba_twin(*arguments)
        assert a.shape == b.shape == dense.shape and b.dtype == dtype, name
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol * max(1, n), err_msg=name)
        np.testing.assert_allclose(a, dense, rtol=tol, atol=tol * max(1, n), err_msg=name)


@FAST
@given(
    seed=st.integers(0, 2**31),
    shape=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    density=st.floats(0.0, 1.0),
    flips=st.integers(0, 3),
)
def test_same_support_twins_agree_and_see_every_change(seed, shape, density, flips):
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < density).astype(np.float32)
    flat = np.flatnonzero(mask)
    edited = mask.copy()
    for _ in range(flips):
        edited.flat[rng.integers(edited.size)] = rng.choice([0.0, 1.0, 0.5])
    expected = np.array_equal(np.flatnonzero(edited), flat)
    assert (
        kernels.same_support_numpy(edited, flat)
        == kernels.same_support_numba(edited, flat)
        == expected
    )


@FAST
@given(
    seed=st.integers(0, 2**31),
    size=st.integers(1, 200),
    density=st.floats(0.0, 1.0),
    momentum=st.floats(0.0, 0.99),
    weight_decay=st.floats(0.0, 0.1),
)
def test_gather_and_sgd_twins_agree(seed, size, density, momentum, weight_decay):
    rng = np.random.default_rng(seed)
    mask = (rng.random(size) < density).astype(np.float64)
    flat = np.flatnonzero(mask)
    weight, velocity = rng.standard_normal(size) * mask, rng.standard_normal(size) * mask
    np.testing.assert_array_equal(
        kernels.gather_effective_numpy(weight, mask, flat),
        kernels.gather_effective_numba(weight, mask, flat),
    )
    grad = rng.standard_normal(len(flat))
    results = []
    for twin in (kernels.sgd_at_positions_numpy, kernels.sgd_at_positions_numba):
        w, v = weight.copy(), velocity.copy()
        twin(w, v, mask, flat, grad, 0.1, momentum, weight_decay)
        results.append((w, v))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-12)


def twin_nets(density, seed=0, dtype=np.float32):
    """The same network twice: one free to take the sparse path, one forced onto the dense path."""
    sparse = lenet_300_100(width_scale=0.5, density=density, seed=seed, dtype=dtype)
    dense = sparse.copy()
    for _, layer in dense.masked_layers():
        layer.sparse_below = 0.0
    return sparse, dense


def batch(n=32, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784)).astype(dtype), rng.integers(0, 10, n)


def test_lenet_300_100_at_5_percent_takes_the_sparse_path_with_no_flag():
    net = lenet_300_100(density=0.05, seed=0)
    assert all(layer.uses_sparse_kernels() for _, layer in net.masked_layers())
    x, y = batch()
    loss_and_grads(net, x, y)
    assert all(layer.active_weight_gradient() is not None for _, layer in net.masked_layers())
    assert not lenet_300_100(density=1.0).layers[0].uses_sparse_kernels()
    assert 0 < SPARSE_BELOW < 1


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_sparse_layers_give_the_dense_paths_outputs_gradients_and_steps(dtype, tol):
    sparse, dense = twin_nets(0.08, dtype=dtype)
    optimizers = [SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-3) for net in (sparse, dense)]
    for step in range(4):
        x, y = batch(seed=step, dtype=dtype)
        logits = [net.forward(x) for net in (sparse, dense)]
        np.testing.assert_allclose(logits[0], logits[1], rtol=tol, atol=tol)
        grad = np.random.default_rng(step).standard_normal(logits[0].shape).astype(dtype)
        grads_in = [net.backward(grad) for net in (sparse, dense)]
        np.testing.assert_allclose(grads_in[0], grads_in[1], rtol=tol, atol=tol)
        for (_, a), (_, b) in zip(sparse.masked_layers(), dense.masked_layers(), strict=True):
            assert a.active_weight_gradient() is not None and b.active_weight_gradient() is None
            support, values = a.active_weight_gradient()
            np.testing.assert_allclose(
                values, b.grad_weight.reshape(-1)[support.flat], rtol=tol, atol=tol
            )
            # the gradient at every position (growth's), dormant ones included, computed on request
            np.testing.assert_allclose(a.grad_weight, b.grad_weight, rtol=tol, atol=tol)
            np.testing.assert_allclose(a.grad_bias, b.grad_bias, rtol=tol, atol=tol)
        for optimizer in optimizers:
            optimizer.step()
        for (i, a), (_, b) in zip(sparse.masked_layers(), dense.masked_layers(), strict=True):
            np.testing.assert_allclose(a.weight, b.weight, rtol=tol, atol=tol)
            np.testing.assert_allclose(
                optimizers[0].velocity[i]["weight"],
                optimizers[1].velocity[i]["weight"],
                rtol=tol,
                atol=tol,
            )
            assert np.all(a.weight[a.mask == 0] == 0)


def test_dense_weight_grad_on_request_equals_the_lazy_one():
    net, _ = twin_nets(0.05)
    x, y = batch()
    loss_and_grads(net, x, y, dense_weight_grad=True)
    eager = [layer._grad_weight.copy() for _, layer in net.masked_layers()]
    loss_and_grads(net, x, y)
    assert all(
        layer._grad_weight is None for _, layer in net.masked_layers()
    )  # not computed unless read
    for g, (_, layer) in zip(eager, net.masked_layers(), strict=True):
        np.testing.assert_allclose(layer.grad_weight, g, rtol=1e-6, atol=1e-7)
        assert np.any(g[layer.mask == 0] != 0)  # dormant positions have their slope


def edit_in_place(layer, rng):
    layer.mask[rng.integers(layer.n_out), rng.integers(layer.n_in)] = 1
    layer.mask[np.nonzero(layer.mask)[0][0], np.nonzero(layer.mask)[1][0]] = 0


def edit_through_a_view(layer, rng):
    flat = layer.mask.reshape(-1)  # a view kept by the caller
    flat[rng.integers(flat.size, size=5)] = 1


def edit_with_flat(layer, rng):
    layer.mask.flat[rng.integers(layer.mask.size, size=5)] = 1


def replace_the_array(layer, rng):
    layer.mask = (rng.random(layer.mask.shape) < 0.1).astype(layer.mask.dtype)


@pytest.mark.parametrize(
    "edit", [edit_in_place, edit_through_a_view, edit_with_flat, replace_the_array]
)
def test_the_sparse_structure_follows_every_kind_of_mask_edit(edit):
    """After any edit of a mask, forward, backward and step agree with the dense path."""
    rng = np.random.default_rng(0)
    sparse, dense = twin_nets(0.05, dtype=np.float64)
    optimizers = [SGD(net, lr=0.1, momentum=0.9) for net in (sparse, dense)]
    x, y = batch(dtype=np.float64)
    for net, optimizer in zip((sparse, dense), optimizers, strict=True):
        loss_and_grads(net, x, y)
        optimizer.step()
    for moment in ("before forward", "between backward and step"):
        if moment == "before forward":
            for _, layer in sparse.masked_layers():
                edit(layer, rng)
            for (_, a), (_, b) in zip(sparse.masked_layers(), dense.masked_layers(), strict=True):
                b.mask = a.mask.copy()
                a.weight *= a.mask
                b.weight[...] = a.weight
        for net in (sparse, dense):
            loss_and_grads(net, x, y)
        if moment == "between backward and step":
            for (_, a), (_, b) in zip(sparse.masked_layers(), dense.masked_layers(), strict=True):
                edit(a, rng)
                b.mask = a.mask.copy()
            assert all(
                layer.active_weight_gradient() is None for _, layer in sparse.masked_layers()
            )
        for optimizer in optimizers:
            optimizer.step()
        for (_, a), (_, b) in zip(sparse.masked_layers(), dense.masked_layers(), strict=True):
            np.testing.assert_allclose(a.weight, b.weight, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(a.forward(b._x), b.forward(b._x), rtol=1e-12, atol=1e-12)


def test_unit_surgery_rebuilds_the_structure():
    sparse, dense = twin_nets(0.05, dtype=np.float64)
    optimizers = [SGD(net, lr=0.1) for net in (sparse, dense)]
    x, y = batch(dtype=np.float64)
    for net, optimizer in zip((sparse, dense), optimizers, strict=True):
        loss_and_grads(net, x, y)
        optimizer.step()
        new = add_units(net, 0, 3, optimizer)
        net.layers[0].weight[new, :5] = 0.1
        net.layers[0].mask[new, :5] = 1
        net.layers[2].weight[:, new] = 0.2
        net.layers[2].mask[:, new] = 1
        keep_units(net, 2, np.arange(0, net.layers[2].n_out, 2), optimizer)
    assert sparse.layers[0].uses_sparse_kernels()
    for net, optimizer in zip((sparse, dense), optimizers, strict=True):
        loss_and_grads(net, x, y)
        optimizer.step()
    np.testing.assert_allclose(sparse.forward(x), dense.forward(x), rtol=1e-12, atol=1e-12)


def test_a_layer_crossing_the_threshold_switches_path():
    layer = Dense(50, 20, density=0.05, rng=0, dtype=np.float64)
    assert layer.uses_sparse_kernels()
    layer.mask[...] = 1
    assert not layer.uses_sparse_kernels()
    x = np.random.default_rng(1).random((4, 50))
    np.testing.assert_allclose(layer.forward(x), x @ layer.weight.T + layer.bias, rtol=1e-12)
    layer.mask[:, 10:] = 0
    layer.weight *= layer.mask
    assert layer.uses_sparse_kernels() == (0.2 < layer.sparse_below)
    np.testing.assert_allclose(layer.forward(x), x @ layer.weight.T + layer.bias, rtol=1e-12)


@FAST
@given(
    seed=st.integers(0, 2**31),
    shape=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_masked_weight_twins_agree(seed, shape, density, dtype):
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < density).astype(dtype)
    weight = rng.standard_normal(shape).astype(dtype)
    (a, count_a), (b, count_b) = (
        kernels.masked_weight_numpy(weight, mask),
        kernels.masked_weight_numba(weight, mask),
    )
    np.testing.assert_array_equal(a, b)
    assert count_a == count_b == int((mask != 0).sum()) and b.dtype == dtype
