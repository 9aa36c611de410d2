"""The hot loops of nestref, each written twice.

Every kernel here has a plain-NumPy twin (``*_numpy``) and a Numba twin
(``*_numba``). The NumPy twin is the one to read: it says what is computed in a few
vectorised lines. The Numba twin computes the same numbers with explicit loops that
touch each element once, which is what makes LeNet-5 training fast on a CPU. Tests
check that the twins agree (``tests/test_kernels.py``).

The layers call the plain names (``im2col``, ``col2im``, ``maxpool_forward``,
``maxpool_backward``); ``use_backend("numpy")`` switches them to the NumPy twins,
which is handy for teaching and for ruling out a kernel bug.

Thread policy: the Numba kernels are serial (``parallel=False``) and compiled without
fastmath: a sum keeps the order the source gives it on every CPU (``nestref.core.reproducible``).
During a run BLAS computes on one thread too, for the same reason. One exception:
``csr_chain``, compact inference's product, splits the examples over
``numba.get_num_threads()`` Python threads (its kernel releases the GIL); each example's
numbers are computed by one thread in one order, so the split changes no bit, and its
threads sleep, not spin, when it is done.

Layouts (NCHW images; ``P = Ho * Wo`` output positions):
    x:    (N, C, H, W)
    cols: (N * P, C * kh * kw)   row ``n * P + p`` is the receptive field of output p
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import get_num_threads, njit

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
    return np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(
        n * ho * wo, c * kh * kw
    )


@njit(cache=True)
def _im2col_valid_numba(x, kh, kw):
    # stride 1, no padding (every LeNet conv): no bounds checks. One input row x[b, ch, oy + i]
    # feeds the same (ch, i) slot of the wo rows of output line oy, so it is read once while hot
    n, c, h, w = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    cols = np.empty((n * ho * wo, c * kh * kw), dtype=x.dtype)
    for b in range(n):
        for oy in range(ho):
            row0 = (b * ho + oy) * wo
            for ch in range(c):
                for i in range(kh):
                    base = (ch * kh + i) * kw
                    line = x[b, ch, oy + i]
                    for ox in range(wo):
                        row = cols[row0 + ox]
                        for j in range(kw):
                            row[base + j] = line[ox + j]
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
            xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride] += blocks[
                :, :, :, :, i, j
            ].transpose(0, 3, 1, 2)
    return xp[:, :, padding:padding + h, padding:padding + w]


@njit(cache=True)
def _col2im_valid_numba(cols, x_shape, kh, kw):
    # kernel row i of output line oy lands on image line oy + i: visiting (oy, i) outside the
    # (ox, ch, j) loops keeps that line in cache while every contribution is added to it
    n, c, h, w = x_shape
    ho, wo = h - kh + 1, w - kw + 1
    x = np.zeros((n, c, h, w), dtype=cols.dtype)
    for b in range(n):
        for oy in range(ho):
            for i in range(kh):
                y = oy + i
                for ox in range(wo):
                    row = (b * ho + oy) * wo + ox
                    for ch in range(c):
                        base = (ch * kh + i) * kw
                        for j in range(kw):
                            x[b, ch, y, ox + j] += cols[row, base + j]
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
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[
        :, :, ::stride, ::stride
    ][:, :, :ho, :wo]
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
    # planes viewed flat: argmax indexes the plane directly (no // and % per window)
    n, c, h, w = x_shape
    grad_in = np.zeros((n, c, h, w), dtype=grad_out.dtype)
    planes = grad_in.reshape(n * c, h * w)
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    grads = grad_out.reshape(n * c, ho * wo)
    winners = argmax.reshape(n * c, ho * wo)
    for r in range(n * c):
        for p in range(ho * wo):
            planes[r, winners[r, p]] += grads[r, p]
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
    return _pick("col2im")(
        np.ascontiguousarray(cols), tuple(int(s) for s in x_shape), kh, kw, stride, padding
    )


def maxpool_forward(x, k, stride):
    """x: (N, C, H, W) -> (out, argmax), both (N, C, Ho, Wo); see ``maxpool_forward_numpy``."""
    return _pick("maxpool_forward")(np.ascontiguousarray(x), k, stride)


def maxpool_backward(grad_out, argmax, x_shape):
    """(N, C, Ho, Wo) -> (N, C, H, W); see ``maxpool_backward_numpy``."""
    return _pick("maxpool_backward")(
        np.ascontiguousarray(grad_out), np.ascontiguousarray(argmax),
        tuple(int(s) for s in x_shape),
    )


# ------------------------------------------------ sparse (CSR) matrix products
# A sparse weight W (out, in) is stored as CSR: row r's nonzeros are
# data[indptr[r]:indptr[r+1]], in the columns indices[indptr[r]:indptr[r+1]].
# Three products make a sparse layer: the forward W x, the input gradient W^T g and
# the weight gradient g x^T at the stored positions only. They take and give
# *feature-major* arrays, xt (in, N), gt (out, N): the N examples of one unit are
# then a contiguous run, and each nonzero costs one vectorisable axpy (or dot) over a
# block of examples instead of a scattered gather. A layer's (N, in) input is
# feature-major for free when it comes out of the sparse layer before (its output
# is a transposed view) or when it is transposed once and reused.
# examples per block: a block of out (out, 256) floats stays in L2 for LeNet widths
_CSR_BLOCK = 256


def csr_to_dense(data, indices, indptr, shape):
    """The dense (out, in) matrix of a CSR triple (repeated (row, column) pairs sum)."""
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    dense = np.zeros(shape, dtype=data.dtype)
    np.add.at(dense, (rows, indices), data)
    return dense


def sparse_forward_numpy(xt, data, indices, indptr, n_out):
    """W xt: W (out, in) as CSR, xt (in, N) -> (out, N). Rebuilds W densely: the readable
    statement."""
    return csr_to_dense(data, indices, indptr, (n_out, xt.shape[0])) @ xt


@njit(cache=True)
def sparse_forward_numba(xt, data, indices, indptr, n_out):
    # out[r] += w[r, j] * xt[j] for each of row r's nonzeros, a block of examples at a time
    n = xt.shape[1]
    out = np.zeros((n_out, n), dtype=xt.dtype)
    for n0 in range(0, n, _CSR_BLOCK):
        n1 = min(n0 + _CSR_BLOCK, n)
        for r in range(n_out):
            acc = out[r, n0:n1]
            for k in range(indptr[r], indptr[r + 1]):
                w = data[k]
                row = xt[indices[k], n0:n1]
                for b in range(n1 - n0):
                    acc[b] += w * row[b]
    return out


def sparse_input_grad_numpy(gt, data, indices, indptr, n_in):
    """W^T gt: W (out, in) as CSR, gt (out, N) -> (in, N): a sparse layer's input gradient."""
    return csr_to_dense(data, indices, indptr, (gt.shape[0], n_in)).T @ gt


