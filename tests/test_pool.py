"""jaxnets/_pool.py: max pooling as a reshape and a max (tiling windows) or strided slices.

Equal to ``nnx.max_pool`` in float64, values and gradients, on random inputs of the tutorials'
shapes, torchvision's 3x3 stride-2 padded pooling and others; at ties (constant windows,
windows a ReLU zeroed) its gradient is torch's ``max_pool2d`` backward exactly, where a plain
``max``'s gradient is not (the control), and where windows overlap it sums in torch's order;
what it does not cover is ``nnx.max_pool``'s own.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxnets import layers, mnist_cnn, mnist_resnet

# (input shape, window): the tutorials' first
TILED = {
    "mnist-cnn pool1": ((3, 24, 24, 10), (2, 2)),
    "mnist-cnn pool2": ((3, 8, 8, 20), (2, 2)),
    "mnist-resnet pool1": ((3, 24, 24, 16), (2, 2)),
    "odd sizes, a remainder dropped": ((2, 9, 11, 4), (2, 3)),
    "3x3": ((2, 12, 9, 3), (3, 3)),
    "unbatched": ((9, 11, 4), (3, 3)),
    "two batch axes": ((2, 3, 6, 6, 2), (2, 2)),
    "1-d": ((2, 17, 3), (4,)),
    "3-d": ((2, 4, 6, 5, 2), (2, 3, 1)),
}


def _value_and_grad(pool, x, dy):
    y, vjp = jax.vjp(pool, x)
    return y, vjp(dy)[0]


def _pool(fn, window):
    return functools.partial(fn, window_shape=window, strides=window)


@pytest.mark.parametrize("case", TILED)
def test_equals_nnx_max_pool_float64(case):
    shape, window = TILED[case]
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    ours, theirs = _pool(layers.max_pool, window), _pool(nnx.max_pool, window)
    assert "custom_vjp_call" in str(jax.make_jaxpr(ours)(x))  # taken, not handed over
    assert "reduce_window" not in str(jax.make_jaxpr(jax.grad(lambda x: ours(x).sum()))(x))
    dy = rng.normal(size=jax.eval_shape(theirs, x).shape)
    for a, b in zip(_value_and_grad(ours, x, dy), _value_and_grad(theirs, x, dy), strict=True):
        assert a.dtype == np.float64 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # a max and a selection: no rounding at all


def _naive(x, window):
    """The same maximum as a reshape and ``jnp.max``, autodiff's gradient: the control."""
    n, h, w, c = x.shape
    kh, kw = window
    return x.reshape(n, h // kh, kh, w // kw, kw, c).max(axis=(2, 4))


def _tied_inputs(window):
    """Windows full of ties: constant images and ReLU outputs (a window of zeros is the common
    case after a ReLU), plus two tied maxima above zeros."""
    rng = np.random.default_rng(1)
    kh, kw = window
    relu = np.maximum(rng.normal(size=(2, 4 * kh, 4 * kw, 3)) - 0.5, 0)  # most windows zeros
    constant = np.full((1, 4 * kh, 4 * kw, 3), 0.25)
    pairs = np.zeros((1, 4 * kh, 4 * kw, 3))
    pairs[:, kh - 1 :: kh, kw - 1 :: kw] = 2.0  # the last of each window
    pairs[:, ::kh, kw - 1 :: kw] = 2.0  # and the end of its first row: the first maximum
    return np.concatenate([relu, constant, pairs])


def _torch_value_and_grad(x, dy, window):
    x_t = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    y = torch.nn.functional.max_pool2d(x_t, window)
    y.backward(torch.tensor(dy.transpose(0, 3, 1, 2)))
    return y.detach().numpy().transpose(0, 2, 3, 1), x_t.grad.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("window", [(2, 2), (3, 3), (2, 3)], ids=str)
def test_gradient_at_ties_is_torchs(window):
    x = _tied_inputs(window)
    rng = np.random.default_rng(2)
    dy = rng.normal(size=(len(x), 4, 4, 3))
    y_torch, dx_torch = _torch_value_and_grad(x, dy, window)
    windows = x.reshape(len(x), 4, window[0], 4, window[1], 3)
    tied = (windows == windows.max(axis=(2, 4), keepdims=True)).sum(axis=(2, 4)) > 1
    assert tied.mean() > 0.5  # the inputs really are mostly ties
    y, dx = _value_and_grad(_pool(layers.max_pool, window), x, dy)
    np.testing.assert_array_equal(y, y_torch)
    np.testing.assert_array_equal(dx, dx_torch)
    # the control: autodiff through a plain max shares a window's cotangent among its ties
    y_naive, dx_naive = _value_and_grad(functools.partial(_naive, window=window), x, dy)
    np.testing.assert_array_equal(y_naive, y_torch)
    assert not np.array_equal(dx_naive, dx_torch)
    # and the gradient it replaces, select_and_scatter's, picks torch's too
    np.testing.assert_array_equal(_value_and_grad(_pool(nnx.max_pool, window), x, dy)[1], dx)


# (input shape, window, strides, padding): windows that overlap, stride past each other or
# pad; torchvision's resnet18 pools 3x3, stride 2, padding 1 after its stem
STRIDED = {
    "resnet18's MaxPool2d(3, 2, padding=1)": ((2, 16, 16, 4), (3, 3), (2, 2), ((1, 1), (1, 1))),
    "overlapping, stride 1": ((2, 7, 8, 3), (2, 2), (1, 1), "VALID"),
    "SAME": ((2, 7, 8, 3), (2, 2), (2, 2), "SAME"),
    "padded on one side": ((2, 7, 8, 3), (2, 2), (2, 2), ((1, 0), (0, 1))),
    "ceil_mode's extra window": ((2, 9, 9, 3), (3, 3), (2, 2), ((0, 1), (0, 1))),
    "default strides": ((2, 7, 8, 3), (2, 2), None, "VALID"),
    "windows apart (stride past the window)": ((2, 11, 10, 2), (2, 2), (3, 4), "VALID"),
    "5x5 stride 2x3, padding 2": ((2, 17, 15, 4), (5, 5), (2, 3), ((2, 2), (2, 2))),
    "unbatched": ((9, 11, 4), (3, 3), (1, 2), "VALID"),
    "1-d": ((2, 17, 3), (4,), (3,), ((2, 2),)),
}


def _strided(fn, window, strides, padding):
    return functools.partial(fn, window_shape=window, strides=strides, padding=padding)


@pytest.mark.parametrize("case", STRIDED)
@pytest.mark.parametrize("tied", [False, True], ids=["random", "ties"])
def test_strided_windows_equal_nnx_max_pool_float64(case, tied):
    shape, window, strides, padding = STRIDED[case]
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape)
    if tied:  # a few values only: most windows hold tied maxima
        x = np.round(x * 2) / 2
    ours = _strided(layers.max_pool, window, strides, padding)
    theirs = _strided(nnx.max_pool, window, strides, padding)
    assert "custom_vjp_call" in str(jax.make_jaxpr(ours)(x))
    grad_jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: ours(x).sum()))(x))
    assert "reduce_window" not in grad_jaxpr and "select_and_scatter" not in grad_jaxpr
    dy = rng.normal(size=jax.eval_shape(theirs, x).shape)
    for a, b in zip(_value_and_grad(ours, x, dy), _value_and_grad(theirs, x, dy), strict=True):
        assert a.dtype == np.float64 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def _pair(v):  # torch's int or pair
    return tuple(v) if isinstance(v, tuple) else (v, v)


