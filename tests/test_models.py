"""Networks: shapes, the LeNets, serialisation, and unit surgery."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestref.core.network import Network, add_units, keep_units, next_masked
from nestref.core.optim import SGD
from nestref.data.storage import load_arrays, save_arrays
from nestref.nest.networks import build, lenet5, lenet_300_100


def test_lenet_shapes_and_widths():
    net = lenet_300_100()
    assert net.widths() == [300, 100, 10]
    assert net.forward(np.zeros((2, 784), np.float32)).shape == (2, 10)
    cnn = lenet5()
    assert cnn.widths() == [20, 50, 500, 10]
    assert cnn.forward(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    assert [s[1] for s in cnn.shapes()][:5] == [
        (20, 24, 24),
        (20, 12, 12),
        (50, 8, 8),
        (50, 4, 4),
        (800,),
    ]


def test_seed_networks_scale_width_and_density():
    seed = lenet_300_100(width_scale=0.4, density=0.1, seed=3)
    assert seed.widths() == [120, 40, 10]
    for _, layer in seed.masked_layers():
        assert 0.07 < layer.density() < 0.13
    assert lenet5(width_scale=0.5).widths() == [10, 25, 250, 10]
    with pytest.raises(ValueError, match="density"):
        lenet_300_100(density=0)
    with pytest.raises(ValueError, match="unknown architecture"):
        build("resnet")


def test_same_seed_same_network():
    a, b = lenet_300_100(density=0.2, seed=7), lenet_300_100(density=0.2, seed=7)
    for (_, la), (_, lb) in zip(a.masked_layers(), b.masked_layers(), strict=True):
        np.testing.assert_array_equal(la.weight, lb.weight)
        np.testing.assert_array_equal(la.mask, lb.mask)


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"expects inputs of shape \(N, 784\)"):
        lenet_300_100().forward(np.zeros((2, 28, 28), np.float32))


def test_serialisation_round_trip(tmp_path):
    net = lenet5(width_scale=0.3, density=0.3, seed=1)
    add_units(net, 0, 2)
    save_arrays(tmp_path / "net.npz", net.to_arrays())
    back = Network.from_arrays(load_arrays(tmp_path / "net.npz"))
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), back.forward(x))
    assert back.widths() == net.widths()
    np.testing.assert_array_equal(back.layers[0].grown, net.layers[0].grown)


def test_next_masked_block_sizes():
    cnn = lenet5()
    assert next_masked(cnn, 0) == (2, 1)
    assert next_masked(cnn, 2) == (5, 16)  # 50 maps of 4x4 after the second pool
    with pytest.raises(ValueError, match="output layer"):
        next_masked(cnn, 7)
    with pytest.raises(ValueError, match="not a Dense or Conv2d"):
        next_masked(cnn, 1)


@settings(max_examples=15, deadline=None)
@given(count=st.integers(1, 4), seed=st.integers(0, 1000), conv=st.booleans())
def test_added_units_are_inert_and_removing_them_restores_the_net(count, seed, conv):
    """New units start with weight 0 and mask 0: the function is unchanged; keep_units undoes
    add_units."""
    net = (lenet5(width_scale=0.2, density=0.5, seed=seed, dtype=np.float64) if conv
           else lenet_300_100(width_scale=0.1, density=0.5, seed=seed, dtype=np.float64))
    position = 2 if conv else 0
    x = np.random.default_rng(seed).random((3,) + net.input_shape)
    before = net.forward(x)
    opt = SGD(net, lr=0.1)
    old_width = net.layers[position].n_out
    new = add_units(net, position, count, optimizer=opt)
    np.testing.assert_array_equal(new, np.arange(old_width, old_width + count))
    # summation order may differ
    np.testing.assert_allclose(net.forward(x), before, rtol=1e-12, atol=1e-12)
    nxt, block = next_masked(net, position)
    assert net.layers[nxt].n_in == (old_width + count) * block
    for pos, layer in net.masked_layers():  # optimizer buffers follow the parameters
        assert opt.velocity[pos]["weight"].shape == layer.weight.shape
        assert opt.velocity[pos]["bias"].shape == layer.bias.shape
    assert net.layers[position].grown.sum() == count
    keep_units(net, position, np.arange(old_width), optimizer=opt)
    # summation order may differ
    np.testing.assert_allclose(net.forward(x), before, rtol=1e-12, atol=1e-12)
    assert opt.velocity[nxt]["weight"].shape == net.layers[nxt].weight.shape


def test_keep_units_selects_the_right_rows_and_blocks():
    # conv2 has 10 maps, dense has 160 inputs
    net = lenet5(width_scale=0.2, seed=0, dtype=np.float64)
    dense_before = net.layers[5].weight.copy()
    conv_before = net.layers[2].weight.copy()
    keep_units(net, 2, [1, 4])
    np.testing.assert_array_equal(net.layers[2].weight, conv_before[[1, 4]])
    np.testing.assert_array_equal(net.layers[5].weight, dense_before[:, np.r_[16:32, 64:80]])
    with pytest.raises(ValueError, match="sorted unique"):
        keep_units(net, 2, [1, 0])
