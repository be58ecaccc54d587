"""Max pooling over non-overlapping windows as a reshape and a max, with torch's gradient.

``nnx.max_pool`` is ``lax.reduce_window``, whose gradient is XLA's ``select_and_scatter``: on
one CPU core, forward and backward at ``mnist-cnn``'s first pooling (64x24x24x10, float32,
jitted) it took 14-15 ms per call against torch's 5-7 ms (issue 22). When the windows tile
the input (strides equal to the window, no padding: ``MaxPool2d(k)``, as the MNIST nets
pool), the same maximum is a reshape that puts each window on axes of its own and a ``max``
over them, which XLA:CPU fuses into one loop (``docs/BENCHMARKS.md`` has the figures).

The gradient is not ``jnp.max``'s: that one splits the cotangent evenly among a window's
tied maxima (a window of zeros gets a quarter each). torch's ``max_pool2d`` backward gives
all of it to the first maximum in the window, in row-major order, and so does lax's
``select_and_scatter``. Ties are common (a window the ReLU zeroed, a constant image border),
so the custom VJP here picks the first maximum explicitly, and float64 lockstep with torch
stays exact. A NaN is not a maximum here (torch's kernel moves the gradient to a NaN): the
cotangent of an all-NaN window is dropped.

What it does not cover (overlapping or strided windows, padding, ``SAME``) goes to
``nnx.max_pool`` unchanged.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
from flax import nnx


def _windows(x, window_shape):
    # (..., h, w, features) -> (..., h // kh, kh, w // kw, kw, features); a remainder that no
    # whole window covers is cropped first, as VALID pooling (and torch's floor mode) drops it
    n = len(window_shape)
    spatial = x.shape[-1 - n : -1]
    whole = [s // k * k for s, k in zip(spatial, window_shape, strict=True)]
    if whole != list(spatial):
        x = x[(..., *(slice(0, w) for w in whole), slice(None))]
    split = [d for w, k in zip(whole, window_shape, strict=True) for d in (w // k, k)]
    return x.reshape(*x.shape[: -1 - n], *split, x.shape[-1])


def _window_axes(ndim, n):
    # the in-window axes of _windows' output for an input of rank ndim: the second of each
    # (outer, inner) pair after the batch axes
    return tuple(ndim - 1 - n + 2 * i + 1 for i in range(n))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_tiled(x, window_shape):
    return _windows(x, window_shape).max(axis=_window_axes(x.ndim, len(window_shape)))


def _max_pool_tiled_fwd(x, window_shape):
    y = _max_pool_tiled(x, window_shape)
    return y, (x, y)


def _max_pool_tiled_bwd(window_shape, residuals, dy):
    x, y = residuals
    n = len(window_shape)
    w = _windows(x, window_shape)  # (..., ho, kh, wo, kw, features)
    # each window position in row-major order: it takes the cotangent if it holds the maximum
    # and no earlier position did (the first maximum, as torch's kernel scans a window)
    seen = jnp.zeros(y.shape, bool)
    parts = {}
    for offset in itertools.product(*map(range, window_shape)):
        at = tuple(slice(None) for _ in range(x.ndim - 1 - n))
        for o in offset:
            at += (slice(None), o)
        hit = w[(*at, slice(None))] == y  # (..., ho, wo, features)
        parts[offset] = jnp.where(hit & ~seen, dy, jnp.zeros((), dy.dtype))
        seen = seen | hit

    def stack(prefix):  # rebuild the (..., ho, kh, wo, kw, features) layout, one axis at a time
        depth = len(prefix)
        if depth == n:
            return parts[prefix]
        # the window axes of later dimensions are in place already, of earlier ones not yet
        axis = x.ndim - 1 - n + depth + 1
        return jnp.stack([stack((*prefix, o)) for o in range(window_shape[depth])], axis=axis)

    dx = stack(()).reshape(
        *y.shape[: -1 - n],
        *(o * k for o, k in zip(y.shape[-1 - n : -1], window_shape, strict=True)),
        y.shape[-1],
    )  # x without the cropped remainder
    if dx.shape != x.shape:  # the cropped remainder: no window, no gradient
        pads = [(0, 0)] * (x.ndim - 1 - n)
        pads += [
            (0, s - d) for s, d in zip(x.shape[-1 - n : -1], dx.shape[-1 - n : -1], strict=True)
        ]
        dx = jnp.pad(dx, [*pads, (0, 0)])
    return (dx,)


_max_pool_tiled.defvjp(_max_pool_tiled_fwd, _max_pool_tiled_bwd)


def _tiles(inputs, window_shape, strides, padding):
    n = len(window_shape)
    if strides is None or tuple(strides) != tuple(window_shape) or inputs.ndim < n + 1:
        return False
    if isinstance(padding, str):
        return padding == "VALID"
    return all(tuple(p) == (0, 0) for p in padding)


def max_pool(inputs, window_shape, strides=None, padding="VALID"):
    """``nnx.max_pool`` (inputs ``(batch..., *spatial, features)``); windows that tile the input
    (``strides == window_shape``, no padding) as a reshape and a max, the gradient to each
    window's first maximum in row-major order, as torch's ``max_pool2d``."""
    window_shape = tuple(window_shape)
    if not _tiles(inputs, window_shape, strides, padding):
        return nnx.max_pool(inputs, window_shape, strides, padding)
    return _max_pool_tiled(inputs, window_shape)
