"""A convolution that stays fast inside a ``lax.scan`` on a CPU: its backward written out.

XLA:CPU rewrites a convolution into its fast form (NHWC input, HWIO kernel, Eigen) in a pass
that visits only the entry computation. A ``lax.scan`` body is a while-loop body, so the
convolutions autodiff makes there for the backward pass (the kernel gradient
``f01b_i01o->01bf``, the input gradient with a flipped kernel) fall through to XLA's
unoptimised elemental convolution (jax-ml/jax#12868): a scanned epoch of ``mnist-cnn`` ran
4.3 s against 0.8 s for the same steps dispatched one by one (one core, jaxlib 0.10.2).

``conv_general_dilated`` here computes the same function with a ``jax.custom_vjp`` whose
forward and both backward convolutions are written in that fast form already (NHWC input,
HWIO kernel; strides, padding and dilations are fine there, flipped windows and other
dimension orders are not): the input gradient is the output gradient, dilated by the stride,
convolved with the flipped kernel; the kernel gradient is the input, batch and features
swapped, convolved with the output gradient as the kernel. (An im2col convolution, patches
from strided slices and one matmul, was slower here: 69 steps/s against 99 on the scanned
``mnist-cnn`` step, one core.) ``Conv`` is ``nnx.Conv`` with it as its
``conv_general_dilated``: what the tutorials write where torch writes ``nn.Conv2d``.

Two more ways out of the fast form, found on torchvision's nets (``compare.translate``'s
resnet18 and mobilenet_v2 at 32x32, ``examples/vision_profile_cpu.py``): XLA's algebraic
simplifier swaps a convolution's operands when the kernel has more pixels than the input (a
3x3 kernel on a 2x2 or 1x1 map), and the swapped one is XLA:CPU's unoptimised loop even
outside a scan, so such an input is padded in front, behind an optimization barrier (XLA
folds a bare pad back into the window); and a depthwise convolution (``feature_group_count``
= the input's features, mobilenet's) is grouped (its kernel gradient, after XLA's passes, a
``batch_group_count`` convolution): jitted, mobilenet_v2's step was 2.7x slower with those,
and inside a scan they fall to the unoptimised loops forward and backward (32x). It is
written as one multiply-add per kernel pixel instead (``_depthwise``), with no convolution
left at all.

``conv_transpose`` (and ``ConvTranspose``, the ``nnx.ConvTranspose`` that uses it: Flax's has
no hook) is not a convolution over the input dilated by the strides, which is mostly zeros,
but what that computes: each input pixel times the kernel in one matmul, the products added
into the output an offset at a time. On dcgan's generator it is 1.6-3.8x faster than lax's
(forward and backward, one core, outside any loop: ``examples/conv_layers_cpu.py``), and
inside a scan it has no convolution to lose.

Both hand over to lax at trace time on any other backend (GPU, TPU), where XLA's own
convolutions go to cuDNN, and for what they do not cover (grouped convolutions other than
depthwise ones, kernel-dilated ones other than depthwise, other layouts, padding given as a
string to ``conv_transpose``).
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

# NHWC input, HWIO kernel (and their 1-d and 3-d kin): what XLA:CPU runs fast, and nnx's own
_LAYOUTS = {
    3: ("NHC", "HIO", "NHC"),
    4: ("NHWC", "HWIO", "NHWC"),
    5: ("NHWDC", "HWDIO", "NHWDC"),
}


def _swapped(in_size, kernel_size):
    """Whether XLA may swap a convolution's operands, input for kernel, out of the fast form:
    its algebraic simplifier does when the kernel has more pixels than the unpadded input (a
    3x3 kernel on resnet18's 2x2 and 1x1 maps, forward and input gradient: XLA:CPU's
    unoptimised loops even outside a scan). Padded beforehand (behind an optimization barrier,
    or XLA folds the pad into the window again), the input is the larger."""
    return math.prod(kernel_size) > math.prod(in_size)


def _conv(x, w, strides, padding, precision, lhs_dilation=None, rhs_dilation=None):
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers=_LAYOUTS[x.ndim],
        precision=precision,
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
    # the padded input's pixels the strided windows reach: the last stride may leave some out
    covered = [(o - 1) * s + 1 for o, s in zip(dy.shape[1:-1], strides, strict=True)]
    uncovered = [p - c - k + 1 for p, c, k in zip(padded_size, covered, kernel_size, strict=True)]
    # input gradient: a full convolution of the output gradient, stride - 1 zeros between its
    # pixels (lhs dilation), with the kernel flipped and its features swapped, less the padding
    w_t = jnp.flip(w, axis=tuple(range(n))).swapaxes(-1, -2)  # (*kernel_size, out, in)
    dx_padding = [
        (k - 1 - lo, k - 1 - hi + u)
        for k, (lo, hi), u in zip(kernel_size, padding, uncovered, strict=True)
    ]
    if _swapped(dy.shape[1:-1], kernel_size):
        # all of it in front: the zeros between the pixels and the padding (see _swapped)
        zero = jnp.zeros((), dy.dtype)
        pads = [(lo, hi, s - 1) for (lo, hi), s in zip(dx_padding, strides, strict=True)]
        # the barrier keeps XLA from folding the pad back into the convolution's window
        dy_dilated = lax.optimization_barrier(lax.pad(dy, zero, [(0, 0, 0), *pads, (0, 0, 0)]))
        dx = _conv(dy_dilated, w_t, (1,) * n, ((0, 0),) * n, precision)
    else:
        dx = _conv(dy, w_t, (1,) * n, dx_padding, precision, lhs_dilation=strides)  # like x
    # kernel gradient: batch and features swapped, the output gradient (dilated by the stride)
    # as the kernel
    x_t = jnp.moveaxis(x, (0, -1), (-1, 0))  # (in_features, *in_size, batch)
    if _swapped(x.shape[1:-1], dy.shape[1:-1]) or any(
        i < c for i, c in zip(x.shape[1:-1], covered, strict=True)
    ):
        # An input smaller than this kernel makes XLA swap the two operands, out of the fast
        # form: pad it beforehand.
        zero = jnp.zeros((), x.dtype)
        x_t = lax.pad(x_t, zero, [(0, 0, 0), *((*p, 0) for p in padding), (0, 0, 0)])
        padding = ((0, 0),) * n
    dy_t = jnp.moveaxis(dy, 0, -2)  # (*out_size, batch, out_features)
    # The barrier keeps XLA from folding these transposes into the convolution's dimension
    # numbers, out of the fast form again.
    x_t, dy_t = lax.optimization_barrier((x_t, dy_t))
    dw = _conv(x_t, dy_t, (1,) * n, padding, precision, rhs_dilation=strides)
    dw = dw[(slice(None), *(slice(0, k) for k in kernel_size))]
    return dx, jnp.moveaxis(dw, 0, -2)  # (*kernel_size, in_features, out_features)


_conv_fast.defvjp(_conv_fast_fwd, _conv_fast_bwd)


def _use_own(lhs, rhs, dimension_numbers, feature_group_count, batch_group_count):
    if jax.default_backend() != "cpu" or lhs.ndim not in _LAYOUTS:
        return False
    if feature_group_count != 1 or batch_group_count != 1:
        return False
    return _fast_layout(lhs, rhs, dimension_numbers)


def _fast_layout(lhs, rhs, dimension_numbers):
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return dn == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _LAYOUTS[lhs.ndim])


def _is_depthwise(lhs, rhs, dimension_numbers, feature_group_count, batch_group_count):
    # one group per input feature, on a CPU, in the fast layout: what _depthwise computes
    if jax.default_backend() != "cpu" or lhs.ndim not in _LAYOUTS or batch_group_count != 1:
        return False
    features = lhs.shape[-1]
    return (
        features > 1
        and feature_group_count == features
        and _fast_layout(lhs, rhs, dimension_numbers)
        and rhs.shape[-2] == 1
        and rhs.shape[-1] % features == 0
    )


def _depthwise(x, w, strides, padding, lhs_dilation, rhs_dilation):
    """A depthwise convolution (``feature_group_count`` = the input's features, each group one
    input feature to ``multiplier`` outputs) as one multiply-add per kernel pixel: a strided
    slice of the padded input times that pixel's weights, summed. No convolution is left for
    XLA:CPU to run slowly (its grouped ones, and the ``batch_group_count`` kernel gradients
    it makes of them, were 2.7x slower jitted and fell to its unoptimised loops in a scan:
    module docstring). The backward is autodiff's: pads and sums."""
    n = x.ndim - 2
    kernel_size, multiplier = w.shape[:n], w.shape[-1] // x.shape[-1]
    if multiplier > 1:  # lax's output feature o reads input feature o // multiplier
        x = jnp.repeat(x, multiplier, axis=-1)
    pads = [(lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation, strict=True)]
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *pads, (0, 0, 0)])
    reach = [(k - 1) * d + 1 for k, d in zip(kernel_size, rhs_dilation, strict=True)]
    out_size = [(p - r) // s + 1 for p, r, s in zip(x.shape[1:-1], reach, strides, strict=True)]
    y = None
    for offset in itertools.product(*map(range, kernel_size)):
        start = [o * d for o, d in zip(offset, rhs_dilation, strict=True)]
        limit = [b + (o - 1) * s + 1 for b, o, s in zip(start, out_size, strides, strict=True)]
        window = lax.slice(x, (0, *start, 0), (x.shape[0], *limit, x.shape[-1]), (1, *strides, 1))
        term = window * w[(*offset, 0)].reshape((1,) * (n + 1) + (-1,))
        y = term if y is None else y + term
    return y  # (batch, *out_size, features * multiplier)


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
    if kwargs.get("out_sharding") is not None or preferred_element_type is not None:
        return as_lax()
    depthwise = _is_depthwise(lhs, rhs, dimension_numbers, feature_group_count, batch_group_count)
    if not depthwise and (
        rhs_dilation != (1,) * n
        or not _use_own(lhs, rhs, dimension_numbers, feature_group_count, batch_group_count)
    ):
        return as_lax()
    if isinstance(padding, str):
        dilated_in = [
            (d - 1) * (k - 1) + d for d, k in zip(lhs.shape[1:-1], lhs_dilation, strict=True)
        ]
        dilated_k = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:n], rhs_dilation, strict=True)]
        padding = lax.padtype_to_pads(dilated_in, dilated_k, strides, padding)
    if depthwise:
        reach = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:n], rhs_dilation, strict=True)]
        padded = [
            (size - 1) * d + 1 + lo + hi
            for size, d, (lo, hi) in zip(lhs.shape[1:-1], lhs_dilation, padding, strict=True)
        ]
        if 0 in lhs.shape or any(p < r for p, r in zip(padded, reach, strict=True)):
            return as_lax()  # nothing to compute: lax's shapes and errors
        return _depthwise(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation)
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
    if _swapped(x.shape[1:-1], rhs.shape[:n]):
        x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((*p, 0) for p in inner), (0, 0, 0)])
        x = lax.optimization_barrier(x)  # or XLA folds the pad back into the window
        inner = [(0, 0)] * n
    padded = [size + lo + hi for size, (lo, hi) in zip(x.shape[1:-1], inner, strict=True)]
    if 0 in x.shape or any(p < k for p, k in zip(padded, rhs.shape[:n], strict=True)):
        return as_lax()  # nothing to compute: lax's shapes and errors
    return _conv_fast(x, rhs, strides, tuple(inner), precision)  # (batch, *out_size, out_features)


