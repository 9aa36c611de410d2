"""Every wrong reading of conformance/README.md fails at least one case: the proof that the cases
can fail, and which case decides which reading.

Each mutant is the PyTorch port (ports/torch/) with one rule read the other way: a few lines of
its source replaced. The port with the change is copied to a temporary folder, loaded as an
adapter, and checked against the committed cases of that op; the named case must fail. The
readings marked "issue 24" are those a clean-room port could get wrong and still pass before
the cases that decide them were added.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nestref.tools import conformance

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
PORT = ROOT / "ports" / "torch"
CASES = ROOT / "conformance"


@dataclass
class Mutant:
    """A wrong reading of one op's rule: ``edits`` [(file of the port, text, replacement)] and
    the cases that must fail because of it."""
    op: str
    reading: str
    edits: list
    caught_by: set


OPS_FILE, PORT_FILE = "adapter.py", "nestref_torch.py"
NEW_FEATURE_MAP_CASES = {"growth_feature_map_zero_weights_area_f64",
                         "growth_feature_map_zero_weights_area_f32"}

MUTANTS = [
    Mutant("dense.forward", "the raw weight W, not W*M",
           [(OPS_FILE, '_t(inputs["weight"]) * _t(inputs["mask"]), _t(inputs["bias"])',
             '_t(inputs["weight"]), _t(inputs["bias"])')],
           {"dense_forward_stale_dormant_weights_f64"}),
    Mutant("dense.backward", "grad_bias as the batch mean of grad_y, not its sum",
           [(OPS_FILE, '"grad_bias": _np(bias.grad)', '"grad_bias": _np(bias.grad / len(x))')],
           {"dense_backward_basic_f32", "dense_backward_basic_f64"}),
    Mutant("dense.backward", "grad_weight only at active positions",
           [(OPS_FILE, '"grad_weight": _np(w_eff.grad)',
             '"grad_weight": _np(w_eff.grad * _t(inputs["mask"]))')],
           {"dense_backward_basic_f32"}),
    Mutant("conv2d.forward", "with an area mask, the bias only where some input map is kept "
                             "(issue 24)",
           [(PORT_FILE, "return y + bias.view(1, -1, 1, 1)",
             "return y + bias.view(1, -1, 1, 1) * (area_mask.sum(dim=1) > 0)")],
           {"conv2d_forward_area_mask_f32", "conv2d_forward_area_mask_f64"}),
    Mutant("conv2d.backward", "with an area mask, grad_bias only where some input map is kept",
           [(PORT_FILE, "return y + bias.view(1, -1, 1, 1)",
             "return y + bias.view(1, -1, 1, 1) * (area_mask.sum(dim=1) > 0)")],
           {"conv2d_backward_area_mask_f32", "conv2d_backward_area_mask_f64"}),
    Mutant("maxpool2d", "output size rounded up (a partial window at the edge) (issue 24)",
           [(OPS_FILE, 'params["stride"], return_indices=True',
             'params["stride"], return_indices=True, ceil_mode=True')],
           {"maxpool2d_odd_f64"}),
    Mutant("softmax_cross_entropy", "the summed loss, not the mean",
           [(PORT_FILE, "return F.cross_entropy(logits, labels)",
             'return F.cross_entropy(logits, labels, reduction="sum")')],
           {"softmax_cross_entropy_basic_f32", "softmax_cross_entropy_basic_f64"}),
    Mutant("sgd.step", "the velocity left unmasked",
           [(OPS_FILE, '+ params["weight_decay"] * w) * m', '+ params["weight_decay"] * w)')],
           {"sgd_step_stale_velocity_f64"}),
    Mutant("growth.gradient", "the mean of the batch means, not weighted by batch size "
                              "(issue 24)",
           [(PORT_FILE, "sums[i] += len(xb) * g.double()", "sums[i] += g.double()"),
            (PORT_FILE, "seen += len(xb)", "seen += 1")],
           {"growth_gradient_mlp_uneven_batches_f64", "growth_gradient_mlp_uneven_batches_f32"}),
    Mutant("growth.connections", "dormant connections with G = 0 are candidates too",
           [(PORT_FILE, "int((g_abs > 0).sum())", "len(dormant)")],
           {"growth_connections_zero_gradient_f32"}),
    Mutant("growth.bridging_gradient", "delta_next taken as a per-example delta: divided by N",
           [(PORT_FILE, "return delta_next.T @ x_prev",
             "return delta_next.T @ x_prev / len(x_prev)")],
           {"growth_bridging_gradient_basic_f32", "growth_bridging_gradient_basic_f64"}),
    Mutant("growth.neuron_weights", "a dropped neuron's place taken by the next chunk "
                                    "(issue 24)",
           [(PORT_FILE, "    for j in range(count):\n        idx = order[j * chunk:",
             "    for j in range(g.numel()):\n        if len(rows) == count:\n            break\n"
             "        idx = order[j * chunk:")],
           {"growth_neuron_weights_dropped_counts_f64",
            "growth_neuron_weights_dropped_counts_f32"}),
    Mutant("growth.neuron_weights", "chunk = ceil(beta * the nonzero pairs), not of all M*I "
                                    "(issue 24, docs/nest.md)",
           [(PORT_FILE, "math.ceil(birth_ratio * g.numel() - 1e-9)",
             "math.ceil(birth_ratio * int((g != 0).sum()) - 1e-9)")],
           {"growth_neuron_weights_few_pairs_f32"}),
    Mutant("growth.feature_map", "mean |active weight| over weight != 0, not mask == 1 "
                                 "(issue 24)",
           [(PORT_FILE, 'p["weight"][p["mask"] != 0]', 'p["weight"][p["weight"] != 0]')],
           NEW_FEATURE_MAP_CASES),
    Mutant("growth.feature_map", "the new input channel's area in the next conv starts pruned "
                                 "(issue 24)",
           [(PORT_FILE, 'torch.ones_like(q["area_mask"][:, :1])',
             'torch.zeros_like(q["area_mask"][:, :1])')],
           NEW_FEATURE_MAP_CASES),
    Mutant("growth.feature_map", "the new map's own area starts pruned",
           [(PORT_FILE, 'torch.ones_like(p["area_mask"][:1])',
             'torch.zeros_like(p["area_mask"][:1])')],
           NEW_FEATURE_MAP_CASES),
    Mutant("prune.magnitude", "the n smallest of all active, then the protected spared "
                              "(issue 24)",
           [(PORT_FILE, "order = smallest_first(weight.abs(), active & ~protect)\n"
                        "    removed = order[:min(floor_count(fraction, int(active.sum())), "
                        "len(order))]",
             "order = smallest_first(weight.abs(), active)\n"
             "    removed = order[:floor_count(fraction, int(active.sum()))]\n"
             "    removed = removed[~protect.reshape(-1)[removed]]")],
           {"prune_magnitude_guard_ties_f64", "prune_magnitude_guard_skips_f32",
            "prune_magnitude_guard_skips_f64"}),
    Mutant("prune.dead_units", "the raw bias folded, not relu(bias), before a ReLU (issue 24)",
           [(PORT_FILE, "constants = torch.relu(constants)", "constants = constants")],
           {"prune_dead_units_negative_bias_f64", "prune_dead_units_negative_bias_f32"}),
    Mutant("prune.dead_units", "inputs and outputs read from the weight mask alone, the area "
                               "mask ignored (issue 24)",
           [(PORT_FILE, 'pair = pair & (p["area_mask"] != 0).any(dim=3).any(dim=2)',
             "pair = pair")],
           {"prune_dead_units_area_mask_f64"}),
    Mutant("prune.dead_units", "a partly kept area of the next conv folded anyway (issue 24)",
           [(PORT_FILE, "uniform = (area.all(dim=2) | ~area.any(dim=2)) | (kernel_sums == 0)",
             "uniform = torch.ones(kernel_sums.shape, dtype=torch.bool)")],
           {"prune_dead_units_area_mask_f64"}),
    Mutant("prune.dead_units", "a next kernel kept nowhere still takes its share of the fold "
                               "(issue 24)",
           [(PORT_FILE, "kept = area[:, :, 0].double()", "kept = torch.ones_like(kernel_sums)")],
           {"prune_dead_units_area_mask_f64"}),
    Mutant("prune.dead_units", "the kept lowest-index unit's constant folded too (issue 24)",
           [(PORT_FILE, "folded = remove[units]",
             "folded = torch.ones(len(units), dtype=torch.bool)")],
           {"prune_dead_units_kept_unit_f64"}),
    Mutant("prune.dead_units", "no folding: no-input units simply removed",
           [(PORT_FILE, "params[nxt][\"bias\"] = params[nxt][\"bias\"] + shift",
             "params[nxt][\"bias\"] = params[nxt][\"bias\"] + 0 * shift")],
           {"prune_dead_units_mlp_f64", "prune_dead_units_convconv_f64"}),
    Mutant("prune.partial_area", "no reachability guard",
           [(PORT_FILE, "return not bool((before & ~reachable_outputs(spec, params, "
                        "(position, trial))).any())", "return True")],
           {"prune_partial_area_guard_f64", "prune_partial_area_guard_f32"}),
    Mutant("prune.partial_area", "every position of the pruned layer must stay reachable, not "
                                 "only the last layer's units (issue 24)",
           [(PORT_FILE, "    before = reachable_outputs(spec, params)\n",
             '    spec = {**spec, "layers": spec["layers"][:position + 1]}\n'
             "    before = reachable_outputs(spec, params)\n")],
           {"prune_partial_area_guard_deep_f64"}),
    Mutant("prune.partial_area", "an unsafe removal skipped and the later ones taken, not the "
                                 "longest safe prefix (issue 24)",
           [(PORT_FILE, "    k = requested\n    if not safe(requested):\n"
                        "        lo, hi = 0, requested\n        while hi - lo > 1:\n"
                        "            mid = (lo + hi) // 2\n"
                        "            lo, hi = (mid, hi) if safe(mid) else (lo, mid)\n"
                        "        k = lo\n    area.view(-1)[order[:k]] = 0\n",
             "    for j in order[:requested].tolist():\n"
             "        trial = area.clone()\n        trial.view(-1)[j] = 0\n"
             "        if not bool((before & ~reachable_outputs(spec, params, "
             "(position, trial))).any()):\n"
             "            area = trial\n")],
           {"prune_partial_area_guard_f32"}),
    Mutant("prune.partial_area", "'flops': a position that does not fit skipped and cheaper "
                                 "later ones taken, not the longest prefix (issue 24)",
           [(PORT_FILE, "        requested = int((spent <= goal).sum())\n",
             "        taken, total = [], 0\n"
             "        for j, c in enumerate(cost.reshape(-1)[order].tolist()):\n"
             "            if total + c <= goal:\n"
             "                taken.append(j)\n"
             "                total += c\n"
             "        order, requested = order[taken], len(taken)\n")],
           {"prune_partial_area_by_flops_prefix_f32", "prune_partial_area_by_flops_prefix_f64"}),
    Mutant("prune.partial_area", "'flops': floor(fraction * candidates) positions in the "
                                 "per-FLOP order, not a FLOP budget",
           [(PORT_FILE, "        requested = int((spent <= goal).sum())\n",
             "        requested = floor_count(fraction, len(order))\n")],
           {"prune_partial_area_by_flops_f32", "prune_partial_area_by_flops_f64"}),
    Mutant("prune.partial_area", "contributions with the area mask applied",
           [(PORT_FILE, 'scores = area_contributions(p["weight"], p["mask"], x, cfg["stride"], '
                        'cfg["padding"])',
             'scores = area_contributions(p["weight"], p["mask"], x, cfg["stride"], '
             'cfg["padding"]) * p.get("area_mask", 1)')],
           {"prune_partial_area_existing_mask_f64"}),
    Mutant("accounting.count", "a kernel kept nowhere still counts its params (issue 24)",
           [(PORT_FILE, "int(per_kernel[positions > 0].sum())", "int(per_kernel.sum())")],
           {"accounting_count_sparse_convconv_area"}),
]


def _mutated_port(mutant, folder):
    """The port with ``mutant``'s edits, written to ``folder``; each edited text must occur once
    (so that a change of the port cannot silently turn a mutant into the right reading)."""
    sources = {name: (PORT / name).read_text() for name in (OPS_FILE, PORT_FILE)}
    for name, text, replacement in mutant.edits:
        assert sources[name].count(text) == 1, f"{mutant.reading}: {text!r} not once in {name}"
        sources[name] = sources[name].replace(text, replacement)
    for name, source in sources.items():
        (folder / name).write_text(source)
    return folder / OPS_FILE


@pytest.mark.parametrize("mutant", MUTANTS, ids=[f"{m.op}: {m.reading}" for m in MUTANTS])
def test_each_wrong_reading_fails_the_cases_that_decide_it(mutant, tmp_path, monkeypatch):
    adapter_file = _mutated_port(mutant, tmp_path)
    # adapter.py uses the nestref_torch it finds loaded: the mutated one, until the test ends
    monkeypatch.setitem(sys.modules, "nestref_torch",
                        conformance.load_adapter(str(tmp_path / PORT_FILE)))
    adapter = conformance.load_adapter(str(adapter_file))
    assert adapter.nt is sys.modules["nestref_torch"]
    results = conformance.check(adapter, CASES, {mutant.op})
    failed = {r.name for r in results if not r.passed}
    assert mutant.caught_by <= failed, (
        f"{mutant.reading}: {sorted(mutant.caught_by - failed)} passed")
    assert {r.name for r in results} >= mutant.caught_by


def test_every_op_has_a_wrong_reading_that_fails():
    ops = {entry.op for entry in conformance.all_cases()}
    assert ops == {m.op for m in MUTANTS}
