"""Finite-difference oracle shared by the gradient tests (float64, central differences)."""
import numpy as np


def numerical_gradient(f, x, eps=1e-6):
    """d f / d x by central differences; f() reads x in place. x: any float64 array."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        plus = f()
        x[i] = old - eps
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad
