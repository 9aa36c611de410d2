"""Layers with hand-written forward and backward passes.

Every layer has ``forward(x)`` and ``backward(grad_out) -> grad_in``; ``backward``
uses what the last ``forward`` cached, so call them in pairs.

The two *masked* layers, ``Dense`` and ``Conv2d``, are where NeST lives. Each holds

    weight   the weight tensor W
    mask     a 0/1 array of W's shape: 1 = active connection, 0 = dormant
    bias     one per output unit
    grown    bool per output unit: False for units of the seed, True for grown ones
             (provenance **[ours]**, docs/nest.md#ours-provenance: how many grown
             neurons survive pruning)

and computes with the *effective* weight ``W * M``. Invariant: W is 0 wherever M is
0, after every operation.

After ``backward`` a masked layer holds ``grad_weight``, the gradient of the loss
with respect to the effective weight W*M at *every* position, dormant ones included.
A dormant connection has no weight, but the loss still has a slope along it: that
slope is NeST's growth gradient. The optimizer masks it before it updates W.

Sparse path: a ``Dense`` layer whose density is below ``SPARSE_BELOW`` (a ``Conv2d``:
``CONV_SPARSE_BELOW``) computes its forward pass, input gradient and weight gradient with
sparse kernels (``nestref.core.kernels.sparse_*``) over its active connections only, by
itself. The CSR positions (a ``Support``) are rebuilt whenever the mask differs from the one
they were built from: every use compares the two first, so a stale structure cannot be used,
whoever edited the mask and however. After a sparse backward ``grad_weight`` (every
position) is computed when first read, or at once with ``dense_weight_grad=True``,
which is how growth asks for it; the optimizer takes the active positions' gradient
from ``active_weight_gradient()`` without the dense product.

Every layer's backward has one signature, ``backward(grad_out, input_grad=True,
dense_weight_grad=False)``: ``input_grad=False`` says nobody needs dL/dx (the first
layer's is a whole product), ``dense_weight_grad`` asks masked layers for the weight
gradient at every position.
"""
import numpy as np

from ..checks import is_int
from ..errors import InvalidArgumentError
from . import kernels

# Density below which a Dense layer trains with the CSR kernels: where the sparse training
# step (forward + input gradient + weight gradient + SGD) of LeNet-300-100 stops being
# faster than the dense (BLAS) one. Measured on this project's 2-core machine, idle
# (load average 1.3 -> 1.4), 2026-12-01, with BLAS on both cores as training runs it:
#     python -m benchmarks.sparse_step
#     density  sparse ms  dense ms  dense/sparse
#       0.02     0.668     1.253      1.87x
#       0.05     0.784     1.072      1.37x
#       0.10     1.176     1.163      0.99x
#       0.15     1.580     1.475      0.93x
#       0.20     1.813     1.474      0.81x
#     crossover (sparse stops paying): 0.098
# (with --threads 1, as in a study with --jobs 2, the crossover was 0.129)
SPARSE_BELOW = 0.1
# The same for a Conv2d layer (its active weights straight on the input, against im2col and
# BLAS), from the LeNet-5 training step with only the conv layers switched (same machine,
# idle, 2 BLAS threads, 2026-12-01, the kernels of commit 1ea3adb); with a partial-area mask
# the dense path is one product per output position, far slower, so the sparse one pays up
# to a higher density:
#     python -m benchmarks.sparse_step --arch lenet5 --layers conv --densities 0.1 0.15 0.2 0.25 0.3
#     density          0.10   0.15   0.20   0.25   0.30   crossover
#     no area mask     1.50x  1.14x  0.98x  0.90x  0.74x  0.194   (0.197 on commit 16597c1)
#     ... --area --densities 0.35 0.4 0.45 0.5 0.55
#     density          0.35   0.40   0.45   0.50   0.55   crossover
#     area mask        1.05x  1.23x  0.88x  0.83x  0.78x  0.433   (0.463 on commit 16597c1)
# Each threshold is at or below the crossovers of both runs. (A first version of the kernels,
# with slower layout changes, put them at 0.128 and 0.43; with --threads 1, as in a study with
# --jobs 2, at 0.27 and 0.44: one thread per run favours the sparse path.)
CONV_SPARSE_BELOW = 0.19
CONV_AREA_SPARSE_BELOW = 0.43


