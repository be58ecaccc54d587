"""jaxnets/_conv.py: lax's convolution, with every convolution of its backward kept in XLA:CPU's
fast form inside a scan (jax-ml/jax#12868).

Equal to lax in float64 (values, input and kernel gradients) for every convolution the
tutorials use and a few they do not; it is really taken (not a silent hand-over to lax); on a
GPU, and for what it does not cover, lax's own; and the compiled whole-epoch scans of
``mnist-cnn``, ``mnist-resnet`` and ``dcgan`` hold only fast-form convolutions, where lax's
own leaves them (the control). Depthwise convolutions (mobilenet_v2's), as multiply-adds,
equal lax's grouped ones in float64 too, and a scan over resnet18's and mobilenet_v2's
awkward convolutions (3x3 kernels on 2x2 and 1x1 maps, depthwise) holds no swapped or grouped
convolution, where lax's, or the padding in front left out, does (the controls).
"""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxnets import _conv, _train, dcgan, mnist_cnn, mnist_resnet

ROOT = Path(__file__).resolve().parents[1]
NHWC = ("NHWC", "HWIO", "NHWC")
FAST = "b01f_01io->b01f"  # NHWC input, HWIO kernel, NHWC output: what XLA:CPU runs fast

# (input shape, kernel shape, strides, padding): the tutorials' convolutions first
CONVS = {
    "mnist-cnn conv1 5x5 valid": ((3, 28, 28, 1), (5, 5, 1, 10), (1, 1), "VALID"),
    "mnist-cnn conv2 5x5 valid": ((3, 12, 12, 10), (5, 5, 10, 20), (1, 1), "VALID"),
    "mnist-resnet rblock 3x3 pad 1": ((3, 12, 12, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1))),
    "mnist-resnet conv2 5x5 valid": ((3, 12, 12, 16), (5, 5, 16, 32), (1, 1), "VALID"),
    "dcgan D 4x4 stride 2 pad 1": ((3, 28, 28, 1), (4, 4, 1, 16), (2, 2), ((1, 1), (1, 1))),
    "dcgan D 4x4 stride 2 pad 1 (16)": ((3, 14, 14, 16), (4, 4, 16, 32), (2, 2), ((1, 1), (1, 1))),
    "dcgan D 7x7 valid to 1x1": ((3, 7, 7, 32), (7, 7, 32, 1), (1, 1), "VALID"),
    "SAME, strides (2, 3)": ((2, 9, 10, 3), (3, 2, 3, 4), (2, 3), "SAME"),
    "stride leaves pixels uncovered": ((2, 10, 11, 3), (3, 3, 3, 4), (2, 3), "VALID"),
    "crop and uneven padding": ((2, 9, 10, 3), (3, 3, 3, 4), (1, 1), ((-1, 2), (0, 1))),
    "padding wider than the kernel": ((2, 6, 6, 2), (3, 3, 2, 3), (1, 1), ((3, 2), (4, 3))),
    "1-d": ((2, 17, 3), (4, 3, 5), (2,), ((1, 2),)),
    # resnet18's last maps: a kernel with more pixels than the input, which XLA would swap
    "resnet18 layer3 3x3 on 2x2": ((3, 2, 2, 6), (3, 3, 6, 5), (1, 1), ((1, 1), (1, 1))),
    "resnet18 layer4 3x3 on 1x1": ((3, 1, 1, 6), (3, 3, 6, 5), (1, 1), ((1, 1), (1, 1))),
    "resnet18 layer4.0 3x3 stride 2, 2x2 to 1x1": (
        (3, 2, 2, 6),
        (3, 3, 6, 5),
        (2, 2),
        ((1, 1), (1, 1)),
    ),
    "resnet18 layer3.0 3x3 stride 2, 4x4 to 2x2": (
        (3, 4, 4, 6),
        (3, 3, 6, 5),
        (2, 2),
        ((1, 1), (1, 1)),
    ),
    "5x5 on 3x1, uneven padding": ((2, 3, 1, 2), (5, 5, 2, 3), (1, 1), ((2, 1), (2, 3))),
}

