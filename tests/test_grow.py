"""NeST growth: connection growth against a brute-force oracle, the bridging gradient
against finite differences, neuron and feature-map growth on small nets and real MNIST."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestref.core.layers import Conv2d, Dense, ReLU
from nestref.core.losses import softmax_cross_entropy
from nestref.core.network import Network, loss_and_grads, next_masked
from nestref.core.optim import SGD
from nestref.core.train import prepare_inputs
from nestref.nest.grow import (
    birth_strength_ladder,
    grow_connections,
    grow_feature_maps,
    grow_network_connections,
    grow_neurons,
    growth_gradients,
    network_bridging_gradient,
)
from nestref.nest.networks import lenet5, lenet_300_100


# ---------------------------------------------------------------- helpers
def small_mlp(seed, sizes=(12, 6, 5, 4), density=0.5, dtype=np.float64):
    """Dense-ReLU-Dense-ReLU-Dense; masked layers at positions 0, 2, 4.

    Small positive biases keep pre-activations off ReLU's kink at exactly 0 (where an
    input-less unit would sit), so that finite differences are two-sided derivatives.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(Dense(a, b, density, rng, dtype))
        layers[-1].bias[:] = rng.uniform(0.05, 0.2, b)
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Network(layers, (sizes[0],), name="mlp")


def toy_data(seed, n, n_in, n_classes):
    rng = np.random.default_rng(seed + 1000)
    return rng.random((n, n_in)), rng.integers(0, n_classes, n)  # inputs >= 0, like pixels


def loss_of(net, x, y):
    return softmax_cross_entropy(net.forward(x).astype(np.float64), y)[0]


def assert_masks_consistent(net):
    for _, layer in net.masked_layers():
        assert layer.weight.dtype == layer.mask.dtype
        assert np.all(layer.weight[layer.mask == 0] == 0)
        assert set(np.unique(layer.mask)) <= {0, 1}


def net_state(net, optimizer=None):
    state = {k: np.array(v) for k, v in net.to_arrays().items()}
    if optimizer is not None:
        state.update({k: np.array(v) for k, v in optimizer.to_arrays().items()})
    return state


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def oracle_growth(mask, gradient, ratio):
    """Independent brute force: flat indices to grow, largest |G| first, ties to the lowest
    index."""
    m, g = mask.reshape(-1).tolist(), gradient.reshape(-1).tolist()
    dormant = [i for i in range(len(m)) if m[i] == 0]
    ranked = sorted((-abs(g[i]), i) for i in dormant if abs(g[i]) > 0)
    count = min(math.floor(ratio * len(dormant) + 1e-9), len(ranked))
    return [i for _, i in ranked[:count]]


# ------------------------------------------------------ connection growth
@st.composite
def layer_and_gradient(draw):
    conv = draw(st.booleans())
    if conv:
        shape = (
            draw(st.integers(1, 3)),
            draw(st.integers(1, 3)),
            draw(st.integers(1, 3)),
            draw(st.integers(1, 3)),
        )
        layer = Conv2d(shape[1], shape[0], shape[2])
        shape = layer.weight.shape
    else:
        shape = (draw(st.integers(1, 6)), draw(st.integers(1, 8)))
        layer = Dense(shape[1], shape[0])
    size = int(np.prod(shape))
    mask = np.array(
        draw(st.lists(st.sampled_from([0, 1]), min_size=size, max_size=size)), np.float32
    )
    layer.mask = mask.reshape(shape)
    layer.weight = (np.arange(1, size + 1, dtype=np.float32).reshape(shape) * 0.1) * layer.mask
    # few distinct values: plenty of ties and exact zeros
    grad = draw(
        st.lists(
            st.sampled_from([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, 1e-3]), min_size=size, max_size=size
        )
    )
    return layer, np.array(grad, np.float32).reshape(shape)


@settings(max_examples=200, deadline=None)
@given(layer_and_gradient(), st.floats(0.01, 1.0), st.sampled_from(["gradient", "zero"]),
       st.sampled_from([0.01, 0.1, 1.0]))