@njit(cache=True)
def sparse_input_grad_numba(gt, data, indices, indptr, n_in):
    # each nonzero w[r, j] adds w * gt[r] to out[j]: a scatter of axpys
    n_out, n = gt.shape
    out = np.zeros((n_in, n), dtype=gt.dtype)
    for n0 in range(0, n, _CSR_BLOCK):
        n1 = min(n0 + _CSR_BLOCK, n)
        for r in range(n_out):
            g = gt[r, n0:n1]
            for k in range(indptr[r], indptr[r + 1]):
                w = data[k]
                acc = out[indices[k], n0:n1]
                for b in range(n1 - n0):
                    acc[b] += w * g[b]
    return out


def sparse_weight_grad_numpy(gt, xt, indices, indptr):
    """(gt xt^T) at the stored positions only: gt (out, N), xt (in, N) -> (nnz,), in CSR order.

    Entry k, in row r and column j = indices[k], is sum_n gt[r, n] xt[j, n]: the weight
    gradient of a sparse layer without the dense (out, in) product.
    """
    rows = np.repeat(np.arange(gt.shape[0]), np.diff(indptr))
    return np.einsum("kn,kn->k", gt[rows], xt[indices])


# A sum over examples keeps one order on every CPU: the products go into a scratch array,
# then its top half is folded onto its bottom half, element by element, until one value is
# left. Each fold is an elementwise add that the compiler may put in SIMD registers without
# reordering a single addition (fastmath would let it choose the order by the CPU's vector
# width), and which pairs are added depends on the length alone.
@njit(cache=True)
def _sum_by_halves(values, n):
    # sum of values[:n] (n >= 1) in the fixed order above; values is overwritten
    while n > 1:
        half = n // 2
        low = values[:half]
        high = values[n - half:n]
        for i in range(half):
            low[i] += high[i]
        n -= half
    return values[0]


@njit(cache=True)
def sparse_weight_grad_numba(gt, xt, indices, indptr):
    n_out, n = gt.shape
    grad = np.empty(len(indices), dtype=gt.dtype)
    products = np.zeros(max(n, 1), dtype=gt.dtype)  # in the data's dtype, as the product's
    for r in range(n_out):
        g = gt[r]
        for k in range(indptr[r], indptr[r + 1]):
            row = xt[indices[k]]
            for b in range(n):
                products[b] = g[b] * row[b]
            grad[k] = _sum_by_halves(products, n) if n else products[0]
    return grad


def csr_chain_numpy(x, columns, data, indices, row_starts, layer_rows, bias, relu):
    """A chain of CSR layers on example-major x (N, in) -> (N, out of the last layer).

    Layer l has rows layer_rows[l] .. layer_rows[l+1]-1 of the concatenated CSR arrays: row
    g's weights are data[row_starts[g]:row_starts[g+1]] in the columns indices[...], its bias
    bias[g], and relu[l] says whether a ReLU follows it. Layer 0's indices count among
    ``columns`` (the input units it reads); a later layer's count the rows of the layer before
    it. A compact MLP's forward (``nestref.run.compact``): u = h W^T + b, h <- max(u, 0) where
    relu[l].
    """
    h = x[:, columns]
    for layer in range(len(layer_rows) - 1):
        rows = slice(layer_rows[layer], layer_rows[layer + 1])
        first, last = row_starts[rows.start], row_starts[rows.stop]
        weight = csr_to_dense(data[first:last], indices[first:last],
                              row_starts[rows.start:rows.stop + 1] - first,
                              (rows.stop - rows.start, h.shape[1]))
        h = h @ weight.T + bias[rows]
        if relu[layer]:
            h = np.maximum(h, 0)
    return h


