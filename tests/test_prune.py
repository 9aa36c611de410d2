"""Tests for nestref.nest.prune: magnitude pruning, the connectivity guard, dead-neuron removal."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestref.core.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from nestref.core.network import Network, loss_and_grads
from nestref.core.optim import SGD
from nestref.nest.networks import lenet5, lenet_300_100
from nestref.nest.prune import (
    DEFAULT_PRUNE_FRACTIONS,
    NeuronRemovalReport,
    PruneReport,
    prune_by_magnitude,
    prune_network,
    prune_neurons_by_activation,
    reachable_units,
    remove_dead_neurons,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ================================================================== oracles
def oracle_prune_order(weight, mask, protect):
    """Flat indices of active unprotected connections by (|w|, flat index): the brute-force
    order."""
    flat_w, flat_m, flat_p = np.abs(weight).reshape(-1), mask.reshape(-1), protect.reshape(-1)
    candidates = [
        (float(flat_w[i]), i) for i in range(flat_w.size) if flat_m[i] != 0 and not flat_p[i]
    ]
    return [i for _, i in sorted(candidates)]


def connection_matrix(layer, in_shape):
    """Bool (inputs, outputs) of one example: which input unit feeds which output unit, by loops."""
    out_shape = layer.output_shape(in_shape)
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    conn = np.zeros((n_in, n_out), dtype=bool)
    if isinstance(layer, Dense):
        conn[:] = (layer.mask != 0).T
    elif isinstance(layer, Conv2d):
        c, h, w = in_shape
        o, ho, wo = out_shape
        k, s, pad = layer.kernel_size, layer.stride, layer.padding
        for oo in range(o):
            for y in range(ho):
                for x in range(wo):
                    for i in range(c):
                        if layer.area_mask is not None and layer.area_mask[oo, i, y, x] == 0:
                            continue
                        for ki in range(k):
                            for kj in range(k):
                                yy, xx = y * s + ki - pad, x * s + kj - pad
                                if layer.mask[oo, i, ki, kj] != 0 and 0 <= yy < h and 0 <= xx < w:
                                    conn[(i * h + yy) * w + xx, (oo * ho + y) * wo + x] = True
    elif isinstance(layer, MaxPool2d):
        c, h, w = in_shape
        _, ho, wo = out_shape
        for cc in range(c):
            for y in range(ho):
                for x in range(wo):
                    for ki in range(layer.kernel_size):
                        for kj in range(layer.kernel_size):
                            yy, xx = y * layer.stride + ki, x * layer.stride + kj
                            conn[(cc * h + yy) * w + xx, (cc * ho + y) * wo + x] = True
    else:  # ReLU, Flatten: unit to itself
        conn[:] = np.eye(n_in, dtype=bool)
    return conn


def oracle_reachable_outputs(net):
    """Output units reachable from the input: the product of every layer's connection matrix."""
    paths = np.eye(int(np.prod(net.input_shape)), dtype=np.int64)
    for layer, (in_shape, _) in zip(net.layers, net.shapes(), strict=True):
        paths = np.minimum(paths @ connection_matrix(layer, in_shape).astype(np.int64), 1)
    return paths.any(axis=0)


# ============================================================ random nets
def randomize(net, rng, density, nonzero_bias=True):
    for _, layer in net.masked_layers():
        layer.mask[...] = rng.random(layer.mask.shape) < density
        # few distinct magnitudes so that ties happen often
        layer.weight[...] = (
            rng.choice([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0], layer.weight.shape) * layer.mask
        )
        if nonzero_bias:
            layer.bias[...] = rng.standard_normal(layer.bias.shape)
    return net


def dense_net(sizes, rng, density, dtype=np.float64):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [Dense(a, b, dtype=dtype), ReLU()]
    return randomize(Network(layers[:-1], (sizes[0],), "dense-test"), rng, density)


