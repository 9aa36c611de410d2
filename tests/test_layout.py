"""The package's layout, as nestref/__init__.py states it: wings whose imports point one way,
and only the command modules print."""
import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nestref"

# the wings, lowest first: a module imports from its own wing, a lower one, or the ground
WINGS = ["data", "core", "nest", "run", "tools", "cli"]
# beneath every wing: anyone may import these, and they import only each other
GROUND = {"errors", "checks", "__init__"}
TOP = {"__main__"}  # `python -m nestref`: above everything
COMMANDS = "cli"


def modules():
    """Every module of the package as a dotted name below nestref ("core.layers", "errors")."""
    return sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts)
                  for p in PACKAGE.rglob("*.py"))


def place(module):
    """The wing (or "ground", "top") a dotted module name belongs to."""
    head = module.split(".")[0]
    if head in WINGS:
        return head
    return "top" if head in TOP else "ground"


def rank(where):
    return {"ground": -1, "top": len(WINGS)}.get(where, WINGS.index(where) if where in WINGS
                                                 else None)


def nestref_imports(module):
    """The package's modules (dotted, below nestref) that ``module`` imports, at the top or
    inside a function; a name imported from a package (``from ..core import layers``) counts
    as the module it names, and a name of nestref/__init__.py as "__init__"."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    package = module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[:len(package) - (node.level - 1)]
            parts = base + (node.module.split(".") if node.module else [])
            if node.module:
                found.add(".".join(parts))
            else:
                found.update(".".join(parts + [a.name]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nestref"):
            parts = node.module.split(".")[1:]
            found.update([".".join(parts)] if parts else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names
                         if a.name.startswith("nestref."))
    return {m if m.split(".")[0] in WINGS or m in GROUND | TOP else "__init__" for m in found}


def test_every_module_lives_in_a_wing_or_the_ground():
    stray = [m for m in modules() if place(m) == "ground" and m not in GROUND]
    assert stray == [], f"give these modules a wing ({', '.join(WINGS)}): {stray}"


@pytest.mark.parametrize("module", modules())
def test_imports_point_down(module):
    here = rank(place(module))
    upward = sorted(target for target in nestref_imports(module)
                    if rank(place(target)) > here
                    or (place(module) == "ground" and place(target) != "ground"))
    assert upward == [], f"nestref.{module} ({place(module)}) imports from a wing above it: " \
                         f"{upward}"


def test_the_wing_check_sees_an_upward_import_inside_a_function(tmp_path, monkeypatch):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "layers.py").write_text(
        "def f():\n    from ..run.synthesize import synthesize\n    from . import kernels\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert nestref_imports("core.layers") == {"run.synthesize", "core.kernels"}
    assert rank(place("run.synthesize")) > rank(place("core.layers"))


@pytest.mark.parametrize("module", [m for m in modules() if place(m) != COMMANDS])
def test_only_the_command_modules_print(module):
    path = PACKAGE / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    prints = [node.lineno for node in ast.walk(tree)
              if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert prints == [], f"{path.relative_to(PACKAGE.parent)} prints at lines {prints}: report " \
                         f"through a return value or a callback, and let a command module print"
