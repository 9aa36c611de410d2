"""The paper's rules as pure functions on arrays (nestref.nest.grow, nestref.nest.prune,
nestref.nest.rounding), each against an independent oracle written with plain loops or exact
fractions."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestref.core.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from nestref.core.network import Network
from nestref.nest.grow import (
    bridging_gradient,
    choose_candidate,
    match_layer_scale,
    mean_active_magnitude,
    neuron_weights,
    neurons_to_add,
    pairs_per_neuron,
    random_sparse_kernels,
    rank_pairs,
    select_growth,
    strength_ladder,
)
from nestref.nest.prune import (
    area_contributions,
    area_prune,
    area_prune_by_flops,
    magnitude_prune,
    smallest_first,
    strongest_input_per_unit,
)
from nestref.nest.rounding import ceil_count, floor_count

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tied_array(rng, shape, levels=4, zero_fraction=0.2):
    """Random values on a few levels (so that ties happen), some exactly 0, both signs."""
    values = rng.integers(1, levels + 1, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return np.where(rng.random(shape) < zero_fraction, 0.0, values)


# ================================================================= rounding
@given(st.integers(0, 100), st.integers(0, 2000))
def test_counts_are_exact_for_decimal_fractions(percent, n):
    exact = Fraction(percent, 100) * n
    assert floor_count(percent / 100, n) == math.floor(exact)
    assert ceil_count(percent / 100, n) == math.ceil(exact)


# ================================================================ growth
@given(st.integers(1, 100), st.integers(1, 600), st.integers(0, 600))
def test_neurons_to_add_is_the_floored_fraction_of_the_target_at_least_one_up_to_the_cap(
        percent, target, width):
    width = min(width, target)
    asked = max(1, math.floor(Fraction(percent, 100) * target))
    assert neurons_to_add(percent / 100, target, width) == min(asked, target - width)


def test_neurons_to_add_rounds_down_as_the_spec_says():
    assert neurons_to_add(0.1, 35, 10) == 3  # 3.5 asked: rounded down, as any count of a fraction
    assert neurons_to_add(0.1, 300, 290) == 10 and neurons_to_add(0.1, 300, 300) == 0
    assert neurons_to_add(0.01, 50, 20) == 1  # at least one


@FAST
@given(st.integers(0, 10_000), st.sampled_from([(7, 5), (3, 2, 3, 3)]), st.floats(0.01, 1.0))
def test_select_growth_matches_a_sorted_list_of_the_dormant(seed, shape, ratio):
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < 0.4).astype(np.float32)
    G = tied_array(rng, shape)
    before = (mask.copy(), G.copy())
    grown = select_growth(mask, G, ratio)
    dormant = [j for j in range(mask.size) if mask.flat[j] == 0]
    ranked = sorted((-abs(G.flat[j]), j) for j in dormant if G.flat[j] != 0)
    k = min(math.floor(Fraction(ratio) * len(dormant) + Fraction(1, 10**9)), len(ranked))
    assert sorted(np.flatnonzero(grown).tolist()) == sorted(j for _, j in ranked[:k])
    assert grown.shape == mask.shape and grown.dtype == bool
    np.testing.assert_array_equal(before[0], mask)           # the rule edits nothing
    np.testing.assert_array_equal(before[1], G)


@FAST
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 5), st.integers(1, 4))
def test_bridging_gradient_is_the_batch_mean_of_outer_products(seed, batch, n_in, n_out):
    rng = np.random.default_rng(seed)
    x_prev = rng.random((batch, n_in))
    per_example = rng.standard_normal((batch, n_out))           # dl_b/du for each example
    G = bridging_gradient(x_prev, per_example / batch)          # delta of the mean loss
    oracle = np.zeros((n_out, n_in))
    for b in range(batch):
        for m in range(n_out):
            for n in range(n_in):
                oracle[m, n] += per_example[b, m] * x_prev[b, n] / batch
    np.testing.assert_allclose(G, oracle, rtol=1e-12, atol=1e-14)


@FAST
@given(st.integers(0, 10_000), st.integers(1, 5), st.integers(1, 6))
def test_rank_pairs_orders_nonzero_pairs_by_magnitude_then_index(seed, m, n):
    G = tied_array(np.random.default_rng(seed), (m, n))
    expected = [j for _, j in sorted((-abs(G.flat[j]), j) for j in range(G.size) if G.flat[j] != 0)]
    assert rank_pairs(G).tolist() == expected


def neuron_weights_oracle(G, count, birth_ratio, signs):
    """Loops over the ranked pairs, one dict of weights per neuron."""
    ranked = [j for _, j in sorted((-abs(G.flat[j]), j) for j in range(G.size) if G.flat[j] != 0)]
    chunk = max(1, math.ceil(Fraction(birth_ratio) * G.size - Fraction(1, 10**9)))
    w_in, w_out = [], []
    for j in range(count):
        pairs = ranked[j * chunk:(j + 1) * chunk]
        if not pairs:
            break
        row, col = np.zeros(G.shape[1]), np.zeros(G.shape[0])
        for flat in pairs:
            m, n = divmod(flat, G.shape[1])
            d, s = math.sqrt(abs(G[m, n])), signs[m, n]
            row[n] += s * d
            col[m] += -s * math.copysign(1.0, G[m, n]) * d
        w_in.append(row)
        w_out.append(col)
    return np.array(w_in).reshape(-1, G.shape[1]), np.array(w_out).reshape(-1, G.shape[0]).T


@FAST
@given(st.integers(0, 10_000), st.integers(1, 5), st.integers(1, 6), st.integers(1, 4),
       st.floats(0.01, 1.0), st.booleans())
def test_neuron_weights_match_the_loop_oracle(seed, m, n, count, birth_ratio, random_signs):
    rng = np.random.default_rng(seed)
    G = tied_array(rng, (m, n))
    signs = rng.choice([-1.0, 1.0], size=G.shape) if random_signs else np.ones(G.shape)
    w_in, w_out = neuron_weights(G, count, birth_ratio, signs)
    o_in, o_out = neuron_weights_oracle(G, count, birth_ratio, signs)
    assert w_in.shape == o_in.shape and w_out.shape == o_out.shape
    np.testing.assert_allclose(w_in, o_in, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(w_out, o_out, rtol=1e-12, atol=1e-15)
    if not random_signs:
        assert (w_in >= 0).all()


def test_a_one_pair_neuron_points_down_the_gradient():
    G = np.array([[0.0, -0.25], [0.04, 0.0]])
    w_in, w_out = neuron_weights(G, 2, 0.25, np.ones(G.shape))     # one pair per neuron
    assert pairs_per_neuron(0.25, G.size) == 1
    # neuron 0 bridges n=1 -> m=0 (|G| = 0.25), neuron 1 bridges n=0 -> m=1
    assert w_out[0, 0] * w_in[0, 1] == pytest.approx(-G[0, 1])
    assert w_out[1, 1] * w_in[1, 0] == pytest.approx(-G[1, 0])
    assert np.count_nonzero(w_in) == 2 and np.count_nonzero(w_out) == 2


@FAST
@given(st.integers(0, 10_000), st.floats(0.01, 3.0), st.floats(0.01, 3.0))
def test_match_layer_scale_gives_each_neuron_its_layers_mean_magnitude(seed, scale_in, scale_out):
    rng = np.random.default_rng(seed)
    w_in = tied_array(rng, (3, 7), zero_fraction=0.5)
    w_out = tied_array(rng, (5, 3), zero_fraction=0.5)
    w_in[:, 0], w_out[0, :] = 1.0, -2.0                        # every neuron has a nonzero
    a, b = match_layer_scale(w_in, w_out, scale_in, scale_out)
    for j in range(3):
        assert np.abs(a[j][a[j] != 0]).mean() == pytest.approx(scale_in)
        assert np.abs(b[:, j][b[:, j] != 0]).mean() == pytest.approx(scale_out)
    np.testing.assert_array_equal(np.sign(a), np.sign(w_in))
    np.testing.assert_array_equal(np.sign(b), np.sign(w_out))


def test_mean_active_magnitude_ignores_dormant_weights():
    weight = np.array([[1.0, -3.0], [100.0, 0.5]])
    mask = np.array([[1, 1], [0, 1]])
    assert mean_active_magnitude(weight, mask) == pytest.approx((1 + 3 + 0.5) / 3)


def test_strength_ladder_divides_from_the_top():
    assert strength_ladder(0.3, 0.003, 3) == (0.3, 0.3 / 3, 0.3 / 9, 0.3 / 27, 0.3 / 81)
    assert strength_ladder(1.0, 0.01, 10) == (1.0, 0.1, 0.01)   # the bottom is kept
    assert strength_ladder(0.5, 0.5, 2) == (0.5,)


@FAST
@given(st.integers(0, 10_000), st.floats(0.05, 1.0), st.floats(0.01, 2.0))
def test_random_sparse_kernels_have_the_layers_scale_and_an_active_entry(seed, density, scale):
    w = random_sparse_kernels((3, 5, 5), density, scale, np.random.default_rng(seed))
    again = random_sparse_kernels((3, 5, 5), density, scale, np.random.default_rng(seed))
    np.testing.assert_array_equal(w, again)
    assert np.count_nonzero(w) >= 1
    assert np.abs(w[w != 0]).mean() == pytest.approx(scale)


@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=8),
       st.floats(0, 10, allow_nan=False))
def test_choose_candidate_keeps_the_first_lowest_loss_only_if_it_helps(losses, loss_before):
    lowest = min(losses)
    expected = losses.index(lowest) if lowest < loss_before else None
    assert choose_candidate(losses, loss_before) == expected


# ================================================================ pruning
@FAST
@given(st.integers(0, 10_000), st.sampled_from([(6, 4), (2, 3, 3, 3)]), st.floats(0.0, 0.99),
       st.booleans())
def test_magnitude_prune_removes_the_smallest_active_weights(seed, shape, fraction, use_protect):
    rng = np.random.default_rng(seed)
    weight = tied_array(rng, shape, zero_fraction=0.0)
    mask = (rng.random(shape) < 0.7).astype(np.float32)
    weight *= mask
    protect = rng.random(shape) < 0.3 if use_protect else None
    before = mask.copy()
    mask_after, threshold = magnitude_prune(weight, mask, fraction, protect)
    n_active = int(np.count_nonzero(mask))
    ranked = sorted((abs(weight.flat[j]), j) for j in range(mask.size)
                    if mask.flat[j] != 0 and not (use_protect and protect.flat[j]))
    k = min(math.floor(Fraction(fraction) * n_active + Fraction(1, 10**9)), len(ranked))
    removed = sorted(j for _, j in ranked[:k])
    assert sorted(np.flatnonzero((mask != 0) & (mask_after == 0)).tolist()) == removed
    assert np.all(mask_after <= mask) and mask_after.dtype == mask.dtype
    assert threshold == (max(abs(weight.flat[j]) for j in removed) if removed else None)
    np.testing.assert_array_equal(mask, before)


def test_smallest_first_breaks_ties_by_index():
    scores = np.array([[2.0, 1.0, 1.0], [0.5, 1.0, 3.0]])
    candidates = np.array([[True, True, False], [True, True, True]])
    assert smallest_first(scores, candidates).tolist() == [3, 1, 4, 0, 5]


@FAST
@given(st.integers(0, 10_000))
def test_strongest_input_per_unit_is_each_units_largest_active_weight(seed):
    rng = np.random.default_rng(seed)
    weight = tied_array(rng, (5, 6), zero_fraction=0.0)
    mask = (rng.random((5, 6)) < 0.4).astype(np.float32)
    protect = strongest_input_per_unit(weight, mask)
    for o in range(5):
        active = [j for j in range(6) if mask[o, j] != 0]
        expected = [min(active, key=lambda j: (-abs(weight[o, j]), j))] if active else []
        assert np.flatnonzero(protect[o]).tolist() == expected


def naive_area_contributions(kernel, x, stride, padding):
    o_c, i_c, k, _ = kernel.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = (xp.shape[2] - k) // stride + 1, (xp.shape[3] - k) // stride + 1
    out = np.zeros((o_c, i_c, ho, wo))
    for b in range(len(x)):
        for o in range(o_c):
            for i in range(i_c):
                for r in range(ho):
                    for c in range(wo):
                        window = xp[b, i, r * stride:r * stride + k, c * stride:c * stride + k]
                        out[o, i, r, c] += abs((window * kernel[o, i]).sum()) / len(x)
    return out


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1)])
def test_area_contributions_match_a_loop_over_positions(stride, padding):
    rng = np.random.default_rng(stride)
    kernel = rng.standard_normal((3, 2, 3, 3)) * (rng.random((3, 2, 3, 3)) < 0.6)
    x = rng.random((5, 2, 7, 7))
    got = area_contributions(kernel, x, stride, padding, batch_size=2)
    expected = naive_area_contributions(kernel, x, stride, padding)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


@FAST
@given(st.integers(0, 10_000), st.floats(0.0, 0.99))
def test_area_prune_removes_the_smallest_kept_positions_of_live_kernels(seed, fraction):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=(2, 3, 4, 4)).astype(np.float64)
    area = (rng.random(scores.shape) < 0.8).astype(np.float32)
    mask = (rng.random((2, 3, 3, 3)) < 0.3).astype(np.float32)
    area_after, threshold = area_prune(scores, area, mask, fraction)
    live = mask.reshape(2, 3, -1).any(axis=2)
    candidates = [(scores.flat[j], j) for j in range(scores.size)
                  if area.flat[j] != 0 and live[np.unravel_index(j, scores.shape)[:2]]]
    k = math.floor(Fraction(fraction) * len(candidates) + Fraction(1, 10**9))
    removed = sorted(j for _, j in sorted(candidates)[:k])
    assert sorted(np.flatnonzero((area != 0) & (area_after == 0)).tolist()) == removed
    assert threshold == (max(scores.flat[j] for j in removed) if removed else None)


@FAST
@given(st.integers(0, 10_000), st.floats(0.0, 0.99))
def test_area_prune_by_flops_spends_the_fraction_of_flops_on_the_cheapest_contributions(
        seed, fraction):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=(2, 3, 4, 4)).astype(np.float64)
    area = (rng.random(scores.shape) < 0.8).astype(np.float32)
    mask = (rng.random((2, 3, 3, 3)) < 0.3).astype(np.float32)
    area_after, threshold = area_prune_by_flops(scores, area, mask, fraction)
    cost = mask.reshape(2, 3, -1).sum(axis=2)  # active weights: a kept position's MACs
    candidates = sorted(
        (Fraction(int(scores.flat[j])) / int(cost[idx[:2]]), j, int(cost[idx[:2]]))
        for j in range(scores.size)
        for idx in [np.unravel_index(j, scores.shape)]
        if area.flat[j] != 0 and cost[idx[:2]] > 0
    )
    allowed = math.floor(Fraction(fraction) * sum(c for _, _, c in candidates)
                         + Fraction(1, 10**9))
    removed, spent = [], 0
    for ratio, j, c in candidates:  # the longest prefix within the allowance
        if spent + c > allowed:
            break
        removed.append((ratio, j))
        spent += c
    assert sorted(np.flatnonzero((area != 0) & (area_after == 0)).tolist()) == sorted(
        j for _, j in removed)
    assert threshold == (pytest.approx(float(max(r for r, _ in removed))) if removed else None)


def test_area_prune_by_flops_takes_a_costly_position_before_a_cheap_one_of_equal_contribution():
    scores = np.ones((1, 2, 1, 2))          # two kernels, two positions each, S = 1 everywhere
    scores[0, 1, 0, 1] = 1.5                # ... except one position of the costly kernel
    area = np.ones_like(scores)
    mask = np.zeros((1, 2, 3, 3))
    mask[0, 0, 0, 0] = 1                    # kernel 0: one weight, a position costs 1
    mask[0, 1] = 1                          # kernel 1: nine weights, a position costs 9
    # 20 FLOPs on the area; 45% of them is 9: one position of the costly kernel, whose
    # contribution per FLOP (1/9) is the smallest; by contribution, a cheap one would go first
    area_after, threshold = area_prune_by_flops(scores, area, mask, 0.45)
    assert area_after[0, 1, 0, 0] == 0 and area_after.sum() == 3 and threshold == 1 / 9
    by_contribution, _ = area_prune(scores, area, mask, 0.25)
    assert by_contribution[0, 0, 0, 0] == 0 and by_contribution.sum() == 3


# ============================================================ forward_until
def test_forward_until_is_the_input_of_each_layer():
    rng = np.random.default_rng(0)
    net = Network([Conv2d(1, 2, 3, rng=rng, dtype=np.float64), MaxPool2d(2), Flatten(),
                   Dense(2 * 3 * 3, 4, rng=rng, dtype=np.float64), ReLU(),
                   Dense(4, 3, rng=rng, dtype=np.float64)],
                  (1, 8, 8))
    x = rng.random((7, 1, 8, 8))
    assert net.forward_until(0, x) is x
    h = x
    for position, layer in enumerate(net.layers):
        np.testing.assert_array_equal(net.forward_until(position, x), h)
        batched = net.forward_until(position, x, batch_size=3)
        np.testing.assert_allclose(batched, h, rtol=1e-12, atol=1e-15)
        h = layer.forward(h)
    np.testing.assert_array_equal(net.forward_until(len(net.layers), x), net.forward(x))