def conv_net(
    rng, density, c0=2, c1=3, c2=4, k1=3, stride=1, padding=0, pool=True, hidden=5, n_out=3
):
    layers = [Conv2d(c0, c1, k1, stride, padding, dtype=np.float64)]
    if pool:
        layers.append(MaxPool2d(2))
    layers += [Conv2d(c1, c2, 2, dtype=np.float64), Flatten()]
    probe = Network(layers, (c0, 9, 9), "probe")
    flat = probe.shapes()[-1][1][0]
    layers += [
        Dense(flat, hidden, dtype=np.float64),
        ReLU(),
        Dense(hidden, n_out, dtype=np.float64),
    ]
    return randomize(Network(layers, (c0, 9, 9), "conv-test"), rng, density)


random_dense = st.builds(
    lambda sizes, seed, density: dense_net(sizes, np.random.default_rng(seed), density),
    st.lists(st.integers(1, 7), min_size=3, max_size=4),
    st.integers(0, 2**31),
    st.floats(0.15, 1.0),
)
random_conv = st.builds(
    lambda seed, density, k1, stride, padding, pool: conv_net(
        np.random.default_rng(seed), density, k1=k1, stride=stride, padding=padding, pool=pool
    ),
    st.integers(0, 2**31),
    st.floats(0.1, 1.0),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(0, 1),
    st.booleans(),
)


# ===================================================== prune_by_magnitude
@FAST
@given(seed=st.integers(0, 2**31), conv=st.booleans(), density=st.floats(0.0, 1.0),
       fraction=st.floats(0.0, 0.999), use_protect=st.booleans())
def test_prune_by_magnitude_removes_exactly_the_smallest(
    seed, conv, density, fraction, use_protect
):
    rng = np.random.default_rng(seed)
    layer = Conv2d(3, 4, 2, dtype=np.float64) if conv else Dense(9, 5, dtype=np.float64)
    layer.mask[...] = rng.random(layer.mask.shape) < density
    layer.weight[...] = (
        rng.choice([0.0, 0.5, -0.5, 1.0, 2.0, -3.0], layer.weight.shape) * layer.mask
    )
    protect = (
        rng.random(layer.mask.shape) < 0.3
        if use_protect
        else np.zeros(layer.mask.shape, dtype=bool)
    )
    mask_before, weight_before = layer.mask.copy(), layer.weight.copy()

    report = prune_by_magnitude(layer, fraction, protect=protect if use_protect else None)

    n_active = int((mask_before != 0).sum())
    requested = math.floor(fraction * n_active + 1e-9)
    expected = oracle_prune_order(weight_before, mask_before, protect)[:requested]
    removed = np.flatnonzero((mask_before != 0) & (layer.mask == 0))
    assert sorted(removed.tolist()) == sorted(expected)
    assert (
        report.removed == len(expected)
        and report.active_before == n_active
        and report.requested == requested
    )
    assert report.stopped_short == (len(expected) < requested)
    assert np.all(layer.mask <= mask_before)  # never revives
    assert np.all(layer.weight[layer.mask == 0] == 0)
    untouched = layer.mask != 0
    assert np.array_equal(layer.weight[untouched], weight_before[untouched])
    if expected:
        assert report.threshold == max(abs(weight_before.reshape(-1)[i]) for i in expected)
    else:
        assert report.threshold is None


def test_prune_by_magnitude_ties_go_to_the_lowest_flat_index():
    layer = Dense(4, 1, dtype=np.float64)
    layer.weight[...] = [[1.0, -1.0, 1.0, 5.0]]
    prune_by_magnitude(layer, 0.5)  # floor(0.5 * 4) = 2 of the three tied 1.0s: indices 0 and 1
    assert layer.mask.tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_prune_count_is_robust_to_float_rounding():
    layer = Dense(100, 1, dtype=np.float64)
    layer.weight[...] = np.arange(1, 101)
    # 0.29 * 100 = 28.999999999999996 in floats
    assert prune_by_magnitude(layer, 0.29).removed == 29


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan"), "0.1"])
def test_prune_by_magnitude_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="fraction"):
        prune_by_magnitude(Dense(3, 2), fraction)