# examples per block of a CSR chain: their gathered inputs (in, 64) stay in L2 and each row's
# 64 sums in L1 (measured on LeNet-300-100's first layer: blocks of 32 and 128 were slower)
_CHAIN_BLOCK = 64


@njit(cache=True, nogil=True)
def _chain_row(h, data, indices, k0, k1, acc):
    # acc[b] += sum_k data[k] h[indices[k], b], four weights per pass over acc: a pass per
    # weight would be bound by loading and storing acc
    nb = acc.size
    k = k0
    while k + 4 <= k1:
        w0, w1, w2, w3 = data[k], data[k + 1], data[k + 2], data[k + 3]
        j0, j1, j2, j3 = indices[k], indices[k + 1], indices[k + 2], indices[k + 3]
        for b in range(nb):
            acc[b] += w0 * h[j0, b] + w1 * h[j1, b] + w2 * h[j2, b] + w3 * h[j3, b]
        k += 4
    while k < k1:
        w, j = data[k], indices[k]
        for b in range(nb):
            acc[b] += w * h[j, b]
        k += 1


@njit(cache=True, nogil=True)
def csr_chain_numba(x, columns, data, indices, row_starts, layer_rows, bias, relu):
    # a block of examples at a time through every layer: the block's used inputs are
    # gathered feature-major (in, nb), and each layer's output (out, nb) stays in cache as
    # the next one's input, so x is read once and nothing else goes to memory
    n, n_layers = x.shape[0], layer_rows.size - 1
    out = np.empty((n, layer_rows[n_layers] - layer_rows[n_layers - 1]), dtype=x.dtype)
    for blk in range((n + _CHAIN_BLOCK - 1) // _CHAIN_BLOCK):
        n0 = blk * _CHAIN_BLOCK
        nb = min(_CHAIN_BLOCK, n - n0)
        h = np.empty((columns.size, nb), dtype=x.dtype)
        for b in range(nb):
            for i in range(columns.size):
                h[i, b] = x[n0 + b, columns[i]]
        for layer in range(n_layers):
            u = np.empty((layer_rows[layer + 1] - layer_rows[layer], nb), dtype=x.dtype)
            for r in range(u.shape[0]):
                g = layer_rows[layer] + r
                acc = u[r]
                acc[:] = bias[g]
                _chain_row(h, data, indices, row_starts[g], row_starts[g + 1], acc)
                if relu[layer]:
                    for b in range(nb):
                        if acc[b] < 0:  # False for NaN: a NaN stays NaN, as in np.maximum
                            acc[b] = 0
            h = u
        for b in range(nb):
            for r in range(h.shape[0]):
                out[n0 + b, r] = h[r, b]
    return out


def same_support_numpy(mask, flat):
    """True iff ``mask`` is nonzero exactly at the flat indices ``flat`` (sorted, unique)."""
    return bool(np.array_equal(np.flatnonzero(mask), flat))


@njit(cache=True)
def _same_support_numba(mask, flat):
    # nonzero at every listed position, and no more nonzeros than listed: then exactly there
    for k in range(flat.size):
        if mask[flat[k]] == 0:
            return False
    count = 0
    for i in range(mask.size):
        count += 1 if mask[i] != 0 else 0
    return count == flat.size


def same_support_numba(mask, flat):
    return _same_support_numba(np.ascontiguousarray(mask).reshape(-1), flat)


def masked_weight_numpy(weight, mask):
    """(W*M, number of nonzeros of M): the effective weight and how dense it may be, any shape."""
    return weight * mask, int(np.count_nonzero(mask))


@njit(cache=True)
def _masked_weight_numba(weight, mask):
    # one pass over W and M: the dense path learns its density for free
    out = np.empty_like(weight)
    count = 0
    for i in range(weight.size):
        m = mask[i]
        out[i] = weight[i] * m
        count += 1 if m != 0 else 0
    return out, count


def masked_weight_numba(weight, mask):
    out, count = _masked_weight_numba(
        np.ascontiguousarray(weight).reshape(-1), np.ascontiguousarray(mask).reshape(-1)
    )
    return out.reshape(weight.shape), int(count)


def gather_effective_numpy(weight, mask, flat):
    """(W*M) at the flat positions ``flat``: weight, mask flat (size,) -> (len(flat),)."""
    return weight[flat] * mask[flat]


@njit(cache=True)
def gather_effective_numba(weight, mask, flat):
    out = np.empty(flat.size, dtype=weight.dtype)
    for k in range(flat.size):
        out[k] = weight[flat[k]] * mask[flat[k]]
    return out


def sgd_at_positions_numpy(weight, velocity, mask, flat, grad, lr, momentum, weight_decay):
    """SGD with momentum at the flat positions ``flat`` only, in place on flat weight and velocity.

    At each position p = flat[k]: v <- momentum v + (grad[k] M + weight_decay W); W <- W - lr v.
    """
    g = grad * mask[flat] + weight_decay * weight[flat]
    v = momentum * velocity[flat] + g
    velocity[flat] = v
    weight[flat] -= lr * v


@njit(cache=True)
def sgd_at_positions_numba(weight, velocity, mask, flat, grad, lr, momentum, weight_decay):
    for k in range(flat.size):
        p = flat[k]
        v = momentum * velocity[p] + (grad[k] * mask[p] + weight_decay * weight[p])
        velocity[p] = v
        weight[p] -= lr * v


def sgd_dense_numpy(weight, velocity, mask, grad, lr, momentum, weight_decay):
    """The dense masked SGD step, in place on flat weight and velocity (``nestref.core.optim.SGD``):

    v <- (momentum v + (grad M + weight_decay W)) M;  W <- (W - lr v) M.
    """
    grad_w = grad * mask
    if weight_decay:
        grad_w = grad_w + weight_decay * weight
    velocity *= momentum
    velocity += grad_w
    velocity *= mask
    weight -= lr * velocity
    weight *= mask


@njit(cache=True)
def sgd_dense_numba(weight, velocity, mask, grad, lr, momentum, weight_decay):
    # one pass instead of seven; the same operations in the same order, so the same bits
    for p in range(weight.size):
        m = mask[p]
        g = grad[p] * m
        if weight_decay:
            g = g + weight_decay * weight[p]
        v = (velocity[p] * momentum + g) * m
        velocity[p] = v
        weight[p] = (weight[p] - lr * v) * m


_TWINS["sparse_forward"] = (sparse_forward_numpy, sparse_forward_numba)
_TWINS["sparse_input_grad"] = (sparse_input_grad_numpy, sparse_input_grad_numba)
_TWINS["sparse_weight_grad"] = (sparse_weight_grad_numpy, sparse_weight_grad_numba)
_TWINS["csr_chain"] = (csr_chain_numpy, csr_chain_numba)
_TWINS["same_support"] = (same_support_numpy, same_support_numba)
_TWINS["gather_effective"] = (gather_effective_numpy, gather_effective_numba)
_TWINS["masked_weight"] = (masked_weight_numpy, masked_weight_numba)
_TWINS["sgd_at_positions"] = (sgd_at_positions_numpy, sgd_at_positions_numba)
_TWINS["sgd_dense"] = (sgd_dense_numpy, sgd_dense_numba)


def _csr_args(dtype, data, indices, indptr):
    return (np.ascontiguousarray(data, dtype=dtype), np.ascontiguousarray(indices, dtype=np.int64),
            np.ascontiguousarray(indptr, dtype=np.int64))


def sparse_forward(xt, data, indices, indptr, n_out):
    """W xt for W (out, in) as CSR and xt (in, N) -> (out, N), in the common dtype; see
    ``sparse_forward_numpy``."""
    dtype = np.result_type(xt, data)
    return _pick("sparse_forward")(
        np.ascontiguousarray(xt, dtype=dtype), *_csr_args(dtype, data, indices, indptr), int(n_out)
    )


def sparse_input_grad(gt, data, indices, indptr, n_in):
    """W^T gt for W (out, in) as CSR and gt (out, N) -> (in, N); see ``sparse_input_grad_numpy``."""
    dtype = np.result_type(gt, data)
    return _pick("sparse_input_grad")(np.ascontiguousarray(gt, dtype=dtype),
                                      *_csr_args(dtype, data, indices, indptr), int(n_in))


def sparse_weight_grad(gt, xt, indices, indptr):
    """gt (out, N), xt (in, N) -> (gt xt^T) at W's stored positions (nnz,); see
    ``sparse_weight_grad_numpy``."""
    dtype = np.result_type(gt, xt)
    return _pick("sparse_weight_grad")(
        np.ascontiguousarray(gt, dtype=dtype),
        np.ascontiguousarray(xt, dtype=dtype),
        np.ascontiguousarray(indices, dtype=np.int64),
        np.ascontiguousarray(indptr, dtype=np.int64),
    )


def csr_chain(x, layers, columns=None):
    """x (N, in) through CSR layers -> (N, out of the last layer); see ``csr_chain_numpy``.

    layers: a list of (data, indices, indptr, bias, relu), one per layer, W (out, in) as CSR
    and relu whether a ReLU follows. columns: the input units the first layer reads,
    ascending, its indices counting among them; None: every unit of x. Computes in the common
    dtype of x and the weights, as ``x @ W.T`` would. A NaN input reaches the outputs whose
    stored weights read it (the NumPy twin's dense product spreads it to every output).

    The examples are split over ``numba.get_num_threads()`` threads (as set in the calling
    thread: ``numba.set_num_threads`` or NUMBA_NUM_THREADS).
    """
    if not layers:
        raise ValueError("csr_chain needs at least one layer, got none")
    x, *rest = csr_chain_arrays(x, layers, columns)
    kernel, threads = _pick("csr_chain"), get_num_threads()
    if kernel is csr_chain_numpy or threads < 2 or len(x) < 2 * threads * _CHAIN_BLOCK:
        return kernel(x, *rest)
    # the Numba twin releases the GIL: each thread takes a contiguous share of the examples.
    # Python threads sleep on a lock when idle, where Numba's OpenMP threads would spin and
    # slow the BLAS calls around them (measured: dense predict 71 ms instead of 44)
    bounds = np.linspace(0, len(x), threads + 1).astype(int)
    parts = _pool(threads).map(lambda lo, hi: kernel(x[lo:hi], *rest), bounds[:-1], bounds[1:])
    return np.concatenate(list(parts))


_POOLS, _POOLS_LOCK = {}, threading.Lock()


def _pool(threads):
    """One lasting pool per process and thread count: starting threads at every call would cost
    more than a small batch's product, and a forked child has none of its parent's threads."""
    key = (os.getpid(), threads)
    with _POOLS_LOCK:  # two first calls at once must not make two pools
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="nestref-csr")
        return _POOLS[key]


def csr_chain_arrays(x, layers, columns=None):
    """The arguments of ``csr_chain_numpy`` / ``csr_chain_numba`` from ``csr_chain``'s: every
    layer's CSR arrays concatenated, in one dtype (x's and the weights' common one)."""
    dtype = np.result_type(x, *(layer[0] for layer in layers))
    x = np.ascontiguousarray(x, dtype=dtype)
    columns = np.arange(x.shape[1]) if columns is None else columns
    offsets = np.cumsum([0] + [len(layer[0]) for layer in layers])
    row_starts = np.concatenate([np.asarray(layer[2][:-1], np.int64) + offset
                                 for layer, offset in zip(layers, offsets, strict=False)]
                                + [offsets[-1:]]).astype(np.int64)
    return (x, np.ascontiguousarray(columns, dtype=np.int64),
            np.concatenate([np.asarray(layer[0], dtype) for layer in layers]),
            np.concatenate([np.asarray(layer[1], np.int64) for layer in layers]),
            row_starts, np.cumsum([0] + [len(layer[3]) for layer in layers]).astype(np.int64),
            np.concatenate([np.asarray(layer[3], dtype) for layer in layers]),
            np.array([bool(layer[4]) for layer in layers]))


def masked_weight(weight, mask):
    """(W*M, count of nonzeros in M) for weight and mask of one shape and dtype; see
    ``masked_weight_numpy``."""
    if weight.dtype != mask.dtype or weight.shape != mask.shape:
        return masked_weight_numpy(weight, mask)
    return _pick("masked_weight")(weight, mask)


