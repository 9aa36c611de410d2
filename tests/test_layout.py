"""The package's layout, as the README states it: imports point one way (floors of a house),
and only the command modules print."""
import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nestref"

# the ground floor: anyone may import these, and they import only each other
GROUND = {"data", "losses", "plots", "storage", "errors", "checks", "rounding", "run_files",
          "reproducible"}
# every other module's floor; a module imports only the ground and lower floors
FLOORS = {
    "kernels": 1, "conformance_cases": 1,
    "layers": 2, "augment": 2,
    "architectures": 3,
    "models": 4, "config": 4,
    "optim": 5, "grow": 5, "connectivity": 5, "accounting": 5,
    "prune": 6,
    "train": 7, "compact": 7,
    "synthesize": 8, "conformance_adapter": 8,
    "cluster": 8,
    "study": 9, "conformance": 9, "export": 9, "paper": 9,
    "walkthrough": 10,
    "cli_study": 10, "cli_conformance": 10,
    "cli": 11,
    "__main__": 12, "__init__": 12,
}
COMMANDS = {"cli", "cli_study", "cli_conformance"}


def modules():
    return sorted(p.stem for p in PACKAGE.glob("*.py"))


def nestref_imports(name):
    """The package's modules that module ``name`` imports, at the top or inside a function."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module.split(".")[0]] if node.module else
                         [alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nestref."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("nestref."))
    return found


def test_every_module_has_a_floor():
    placed = GROUND | set(FLOORS)
    assert [m for m in modules() if m not in placed] == [], "give the new module a floor here"
    assert sorted(placed - set(modules())) == []


@pytest.mark.parametrize("name", modules())
def test_imports_point_down(name):
    upward = sorted(
        target for target in nestref_imports(name)
        if target not in GROUND and (name in GROUND or FLOORS[target] >= FLOORS[name])
    )
    assert upward == [], f"nestref.{name} imports from its own floor or above: {upward}"


def test_the_floor_check_sees_an_upward_import_inside_a_function(tmp_path, monkeypatch):
    (tmp_path / "layers.py").write_text("def f():\n    from .train import fit\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert nestref_imports("layers") == {"train"}


@pytest.mark.parametrize("name", [m for m in modules() if m not in COMMANDS])
def test_only_the_command_modules_print(name):
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    prints = [node.lineno for node in ast.walk(tree)
              if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert prints == [], f"nestref/{name}.py prints at lines {prints}: report through a return " \
                         f"value or a callback, and let a command module print"
