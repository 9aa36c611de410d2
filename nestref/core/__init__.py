"""What a student reads first: masked layers, networks, losses, SGD and the training loop, and the
Numba kernels beside their NumPy twins. Nothing here knows NeST."""