# depthwise: (input shape, kernel shape, strides, padding, extra lax arguments), groups =
# the input's features; mobilenet_v2's first
DEPTHWISE = {
    "mobilenet_v2 3x3 pad 1": ((3, 8, 8, 6), (3, 3, 1, 6), (1, 1), ((1, 1), (1, 1)), {}),
    "mobilenet_v2 3x3 stride 2 pad 1": ((3, 8, 8, 6), (3, 3, 1, 6), (2, 2), ((1, 1), (1, 1)), {}),
    "3x3 on 1x1": ((3, 1, 1, 4), (3, 3, 1, 4), (1, 1), ((1, 1), (1, 1)), {}),
    "multiplier 3, SAME, strides (2, 1)": ((2, 7, 8, 4), (3, 3, 1, 12), (2, 1), "SAME", {}),
    "5x3, stride leaves pixels uncovered": ((2, 10, 11, 3), (5, 3, 1, 3), (2, 3), "VALID", {}),
    "crop and uneven padding": ((2, 9, 10, 3), (3, 3, 1, 3), (1, 1), ((-1, 2), (0, 1)), {}),
    "kernel-dilated": (
        (2, 9, 9, 3),
        (3, 2, 1, 3),
        (1, 1),
        ((2, 0), (1, 1)),
        {"rhs_dilation": (2, 3)},
    ),
    "input-dilated": (
        (2, 6, 6, 3),
        (3, 3, 1, 3),
        (1, 1),
        ((1, 1), (2, 1)),
        {"lhs_dilation": (2, 1)},
    ),
    "1-d, multiplier 2": ((2, 17, 3), (4, 1, 6), (2,), ((1, 2),), {}),
}

# dcgan's generator: nnx.ConvTranspose(transpose_kernel=True), torch's (k, stride, padding)
CONV_TRANSPOSES = {
    "dcgan G 7x7 from 1x1": ((3, 1, 1, 100), 100, 32, 7, 1, 0),
    "dcgan G 4x4 stride 2": ((3, 7, 7, 32), 32, 16, 4, 2, 1),
    "dcgan G 4x4 stride 2 to 1": ((3, 14, 14, 16), 16, 1, 4, 2, 1),
}


def _assert_equal(ours, theirs):
    # float64: the two sum the same products in different orders; rounding, no more
    for a, b in zip(ours, theirs, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def _value_and_grads(conv, x, w, dy):
    y, vjp = jax.vjp(conv, x, w)
    return (y, *vjp(dy))  # y, dL/dx, dL/dw for the cotangent dy


@pytest.mark.parametrize("case", CONVS)
def test_conv_equals_lax_float64(case):
    x_shape, w_shape, strides, padding = CONVS[case]
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=x_shape), rng.normal(size=w_shape)
    dn = NHWC if len(x_shape) == 4 else ("NHC", "HIO", "NHC")

    def ours(x, w):
        return _conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)

    def theirs(x, w):
        return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)

    # taken, not handed over to lax: its own backward is a custom VJP
    assert "custom_vjp_call" in str(jax.make_jaxpr(ours)(x, w))
    dy = rng.normal(size=jax.eval_shape(theirs, x, w).shape)
    _assert_equal(_value_and_grads(ours, x, w, dy), _value_and_grads(theirs, x, w, dy))


def _depthwise_pair(case):
    x_shape, w_shape, strides, padding, kwargs = DEPTHWISE[case]
    dn = NHWC if len(x_shape) == 4 else ("NHC", "HIO", "NHC")
    kwargs = dict(kwargs, dimension_numbers=dn, feature_group_count=x_shape[-1])

    def ours(x, w):
        return _conv.conv_general_dilated(x, w, strides, padding, **kwargs)

    def theirs(x, w):
        return lax.conv_general_dilated(x, w, strides, padding, **kwargs)

    rng = np.random.default_rng(4)
    return ours, theirs, rng.normal(size=x_shape), rng.normal(size=w_shape), rng


@pytest.mark.parametrize("case", DEPTHWISE)
def test_depthwise_equals_lax_float64(case):
    ours, theirs, x, w, rng = _depthwise_pair(case)
    # taken: multiply-adds, no convolution left for XLA:CPU
    assert "conv_general_dilated" not in str(jax.make_jaxpr(ours)(x, w))
    dy = rng.normal(size=jax.eval_shape(theirs, x, w).shape)
    _assert_equal(_value_and_grads(ours, x, w, dy), _value_and_grads(theirs, x, w, dy))