def test_connection_growth_matches_brute_force_oracle(layer_grad, ratio, init, lr):
    layer, grad = layer_grad
    weight_before, mask_before = layer.weight.copy(), layer.mask.copy()
    expected = oracle_growth(mask_before, grad, ratio)

    report = grow_connections(layer, ratio, grad, init=init, lr=lr)

    assert report.indices.tolist() == expected
    assert report.added == len(expected)
    assert report.dormant_before == int((mask_before == 0).sum())
    assert layer.weight.shape == weight_before.shape and layer.weight.dtype == np.float32
    grown = np.zeros(grad.size, bool)
    grown[expected] = True
    grown = grown.reshape(grad.shape)
    assert np.all(mask_before[grown] == 0)                     # only dormant ones grow
    np.testing.assert_array_equal(layer.mask, np.where(grown, 1, mask_before))
    np.testing.assert_array_equal(layer.weight[~grown], weight_before[~grown])  # the rest untouched
    want = (
        (-lr * grad[grown]).astype(np.float32)
        if init == "gradient"
        else np.zeros(grown.sum(), np.float32)
    )
    np.testing.assert_array_equal(layer.weight[grown], want)
    assert np.all(layer.weight[layer.mask == 0] == 0)
    assert report.threshold == (
        min(abs(float(grad.flat[i])) for i in expected) if expected else 0.0
    )
    json.dumps(report.as_dict())


def test_connection_growth_uses_stored_gradient_and_counts_by_floor():
    layer = Dense(100, 1, density=1.0)
    layer.mask[:] = 0
    layer.weight[:] = 0
    layer.grad_weight = np.linspace(1, 2, 100, dtype=np.float32)[None, :]
    report = grow_connections(layer, 0.29)          # 0.29 * 100 is 28.999999999999996 in floats
    assert report.added == 29
    assert sorted(report.indices.tolist()) == list(range(71, 100))  # the largest |G| are the last
    assert report.gradient_abs.shape == (100,)
    assert report.as_dict()["gradient_abs_max"] == pytest.approx(2.0)


def test_connection_growth_of_a_layer_without_dormant_connections_adds_nothing():
    layer = Dense(4, 3, density=1.0, rng=0)
    before = layer.weight.copy()
    report = grow_connections(layer, 0.5, np.ones((3, 4), np.float32))
    assert (report.added, report.dormant_before, report.threshold) == (0, 0, 0.0)
    np.testing.assert_array_equal(layer.weight, before)


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 0.0}, "ratio"), ({"ratio": 1.5}, "ratio"), ({"ratio": -0.1}, "ratio"),
    ({"ratio": True}, "ratio"),
    ({"init": "random"}, "init"), ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"),
    ({"gradient": np.ones((4, 3), np.float32)}, "shape"),
    ({"gradient": np.full((3, 4), np.inf)}, "NaN or inf"),
])
def test_connection_growth_validates_its_arguments(kwargs, match):
    layer = Dense(4, 3, density=0.5, rng=0)
    args = {"ratio": 0.5, "gradient": np.ones((3, 4), np.float32)} | kwargs
    with pytest.raises(ValueError, match=match):
        grow_connections(layer, **args)


def test_connection_growth_without_any_gradient_says_so():
    with pytest.raises(ValueError, match="backward pass"):
        grow_connections(Dense(4, 3, density=0.5, rng=0), 0.5)


def test_network_connection_growth_per_layer_ratios():
    net = small_mlp(0)
    x, y = toy_data(0, 32, 12, 4)
    grads = growth_gradients(net, x, y)
    dormant = {p: int((layer.mask == 0).sum()) for p, layer in net.masked_layers()}
    reports = grow_network_connections(net, [0.5, 0.25], grads, lr=0.1, layers=[0, 4])
    assert [r.layer for r in reports] == [0, 4]
    assert reports[0].added == min(math.floor(0.5 * dormant[0]), reports[0].candidates)
    assert reports[1].added == min(math.floor(0.25 * dormant[4]), reports[1].candidates)
    assert int((net.layers[2].mask == 0).sum()) == dormant[2]          # layer 2 not asked
    assert_masks_consistent(net)
    with pytest.raises(ValueError, match="entries"):
        grow_network_connections(net, [0.1, 0.1], grads)
    with pytest.raises(ValueError, match="not a Dense or Conv2d"):
        grow_network_connections(net, 0.1, grads, layers=[1])