def gather_effective(weight, mask, flat):
    """(W*M).flat[flat] for C-contiguous weight and mask; see ``gather_effective_numpy``."""
    return _pick("gather_effective")(weight.reshape(-1), mask.reshape(-1), flat)


def sgd_at_positions(weight, velocity, mask, flat, grad, lr, momentum, weight_decay):
    """In place on C-contiguous weight and velocity (any shape); see ``sgd_at_positions_numpy``."""
    dtype = weight.dtype
    _pick("sgd_at_positions")(
        weight.reshape(-1),
        velocity.reshape(-1),
        mask.reshape(-1),
        flat,
        np.ascontiguousarray(grad, dtype=dtype),
        dtype.type(lr),
        dtype.type(momentum),
        dtype.type(weight_decay),
    )


def sgd_dense(weight, velocity, mask, grad, lr, momentum, weight_decay):
    """In place on C-contiguous weight and velocity (any shape); see ``sgd_dense_numpy``."""
    dtype = weight.dtype
    _pick("sgd_dense")(
        weight.reshape(-1),
        velocity.reshape(-1),
        np.ascontiguousarray(mask, dtype=dtype).reshape(-1),
        np.ascontiguousarray(grad, dtype=dtype).reshape(-1),
        dtype.type(lr),
        dtype.type(momentum),
        dtype.type(weight_decay),
    )


def same_support(mask, flat):
    """Is ``mask`` nonzero exactly at the sorted flat indices ``flat``? See
    ``same_support_numpy``."""
    return _pick("same_support")(mask, flat)


# ------------------------------------------------------- sparse convolution
# A conv layer whose W*M is mostly zero computes with its active weights only, directly on
# the (padded) input: no im2col matrix. W*M (O, C, kh, kw) is stored as CSR over
# (O, C*kh*kw), the layout of a Dense layer's Support: row o's nonzeros are
# data[indptr[o]:indptr[o+1]], column c*kh*kw + a*kw + b for input map c and tap (a, b).
# ``area`` (O, C, Ho, Wo) is the partial-area mask (NeST): input map c reaches output
# position (i, j) of map o only where area[o, c, i, j] = 1; None: everywhere.
# Arrays are *batch-last*, xt (C, H, W, N), ut (O, Ho, Wo, N), like the CSR kernels'
# feature-major ones: every (weight, output position) pair is then one axpy (or dot) over
# N contiguous examples, which vectorises. Each active weight costs N*Ho*Wo multiply-adds
# per product, against the dense path's C*kh*kw*O*N*Ho*Wo in all: the saving is the density.
def to_batch_last_numpy(a):
    """(N, ...) -> (..., N), C-contiguous."""
    return np.ascontiguousarray(np.moveaxis(a, 0, -1))


def from_batch_last_numpy(at):
    """(..., N) -> (N, ...), C-contiguous."""
    return np.ascontiguousarray(np.moveaxis(at, -1, 0))