def test_depthwise_multiplier_order_matters(monkeypatch):
    # the control: lax's output feature o reads input feature o // multiplier (a repeat); the
    # features tiled instead (o reads o % features) are caught
    ours, theirs, x, w, rng = _depthwise_pair("multiplier 3, SAME, strides (2, 1)")
    dy = rng.normal(size=jax.eval_shape(theirs, x, w).shape)
    want = _value_and_grads(theirs, x, w, dy)
    _assert_equal(_value_and_grads(ours, x, w, dy), want)
    monkeypatch.setattr(
        _conv.jnp, "repeat", lambda a, repeats, axis: jnp.concatenate([a] * repeats, axis=axis)
    )
    with pytest.raises(AssertionError):
        _assert_equal(_value_and_grads(ours, x, w, dy), want)


@pytest.mark.parametrize("case", CONV_TRANSPOSES)
def test_conv_transpose_equals_flax_float64(case):
    x_shape, in_features, out_features, k, stride, padding = CONV_TRANSPOSES[case]
    pad = k - 1 - padding  # as dcgan.conv_transpose spells torch's padding
    kwargs = dict(
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        transpose_kernel=True,
        use_bias=True,
        param_dtype=jnp.float64,
    )
    ours = _conv.ConvTranspose(in_features, out_features, (k, k), rngs=nnx.Rngs(0), **kwargs)
    theirs = nnx.ConvTranspose(in_features, out_features, (k, k), rngs=nnx.Rngs(0), **kwargs)
    rng = np.random.default_rng(1)
    x = rng.normal(size=x_shape)
    ours.bias.set_value(jnp.asarray(rng.normal(size=out_features)))
    theirs.bias.set_value(ours.bias.get_value())
    np.testing.assert_array_equal(ours.kernel.get_value(), theirs.kernel.get_value())

    def call(layer):
        graphdef, params = nnx.split(layer)
        return lambda x, params: nnx.merge(graphdef, params)(x), params

    f_ours, p_ours = call(ours)
    f_theirs, p_theirs = call(theirs)
    jaxpr = str(jax.make_jaxpr(f_ours)(x, p_ours))
    one_pixel = x_shape[1:3] == (1, 1)  # a reshape, not _overlap_add
    assert ("custom_vjp_call" in jaxpr) is not one_pixel
    dy = rng.normal(size=jax.eval_shape(f_theirs, x, p_theirs).shape)
    y, dx, dp = _value_and_grads(f_ours, x, p_ours, dy)
    y_ref, dx_ref, dp_ref = _value_and_grads(f_theirs, x, p_theirs, dy)
    _assert_equal(
        (y, dx, dp["kernel"].get_value(), dp["bias"].get_value()),
        (y_ref, dx_ref, dp_ref["kernel"].get_value(), dp_ref["bias"].get_value()),
    )


def _overlap_add_by_pads(products, kernel_size, strides):
    """The overlap-add as it was written first: one interior-padded ``lax.pad`` per kernel
    offset into the whole output, summed in row-major order (what the kernel-dilated case
    still does)."""
    n = len(kernel_size)
    offsets = itertools.product(*map(range, kernel_size))
    return sum(
        lax.pad(
            lax.index_in_dim(products, i, axis=n + 1, keepdims=False),
            jnp.zeros((), products.dtype),
            _conv._offset_pads(offset, kernel_size, strides, (1,) * n),
        )
        for i, offset in enumerate(offsets)
    )


# (input size, kernel, strides): dcgan's 4x4 stride 2; kernels not a multiple of the stride
# (a phase with fewer offsets, or none: kernel 2, stride 3); 1-d and 3-d
OVERLAP_ADDS = {
    "dcgan G 4x4 stride 2 on 7x7": ((7, 7), (4, 4), (2, 2)),
    "3x4 kernel, strides 2 and 3": ((5, 6), (3, 4), (2, 3)),
    "5x3 kernel, strides 1 and 2": ((3, 5), (5, 3), (1, 2)),
    "stride past the kernel (a phase of zeros)": ((4,), (2,), (3,)),
    "3-d": ((2, 3, 2), (3, 2, 2), (2, 1, 2)),
}


@pytest.mark.parametrize("case", OVERLAP_ADDS)
def test_overlap_add_by_phase_is_the_pads_bit_for_bit(case):
    """Without kernel dilation the overlap-add shifts each offset into the grid of its phase
    and interleaves the grids (dcgan's generator: 7x faster forward and backward on a CPU);
    each output pixel adds the same products in the same order, so values and gradients
    equal the pads' form exactly, in float64."""
    in_size, kernel, strides = OVERLAP_ADDS[case]
    rng = np.random.default_rng(8)
    products = rng.normal(size=(2, *in_size, int(np.prod(kernel)), 3))

    def ours(p):
        return _conv._overlap_add(p, kernel, strides, (1,) * len(kernel))

    assert "pad[" in str(jax.make_jaxpr(ours)(products))
    y, vjp = jax.vjp(ours, products)
    y_ref, vjp_ref = jax.vjp(lambda p: _overlap_add_by_pads(p, kernel, strides), products)
    assert y.shape == y_ref.shape
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.normal(size=y.shape)
    np.testing.assert_array_equal(vjp(dy)[0], vjp_ref(dy)[0])


