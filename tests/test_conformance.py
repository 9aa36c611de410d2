"""The committed conformance cases match nestref's operators, and the checker catches wrong
ports."""
import json
import shutil
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from nestref.cli.main import main as cli_main
from nestref.tools import conformance, conformance_adapter

CASES = Path(__file__).resolve().parents[1] / "conformance"
REQUIRED_OPS = {
    "dense.forward",
    "dense.backward",
    "conv2d.forward",
    "conv2d.backward",
    "maxpool2d",
    "softmax_cross_entropy",
    "sgd.step",
    "growth.gradient",
    "growth.connections",
    "growth.bridging_gradient",
    "growth.neuron_weights",
    "growth.feature_map",
    "prune.magnitude",
    "prune.dead_units",
    "prune.partial_area",
    "accounting.count",
}

ADAPTER = "nestref.tools.conformance_adapter"  # nestref's own adapter, by module name


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("conformance")
    conformance.generate(out)
    return out


def _manifest(root):
    return json.loads((root / "manifest.json").read_text())


def test_committed_cases_are_what_the_code_generates(regenerated):
    assert _manifest(regenerated) == _manifest(CASES), (
        "run `nestref conformance generate` and commit conformance/"
    )
    for entry in _manifest(CASES)["cases"]:
        fresh, committed = regenerated / entry["dir"], CASES / entry["dir"]
        record = json.loads((committed / "case.json").read_text())
        assert json.loads((fresh / "case.json").read_text()) == record, entry["name"]
        for name, item in record["inputs"].items():
            assert np.array_equal(
                np.load(fresh / item["file"]), np.load(committed / item["file"])
            ), (entry["name"], name)
        for name, item in record["expected"].items():
            ok, _, message = conformance.compare(
                name,
                np.load(fresh / item["file"]),
                np.load(committed / item["file"]),
                item["compare"],
            )
            assert ok, f"{entry['name']}: {message}"


def test_the_cases_cover_every_operator_in_both_precisions():
    cases = _manifest(CASES)["cases"]
    assert len(cases) >= 60
    per_op = Counter(c["op"] for c in cases)
    assert set(per_op) == REQUIRED_OPS
    assert min(per_op.values()) >= 3
    float_ops = REQUIRED_OPS - {"accounting.count"}
    assert float_ops <= {c["op"] for c in cases if c["dtype"] == "float32"}
    assert float_ops <= {c["op"] for c in cases if c["dtype"] == "float64"}


def test_the_files_are_plain_npy_and_small():
    total = 0
    for path in CASES.rglob("*.npy"):
        array = np.load(path, allow_pickle=False)        # no object arrays: loads without pickle
        assert array.dtype.byteorder in ("<", "=", "|") and array.dtype.kind in "biuf"
        assert array.flags.c_contiguous
        total += path.stat().st_size
    assert total < 2_000_000


def test_fixed_array_names():
    """Five ops whose names an outside checker may rely on without reading nestref."""
    names = {
        "dense.forward": ({"x", "weight", "mask", "bias"}, {"y"}),
        "dense.backward": (
            {"x", "weight", "mask", "bias", "grad_y"},
            {"grad_x", "grad_weight", "grad_bias"},
        ),
        "conv2d.forward": ({"x", "weight", "mask", "bias"}, {"y"}),
        "conv2d.backward": (
            {"x", "weight", "mask", "bias", "grad_y"},
            {"grad_x", "grad_weight", "grad_bias"},
        ),
        "growth.bridging_gradient": ({"x_prev", "delta_next"}, {"G"}),
        "prune.magnitude": ({"weight", "mask"}, {"mask_after", "threshold"}),
    }
    for entry in _manifest(CASES)["cases"]:
        if entry["op"] in names:
            record = json.loads((CASES / entry["dir"] / "case.json").read_text())
            want_in, want_out = names[entry["op"]]
            assert want_in <= set(record["inputs"]) <= want_in | {"area_mask"}, entry["name"]
            assert want_out <= set(record["expected"]), entry["name"]