@njit(cache=True)
def _transpose_numba(a):
    """(R, S) -> (S, R) C-contiguous; eight rows at a time, so that each output row is written
    in runs of eight (numpy's strided copy is 2-5x slower at these shapes)."""
    rows, cols = a.shape
    out = np.empty((cols, rows), dtype=a.dtype)
    blocked = rows - rows % 8
    for r0 in range(0, blocked, 8):
        for c in range(cols):
            for r in range(r0, r0 + 8):
                out[c, r] = a[r, c]
    for r in range(blocked, rows):
        for c in range(cols):
            out[c, r] = a[r, c]
    return out


def to_batch_last_numba(a):
    a = np.ascontiguousarray(a)
    return _transpose_numba(a.reshape(len(a), -1)).reshape(*a.shape[1:], len(a))


def from_batch_last_numba(at):
    at = np.ascontiguousarray(at)
    return _transpose_numba(at.reshape(-1, at.shape[-1])).reshape(at.shape[-1], *at.shape[:-1])


def _tap(index, kh, kw):
    """CSR column -> (input map c, tap row a, tap column b)."""
    c, tap = divmod(int(index), kh * kw)
    return (c, *divmod(tap, kw))


def _window(xt, c, a, b, stride, ho, wo):
    """xt[c] at the (Ho, Wo) positions tap (a, b) reads: (Ho, Wo, N)."""
    return xt[c, a:a + stride * (ho - 1) + 1:stride, b:b + stride * (wo - 1) + 1:stride]


def _gate(area, has_area, o, c):
    return area[o, c][:, :, None] if has_area else 1


def sparse_conv_forward_numpy(xt, data, indices, indptr, area, has_area, kh, kw, stride, ho, wo):
    r"""u[o, i, j, n] = \sum_{(c, a, b) active in o} W[o, c, a, b] A[o, c, i, j]
    x[c, i s + a, j s + b, n]: xt (C, H, W, N) padded already -> ut (O, Ho, Wo, N), no bias."""
    ut = np.zeros((len(indptr) - 1, ho, wo, xt.shape[-1]), dtype=xt.dtype)
    for o in range(len(indptr) - 1):
        for e in range(indptr[o], indptr[o + 1]):
            c, a, b = _tap(indices[e], kh, kw)
            ut[o] += data[e] * _gate(area, has_area, o, c) * _window(xt, c, a, b, stride, ho, wo)
    return ut


def sparse_conv_input_grad_numpy(gt, data, indices, indptr, area, has_area, x_chw, kh, kw,
                                 stride):
    r"""dL/dx[c, i s + a, j s + b, n] += W[o, c, a, b] A[o, c, i, j] g[o, i, j, n]:
    gt (O, Ho, Wo, N) -> dL/dxt (C, H, W, N) of the padded input (x_chw = (C, H, W))."""
    _, ho, wo, n = gt.shape
    dxt = np.zeros((*x_chw, n), dtype=gt.dtype)
    for o in range(len(indptr) - 1):
        for e in range(indptr[o], indptr[o + 1]):
            c, a, b = _tap(indices[e], kh, kw)
            _window(dxt, c, a, b, stride, ho, wo)[...] += (
                data[e] * _gate(area, has_area, o, c) * gt[o])
    return dxt


def sparse_conv_weight_grad_numpy(gt, xt, indices, indptr, area, has_area, kh, kw, stride):
    r"""dL/dW[o, c, a, b] = \sum_{i, j, n} g[o, i, j, n] A[o, c, i, j] x[c, i s + a, j s + b, n]
    at the stored positions only: -> (nnz,)."""
    _, ho, wo, _ = gt.shape
    values = np.zeros(len(indices), dtype=np.float64)
    for o in range(len(indptr) - 1):
        for e in range(indptr[o], indptr[o + 1]):
            c, a, b = _tap(indices[e], kh, kw)
            gated = gt[o] * _gate(area, has_area, o, c)
            values[e] = np.sum(gated * _window(xt, c, a, b, stride, ho, wo), dtype=np.float64)
    return values.astype(gt.dtype)


# The Numba twins index the batch-last arrays as rows, xt (C*H*W, N), ut (O*Ho*Wo, N), and
# skip a position whose area bit is 0 outright.
@njit(cache=True)
def _sparse_conv_forward_rows(xt, x_hw, data, indices, indptr, area, has_area, kh, kw, stride,
                              ho, wo):
    (h, w), n_out, n_img = x_hw, indptr.shape[0] - 1, xt.shape[1]
    ut = np.zeros((n_out * ho * wo, n_img), dtype=xt.dtype)
    for o in range(n_out):
        for e in range(indptr[o], indptr[o + 1]):
            c, a, b = indices[e] // (kh * kw), (indices[e] % (kh * kw)) // kw, indices[e] % kw
            for i in range(ho):
                for j in range(wo):
                    v = data[e] * area[o, c, i, j] if has_area else data[e]
                    if v != 0:
                        src = (c * h + i * stride + a) * w + j * stride + b
                        dst = (o * ho + i) * wo + j
                        for n in range(n_img):
                            ut[dst, n] += v * xt[src, n]
    return ut


