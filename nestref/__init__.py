"""nestref: NeST (grow-and-prune neural network synthesis) in NumPy and Numba.

The modules follow the paper:
    layers      masked Dense / Conv2d with hand-written forward and backward
    models      networks, the LeNets, unit surgery
    grow        connection growth, neuron growth (bridging gradient), feature-map growth
    prune       magnitude pruning, dead-neuron removal, partial-area convolution
    accounting  params and FLOPs
    synthesize  seed -> grow -> prune
    architectures  one table per architecture; mlp:/conv: specs of the user's own
    export      ONNX export and prediction on saved images
and below them kernels (Numba loops and their NumPy twins), data, losses, optim, train.
"""
__version__ = "0.1.0"