def test_growth_gradients_are_the_full_data_mean_gradient():
    net = small_mlp(1)
    x, y = toy_data(1, 50, 12, 4)
    loss_and_grads(net, x, y)
    full = {p: layer.grad_weight.copy() for p, layer in net.masked_layers()}
    split = growth_gradients(net, x, y, batch_size=16)          # 16 + 16 + 16 + 2
    loss_and_grads(net, x[:32], y[:32])
    first_two = {p: layer.grad_weight.copy() for p, layer in net.masked_layers()}
    partial = growth_gradients(net, x, y, batch_size=16, n_batches=2)
    for p in full:
        np.testing.assert_allclose(split[p], full[p], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(partial[p], first_two[p], rtol=1e-10, atol=1e-14)
    assert (
        growth_gradients(lenet_300_100(0.1, 0.1), np.zeros((3, 784), np.float32), [0, 1, 2])[
            0
        ].dtype
        == np.float32
    )


# ------------------------------------------------------ bridging gradient
def loss_with_direct_weight(net, position, x, y, m, n, w):
    """The loss with an explicit skip weight n -> m from layer position's input to the next
    masked layer's output."""
    nxt, _ = next_masked(net, position)
    a = x
    for i, layer in enumerate(net.layers):
        if i == position:
            x_prev = a
        a = layer.forward(a)
        if i == nxt:
            a = a.copy()
            a[:, m] += w * x_prev[:, n]
    return softmax_cross_entropy(a, y)[0]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("position", [0, 2])
def test_bridging_gradient_matches_finite_differences(seed, position):
    net = small_mlp(seed, sizes=(5, 4, 3, 3), density=0.7)
    x, y = toy_data(seed, 9, 5, 3)
    g = network_bridging_gradient(net, position, x, y)
    nxt_layer = net.layers[next_masked(net, position)[0]]
    assert g.shape == (nxt_layer.n_out, net.layers[position].n_in)
    eps = 1e-6
    numeric = np.array([[(loss_with_direct_weight(net, position, x, y, m, n, eps)
                          - loss_with_direct_weight(net, position, x, y, m, n, -eps)) / (2 * eps)
                         for n in range(g.shape[1])] for m in range(g.shape[0])])
    assert np.abs(numeric).max() > 1e-3                        # a real signal, not all zeros
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-9)


def test_bridging_gradient_leaves_stored_gradients_alone():
    net = small_mlp(0)
    x, y = toy_data(0, 8, 12, 4)
    loss_and_grads(net, x[:3], y[:3])
    before = {p: layer.grad_weight.copy() for p, layer in net.masked_layers()}
    network_bridging_gradient(net, 0, x, y)
    for p, layer in net.masked_layers():
        np.testing.assert_array_equal(layer.grad_weight, before[p])


def test_bridging_gradient_rejects_conv_output_and_unmasked_layers():
    x, y = toy_data(0, 4, 12, 4)
    with pytest.raises(ValueError, match="output layer"):
        network_bridging_gradient(small_mlp(0), 4, x, y)
    with pytest.raises(ValueError, match="not a Dense or Conv2d"):
        network_bridging_gradient(small_mlp(0), 1, x, y)
    cnn = lenet5(width_scale=0.1)
    with pytest.raises(ValueError, match="grow_feature_maps"):
        network_bridging_gradient(cnn, 0, np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, int))


# ---------------------------------------------------------- neuron growth
def assert_grown_neurons_well_formed(net, position, old_width, units, old_net):
    layer, nxt = net.layers[position], net.layers[next_masked(net, position)[0]]
    assert layer.n_out == old_width + len(units) and list(units) == list(
        range(old_width, layer.n_out)
    )
    assert layer.grown[units].all() and not layer.grown[:old_width].any()
    assert np.all(layer.bias[units] == 0)
    np.testing.assert_array_equal(
        layer.mask[units], layer.weight[units] != 0
    )  # masks = the nonzeros
    np.testing.assert_array_equal(nxt.mask[:, units], nxt.weight[:, units] != 0)
    assert np.all(layer.mask[units].sum(axis=1) > 0) and np.all(nxt.mask[:, units].sum(axis=0) > 0)
    old_layer = old_net.layers[position]
    np.testing.assert_array_equal(
        layer.weight[:old_width, : old_layer.n_in], old_layer.weight
    )  # old units untouched
    assert_masks_consistent(net)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("position", [0, 2])
