"""The teaching notebooks: notebooks/NN_*.py (percent format, the cells as text) paired with
notebooks/NN_*.ipynb (the same cells with their outputs) by jupytext.

* each pair holds the same cells: a .py edited without ``jupytext --sync`` (or an .ipynb
  edited in Jupyter without jupytext) fails here, and so does half a pair;
* each notebook runs top to bottom in quick mode (NESTREF_QUICK=1) in a fresh ``python3``
  kernel, the way Jupyter runs it, and writes nothing into the repository;
* the committed .ipynb files were executed in order and hold no error output;
* they use nestref instead of re-implementing it: no code cell defines a function or
  class named like one of nestref's public ones, or assigns over one.

Refresh the committed outputs with ``python scripts/run_notebooks.py`` (full mode).
"""
import importlib
import inspect
import pkgutil
import re
from itertools import zip_longest
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.config import load_jupytext_config
from nbclient import NotebookClient

import nestref

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXPECTED = ["01_masked_layers_and_backprop", "02_connection_growth", "03_neuron_growth",
            "04_pruning", "05_lenet300_end_to_end", "06_lenet5_end_to_end"]
PAIRING = "ipynb,py:percent"
CELL_TIMEOUT = 300  # seconds per cell; quick mode needs a few, a busy machine more


def notebook_path(name):
    return NOTEBOOK_DIR / f"{name}.ipynb"


def text_path(name):
    return NOTEBOOK_DIR / f"{name}.py"


def read(name):
    return nbformat.read(notebook_path(name), as_version=4)


def read_text(name):
    """The notebook as its .py holds it: cells without outputs."""
    return jupytext.read(text_path(name), fmt="py:percent")


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def cell_differences(text_nb, ipynb_nb):
    """Indices of the cells whose type or source differ between the two forms of a notebook
    (a cell missing from one of them differs at its index)."""
    text_cells = [(cell.cell_type, cell.source) for cell in text_nb.cells]
    ipynb_cells = [(cell.cell_type, cell.source) for cell in ipynb_nb.cells]
    return [i for i in range(max(len(text_cells), len(ipynb_cells)))
            if text_cells[i:i + 1] != ipynb_cells[i:i + 1]]


def public_nestref_names():
    """Every public function and class defined in a nestref module."""
    names = set()
    for info in pkgutil.walk_packages(nestref.__path__, "nestref."):
        if info.name.rsplit(".", 1)[-1].startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)) \
                    and obj.__module__ == module.__name__:
                names.add(name)
    return names


def tree_state(*directories):
    """{path: modification time} of every file under the directories (that exist)."""
    return {path: path.stat().st_mtime_ns for d in directories if d.exists()
            for path in d.rglob("*") if path.is_file()}


# ------------------------------------------------------------- the files
def test_the_six_notebooks_are_committed_as_pairs():
    notebooks = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    texts = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    assert notebooks == EXPECTED, f"notebooks/*.ipynb are {notebooks}, expected {EXPECTED}"
    assert texts == EXPECTED, (f"notebooks/*.py are {texts}, expected {EXPECTED}: "
                               "each .ipynb is paired with a .py (jupytext --sync creates it)")


def test_jupytext_pairs_the_notebooks():
    """`jupytext --sync notebooks/...` finds the pairing in notebooks/jupytext.toml."""
    config = load_jupytext_config(str(NOTEBOOK_DIR))
    assert config is not None, "no jupytext configuration found for notebooks/"
    assert config.formats in (PAIRING, [PAIRING]), \
        f"jupytext pairs the notebooks as {config.formats!r}, expected {PAIRING!r}"


