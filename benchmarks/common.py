"""What every benchmark shares: BLAS threads (threadpoolctl), timing in turns, the load average."""

import contextlib
import os
import statistics
import time

import numba
from threadpoolctl import ThreadpoolController


def _blas():
    return ThreadpoolController().select(user_api="blas")


def blas_threads():
    """Threads of the BLAS NumPy loaded (None if threadpoolctl finds none)."""
    found = _blas().lib_controllers
    return int(found[0].num_threads) if found else None


def thread_counts():
    """{"blas_threads", "numba_threads"} as they are now (call it inside ``limited_blas``)."""
    return {"blas_threads": blas_threads(), "numba_threads": numba.get_num_threads()}


def describe_blas():
    """e.g. 'openblas 0.3.31 (Haswell kernel)'."""
    found = _blas().lib_controllers
    if not found:
        return "unknown BLAS"
    info = found[0].info()
    return f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture')} kernel)"


@contextlib.contextmanager
def limited_blas(n):
    """Run the body with n BLAS threads (None: as they are), and as many Numba threads
    (compact inference's, ``nestref.core.kernels.csr_chain``); both restored afterwards."""
    if n is None:
        yield
        return
    numba_threads = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        with _blas().limit(limits=n):
            yield
    finally:
        numba.set_num_threads(numba_threads)


def seconds(fn):
    """Wall seconds of one call of fn()."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_in_turns(contenders, repeats):
    """{name: [seconds per repeat]}: each repeat runs every contender once, in turn, so that a
    burst of load from elsewhere hits all of them alike. contenders: {name: fn}."""
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(seconds(fn))
    return times


def median(values):
    return statistics.median(values)


def load_average():
    """The 1-minute load average, or None where the OS does not tell."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def check_positive_ints(**values):
    """ValueError naming the first setting that is not an int >= 1."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
