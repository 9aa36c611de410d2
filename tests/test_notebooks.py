"""The teaching notebooks (notebooks/NN_*.ipynb).

* each one runs top to bottom in quick mode (NESTREF_QUICK=1) in a fresh ``python3``
  kernel, the way Jupyter runs it, and writes nothing into the repository;
* the committed files are what ``scripts/make_notebooks.py`` generates, were executed in
  order, and hold no error output;
* they use nestref instead of re-implementing it: no code cell defines a function or
  class named like one of nestref's public ones, or assigns over one.

Refresh the committed outputs with ``python scripts/run_notebooks.py`` (full mode).
"""
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import nestref

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXPECTED = ["01_masked_layers_and_backprop", "02_connection_growth", "03_neuron_growth", "04_pruning",
            "05_lenet300_end_to_end", "06_lenet5_end_to_end"]
CELL_TIMEOUT = 300  # seconds per cell; quick mode needs a few, a busy machine more


def notebook_path(name):
    return NOTEBOOK_DIR / f"{name}.ipynb"


def read(name):
    return nbformat.read(notebook_path(name), as_version=4)


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def public_nestref_names():
    """Every public function and class defined in a nestref module."""
    names = set()
    for info in pkgutil.iter_modules(nestref.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"nestref.{info.name}")
        for name, obj in vars(module).items():
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)) \
                    and obj.__module__ == module.__name__:
                names.add(name)
    return names


def tree_state(*directories):
    """{path: modification time} of every file under the directories (that exist)."""
    return {path: path.stat().st_mtime_ns for d in directories if d.exists() for path in d.rglob("*") if path.is_file()}


# ------------------------------------------------------------- the files
def test_the_six_notebooks_are_committed():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")) == EXPECTED


def test_committed_notebooks_hold_exactly_the_generated_cells():
    spec = importlib.util.spec_from_file_location("make_notebooks", REPO_ROOT / "scripts" / "make_notebooks.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generated = generator.build_all()
    assert sorted(generated) == EXPECTED
    for name, nb in generated.items():
        committed = read(name)
        expected = [(c.id, c.cell_type, c.source) for c in nb.cells]
        found = [(c.get("id"), c.cell_type, c.source) for c in committed.cells]
        assert found == expected, (f"{name}.ipynb differs from scripts/make_notebooks.py: regenerate it "
                                   f"(python scripts/make_notebooks.py {name[:2]}) and re-run it")


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_was_executed_top_to_bottom(name):
    cells = code_cells(read(name))
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1)), \
        f"{name}: run it with scripts/run_notebooks.py so that every cell runs once, in order"
    empty = [i for i, cell in enumerate(cells) if not cell.outputs]
    assert not empty, f"{name}: code cells {empty} have no output"


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_outputs_hold_no_error(name):
    for i, cell in enumerate(code_cells(read(name))):
        for output in cell.outputs:
            assert output.output_type != "error", f"{name}, code cell {i}: {output.ename}: {output.evalue}"
            if output.output_type == "stream":
                assert "Traceback" not in output.text, f"{name}, code cell {i} printed a traceback"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_uses_nestref_and_redefines_none_of_it(name):
    source = "\n".join(cell.source for cell in code_cells(read(name)))
    assert re.search(r"^from nestref(\.\w+)? import ", source, re.M), f"{name} imports nothing from nestref"
    defined = set(re.findall(r"^\s*(?:def|class)\s+(\w+)", source, re.M))
    clashes = defined & public_nestref_names()
    assert not clashes, f"{name} defines {sorted(clashes)}, which nestref already has: import them instead"
    assert not re.search(r"^\s*nestref(\.\w+)+\s*=(?!=)", source, re.M), f"{name} assigns over a nestref name"


def test_the_redefinition_check_can_fail():
    """The names the check above looks for are really there (else it could never fail)."""
    assert {"grow_neurons", "bridging_gradient", "prune_network", "Dense", "synthesize"} <= public_nestref_names()


# ------------------------------------------------------------ execution
@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_in_quick_mode(name, mnist_dir, monkeypatch):
    """Execute the notebook (not written back) in a fresh kernel; nbclient raises on the first failing cell."""
    monkeypatch.setenv("NESTREF_QUICK", "1")                 # the kernel inherits this environment
    monkeypatch.setenv("NESTREF_DATA_DIR", str(mnist_dir))
    watched = (REPO_ROOT / "runs", REPO_ROOT / "figures" / "notebooks")
    before = tree_state(*watched)
    nb = read(name)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    assert all(cell.outputs for cell in code_cells(nb)), f"{name}: a code cell printed and drew nothing in quick mode"
    assert tree_state(*watched) == before, f"{name} wrote into runs/ or figures/notebooks/ in quick mode"
