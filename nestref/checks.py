"""Argument checks for nestref's doors: public drivers, the config and the command line.

The paper's rules themselves check nothing; the functions that call them check their
arguments here, once, so that every message has the same shape:
``"<name> must be <what was expected>, got <value>"``.
"""
import math

import numpy as np

from .errors import InvalidArgumentError

_INTEGER = (int, np.integer)
_NUMBER = (int, float, np.integer, np.floating)


def is_int(value):
    """True for a Python or NumPy integer (``bool`` is not an integer here)."""
    return isinstance(value, _INTEGER) and not isinstance(value, (bool, np.bool_))


def is_number(value):
    """True for a finite int or float (``bool`` is not a number here; nor is an int too large
    for a float)."""
    if not isinstance(value, _NUMBER) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def is_count(value):
    """True for an integer in [0, 10**15): any network's params or FLOPs, exact as a float too
    (a count read from a file larger than that is damage, not a network)."""
    return is_int(value) and 0 <= value < 10**15


def check_int(name, value, minimum=1):
    """``value`` as an ``int`` >= ``minimum``, or InvalidArgumentError."""
    if not is_int(value) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_int(name, value):
    """``value`` as an ``int`` >= 1."""
    return check_int(name, value, minimum=1)


def check_number(name, value, minimum=None, maximum=None):
    """``value`` as a finite ``float`` in [minimum, maximum] (either bound optional)."""
    ok = (
        is_number(value)
        and (minimum is None or value >= minimum)
        and (maximum is None or value <= maximum)
    )
    if not ok:
        bounds = ([] if minimum is None else [f">= {minimum:g}"]) + (
            [] if maximum is None else [f"<= {maximum:g}"])
        where = f" {' and '.join(bounds)}" if bounds else ""
        raise InvalidArgumentError(f"{name} must be a finite number{where}, got {value!r}")
    return float(value)


def check_positive_number(name, value):
    """``value`` as a finite ``float`` > 0."""
    if not is_number(value) or value <= 0:
        raise InvalidArgumentError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def check_fraction(name, value, include_zero=False, include_one=True):
    """``value`` as a ``float`` in (0, 1] by default; the ends are opened or closed by the flags.

    Growth ratios live in (0, 1] (growing nothing is not a round); pruning fractions in
    [0, 1) (pruning every connection leaves no network).
    """
    ok = (is_number(value) and (value >= 0 if include_zero else value > 0)
          and (value <= 1 if include_one else value < 1))
    if not ok:
        interval = ("[0" if include_zero else "(0") + ", " + ("1]" if include_one else "1)")
        raise InvalidArgumentError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_choice(name, value, choices):
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise InvalidArgumentError(f"{name} must be one of {expected}, got {value!r}")
    return value


def check_examples(net, x, y, what="the data"):
    """(x, y) as arrays: x (N, *net.input_shape), y (N,) labels, N >= 1."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or tuple(x.shape[1:]) != net.input_shape:
        expected = ", ".join(map(str, net.input_shape))
        raise InvalidArgumentError(f"{net.name} expects x of shape (N, {expected}), got {x.shape}")
    if y.shape != (len(x),):
        raise InvalidArgumentError(f"y must hold one label per example, shape ({len(x)},), "
                                   f"got {y.shape}")
    if len(x) == 0:
        raise InvalidArgumentError(f"{what} (x, y) is empty")
    return x, y