@pytest.mark.parametrize("count", [1, 3])
def test_positive_neuron_growth_lowers_the_batch_loss(seed, position, count):
    net = small_mlp(seed)
    x, y = toy_data(seed, 64, 12, 4)
    old, width = net.copy(), net.layers[position].n_out
    report = grow_neurons(net, position, count, x, y, birth_ratio=0.05, birth_strength=0.01)
    assert report.added == count, report.reason
    assert report.loss_after < report.loss_before
    assert report.loss_after == pytest.approx(loss_of(net, x, y), rel=1e-12)
    assert report.loss_before == pytest.approx(loss_of(old, x, y), rel=1e-12)
    assert report.pairs_per_chunk == (3 if position == 0 else 2)  # ceil(5% of 12*5 or of 6*4 pairs)
    assert np.all(net.layers[position].weight[report.units] >= 0)  # sign="positive"
    assert_grown_neurons_well_formed(net, position, width, report.units, old)
    json.dumps(report.as_dict())


def test_neuron_takes_the_top_chunk_of_pairs_with_sqrt_weights():
    net = small_mlp(3)
    x, y = toy_data(3, 64, 12, 4)
    g = network_bridging_gradient(net, 2, x, y)
    report = grow_neurons(net, 2, 2, x, y, birth_ratio=0.1, birth_strength=0.01)
    assert report.added == 2
    np.testing.assert_array_equal(report.bridging, g)
    chunk = math.ceil(0.1 * g.size)
    order = sorted(range(g.size), key=lambda i: (-abs(g.flat[i]), i))
    for j, unit in enumerate(report.units):
        w_in = np.zeros(g.shape[1])
        w_out = np.zeros(g.shape[0])
        for i in order[j * chunk:(j + 1) * chunk]:
            m, n = divmod(i, g.shape[1])
            w_in[n] += math.sqrt(abs(g[m, n]))
            w_out[m] -= math.copysign(math.sqrt(abs(g[m, n])), g[m, n])
        # grown weights are these, each vector up to one positive scale factor
        got_in, got_out = net.layers[2].weight[unit], net.layers[4].weight[:, unit]
        np.testing.assert_allclose(
            got_in / np.abs(got_in).max(), w_in / np.abs(w_in).max(), rtol=1e-9, atol=1e-12
        )
        np.testing.assert_allclose(
            got_out / np.abs(got_out).max(), w_out / np.abs(w_out).max(), rtol=1e-9, atol=1e-12
        )
        for new, old_layer in ((got_in, net.layers[2]), (got_out, net.layers[4])):
            old_active = (
                old_layer.weight[:, :-2] if old_layer is net.layers[4] else old_layer.weight[:-2]
            )
            target = 0.01 * np.abs(old_active[old_active != 0]).mean()
            assert np.abs(new[new != 0]).mean() == pytest.approx(target, rel=1e-9)


def test_neuron_growth_on_real_mnist_seed_with_sgd(mnist):
    net = lenet_300_100(width_scale=0.4, density=0.1, seed=0)
    x = prepare_inputs(mnist.train_images[:512], net)
    y = np.asarray(mnist.train_labels[:512])
    opt = SGD(net, lr=0.05, momentum=0.9)
    loss_and_grads(net, x[:64], y[:64])  # one step, so that the momentum buffers are not all zero
    opt.step()
    pre = net.copy()
    bridging_2 = network_bridging_gradient(net, 2, x, y)       # pre-growth, for the second layer
    r0 = grow_neurons(net, 0, 3, x, y, birth_strength=0.01, optimizer=opt)
    r2 = grow_neurons(net, 2, 3, x, y, birth_strength=0.01, optimizer=opt, bridging=bridging_2)
    for r in (r0, r2):
        assert r.added == 3, r.reason
        assert r.loss_after < r.loss_before
    assert r2.loss_before == pytest.approx(r0.loss_after, rel=1e-9)
    assert net.widths() == [123, 43, 10]
    assert net.layers[0].weight.dtype == np.float32
    # the pre-growth bridging gradient gives layer 0's new neurons no part in layer 2's new neurons
    assert np.all(net.layers[2].weight[np.ix_(r2.units, r0.units)] == 0)
    assert_grown_neurons_well_formed(net, 2, 40, r2.units, pre)
    for p, layer in net.masked_layers():
        assert opt.velocity[p]["weight"].shape == layer.weight.shape
        assert opt.velocity[p]["bias"].shape == layer.bias.shape
    before = loss_of(net, x, y)
    for _ in range(3):
        loss_and_grads(net, x[:128], y[:128])
        opt.step()
    assert np.isfinite(loss_of(net, x, y)) and loss_of(net, x, y) < before
    assert_masks_consistent(net)


