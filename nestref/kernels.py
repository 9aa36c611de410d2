"""The hot loops of nestref, each written twice.

Every kernel here has a plain-NumPy twin (``*_numpy``) and a Numba twin
(``*_numba``). The NumPy twin is the one to read: it says what is computed in a few
vectorised lines. The Numba twin computes the same numbers with explicit loops that
touch each element once, which is what makes LeNet-5 training fast on a CPU. Tests
check that the twins agree (``tests/test_kernels.py``).

The layers call the plain names (``im2col``, ``col2im``, ``maxpool_forward``,
``maxpool_backward``); ``use_backend("numpy")`` switches them to the NumPy twins,
which is handy for teaching and for ruling out a kernel bug.

Thread policy: the Numba kernels are serial (``parallel=False``) and the matrix
products go to BLAS, which owns all the cores. Running Numba threads and BLAS threads
at the same time on the same cores makes both spin and wait on each other (measured
at 2x slower on a 2-core machine), so only one of them is parallel: the GEMMs, which
carry most of the FLOPs.

Layouts (NCHW images; ``P = Ho * Wo`` output positions):
    x:    (N, C, H, W)
    cols: (N * P, C * kh * kw)   row ``n * P + p`` is the receptive field of output p
"""
import numpy as np
from numba import njit

_BACKEND = {"name": "numba"}


