"""Tests for nestref.nest.accounting: params and FLOPs against brute-force counts and the paper's
baselines."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestref.core.layers import Conv2d, Dense
from nestref.nest.accounting import (
    DENSE_BASELINES,
    compression,
    count_flops,
    count_params,
    layer_table,
)
from nestref.nest.networks import lenet5, lenet_300_100
from nestref.nest.prune import prune_network

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def brute_force_counts(net):
    """(params, FLOPs) by walking every weight and, for convs, every output position it is applied
    at."""
    params = flops = 0
    for (_, out_shape), layer in zip(net.shapes(), net.layers, strict=True):
        if isinstance(layer, Dense):
            for o in range(layer.n_out):
                params += 1  # bias
                for i in range(layer.n_in):
                    if layer.mask[o, i] != 0:
                        params += 1
                        flops += 2
        elif isinstance(layer, Conv2d):
            _, ho, wo = out_shape
            k = layer.kernel_size
            for o in range(layer.n_out):
                params += 1
                for i in range(layer.n_in):
                    kept = [(y, x) for y in range(ho) for x in range(wo)
                            if layer.area_mask is None or layer.area_mask[o, i, y, x] != 0]
                    for a in range(k):
                        for b in range(k):
                            if layer.mask[o, i, a, b] != 0:
                                # a kernel applied nowhere touches nothing
                                params += 1 if kept else 0
                                flops += 2 * len(kept)
    return params, flops


def sparsify(net, seed, density, area_density):
    rng = np.random.default_rng(seed)
    shapes = net.shapes()
    for position, layer in net.masked_layers():
        layer.mask[...] = rng.random(layer.mask.shape) < density
        layer.weight *= layer.mask
        if isinstance(layer, Conv2d) and area_density is not None:
            layer.area_mask = (
                rng.random((layer.n_out, layer.n_in) + shapes[position][1][1:]) < area_density
            )
    return net


def test_the_dense_baselines_are_what_the_rules_give():
    for arch, net in (("lenet-300-100", lenet_300_100()), ("lenet5", lenet5())):
        assert count_params(net) == DENSE_BASELINES[arch]["params"]
        assert count_flops(net) == DENSE_BASELINES[arch]["flops"]
        assert compression(net, arch) == {
            "params": DENSE_BASELINES[arch]["params"],
            "flops": DENSE_BASELINES[arch]["flops"],
            "params_x": 1.0,
            "flops_x": 1.0,
        }
    # and the numbers themselves, as the paper states them
    assert DENSE_BASELINES == {"lenet-300-100": {"params": 266610, "flops": 532400},
                               "lenet5": {"params": 431080, "flops": 4586000}}


@FAST
@given(seed=st.integers(0, 2**31), density=st.floats(0.0, 1.0),
       area_density=st.one_of(st.none(), st.floats(0.0, 1.0)), conv=st.booleans())
def test_counts_match_a_brute_force_count_on_random_sparse_nets(seed, density, area_density, conv):
    net = lenet5(width_scale=0.1) if conv else lenet_300_100(width_scale=0.05)
    sparsify(net, seed, density, area_density)
    assert (count_params(net), count_flops(net)) == brute_force_counts(net)


def test_layer_table_sums_to_the_totals_and_describes_each_layer():
    net = sparsify(lenet5(width_scale=0.2), 0, 0.4, 0.5)
    table = layer_table(net)
    assert [row["position"] for row in table] == [0, 2, 5, 7]
    assert [row["type"] for row in table] == ["Conv2d", "Conv2d", "Dense", "Dense"]
    assert sum(row["params"] for row in table) == count_params(net)
    assert sum(row["flops"] for row in table) == count_flops(net)
    conv1 = table[0]
    layer = net.layers[0]
    assert conv1["shape"] == [4, 1, 5, 5] and conv1["width"] == 4 and conv1["total"] == 100
    assert conv1["active"] == int(layer.mask.sum()) and conv1["density"] == pytest.approx(
        layer.mask.mean()
    )
    assert conv1["area_density"] == pytest.approx(layer.area_mask.mean())
    assert "area_density" not in table[2]


def test_compression_of_a_pruned_net():
    net = lenet_300_100()
    prune_network(net, 0.5)
    result = compression(net, "lenet-300-100")
    assert result["params"] == 266610 - (117600 + 15000 + 500)
    assert result["params_x"] == pytest.approx(266610 / result["params"])
    assert result["flops_x"] == pytest.approx(532400 / result["flops"])
    with pytest.raises(ValueError, match="no dense baseline"):
        compression(net, "vgg16")