def test_dense_baselines_are_in_the_cases():
    got = {}
    for name in ("accounting_count_lenet300_dense", "accounting_count_lenet5_dense"):
        got[name] = tuple(
            int(np.load(CASES / name / "expected" / f"{k}.npy")) for k in ("params", "flops")
        )
    assert got == {"accounting_count_lenet300_dense": (266610, 532400),
                   "accounting_count_lenet5_dense": (431080, 4586000)}


def test_dead_unit_removal_keeps_the_outputs():
    """prune.dead_units' expected logits equal the network's logits before removal."""
    for entry in _manifest(CASES)["cases"]:
        if entry["op"] == "prune.dead_units":
            record, inputs = conformance.load_case(CASES / entry["dir"])
            net = conformance_adapter._network(inputs, record["params"])
            after = np.load(CASES / entry["dir"] / "expected" / "logits.npy")
            tol = conformance.TOLERANCES[record["dtype"]]
            np.testing.assert_allclose(after, net.forward(inputs["x"]), **tol)


def test_nestref_passes_its_own_cases(capsys):
    assert (
        cli_main(["conformance", "check", ADAPTER, "--cases", str(CASES)])
        == 0
    )
    out = capsys.readouterr().out
    assert f"{len(_manifest(CASES)['cases'])}/{len(_manifest(CASES)['cases'])} cases passed" in out
    assert "PASS  dense_forward_basic_f32" in out


def _broken(op, change):
    ops = dict(conformance_adapter.OPS)
    right = ops[op]
    ops[op] = lambda inputs, params: change(right(inputs, params))
    return types.SimpleNamespace(OPS=ops)


def test_a_wrong_sign_fails_exactly_the_cases_of_that_op():
    adapter = _broken("growth.bridging_gradient", lambda out: {"G": -out["G"]})
    results = conformance.check(adapter, CASES)
    failed = {r.name for r in results if not r.passed}
    assert failed == {
        e["name"] for e in _manifest(CASES)["cases"] if e["op"] == "growth.bridging_gradient"
    }
    assert all("G: max |a-e|" in r.worst for r in results if not r.passed)


def test_a_float32_rounding_passes_where_a_real_error_fails():
    nudged = _broken("dense.forward", lambda out: {"y": out["y"] * (1 + 1e-6)})
    results = [r for r in conformance.check(nudged, CASES) if r.op == "dense.forward"]
    assert all(r.passed == r.name.endswith("_f32") for r in results)  # float64 holds a port to 1e-9
    wrong = _broken("dense.forward", lambda out: {"y": out["y"] * (1 + 1e-2)})
    assert not any(r.passed for r in conformance.check(wrong, CASES) if r.op == "dense.forward")