def test_a_failing_ladder_leaves_net_and_optimizer_bit_identical():
    net = small_mlp(2)
    x, y = toy_data(2, 64, 12, 4)
    opt = SGD(net, lr=0.1, momentum=0.9)
    loss_and_grads(net, x, y)
    opt.step()
    before = net_state(net, opt)
    uphill = -network_bridging_gradient(net, 0, x, y)          # pairs that point up the gradient
    report = grow_neurons(
        net,
        0,
        2,
        x,
        y,
        birth_strength=birth_strength_ladder(0.3, 0.001),
        optimizer=opt,
        bridging=uphill,
    )
    assert report.added == 0 and report.units == [] and "no birth strength" in report.reason
    assert report.birth_strength is None and report.loss_after == report.loss_before
    assert report.ladder == list(birth_strength_ladder(0.3, 0.001))
    assert all(loss >= report.loss_before for loss in report.ladder_losses)
    assert_same_state(net_state(net, opt), before)


def test_the_ladder_keeps_the_largest_alpha_that_lowers_the_loss():
    net = small_mlp(0, sizes=(12, 6, 5, 4))
    x, y = toy_data(0, 64, 12, 4)
    report = grow_neurons(
        net, 0, 1, x, y, birth_ratio=1.0, birth_strength=[0.003, 10.0, 1.0, 0.1, 0.03]
    )
    assert report.ladder == [10.0, 1.0, 0.1, 0.03, 0.003][:len(report.ladder)]
    assert report.added == 1 and report.birth_strength == report.ladder[-1]
    assert all(loss >= report.loss_before for loss in report.ladder_losses[:-1])
    assert report.ladder_losses[-1] < report.loss_before


def test_birth_strength_ladder():
    assert birth_strength_ladder() == pytest.approx((0.3, 0.1, 0.1 / 3, 0.1 / 9, 0.1 / 27))
    assert birth_strength_ladder(0.01, 0.01) == (0.01,)
    with pytest.raises(ValueError):
        birth_strength_ladder(0.1, 0.3)
    with pytest.raises(ValueError, match="factor"):
        birth_strength_ladder(factor=1)


def test_random_sign_is_deterministic_and_mixes_signs():
    x, y = toy_data(0, 64, 12, 4)
    nets = [small_mlp(0), small_mlp(0)]
    reports = [
        grow_neurons(
            n, 0, 2, x, y, birth_ratio=0.5, sign="random", birth_strength=[1.0, 0.1, 0.01], rng=7
        )
        for n in nets
    ]
    assert reports[0].as_dict() == reports[1].as_dict()
    assert_same_state(net_state(nets[0]), net_state(nets[1]))
    assert reports[0].added == 2, reports[0].reason
    assert (nets[0].layers[0].weight[reports[0].units] < 0).any()  # unlike sign="positive"


