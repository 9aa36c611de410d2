"""Tests for partial-area convolution: Conv2d.area_mask, area_contributions, prune_partial_area."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestref.core.layers import Conv2d, Dense, Flatten, MaxPool2d
from nestref.core.losses import softmax_cross_entropy
from nestref.core.network import Network, add_units, keep_units, loss_and_grads
from nestref.nest.accounting import count_flops, count_params
from nestref.nest.networks import lenet5
from nestref.nest.prune import (
    area_prune_by_flops,
    layer_area_contributions,
    layer_input,
    prune_partial_area,
    reachable_units,
)

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ================================================================== oracle
def naive_conv(x, kernel, bias, stride, padding, area):
    """Loop-over-positions convolution:
    u[n, o, y, x] = b[o] + sum_i area[o, i, y, x] * <window_i, K_oi>."""
    n, c, h, w = x.shape
    o, _, k, _ = kernel.shape
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    u = np.zeros((n, o, ho, wo))
    for y in range(ho):
        for xx in range(wo):
            # (N, C, k, k)
            window = xp[:, :, y * stride:y * stride + k, xx * stride:xx * stride + k]
            per_input = np.einsum("nikl,oikl->noi", window, kernel)
            u[:, :, y, xx] = (per_input * area[None, :, :, y, xx]).sum(axis=2)
    return u + bias[None, :, None, None]


def naive_conv_backward(x, kernel, stride, padding, area, g):
    """Gradients of sum(g * naive_conv(...)) w.r.t. x, the kernel and the bias, by the same
    loops."""
    n, c, h, w = x.shape
    o, _, k, _ = kernel.shape
    _, _, ho, wo = g.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    grad_xp = np.zeros_like(xp)
    grad_kernel = np.zeros_like(kernel)
    for y in range(ho):
        for xx in range(wo):
            rows, cols = slice(y * stride, y * stride + k), slice(xx * stride, xx * stride + k)
            g_area = g[:, :, y, xx][:, :, None] * area[None, :, :, y, xx]  # (N, O, C)
            grad_kernel += np.einsum("noi,nikl->oikl", g_area, xp[:, :, rows, cols])
            grad_xp[:, :, rows, cols] += np.einsum("noi,oikl->nikl", g_area, kernel)
    grad_x = grad_xp[:, :, padding:padding + h, padding:padding + w]
    return grad_x, grad_kernel, g.sum(axis=(0, 2, 3))


def conv_with_area(rng, c, o, k, stride, padding, size, density, area_density):
    layer = Conv2d(c, o, k, stride, padding, dtype=np.float64)
    layer.mask[...] = rng.random(layer.mask.shape) < density
    layer.weight[...] = rng.standard_normal(layer.weight.shape) * layer.mask
    layer.bias[...] = rng.standard_normal(o)
    _, ho, wo = layer.output_shape((c, size, size))
    layer.area_mask = (rng.random((o, c, ho, wo)) < area_density).astype(np.float64)
    return layer


conv_cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31),
        "c": st.integers(1, 3),
        "o": st.integers(1, 4),
        "k": st.integers(1, 3),
        "stride": st.integers(1, 2),
        "padding": st.integers(0, 2),
        "size": st.integers(3, 7),
        "density": st.floats(0.3, 1.0),
        "area_density": st.floats(0.0, 1.0),
    }
)


# =========================================================== forward/backward
@FAST
@given(case=conv_cases)
def test_forward_and_backward_with_an_area_mask_match_the_loop_oracle(case):
    rng = np.random.default_rng(case.pop("seed"))
    size = case.pop("size")
    layer = conv_with_area(rng, size=size, **case)
    x = rng.standard_normal((3, case["c"], size, size))
    u = layer.forward(x)
    np.testing.assert_allclose(
        u,
        naive_conv(
            x, layer.effective_weight(), layer.bias, layer.stride, layer.padding, layer.area_mask
        ),
        rtol=1e-12,
        atol=1e-12,
    )
    g = rng.standard_normal(u.shape)
    grad_x = layer.backward(g)
    want_x, want_kernel, want_bias = naive_conv_backward(
        x, layer.effective_weight(), layer.stride, layer.padding, layer.area_mask, g
    )
    np.testing.assert_allclose(grad_x, want_x, rtol=1e-12, atol=1e-12)
    # grad_weight: w.r.t. the effective kernel at every position, dormant ones included
    np.testing.assert_allclose(layer.grad_weight, want_kernel, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grad_bias, want_bias, rtol=1e-12, atol=1e-12)


@FAST
@given(case=conv_cases)
def test_the_full_area_path_is_unchanged_and_equals_an_all_ones_area(case):
    rng = np.random.default_rng(case.pop("seed"))
    size = case.pop("size")
    layer = conv_with_area(rng, size=size, **case)
    layer.area_mask = None
    x = rng.standard_normal((2, case["c"], size, size))
    u = layer.forward(x)
    g = rng.standard_normal(u.shape)
    grad_x, grad_weight = layer.backward(g), layer.grad_weight.copy()
    ones = np.ones((case["o"], case["c"]) + u.shape[2:])
    np.testing.assert_allclose(
        u,
        naive_conv(x, layer.effective_weight(), layer.bias, layer.stride, layer.padding, ones),
        rtol=1e-12,
        atol=1e-12,
    )
    layer.area_mask = ones
    np.testing.assert_allclose(layer.forward(x), u, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(g), grad_x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grad_weight, grad_weight, rtol=1e-12, atol=1e-12)


def test_a_new_conv_has_no_area_mask():
    assert Conv2d(1, 2, 3).area_mask is None


def test_a_wrongly_shaped_area_mask_is_rejected_with_the_expected_shape():
    layer = Conv2d(2, 3, 3)
    layer.area_mask = np.ones((3, 2, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(3, 2, 5, 5\)"):
        layer.forward(np.zeros((1, 2, 7, 7), dtype=np.float32))


def small_area_net(rng):
    conv = conv_with_area(
        rng, c=2, o=3, k=3, stride=1, padding=1, size=6, density=0.8, area_density=0.6
    )
    dense = Dense(3 * 3 * 3, 4, dtype=np.float64)
    dense.bias[...] = rng.standard_normal(4)
    return Network([conv, MaxPool2d(2), Flatten(), dense], (2, 6, 6), "area-net")


def test_finite_differences_agree_with_backward_under_an_area_mask():
    rng = np.random.default_rng(7)
    net = small_area_net(rng)
    conv = net.layers[0]
    x, y = rng.standard_normal((5, 2, 6, 6)), rng.integers(0, 4, 5)

    def loss():
        return softmax_cross_entropy(net.forward(x), y)[0]

    loss_and_grads(net, x, y)
    grad_weight = conv.grad_weight.copy()
    grad_x = net.backward(softmax_cross_entropy(net.forward(x), y)[1])
    eps = 1e-6
    # active and dormant kernel positions: the growth gradient must be right too
    for index in [(0, 0, 0, 0), (1, 1, 2, 1), (2, 0, 1, 1), (2, 1, 0, 2)]:
        saved_w, saved_m = conv.weight[index], conv.mask[index]
        conv.mask[index] = 1
        conv.weight[index] = saved_w + eps
        up = loss()
        conv.weight[index] = saved_w - eps
        down = loss()
        conv.weight[index], conv.mask[index] = saved_w, saved_m
        assert (up - down) / (2 * eps) == pytest.approx(grad_weight[index], rel=1e-5, abs=1e-8)
    for index in [(0, 0, 0, 0), (3, 1, 2, 5), (4, 0, 5, 3)]:
        saved = x[index]
        x[index] = saved + eps
        up = loss()
        x[index] = saved - eps
        down = loss()
        x[index] = saved
        assert (up - down) / (2 * eps) == pytest.approx(grad_x[index], rel=1e-5, abs=1e-8)


# ================================================================= surgery
def test_unit_surgery_edits_the_area_masks():
    rng = np.random.default_rng(0)
    net = lenet5(width_scale=0.2, dtype=np.float64)  # conv 4 maps -> conv 10 maps
    conv1, conv2 = net.layers[0], net.layers[2]
    conv1.area_mask = rng.random((4, 1, 24, 24)) < 0.5
    conv2.area_mask = rng.random((10, 4, 8, 8)) < 0.5
    a1, a2 = conv1.area_mask.copy(), conv2.area_mask.copy()
    keep_units(net, 0, [0, 2, 3])
    assert np.array_equal(conv1.area_mask, a1[[0, 2, 3]])
    assert np.array_equal(conv2.area_mask, a2[:, [0, 2, 3]])
    keep_units(net, 2, [1, 5])
    assert np.array_equal(conv2.area_mask, a2[[1, 5]][:, [0, 2, 3]])
    add_units(net, 0, 2)
    assert conv1.area_mask.shape == (5, 1, 24, 24) and conv2.area_mask.shape == (2, 5, 8, 8)
    net.forward(rng.random((2, 1, 28, 28)))


def test_area_mask_round_trips_through_to_arrays():
    net = small_area_net(np.random.default_rng(3))
    again = Network.from_arrays(net.to_arrays())
    assert np.array_equal(again.layers[0].area_mask, net.layers[0].area_mask)
    x = np.random.default_rng(0).random((2, 2, 6, 6))
    np.testing.assert_array_equal(again.forward(x), net.forward(x))


# ================================================== contributions and pruning
def test_area_contributions_match_the_loop_oracle():
    rng = np.random.default_rng(1)
    layer = conv_with_area(
        rng, c=2, o=3, k=3, stride=2, padding=1, size=7, density=0.7, area_density=0.5
    )
    x = rng.standard_normal((6, 2, 7, 7))
    got = layer_area_contributions(layer, x, batch_size=4)  # batches of 4 and 2
    kernel = layer.effective_weight()
    for i in range(2):
        alone = np.zeros_like(kernel)
        alone[:, i] = kernel[:, i]
        ones = np.ones_like(layer.area_mask)
        # (N, O, Ho, Wo): input map i only
        contribution = naive_conv(x, alone, np.zeros(3), 2, 1, ones)
        np.testing.assert_allclose(
            got[:, i], np.abs(contribution).mean(axis=0), rtol=1e-12, atol=1e-12
        )


def test_prune_partial_area_removes_the_smallest_kept_contributions():
    rng = np.random.default_rng(2)
    # 2 maps, 5 maps, 50 hidden
    net = lenet5(width_scale=0.1, density=0.5, seed=1, dtype=np.float64)
    x = rng.random((16, 1, 28, 28))
    conv2 = net.layers[2]
    conv2.mask[0, 1] = conv2.weight[0, 1] = 0  # a kernel with no active weight: never a candidate
    active = (conv2.mask != 0).any(axis=(2, 3))
    per_kernel = (conv2.mask != 0).sum(axis=(2, 3))
    flops_before, params_before = count_flops(net), count_params(net)
    x2 = layer_input(net, 2, x, batch_size=5)
    np.testing.assert_array_equal(x2, net.layers[1].forward(net.layers[0].forward(x)))
    scores = layer_area_contributions(conv2, x2)

    report = prune_partial_area(net, 2, 0.3, x2)

    order = sorted((scores[o, i, y, z], np.ravel_multi_index((o, i, y, z), scores.shape))
                   for o, i, y, z in np.ndindex(scores.shape) if active[o, i])
    requested = int(np.floor(0.3 * len(order) + 1e-9))
    expected = {flat for _, flat in order[:requested]}
    # the area mask was created all ones
    assert set(np.flatnonzero(conv2.area_mask == 0).tolist()) == expected
    assert (
        report.kind == "area"
        and report.active_before == len(order)
        and report.requested == requested
    )
    assert report.removed == requested and not report.stopped_short
    assert report.threshold == order[requested - 1][0]
    # FLOPs drop by 2 x (active weights of the kernel) for every pruned position;
    # params only by the weights of kernels left with no area at all
    saved = sum(2 * per_kernel[np.unravel_index(flat, scores.shape)[:2]] for flat in expected)
    assert count_flops(net) == flops_before - saved
    emptied = active & ~(conv2.area_mask != 0).any(axis=(2, 3))
    assert report.kernels_deactivated == int(emptied.sum())
    assert count_params(net) == params_before - int(per_kernel[emptied].sum())
    # a second round prunes only among what is still kept: it never revives
    area_before = conv2.area_mask.copy()
    kept_before = int(
        ((area_before != 0) & (conv2.mask != 0).any(axis=(2, 3))[:, :, None, None]).sum()
    )
    report = prune_partial_area(net, 2, 0.5, x2)
    assert np.all(conv2.area_mask <= area_before)
    assert report.active_before == kept_before and report.removed == int(
        np.floor(0.5 * kept_before)
    )


def test_prune_partial_area_by_flops_saves_more_flops_than_by_contribution():
    rng = np.random.default_rng(3)
    x = rng.random((16, 1, 28, 28))
    saved = {}
    for rank in ("contribution", "flops"):
        net = lenet5(width_scale=0.3, density=0.3, seed=2, dtype=np.float64)
        x2 = layer_input(net, 2, x, batch_size=8)
        before = count_flops(net)
        conv2 = net.layers[2]
        scores, mask = layer_area_contributions(conv2, x2), conv2.mask.copy()
        report = prune_partial_area(net, 2, 0.2, x2, rank=rank)
        saved[rank] = before - count_flops(net)
        assert report.removed == report.requested > 0
        if rank == "flops":  # the report speaks in the rule's own ranking
            _, threshold = area_prune_by_flops(scores, np.ones_like(scores), mask, 0.2)
            assert report.threshold == threshold
    assert saved["flops"] > saved["contribution"]


def test_a_kernel_whose_whole_area_is_pruned_is_deactivated():
    rng = np.random.default_rng(4)
    net = small_area_net(rng)
    conv = net.layers[0]
    conv.area_mask[...] = 1
    conv.area_mask[1, 0] = 0
    conv.area_mask[1, 0, 2, 3] = 1  # kernel (1, 0) keeps one position
    conv.mask[1, 0] = 1
    conv.weight[1, 0] = 1e-9  # and contributes almost nothing there
    x = rng.random((4, 2, 6, 6))
    params_before = count_params(net)
    report = prune_partial_area(net, 0, 0.01, x)
    assert report.removed >= 1 and conv.area_mask[1, 0, 2, 3] == 0
    assert (
        report.kernels_deactivated == 1
        and not conv.mask[1, 0].any()
        and not conv.weight[1, 0].any()
    )
    assert count_params(net) == params_before - 9


def test_prune_partial_area_stops_short_instead_of_cutting_an_output_off():
    # the one output reads only position 0 of the conv map, where the contribution is smallest
    conv, dense = Conv2d(1, 1, 2, dtype=np.float64), Dense(9, 1, dtype=np.float64)
    conv.weight[...] = 1.0
    dense.mask[...] = dense.weight[...] = 0
    dense.mask[0, 0] = dense.weight[0, 0] = 1
    net = Network([conv, Flatten(), dense], (1, 4, 4))
    x = np.ones((3, 1, 4, 4))
    x[:, :, :2, :2] = 0.01
    report = prune_partial_area(net, 0, 0.5, x)
    assert report.requested == 4 and report.removed == 0
    assert report.stopped_short and "disconnect output unit(s) [0]" in report.reason
    assert reachable_units(net)[-1].all() and conv.area_mask[0, 0, 0, 0] == 1


def test_prune_partial_area_validates_its_arguments():
    net = lenet5(width_scale=0.1)
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    with pytest.raises(TypeError, match="not a Conv2d"):
        prune_partial_area(net, 5, 0.1, x)
    with pytest.raises(ValueError, match="fraction"):
        prune_partial_area(net, 0, 1.0, x)
    with pytest.raises(ValueError, match=r"rank must be one of \['contribution', 'flops'\]"):
        prune_partial_area(net, 0, 0.1, x, rank="size")
    with pytest.raises(ValueError, match=r"layer 0's input \(N, 1, 28, 28\)"):
        prune_partial_area(net, 0, 0.1, np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match=r"layer 2's input \(N, 2, 12, 12\)"):
        prune_partial_area(net, 2, 0.1, x)