def test_bad_input_is_a_named_failure_not_a_crash(tmp_path, capsys):
    root = tmp_path / "cases"
    shutil.copytree(CASES, root)
    (root / "dense_forward_basic_f32" / "inputs" / "x.npy").unlink()
    np.save(root / "dense_backward_basic_f32" / "inputs" / "x.npy", np.zeros((2, 2), np.float32))
    ops = dict(conformance_adapter.OPS)
    del ops["maxpool2d"]

    def raises(inputs, params):
        raise RuntimeError("not implemented yet")

    ops["softmax_cross_entropy"] = raises
    ops["sgd.step"] = lambda inputs, params: {"weight": np.zeros(3)}
    ops["accounting.count"] = lambda inputs, params: None
    ops["growth.bridging_gradient"] = lambda inputs, params: sys.exit(3)
    by_name = {r.name: r for r in conformance.check(types.SimpleNamespace(OPS=ops), root)}
    assert "missing file inputs/x.npy" in by_name["dense_forward_basic_f32"].worst
    assert "holds float32 [2, 2]" in by_name["dense_backward_basic_f32"].worst
    assert "has no op 'maxpool2d'" in by_name["maxpool2d_2x2_f32"].worst
    assert (
        "raised RuntimeError: not implemented yet"
        in by_name["softmax_cross_entropy_basic_f32"].worst
    )
    assert "weight: shape [3], expected [4, 5]" in by_name["sgd_step_momentum_decay_f32"].worst
    assert "bias: missing" in by_name["sgd_step_momentum_decay_f32"].worst
    assert "returned NoneType" in by_name["accounting_count_lenet5_dense"].worst
    assert by_name["dense_forward_basic_f64"].passed
    bridging = [r for r in by_name.values() if r.op == "growth.bridging_gradient"]
    assert bridging and all("raised SystemExit: 3" in r.worst for r in bridging)

    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit(3)\n")
    assert cli_main(["conformance", "check", str(exits), "--cases", str(root)]) == 2
    assert "SystemExit: 3" in capsys.readouterr().err
    module = tmp_path / "no_ops.py"
    module.write_text("x = 1\n")
    assert cli_main(["conformance", "check", str(module), "--cases", str(root)]) == 2
    assert "has no OPS dict" in capsys.readouterr().err
    assert (
        cli_main(["conformance", "check", ADAPTER, "--cases", str(tmp_path)])
        == 2
    )
    assert "cannot read" in capsys.readouterr().err
    assert cli_main(["conformance", "check", "no_such_port_module", "--cases", str(root)]) == 2
    assert "No module named 'no_such_port_module'" in capsys.readouterr().err
    assert (
        cli_main(["conformance", "check", ADAPTER, "--op", "dense.fwd"]) == 2
    )
    assert "no cases of op(s) ['dense.fwd']" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert cli_main(["conformance", "generate", "--out", str(tmp_path / "a_file")]) == 2
    assert "cannot write the cases" in capsys.readouterr().err


def test_generate_leaves_a_directory_of_the_users_alone_and_replaces_only_its_own_cases(
        tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "my_experiment").mkdir(parents=True)
    (mine / "my_experiment" / "case.json").write_text("{}")
    (mine / "manifest.json").write_text('{"cases": []}')
    assert cli_main(["conformance", "generate", "--out", str(mine)]) == 2
    assert "holds no conformance cases of nestref's" in capsys.readouterr().err
    assert sorted(p.name for p in mine.rglob("*")) == ["case.json", "manifest.json",
                                                       "my_experiment"]
    # a directory generate wrote: a case that is gone is removed, a folder of the user's stays
    out = tmp_path / "cases"
    (out / "gone_case").mkdir(parents=True)
    (out / "gone_case" / "case.json").write_text("{}")
    (out / "my_notes").mkdir()
    (out / "my_notes" / "case.json").write_text("{}")
    (out / "manifest.json").write_text(json.dumps({
        "format": 1, "description": "nestref conformance cases; see README.md",
        "cases": [{"name": "gone_case", "op": "x", "dtype": "float32", "dir": "gone_case"}]}))
    manifest = conformance.generate(out)
    assert not (out / "gone_case").exists() and (out / "my_notes" / "case.json").is_file()
    assert all((out / e["dir"] / "case.json").is_file() for e in manifest["cases"])


def test_every_case_says_which_rule_it_tests():
    for entry in _manifest(CASES)["cases"]:
        record = json.loads((CASES / entry["dir"] / "case.json").read_text())
        assert record["note"].strip(), entry["name"]