@njit(cache=True)
def _sparse_conv_input_grad_rows(gt, x_chw, data, indices, indptr, area, has_area, kh, kw,
                                 stride, ho, wo):
    (c_in, h, w), n_img = x_chw, gt.shape[1]
    dxt = np.zeros((c_in * h * w, n_img), dtype=gt.dtype)
    for o in range(indptr.shape[0] - 1):
        for e in range(indptr[o], indptr[o + 1]):
            c, a, b = indices[e] // (kh * kw), (indices[e] % (kh * kw)) // kw, indices[e] % kw
            for i in range(ho):
                for j in range(wo):
                    v = data[e] * area[o, c, i, j] if has_area else data[e]
                    if v != 0:
                        src = (o * ho + i) * wo + j
                        dst = (c * h + i * stride + a) * w + j * stride + b
                        for n in range(n_img):
                            dxt[dst, n] += v * gt[src, n]
    return dxt


@njit(cache=True)
def _sparse_conv_weight_grad_rows(gt, xt, x_hw, indices, indptr, area, has_area, kh, kw,
                                  stride, ho, wo):
    # per weight, one float64 sum per example over the positions (SIMD across the examples,
    # each lane adding its positions in order), then the examples' sums added in order
    (h, w), n_img = x_hw, gt.shape[1]
    values = np.zeros(indices.shape[0], dtype=np.float64)
    per_example = np.empty(n_img, dtype=np.float64)
    for o in range(indptr.shape[0] - 1):
        for e in range(indptr[o], indptr[o + 1]):
            c, a, b = indices[e] // (kh * kw), (indices[e] % (kh * kw)) // kw, indices[e] % kw
            per_example[:] = 0.0
            for i in range(ho):
                for j in range(wo):
                    gate = area[o, c, i, j] if has_area else 1.0
                    if gate != 0:
                        src = (c * h + i * stride + a) * w + j * stride + b
                        row = (o * ho + i) * wo + j
                        for n in range(n_img):
                            per_example[n] += gate * (gt[row, n] * xt[src, n])
            total = 0.0
            for n in range(n_img):
                total += per_example[n]
            values[e] = total
    return values.astype(gt.dtype)


def sparse_conv_forward_numba(xt, data, indices, indptr, area, has_area, kh, kw, stride, ho, wo):
    c, h, w, n = xt.shape
    ut = _sparse_conv_forward_rows(xt.reshape(c * h * w, n), (h, w), data, indices, indptr, area,
                                   has_area, kh, kw, stride, ho, wo)
    return ut.reshape(len(indptr) - 1, ho, wo, n)


def sparse_conv_input_grad_numba(gt, data, indices, indptr, area, has_area, x_chw, kh, kw,
                                 stride):
    o, ho, wo, n = gt.shape
    dxt = _sparse_conv_input_grad_rows(gt.reshape(o * ho * wo, n), x_chw, data, indices, indptr,
                                       area, has_area, kh, kw, stride, ho, wo)
    return dxt.reshape(*x_chw, n)


def sparse_conv_weight_grad_numba(gt, xt, indices, indptr, area, has_area, kh, kw, stride):
    (o, ho, wo, n), (c, h, w, _) = gt.shape, xt.shape
    return _sparse_conv_weight_grad_rows(gt.reshape(o * ho * wo, n), xt.reshape(c * h * w, n),
                                         (h, w), indices, indptr, area, has_area, kh, kw, stride,
                                         ho, wo)


_TWINS["to_batch_last"] = (to_batch_last_numpy, to_batch_last_numba)
_TWINS["from_batch_last"] = (from_batch_last_numpy, from_batch_last_numba)
_TWINS["sparse_conv_forward"] = (sparse_conv_forward_numpy, sparse_conv_forward_numba)
_TWINS["sparse_conv_input_grad"] = (sparse_conv_input_grad_numpy, sparse_conv_input_grad_numba)
_TWINS["sparse_conv_weight_grad"] = (sparse_conv_weight_grad_numpy,
                                     sparse_conv_weight_grad_numba)


def to_batch_last(a):
    """(N, ...) -> (..., N), C-contiguous: the layout of the sparse conv kernels."""
    return _pick("to_batch_last")(a)


def from_batch_last(at):
    """(..., N) -> (N, ...), C-contiguous."""
    return _pick("from_batch_last")(at)


def _area_args(area, dtype):
    """(area, has_area) as the kernels take them: a dummy (1, 1, 1, 1) array when None."""
    if area is None:
        return np.ones((1, 1, 1, 1), dtype=dtype), False
    return np.ascontiguousarray(area, dtype=dtype), True


def sparse_conv_forward(xt, data, indices, indptr, area, kh, kw, stride, ho, wo):
    """xt (C, H, W, N) padded, W*M as CSR over (O, C*kh*kw), area (O, C, Ho, Wo) or None ->
    ut (O, Ho, Wo, N) without bias; see ``sparse_conv_forward_numpy``."""
    dtype = np.result_type(xt, data)
    return _pick("sparse_conv_forward")(
        np.ascontiguousarray(xt, dtype=dtype), *_csr_args(dtype, data, indices, indptr),
        *_area_args(area, dtype), int(kh), int(kw), int(stride), int(ho), int(wo))


