"""The study's cells on a Dask cluster: ``nestref study run --backend dask [--scheduler ADDRESS]``.

``dask_client`` connects to the scheduler at an address (a cluster someone started with
``dask scheduler`` and ``dask worker``), or starts a ``LocalCluster`` on this machine when
there is none; ``results_as_completed`` sends one task per cell and hands each result back
as soon as its cell finishes, so that the client (``nestref.tools.study.run_grid``) writes the
rows file alone, as cells finish, exactly as with the local backend.

The workers run the same ``nestref.tools.study._cell_task`` as the local backend's processes and
read the same paths, so they need what those processes have (docs/study.md, "On a
cluster"): the same nestref install, the data set, and the runs directory and rows file at
the same paths (a file system shared with the client); and one thread each, because a
cell's BLAS thread limit holds for its whole process. ``check_workers`` verifies what can
be verified from here before any cell is sent.

``distributed`` is an optional extra (``pip install -e ".[cluster]"``): it is imported here,
and only when a Dask backend is asked for.
"""
import os
from contextlib import contextmanager

from ..errors import InvalidArgumentError, NestrefError

INSTALL_CLUSTER = 'pip install -e ".[cluster]"'
# How long to try to reach a scheduler, and to wait for its first worker: a scheduler on
# another machine answers in well under a second; a refused connection is retried until then.
CONNECT_SECONDS = 20
START_WORKERS = "dask worker {address} --nthreads 1 --nworkers N"


def import_distributed():
    """The ``distributed`` module, or one line saying how to install it."""
    try:
        import distributed
    except ImportError as err:
        raise InvalidArgumentError(
            f"--backend dask needs dask's distributed scheduler, which is not installed: "
            f"{INSTALL_CLUSTER}"
        ) from err
    return distributed


@contextmanager
def dask_client(scheduler=None, workers=1):
    """A ``distributed.Client`` for the scheduler at ``scheduler``, or, if None, for a
    ``LocalCluster`` of ``workers`` processes of one thread each; closed on leaving (a
    local cluster is stopped, and the scheduler forgets the cells this client sent)."""
    distributed = import_distributed()
    if scheduler is None:
        # processes, not threads: each cell sets its own BLAS thread limit, which is per
        # process; no dashboard (it would need bokeh and a free port 8787)
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                yield client
        return
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_SECONDS)
    except (OSError, ValueError) as err:  # no scheduler there (OSError), not an address
        raise InvalidArgumentError(
            f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({err}); give the "
            f"address `dask scheduler` printed (e.g. tcp://HOST:8786), or leave --scheduler "
            f"out to run on a local cluster"
        ) from err
    with client:
        check_workers(client, scheduler)
        yield client


def check_workers(client, scheduler):
    """Refuse a cluster whose cells would not run as the local backend's: no worker, or a
    worker of more than one thread (two cells in one process share its BLAS limit)."""
    try:
        client.wait_for_workers(1, timeout=CONNECT_SECONDS)
    except TimeoutError as err:
        raise InvalidArgumentError(
            f"the Dask scheduler at {scheduler} has no workers after {CONNECT_SECONDS} s; "
            f"start some: {START_WORKERS.format(address=scheduler)}"
        ) from err
    for worker, threads in sorted(client.nthreads().items()):
        if threads != 1:
            raise InvalidArgumentError(
                f"Dask worker {worker} runs {threads} threads; each cell needs a process to "
                f"itself (its BLAS thread limit holds for the whole process): start the "
                f"workers with {START_WORKERS.format(address=scheduler)}"
            )


def check_workers_see(client, directories):
    """Refuse to send cells to workers that do not see ``directories`` (made here first): the
    runs directory and the rows file's directory must be the same on every worker."""
    for path in directories:
        os.makedirs(path, exist_ok=True)
        seen = client.run(os.path.isdir, os.fspath(path))  # {worker address: bool}
        blind = sorted(worker for worker, ok in seen.items() if not ok)
        if blind:
            raise InvalidArgumentError(
                f"Dask worker {blind[0]} does not see {path}; the runs directory and the rows "
                f"file must be on a file system the workers share with this machine, at the "
                f"same path (give absolute paths: a relative one is read from each worker's "
                f"working directory)"
            )


def results_as_completed(client, task, calls):
    """``task(*args)`` on the cluster for each ``args`` of ``calls``; yields each result as
    its task finishes (in that order, not the calls'). A task's own error is raised here as
    it was raised on its worker."""
    distributed = import_distributed()
    # pure=False: a call is a run to make, not a value dask may take from an earlier call
    futures = [client.submit(task, *args, pure=False) for args in calls]
    for future in distributed.as_completed(futures):
        try:
            result = future.result()
        except distributed.KilledWorker as err:
            raise NestrefError(
                f"the workers running one cell died ({err}); see their logs (out of memory?), "
                f"then run the same command again: finished cells are kept, the others resume"
            ) from err
        yield result