def test_prune_by_magnitude_rejects_a_protect_of_the_wrong_shape():
    with pytest.raises(ValueError, match="protect"):
        prune_by_magnitude(Dense(3, 2), 0.5, protect=np.zeros((3, 2), dtype=bool))


def test_prune_report_as_dict_is_plain_data():
    layer = Dense(5, 3, dtype=np.float64)
    report = prune_by_magnitude(layer, 0.5, position=4)
    as_dict = report.as_dict()
    assert isinstance(report, PruneReport)
    assert (
        as_dict["layer"] == 4
        and as_dict["removed"] == 7
        and isinstance(as_dict["threshold"], float)
    )


# =========================================================== prune_network
def test_default_fractions_have_one_entry_per_masked_layer():
    assert len(DEFAULT_PRUNE_FRACTIONS["lenet-300-100"]) == len(
        lenet_300_100(width_scale=0.1).masked_layers()
    )
    assert len(DEFAULT_PRUNE_FRACTIONS["lenet5"]) == len(lenet5(width_scale=0.1).masked_layers())
    assert DEFAULT_PRUNE_FRACTIONS["lenet-300-100"] == (0.1, 0.08, 0.04)


def test_prune_network_applies_per_layer_fractions():
    net = lenet_300_100(width_scale=0.1, seed=1)
    reports = prune_network(net, DEFAULT_PRUNE_FRACTIONS["lenet-300-100"])
    active = [784 * 30, 30 * 10, 10 * 10]
    assert [r.requested for r in reports] == [
        math.floor(f * a) for f, a in zip((0.1, 0.08, 0.04), active, strict=True)
    ]
    assert [r.removed for r in reports] == [r.requested for r in reports]
    assert [r.layer for r in reports] == [0, 2, 4]


def test_prune_network_rejects_a_wrong_number_of_fractions():
    with pytest.raises(ValueError, match="one per masked layer"):
        prune_network(lenet_300_100(width_scale=0.1), [0.1, 0.1])


@FAST
@given(
    net=st.one_of(random_dense, random_conv),
    fraction=st.floats(0.3, 0.95),
    rounds=st.integers(1, 4),
)
def test_prune_network_never_disconnects_and_removes_a_smallest_prefix(net, fraction, rounds):
    reachable_before = oracle_reachable_outputs(net)
    output_layer = net.masked_layers()[-1][1]
    had_input = (output_layer.mask != 0).reshape(output_layer.n_out, -1).any(axis=1)
    for _ in range(rounds):
        before = {p: (layer.weight.copy(), layer.mask.copy()) for p, layer in net.masked_layers()}
        reports = prune_network(net, fraction)
        for report in reports:
            layer = net.layers[report.layer]
            weight, mask = before[report.layer]
            assert np.all(layer.mask <= mask)
            assert report.removed <= report.requested
            assert report.stopped_short == (report.removed < report.requested)
            assert bool(report.reason) == report.stopped_short
            removed = set(np.flatnonzero((mask != 0) & (layer.mask == 0)).tolist())
            assert len(removed) == report.removed
            # the removed ones are the smallest: a prefix of the (|w|, index) order of the
            # prunable ones (for the output layer, each unit's strongest input is not prunable)
            order = oracle_prune_order(weight, mask, np.zeros(mask.shape, dtype=bool))
            if layer is output_layer:
                strongest = set()
                for unit in range(layer.n_out):
                    row = [i for i in order if np.unravel_index(i, mask.shape)[0] == unit]
                    if row:
                        strongest.add(max(row, key=lambda i: (abs(weight.reshape(-1)[i]), -i)))
                order = [i for i in order if i not in strongest]
            assert removed == set(order[:report.removed])
        assert np.array_equal(oracle_reachable_outputs(net) & reachable_before, reachable_before)
    assert np.all((output_layer.mask != 0).reshape(output_layer.n_out, -1).any(axis=1)[had_input])