@pytest.mark.parametrize("kwargs, match", [
    ({"count": 0}, "count"), ({"birth_ratio": 0}, "birth_ratio"),
    ({"birth_strength": -1.0}, "birth_strength"),
    ({"birth_strength": []}, "birth_strength"), ({"sign": "negative"}, "sign"),
    ({"bridging": np.ones((9, 9))}, "bridging"),
])
def test_neuron_growth_validates_its_arguments(kwargs, match):
    x, y = toy_data(0, 8, 12, 4)
    args = {"count": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        grow_neurons(small_mlp(0), 0, x=x, y=y, **args)


# ----------------------------------------------------- feature-map growth
def conv_net(seed, dtype=np.float64):
    return lenet5(width_scale=0.15, density=0.3, seed=seed, dtype=dtype)   # 3 and 8 maps, 75 hidden


def image_data(seed, n=24):
    rng = np.random.default_rng(seed + 2000)
    return rng.random((n, 1, 28, 28)), rng.integers(0, 10, n)


@pytest.mark.parametrize("position", [0, 2])
def test_feature_map_lands_at_the_right_place_and_can_be_switched_off(position):
    net = conv_net(0)
    x, y = image_data(0)
    old = net.copy()
    old_logits = old.forward(x)
    nxt, block = next_masked(net, position)
    old_c = net.layers[position].n_out
    report = grow_feature_maps(net, position, 1, x, y, candidates=10, rng=0)
    assert report.added == 1, report.reason
    assert report.units == [old_c] and net.layers[position].grown[old_c]
    assert report.loss_after < report.loss_before
    assert report.loss_after == pytest.approx(loss_of(net, x, y), rel=1e-12)
    new_cols = slice(old_c * block, (old_c + 1) * block)
    assert (block, net.layers[nxt].n_in) == (
        (16, (old_c + 1) * 16) if position == 2 else (1, old_c + 1)
    )
    # old weights unchanged, the new map's outgoing weights exactly in its block / channel
    np.testing.assert_array_equal(net.layers[position].weight[:old_c], old.layers[position].weight)
    np.testing.assert_array_equal(net.layers[nxt].weight[:, :old_c * block], old.layers[nxt].weight)
    assert np.count_nonzero(net.layers[nxt].mask[:, new_cols]) > 0
    assert np.count_nonzero(net.layers[position].mask[old_c]) > 0
    assert_masks_consistent(net)
    net.layers[nxt].weight[:, new_cols] = 0
    np.testing.assert_allclose(net.forward(x), old_logits, rtol=1e-12, atol=1e-12)


def test_feature_map_growth_never_raises_the_loss():
    x, y = image_data(1)
    outcomes = set()
    for seed in range(6):
        net = conv_net(seed)
        before = net_state(net)
        report = grow_feature_maps(net, 2, 1, x, y, candidates=1, rng=seed)
        assert report.loss_after <= report.loss_before
        assert report.loss_after == pytest.approx(loss_of(net, x, y), rel=1e-12)
        if report.added == 0:
            assert "none of 1 random candidates" in report.reason
            assert_same_state(net_state(net), before)
        outcomes.add(report.added)
        json.dumps(report.as_dict())
    assert outcomes == {0, 1}          # both paths exercised


def test_feature_map_growth_keeps_dtype_grows_momentum_and_is_deterministic():
    x, y = image_data(2, n=16)
    x = x.astype(np.float32)
    nets = [conv_net(3, np.float32), conv_net(3, np.float32)]
    opts = [SGD(n, lr=0.01, momentum=0.9) for n in nets]
    reports = [
        grow_feature_maps(n, 0, 2, x, y, candidates=10, optimizer=o, rng=0)
        for n, o in zip(nets, opts, strict=True)
    ]
    assert reports[0].as_dict() == reports[1].as_dict()
    assert_same_state(net_state(nets[0], opts[0]), net_state(nets[1], opts[1]))
    net, opt = nets[0], opts[0]
    assert reports[0].added >= 1
    assert all(layer.weight.dtype == np.float32 for _, layer in net.masked_layers())
    for p, layer in net.masked_layers():
        assert opt.velocity[p]["weight"].shape == layer.weight.shape
    loss_and_grads(net, x, y)
    opt.step()
    assert_masks_consistent(net)


def test_feature_map_growth_rejects_dense_and_output_layers():
    x, y = toy_data(0, 4, 12, 4)
    with pytest.raises(ValueError, match="grow_neurons"):
        grow_feature_maps(small_mlp(0), 0, 1, x, y)
    with pytest.raises(ValueError, match="candidates"):
        grow_feature_maps(conv_net(0), 0, 1, *image_data(0, 2), candidates=0)


def test_a_new_feature_map_sees_the_whole_area_of_partial_area_convs():
    net = conv_net(0)
    x, y = image_data(0)
    rng = np.random.default_rng(0)
    for p, shape in ((0, (3, 1, 24, 24)), (2, (8, 3, 8, 8))):
        net.layers[p].area_mask = (rng.random(shape) < 0.5).astype(np.float64)
    old = net.copy()
    report = grow_feature_maps(net, 0, 1, x, y, candidates=10, rng=0)
    assert report.added == 1, report.reason
    new = report.units[0]
    assert np.all(net.layers[0].area_mask[new] == 1) and np.all(
        net.layers[2].area_mask[:, new] == 1
    )
    np.testing.assert_array_equal(net.layers[0].area_mask[:new], old.layers[0].area_mask)
    np.testing.assert_array_equal(net.layers[2].area_mask[:, :new], old.layers[2].area_mask)
    assert report.loss_after == pytest.approx(loss_of(net, x, y), rel=1e-12)
