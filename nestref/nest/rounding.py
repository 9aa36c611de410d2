"""How many items a fraction asks for: the one rounding rule that growth and pruning share.

``fraction * n`` is computed in floats, where e.g. 0.29 * 100 is 28.999999999999996
and 0.05 * 60 is 3.0000000000000004. A slack of 1e-9 keeps such artefacts from
losing (or adding) one item **[ours]** (docs/nest.md#ours-count-rounding).
"""
import math

SLACK = 1e-9


def floor_count(fraction, n):
    r"""``fraction`` of ``n``, rounded down: :math:`\lfloor f n + 10^{-9} \rfloor`."""
    return int(math.floor(fraction * n + SLACK))


def ceil_count(fraction, n):
    r"""``fraction`` of ``n``, rounded up: :math:`\lceil f n - 10^{-9} \rceil`."""
    return int(math.ceil(fraction * n - SLACK))
