"""Tests for nestref.run.compact and the CSR kernel twins."""
import multiprocessing

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestref.core import kernels
from nestref.core.layers import Dense, ReLU
from nestref.data.storage import save_arrays
from nestref.nest.networks import lenet5, lenet_300_100
from nestref.nest.prune import layer_input, prune_network, prune_partial_area, remove_dead_neurons
from nestref.run.compact import CompactNetwork, SparseDense, compact, load_compact, save_compact

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_csr(rng, n_out, n_in, density, dtype):
    weight = (rng.standard_normal((n_out, n_in)) * (rng.random((n_out, n_in)) < density)).astype(
        dtype
    )
    layer = SparseDense.from_dense(weight, np.zeros(n_out, dtype))
    return weight, layer


def chain_links(rng, widths, density, dtype, relu=None):
    """Random CSR layers of the given widths, a ReLU after those ``relu`` says (default: all
    but the last), with the first layer's indices among its used inputs (as a compact network
    has them): (weights, biases, links, used, relu)."""
    weights, biases, links = [], [], []
    for n_in, n_out in zip(widths, widths[1:], strict=False):
        weight, layer = random_csr(rng, n_out, n_in, density, dtype)
        layer.bias = rng.standard_normal(n_out).astype(dtype)
        weights.append(weight)
        biases.append(layer.bias)
        links.append(layer)
    relu = [True] * (len(links) - 1) + [False] if relu is None else relu[: len(links)]
    return weights, biases, [
        link.chain_layer(r, local=i == 0) for i, (link, r) in enumerate(zip(links, relu,
                                                                          strict=True))
    ], links[0].used, relu


@FAST
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(0, 150),
    widths=st.lists(st.integers(1, 40), min_size=2, max_size=4),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from([np.float32, np.float64]),
    relu=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_csr_chain_twins_agree_with_each_other_and_with_dense_products(
    seed, n, widths, density, dtype, relu
):
    rng = np.random.default_rng(seed)
    weights, biases, links, used, relu = chain_links(rng, widths, density, dtype, relu)
    x = rng.standard_normal((n, widths[0])).astype(dtype)
    flat = kernels.csr_chain_arrays(x, links, used)
    with_numpy = kernels.csr_chain_numpy(*flat)
    with_numba = kernels.csr_chain_numba(*flat)
    expected = x
    for weight, bias, then_relu in zip(weights, biases, relu, strict=True):
        expected = expected @ weight.T + bias
        if then_relu:
            expected = np.maximum(expected, 0)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    assert with_numba.shape == with_numpy.shape == (n, widths[-1]) and with_numba.dtype == dtype
    np.testing.assert_allclose(with_numba, with_numpy, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(with_numpy, expected, rtol=tolerance, atol=tolerance)


def test_csr_chain_blocks_and_threads_cover_every_example_and_keep_nan(monkeypatch):
    # several blocks per thread, ragged shares and a ragged last block, and a NaN input in
    # the last thread's share that ReLU must keep (np.maximum keeps NaN); three threads
    # whatever the machine has, so the pool's path runs here too
    monkeypatch.setattr(kernels, "get_num_threads", lambda: 3)
    rng = np.random.default_rng(2)
    weights, biases, links, used, _ = chain_links(rng, [7, 5, 3], 1.0, np.float32)
    n = kernels._CHAIN_BLOCK * 5 + 7
    x = rng.standard_normal((n, 7)).astype(np.float32)
    x[n - 10, 0] = np.nan
    with_numpy = kernels.csr_chain_numpy(*kernels.csr_chain_arrays(x, links, used))
    for with_numba in (kernels.csr_chain_numba(*kernels.csr_chain_arrays(x, links, used)),
                       kernels.csr_chain(x, links, used)):  # in three threads
        np.testing.assert_array_equal(np.isnan(with_numba), np.isnan(with_numpy))
        assert np.isnan(with_numba[n - 10]).all()
        finite = ~np.isnan(with_numpy)
        np.testing.assert_allclose(with_numba[finite], with_numpy[finite], rtol=1e-5, atol=1e-5)


def _chain_in_a_child(x, links, used, queue):
    queue.put(kernels.csr_chain(x, links, used))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
def test_csr_chain_runs_in_a_forked_child_after_the_parent_used_its_threads(monkeypatch):
    # a forked child inherits the parent's thread pool object but none of its threads: a pool
    # kept across the fork would take the child's work and never run it
    monkeypatch.setattr(kernels, "get_num_threads", lambda: 2)  # the pool, on any machine
    rng = np.random.default_rng(5)
    _, _, links, used, _ = chain_links(rng, [9, 6, 4], 0.5, np.float32)
    x = rng.standard_normal((kernels._CHAIN_BLOCK * 8, 9)).astype(np.float32)
    expected = kernels.csr_chain(x, links, used)  # the parent's pool exists from here on
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_chain_in_a_child, args=(x, links, used, queue))
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    np.testing.assert_array_equal(got, expected)


