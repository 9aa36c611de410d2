"""One answer per seed: what makes a run's numbers the same on any core count and any CPU.

A run's arrays depend on the order in which every sum is added up. nestref fixes that order:

- **nestref's own kernels** (``nestref.core.kernels``) are compiled without fastmath, so the
  compiler may not reorder a sum to suit the CPU's vector width; the sums they vectorise
  run across examples, where each lane keeps its own order. Compiled for a generic x86-64
  or for the host's newest instructions, they give the same bits.
- **BLAS** (the dense products NumPy hands to OpenBLAS or MKL) splits a product between its
  threads in pieces whose edges change the order of some sums: 1, 2 and 4 threads give
  results a few ulps apart, and a training run that starts a few ulps apart ends elsewhere.
  So a run computes with one BLAS thread (``one_blas_thread``), whatever the machine has.
  The study gets its parallelism from running cells side by side instead.

What is left machine-dependent is the BLAS kernel itself (OpenBLAS picks one per CPU family:
Haswell, SkylakeX, Zen, ...) and NumPy's own vectorised loops: the same seed gives the same
run on machines whose ``numerics_record()["blas"]["kernel"]`` agree. Every report records it.
"""
import contextlib
import platform
from pathlib import Path

import llvmlite.binding
import numba
import numpy as np

BLAS_THREADS = 1  # the thread policy every run computes under (see the module's docstring)


@contextlib.contextmanager
def one_blas_thread():
    """Inside the block, BLAS computes on ``BLAS_THREADS`` thread(s); restored after."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        yield


def blas_libraries():
    """The BLAS libraries loaded in this process, NumPy's first:
    [{"library", "version", "kernel", "threads"}].

    Another package (SciPy, say) may bring its own BLAS, and the order in which threadpoolctl
    finds them changes between processes; NumPy's is the one a run computes with.
    """
    from threadpoolctl import threadpool_info

    found = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    found.sort(key=lambda lib: "numpy" not in Path(lib.get("filepath", "")).parent.name)
    return [{"library": lib.get("internal_api"), "version": lib.get("version"),
             "kernel": lib.get("architecture"), "threads": lib.get("num_threads")}
            for lib in found]


def numerics_record():
    """What a run's numbers depend on beyond its config: a report's "numerics" field.

    {"blas": NumPy's BLAS library (library, version, kernel), "blas_threads": the policy,
    "numba_cpu": the CPU the kernels are compiled for, "numpy", "numba", "machine"}.
    """
    found = blas_libraries()
    blas = {k: v for k, v in found[0].items() if k != "threads"} if found else None
    return {
        "blas": blas,
        "blas_threads": BLAS_THREADS,
        "numba_cpu": numba.config.CPU_NAME or llvmlite.binding.get_host_cpu_name(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "machine": platform.machine(),
    }
