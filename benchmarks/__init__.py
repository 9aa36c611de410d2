"""Speed benchmarks of nestref, outside the package: ``python -m benchmarks.NAME`` (from the root).

    training         nestref vs PyTorch dense training (LeNet-300-100, LeNet-5)
    sparse_step      sparse vs dense training step at 2, 5, 10, 20% density; the crossover
    compact          compact vs dense vs PyTorch inference of a pruned LeNet-300-100
    nest_run         the wall time of one whole NeST run

Each prints ratios measured in one run (every contender timed under the same load,
in turns) and the load average; ``--quick`` is a smoke run (used by tests/test_bench.py).
"""