def _offset_pads(offset, kernel_size, strides, dilation):
    # where one kernel offset's products land: stride - 1 zeros between them, shifted by the
    # offset, in (in_size - 1) * stride + dilated kernel pixels
    return [
        (0, 0, 0),
        *(
            (o * d, (k - 1 - o) * d, s - 1)
            for o, k, s, d in zip(offset, kernel_size, strides, dilation, strict=True)
        ),
        (0, 0, 0),
    ]


def _phase_layout(in_size, kernel_size, strides):
    # by phase: output pixel p = s * q + a takes offset o = s * j + a from input pixel q - j;
    # per axis, J = ceil(k / s) shifts, phase grids of in + J - 1 pixels, s of them interleaved
    shifts = [-(-k // s) for k, s in zip(kernel_size, strides, strict=True)]
    grid = [i + j - 1 for i, j in zip(in_size, shifts, strict=True)]
    return shifts, grid


def _by_phase(products, kernel_size, strides):
    """``_overlap_add`` without dilation: each offset's products shifted (an unstrided pad)
    into the grid of its phase, the phase grids interleaved by a reshape. Each output pixel
    adds the same products in the same order (offsets in row-major order) as the pads below,
    so the two are equal to the last bit; here the additions cover the output once per
    offset of one phase instead of once per offset."""
    n = len(kernel_size)
    batch, in_size, out_features = products.shape[0], products.shape[1 : 1 + n], products.shape[-1]
    shifts, grid = _phase_layout(in_size, kernel_size, strides)
    grids = {}
    for i, offset in enumerate(itertools.product(*map(range, kernel_size))):
        phase = tuple(o % s for o, s in zip(offset, strides, strict=True))
        shift = [o // s for o, s in zip(offset, strides, strict=True)]
        part = lax.index_in_dim(products, i, axis=n + 1, keepdims=False)
        pads = [(0, 0), *((j, big - 1 - j) for j, big in zip(shift, shifts, strict=True)), (0, 0)]
        part = jnp.pad(part, pads)  # (batch, *grid, out_features)
        grids[phase] = part if phase not in grids else grids[phase] + part
    zeros = jnp.zeros((batch, *grid, out_features), products.dtype)

    def interleave(prefix):  # (batch, g1, s1, g2, s2, ..., out_features), one axis at a time
        if len(prefix) == n:
            return grids.get(prefix, zeros)
        depth = len(prefix)
        # the children hold axes depth + 1 on as (grid, stride) pairs, the earlier ones whole
        return jnp.stack([interleave((*prefix, a)) for a in range(strides[depth])], axis=2 + depth)

    y = interleave(()).reshape(batch, *(g * s for g, s in zip(grid, strides, strict=True)), -1)
    size = [(i - 1) * s + k for i, s, k in zip(in_size, strides, kernel_size, strict=True)]
    return y[(slice(None), *(slice(0, m) for m in size), slice(None))]


def _by_phase_bwd(shape, kernel_size, strides, dy):
    # the transpose of _by_phase: dy padded to whole phase grids, split by phase with a
    # reshape, then one unstrided slice per offset: data movement only, as the strided slices
    n = len(kernel_size)
    in_size = shape[1 : 1 + n]
    shifts, grid = _phase_layout(in_size, kernel_size, strides)
    full = [g * s for g, s in zip(grid, strides, strict=True)]
    dy = jnp.pad(
        dy, [(0, 0), *((0, f - d) for f, d in zip(full, dy.shape[1:-1], strict=True)), (0, 0)]
    )
    split = [d for g, s in zip(grid, strides, strict=True) for d in (g, s)]
    dy = dy.reshape(dy.shape[0], *split, dy.shape[-1])  # (batch, g1, s1, g2, s2, ..., out)
    slices = []
    for offset in itertools.product(*map(range, kernel_size)):
        at = [slice(None)]
        for o, s, i in zip(offset, strides, in_size, strict=True):
            j = o // s
            at += [slice(j, j + i), o % s]
        slices.append(dy[(*at, slice(None))])  # (batch, *in_size, out_features)
    return jnp.stack(slices, axis=-2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _overlap_add(products, kernel_size, strides, dilation):
    """Each kernel offset's (batch, *in_size, out_features) products, added into the output
    at that offset, stride steps apart: (batch, *((in_size - 1) * strides + dilated kernel),
    out_features). Its backward takes one slice per offset (autodiff's would pad each
    offset's gradient back to all of ``products``: kernel pixels squared times the work).
    Without kernel dilation (dcgan's) by phase, ``_by_phase``; with it, one interior-padded
    ``lax.pad`` per offset into the whole output."""
    n = len(kernel_size)
    if all(d == 1 for d in dilation):
        return _by_phase(products, kernel_size, strides)
    zero = jnp.zeros((), products.dtype)
    return sum(
        lax.pad(
            lax.index_in_dim(products, i, axis=n + 1, keepdims=False),
            zero,
            _offset_pads(offset, kernel_size, strides, dilation),
        )
        for i, offset in enumerate(itertools.product(*map(range, kernel_size)))
    )


def _overlap_add_fwd(products, kernel_size, strides, dilation):
    return _overlap_add(products, kernel_size, strides, dilation), products.shape


def _overlap_add_bwd(kernel_size, strides, dilation, shape, dy):
    if all(d == 1 for d in dilation):
        return (_by_phase_bwd(shape, kernel_size, strides, dy),)
    in_size = shape[1:-2]
    slices = []
    for offset in itertools.product(*map(range, kernel_size)):
        start = [o * d for o, d in zip(offset, dilation, strict=True)]
        limit = [b + (i - 1) * s + 1 for b, i, s in zip(start, in_size, strides, strict=True)]
        slices.append(
            lax.slice(
                dy,
                (0, *start, 0),
                (dy.shape[0], *limit, dy.shape[-1]),
                (1, *strides, 1),
            )
        )
    return (jnp.stack(slices, axis=-2),)  # (batch, *in_size, kernel pixels, out_features)


_overlap_add.defvjp(_overlap_add_fwd, _overlap_add_bwd)


def _one_pixel(lhs, dilation):
    return all(size == 1 for size in lhs.shape[1:-1]) and all(d == 1 for d in dilation)


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
    # Not a convolution over the input dilated by the strides (at stride 2, three zeros in
    # every four pixels; from dcgan's 1x1 input padded to 13x13, 168 in 169) but what that
    # computes: each input pixel times the kernel, one matmul, added into the output at
    # stride steps (by phase, or one lax.pad per kernel offset with kernel dilation). Its
    # backward is slices and matmuls.
    kernel = rhs.swapaxes(-1, -2) if transpose_kernel else jnp.flip(rhs, axis=tuple(range(n)))
    kernel_size, in_features, out_features = (
        kernel.shape[:n],
        kernel.shape[-2],
        kernel.shape[-1],
    )
    dilation = _ones(rhs_dilation, n)
    dilated_k = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation, strict=True)]
    products = jnp.einsum(
        "...c,kco->...ko",
        lhs,
        kernel.reshape(-1, in_features, out_features),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )  # (batch, *in_size, kernel pixels, out_features)
    if _one_pixel(lhs, dilation):
        # one input pixel (dcgan's noise, 1x1): nothing overlaps, each kernel offset's product
        # is its own output pixel, so the overlap-add is a reshape (the same numbers: it adds
        # only zeros); a dense layer, 12x faster forward and backward than the pads on a CPU
        y = products.reshape(products.shape[0], *kernel_size, out_features)
    else:
        y = _overlap_add(products, tuple(kernel_size), tuple(strides), tuple(dilation))
    zero = jnp.zeros((), y.dtype)
    # lax's padding is of the dilated input: here, less the kernel's reach on each side
    crop = [(lo - k + 1, hi - k + 1, 0) for (lo, hi), k in zip(padding, dilated_k, strict=True)]
    return lax.pad(y, zero, [(0, 0, 0), *crop, (0, 0, 0)])  # (batch, *out_size, out_features)


# nnx.Conv on this convolution: what the tutorials write where torch writes nn.Conv2d
Conv = functools.partial(nnx.Conv, conv_general_dilated=conv_general_dilated)


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