def output_size(size, kernel, stride, padding):
    """Spatial output size of a sliding window: floor((size + 2*pad - kernel)/stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


# --------------------------------------------------------------------- im2col
def im2col_numpy(x, kh, kw, stride=1, padding=0):
    """Unfold every receptive field of ``x`` into a row.

    x: (N, C, H, W)  ->  cols: (N * Ho * Wo, C * kh * kw)
    Column order is (c, i, j), matching ``weight.reshape(out_c, -1)``.
    """
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    # windows[n, c, y, x, i, j] = xp[n, c, y + i, x + j]; striding picks every stride-th y, x
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :ho, :wo]
    # (N, C, Ho, Wo, kh, kw) -> (N, Ho, Wo, C, kh, kw): one row per output position
    return np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(n * ho * wo, c * kh * kw)


@njit(cache=True)
def _im2col_valid_numba(x, kh, kw):
    # stride 1, no padding (every LeNet conv): no bounds checks, contiguous row copies
    n, c, h, w = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    cols = np.empty((n * ho * wo, c * kh * kw), dtype=x.dtype)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                row = (b * ho + oy) * wo + ox
                for ch in range(c):
                    for i in range(kh):
                        base = (ch * kh + i) * kw
                        for j in range(kw):
                            cols[row, base + j] = x[b, ch, oy + i, ox + j]
    return cols


@njit(cache=True)
def im2col_numba(x, kh, kw, stride=1, padding=0):
    if stride == 1 and padding == 0:
        return _im2col_valid_numba(x, kh, kw)
    n, c, h, w = x.shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    cols = np.zeros((n * ho * wo, c * kh * kw), dtype=x.dtype)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                row = (b * ho + oy) * wo + ox
                for ch in range(c):
                    for i in range(kh):
                        y = oy * stride + i - padding
                        if y < 0 or y >= h:
                            continue
                        for j in range(kw):
                            xx = ox * stride + j - padding
                            if xx >= 0 and xx < w:
                                cols[row, (ch * kh + i) * kw + j] = x[b, ch, y, xx]
    return cols


# --------------------------------------------------------------------- col2im
def col2im_numpy(cols, x_shape, kh, kw, stride=1, padding=0):
    """Fold rows back onto the image, summing where receptive fields overlap.

    The adjoint of ``im2col``: cols (N * Ho * Wo, C * kh * kw) -> (N, C, H, W).
    """
    n, c, h, w = x_shape
    ho, wo = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    blocks = cols.reshape(n, ho, wo, c, kh, kw)
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    # one vectorised add per kernel offset (i, j): the overlaps between offsets are what
    # make this a sum, so the offsets must be visited one at a time
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += blocks[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return xp[:, :, padding:padding + h, padding:padding + w]


@njit(cache=True)
def _col2im_valid_numba(cols, x_shape, kh, kw):
    n, c, h, w = x_shape
    ho, wo = h - kh + 1, w - kw + 1
    x = np.zeros((n, c, h, w), dtype=cols.dtype)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                row = (b * ho + oy) * wo + ox
                for ch in range(c):
                    for i in range(kh):
                        base = (ch * kh + i) * kw
                        for j in range(kw):
                            x[b, ch, oy + i, ox + j] += cols[row, base + j]
    return x


@njit(cache=True)
def col2im_numba(cols, x_shape, kh, kw, stride=1, padding=0):
    if stride == 1 and padding == 0:
        return _col2im_valid_numba(cols, x_shape, kh, kw)
    n, c, h, w = x_shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    x = np.zeros((n, c, h, w), dtype=cols.dtype)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                row = (b * ho + oy) * wo + ox
                for ch in range(c):
                    for i in range(kh):
                        y = oy * stride + i - padding
                        if y < 0 or y >= h:
                            continue
                        for j in range(kw):
                            xx = ox * stride + j - padding
                            if xx >= 0 and xx < w:
                                x[b, ch, y, xx] += cols[row, (ch * kh + i) * kw + j]
    return x


# ------------------------------------------------------------------- max-pool
def maxpool_forward_numpy(x, k, stride):
    """Max over k x k windows.

    x: (N, C, H, W) -> out: (N, C, Ho, Wo), argmax: (N, C, Ho, Wo) int64, the flat
    index ``y * W + x`` in the input plane of each window's maximum (first one on ties).
    """
    n, c, h, w = x.shape
    ho, wo = output_size(h, k, stride, 0), output_size(w, k, stride, 0)
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]
    flat = windows.reshape(n, c, ho, wo, k * k)
    pos = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, pos[..., None], axis=-1)[..., 0]
    oy = np.arange(ho)[:, None] * stride + pos // k
    ox = np.arange(wo)[None, :] * stride + pos % k
    return out, (oy * w + ox).astype(np.int64)


@njit(cache=True)
def _maxpool2x2_numba(x):
    # the LeNet case, unrolled: 4x faster than the general loop
    n, c, h, w = x.shape
    ho, wo = h // 2, w // 2
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    argmax = np.empty((n, c, ho, wo), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for oy in range(ho):
                y0 = 2 * oy
                for ox in range(wo):
                    x0 = 2 * ox
                    best = x[b, ch, y0, x0]
                    where = y0 * w + x0
                    v = x[b, ch, y0, x0 + 1]
                    if v > best:
                        best, where = v, y0 * w + x0 + 1
                    v = x[b, ch, y0 + 1, x0]
                    if v > best:
                        best, where = v, (y0 + 1) * w + x0
                    v = x[b, ch, y0 + 1, x0 + 1]
                    if v > best:
                        best, where = v, (y0 + 1) * w + x0 + 1
                    out[b, ch, oy, ox] = best
                    argmax[b, ch, oy, ox] = where
    return out, argmax


@njit(cache=True)
def maxpool_forward_numba(x, k, stride):
    if k == 2 and stride == 2:
        return _maxpool2x2_numba(x)
    n, c, h, w = x.shape
    ho = (h - k) // stride + 1
    wo = (w - k) // stride + 1
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    argmax = np.empty((n, c, ho, wo), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for oy in range(ho):
                for ox in range(wo):
                    y0 = oy * stride
                    x0 = ox * stride
                    best = x[b, ch, y0, x0]
                    where = y0 * w + x0
                    for i in range(k):
                        for j in range(k):
                            v = x[b, ch, y0 + i, x0 + j]
                            if v > best:
                                best = v
                                where = (y0 + i) * w + x0 + j
                    out[b, ch, oy, ox] = best
                    argmax[b, ch, oy, ox] = where
    return out, argmax


def maxpool_backward_numpy(grad_out, argmax, x_shape):
    """Route each window's gradient to the input that won it.

    grad_out, argmax: (N, C, Ho, Wo) -> grad_in: (N, C, H, W)
    """
    n, c, h, w = x_shape
    grad_in = np.zeros((n * c, h * w), dtype=grad_out.dtype)
    rows = np.repeat(np.arange(n * c), argmax.shape[2] * argmax.shape[3])
    # add.at, not fancy assignment: overlapping windows may share a winner
    np.add.at(grad_in, (rows, argmax.reshape(-1)), grad_out.reshape(-1))
    return grad_in.reshape(x_shape)


@njit(cache=True)
def maxpool_backward_numba(grad_out, argmax, x_shape):
    n, c, h, w = x_shape
    grad_in = np.zeros((n, c, h, w), dtype=grad_out.dtype)
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    for b in range(n):
        for ch in range(c):
            for oy in range(ho):
                for ox in range(wo):
                    where = argmax[b, ch, oy, ox]
                    grad_in[b, ch, where // w, where % w] += grad_out[b, ch, oy, ox]
    return grad_in


# ------------------------------------------------------------------ dispatch
_TWINS = {
    "im2col": (im2col_numpy, im2col_numba),
    "col2im": (col2im_numpy, col2im_numba),
    "maxpool_forward": (maxpool_forward_numpy, maxpool_forward_numba),
    "maxpool_backward": (maxpool_backward_numpy, maxpool_backward_numba),
}


def use_backend(name):
    """Select which twin the layers call: "numba" (default, fast) or "numpy" (readable)."""
    if name not in ("numpy", "numba"):
        raise ValueError(f"backend must be 'numpy' or 'numba', got {name!r}")
    _BACKEND["name"] = name


def backend():
    """The name of the backend the layers currently call."""
    return _BACKEND["name"]


def _pick(kernel):
    numpy_twin, numba_twin = _TWINS[kernel]
    return numba_twin if _BACKEND["name"] == "numba" else numpy_twin


def im2col(x, kh, kw, stride=1, padding=0):
    """x: (N, C, H, W) -> (N * Ho * Wo, C * kh * kw); see ``im2col_numpy``."""
    return _pick("im2col")(np.ascontiguousarray(x), kh, kw, stride, padding)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """(N * Ho * Wo, C * kh * kw) -> (N, C, H, W); see ``col2im_numpy``."""
    return _pick("col2im")(np.ascontiguousarray(cols), tuple(int(s) for s in x_shape), kh, kw, stride, padding)


def maxpool_forward(x, k, stride):
    """x: (N, C, H, W) -> (out, argmax), both (N, C, Ho, Wo); see ``maxpool_forward_numpy``."""
    return _pick("maxpool_forward")(np.ascontiguousarray(x), k, stride)


def maxpool_backward(grad_out, argmax, x_shape):
    """(N, C, Ho, Wo) -> (N, C, H, W); see ``maxpool_backward_numpy``."""
    return _pick("maxpool_backward")(np.ascontiguousarray(grad_out), argmax, tuple(int(s) for s in x_shape))


# ------------------------------------------------ sparse (CSR) matrix product
# Appended for nestref.compact: a pruned Dense layer stored as CSR. Layout of the
# CSR of a matrix W (out, in): row r's nonzeros are data[indptr[r]:indptr[r+1]], in
# the columns indices[indptr[r]:indptr[r+1]].
def csr_matmul_numpy(x, data, indices, indptr, n_out):
    """x (N, in) times the transpose of the CSR matrix W (out, in) -> (N, out) = x @ W.T.

    Rebuilds W densely and multiplies: the readable statement of what is computed.
    """
    n_in = x.shape[1]
    rows = np.repeat(np.arange(n_out), np.diff(indptr))
    dense = np.zeros((n_out, n_in), dtype=np.result_type(x, data))
    np.add.at(dense, (rows, indices), data)  # add.at: repeated (row, column) pairs would sum
    return x @ dense.T


_CSR_BLOCK = 64  # examples per block: a block of x^T (in, 64) floats stays in L2 for LeNet widths


@njit(cache=True)
def csr_matmul_numba(x, data, indices, indptr, n_out):
    # Each nonzero w[r, j] adds w * x[:, j] to out[:, r]. Done over a block of
    # examples at a time, with the block transposed so that x[:, j] is a contiguous
    # run: the inner loop is then a vectorisable axpy instead of a scattered gather.
    n, n_in = x.shape
    out = np.empty((n, n_out), dtype=x.dtype)
    block = _CSR_BLOCK
    xt = np.zeros((n_in, block), dtype=x.dtype)
    acc = np.empty((n_out, block), dtype=x.dtype)
    for n0 in range(0, n, block):
        nb = min(block, n - n0)
        for b in range(nb):
            for j in range(n_in):
                xt[j, b] = x[n0 + b, j]
        for r in range(n_out):
            for b in range(block):
                acc[r, b] = 0.0
            for k in range(indptr[r], indptr[r + 1]):
                w = data[k]
                j = indices[k]
                for b in range(block):
                    acc[r, b] += w * xt[j, b]
        for b in range(nb):
            for r in range(n_out):
                out[n0 + b, r] = acc[r, b]
    return out


_TWINS["csr_matmul"] = (csr_matmul_numpy, csr_matmul_numba)


def csr_matmul(x, data, indices, indptr, n_out):
    """x (N, in) @ W.T for W (out, in) given as CSR (data, indices, indptr) -> (N, out).

    Computes in the common dtype of x and data, as ``x @ W.T`` would.
    """
    dtype = np.result_type(x, data)
    return _pick("csr_matmul")(np.ascontiguousarray(x, dtype=dtype), np.ascontiguousarray(data, dtype=dtype),
                               np.ascontiguousarray(indices, dtype=np.int64),
                               np.ascontiguousarray(indptr, dtype=np.int64), int(n_out))


# ------------------------------------------------------------- affine warp
def affine_warp_numpy(images, matrices):
    """Resample each image through its own affine map, bilinear, zeros outside.

    images: (N, H, W) float; matrices: (N, 2, 3) mapping *output* pixel (y, x, 1) to
    the input position it reads from. Returns (N, H, W).
    """
    n, h, w = images.shape
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    grid = np.stack([ys.ravel(), xs.ravel(), np.ones(h * w)])              # (3, H*W)
    src = matrices.astype(np.float64) @ grid                                 # (N, 2, H*W)
    y0, x0 = np.floor(src[:, 0]).astype(np.int64), np.floor(src[:, 1]).astype(np.int64)
    fy, fx = src[:, 0] - y0, src[:, 1] - x0
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))                        # reads outside land on zeros
    rows = np.arange(n)[:, None]

    def at(yy, xx):
        inside = (yy >= -1) & (yy <= h) & (xx >= -1) & (xx <= w)
        return np.where(inside, padded[rows, np.clip(yy + 1, 0, h + 1), np.clip(xx + 1, 0, w + 1)], 0.0)

    out = ((1 - fy) * (1 - fx) * at(y0, x0) + (1 - fy) * fx * at(y0, x0 + 1)
           + fy * (1 - fx) * at(y0 + 1, x0) + fy * fx * at(y0 + 1, x0 + 1))
    return out.reshape(n, h, w).astype(images.dtype)


@njit(cache=True)
def affine_warp_numba(images, matrices):
    n, h, w = images.shape
    out = np.zeros_like(images)
    for b in range(n):
        m = matrices[b]
        for y in range(h):
            for x in range(w):
                sy = m[0, 0] * y + m[0, 1] * x + m[0, 2]
                sx = m[1, 0] * y + m[1, 1] * x + m[1, 2]
                y0 = int(np.floor(sy))
                x0 = int(np.floor(sx))
                fy = sy - y0
                fx = sx - x0
                acc = 0.0
                for dy in range(2):
                    yy = y0 + dy
                    if yy < 0 or yy >= h:
                        continue
                    wy = fy if dy == 1 else 1.0 - fy
                    for dx in range(2):
                        xx = x0 + dx
                        if xx < 0 or xx >= w:
                            continue
                        wx = fx if dx == 1 else 1.0 - fx
                        acc += wy * wx * images[b, yy, xx]
                out[b, y, x] = acc
    return out


_TWINS["affine_warp"] = (affine_warp_numpy, affine_warp_numba)


def affine_warp(images, matrices):
    """(N, H, W), (N, 2, 3) -> (N, H, W); see ``affine_warp_numpy``."""
    return _pick("affine_warp")(np.ascontiguousarray(images), np.ascontiguousarray(matrices, dtype=np.float64))