@pytest.mark.parametrize("name", EXPECTED)
def test_each_py_holds_the_cells_of_its_ipynb(name):
    text_nb, ipynb_nb = read_text(name), read(name)
    differences = cell_differences(text_nb, ipynb_nb)
    if differences:
        first = differences[0]
        lines = [nb.cells[first].source.splitlines() if first < len(nb.cells) else ["(no cell)"]
                 for nb in (text_nb, ipynb_nb)]
        k = next(k for k, pair in enumerate(zip_longest(*lines)) if pair[0] != pair[1])
        shown = [cell_lines[k] if k < len(cell_lines) else "(no line)" for cell_lines in lines]
        pytest.fail(f"{name}.py and {name}.ipynb differ in cells {differences[:5]}; cell {first}, "
                    f"line {k + 1}: .py {shown[0]!r}, .ipynb {shown[1]!r}. "
                    f"Run `jupytext --sync notebooks/{name}.py` (it takes the cells of the file "
                    "saved last), then "
                    f"`python scripts/run_notebooks.py --only {name[:2]}` if code changed")


def test_the_pairing_check_can_fail(tmp_path):
    """An edited code cell (in the .py file), an edited markdown cell and a lost cell all
    count as differences (else the check above could never fail)."""
    ipynb_nb = read(EXPECTED[0])
    text_nb = read_text(EXPECTED[0])
    assert cell_differences(text_nb, ipynb_nb) == []

    code = next(i for i, cell in enumerate(text_nb.cells) if cell.cell_type == "code")
    text_nb.cells[code].source += "\nprint('edited')"
    path = tmp_path / f"{EXPECTED[0]}.py"
    jupytext.write(text_nb, path, fmt="py:percent")
    assert cell_differences(jupytext.read(path), ipynb_nb) == [code]

    text_nb = read_text(EXPECTED[0])
    markdown = next(i for i, cell in enumerate(text_nb.cells) if cell.cell_type == "markdown")
    text_nb.cells[markdown].source = text_nb.cells[markdown].source.replace("a", "b", 1)
    assert cell_differences(text_nb, ipynb_nb) == [markdown]

    text_nb = read_text(EXPECTED[0])
    del text_nb.cells[-1]
    assert cell_differences(text_nb, ipynb_nb) == [len(text_nb.cells)]


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
            assert output.output_type != "error", \
                f"{name}, code cell {i}: {output.ename}: {output.evalue}"
            if output.output_type == "stream":
                assert "Traceback" not in output.text, f"{name}, code cell {i} printed a traceback"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_uses_nestref_and_redefines_none_of_it(name):
    source = "\n".join(cell.source for cell in code_cells(read(name)))
    assert re.search(r"^from nestref(\.\w+)* import ", source, re.MULTILINE), \
        f"{name} imports nothing from nestref"
    defined = set(re.findall(r"^\s*(?:def|class)\s+(\w+)", source, re.MULTILINE))
    clashes = defined & public_nestref_names()
    assert not clashes, \
        f"{name} defines {sorted(clashes)}, which nestref already has: import them instead"
    assert not re.search(r"^\s*nestref(\.\w+)+\s*=(?!=)", source, re.MULTILINE), \
        f"{name} assigns over a nestref name"


def test_the_redefinition_check_can_fail():
    """The names the check above looks for are really there (else it could never fail)."""
    assert {"grow_neurons", "bridging_gradient", "prune_network", "Dense", "synthesize"} \
        <= public_nestref_names()


# ------------------------------------------------------------ execution
@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_in_quick_mode(name, mnist_dir, monkeypatch):
    """Execute the cells of the .py (not written back) in a fresh kernel; nbclient raises on
    the first failing cell."""
    monkeypatch.setenv("NESTREF_QUICK", "1")                 # the kernel inherits this environment
    monkeypatch.setenv("NESTREF_DATA_DIR", str(mnist_dir))
    watched = (REPO_ROOT / "runs", REPO_ROOT / "figures" / "notebooks")
    before = tree_state(*watched)
    nb = read_text(name)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    assert all(cell.outputs for cell in code_cells(nb)), \
        f"{name}: a code cell printed and drew nothing in quick mode"
    assert tree_state(*watched) == before, \
        f"{name} wrote into runs/ or figures/notebooks/ in quick mode"
