"""Every layer's backward against finite differences (float64), masks drawn by hypothesis."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nestref.core.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from nestref.core.losses import softmax_cross_entropy

from gradcheck import numerical_gradient

F64 = np.float64


def check_layer(layer, x, rng, atol=1e-6):
    """Compare grad_in, grad_weight (at every position) and grad_bias with finite differences.

    The scalar is L = sum(forward(x) * R) for a fixed random R, so dL/dout = R.
    """
    out = layer.forward(x)
    r = rng.standard_normal(out.shape)
    loss = lambda: float((layer.forward(x) * r).sum())  # noqa: E731
    grad_in = layer.backward(r)
    np.testing.assert_allclose(grad_in, numerical_gradient(loss, x), atol=atol, rtol=1e-5)
    if hasattr(layer, "mask"):
        grad_w, grad_b = layer.grad_weight.copy(), layer.grad_bias.copy()
        # grad_weight is dL/d(W*M): perturb the effective weight at every position,
        # dormant ones included, by computing with an all-ones mask and weight W*M
        saved = layer.weight.copy(), layer.mask.copy()
        layer.weight, layer.mask = layer.weight * layer.mask, np.ones_like(layer.mask)
        np.testing.assert_allclose(
            grad_w, numerical_gradient(loss, layer.weight), atol=atol, rtol=1e-5
        )
        np.testing.assert_allclose(
            grad_b, numerical_gradient(loss, layer.bias), atol=atol, rtol=1e-5
        )
        layer.weight, layer.mask = saved
        assert np.any(grad_w[layer.mask == 0] != 0) or np.all(layer.mask == 1) or not np.any(x)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), n_in=st.integers(1, 6), n_out=st.integers(1, 5),
       density=st.sampled_from([0.3, 0.7, 1.0]), seed=st.integers(0, 2**16))
def test_dense_gradients(n, n_in, n_out, density, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(n_in, n_out, density=density, rng=seed, dtype=F64)
    layer.bias[:] = rng.standard_normal(n_out)
    check_layer(layer, rng.standard_normal((n, n_in)), rng)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), o=st.integers(1, 3), k=st.integers(1, 3),
       stride=st.integers(1, 2), padding=st.integers(0, 1), h=st.integers(3, 6),
       density=st.sampled_from([0.4, 1.0]), seed=st.integers(0, 2**16))
def test_conv_gradients(n, c, o, k, stride, padding, h, density, seed):
    rng = np.random.default_rng(seed)
    layer = Conv2d(c, o, k, stride=stride, padding=padding, density=density, rng=seed, dtype=F64)
    layer.bias[:] = rng.standard_normal(o)
    check_layer(layer, rng.standard_normal((n, c, h, h + 1)), rng)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(2, 7), k=st.integers(1, 3),
       stride=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_maxpool_gradients(n, c, h, k, stride, seed):
    if k > h:
        return
    rng = np.random.default_rng(seed)
    # distinct values: the max of a window is then unique and differentiable
    x = rng.permutation(n * c * h * h).reshape(n, c, h, h).astype(F64) / 7.0
    check_layer(MaxPool2d(k, stride), x, rng)


def test_relu_and_flatten_gradients():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 4, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    check_layer(ReLU(), x, rng)
    check_layer(Flatten(), x, rng)
    assert Flatten().forward(x).shape == (3, 32)


def test_softmax_cross_entropy_gradient_and_value():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    loss, grad = softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(5), labels]).mean())
    np.testing.assert_allclose(
        grad,
        numerical_gradient(lambda: softmax_cross_entropy(logits, labels)[0], logits),
        atol=1e-8,
    )
    big, _ = softmax_cross_entropy(np.array([[1000.0, -1000.0]]), np.array([1]))
    assert big == pytest.approx(2000.0)  # stable for huge logits


def test_conv_matches_direct_loop():
    """An oracle independent of im2col: the convolution sum written out."""
    rng = np.random.default_rng(2)
    layer = Conv2d(2, 3, 3, stride=2, padding=1, density=0.6, rng=3, dtype=F64)
    layer.bias[:] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 5, 6))
    out = layer.forward(x)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    w = layer.weight * layer.mask
    expect = np.zeros_like(out)
    for b in range(2):
        for o in range(3):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    expect[b, o, i, j] = (
                        xp[b, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * w[o]
                    ).sum() + layer.bias[o]
    np.testing.assert_allclose(out, expect, atol=1e-12)


def test_weight_is_zero_where_mask_is_zero_at_init():
    for layer in (Dense(50, 40, density=0.1, rng=0), Conv2d(3, 4, 5, density=0.2, rng=1)):
        assert np.all(layer.weight[layer.mask == 0] == 0)
        assert 0 < layer.density() < 0.5


@pytest.mark.parametrize("bad", [dict(n_in=0, n_out=3), dict(n_in=3, n_out=3, density=0.0),
                                 dict(n_in=3, n_out=3, density=1.5)])
def test_dense_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        Dense(**bad)


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"expects x of shape \(N, 4\)"):
        Dense(4, 2).forward(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="cannot slide"):
        Conv2d(1, 2, 5).forward(np.zeros((1, 1, 3, 3), np.float32))


@pytest.mark.parametrize("c, o, side", [(1, 20, 28), (20, 50, 12), (3, 4, 7)])
def test_conv_per_image_and_single_product_orderings_agree(c, o, side, monkeypatch):
    """Conv2d computes image by image when the output plane outnumbers a receptive field and with
    one (N*P, C*k*k) product otherwise: both orderings give the same numbers (float32)."""
    rng = np.random.default_rng(7)
    layer = Conv2d(c, o, 5, density=0.6, rng=1)
    layer.bias[:] = rng.standard_normal(o)
    x = rng.standard_normal((4, c, side, side)).astype(np.float32)
    results = []
    for per_image in (True, False):
        monkeypatch.setattr(Conv2d, "_per_image", lambda self, positions, v=per_image: v)
        out = layer.forward(x)
        grad_in = layer.backward(np.cos(out))
        assert out.dtype == grad_in.dtype == layer.grad_weight.dtype == np.float32
        results.append((out, grad_in, layer.grad_weight.copy(), layer.grad_bias.copy()))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