class Layer:
    """A step of the network. Parameter-free layers need only forward/backward."""

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out, input_grad=True, dense_weight_grad=False):
        """dL/d(output) -> dL/d(input), or None with ``input_grad=False``.

        ``dense_weight_grad``: masked layers leave the weight gradient at every position
        (dormant ones too) in ``grad_weight`` at once; other layers ignore it.
        """
        raise NotImplementedError

    def output_shape(self, input_shape):
        """Shape of one example's output, given one example's input shape."""
        raise NotImplementedError

    def config(self):
        """Plain dict that, with the weights, rebuilds this layer (see ``layer_from_config``)."""
        return {"type": type(self).__name__}

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class MaskedLayer(Layer):
    """Shared bookkeeping of ``Dense`` and ``Conv2d``.

    ``output_unit_arrays`` / ``input_unit_arrays`` name every array that has one
    slice per output / input unit, and along which axis: growing or removing a
    neuron (``nestref.core.network.add_units``/``keep_units``) edits exactly these.
    """

    output_unit_arrays = {"weight": 0, "mask": 0, "bias": 0, "grown": 0}
    input_unit_arrays = {"weight": 1, "mask": 1}

    def effective_weight(self):
        """W * M: the weight the layer computes with."""
        return self.weight * self.mask

    # ------------------------------------------------------- weight gradient
    # _grad_weight: dL/d(W*M) at every position, or None; _grad_sources: what computes it
    # when first read after a sparse backward; _active_grad: (Support, values at its positions)
    @property
    def grad_weight(self):
        """dL/d(W*M) at every position, dormant ones included (shaped like ``weight``), or None."""
        if self._grad_weight is None and self._grad_sources is not None:
            self._grad_weight = self._dense_weight_gradient(*self._grad_sources)
        return self._grad_weight

    @grad_weight.setter
    def grad_weight(self, value):
        self._grad_weight, self._grad_sources, self._active_grad = value, None, None

    def active_weight_gradient(self):
        """(Support, dL/dW at its positions) from the last sparse backward, or None.

        None after a dense backward, or when the mask has changed since the backward:
        then only ``grad_weight`` is valid.
        """
        if self._active_grad is None or not self._active_grad[0].matches(self.mask):
            return None
        return self._active_grad

    # ------------------------------------------------------- which kernels
    def uses_sparse_kernels(self):
        """Does the current mask make this layer compute with its sparse kernels?"""
        return self._path()[0] is not None

    def _path(self):
        """(Support, None) for the sparse path, or (None, W*M) for the dense one, from the mask as
        it is now.

        A Support is kept only while it matches the mask (checked here, at every use); the
        dense path counts the mask's nonzeros while it forms W*M, at no extra pass.
        """
        below, cached = self._sparse_limit(), getattr(self, "_support", None)
        if cached is not None and cached.density < below and cached.matches(self.mask):
            return cached, None
        effective, nnz = kernels.masked_weight(self.weight, self.mask)
        if nnz >= below * self.mask.size:
            self._support = None
            return None, effective
        self._support = Support(self.mask)
        return self._support, None

    def _sparse_limit(self):
        return self.sparse_below

    @property
    def n_out(self):
        return self.weight.shape[0]

    @property
    def n_in(self):
        return self.weight.shape[1]

    def density(self):
        """Fraction of connections that are active."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def _init_params(self, shape, fan_in, density, rng, dtype):
        """Random sparse init: a ``density`` fraction of connections active.

        He-normal scaled by the *active* fan-in (``density * fan_in``) **[ours]**
        (docs/nest.md#ours-seed-init), so that a 10%-dense seed starts with the same
        activation scale as a dense net.
        """
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        rng = np.random.default_rng(rng)
        self.mask = (
            (rng.random(shape) < density).astype(dtype) if density < 1.0 else np.ones(shape, dtype)
        )
        std = np.sqrt(2.0 / max(1.0, density * fan_in))
        self.weight = (rng.standard_normal(shape) * std).astype(dtype) * self.mask
        self.bias = np.zeros(shape[0], dtype)
        self.grown = np.zeros(shape[0], dtype=bool)
        self.grad_weight = None
        self.grad_bias = None


class Dense(MaskedLayer):
    r"""Fully connected layer with a connection mask.

    weight, mask: (out, in); bias: (out,)
    forward:  x (N, in) -> u (N, out),  $u = x (W \odot M)^\top + b$
    backward: $\delta = \partial L/\partial u$ (N, out) -> $\delta (W \odot M)$ (N, in);
              grad_weight $= \delta^\top x$ (out, in), dense: dormant positions too

    Below ``sparse_below`` density (``SPARSE_BELOW`` unless set on the layer) the three
    products run over the active connections only (CSR kernels); the numbers are the
    same up to float rounding.
    """

    sparse_below = SPARSE_BELOW

    def __init__(self, n_in, n_out, density=1.0, rng=None, dtype=np.float32):
        if not (is_int(n_in) and is_int(n_out)) or n_in < 1 or n_out < 1:
            raise InvalidArgumentError(f"Dense needs integers n_in, n_out >= 1, got {n_in!r}, "
                                       f"{n_out!r}")
        self._init_params((n_out, n_in), n_in, density, rng, dtype)

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(
                f"Dense({self.n_in}->{self.n_out}) expects x of shape (N, {self.n_in}), "
                f"got {x.shape}"
            )
        self._x, self._xt = x, None
        support, effective = self._path()
        if support is None:
            return x @ effective.T + self.bias
        # feature-major (see nestref.core.kernels): free when x is the transposed view a sparse
        # layer returned
        self._xt = np.ascontiguousarray(x.T)
        out_t = kernels.sparse_forward(
            self._xt, support.values(self), support.indices, support.indptr, self.n_out
        )
        out_t += self.bias[:, None]
        return out_t.T

    def backward(self, grad_out, input_grad=True, dense_weight_grad=False):
        x = self._x
        self.grad_bias = grad_out.sum(axis=0)
        support, effective = self._path()
        if support is None:
            self.grad_weight = self._dense_weight_gradient(grad_out, x)
            return grad_out @ effective if input_grad else None
        grad_t = np.ascontiguousarray(grad_out.T)
        if self._xt is None:  # the forward ran the dense path (the mask changed in between)
            self._xt = np.ascontiguousarray(x.T)
        values = kernels.sparse_weight_grad(grad_t, self._xt, support.indices, support.indptr)
        self._grad_weight = self._dense_weight_gradient(grad_out, x) if dense_weight_grad else None
        self._grad_sources, self._active_grad = (
            (grad_out, x),
            (support, values.astype(self.weight.dtype)),
        )
        if not input_grad:
            return None
        return kernels.sparse_input_grad(
            grad_t, support.values(self), support.indices, support.indptr, self.n_in
        ).T

    @staticmethod
    def _dense_weight_gradient(grad_out, x):
        return grad_out.T @ x

    def output_shape(self, input_shape):
        return (self.n_out,)

    def config(self):
        return {"type": "Dense", "n_in": self.n_in, "n_out": self.n_out}


class Support:
    """Where a 2-D mask is nonzero, in CSR order, and the mask it was built from.

    flat: (nnz,) flat indices into the (out, in) weight, row-major (= CSR order);
    indices: (nnz,) columns; indptr: (out + 1,) row starts; density: nnz / size.
    ``matches(mask)`` compares the mask with the one the support was built from: layers
    call it before every use, so a support never outlives its mask.
    """

    def __init__(self, mask):
        self.shape = mask.shape
        self.flat = np.flatnonzero(mask)  # a new array: later edits of the mask do not reach it
        n_rows = mask.shape[0]
        n_cols = int(np.prod(mask.shape[1:]))
        rows, self.indices = np.divmod(self.flat, max(n_cols, 1))
        self.indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=self.indptr[1:])
        self.density = len(self.flat) / mask.size if mask.size else 0.0

    def matches(self, mask):
        """Is ``mask`` nonzero exactly where the mask this support was built from was?"""
        return mask.shape == self.shape and kernels.same_support(mask, self.flat)

    def values(self, layer):
        """(W*M) at the support's positions: the CSR data of the effective weight."""
        return kernels.gather_effective(
            np.ascontiguousarray(layer.weight), np.ascontiguousarray(layer.mask), self.flat
        )


class Conv2d(MaskedLayer):
    """2-D convolution (cross-correlation, as in every DL framework) with a mask.

    weight, mask: (out_c, in_c, kh, kw); bias: (out_c,)
    forward:  x (N, in_c, H, W) -> u (N, out_c, Ho, Wo)
    backward: dL/du (N, out_c, Ho, Wo) -> dL/dx (N, in_c, H, W) (None if
              input_grad=False); grad_weight is dL/d(W*M) at every kernel
              position (dormant ones too).

    Computed as one matrix product on unfolded patches (im2col):
        cols = im2col(x)                  (N*Ho*Wo, in_c*kh*kw)
        u    = cols @ (W*M).reshape(out_c, -1).T + b

    Partial-area convolution (NeST): ``area_mask`` is None (every kernel sees the
    whole output area, the default) or a 0/1 array of shape (out_c, in_c, Ho, Wo):
    output position p of map o receives input map i's contribution only where
    ``area_mask[o, i, p] == 1``. Then the one product splits into one per input map,
        u[n, p, o] = b[o] + sum_i area_mask[o, i, p] * (cols_i @ K_i^T)[n, p, o]
    with cols_i the im2col columns of map i and K_i = (W*M)[:, i] flattened, and
    grad_weight is the gradient w.r.t. the effective kernel given the area mask.
    With ``area_mask`` None the single-product path above runs, untouched.

    Below ``sparse_below`` density (``CONV_SPARSE_BELOW`` unless set on the layer; with an
    area mask ``area_sparse_below``, ``CONV_AREA_SPARSE_BELOW``) the layer computes with
    its active weights only, on the input itself (no im2col):
        u[n, o, i, j] = b[o] + sum_{(c, a, b) active} (W*M)[o, c, a, b] area_mask[o, c, i, j]
                               x[n, c, i*s + a, j*s + b]
    and hands the optimizer the weight gradient at the active positions, like ``Dense``;
    ``grad_weight`` (every position) is computed when read. Same numbers up to float rounding.
    """

    # area_mask has one slice per output map (axis 0) and per input map (axis 1), so
    # unit surgery (nestref.core.network.keep_units / add_units) edits it with the weights
    output_unit_arrays = {**MaskedLayer.output_unit_arrays, "area_mask": 0}
    input_unit_arrays = {**MaskedLayer.input_unit_arrays, "area_mask": 1}
    sparse_below, area_sparse_below = CONV_SPARSE_BELOW, CONV_AREA_SPARSE_BELOW

    def _sparse_limit(self):
        return self.sparse_below if self.area_mask is None else self.area_sparse_below

    def __init__(
        self, in_c, out_c, kernel_size, stride=1, padding=0, density=1.0, rng=None, dtype=np.float32
    ):
        sizes = (in_c, out_c, kernel_size, stride, padding)
        if not all(map(is_int, sizes)) or min(sizes[:4]) < 1 or padding < 0:
            raise InvalidArgumentError(
                f"Conv2d needs integers in_c, out_c, kernel_size, stride >= 1 and padding >= 0, "
                f"got {in_c!r}, {out_c!r}, {kernel_size!r}, {stride!r}, {padding!r}")
        self.stride, self.padding = stride, padding
        shape = (out_c, in_c, kernel_size, kernel_size)
        self._init_params(shape, in_c * kernel_size * kernel_size, density, rng, dtype)
        self.area_mask = None

    @property
    def kernel_size(self):
        return self.weight.shape[2]

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.n_in:
            raise ValueError(
                f"Conv2d({self.n_in}->{self.n_out}) expects x of shape (N, {self.n_in}, H, W), "
                f"got {x.shape}"
            )
        n, _, h, w = x.shape
        k = self.kernel_size
        ho = kernels.output_size(h, k, self.stride, self.padding)
        wo = kernels.output_size(w, k, self.stride, self.padding)
        if ho < 1 or wo < 1:
            raise ValueError(f"Conv2d with kernel {k} cannot slide over a {h}x{w} input")
        self._x, self._x_shape, self._cols, self._xt = x, x.shape, None, None
        support, _ = self._path()
        if self.area_mask is not None:
            self._check_area_mask(ho, wo)
        if support is not None:
            self._xt = kernels.to_batch_last(self._padded(x))
            ut = kernels.sparse_conv_forward(self._xt, support.values(self), support.indices,
                                             support.indptr, self.area_mask, k, k, self.stride,
                                             ho, wo)
            ut += self.bias[:, None, None, None]
            return kernels.from_batch_last(ut)
        self._cols = kernels.im2col(x, k, k, self.stride, self.padding)
        positions = ho * wo
        if self.area_mask is not None:
            u = self._area_forward(n, positions)
            u += self.bias[:, None]
            return u.reshape(n, self.n_out, ho, wo)
        if self._per_image(positions):
            # (N, O, P) straight away: no (N*P, O) -> NCHW transpose
            u = np.matmul(self.effective_weight().reshape(self.n_out, -1),
                          self._cols.reshape(n, positions, -1).transpose(0, 2, 1))
            u += self.bias[:, None]
            return u.reshape(n, self.n_out, ho, wo)
        u = self._cols @ self.effective_weight().reshape(self.n_out, -1).T
        u += self.bias
        return np.ascontiguousarray(u.reshape(n, ho, wo, self.n_out).transpose(0, 3, 1, 2))

    def _per_image(self, positions):
        """Compute image by image, (O, C*k*k) @ (C*k*k, P), when the output plane is larger than
        a receptive field (the first LeNet-5 conv): then transposing the (N*P, O) product of the
        single GEMM to NCHW, and dL/du back, costs more than the products. Same numbers."""
        return positions > self._cols.shape[1]

    def backward(self, grad_out, input_grad=True, dense_weight_grad=False):
        n, o, ho, wo = grad_out.shape
        positions = ho * wo
        self.grad_bias = grad_out.sum(axis=(0, 2, 3))  # 5x faster than summing the transposed g
        support, _ = self._path()
        if support is not None:
            return self._sparse_backward(support, grad_out, input_grad, dense_weight_grad)
        if self._cols is None:  # the forward ran the sparse path (the mask changed in between)
            k = self.kernel_size
            self._cols = kernels.im2col(self._x, k, k, self.stride, self.padding)
        if self.area_mask is not None:
            grad_cols = self._area_backward(grad_out, n, positions)
            if not input_grad:
                return None
        elif self._per_image(positions):
            g = np.ascontiguousarray(grad_out).reshape(n, o, positions)
            cols = self._cols.reshape(n, positions, -1)
            self.grad_weight = np.matmul(g, cols).sum(axis=0).reshape(self.weight.shape)
            if not input_grad:
                return None
            grad_cols = np.matmul(g.transpose(0, 2, 1), self.effective_weight().reshape(o, -1))
            grad_cols = grad_cols.reshape(n * positions, -1)
        else:
            g = grad_out.transpose(0, 2, 3, 1).reshape(n * positions, o)
            self.grad_weight = (g.T @ self._cols).reshape(self.weight.shape)
            if not input_grad:
                return None
            grad_cols = g @ self.effective_weight().reshape(o, -1)
        k = self.kernel_size
        return kernels.col2im(grad_cols, self._x_shape, k, k, self.stride, self.padding)

    # ------------------------------------------------------- sparse path
    # Below ``sparse_below`` density the three products run over the active weights only,
    # straight on the (padded) input (nestref.core.kernels.sparse_conv_*): no im2col matrix.
    def _padded(self, x):
        p = self.padding
        return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x

    def _sparse_backward(self, support, grad_out, input_grad, dense_weight_grad):
        k, gt = self.kernel_size, kernels.to_batch_last(grad_out)
        if self._xt is None:  # the forward ran the dense path (the mask changed in between)
            self._xt = kernels.to_batch_last(self._padded(self._x))
        values = kernels.sparse_conv_weight_grad(gt, self._xt, support.indices, support.indptr,
                                                 self.area_mask, k, k, self.stride)
        self._grad_weight = self._every_position_gradient(gt) if dense_weight_grad else None
        self._grad_sources = (grad_out, self._x)
        self._active_grad = (support, values.astype(self.weight.dtype))
        if not input_grad:
            return None
        grad_xt = kernels.sparse_conv_input_grad(gt, support.values(self), support.indices,
                                                 support.indptr, self.area_mask,
                                                 self._xt.shape[:3], k, k, self.stride)
        grad_x = kernels.from_batch_last(grad_xt)
        p, (h, w) = self.padding, self._x.shape[2:]
        return grad_x[:, :, p:p + h, p:p + w] if p else grad_x

    def _dense_weight_gradient(self, grad_out, x):
        """dL/d(W*M) at every kernel position after a sparse backward, when first read."""
        reuse = x is self._x and self._xt is not None  # the batch-last copy of this very x
        xt = self._xt if reuse else kernels.to_batch_last(self._padded(x))
        return self._every_position_gradient(kernels.to_batch_last(grad_out), xt)

    def _every_position_gradient(self, gt, xt=None):
        """The sparse weight-gradient kernel over a support that holds every position (NeST's
        growth reads the dormant ones): gt (O, Ho, Wo, N) -> (O, C, k, k)."""
        every, k = getattr(self, "_every_position", None), self.kernel_size
        if every is None or every.shape != self.mask.shape:
            every = self._every_position = Support(np.ones(self.mask.shape, dtype=bool))
        values = kernels.sparse_conv_weight_grad(gt, self._xt if xt is None else xt,
                                                 every.indices, every.indptr, self.area_mask,
                                                 k, k, self.stride)
        return values.astype(self.weight.dtype).reshape(self.weight.shape)

    # ------------------------------------------------------- partial-area path
    # The area mask scales input map i's contribution at output position p, so at each position
    # the layer is a plain product with its own kernel
    #     K_p[o, (i, a)] = (W*M)[o, i, a] * area_mask[o, i, p]
    #     u[n, p, :] = cols[n, p, :] @ K_p^T
    # one GEMM per position (N x C*k*k x O): the dense layer's FLOPs, instead of C narrow
    # products (k*k deep) and C masked accumulations of the whole output.
    def _check_area_mask(self, ho, wo):
        expected = (self.n_out, self.n_in, ho, wo)
        if self.area_mask.shape != expected:
            raise ValueError(f"Conv2d({self.n_in}->{self.n_out}) area_mask must have shape "
                             f"(out_c, in_c, Ho, Wo) = {expected} for this input, "
                             f"got {self.area_mask.shape}")

    def _position_kernels(self, positions):
        """K_p for every output position p: (P, O, C*k*k), a view of an (O, P, C*k*k) array.

        Kept from the forward pass for the backward one while W*M and the area mask are
        unchanged (compared at every use, so an edit in between is never missed)."""
        effective = self.effective_weight()
        cached = getattr(self, "_area_kernels", None)
        if (cached is not None and np.array_equal(cached[0], effective)
                and np.array_equal(cached[1], self.area_mask)):
            return cached[2]
        o, c = self.n_out, self.n_in
        per_position = np.einsum("oik,oip->opik", effective.reshape(o, c, -1),
                                 self.area_mask.reshape(o, c, positions))
        per_position = per_position.reshape(o, positions, -1).transpose(1, 0, 2)
        self._area_kernels = (effective, np.array(self.area_mask), per_position)
        return per_position

    def _area_forward(self, n, positions):
        """u (N, O, P) without bias: each input map's contribution, kept only on its area."""
        cols = self._cols.reshape(n, positions, -1).transpose(1, 0, 2)  # (P, N, C*k*k)
        u = np.matmul(cols, self._position_kernels(positions).transpose(0, 2, 1))  # (P, N, O)
        return np.ascontiguousarray(u.transpose(1, 2, 0))

    def _area_backward(self, grad_out, n, positions):
        """dL/du (N, O, Ho, Wo) -> dL/dcols (N*P, C*k*k); sets grad_weight (O, C, k, k)."""
        o, c = self.n_out, self.n_in
        # (P, N, O) contiguous: every per-position matrix then goes to BLAS as it is
        g = np.ascontiguousarray(grad_out.reshape(n, o, positions).transpose(2, 0, 1))
        cols = self._cols.reshape(n, positions, -1).transpose(1, 0, 2)  # (P, N, C*k*k)
        # dL/dK_p = g_p^T cols_p; the kernel's gradient sums it over the positions its area keeps
        per_position = np.matmul(g.transpose(0, 2, 1), cols).reshape(positions, o * c, -1)
        area = self.area_mask.reshape(o * c, 1, positions)
        grad_weight = np.matmul(area, per_position.transpose(1, 0, 2))  # (O*C, 1, k*k)
        self.grad_weight = grad_weight.reshape(self.weight.shape)
        kernel_per_position = self._position_kernels(positions)
        grad_cols = np.empty((n, positions, cols.shape[2]),
                             dtype=np.result_type(g, kernel_per_position))
        np.matmul(g, kernel_per_position, out=grad_cols.transpose(1, 0, 2))  # (P, N, C*k*k)
        return grad_cols.reshape(n * positions, -1)

    def output_shape(self, input_shape):
        _, h, w = input_shape
        k = self.kernel_size
        return (self.n_out, kernels.output_size(h, k, self.stride, self.padding),
                kernels.output_size(w, k, self.stride, self.padding))

    def config(self):
        return {
            "type": "Conv2d",
            "in_c": self.n_in,
            "out_c": self.n_out,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
        }


def split_by_input_map(cols, kernel, n_images):
    """One slice per input map, as views: cols (N*P, C*k*k) -> (N, P, C, k*k); kernel (O, C, k, k)
    -> (O, C, k*k).

    The partial-area convolution (``Conv2d.area_mask``, ``nestref.nest.prune.area_contributions``)
    works map by map: ``input_map_product`` gives what one input map adds.
    """
    out_c, in_c = kernel.shape[:2]
    kk = kernel.shape[2] * kernel.shape[3]
    return cols.reshape(n_images, -1, in_c, kk), kernel.reshape(out_c, in_c, kk)


def input_map_product(cols, kernel, i):
    r"""What input map i adds to every output map at every position: $(I_i * K_{\cdot i})(p)$.

    cols (N, P, C, k*k), kernel (O, C, k*k) as ``split_by_input_map`` gives them -> (N, P, O).
    """
    return cols[:, :, i, :] @ kernel[:, i, :].T


class ReLU(Layer):
    """x -> max(x, 0), elementwise; any shape."""

    def forward(self, x):
        self._active = x > 0
        return x * self._active

    def backward(self, grad_out, input_grad=True, dense_weight_grad=False):
        return grad_out * self._active if input_grad else None

    def output_shape(self, input_shape):
        return tuple(input_shape)


class MaxPool2d(Layer):
    """Max over k x k windows. x (N, C, H, W) -> (N, C, Ho, Wo); stride defaults to k."""

    def __init__(self, kernel_size=2, stride=None):
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        sizes = (self.kernel_size, self.stride)
        if not all(map(is_int, sizes)) or min(sizes) < 1:
            raise InvalidArgumentError(
                f"MaxPool2d needs integers kernel_size, stride >= 1, got {kernel_size!r}, "
                f"{stride!r}"
            )

    def forward(self, x):
        self._x_shape = x.shape
        out, self._argmax = kernels.maxpool_forward(x, self.kernel_size, self.stride)
        return out

    def backward(self, grad_out, input_grad=True, dense_weight_grad=False):
        return (
            kernels.maxpool_backward(grad_out, self._argmax, self._x_shape) if input_grad else None
        )

    def output_shape(self, input_shape):
        c, h, w = input_shape
        k, s = self.kernel_size, self.stride
        return (c, kernels.output_size(h, k, s, 0), kernels.output_size(w, k, s, 0))

    def config(self):
        return {"type": "MaxPool2d", "kernel_size": self.kernel_size, "stride": self.stride}


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), channel-major: feature map c owns columns
    c*H*W ... (c+1)*H*W - 1."""

    def forward(self, x):
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out, input_grad=True, dense_weight_grad=False):
        return grad_out.reshape(self._x_shape) if input_grad else None

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)


def layer_from_config(cfg, dtype=np.float32):
    """Rebuild an (untrained) layer from ``Layer.config()``; masked layers start all-zero."""
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind == "Dense":
        layer = Dense(cfg["n_in"], cfg["n_out"], dtype=dtype)
    elif kind == "Conv2d":
        layer = Conv2d(
            cfg["in_c"],
            cfg["out_c"],
            cfg["kernel_size"],
            cfg["stride"],
            cfg["padding"],
            dtype=dtype,
        )
    elif kind == "MaxPool2d":
        return MaxPool2d(cfg["kernel_size"], cfg["stride"])
    elif kind == "ReLU":
        return ReLU()
    elif kind == "Flatten":
        return Flatten()
    else:
        raise ValueError(f"unknown layer type {kind!r}")
    layer.weight[...] = 0
    layer.mask[...] = 0
    return layer