def test_prune_network_stops_short_instead_of_cutting_an_output_off():
    # output unit 1 is reached only through hidden unit 1, whose one input is the
    # second smallest weight of the first layer: pruning the two smallest would cut it off
    net = dense_net([3, 2, 2], np.random.default_rng(0), 1.0)
    first, second = net.layers[0], net.layers[2]
    first.weight[...] = [[0.05, 6.0, 7.0], [0.0, 0.0, 0.1]]
    first.mask[...] = first.weight != 0
    second.weight[...] = [[1.0, 0.0], [0.0, 1.0]]
    second.mask[...] = second.weight != 0
    reports = prune_network(net, [0.5, 0.0])
    assert reports[0].requested == 2 and reports[0].removed == 1
    assert reports[0].stopped_short and "disconnect output unit(s) [1]" in reports[0].reason
    assert first.mask[1, 2] == 1 and first.mask[0, 0] == 0
    assert oracle_reachable_outputs(net).all()


@FAST
@given(net=st.one_of(random_dense, random_conv), area_seed=st.integers(0, 2**31))
def test_reachable_units_matches_the_connection_matrix_oracle(net, area_seed):
    rng = np.random.default_rng(area_seed)
    shapes = net.shapes()
    for position, layer in net.masked_layers():
        if isinstance(layer, Conv2d) and rng.random() < 0.7:
            shape = (layer.n_out, layer.n_in) + shapes[position][1][1:]
            layer.area_mask = (rng.random(shape) < 0.6).astype(np.float64)
    assert np.array_equal(reachable_units(net)[-1], oracle_reachable_outputs(net))


# ======================================================= remove_dead_neurons
def assert_same_function(net, before, x):
    np.testing.assert_allclose(net.forward(x), before, rtol=0, atol=1e-10)


def assert_optimizer_fits(net, optimizer):
    for position, layer in net.masked_layers():
        assert optimizer.velocity[position]["weight"].shape == layer.weight.shape
        assert optimizer.velocity[position]["bias"].shape == layer.bias.shape


def test_remove_dead_neurons_folds_constant_units_and_preserves_the_function():
    rng = np.random.default_rng(3)
    net = dense_net([6, 5, 4, 3], rng, 0.8)
    first, second = net.layers[0], net.layers[2]
    first.mask[1] = first.weight[1] = 0  # no inputs, outputs relu(+1.5) to layer 2
    first.bias[1] = 1.5
    first.mask[2] = first.weight[2] = 0  # no inputs, relu(-1) = 0
    first.bias[2] = -1.0
    second.mask[:, 3] = second.weight[:, 3] = 0  # unit 3 of layer 0: no outputs
    second.mask[:, 1] = 1
    second.weight[:, 1] = [1.0, -2.0, 0.5, 3.0]
    first.grown[1] = True
    x = rng.random((32, 6))
    optimizer = SGD(net, lr=0.1, momentum=0.9)
    loss_and_grads(net, x, np.zeros(32, dtype=np.int64))
    optimizer.step()  # non-zero momentum buffers, so that their shrinking is visible
    before = net.forward(x)

    report = remove_dead_neurons(net, optimizer)

    assert isinstance(report, NeuronRemovalReport)
    assert_same_function(net, before, x)
    entry = report.layers[0]
    assert entry["width_before"] == 5 and entry["width_after"] == net.widths()[0] <= 2
    assert entry["removed_no_input"] >= 2 and entry["removed_no_output"] >= 1
    assert (
        entry["removed_grown"] == 1
        and entry["removed_grown"] + entry["removed_seed"] == entry["removed"]
    )
    assert_optimizer_fits(net, optimizer)
    assert net.widths()[-1] == 3  # the output layer never shrinks
    loss_and_grads(net, x, np.zeros(32, dtype=np.int64))
    optimizer.step()  # the shrunk buffers still drive the shrunk network
    assert remove_dead_neurons(net).removed == 0  # a fixed point