def test_csr_from_dense_has_the_row_major_layout():
    weight = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]])
    layer = SparseDense.from_dense(weight, np.zeros(3))
    assert layer.data.tolist() == [2.0, 1.0, 3.0]
    assert layer.indices.tolist() == [1, 0, 2]
    assert layer.indptr.tolist() == [0, 1, 1, 3]


def test_csr_chain_uses_the_selected_backend_and_the_common_dtype():
    weight, layer = random_csr(np.random.default_rng(0), 4, 6, 0.5, np.float32)
    x = np.random.default_rng(1).standard_normal((3, 6))  # float64 input, float32 weights
    for backend in ("numpy", "numba"):
        kernels.use_backend(backend)
        try:
            out = kernels.csr_chain(x, [layer.chain_layer(False)], columns=layer.used)
        finally:
            kernels.use_backend("numba")
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, x @ weight.T.astype(np.float64), rtol=1e-12)


def pruned_lenet_300_100(rounds, dtype=np.float64):
    net = lenet_300_100(width_scale=0.3, seed=3, dtype=dtype)
    rng = np.random.default_rng(0)
    for _, layer in net.masked_layers():
        layer.bias[...] = rng.standard_normal(layer.bias.shape)
    for _ in range(rounds):
        prune_network(net, 0.3)
    return net


@pytest.mark.parametrize("sparse_below, kinds", [(0.3, None), (0.0, {Dense}), (1.0, {SparseDense})])
def test_compact_gives_the_masked_nets_outputs(sparse_below, kinds):
    net = pruned_lenet_300_100(rounds=8)
    x = np.random.default_rng(1).random((300, 784))
    weights_before = [layer.weight.copy() for _, layer in net.masked_layers()]
    small = compact(net, sparse_below=sparse_below)
    np.testing.assert_allclose(small.forward(x), net.forward(x), rtol=0, atol=1e-10)
    np.testing.assert_allclose(small.predict(x, batch_size=128), net.forward(x), rtol=0, atol=1e-10)
    assert all(
        np.array_equal(a, layer.weight)
        for a, (_, layer) in zip(weights_before, net.masked_layers(), strict=True)
    )
    dense_layers = {
        type(layer) for layer in small.layers if isinstance(layer, (SparseDense, Dense))
    }
    if kinds is not None:
        assert dense_layers == kinds
    survivors = net.copy()
    remove_dead_neurons(survivors)
    stored = sum(row["nnz"] for row in small.summary() if "nnz" in row)
    assert stored == sum(int((layer.weight != 0).sum()) for _, layer in survivors.masked_layers())


