"""Max pooling written for XLA:CPU, with torch's gradient: ``jaxnets.layers.max_pool``.

``nnx.max_pool`` is ``lax.reduce_window``, whose gradient is XLA's ``select_and_scatter``: on
one CPU core, forward and backward at ``mnist-cnn``'s first pooling (64x24x24x10, float32,
jitted) it took 14-15 ms per call against torch's 5-7 ms (issue 22). When the windows tile
the input (strides equal to the window, no padding: ``MaxPool2d(k)``, as the MNIST nets
pool), the same maximum is a reshape that puts each window on axes of its own and a ``max``
over them, which XLA:CPU fuses into one loop (``docs/BENCHMARKS.md`` has the figures). Any
other windows (overlapping, strided, padded: torchvision's ``MaxPool2d(3, 2, padding=1)``)
are the maximum of one strided slice of the -inf-padded input per window place, and the
backward puts each slice's share back with an interior-padded ``lax.pad``: elementwise work
XLA fuses, 6x faster than ``select_and_scatter`` at resnet18's pooling.

The gradient is not ``jnp.max``'s: that one splits the cotangent evenly among a window's
tied maxima (a window of zeros gets a quarter each). torch's ``max_pool2d`` backward gives
all of it to the first maximum in the window, in row-major order, and so does lax's
``select_and_scatter``. Ties are common (a window the ReLU zeroed, a constant image border),
so the custom VJPs here pick the first maximum explicitly; where windows overlap, a place of
the input sums the cotangents of the windows it wins in torch's order, window after window,
so float64 lockstep with torch stays exact (not one rounding step apart). A NaN is not a
maximum here (torch's kernel moves the gradient to a NaN): the cotangent of an all-NaN
window is dropped.

Integer inputs, negative padding and inputs without a feature axis go to ``nnx.max_pool``
unchanged.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax


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


def _tiles(window_shape, strides, pads):
    return tuple(strides) == window_shape and all(p == (0, 0) for p in pads)


def _padded(x, pads):
    # -inf around the spatial axes: a padded place never wins a window (torch's MaxPool pads so)
    lead = x.ndim - 1 - len(pads)
    return jnp.pad(x, [(0, 0)] * lead + list(pads) + [(0, 0)], constant_values=-jnp.inf)


def _out_shape(padded_spatial, window_shape, strides):
    return tuple(
        (p - k) // s + 1 for p, k, s in zip(padded_spatial, window_shape, strides, strict=True)
    )


def _offsets(xp, window_shape, strides, out):
    """Each place of a window, in row-major order, with the strided slice of ``xp`` that holds
    that place of every window: ``(offset, (..., *out, features))``."""
    n = len(window_shape)
    lead = xp.ndim - 1 - n
    for offset in itertools.product(*map(range, window_shape)):
        start = (0,) * lead + offset + (0,)
        stop = xp.shape[:lead]
        stop += tuple(o + (m - 1) * s + 1 for o, m, s in zip(offset, out, strides, strict=True))
        stop += xp.shape[-1:]
        yield offset, lax.slice(xp, start, stop, (1,) * lead + tuple(strides) + (1,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_strided(x, window_shape, strides, pads):
    xp = _padded(x, pads)
    out = _out_shape(xp.shape[-1 - len(pads) : -1], window_shape, strides)
    return functools.reduce(jnp.maximum, (s for _, s in _offsets(xp, window_shape, strides, out)))


def _max_pool_strided_fwd(x, window_shape, strides, pads):
    y = _max_pool_strided(x, window_shape, strides, pads)
    return y, (x, y)


def _max_pool_strided_bwd(window_shape, strides, pads, residuals, dy):
    x, y = residuals
    n = len(window_shape)
    lead = x.ndim - 1 - n
    xp = _padded(x, pads)
    spatial = xp.shape[-1 - n : -1]
    out = y.shape[-1 - n : -1]
    zero = jnp.zeros((), dy.dtype)
    seen = jnp.zeros(y.shape, bool)
    placed = []
    # the same first-maximum rule as the tiled form, per window; windows overlap here, so a
    # place of x collects the cotangents of every window whose first maximum it is
    for offset, values in _offsets(xp, window_shape, strides, out):
        hit = values == y
        part = jnp.where(hit & ~seen, dy, zero)
        seen = seen | hit
        # back onto the padded grid: each window's entry at offset + stride * its index
        config = [(0, 0, 0)] * lead
        config += [
            (o, p - o - (m - 1) * s - 1, s - 1)
            for o, p, m, s in zip(offset, spatial, out, strides, strict=True)
        ]
        placed.append(lax.pad(part, zero, [*config, (0, 0, 0)]))
    # summed in the order torch's kernel adds them, window after window in row-major order:
    # at one place of x a later window reaches it from an earlier offset, so the offsets go
    # last to first (another order would part from torch by a rounding step, not exactly)
    dxp = functools.reduce(jnp.add, reversed(placed))
    inside = tuple(slice(lo, lo + d) for (lo, _), d in zip(pads, x.shape[-1 - n : -1], strict=True))
    return (dxp[(*(slice(None),) * lead, *inside, slice(None))],)


_max_pool_strided.defvjp(_max_pool_strided_fwd, _max_pool_strided_bwd)


def _explicit_padding(inputs, window_shape, strides, padding):
    """``padding`` as (low, high) pairs per spatial axis, or None where this module leaves it to
    ``nnx.max_pool`` (a negative pad)."""
    n = len(window_shape)
    spatial = inputs.shape[-1 - n : -1]
    if isinstance(padding, str):
        return tuple(map(tuple, lax.padtype_to_pads(spatial, window_shape, strides, padding)))
    pads = tuple(tuple(int(v) for v in p) for p in padding)
    if len(pads) != n or any(v < 0 for p in pads for v in p):
        return None
    return pads


def max_pool(inputs, window_shape, strides=None, padding="VALID"):
    """``nnx.max_pool`` (inputs ``(batch..., *spatial, features)``, padded with -inf) written
    for XLA:CPU: windows that tile the input (``strides == window_shape``, no padding) as a
    reshape and a max, any other windows as the max of one strided slice per window place;
    the gradient to each window's first maximum in row-major order, as torch's
    ``max_pool2d`` and lax's ``select_and_scatter`` give it. Integer inputs, inputs with no
    feature axis after the spatial ones, negative padding and windows larger than the padded
    input go to ``nnx.max_pool`` unchanged."""
    window_shape = tuple(window_shape)
    strides = tuple(strides) if strides is not None else (1,) * len(window_shape)
    if inputs.ndim < len(window_shape) + 1 or not jnp.issubdtype(inputs.dtype, jnp.floating):
        return nnx.max_pool(inputs, window_shape, strides, padding)
    pads = _explicit_padding(inputs, window_shape, strides, padding)
    spatial = inputs.shape[-1 - len(window_shape) : -1]
    padded = tuple(d + lo + hi for d, (lo, hi) in zip(spatial, pads or (), strict=False))
    if pads is None or min(_out_shape(padded, window_shape, strides)) < 1:
        return nnx.max_pool(inputs, window_shape, strides, padding)
    if _tiles(window_shape, strides, pads):
        return _max_pool_tiled(inputs, window_shape)
    return _max_pool_strided(inputs, window_shape, strides, pads)