def test_a_failure_names_the_worst_entry_both_values_and_the_rule(capsys, monkeypatch):
    case = "dense_forward_basic_f64"
    expected = np.load(CASES / case / "expected" / "y.npy")

    def off_at_one_entry(out):
        y = np.array(out["y"])
        y[1, 2] += 0.5
        return {"y": y}

    result = {r.name: r for r in conformance.check(_broken("dense.forward", off_at_one_entry),
                                                   CASES, {"dense.forward"})}[case]
    assert not result.passed
    assert (f"y: max |a-e| 0.5 at [1, 2]: expected {expected[1, 2]:.9g}, "
            f"got {expected[1, 2] + 0.5:.9g}") in result.worst
    assert "1 of 20 entries outside it" in result.worst
    assert result.note == json.loads((CASES / case / "case.json").read_text())["note"]

    module = types.ModuleType("off_by_half_adapter")   # the CLI imports an adapter by name
    module.OPS = _broken("dense.forward", off_at_one_entry).OPS
    monkeypatch.setitem(sys.modules, "off_by_half_adapter", module)
    assert cli_main(["conformance", "check", "off_by_half_adapter", "--op", "dense.forward",
                     "--cases", str(CASES)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {case}" in out and "1 of 1 outputs wrong" in out
    assert "      y: max |a-e| 0.5 at [1, 2]" in out
    assert f"      rule: {result.note}" in out
    assert f"--show {case}" in out


def test_an_exact_compare_lists_the_first_differing_entries():
    def flipped(out):
        mask = np.array(out["mask_after"])
        mask.flat[:7] = 1 - mask.flat[:7]
        return {**out, "mask_after": mask}

    case = "prune_magnitude_floor_f64"
    result = {r.name: r for r in conformance.check(_broken("prune.magnitude", flipped), CASES,
                                                   {"prune.magnitude"})}[case]
    expected = np.load(CASES / case / "expected" / "mask_after.npy")
    message = next(o.message for o in result.outputs if o.name == "mask_after")
    assert message.startswith("mask_after: 7 of 200 entries differ (exact compare); first ")
    listed = [f"[0, {j}] expected {expected[0, j]:.9g} got {1 - expected[0, j]:.9g}"
              for j in range(conformance.SHOWN_DIFFERENCES)]
    assert ", ".join(listed) in message and "[0, 5]" not in message


def test_a_pass_line_gives_each_outputs_margin(capsys):
    assert cli_main(["conformance", "check", ADAPTER, "--op",
                     "prune.magnitude", "--cases", str(CASES)]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines()
                if row.startswith("PASS  prune_magnitude_basic_f32"))
    assert "tolerance used: threshold 0%, weight_after 0%; exact: mask_after" in line
    result = conformance.check(conformance_adapter, CASES, {"dense.backward"})[0]
    assert [o.name for o in result.outputs] == ["grad_bias", "grad_weight", "grad_x"]
    assert result.ratio == max(o.ratio for o in result.outputs)


def test_show_prints_a_case_and_an_adapters_outputs_beside_it(capsys):
    case = "prune_dead_units_kept_unit_f64"
    assert cli_main(["conformance", "check", "--show", case, "--cases", str(CASES)]) == 0
    out = capsys.readouterr().out
    record = json.loads((CASES / case / "case.json").read_text())
    assert f"case {case}: op prune.dead_units, float64" in out
    assert f"rule: {record['note']}" in out
    assert '"input_shape": [3]' in out
    assert "  layer0.bias: float64 [3]\n    [0.5 , 0.25, 0.75]" in out
    assert "expected outputs:\n  layer0.bias: float64 [1], compare rtol 1e-09, atol 1e-12" in out
    assert "the adapter's" not in out

    assert cli_main(["conformance", "check", ADAPTER, "--show", case,
                     "--cases", str(CASES)]) == 0
    out = capsys.readouterr().out
    assert out.count("the adapter's:") == len(record["expected"])
    assert "-> PASS: logits" in out

    assert cli_main(["conformance", "check", "--show", "prune_dead_units_kept_unit",
                     "--cases", str(CASES)]) == 2
    assert f"did you mean {case}" in capsys.readouterr().err
    assert cli_main(["conformance", "check", "--cases", str(CASES)]) == 2
    assert "give the adapter MODULE" in capsys.readouterr().err
