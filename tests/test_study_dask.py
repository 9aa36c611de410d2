"""`nestref study run --backend dask`: the quick grid on a local Dask cluster of two worker
processes gives the local backend's rows, number for number; a cluster it cannot use is
refused in one line that says what to do."""
import json
import socket
import sys

import pytest

from nestref.cli.main import main
from nestref.tools import cluster


@pytest.fixture
def distributed():
    return pytest.importorskip("distributed", reason='the "cluster" extra is not installed')

# no --arch: the quick grid is LeNet-300-100's
QUICK_GRID = ["study", "run", "--quick", "--seed", "0", "1", "--runs-dir", "runs", "--rows",
              "rows.json", "--jobs", "2"]


def run_quick_grid(where, mnist_dir, monkeypatch, *backend):
    """The quick grid run in ``where`` (relative paths, so that the rows' commands are the same
    wherever it runs); returns its rows and the statuses the command printed."""
    where.mkdir()
    monkeypatch.chdir(where)
    assert main([*QUICK_GRID, "--data-dir", str(mnist_dir), *backend]) == 0
    return json.loads((where / "rows.json").read_text())


@pytest.mark.slow
def test_the_quick_grid_on_a_local_dask_cluster_gives_the_local_backends_rows(
        tmp_path, mnist_dir, monkeypatch, capsys, distributed):
    local = run_quick_grid(tmp_path / "local", mnist_dir, monkeypatch)
    capsys.readouterr()
    on_dask = run_quick_grid(tmp_path / "dask", mnist_dir, monkeypatch, "--backend", "dask")
    printed = capsys.readouterr().out
    assert "cells run on a local Dask cluster of 2 worker process(es)" in printed
    assert printed.count(": ran;") == 6  # 3 methods x 2 seeds, each written as it finished

    def numbers(rows):
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]

    assert len(on_dask) == 14  # 2 seeds x (3 NeST + 3 pruning-only selections + dense)
    assert {row["arch"] for row in on_dask} == {"lenet-300-100"}
    assert numbers(on_dask) == numbers(local)

    # resuming reads every cell back from the rows file; nothing runs again
    assert main([*QUICK_GRID, "--data-dir", str(mnist_dir), "--backend", "dask"]) == 0
    assert capsys.readouterr().out.count(": finished before;") == 6
    assert json.loads((tmp_path / "dask" / "rows.json").read_text()) == on_dask


def test_a_scheduler_address_with_no_scheduler_is_one_line_naming_it(
        tmp_path, monkeypatch, capsys, distributed):
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    rows = tmp_path / "rows.json"
    code = main(["study", "run", "--arch", "lenet-300-100", "--backend", "dask",
                 "--scheduler", address, "--runs-dir", str(tmp_path / "runs"),
                 "--rows", str(rows)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"--scheduler {address}: cannot reach a Dask scheduler there" in err
    assert "leave --scheduler out to run on a local cluster" in err
    assert not rows.exists()


def test_a_scheduler_without_the_dask_backend_is_refused(tmp_path, capsys):
    code = main(["study", "run", "--arch", "lenet-300-100", "--scheduler", "tcp://host:8786",
                 "--runs-dir", str(tmp_path / "runs"), "--rows", str(tmp_path / "rows.json")])
    assert code == 2
    assert "error: --scheduler tcp://host:8786 is a Dask scheduler's address; add --backend " \
           "dask" in capsys.readouterr().err


def test_without_distributed_the_dask_backend_says_how_to_install_it(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    code = main(["study", "run", "--arch", "lenet-300-100", "--backend", "dask",
                 "--runs-dir", str(tmp_path / "runs"), "--rows", str(tmp_path / "rows.json")])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: --backend dask needs dask's distributed scheduler, which is not installed: "
        'pip install -e ".[cluster]"\n'
    )


def test_a_worker_of_several_threads_is_refused_before_any_cell_runs(tmp_path, capsys,
                                                                     distributed):
    # two cells in one process would share its BLAS thread limit (threadpoolctl's is per
    # process), and a cell's numbers depend on its thread count
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as two_threads:
        code = main(["study", "run", "--arch", "lenet-300-100", "--backend", "dask",
                     "--scheduler", two_threads.scheduler_address,
                     "--runs-dir", str(tmp_path / "runs"), "--rows", str(tmp_path / "rows.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert "runs 2 threads" in err and "--nthreads 1" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "rows.json").exists()
