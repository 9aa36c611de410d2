"""nestref: NeST (grow-and-prune neural network synthesis) in NumPy and Numba.

The package is a house of wings; imports point down this list, never up:
    cli     the commands: parse and print only
    tools   the study (and its Dask cluster), the conformance vectors, the paper's table
    run     a run on disk: synthesis with checkpoints, run directories, compact models,
            export, figures
    nest    the paper: architectures and seed networks, config, growth, pruning,
            connectivity, accounting
    core    what a student reads first: masked layers, networks, losses, SGD, the training
            loop, the Numba kernels and their NumPy twins
    data    data sets (IDX, npz, MNIST) and atomic storage
and beneath them all errors.py and checks.py, the one validation vocabulary.
"""
from pathlib import Path

__version__ = "0.1.0"

# the directory that holds the package: a source checkout's root (its data/, figures/ and
# conformance/), or site-packages for an installed wheel
SOURCE_ROOT = Path(__file__).resolve().parent.parent
