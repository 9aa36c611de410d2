"""The PyTorch port (ports/torch/) passes every conformance case. Skips without torch."""
import ast
import math
from pathlib import Path

import pytest

from nestref.tools import conformance

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
PORT = ROOT / "ports" / "torch"


def test_the_port_does_not_use_nestref():
    for path in PORT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "nestref" for n in names), (
                f"{path.name} imports nestref"
            )


def test_the_torch_port_passes_every_case():
    results = conformance.check(
        conformance.load_adapter(str(PORT / "adapter.py")), ROOT / "conformance"
    )
    failed = [f"{r.name}: {r.worst}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert len(results) == len(conformance.all_cases())


@pytest.fixture
def port():
    return conformance.load_adapter(str(PORT / "adapter.py"))


def _failed(port, ops):
    return {r.name for r in conformance.check(port, ROOT / "conformance", ops) if not r.passed}


def test_the_cases_catch_a_port_that_drops_the_rounding_slack(port, monkeypatch):
    monkeypatch.setattr(port.nt, "floor_count", lambda fraction, n: math.floor(fraction * n))
    assert _failed(port, {"growth.connections", "prune.magnitude"}) == {
        "growth_connections_floor_f32",
        "prune_magnitude_floor_f64",
    }


def test_the_cases_catch_a_port_that_does_not_fold_biases(port, monkeypatch):
    shift = port.nt._bias_shift
    monkeypatch.setattr(
        port.nt, "_bias_shift", lambda *args: (0 * shift(*args)[0], shift(*args)[1])
    )
    assert "prune_dead_units_convconv_f64" in _failed(port, {"prune.dead_units"})


def test_the_cases_catch_a_port_without_the_reachability_guard(port, monkeypatch):
    import torch
    monkeypatch.setattr(port.nt, "reachable_outputs", lambda *args: torch.ones(1, dtype=torch.bool))
    assert _failed(port, {"prune.partial_area"}) == {
        "prune_partial_area_guard_f64",
        "prune_partial_area_guard_f32",
    }
