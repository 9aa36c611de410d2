"""Execute the notebooks, saving their outputs into the .ipynb files.

    python scripts/run_notebooks.py               # full mode: the outputs to commit
    python scripts/run_notebooks.py --quick       # NESTREF_QUICK=1: small data, a minute at most
    python scripts/run_notebooks.py --only 05 06  # only the notebooks whose names start so

A notebook is a pair: notebooks/NN_name.py holds its cells as text, NN_name.ipynb the same
cells with their outputs. For each notebook the script first syncs the pair
(``jupytext --sync``: the cells come from the file saved last, so an edit made in either
one is kept; a missing .ipynb is created), then runs the cells in a fresh ``python3``
kernel with notebooks/ as its working directory, as Jupyter would, and writes them with
their new outputs into the .ipynb. A notebook whose execution fails keeps its previous
outputs (the error is printed) and the script exits with status 1.

Notebooks 05 and 06 in full mode load (``resume=True``) the study's seed-0 NeST and
pruning-only cells, runs/study/<arch>/{nest,prune-only}/seed-0 (or under
``$NESTREF_STUDY_RUNS``): run ``nestref study run --arch lenet-300-100 --seed 0`` (and the
same for ``lenet5``) first, or expect the notebook to run the missing cells itself.

MNIST: wherever ``nestref.data.datasets.load_mnist()`` finds it (``$NESTREF_DATA_DIR`` first).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from jupytext.cli import jupytext
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"


def notebook_paths(only=None):
    """notebooks/NN_*.py in order; ``only``: name prefixes such as ["05", "06"]."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]
    return paths


def sync(text_path):
    """``jupytext --sync`` on the pair of ``text_path``; returns the .ipynb's path."""
    if jupytext(["--sync", "--quiet", str(text_path)]) != 0:
        raise RuntimeError(f"jupytext --sync {text_path} failed")
    return text_path.with_suffix(".ipynb")


def execute(path, quick, timeout):
    """Run the notebook at ``path`` in a fresh kernel; returns the executed notebook (not written).

    Raises nbclient's CellExecutionError if a cell fails.
    """
    os.environ["NESTREF_QUICK"] = "1" if quick else "0"   # the kernel inherits this environment
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="NESTREF_QUICK=1 (small data, few epochs)")
    parser.add_argument("--only", nargs="+", metavar="NN",
                        help="notebook name prefixes, e.g. --only 05 06")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds per cell (default: 600 quick, none in full mode)")
    args = parser.parse_args(argv)

    paths = notebook_paths(args.only)
    if not paths:
        print(f"no notebook in {NOTEBOOK_DIR} matches {args.only}", file=sys.stderr)
        return 2
    timeout = args.timeout if args.timeout is not None else (600 if args.quick else -1)

    failed = []
    for text_path in paths:
        t0 = time.perf_counter()
        path = sync(text_path)
        try:
            nb = execute(path, args.quick, timeout)
        except CellExecutionError as err:
            print(f"FAILED {path.name} after {time.perf_counter() - t0:.0f} s "
                  f"(outputs left as they were):\n{err}", file=sys.stderr)
            failed.append(path.name)
            continue
        nbformat.write(nb, path)
        os.utime(text_path)   # the .py stays the newer of the two, as after jupytext --sync
        mode = "quick" if args.quick else "full"
        print(f"{path.name}: {time.perf_counter() - t0:.1f} s ({mode} mode)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