@FAST
@given(net=random_dense, seed=st.integers(0, 2**31))
def test_remove_dead_neurons_is_function_preserving_on_random_dense_nets(net, seed):
    x = np.random.default_rng(seed).random((16,) + net.input_shape)
    for _ in range(2):
        prune_network(net, 0.6)
    before = net.forward(x)
    widths = net.widths()
    report = remove_dead_neurons(net)
    assert_same_function(net, before, x)
    assert [e["width_after"] for e in report.layers] == net.widths()[:-1]
    assert all(a <= b and a >= 1 for a, b in zip(net.widths(), widths, strict=True))
    for entry, position in zip(
        report.layers, [p for p, _ in net.masked_layers()[:-1]], strict=True
    ):
        layer = net.layers[position]
        # with Dense layers every dead unit can go, but the one a layer must keep
        assert entry["dead_kept"] == 0 or layer.n_out == 1
        assert (layer.mask != 0).any(axis=1).all() or layer.n_out == 1


def test_remove_dead_neurons_on_lenet5_preserves_the_function_and_shrinks_maps():
    rng = np.random.default_rng(5)
    net = lenet5(width_scale=0.2, density=0.6, seed=2, dtype=np.float64)  # 4, 10, 100 wide
    for _, layer in net.masked_layers():
        layer.bias[...] = rng.standard_normal(layer.bias.shape)
    conv1, conv2, fc1 = net.layers[0], net.layers[2], net.layers[5]
    conv1.mask[0] = conv1.weight[0] = 0  # map 0 of conv1: constant bias map, feeds conv2
    # map 1 of conv2: constant, feeds fc1 through pool + flatten
    conv2.mask[1] = conv2.weight[1] = 0
    conv2.mask[:, 2] = conv2.weight[:, 2] = 0  # map 2 of conv1: no outputs
    fc1.mask[:, 3 * 16:4 * 16] = fc1.weight[:, 3 * 16:4 * 16] = 0  # map 3 of conv2: no outputs
    x = rng.random((8, 1, 28, 28))
    before = net.forward(x)
    optimizer = SGD(net, lr=0.1)
    report = remove_dead_neurons(net, optimizer)
    assert_same_function(net, before, x)
    assert net.widths()[:2] == [2, 8]
    assert report.layers[0]["removed_no_input"] == 1 and report.layers[0]["removed_no_output"] == 1
    assert report.layers[1]["removed_no_input"] == 1 and report.layers[1]["removed_no_output"] == 1
    assert_optimizer_fits(net, optimizer)
    assert report.as_dict()["removed"] == report.removed


@pytest.mark.parametrize("padding, bias, kept", [(1, 0.7, True), (1, 0.0, False), (0, 0.7, False)])
def test_a_constant_map_before_a_padded_conv_is_kept_unless_its_constant_is_zero(
    padding, bias, kept
):
    rng = np.random.default_rng(0)
    net = randomize(
        Network(
            [
                Conv2d(1, 3, 3, padding=padding, dtype=np.float64),
                Conv2d(3, 2, 3, padding=padding, dtype=np.float64),
                Flatten(),
                Dense(2 * (7 + 4 * padding - 4) ** 2, 2, dtype=np.float64),
            ],
            (1, 7, 7),
        ),
        rng,
        1.0,
    )
    first = net.layers[0]
    first.mask[0] = first.weight[0] = 0
    first.bias[0] = bias
    x = rng.random((4, 1, 7, 7))
    before = net.forward(x)
    report = remove_dead_neurons(net)
    assert_same_function(net, before, x)
    assert net.widths()[0] == (3 if kept else 2)
    assert report.layers[0]["dead_kept"] == int(kept)