def test_a_dense_layer_between_sparse_ones_splits_the_chain():
    # SparseDense, ReLU | Dense | ReLU | SparseDense: the chain stops at the BLAS layer and
    # starts again after it; the logits stay the masked network's
    net = pruned_lenet_300_100(rounds=8)
    net.layers[2].mask[...] = 1.0  # the middle layer dense again
    net.layers[2].weight[...] = np.random.default_rng(4).standard_normal(net.layers[2].weight.shape)
    small = compact(net, sparse_below=0.3)
    kinds = [type(layer).__name__ for layer in small.layers]
    assert kinds == ["SparseDense", "ReLU", "Dense", "ReLU", "SparseDense"]
    assert [[type(layer).__name__ for layer in run] for run in small._runs()] == [
        ["SparseDense", "ReLU"], ["Dense"], ["ReLU"], ["SparseDense"]]
    x = np.random.default_rng(1).random((300, 784))
    np.testing.assert_allclose(small.predict(x, batch_size=300), net.forward(x), rtol=0,
                               atol=1e-10)


def test_runs_join_sparse_layers_and_their_relus_only():
    layers = [SparseDense.from_dense(np.eye(4), np.zeros(4)) for _ in range(3)]
    small = CompactNetwork([layers[0], ReLU(), ReLU(), layers[1], layers[2], ReLU()], (4,))
    assert [[type(layer).__name__ for layer in run] for run in small._runs()] == [
        ["SparseDense", "ReLU"], ["ReLU"], ["SparseDense", "SparseDense", "ReLU"]]
    x = np.random.default_rng(0).standard_normal((5, 4))
    np.testing.assert_allclose(small.forward(x), np.maximum(x, 0))


def test_a_compact_network_predicts_no_examples():
    small = compact(pruned_lenet_300_100(rounds=8, dtype=np.float32), sparse_below=1.0)
    assert all(not isinstance(layer, Dense) for layer in small.layers)
    out = small.predict(np.zeros((0, 784), np.float32))
    assert out.shape == (0, 10) and out.dtype == np.float32


def test_csr_chain_names_a_missing_layer():
    with pytest.raises(ValueError, match="at least one layer"):
        kernels.csr_chain(np.zeros((2, 3)), [])


def test_compact_drops_dead_units():
    net = pruned_lenet_300_100(rounds=12)
    small = compact(net)
    widths = [layer.n_out for layer in small.layers if isinstance(layer, SparseDense)]
    assert widths[:2] != net.widths()[:2] and widths[-1] == 10
    assert widths[0] < net.widths()[0]


def test_compact_lenet5_with_partial_areas_gives_the_same_outputs():
    rng = np.random.default_rng(2)
    net = lenet5(width_scale=0.2, seed=1, dtype=np.float32)
    for _, layer in net.masked_layers():
        layer.bias[...] = rng.standard_normal(layer.bias.shape)
    x = rng.random((64, 1, 28, 28)).astype(np.float32)
    for _ in range(6):
        prune_network(net, (0.2, 0.3, 0.4, 0.2))
    prune_partial_area(net, 2, 0.4, layer_input(net, 2, x[:16]))
    small = compact(net)
    np.testing.assert_allclose(small.forward(x), net.forward(x), rtol=1e-4, atol=1e-4)


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    net = lenet5(width_scale=0.2, seed=2, dtype=np.float64)
    x = rng.random((8, 1, 28, 28))
    for _ in range(4):
        prune_network(net, 0.4)
    prune_partial_area(net, 0, 0.3, x)
    small = compact(net)
    save_compact(tmp_path / "small.npz", small)
    again = load_compact(tmp_path / "small.npz")
    assert isinstance(again, CompactNetwork)
    assert (
        again.summary() == small.summary()
        and again.input_shape == small.input_shape
        and again.name == small.name
    )
    np.testing.assert_array_equal(again.forward(x), small.forward(x))


def test_load_compact_rejects_other_files(tmp_path):
    save_arrays(tmp_path / "network.npz", lenet_300_100(width_scale=0.1).to_arrays())
    with pytest.raises(ValueError, match="nestref-compact"):
        load_compact(tmp_path / "network.npz")
    save_arrays(tmp_path / "empty.npz", {"x": np.zeros(2)})
    with pytest.raises(ValueError, match="no spec"):
        load_compact(tmp_path / "empty.npz")


def test_compact_network_checks_the_input_shape():
    small = compact(lenet_300_100(width_scale=0.1))
    with pytest.raises(ValueError, match="784"):
        small.forward(np.zeros((2, 28, 28)))