def sparse_conv_input_grad(gt, data, indices, indptr, area, x_chw, kh, kw, stride):
    """gt (O, Ho, Wo, N) -> dL/dxt (C, H, W, N) of the padded input, x_chw = (C, H, W); see
    ``sparse_conv_input_grad_numpy``."""
    dtype = np.result_type(gt, data)
    return _pick("sparse_conv_input_grad")(
        np.ascontiguousarray(gt, dtype=dtype), *_csr_args(dtype, data, indices, indptr),
        *_area_args(area, dtype), tuple(int(s) for s in x_chw), int(kh), int(kw), int(stride))


def sparse_conv_weight_grad(gt, xt, indices, indptr, area, kh, kw, stride):
    """gt (O, Ho, Wo, N), xt (C, H, W, N) padded -> dL/dW at the stored positions (nnz,); see
    ``sparse_conv_weight_grad_numpy``."""
    dtype = np.result_type(gt, xt)
    return _pick("sparse_conv_weight_grad")(
        np.ascontiguousarray(gt, dtype=dtype), np.ascontiguousarray(xt, dtype=dtype),
        np.ascontiguousarray(indices, dtype=np.int64), np.ascontiguousarray(indptr, dtype=np.int64),
        *_area_args(area, dtype), int(kh), int(kw), int(stride))


# ------------------------------------------------------------- affine warp
def affine_warp_numpy(images, matrices):
    """Resample each image through its own affine map, bilinear, zeros outside.

    images: (N, H, W) float; matrices: (N, 2, 3) mapping *output* pixel (y, x, 1) to
    the input position it reads from. Returns (N, H, W).
    """
    n, h, w = images.shape
    ys, xs = np.meshgrid(
        np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
    )
    grid = np.stack([ys.ravel(), xs.ravel(), np.ones(h * w)])              # (3, H*W)
    src = matrices.astype(np.float64) @ grid                                 # (N, 2, H*W)
    y0, x0 = np.floor(src[:, 0]).astype(np.int64), np.floor(src[:, 1]).astype(np.int64)
    fy, fx = src[:, 0] - y0, src[:, 1] - x0
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))  # reads outside land on zeros
    rows = np.arange(n)[:, None]

    def at(yy, xx):
        inside = (yy >= -1) & (yy <= h) & (xx >= -1) & (xx <= w)
        return np.where(
            inside, padded[rows, np.clip(yy + 1, 0, h + 1), np.clip(xx + 1, 0, w + 1)], 0.0
        )

    out = ((1 - fy) * (1 - fx) * at(y0, x0) + (1 - fy) * fx * at(y0, x0 + 1)
           + fy * (1 - fx) * at(y0 + 1, x0) + fy * fx * at(y0 + 1, x0 + 1))
    return out.reshape(n, h, w).astype(images.dtype)


@njit(cache=True)
def affine_warp_numba(images, matrices):
    # Row by row in three loops: the source positions, their floors and the flat index of the
    # top-left tap (-1: all four taps outside), then the taps. A zero border around the image
    # makes a tap just outside a plain read of 0.0: it adds +0.0 (its weight is >= 0), which
    # leaves the sum as it is (the sum starts at +0.0, so it is never -0.0). The numbers are
    # those of tap-by-tap bounds checks, bit for bit, and the loops have no branch per tap
    n, h, w = images.shape
    out = np.zeros_like(images)
    pad = np.zeros((h + 2, w + 2), dtype=images.dtype)
    flat, stride = pad.reshape(-1), w + 2
    sy, sx, fy, fx = np.empty(w), np.empty(w), np.empty(w), np.empty(w)
    top_left = np.empty(w, dtype=np.int64)
    for b in range(n):
        pad[1:h + 1, 1:w + 1] = images[b]
        m00, m01, m02 = matrices[b, 0, 0], matrices[b, 0, 1], matrices[b, 0, 2]
        m10, m11, m12 = matrices[b, 1, 0], matrices[b, 1, 1], matrices[b, 1, 2]
        for y in range(h):
            for x in range(w):
                sy[x] = m00 * y + m01 * x + m02
                sx[x] = m10 * y + m11 * x + m12
            for x in range(w):
                y0, x0 = np.floor(sy[x]), np.floor(sx[x])
                fy[x], fx[x] = sy[x] - y0, sx[x] - x0
                inside = (y0 >= -1.0) & (y0 <= h - 1) & (x0 >= -1.0) & (x0 <= w - 1)
                row = np.int32(min(max(y0, -1.0), h - 1.0)) + 1  # clamped: no int overflow
                col = np.int32(min(max(x0, -1.0), w - 1.0)) + 1
                top_left[x] = row * stride + col if inside else -1
            for x in range(w):
                p = top_left[x]
                if p < 0:
                    continue
                gy, gx = 1.0 - fy[x], 1.0 - fx[x]
                acc = 0.0
                acc += gy * gx * flat[p]
                acc += gy * fx[x] * flat[p + 1]
                acc += fy[x] * gx * flat[p + stride]
                acc += fy[x] * fx[x] * flat[p + stride + 1]
                out[b, y, x] = acc
    return out


_TWINS["affine_warp"] = (affine_warp_numpy, affine_warp_numba)


def affine_warp(images, matrices):
    """(N, H, W), (N, 2, 3) -> (N, H, W); see ``affine_warp_numpy``."""
    return _pick("affine_warp")(
        np.ascontiguousarray(images), np.ascontiguousarray(matrices, dtype=np.float64)
    )
