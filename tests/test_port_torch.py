"""The PyTorch port (ports/torch/) passes every conformance case. Skips without torch."""
import ast
from pathlib import Path

import pytest

from nestref import conformance

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
            assert not any(n.split(".")[0] == "nestref" for n in names), f"{path.name} imports nestref"


def test_the_torch_port_passes_every_case():
    results = conformance.check(conformance.load_adapter(str(PORT / "adapter.py")), ROOT / "conformance")
    failed = [f"{r.name}: {r.worst}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert len(results) == len(conformance.all_cases())