def test_a_constant_map_is_kept_when_the_next_area_mask_makes_it_position_dependent():
    rng = np.random.default_rng(1)
    net = randomize(
        Network(
            [
                Conv2d(1, 2, 3, dtype=np.float64),
                Conv2d(2, 2, 3, dtype=np.float64),
                Flatten(),
                Dense(2 * 9, 2, dtype=np.float64),
            ],
            (1, 7, 7),
        ),
        rng,
        1.0,
    )
    net.layers[0].mask[0] = net.layers[0].weight[0] = 0
    net.layers[0].bias[0] = 1.0
    area = np.ones((2, 2, 3, 3))
    area[0, 0, 1, 1] = 0  # map 0's contribution to map 0 of the next conv stops at one position
    net.layers[1].area_mask = area
    x = rng.random((4, 1, 7, 7))
    before = net.forward(x)
    report = remove_dead_neurons(net)
    assert_same_function(net, before, x)
    assert net.widths()[0] == 2 and report.layers[0]["dead_kept"] == 1
    # now uniform (all pruned): the constant adds nothing there, folding is exact
    net.layers[1].area_mask[0, 0] = 0
    before = net.forward(x)
    report = remove_dead_neurons(net)
    assert_same_function(net, before, x)
    assert net.widths()[0] == 1


def test_remove_dead_neurons_keeps_one_unit_of_a_fully_dead_layer():
    net = dense_net([4, 3, 2], np.random.default_rng(2), 1.0)
    net.layers[0].mask[...] = net.layers[0].weight[...] = 0
    net.layers[0].bias[...] = [0.5, -1.0, 2.0]
    x = np.random.default_rng(0).random((5, 4))
    before = net.forward(x)
    report = remove_dead_neurons(net)
    assert_same_function(net, before, x)
    assert net.widths() == [1, 2] and report.layers[0]["dead_kept"] == 1


# =============================================== prune_neurons_by_activation
def test_prune_neurons_by_activation_removes_quiet_units_and_folds_their_mean():
    rng = np.random.default_rng(4)
    net = dense_net([5, 6, 4, 3], rng, 1.0)
    first, second = net.layers[0], net.layers[2]
    for layer in (first, second):  # every other unit loud: inputs >= 0, weights > 0, bias 5
        layer.weight[...] = np.abs(layer.weight)
        layer.bias[...] = 5.0
    first.mask[2] = first.weight[2] = 0
    first.bias[2] = 0.01  # constant output 0.01: below the threshold, folded exactly
    first.weight[4] *= 1e-6  # tiny but varying: removed, approximately
    first.bias[4] = 0.0
    x = rng.random((64, 5))
    quiet = np.abs(np.maximum(x @ first.weight.T + first.bias, 0)).mean(axis=0) < 0.05
    before = net.forward(x)
    report = prune_neurons_by_activation(net, x, 0.05)
    assert report.criterion == "activation"
    assert quiet.tolist() == [False, False, True, False, True, False]
    assert (
        report.layers[0]["removed_low_activation"] == 2
        and report.layers[1]["removed_low_activation"] == 0
    )
    assert net.widths() == [4, 4, 3]
    np.testing.assert_allclose(net.forward(x), before, rtol=0, atol=1e-4)


def test_prune_neurons_by_activation_keeps_the_loudest_unit_when_all_are_quiet():
    net = dense_net([5, 6, 4, 3], np.random.default_rng(6), 1.0)
    report = prune_neurons_by_activation(net, np.random.default_rng(0).random((10, 5)), 1e9)
    assert net.widths() == [1, 1, 3] and report.removed == 5 + 3


def test_prune_neurons_by_activation_with_threshold_zero_removes_nothing():
    net = dense_net([5, 6, 4, 3], np.random.default_rng(6), 1.0)
    assert prune_neurons_by_activation(net, np.ones((3, 5)), 0.0).removed == 0
    with pytest.raises(ValueError, match="threshold"):
        prune_neurons_by_activation(net, np.ones((3, 5)), -1.0)