@pytest.mark.parametrize("transpose_kernel", [True, False], ids=["flipped kernel", "as given"])
@pytest.mark.parametrize("stride", [1, 2])
def test_one_input_pixel_is_the_overlap_add_bit_for_bit(transpose_kernel, stride, monkeypatch):
    """From one input pixel (dcgan's 1x1 noise) the transposed convolution is a reshape of the
    products; the overlap-add it skips adds only zeros to them, so the two are equal to the
    last bit, values and gradients (the control: a 2x1 input still overlap-adds)."""
    rng = np.random.default_rng(7)
    x, w = rng.normal(size=(3, 1, 1, 5)), rng.normal(size=(7, 6, 5, 4))
    if transpose_kernel:
        w = w.swapaxes(-1, -2)

    def new_conv():  # a new function each time: JAX caches what it traced for a function
        def conv(x, w):
            pads = ((6, 5), (4, 3))
            return _conv.conv_transpose(
                x, w, (stride,) * 2, pads, transpose_kernel=transpose_kernel
            )

        return conv

    conv = new_conv()
    dy = rng.normal(size=jax.eval_shape(conv, x, w).shape)
    assert "custom_vjp_call" not in str(jax.make_jaxpr(conv)(x, w))
    ours = _value_and_grads(conv, x, w, dy)
    monkeypatch.setattr(_conv, "_one_pixel", lambda *args: False)
    conv = new_conv()
    assert "custom_vjp_call" in str(jax.make_jaxpr(conv)(x, w))
    for a, b in zip(ours, _value_and_grads(conv, x, w, dy), strict=True):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    x2 = rng.normal(size=(3, 2, 1, 5))
    assert "custom_vjp_call" in str(jax.make_jaxpr(new_conv())(x2, w))


@pytest.mark.parametrize(
    "transpose_kernel, rhs_dilation, padding",
    [
        (True, None, ((1, 2), (0, 3))),
        (False, None, ((2, 2), (2, 2))),
        (False, (2, 1), ((3, 0), (1, 1))),
    ],
    ids=["flipped kernel, uneven padding", "as given", "kernel-dilated"],
)
def test_conv_transpose_function_equals_lax_float64(transpose_kernel, rhs_dilation, padding):
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(2, 5, 6, 3)), rng.normal(size=(3, 4, 3, 4))
    if transpose_kernel:
        w = w.swapaxes(-1, -2)  # (*kernel_size, out, in)
    kwargs = dict(
        rhs_dilation=rhs_dilation, dimension_numbers=NHWC, transpose_kernel=transpose_kernel
    )

    def ours(x, w):
        return _conv.conv_transpose(x, w, (2, 3), padding, **kwargs)

    def theirs(x, w):
        return lax.conv_transpose(x, w, (2, 3), padding, **kwargs)

    assert "conv_general_dilated" not in str(jax.make_jaxpr(ours)(x, w))  # a matmul and pads
    dy = rng.normal(size=jax.eval_shape(theirs, x, w).shape)
    _assert_equal(_value_and_grads(ours, x, w, dy), _value_and_grads(theirs, x, w, dy))


@pytest.mark.parametrize(
    "kwargs",
    [{"feature_group_count": 2}, {"rhs_dilation": (2, 2)}],
    ids=["grouped", "kernel-dilated"],
)
def test_what_it_does_not_cover_is_lax(kwargs):
    rng = np.random.default_rng(2)
    x, w = (
        rng.normal(size=(2, 9, 9, 4)),
        rng.normal(size=(3, 3, 4 // kwargs.get("feature_group_count", 1), 6)),
    )

    def ours(x, w):
        return _conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, **kwargs)

    def theirs(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC, **kwargs)

    assert "custom_vjp_call" not in str(jax.make_jaxpr(ours)(x, w))
    dy = rng.normal(size=jax.eval_shape(theirs, x, w).shape)
    _assert_equal(_value_and_grads(ours, x, w, dy), _value_and_grads(theirs, x, w, dy))


def test_on_a_gpu_it_is_lax(monkeypatch):
    x, w = jnp.zeros((2, 28, 28, 1)), jnp.zeros((5, 5, 1, 10))
    layer = _conv.ConvTranspose(
        1, 2, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), rngs=nnx.Rngs(0)
    )

    def jaxpr():  # a new function each time: traced afresh, not taken from a cache
        def both(x, w):
            y = _conv.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=NHWC)
            return y, layer(x)

        return str(jax.make_jaxpr(both)(x, w))

    assert jaxpr().count("custom_vjp_call") == 2
    monkeypatch.setattr(_conv.jax, "default_backend", lambda: "gpu")
    jaxpr = jaxpr()
    assert "custom_vjp_call" not in jaxpr and jaxpr.count("conv_general_dilated") == 2


def test_depthwise_on_a_gpu_is_lax(monkeypatch):
    x, w = jnp.zeros((2, 8, 8, 4)), jnp.zeros((3, 3, 1, 4))

    def jaxpr():  # a new function each time: traced afresh
        def depthwise(x, w):
            return _conv.conv_general_dilated(
                x, w, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=4
            )

        return str(jax.make_jaxpr(depthwise)(x, w))

    assert "conv_general_dilated" not in jaxpr()
    monkeypatch.setattr(_conv.jax, "default_backend", lambda: "gpu")
    assert "feature_group_count=4" in jaxpr()


class _LaxConvNet(nnx.Module):
    """mnist-cnn's first layer on lax's own convolution: the control."""

    def __init__(self, *, rngs):
        self.conv = nnx.Conv(1, 4, (5, 5), padding="VALID", rngs=rngs)
        self.fc = nnx.Linear(24 * 24 * 4, 10, rngs=rngs)

    def __call__(self, x):
        return self.fc(nnx.relu(self.conv(x)).reshape(len(x), -1))


def _lax_conv_module():
    import optax

    def new_model(hp, rngs):
        return _LaxConvNet(rngs=rngs)

    def new_optimizer(model, hp):
        return nnx.Optimizer(model, optax.sgd(0.01), wrt=nnx.Param)

    return new_model, new_optimizer, mnist_cnn.train_step


class _HP:
    lr, momentum, betas, latent_size, ngf, ndf = 0.01, 0.5, (0.5, 0.999), 100, 16, 16


def _scanned_epoch_hlo(name):
    """The optimized HLO of two scanned steps of batch 8, float32, as ``train_epoch`` runs it."""
    if name == "lax-conv":
        new_model, new_optimizer, train_step = _lax_conv_module()
    else:
        module = {"mnist-cnn": mnist_cnn, "mnist-resnet": mnist_resnet, "dcgan": dcgan}[name]
        new_model, new_optimizer, train_step = (
            module.new_model,
            module.new_optimizer,
            module.train_step,
        )
    model = new_model(_HP, nnx.Rngs(0))
    model = jax.tree.map(lambda a: a.astype(jnp.float32) if a.dtype == jnp.float64 else a, model)
    graphdef, state = nnx.split((model, new_optimizer(model, _HP)))
    x, y = jnp.zeros((16, 28, 28, 1), jnp.float32), jnp.zeros(16, jnp.int32)
    idx = np.arange(16).reshape(2, 8)
    lowered = _train._scan_batches.lower(train_step, graphdef, state, x, y, idx)
    return lowered.compile().as_text()


def _conv_labels(hlo):
    return [
        re.search(r"dim_labels=([^,\s]+)", line).group(1)
        for line in hlo.splitlines()
        if " convolution(" in line
    ]


def test_lax_convolution_in_a_scan_leaves_the_fast_form():
    # the control: what the test below would see if the models used lax's convolution
    hlo = _scanned_epoch_hlo("lax-conv")
    assert any(label != FAST for label in _conv_labels(hlo)) or "wrapped_convolution" in hlo


@pytest.mark.parametrize("name", ["mnist-cnn", "mnist-resnet", "dcgan"])
def test_scanned_epoch_has_only_fast_convolutions(name):
    hlo = _scanned_epoch_hlo(name)
    labels = _conv_labels(hlo)
    assert labels and set(labels) == {FAST}, labels
    assert "wrapped_convolution" not in hlo  # jaxlib 0.11 loop-fuses a slow one instead