@pytest.mark.parametrize(
    "window, stride, padding",
    [((3, 3), 2, 1), ((2, 2), 1, 0), ((3, 2), 1, 1), ((5, 5), (2, 3), 2)],
    ids=["resnet18's", "stride 1", "3x2 stride 1 padded", "5x5"],
)
@pytest.mark.parametrize("tied", [False, True], ids=["random", "ties"])
def test_overlapping_windows_are_torchs_to_the_last_bit(window, stride, padding, tied):
    """Where windows overlap, a place of the input collects several windows' cotangents; torch
    adds them window after window, and so must the backward, or float64 lockstep parts by a
    rounding step (8.9e-16 here with the offsets summed first to last)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 17, 15, 4))
    if tied:
        x = np.maximum(np.round(x * 2) / 2, 0)  # a ReLU's zeros and a few values
    x_t = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    y_t = torch.nn.functional.max_pool2d(x_t, window, stride, padding)
    dy = rng.normal(size=y_t.shape)
    y_t.backward(torch.tensor(dy))
    pads = tuple((p, p) for p in _pair(padding))
    pool = _strided(layers.max_pool, window, _pair(stride), pads)
    y, dx = _value_and_grad(pool, x, dy.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(y, y_t.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(dx, x_t.grad.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize(
    "x, kwargs",
    [
        (np.arange(2 * 7 * 8 * 3).reshape(2, 7, 8, 3), {"strides": (2, 2)}),
        (np.zeros((2, 7, 8, 3)), {"strides": (1, 1), "padding": ((-1, 0), (0, 0))}),
        (np.zeros((2, 1, 1, 3)), {"strides": (1, 1)}),
    ],
    ids=["integers", "negative padding", "window larger than the input"],
)
def test_what_it_does_not_cover_is_nnx(x, kwargs):
    kwargs = {"window_shape": (2, 2), **kwargs}
    ours = functools.partial(layers.max_pool, **kwargs)
    theirs = functools.partial(nnx.max_pool, **kwargs)
    assert "custom_vjp_call" not in str(jax.make_jaxpr(ours)(x))
    np.testing.assert_array_equal(ours(x), theirs(x))


@pytest.mark.parametrize("window", [(2, 2), (3, 3)], ids=str)
def test_explicit_zero_padding_is_tiled(window):
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 3))
    pool = functools.partial(
        layers.max_pool, window_shape=window, strides=window, padding=((0, 0), (0, 0))
    )
    assert "custom_vjp_call" in str(jax.make_jaxpr(pool)(x))
    np.testing.assert_array_equal(pool(x), nnx.max_pool(x, window, window))


@pytest.mark.parametrize("module", [mnist_cnn, mnist_resnet], ids=lambda m: m.__name__)
def test_the_tutorials_pool_with_it(module):
    model = module.new_model(None, nnx.Rngs(0))
    x, y = jnp.zeros((2, 28, 28, 1)), jnp.zeros((2,), jnp.int32)

    def grads_jaxpr():
        return str(jax.make_jaxpr(lambda m: nnx.grad(module.loss_fn)(m, x, y))(model))

    assert "reduce_window" not in grads_jaxpr() and "select_and_scatter" not in grads_jaxpr()
    # the control: the same net on nnx.max_pool has both
    name = "pooling" if hasattr(model, "pooling") else "mp"
    setattr(model, name, functools.partial(nnx.max_pool, window_shape=(2, 2), strides=(2, 2)))
    assert "reduce_window" in grads_jaxpr() and "select_and_scatter" in grads_jaxpr()
