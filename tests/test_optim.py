"""SGD keeps the mask invariant through any number of steps; schedules."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestref.core.network import loss_and_grads
from nestref.core.optim import SGD, cosine, step_decay
from nestref.nest.networks import lenet5, lenet_300_100


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    density=st.floats(0.05, 0.9),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    weight_decay=st.sampled_from([0.0, 1e-3]),
    conv=st.booleans(),
)
def test_masked_weights_and_momentum_stay_exactly_zero(seed, density, momentum, weight_decay, conv):
    net = (lenet5(width_scale=0.2, density=density, seed=seed) if conv
           else lenet_300_100(width_scale=0.1, density=density, seed=seed))
    rng = np.random.default_rng(seed)
    opt = SGD(net, lr=0.01, momentum=momentum, weight_decay=weight_decay)
    masks = {i: layer.mask.copy() for i, layer in net.masked_layers()}
    for _ in range(30):
        x = rng.random((8,) + net.input_shape).astype(np.float32)
        loss_and_grads(net, x, rng.integers(0, 10, 8))
        opt.step()
    for i, layer in net.masked_layers():
        np.testing.assert_array_equal(layer.mask, masks[i])
        assert np.all(layer.weight[layer.mask == 0] == 0)
        assert np.all(opt.velocity[i]["weight"][layer.mask == 0] == 0)
        assert np.any(layer.weight[layer.mask == 1] != 0)


def test_sgd_step_matches_the_formula():
    net = lenet_300_100(width_scale=0.05, density=0.5, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).random((4, 784))
    loss_and_grads(net, x, np.array([1, 2, 3, 4]))
    layer = net.layers[0]
    w0, g = layer.weight.copy(), layer.grad_weight.copy()
    SGD(net, lr=0.1, momentum=0.9, weight_decay=0.01).step()
    np.testing.assert_allclose(layer.weight, (w0 - 0.1 * (g * layer.mask + 0.01 * w0)) * layer.mask)


@pytest.mark.parametrize("kwargs", [dict(lr=0), dict(lr=float("nan")), dict(lr=0.1, momentum=1.0),
                                    dict(lr=0.1, weight_decay=-1)])
def test_sgd_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        SGD(lenet_300_100(width_scale=0.05), **kwargs)


def test_schedules():
    s = cosine(0.1)
    assert s(0, 10) == pytest.approx(0.1)
    assert s(5, 10) == pytest.approx(0.05)
    assert s(9, 10) < 0.01
    assert step_decay(1.0, 0.5, 2)(5, 10) == pytest.approx(0.25)