class _SmallMapsNet(nnx.Module):
    """resnet18's and mobilenet_v2's awkward convolutions on 4x4 images: 3x3 kernels on 2x2
    and 1x1 maps, strided into them, and depthwise ones (``conv`` is the convolution)."""

    def __init__(self, conv, *, rngs):
        def layer(i, o, strides=1, groups=1):
            return nnx.Conv(
                i,
                o,
                (3, 3),
                strides=strides,
                padding=((1, 1), (1, 1)),
                feature_group_count=groups,
                conv_general_dilated=conv,
                rngs=rngs,
            )

        self.convs = nnx.List(
            [
                layer(2, 4, strides=2),  # 4x4 to 2x2
                layer(4, 4),  # 3x3 on 2x2
                layer(4, 4, groups=4),  # depthwise
                layer(4, 8, strides=2),  # 2x2 to 1x1
                layer(8, 8),  # 3x3 on 1x1
                layer(8, 8, strides=2, groups=8),
            ]
        )
        self.fc = nnx.Linear(8, 10, rngs=rngs)

    def __call__(self, x):
        for conv in self.convs:
            x = nnx.relu(conv(x))
        return self.fc(x.reshape(len(x), -1))


def _small_maps_scan_hlo(conv):
    import optax

    model = _SmallMapsNet(conv, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.01, momentum=0.9), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    x, y = jnp.zeros((16, 4, 4, 2), jnp.float32), jnp.zeros(16, jnp.int32)
    idx = np.arange(16).reshape(2, 8)
    lowered = _train._scan_batches.lower(mnist_cnn.train_step, graphdef, state, x, y, idx)
    return lowered.compile().as_text()


def _slow_convolutions(hlo):
    # swapped operands (not the fast form) or grouped: XLA:CPU's unoptimised loops in a scan;
    # jaxlib 0.11 wraps such a one in a loop fusion of its own
    lines = [line for line in hlo.splitlines() if " convolution(" in line]
    assert lines
    slow = [
        line
        for line in lines
        if re.search(r"dim_labels=([^,\s]+)", line).group(1) != FAST or "group_count=" in line
    ]
    return slow + (["wrapped_convolution"] if "wrapped_convolution" in hlo else [])


def test_small_maps_and_depthwise_scan_has_only_fast_convolutions():
    assert _slow_convolutions(_small_maps_scan_hlo(_conv.conv_general_dilated)) == []


@pytest.mark.slow  # a third scan compiled (20 s): the control of the test above
def test_small_maps_control_operands_swapped(monkeypatch):
    # the controls: without the padding in front, XLA swaps the operands of the 3x3 kernels
    # on 2x2 and 1x1 maps; lax's own depthwise convolutions stay grouped
    monkeypatch.setattr(_conv, "_swapped", lambda in_size, kernel_size: False)
    assert _slow_convolutions(_small_maps_scan_hlo(_conv.conv_general_dilated))
    monkeypatch.undo()
    assert any(
        "group_count=" in line
        for line in _slow_convolutions(_small_maps_scan_hlo(lax.conv_general_dilated))
    )


_COMPILE_SCAN = """
import sys
sys.path.insert(0, "tests")
import jax
jax.config.update("jax_default_matmul_precision", "highest")
import test_conv
test_conv._scanned_epoch_hlo(sys.argv[1])
"""


def _fallbacks(name):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
        TF_CPP_MIN_LOG_LEVEL="0",
        TF_CPP_VMODULE="thunk_emitter=2",
    )
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCAN, name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr.count("Falling back to unoptimized convolution")


def test_compiled_scan_logs_no_convolution_fallback():
    # XLA:CPU says so when it emits the unoptimised convolution; jaxlib 0.11 wraps it in a loop
    # fusion instead and says nothing (the HLO tests above cover both)
    control = _fallbacks("lax-conv")
    if control == 0:
        pytest.skip(f"jaxlib {jax.__version__} does not log its convolution fallback")
    assert _fallbacks("mnist-cnn") == 0


def test_auto_scans_these_conv_nets_on_a_cpu():
    # train_epoch(loop="auto") steps only where lax's own convolution would sit in the scan
    rngs = nnx.Rngs(0)
    models = [mnist_cnn.Model(rngs=rngs), mnist_resnet.Net(rngs=rngs), dcgan.DCGAN(rngs=rngs)]
    assert not any(_train.scan_is_slower(model) for model in models)
    assert _train.scan_is_slower(_LaxConvNet(rngs=rngs)) == (jax.default_backend() == "cpu")
    assert _train.scan_is_slower(nnx.ConvTranspose(1, 2, (3, 3), rngs=rngs))
