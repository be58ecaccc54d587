"""A convolution that stays fast inside a ``lax.scan`` on a CPU: its backward written out.

XLA:CPU rewrites a convolution into its fast form (NHWC input, HWIO kernel, Eigen) in a pass
that visits only the entry computation. A ``lax.scan`` body is a while-loop body, so the
convolutions autodiff makes there for the backward pass (the kernel gradient
``f01b_i01o->01bf``, the input gradient with a flipped kernel) fall through to XLA's
unoptimised elemental convolution (jax-ml/jax#12868): a scanned epoch of ``mnist-cnn`` ran
4.3 s against 0.8 s for the same steps dispatched one by one (one core, jaxlib 0.10.2).

``conv_general_dilated`` here computes the same function with a ``jax.custom_vjp`` whose
forward and both backward convolutions are written in that fast form already (NHWC/HWIO, no
dilation, no flipped window): the input gradient is the output gradient, dilated by the
stride and padded, convolved with the flipped kernel; the kernel gradient is the input, with
batch and features swapped, convolved with the output gradient as the kernel. Padding and
input dilation (a transposed convolution) are a ``lax.pad`` in front, which autodiff handles.
(An im2col convolution, patches from strided slices and one matmul, was slower here: 69
steps/s against 99 on the scanned ``mnist-cnn`` step, one core.)

It is a drop-in for ``nnx.Conv(conv_general_dilated=...)``. On any other backend (GPU, TPU),
and for what it does not cover (grouped or kernel-dilated convolutions, other layouts), it
hands over to ``lax.conv_general_dilated`` at trace time. ``conv_transpose`` is the same for
``lax.conv_transpose``, and ``ConvTranspose`` the ``nnx.ConvTranspose`` that uses it.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

# NHWC input, HWIO kernel (and their 1-d and 3-d kin): what XLA:CPU runs fast, and nnx's own
_LAYOUTS = {3: ("NHC", "HIO", "NHC"), 4: ("NHWC", "HWIO", "NHWC"), 5: ("NHWDC", "HWDIO", "NHWDC")}


def _conv(x, w, strides, padding, precision):
    return lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=_LAYOUTS[x.ndim], precision=precision
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_fast(x, w, strides, padding, precision):
    return _conv(x, w, strides, padding, precision)  # (batch, *out_size, out_features)


def _conv_fast_fwd(x, w, strides, padding, precision):
    return _conv(x, w, strides, padding, precision), (x, w)


def _conv_fast_bwd(strides, padding, precision, residuals, dy):
    x, w = residuals
    n = x.ndim - 2
    kernel_size = w.shape[:n]
    padded_size = [i + lo + hi for i, (lo, hi) in zip(x.shape[1:-1], padding, strict=True)]
    # the output gradient with stride - 1 zeros between its pixels: (batch, *covered,
    # out_features), covered = the padded input's pixels the windows reach (the last stride
    # may leave some uncovered at the end)
    dilated = lax.pad(
        dy, jnp.zeros((), dy.dtype), [(0, 0, 0), *((0, 0, s - 1) for s in strides), (0, 0, 0)]
    )
    uncovered = [
        p - c - k + 1 for p, c, k in zip(padded_size, dilated.shape[1:-1], kernel_size, strict=True)
    ]
    # input gradient: a full convolution with the kernel flipped and its features swapped,
    # less the padding
    w_t = jnp.flip(w, axis=tuple(range(n))).swapaxes(-1, -2)  # (*kernel_size, out, in)
    dx_padding = [
        (k - 1 - lo, k - 1 - hi + u)
        for k, (lo, hi), u in zip(kernel_size, padding, uncovered, strict=True)
    ]
    dx = _conv(dilated, w_t, (1,) * n, dx_padding, precision)  # (batch, *in_size, in_features)
    # kernel gradient: batch and features swapped, the output gradient as the kernel
    x_t = jnp.moveaxis(x, (0, -1), (-1, 0))  # (in_features, *in_size, batch)
    if any(i < c for i, c in zip(x.shape[1:-1], dilated.shape[1:-1], strict=True)):
        # An input smaller than this kernel (a transposed convolution's, before its padding)
        # makes XLA swap the two operands, out of the fast form: pad it beforehand.
        x_t = lax.pad(
            x_t, jnp.zeros((), x.dtype), [(0, 0, 0), *((*p, 0) for p in padding), (0, 0, 0)]
        )
        padding = ((0, 0),) * n
    dy_t = jnp.moveaxis(dilated, 0, -2)  # (*covered, batch, out_features)
    # The barrier keeps XLA from folding these transposes (and a transposed convolution's
    # flip) into the convolution's dimension numbers, out of the fast form again.
    x_t, dy_t = lax.optimization_barrier((x_t, dy_t))
    dw = _conv(x_t, dy_t, (1,) * n, padding, precision)  # (in, *(kernel_size + uncovered), out)
    dw = dw[(slice(None), *(slice(0, k) for k in kernel_size))]
    return dx, jnp.moveaxis(dw, 0, -2)  # (*kernel_size, in_features, out_features)


_conv_fast.defvjp(_conv_fast_fwd, _conv_fast_bwd)


def _use_own(lhs, rhs, dimension_numbers, feature_group_count, batch_group_count):
    if jax.default_backend() != "cpu" or lhs.ndim not in _LAYOUTS:
        return False
    if feature_group_count != 1 or batch_group_count != 1:
        return False
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return dn == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _LAYOUTS[lhs.ndim])


def _ones(value, n):
    return (1,) * n if value is None else tuple(value)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
    **kwargs,
):
    """``lax.conv_general_dilated``; on a CPU, with every convolution of its forward and
    backward pass in XLA:CPU's fast form."""
    n = lhs.ndim - 2
    strides = _ones(window_strides, n)
    lhs_dilation, rhs_dilation = _ones(lhs_dilation, n), _ones(rhs_dilation, n)
    as_lax = functools.partial(
        lax.conv_general_dilated,
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    if (
        kwargs.get("out_sharding") is not None
        or preferred_element_type is not None
        or rhs_dilation != (1,) * n
        or not _use_own(lhs, rhs, dimension_numbers, feature_group_count, batch_group_count)
    ):
        return as_lax()
    if isinstance(padding, str):
        dilated_in = [
            (d - 1) * (k - 1) + d for d, k in zip(lhs.shape[1:-1], lhs_dilation, strict=True)
        ]
        padding = lax.padtype_to_pads(dilated_in, rhs.shape[:n], strides, padding)
    # Zeros between the input's pixels (input dilation) and a negative padding (a crop), or one
    # larger than the kernel, are a lax.pad in front; the rest of the padding stays in the
    # convolution, where XLA:CPU's fast form takes it. (lax.pad's own gradient is a slice.)
    inner = [
        tuple(min(max(p, 0), k - 1) for p in pair)
        for pair, k in zip(padding, rhs.shape[:n], strict=True)
    ]
    config = [
        (lo - inner_lo, hi - inner_hi, d - 1)
        for (lo, hi), (inner_lo, inner_hi), d in zip(padding, inner, lhs_dilation, strict=True)
    ]
    x = lhs
    if any(c != (0, 0, 0) for c in config):
        x = lax.pad(lhs, jnp.zeros((), lhs.dtype), [(0, 0, 0), *config, (0, 0, 0)])
    padded = [size + lo + hi for size, (lo, hi) in zip(x.shape[1:-1], inner, strict=True)]
    if 0 in x.shape or any(p < k for p, k in zip(padded, rhs.shape[:n], strict=True)):
        return as_lax()  # nothing to compute: lax's shapes and errors
    return _conv_fast(x, rhs, strides, tuple(inner), precision)  # (batch, *out_size, out_features)


def conv_transpose(
    lhs,
    rhs,
    strides,
    padding,
    rhs_dilation=None,
    dimension_numbers=None,
    transpose_kernel=False,
    precision=None,
    preferred_element_type=None,
):
    """``lax.conv_transpose`` for explicit padding pairs: a convolution of the input dilated by
    ``strides``, through ``conv_general_dilated`` above (strings go to lax unchanged)."""
    n = lhs.ndim - 2
    # lax.conv_transpose's default layout is channels-last (conv_general_dilated's is not)
    layout = dimension_numbers or _LAYOUTS.get(lhs.ndim)
    if isinstance(padding, str) or layout is None or not _use_own(lhs, rhs, layout, 1, 1):
        return lax.conv_transpose(
            lhs,
            rhs,
            strides,
            padding,
            rhs_dilation,
            dimension_numbers,
            transpose_kernel,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    if transpose_kernel:
        # what lax does: flip the spatial axes, swap the kernel's in and out features
        rhs = jnp.flip(rhs, axis=tuple(range(n))).swapaxes(-1, -2)
    return conv_general_dilated(
        lhs,
        rhs,
        (1,) * n,
        tuple(map(tuple, padding)),
        lhs_dilation=tuple(strides),
        rhs_dilation=rhs_dilation,
        dimension_numbers=_LAYOUTS[lhs.ndim],
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


class ConvTranspose(nnx.ConvTranspose):
    """``nnx.ConvTranspose`` through ``conv_transpose`` above (``nnx.ConvTranspose`` has no hook
    for its convolution, as ``nnx.Conv`` has); what it does not cover goes to Flax's own."""

    def __call__(self, inputs):
        n = len(self.kernel_size)
        padding = self.padding
        if isinstance(padding, int):
            padding = ((padding, padding),) * n
        if (
            isinstance(padding, str)
            or self.mask is not None
            or inputs.ndim != n + 2
            or not _use_own(inputs, self.kernel[...], _LAYOUTS.get(inputs.ndim), 1, 1)
        ):
            return super().__call__(inputs)
        strides = self.strides or 1
        strides = (strides,) * n if isinstance(strides, int) else tuple(strides)
        dilation = self.kernel_dilation or 1
        dilation = (dilation,) * n if isinstance(dilation, int) else tuple(dilation)
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype(
            (inputs, self.kernel[...], bias), dtype=self.dtype
        )
        y = conv_transpose(
            inputs,
            kernel,
            strides,
            [tuple(p) if not isinstance(p, int) else (p, p) for p in padding],
            rhs_dilation=dilation,
            transpose_kernel=self.transpose_kernel,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        if bias is not None:
            y += bias.reshape((1,) * (y.ndim - 1) + bias.shape)
        return y
