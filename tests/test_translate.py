"""``compare.translate`` and ``twinnets translate``: torch modules written as Flax NNX source.

Fast tier: a small CNN and a recurrent net translate and pass ``check`` in float64; every
layer and op rule the translator has is run against torch's forward pass (a wrong rule, a
dim not remapped, a missing transpose, shows as an O(1) difference; ``test_a_broken_rule_
is_caught`` proves the harness sees eight kinds of slip), and ``test_every_rule_is_exercised_
by_a_case`` holds the translator's rule tables to those cases; the tutorials' torch models
translate to the parameter tree of their hand-written twins; a forward fx cannot trace
symbolically (rnn-sincos's loop over a size) translates through the trace on the example's
sizes, and its module refuses other sizes; the command's weights, as
``.safetensors`` and as an Orbax checkpoint restored by docs/TRANSLATE.md's own lines; what
cannot be translated ends in one line, exit 2 and no file. Random compositions of the
supported layers: tests/test_translate_property.py. Slow tier: torchvision's resnet18
through the command line.
"""

import collections
import copy
import functools
import inspect
import pathlib
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from compare import port
from compare.errors import CompareError
from compare.toolkit import translate as tr
from compare.toolkit import translate_cli
from compare.tutorials import models


def _flax_input(x):
    x = x.detach().numpy()
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _torch_output(out):
    while isinstance(out, tuple | list):
        out = out[0]
    return out.detach().numpy()


def _flax_output(out):
    while isinstance(out, tuple | list):
        out = out[0]
    return np.asarray(out)


def assert_forward_equal(module, x, rtol=1e-9):
    """Translate ``module`` and run both in float64 on ``x`` (training mode unless the
    module is in eval mode): the outputs agree and the state paths are the torch keys."""
    module = module.double()
    x = x.double() if x.is_floating_point() else x
    result = tr.translate(module, x)
    flax_keys = set(port.mapping(result.module))
    assert flax_keys | {k for k in module.state_dict() if "num_batches" in k} >= set(
        module.state_dict()
    )
    want = _torch_output(module(x))
    got = _flax_output(result.module(_flax_input(x)))
    assert got.shape == want.shape
    scale = max(np.abs(want).max(), 1e-12)
    assert np.abs(got - want).max() / scale < rtol, result.source
    return result


# -- the two nets of the fast tier: translated, then trained in float64 lockstep --------------


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16 * 3 * 3, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # channel-major: the transpose back to NCHW first
        return self.fc(self.drop(x))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.rnn = nn.GRU(6, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, tokens):
        out, h_n = self.rnn(self.embed(tokens))  # (batch, time, 16)
        return self.head(out[:, -1, :])


def test_a_small_cnn_translates_and_passes_check_in_float64():
    torch.manual_seed(0)
    result = tr.translate(SmallCNN(), torch.randn(2, 3, 16, 16))
    assert "class SmallCNN(nnx.Module)" in result.source
    assert "x.transpose(0, 3, 1, 2).reshape" in result.source  # flatten in torch's order
    assert "layers.BatchNorm(8, momentum=0.1, eps=1e-05" in result.source
    assert "padding=((1, 1), (1, 1))" in result.source and "padding=((0, 0), (0, 0))" in (
        result.source
    )
    report = result.check(steps=3)
    assert report.passed, str(report)
    assert report.dropout.startswith("masks")
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9


def test_a_recurrent_net_translates_and_passes_check_in_float64():
    torch.manual_seed(0)
    result = tr.translate(Recurrent(), torch.randint(0, 20, (3, 7)))
    assert "layers.GRU(6, 8, 2, batch_first=True, bidirectional=True" in result.source
    report = result.check(steps=3)
    assert report.passed, str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9


class SqueezeExcite(nn.Module):
    """torchvision's squeeze-excitation: a gate through Hardsigmoid scales the map."""

    def __init__(self, c=6):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3)
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)
        self.head = nn.Linear(c, 3)
        nn.init.zeros_(self.fc2.bias)  # a parameter that starts at 0 moves by its gradient only

    def forward(self, x):
        x = self.conv(x)  # (N, c, H, W)
        gate = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.head((gate * x).mean((2, 3)))


def test_hard_sigmoid_takes_torchs_float32_slope(monkeypatch):
    """torch's float64 Hardsigmoid gradient is ``1.0f / 6.0f``, not 1/6: through
    ``jax.nn.hard_sigmoid`` a squeeze-excitation block parts from torch by 3e-8 in float64
    (found by mobilenet_v3_small's step-0 gradients); ``layers.hard_sigmoid`` does not."""
    import jax
    import jax.numpy as jnp

    from jaxnets import layers

    x = np.array([-4.0, -3.0, -2.5, -1e-3, 0.0, 1.0, 2.99, 3.0, 7.0])
    t = torch.tensor(x, requires_grad=True)
    F.hardsigmoid(t).sum().backward()
    ours = jax.grad(lambda v: layers.hard_sigmoid(v).sum())(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(ours), t.grad.numpy())
    values = np.asarray(layers.hard_sigmoid(jnp.asarray(x)))
    np.testing.assert_allclose(values, F.hardsigmoid(torch.tensor(x)).numpy(), rtol=0, atol=2e-16)
    exact = jax.grad(lambda v: jax.nn.hard_sigmoid(v).sum())(jnp.asarray(x))
    assert np.max(np.abs(np.asarray(exact) - t.grad.numpy())) > 1e-9  # the constant differs

    torch.manual_seed(0)
    report = tr.translate(SqueezeExcite(), torch.randn(2, 3, 8, 8)).check(steps=1)
    assert report.passed and report.bound["kind"] == "fixed", str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-12
    monkeypatch.setitem(tr.OPS, "hardsigmoid", tr._unary("jax.nn.hard_sigmoid({x})"))
    torch.manual_seed(0)
    report = tr.translate(SqueezeExcite(), torch.randn(2, 3, 8, 8)).check(steps=1)
    assert not report.passed  # the exact slope is another gradient


def test_an_in_place_dropout_is_fed_the_same_mask():
    """nn.Dropout(inplace=True) (mobilenet_v3's classifier) overwrote its input with torch's own
    mask before check's hook could feed one: found by translating mobilenet_v3_small."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Hardswish(), nn.Dropout(0.5, inplace=True))
    model.append(nn.Linear(8, 3))
    report = tr.translate(model, torch.randn(4, 6)).check(steps=2)
    assert report.passed, str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9


class DropTwice(nn.Module):
    """One nn.Dropout called on a conv's output and again on a Linear's (housing-
    regularization's Net1 calls its one dropout twice): a mask per call, the first moved
    channels-last on the Flax side."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.out = nn.Conv2d(3, 4, 3), nn.Linear(4, 6), nn.Linear(6, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.drop(self.conv(x)), 1).flatten(1)
        return self.out(self.drop(self.fc(x)))


def test_a_dropout_called_twice_is_fed_a_mask_per_call():
    torch.manual_seed(0)
    report = tr.translate(DropTwice(), torch.randn(3, 3, 6, 5)).check(steps=2, tolerance=1e-12)
    assert report.passed and report.bound["kind"] == "fixed", str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-12
    assert report.dropout == "masks fed from numpy: drop (2 calls a pass)"


def test_a_dropout_of_rate_zero_is_no_site_on_either_side():
    """nn.Dropout(0.0) (housing-regularization's plain net) was no dropout site for torch but
    one for Flax: check refused the pair ("dropout differs")."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 3))
    report = tr.translate(model, torch.randn(4, 6)).check(steps=2)
    assert report.passed, str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9


def test_the_source_is_the_module_and_its_state_paths_are_the_torch_keys():
    torch.manual_seed(0)
    torch_model = SmallCNN()
    result = tr.translate(torch_model, torch.randn(2, 3, 16, 16), class_name="Twin")
    assert result.class_name == "Twin" and type(result.module).__name__ == "Twin"
    assert set(port.mapping(result.module)) == set(torch_model.state_dict())
    back = port.nnx_to_torch(result.module)
    for key, value in torch_model.state_dict().items():
        np.testing.assert_array_equal(back[key], value.numpy())
    compile(result.source, "generated.py", "exec")  # the file itself, as written


# -- every rule against torch's forward pass ----------------------------------------------------
#
# Three case tables: OPS (a function of a conv's channels-last output), LAYERS (a layer after a
# 1x1 conv) and SEQUENCES (token inputs: embeddings and recurrent stacks) run through
# ``assert_forward_equal``; CHECK_ONLY holds what only a lockstep can judge (dropout draws
# masks, so ``check`` feeds both sides the same ones). ``test_every_rule_is_exercised_by_a_case``
# holds the translator's rule tables (``tr.OPS``, ``tr.LEAVES``) to these: a rule added without
# a case fails it.


def _in_place(method, *args):
    """``y.method_(*args)`` on a copy, then reads of both: torch's ``y`` is the result from
    there on, and the unchanged ``z`` tells a dropped update from a kept one."""

    def fn(x):
        y = x * 1.0
        z = y * 2.0
        getattr(y, method)(*args)
        return y + z

    return fn


Pair = collections.namedtuple("Pair", "first second")  # an output like googlenet's

OPS = {
    "add": lambda x: x + 1.5 * x,
    "namedtuple": lambda x: Pair(2.0 * x, x.sum(1)),  # the first leaves in torch's layout
    "sub_div": lambda x: (x - 2.0) / 3.0,
    "mul_broadcast": lambda x: x * x.mean((2, 3), keepdim=True),
    "add_lower_rank": lambda x: torch.flatten(x, 1) + torch.flatten(x, 1)[0],
    "neg_exp": lambda x: torch.exp(-x),
    "pow": lambda x: x.pow(2) + torch.pow(x, exponent=3) + 2**x,
    "matmul": lambda x: x @ x.transpose(2, 3),
    "mm": lambda x: torch.mm(x.flatten(1), x.flatten(1).transpose(0, 1)),
    "relu": F.relu,
    "relu6": lambda x: F.relu6(10 * x),  # scaled: a conv's outputs rarely reach 6
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "hardswish": lambda x: F.hardswish(10 * x),  # both sides of its kinks at -3 and 3
    "hardsigmoid": lambda x: F.hardsigmoid(10 * x),
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "softmax_channels": lambda x: F.softmax(x, dim=1),
    "log_softmax_width": lambda x: F.log_softmax(x, dim=-1),
    "flatten": lambda x: torch.flatten(x, 1),
    "flatten_middle": lambda x: torch.flatten(x, 1, 2),
    "view": lambda x: x.view(x.size(0), -1),
    "reshape_shape": lambda x: x.reshape(x.shape[0], 2, -1),
    "contiguous_view": lambda x: x.permute(0, 3, 2, 1).contiguous().view(x.size(0), -1),
    "cat_channels": lambda x: torch.cat([x, x * 2], 1),
    "stack_width": lambda x: torch.stack([x, x * 2], 3),  # the new axis among NHWC's
    "mean_spatial": lambda x: x.mean((2, 3)),
    "sum_channels": lambda x: torch.sum(x, 1),
    "mean_keepdim": lambda x: torch.mean(x, dim=1, keepdim=True),
    "permute": lambda x: x.permute(0, 2, 3, 1).reshape(x.size(0), -1),
    "transpose": lambda x: torch.transpose(x, 1, 3).flatten(1),
    "chunk": lambda x: torch.chunk(x, 2, dim=1)[1],
    "getitem": lambda x: x[:, 1:3, :, -1],
    "size_arith": lambda x: x.view(x.size(0), x.size(1) // 2, -1),
    "layer_norm_fn": lambda x: F.layer_norm(x, (5,), eps=1e-3),
    "len": lambda x: x.view(len(x), -1, 1),
    "adaptive_divisible": lambda x: F.adaptive_avg_pool2d(x, (2, 2)),
    "adaptive_uneven": lambda x: F.adaptive_avg_pool2d(x, 3),
    "max_pool_ceil": lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True),
    "avg_pool_pad": lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    "clamp": lambda x: torch.clamp(x, -0.5, 0.5),
    "dropout_p0": lambda x: F.dropout(x, 0.0),
    "add_in_place": _in_place("add_", 1.0),
    "sub_in_place": _in_place("sub_", 0.5),
    "mul_in_place": _in_place("mul_", 3.0),
    "div_in_place": _in_place("div_", 4.0),
    "relu_in_place": _in_place("relu_"),
    "sigmoid_in_place": _in_place("sigmoid_"),
    "tanh_in_place": _in_place("tanh_"),
    "clamp_in_place": _in_place("clamp_", -0.5, 0.5),
}


class OpAfterConv(nn.Module):
    """A conv feeding one op, so that the op meets a channels-last value."""

    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.conv(x))


class LayerNormFunctional(nn.Module):
    """``F.layer_norm`` with the module's own weight and bias (read through get_attr)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.weight = nn.Parameter(torch.randn(5))
        self.bias = nn.Parameter(torch.randn(5))

    def forward(self, x):
        return F.layer_norm(self.conv(x), (5,), self.weight, self.bias, 1e-4)


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        z = y * 2
        y.add_(1.0)  # torch's y is the sum from here on
        return y + z


class SideBySide(nn.Module):
    """Each layer on the same input, scaled so that it spans every kink (ReLU6's 6, Hardswish's
    -3 and 3); their outputs side by side. Stacked instead, a tanh would squeeze what the
    layers after it see into (-1, 1), where ReLU6 is ReLU."""

    def __init__(self, *layers):
        super().__init__()
        for k, layer in enumerate(layers):
            self.add_module(f"act{k}", layer)

    def forward(self, x):
        return torch.cat([layer(10 * x) for layer in self.children()], dim=1)


def _stochastic_depth_p0():
    from torchvision.ops import StochasticDepth  # fx keeps its stochastic_depth as one call

    return StochasticDepth(0.0, "row")


LAYERS = {
    "conv_strided_dilated_grouped": lambda: nn.Conv2d(4, 6, 3, 2, 2, dilation=2, groups=2),
    "conv_same": lambda: nn.Conv2d(4, 4, 4, padding="same", bias=False),
    "conv1d": lambda: nn.Sequential(nn.Flatten(2), nn.Conv1d(4, 5, 3, padding=1)),
    "conv_transpose": lambda: nn.ConvTranspose2d(4, 3, 3, 2, 1, output_padding=1),
    "conv_transpose_dilated": lambda: nn.ConvTranspose2d(4, 2, 2, 1, 1, dilation=2, bias=False),
    "batchnorm": lambda: nn.BatchNorm2d(4, momentum=0.2, eps=1e-3),
    "batchnorm1d": lambda: nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4 * 30)),
    "groupnorm": lambda: nn.GroupNorm(2, 4, eps=1e-4),
    "layernorm": lambda: nn.LayerNorm(5, eps=1e-3),
    "maxpool_padded": lambda: nn.MaxPool2d(3, 2, 1),
    "maxpool_ceil": lambda: nn.MaxPool2d(2, ceil_mode=True),
    "avgpool": lambda: nn.AvgPool2d(2),
    "avgpool_padded_excluded": lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    "pool1d": lambda: nn.Sequential(
        nn.Flatten(2), nn.MaxPool1d(3, 2, 1), nn.AvgPool1d(2), nn.AdaptiveAvgPool1d(4)
    ),
    "adaptive_max": lambda: nn.AdaptiveMaxPool2d(2),
    "adaptive_max_uneven": lambda: nn.AdaptiveMaxPool2d((4, 3)),
    "adaptive_avg_bigger": lambda: nn.AdaptiveAvgPool2d((7, 7)),
    "adaptive_avg_keep_one_axis": lambda: nn.AdaptiveAvgPool2d((None, 2)),
    "activations": lambda: SideBySide(
        nn.ReLU(), nn.ELU(0.5), nn.Tanh(), nn.SiLU(), nn.GELU(), nn.Hardswish(), nn.ReLU6()
    ),
    "activations_more": lambda: SideBySide(
        nn.LeakyReLU(0.3), nn.GELU("tanh"), nn.Sigmoid(), nn.Identity(), nn.Hardsigmoid()
    ),
    "softmax": lambda: nn.Sequential(nn.Softmax(dim=1), nn.LogSoftmax(dim=2)),
    "flatten_linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(120, 3)),
    "linear_on_width": lambda: nn.Linear(5, 2, bias=False),
    "stochastic_depth_p0": _stochastic_depth_p0,
}
MODULES = {  # whole models of their own
    "in_place": InPlace,
    "layer_norm_functional": LayerNormFunctional,
}


def op_case(name):
    torch.manual_seed(0)
    return OpAfterConv(OPS[name]), torch.randn(2, 3, 6, 5)


def layer_case(name):
    torch.manual_seed(0)
    if name in MODULES:
        return MODULES[name](), torch.randn(2, 3, 6, 5)
    return nn.Sequential(nn.Conv2d(3, 4, 1), LAYERS[name]()), torch.randn(2, 3, 6, 5)


class SequenceNet(nn.Module):
    """Embedding, a recurrent stack, a readout of its outputs or its final state, a head."""

    def __init__(self, rnn, readout, vocab=11, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, rnn.input_size)
        self.rnn = rnn
        self.readout = readout
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        self.head = nn.Linear(rnn.hidden_size if readout == "state" else width, classes)

    def forward(self, tokens):
        x = self.embed(tokens)  # (batch, time, features)
        if not self.rnn.batch_first:
            x = x.transpose(0, 1)  # time-major: only the layout bookkeeping moves
        out, state = self.rnn(x)
        time = 1 if self.rnn.batch_first else 0
        if self.readout == "state":
            h_n = state[0] if isinstance(self.rnn, nn.LSTM) else state
            features = h_n[-1]  # the last layer's last direction
        elif self.readout == "mean":
            features = out.mean(dim=time)
        else:
            features = out[:, -1] if self.rnn.batch_first else out[-1]
        return self.head(features)


class TwoRecurrent(nn.Module):
    """An LSTM (time-major) feeding an RNN (batch-first): the transposes between them."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 4)
        self.lstm = nn.LSTM(4, 5)
        self.rnn = nn.RNN(5, 3, batch_first=True)

    def forward(self, tokens):
        out, (h, c) = self.lstm(self.embed(tokens).transpose(0, 1))
        out, h = self.rnn(out.transpose(0, 1))
        return torch.cat([out[:, -1], h[0]], dim=1)


SEQUENCES = {
    "lstm_then_rnn": TwoRecurrent,
    "gru_stacked_bidirectional": lambda: SequenceNet(
        nn.GRU(4, 5, num_layers=2, bidirectional=True, batch_first=True), "last"
    ),
    "lstm_bidirectional_state": lambda: SequenceNet(
        nn.LSTM(3, 4, num_layers=2, bidirectional=True), "state"
    ),
    "rnn_mean": lambda: SequenceNet(nn.RNN(5, 4, batch_first=True), "mean"),
}


def sequence_case(name):
    torch.manual_seed(0)
    return SEQUENCES[name](), torch.randint(0, 11, (2, 6))


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_op_rule_computes_what_torch_computes(name):
    assert_forward_equal(*op_case(name))


@pytest.mark.parametrize("name", sorted(LAYERS) + sorted(MODULES))
def test_each_layer_rule_computes_what_torch_computes(name):
    assert_forward_equal(*layer_case(name))


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_each_recurrent_rule_computes_what_torch_computes(name):
    assert_forward_equal(*sequence_case(name))


CHECK_ONLY = {  # dropout: its masks are fed to both sides by check, matched by name
    "dropout_features": lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 4 * 3, 3)
    ),
    "dropout_channels_last": lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ),
}


def check_only_case(name):
    torch.manual_seed(0)
    return CHECK_ONLY[name](), torch.randn(3, 3, 6, 5)


@pytest.mark.parametrize("name", sorted(CHECK_ONLY))
def test_each_dropout_rule_trains_as_torch_does(name):
    result = tr.translate(*check_only_case(name))
    report = result.check(steps=2)
    assert report.passed and report.dropout.startswith("masks"), str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9


class OptionalInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, masks=None, scale=2.0, noisy=False):
        x = self.fc(x)
        if masks is not None:  # housing-regularization's Net1: masks handed in for lockstep
            x = x * masks
        if noisy:
            x = x + torch.randn_like(x)
        return x * scale


def test_inputs_left_at_their_defaults_are_traced_as_their_defaults():
    """fx made a placeholder of every parameter (``masks`` a Proxy, so ``masks is None`` was
    False and ``noisy`` true): the model took 4 inputs where the call gives 1. Found on the
    tutorials' housing-regularization nets."""
    torch.manual_seed(0)
    result = assert_forward_equal(OptionalInputs(), torch.randn(2, 4))
    assert "def __call__(self, x):" in result.source
    assert "masks" not in result.source and "randn" not in result.source


def _case_builders():
    """Every harness case: its label, a function building (model, input) afresh, and how its
    test judges it (``assert_forward_equal`` or ``check``)."""
    tables = [
        ("OPS", OPS, op_case, "forward"),
        ("LAYERS", {**LAYERS, **MODULES}, layer_case, "forward"),
        ("SEQUENCES", SEQUENCES, sequence_case, "forward"),
        ("CHECK_ONLY", CHECK_ONLY, check_only_case, "check"),
    ]
    for table, names, build, judge in tables:
        for name in names:
            yield f"{table}[{name}]", functools.partial(build, name), judge


def _all_cases():
    for label, build, _ in _case_builders():
        yield label, build()


def rules_used(model, x):
    """The keys of ``tr.OPS`` and ``tr.LEAVES`` the translation of ``model`` looks up and
    finds: the rules that wrote its code."""
    used = set()

    class Recording(dict):
        def get(self, key, default=None):
            if key in self:
                used.add(key)
            return super().get(key, default)

    # the tracing pass alone, as translate starts it: the rules are looked up there, and
    # building the generated module (a compile per new weight shape) would cost far more
    layouts = (tr._channels_last(4) if x.dim() == 4 else tr._ident(x.dim()),)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tr, "OPS", Recording(tr.OPS))
        patch.setattr(tr, "LEAVES", Recording(tr.LEAVES))
        tr.Translator().instance(copy.deepcopy(model), "", (x,), layouts)
    return used


def untested_rules(cases):
    """The op names and layer classes of the rule tables that no ``(model, input)`` of
    ``cases`` looks up."""
    used = set()
    for model, x in cases:
        used |= rules_used(model, x)
    return sorted(set(tr.OPS) - used), sorted(t.__name__ for t in set(tr.LEAVES) - used)


def test_every_rule_is_exercised_by_a_case():
    """Each entry of the translator's rule tables is looked up by some harness case above, so
    a rule added without a case (or a case that stops reaching its rule) fails here."""
    ops, layers = untested_rules(case for _, case in _all_cases())
    assert not ops and not layers, f"rules without a harness case: ops {ops}, layers {layers}"


def test_a_rule_without_a_case_is_named(monkeypatch):
    """What the test above reports: rules added to the tables that no case reaches are named,
    and a rule a case reaches is not."""
    monkeypatch.setitem(tr.OPS, "cumsum", lambda *args: None)
    monkeypatch.setitem(tr.LEAVES, nn.Softplus, tr.Fn("jax.nn.softplus({x})"))
    ops, layers = untested_rules([op_case("relu")])
    assert "cumsum" in ops and "Softplus" in layers
    assert "relu" not in ops and "Conv2d" not in layers


# -- a broken rule fails its harness case ------------------------------------------------------


def _reads_torch_dim(fn):
    """The softmax rule with torch's dim used as the axis: the remapping to the layout left out."""

    def rule(ctx, node, args, kwargs):
        x = args[0]
        dim = tr._kw(args, kwargs, 1, "dim")
        return tr.Val(f"jax.nn.{fn}({x.expr}, axis={dim % x.value.dim()})", x.perm)

    return rule


class _WithoutDilation(tr.ConvLeaf):
    def ctor(self, m):
        ctor = super().ctor(m)
        ctor.args = [a for a in ctor.args if a.name != "kernel_dilation"]
        return ctor


class _TimeMajorAlways(tr.RecurrentLeaf):
    def ctor(self, m):
        ctor = super().ctor(m)
        for a in ctor.args:
            if a.name == "batch_first":
                a.value = False
        return ctor


BROKEN = {  # a rule made wrong the way a slip would make it, and the case that must fail
    "flatten without its transpose": (
        lambda patch: patch.setattr(tr, "_order_free", lambda perm, shape: True),
        lambda: layer_case("flatten_linear"),
    ),
    "softmax's dim not remapped": (
        lambda patch: patch.setitem(tr.OPS, "softmax", _reads_torch_dim("softmax")),
        lambda: op_case("softmax_channels"),
    ),
    "relu6 written as relu": (
        lambda patch: patch.setitem(tr.OPS, "relu6", tr.OPS["relu"]),
        lambda: op_case("relu6"),
    ),
    "an in-place mul written as add": (
        lambda patch: patch.setitem(tr.OPS, "mul_", tr.OPS["add"]),
        lambda: op_case("mul_in_place"),
    ),
    "LeakyReLU's slope dropped": (
        lambda patch: patch.setitem(tr.LEAVES, nn.LeakyReLU, tr.Fn("jax.nn.leaky_relu({x})")),
        lambda: layer_case("activations_more"),
    ),
    "a convolution's dilation dropped": (
        lambda patch: patch.setitem(tr.LEAVES, nn.Conv2d, _WithoutDilation()),
        lambda: layer_case("conv_strided_dilated_grouped"),
    ),
    "max pooling's ceil_mode ignored": (
        lambda patch: patch.setattr(
            tr, "_pool_padding", lambda size, k, s, p, ceil: tuple((q, q) for q in p)
        ),
        lambda: layer_case("maxpool_ceil"),
    ),
    "a batch-first GRU run time-major": (
        lambda patch: patch.setitem(tr.LEAVES, nn.GRU, _TimeMajorAlways()),
        lambda: sequence_case("gru_stacked_bidirectional"),
    ),
}


@pytest.mark.parametrize("slip", sorted(BROKEN))
def test_a_broken_rule_is_caught(monkeypatch, slip):
    """The harness sees a wrong rule: each slip below passes its case when the rule is right
    and fails it (other numbers, or another shape) when the rule is broken."""
    breaks, case = BROKEN[slip]
    assert_forward_equal(*case())
    breaks(monkeypatch)
    with pytest.raises(AssertionError):
        assert_forward_equal(*case())


def _perturbed_op(rule):
    """``rule``, its result made wrong: a float tensor (or each of a list of them) scaled, an
    integer or a shape one more."""

    def wrapped(ctx, node, args, kwargs):
        result = rule(ctx, node, args, kwargs)
        val, comment = result if isinstance(result, tuple) else (result, "")
        val = val.val if isinstance(val, tr.Alias) else val
        value = ctx.values.get(node)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return tr.Val(f"({val.expr}) * 1.25", val.perm), comment
        if isinstance(value, tuple | list) and all(
            isinstance(t, torch.Tensor) and t.is_floating_point() for t in value
        ):  # chunk's pieces
            return tr.Val(f"[t * 1.25 for t in {val.expr}]", val.perm), comment
        if isinstance(value, torch.Size):
            return tr.Val(f"tuple(d + 1 for d in {val.expr})", val.perm), comment
        if isinstance(value, int) and not isinstance(value, bool):
            return tr.Val(f"({val.expr}) + 1", val.perm), comment
        return result

    return wrapped


def _rotated(perm):
    if isinstance(perm, list):
        return [_rotated(perm[0]), *perm[1:]]
    return perm[1:] + perm[:1]


class _PerturbedLeaf(tr.Leaf):
    """A layer rule made wrong: a stateless layer's output scaled; a layer with weights (whose
    call the caller writes itself) claiming the wrong layout for its output."""

    def __init__(self, rule, stateful):
        self.rule, self.stateful = rule, stateful

    def needs(self, m, x, perm):
        return self.rule.needs(m, x, perm)

    def ctor(self, m):
        return self.rule.ctor(m)

    def call(self, m, expr, x, perm, helpers, where):
        call, out_perm = self.rule.call(m, expr, x, perm, helpers, where)
        if self.stateful:
            return call, _rotated(out_perm)
        return f"({call}) * 1.25", out_perm


def _fails(build, judge):
    model, x = build()
    try:
        if judge == "check":
            return not tr.translate(model, x).check(steps=1).passed
        assert_forward_equal(model, x)
    except Exception:  # a wrong shape, a failed assertion, a crash: the case caught it
        return True
    return False


@pytest.mark.slow
def test_every_rule_made_wrong_fails_a_case():
    """Mutation testing of the rule tables: each rule of ``tr.OPS`` and ``tr.LEAVES`` in turn
    is made wrong (``_perturbed_op``, ``_PerturbedLeaf``), and some harness case that uses it
    must fail. A survivor is a rule whose cases do not look at what it computes."""
    users = {}
    builders = list(_case_builders())
    for label, build, judge in builders:
        for key in rules_used(*build()):
            users.setdefault(key, []).append((label, build, judge))
    survivors = []
    for key in [*tr.OPS, *tr.LEAVES]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tr, "_format", lambda source: source)
            if key in tr.OPS:
                patch.setitem(tr.OPS, key, _perturbed_op(tr.OPS[key]))
            else:
                stateful = issubclass(key, tr._STATEFUL)
                patch.setitem(tr.LEAVES, key, _PerturbedLeaf(tr.LEAVES[key], stateful))
            if not any(_fails(build, judge) for _, build, judge in users.get(key, [])):
                survivors.append(key if isinstance(key, str) else key.__name__)
    assert not survivors, f"rules made wrong that no case caught: {survivors}"


# -- training and eval: torch's self.training as the NNX switch -------------------------------


def _outputs(out):
    """Every tensor of a model's output (a tuple: each element), as numpy."""
    if isinstance(out, tuple | list):
        return [a for item in out for a in _outputs(item)]
    return [out.detach().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)]


def assert_modes_equal(module, x, rtol=1e-9):
    """Translate ``module``, then run both in float64 on ``x`` in training (torch's ``train()``,
    the twin's ``.train()``) and in eval mode (``eval()``, ``.eval()``): every output agrees."""
    module = module.double()
    x = x.double()
    result = tr.translate(module, x)
    twin = result.module
    for training in (True, False):
        module.train(training)
        if training:
            twin.train()
        else:
            twin.eval()
        want = _outputs(module(x))
        got = _outputs(twin(_flax_input(x)))
        mode = "training" if training else "eval"
        assert [g.shape for g in got] == [w.shape for w in want], f"{mode}\n{result.source}"
        for g, w in zip(got, want, strict=True):
            scale = max(np.abs(w).max(), 1e-12)
            assert np.abs(g - w).max() / scale < rtol, f"{mode}\n{result.source}"
    return result


class Scaled(nn.Module):
    """A submodule with a training branch of its own."""

    def __init__(self, features=4):
        super().__init__()
        self.fc = nn.Linear(features, 3)

    def forward(self, x):
        y = self.fc(x)
        if self.training:
            return y * 2.0
        return y - 1.0


class TrainEval(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = Scaled()

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.training:
            x = torch.relu(x) + 1.0
        else:
            x = torch.sigmoid(x) * 3.0
        return self.head(x.mean((2, 3)))


def test_training_branches_become_the_nnx_switch():
    torch.manual_seed(0)
    result = assert_modes_equal(TrainEval(), torch.randn(2, 3, 6, 5))
    source = result.source
    switch = "self.deterministic = False  # torch's not self.training: model.eval() sets it"
    assert source.count(switch) == 2  # TrainEval and Scaled
    assert (
        "        x = self.fc(x)  # (2, 3)\n"
        "        if not self.deterministic:\n"
        "            x = x * 2.0  # (2, 3)\n"
        "        else:\n"
        "            x = x - 1.0  # (2, 3)\n"
        "        return x\n"
    ) in source, source
    assert (
        "        x = self.bn(x)  # (2, 6, 5, 4) NHWC\n"
        "        if not self.deterministic:\n"
        "            x = nnx.relu(x)  # (2, 6, 5, 4) NHWC\n"
        "            x = x + 1.0  # (2, 6, 5, 4) NHWC\n"
        "        else:\n"
        "            x = nnx.sigmoid(x)  # (2, 6, 5, 4) NHWC\n"
        "            x = x * 3.0  # (2, 6, 5, 4) NHWC\n"
        "        x = x.mean(axis=(1, 2))  # (2, 4)\n"
    ) in source, source
    report = result.check(steps=2)  # check trains: the training branch, in lockstep
    assert report.passed, str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9


def test_the_switch_is_what_makes_eval_mode_right(monkeypatch):
    """The harness above sees a translator that traces training only: the twin then computes
    training's branch in eval mode."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5)
    assert_modes_equal(TrainEval(), x)
    monkeypatch.setattr(tr, "_TRACED_MODES", (True,))
    with pytest.raises(AssertionError, match="^eval"):
        assert_modes_equal(TrainEval(), x)


class EvalShift(nn.Module):
    """Alike in training whatever ``shift`` is; in eval, ``shift`` adds a line."""

    def __init__(self, shift):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.shift = shift

    def forward(self, x):
        y = self.fc(x)
        if self.training or not self.shift:
            return y
        return y + 1.0


class ThreeHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = EvalShift(True), EvalShift(False), EvalShift(True)

    def forward(self, x):
        return self.a(x) + self.b(x) * 2.0 + self.c(x) * 3.0


def test_instances_alike_in_training_but_not_in_eval_do_not_share_a_class():
    torch.manual_seed(0)
    result = assert_modes_equal(ThreeHeads(), torch.randn(3, 4))
    source = result.source
    assert "class EvalShift(nnx.Module):" in source and "class EvalShift2(nnx.Module):" in source
    assert "EvalShift3" not in source
    assert "test_translate.EvalShift: a, c." in source and "test_translate.EvalShift: b." in source
    assert source.count("if self.deterministic:") == 1  # a and c, in one class


class DropoutP0(nn.Module):
    """``F.dropout(p=0)`` traces as a comment naming the mode: no branch for a comment."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.dropout(self.fc(x), 0.0, training=self.training)


@pytest.mark.parametrize(
    "model, x",
    [(SmallCNN, lambda: torch.randn(2, 3, 16, 16)), (DropoutP0, lambda: torch.randn(2, 4))],
    ids=["small_cnn", "dropout_p0"],
)
def test_a_module_without_training_branches_emits_no_switch(model, x, monkeypatch):
    """Dropout and BatchNorm switch through NNX's own attributes: the file is the one tracing
    training alone writes, line for line."""
    torch.manual_seed(0)
    torch_model = model()
    source = tr.translate(torch_model, x()).source
    assert "deterministic" not in source
    monkeypatch.setattr(tr, "_TRACED_MODES", (True,))
    assert tr.translate(torch_model, x()).source == source


class Untraceable(nn.Module):
    """Translatable in training; its eval branch has no rule."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        x = self.fc(x)
        return x if self.training else torch.cumsum(x, 1)


def test_modes_each_traced_and_the_users_modes_kept():
    torch.manual_seed(0)
    model = TrainEval()
    model.bn.eval()  # a frozen BatchNorm inside a training model
    result = tr.translate(model, torch.randn(2, 3, 6, 5))
    assert model.training and not model.bn.training and model.head.training
    assert result.module.deterministic is False
    model.eval()
    model.head.train()
    result = tr.translate(model, torch.randn(2, 3, 6, 5))
    assert not model.training and not model.bn.training and model.head.training
    assert result.module.deterministic is True  # the twin comes in the torch module's mode
    assert result.module.bn.use_running_average is True
    torch.manual_seed(0)
    assert_forward_equal(SmallCNN().eval(), torch.randn(2, 3, 16, 16))  # running statistics
    assert_modes_equal(DropoutP0(), torch.randn(2, 4))
    with pytest.raises(CompareError) as err:
        tr.translate(Untraceable(), torch.randn(2, 4))
    message = str(err.value)
    assert message.startswith("in eval mode, the model: node cumsum") and "\n" not in message
    assert "torch.cumsum(x, 1)" in message


class NeverCalled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.spare = Scaled()

    def forward(self, x):
        return self.fc(x)


def test_a_child_called_in_neither_mode_is_refused():
    with pytest.raises(CompareError, match="^spare: Scaled is never called by its parent's"):
        tr.translate(NeverCalled(), torch.randn(2, 4))


@pytest.mark.slow
def test_torchvision_googlenet_with_auxiliary_heads_in_both_modes():
    """Three outputs in training (the auxiliary heads run), one in eval; dropout 0, since a
    forward pass cannot feed torch's masks to the twin (``check`` does)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.googlenet(
        aux_logits=True, init_weights=True, num_classes=10, dropout=0.0, dropout_aux=0.0
    )
    result = assert_modes_equal(model, torch.randn(2, 3, 64, 64))
    assert "class InceptionAux(nnx.Module)" in result.source
    assert "if not self.deterministic:" in result.source


# -- the tutorials' torch models ---------------------------------------------------------------

# every tutorial model translates (docs/TRANSLATE.md's tutorials table)
TRANSLATABLE = list(models.EXAMPLES)


def _name(example):
    return example.task + (f"-{example.model}" if example.model else "")


def _translate_example(example):
    torch.manual_seed(0)
    model = models.torch_model(example.task, example.model)
    model.train()
    inputs = [translate_cli.parse_input(spec, k) for k, spec in enumerate(example.inputs())]
    return tr.translate(model, tuple(inputs))


# The generated LSTM is jaxnets.layers.LSTM, a stack (of one layer here) over nnx.RNN; the
# hand-written twins hold their nnx.RNN directly: the same torch keys and shapes, one NNX
# level more (docs/TRANSLATE.md)
LSTM_STACK = "NNX paths: {0}.layers.0.* vs the twin's {0}.*"
TREE_DIFFERENCES = {
    "mnist-lstm": LSTM_STACK.format("rnn"),
    "pos-tagger": LSTM_STACK.format("lstm"),
    "lstm-forecast": LSTM_STACK.format("rnn"),
    "rnn-sincos": LSTM_STACK.format("rnn"),  # jaxnets.layers.RNN, the same stack
}


# a tree costs seconds (XLA compiles the initialisers of every new shape): four tasks in the
# default tier, the other models in the slow one
TREES_IN_DEFAULT_TIER = {"mnist-cnn", "mnist-resnet", "mnist-mlp-bn", "mnist-lstm"}


@pytest.mark.parametrize(
    "example",
    [
        e if e.task in TREES_IN_DEFAULT_TIER else pytest.param(e, marks=pytest.mark.slow)
        for e in TRANSLATABLE
    ],
    ids=_name,
)
def test_a_tutorial_model_translates_to_its_twins_parameter_tree(example):
    result = _translate_example(example)
    twin = models.twin_model(example.task, example.model)
    got, want = models.parameter_tree(result.module), models.parameter_tree(twin)
    assert got, "no parameters compared"
    assert models.tree_difference(got, want) == TREE_DIFFERENCES.get(example.task, "")


def test_a_tree_difference_names_what_differs():
    want = {"fc.weight": ("fc.kernel", (4, 2)), "bn.running_mean": ("bn.mean", (4,))}
    want["rnn.weight_ih_l0"] = ("rnn.cell.dense_i.kernel", (3, 8))
    got = {"fc.weight": ("fc.kernel", (2, 4)), "fc2.bias": ("fc2.bias", (3,))}
    got["rnn.weight_ih_l0"] = ("rnn.layers.0.cell.dense_i.kernel", (3, 8))
    assert models.tree_difference(want, want) == ""
    assert models.tree_difference(got, want) == (
        "torch keys not in the twin: fc2.bias; torch keys only in the twin: bn.running_mean; "
        "shapes: fc.weight (2, 4) vs (4, 2); NNX paths: rnn.layers.0.* vs the twin's rnn.*"
    )


@pytest.mark.slow
@pytest.mark.parametrize("example", TRANSLATABLE, ids=_name)
def test_a_translated_tutorial_model_passes_check(example):
    result = _translate_example(example)
    report = result.check(steps=5)
    assert report.passed, str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9


def test_the_command_reaches_a_tutorials_net_by_task_and_name(cli):
    code, stdout, _ = cli(
        *["translate", "compare.tutorials:torch_model", "--kwargs", "task=optimizers"],
        *["model=Momentum", "--input", "4,1", "--check", "--steps", "2", "--json"],
        "--no-progress",
    )
    assert code == 0
    import json

    result = json.loads(stdout)
    assert result["class_name"] == "Net" and result["check"]["passed"]
    code, stdout, stderr = cli(
        *["translate", "compare.tutorials:torch_model", "--kwargs", "task=gan", "model=E"],
        *["--input", "4,784"],
    )
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "gan trains several nets (D, G): model=E is not one of them" in stderr
    code, _, stderr = cli(
        "translate", "compare.tutorials:torch_model", "--kwargs", "task=nope", "--input", "2"
    )
    assert code == 2 and "unknown task 'nope'" in stderr


def test_the_checks_learning_rate_is_the_one_given(cli, capsys):
    """``--lr`` sets the rate of ``--check``'s SGD (a model whose loss the default 0.01 sends up
    step after step, as resnet50's on random batches, can be checked at a rate it trains at);
    a rate that is not a positive number is refused in one line before anything runs."""
    import json

    flags = ["--input", "4,1", "--check", "--steps", "2", "--json", "--no-progress"]
    target = ["translate", "compare.tutorials:torch_model", "--kwargs", "task=optimizers"]
    losses = {}
    for lr in ("0.01", "0.5"):
        code, stdout, _ = cli(*target, "model=Momentum", *flags, "--lr", lr)
        result = json.loads(stdout)
        assert code == 0 and result["check"]["passed"] and result["lr"] == float(lr)
        losses[lr] = result["check"]["final_loss"]["torch"]
    assert losses["0.01"] != losses["0.5"]  # the rate reached torch's optimizer
    code, stdout, _ = cli(*target, "model=Momentum", *flags)
    assert json.loads(stdout)["check"]["final_loss"]["torch"] == losses["0.01"]  # the default
    with pytest.raises(CompareError, match="give it or torch_optimizer"):  # which one wins?
        tr.translate(nn.Linear(2, 2), torch.randn(4, 2)).check(lr=0.1, torch_optimizer=object())
    for bad in ("0", "-1", "nan", "fast"):
        with pytest.raises(SystemExit) as done:  # argparse's refusal, before anything runs
            cli(*target, "model=Momentum", *flags, "--lr", bad)
        captured = capsys.readouterr()
        assert done.value.code == 2 and captured.out == ""
        assert len(captured.err.strip().splitlines()) == 1 and "argument --lr" in captured.err


@pytest.mark.parametrize("lr", [0.01, 1e-4, 1e-6])
def test_a_small_rate_does_not_blunt_the_check(monkeypatch, lr):
    """The proof table checks resnet50 at lr 1e-4, where torch stops being chaotic against
    itself; a small rate shrinks how far the parameters move, but a gradient is compared at
    its own scale (step 0's before the rate has moved anything): the float32 Hardsigmoid
    slope (3e-8 in a gradient, the subtlest port error found) fails at step 0 whatever the
    rate, by the same 3e-8, not by lr times it."""
    monkeypatch.setitem(tr.OPS, "hardsigmoid", tr._unary("jax.nn.hard_sigmoid({x})"))
    torch.manual_seed(0)
    report = tr.translate(SqueezeExcite(), torch.randn(2, 3, 8, 8)).check(steps=2, lr=lr)
    first = report.first_divergence
    assert not report.passed and first["step"] == 0 and first["tensor"] == "fc2.bias"
    assert first["rel_diff"] == pytest.approx(2.98e-8, rel=1e-3)  # the gradient's, not lr x it


def test_a_one_column_output_is_fit_by_squared_error_not_a_one_class_cross_entropy():
    """Cross-entropy over a single class is 0 whatever the weights: a regression's (or a
    discriminator's) lockstep under it would train nothing and pass on zero gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    ((xb, yb),) = tr.default_batches(model, (x,), 1)
    assert yb.dtype == np.float64 and yb.shape == (4, 1)
    torch_loss, _ = tr.default_losses(model, (x,))
    torch_loss(model, torch.from_numpy(xb), torch.from_numpy(yb)).backward()
    assert model[0].weight.grad.abs().max() > 1e-3
    report = tr.translate(model, x).check(steps=2)
    assert report.passed and min(report.torch_losses) > 1e-3, str(report)


# -- the fallback: a trace specialized to the example's sizes -----------------------------------


@pytest.fixture(scope="module")
def sincos():
    """rnn-sincos's torch model (float64) and its translation, shared: building the generated
    class compiles its initialisers, seconds of this tier's time."""
    torch.manual_seed(0)
    model = models.torch_model("rnn-sincos").double().train()
    return model, tr.translate(model, torch.randn(2, 10, 1, dtype=torch.float64))


# written by the translator before the fallback (commit 715759d), for models fx traces
# symbolically; a deliberate change to what the translator writes regenerates them (since:
# layers.max_pool for nnx.max_pool, the only difference)
GOLDEN_SOURCES = pathlib.Path(__file__).parent / "golden" / "translate"


@pytest.mark.parametrize("task", ["mnist-cnn", "mnist-resnet", "pos-tagger"])
def test_a_model_fx_traces_symbolically_is_written_byte_for_byte_as_before(task):
    """The fallback is tried only where the symbolic trace fails: a CNN, a ResNet (classes
    shared by alike blocks) and an LSTM tagger are written exactly as before it existed."""
    pytest.importorskip("ruff")  # the goldens are ruff-formatted, as the translator writes
    example = next(e for e in models.EXAMPLES if e.task == task)
    torch.manual_seed(0)
    model = models.torch_model(task).train()
    source, _ = tr.translated_source(model, translate_cli.parse_input(example.input))
    assert source == (GOLDEN_SOURCES / f"{task}.txt").read_text()


def test_a_loop_over_a_size_translates_on_the_examples_sizes_and_passes_check(sincos):
    """rnn-sincos's ``for t in range(r_out.size(1))``: fx traces the size as a symbol and
    cannot loop over it; the trace on the example's sizes unrolls it, and the file writes it
    back as the lesson's loop, over the example's 10 steps, saying so in its header."""
    model, result = sincos
    source = result.source
    assert "outs = [self.out(out[:, t, :]) for t in range(10)]" in source
    assert "jnp.stack(outs, axis=1)" in source
    assert "RNN.forward cannot be traced symbolically" in source
    assert "This file holds for x of size 10 along torch dim 1 only" in " ".join(source.split())
    assert set(port.mapping(result.module)) == set(model.state_dict())
    report = result.check(steps=2)
    assert report.passed, str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9


def test_another_size_than_the_examples_is_refused_by_the_generated_module(sincos):
    """The sequence length the trace unrolled is checked: another one raises the one clear
    error instead of reading 10 steps of it; a batch size the trace never read as a constant
    is free, and the output equals torch's there."""
    model, result = sincos
    with pytest.raises(ValueError, match=r"translated for x of size 10 along torch dim 1 .*not 12"):
        result.module(np.zeros((2, 12, 1)))
    x = torch.randn(3, 10, 1, dtype=torch.float64)
    got, want = np.asarray(result.module(x.numpy())[0]), model(x)[0].detach().numpy()
    assert np.abs(got - want).max() <= 1e-9 * np.abs(want).max()


class _SizeBranches(nn.Module):
    """A loop over the time steps and a branch on the batch size: both specialized."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        steps = [torch.tanh(self.fc(x[:, t])) for t in range(x.shape[1])]
        if x.size(0) > 1:
            return torch.cat(steps, 1)
        return steps[0]


def test_each_size_the_trace_depends_on_is_checked_and_no_other():
    """Found by tracing again one size smaller and larger: the time steps (the loop) and the
    batch (``x.size(0) > 1`` flips at 1) are checked; the features, which the Linear fixes,
    are not. Without the checks the module computes 2 steps of a 3-step input silently."""
    result = assert_forward_equal(_SizeBranches(), torch.randn(2, 2, 4))
    assert "tanhs = [jnp.tanh(self.fc(x[:, t])) for t in range(2)]" in result.source
    checked = re.findall(r"if (x\.shape\[\d\]) != (\d+):", result.source)
    assert checked == [("x.shape[0]", "2"), ("x.shape[1]", "2")]
    with pytest.raises(ValueError, match="size 2 along torch dim 1"):
        result.module(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="size 2 along torch dim 0"):
        result.module(np.zeros((1, 2, 4)))


class _StepHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, h):
        return torch.stack([self.fc(h[:, t]) for t in range(h.size(1))], 1)


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.a, self.b = _StepHead(), _StepHead()

    def forward(self, x):
        h = self.embed(x)
        return self.a(h) + self.b(h)


def test_a_submodule_traced_on_the_examples_sizes_checks_its_own_input():
    """Only the class fx cannot trace is specialized: its two instances share one class that
    checks its own input, the header names both, and the model around it is written as ever."""
    result = assert_forward_equal(_TwoHeads(), torch.randn(2, 4, 3))
    source = " ".join(result.source.split())
    assert source.count("class _StepHead(") == 1 and "_StepHead.forward (a, b) cannot" in source
    assert source.count("if h.shape[1] != 4:") == 1 and "if x.shape" not in source
    assert "fcs = [self.fc(h[:, t]) for t in range(4)] out = jnp.stack(fcs, axis=1)" in source
    with pytest.raises(ValueError, match="_StepHead was translated for h of size 4"):
        result.module(np.zeros((2, 5, 3)))


class _ValueLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        for _ in range(int(x.abs().sum().item() > 1) + 1):  # a count read from the values
            x = self.fc(x)
        return x


def test_what_reads_a_tensors_values_is_refused_by_both_traces(cli, tmp_path, monkeypatch):
    """Neither a branch on a tensor's value nor a Python integer read from one is made a
    constant of the example: one line naming the source line, exit 2, no file."""
    with pytest.raises(CompareError) as err:
        tr.translate(_ValueLoop(), torch.randn(2, 4))
    message = str(err.value)
    assert "\n" not in message and "tensor's value used as a Python integer" in message
    assert "for _ in range(int(x.abs().sum().item() > 1) + 1):" in message
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "valuemodels.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Branchy(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 4)\n\n"
        "    def forward(self, x):\n        outs = [self.fc(x[:, t]) for t in range(x.size(1))]\n"
        "        if outs[0].sum() > 0:\n            return outs[1]\n        return outs[0]\n"
    )
    out = tmp_path / "branchy_nnx.py"
    code, stdout, stderr = cli("translate", "valuemodels:Branchy", "--input", "2,3,4", "--out", out)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "control flow on a tensor's values" in stderr and "valuemodels.py:12" in stderr
    assert not out.exists() and not list(tmp_path.glob(".branchy*"))


def test_a_loop_whose_passes_differ_stays_unrolled():
    """A pass whose integer a rule reads (softmax over dim t), not only writes, would be wrong
    as one comprehension: the passes stay lines of their own, and compute what torch does."""

    class Dims(nn.Module):
        def forward(self, x):
            return torch.cat([F.softmax(x, dim=t) for t in range(x.dim())], 1)

    result = assert_forward_equal(Dims(), torch.randn(2, 3, 4))
    body = result.source[result.source.index("def __call__") :]
    assert " for t in range(" not in body and body.count("jax.nn.softmax(") == 3


def test_the_vae_without_its_eps_draws_inside_forward_and_is_refused():
    """Given its image alone, the vae samples eps with ``torch.randn_like``: no rule, by
    design (a draw inside forward cannot be fed the same to both sides); its table row hands
    eps in as a second input instead."""
    torch.manual_seed(0)
    with pytest.raises(CompareError) as err:
        tr.translate(models.torch_model("vae"), torch.randn(4, 784))
    message = str(err.value)
    assert "\n" not in message
    assert "node randn_like (call_function torch.randn_like): no rule for this op" in message


# -- a bare layer as the model ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "x", "base"),
    [
        (nn.Linear(6, 3), torch.randn(4, 6), "nnx.Linear"),
        (nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.randn(2, 3, 8, 8), "nnx.Conv"),
        (nn.BatchNorm2d(3), torch.randn(2, 3, 4, 4), "layers.BatchNorm"),
        (nn.LSTM(3, 4, batch_first=True), torch.randn(2, 5, 3), "layers.LSTM"),
    ],
    ids=["Linear", "Conv2d", "BatchNorm2d", "LSTM"],
)
def test_a_bare_layer_as_the_model_is_a_subclass_of_its_nnx_layer(layer, x, base):
    """One torch layer as the whole model (its state dict ``weight``, ``bias``): the class
    subclasses the layer's NNX twin, built with the port rule's settings, so that the state
    paths are the layer's own; images in NHWC, the output back in torch's layout."""
    result = assert_forward_equal(layer, x)
    assert f"class {type(layer).__name__}({base}):" in result.source
    assert sorted(port.mapping(result.module)) == sorted(layer.state_dict())


def test_a_bare_linear_layer_passes_check():
    torch.manual_seed(0)
    report = tr.translate(nn.Linear(6, 3), torch.randn(4, 6)).check(steps=2)
    assert report.passed and max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9


# -- several inputs ----------------------------------------------------------------------------


class Labelled(nn.Module):
    """cgan's discriminator in small: integer labels through an embedding, joined to a float
    input."""

    def __init__(self):
        super().__init__()
        self.label_emb = nn.Embedding(5, 3)
        self.fc = nn.Linear(6 + 3, 4)

    def forward(self, x, labels):
        return self.fc(torch.cat([x, self.label_emb(labels)], dim=1))


class TwoFloats(nn.Module):
    """Two float inputs of one shape, each through its own layer: swapped, or one of them
    dropped, the output is another."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.gate = nn.Linear(6, 3)

    def forward(self, x, context):
        return self.fc(x) * torch.tanh(self.gate(context))


def test_a_model_of_two_inputs_translates_and_passes_check():
    torch.manual_seed(0)
    x, labels = torch.randn(4, 6), torch.randint(0, 5, (4,))
    result = tr.translate(Labelled(), (x, labels))
    assert "def __call__(self, x, labels):" in result.source
    batches = tr.default_batches(result.torch_module, result.example_inputs, 2)
    (xb, lb), yb = batches[0]
    assert xb.dtype == np.float64 and xb.shape == (4, 6)
    assert np.issubdtype(lb.dtype, np.integer) and lb.shape == (4,) and lb.max() < 5
    assert np.issubdtype(yb.dtype, np.integer) and yb.shape == (4,)  # 4 class scores: labels
    report = result.check(steps=2)
    assert report.passed, str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-9
    assert report.grad_rel_diff <= 1e-9 and report.forward_rel_diff <= 1e-9


@functools.cache
def _two_floats_translated():
    torch.manual_seed(0)
    return tr.translate(TwoFloats(), (torch.randn(4, 6), torch.randn(4, 6)))


def _check_two_floats(torch_model=None, flax_model=None):
    """``check`` of TwoFloats against its translation (either side replaced when given), on
    the default batches and losses."""
    from compare.toolkit.check import check

    result = _two_floats_translated()
    model = result.torch_module
    torch_model = torch_model or copy.deepcopy(model)
    torch_model.load_state_dict(model.state_dict())
    flax_model = flax_model(result) if flax_model is not None else result.new_module()
    torch_loss, flax_loss = tr.default_losses(model, result.example_inputs)
    return check(
        torch_model,
        flax_model,
        batches=tr.default_batches(model, result.example_inputs, 1),
        torch_loss=torch_loss,
        flax_loss=flax_loss,
        torch_optimizer=torch.optim.SGD(torch_model.parameters(), lr=0.01),
        steps=1,
    )


class SwappedTwoFloats(TwoFloats):
    def forward(self, x, context):
        return super().forward(context, x)


def _generated_calling(result, wrong_call):
    """The generated class with its ``__call__`` given the inputs ``wrong_call`` makes."""
    generated = getattr(result.namespace, result.class_name)

    class Wrong(generated):
        def __call__(self, x, context):
            return super().__call__(*wrong_call(x, context))

    return port.torch_to_nnx(port.torch_state_dict(result.torch_module), Wrong(rngs=nnx.Rngs(0)))


def test_inputs_swapped_or_dropped_on_either_side_fail_check():
    """Each forward argument reaches its own place on both sides: the right order passes;
    the inputs swapped on either side, or the second one replaced by the first, part the
    outputs at step 0."""
    report = _check_two_floats()
    assert report.passed and report.forward_rel_diff <= 1e-12, str(report)
    for wrong in (
        {"torch_model": SwappedTwoFloats()},
        {"flax_model": lambda r: _generated_calling(r, lambda x, c: (c, x))},
        {"flax_model": lambda r: _generated_calling(r, lambda x, c: (x, x))},
    ):
        report = _check_two_floats(**wrong)
        assert not report.passed and report.forward_rel_diff > 1e-2, str(report)
        assert report.first_divergence["step"] == 0


class TwoHeads(nn.Module):
    """Two outputs computed apart: a loss of the first alone never sees the second."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(x), self.head(x)


def test_every_output_counts_in_the_default_loss():
    """A tuple output (the vae's reconstruction, mean, log-variance) is fit output by output:
    the default targets are one per output, and a second output the port got wrong fails
    ``check`` (the first output alone would leave ``head`` without a gradient)."""
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    result = tr.translate(TwoHeads(), x)
    ((_, (y_fc, y_head)),) = tr.default_batches(result.torch_module, (x,), 1)
    assert np.issubdtype(y_fc.dtype, np.integer) and y_head.shape == (4,)  # two classes each
    assert result.check(steps=2).passed

    generated = getattr(result.namespace, result.class_name)

    class HeadScaled(generated):
        def __call__(self, x):
            first, second = super().__call__(x)
            return first, second * 1.5

    wrong = port.torch_to_nnx(
        port.torch_state_dict(result.torch_module), HeadScaled(rngs=nnx.Rngs(0))
    )
    from compare.toolkit.check import check

    torch_model = copy.deepcopy(result.torch_module)
    torch_loss, flax_loss = tr.default_losses(torch_model, (x,))
    report = check(
        torch_model,
        wrong,
        batches=tr.default_batches(torch_model, (x,), 1),
        torch_loss=torch_loss,
        flax_loss=flax_loss,
        torch_optimizer=torch.optim.SGD(torch_model.parameters(), lr=0.01),
    )
    assert not report.passed and report.first_divergence["tensor"] == "loss", str(report)


# the command imports the model by name: Labelled above, written to a module of its own
LABELLED_MODELS = "import torch\nfrom torch import nn\n\n\n" + inspect.getsource(Labelled)


def test_the_command_takes_one_input_per_forward_argument(cli, tmp_path, monkeypatch):
    import json

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "labelledmodels.py").write_text(LABELLED_MODELS)
    out = tmp_path / "labelled_nnx.py"
    code, stdout, stderr = cli(
        *["translate", "labelledmodels:Labelled", "--input", "4,6", "--input", "4:int5"],
        *["--out", out, "--check", "--steps", "2", "--json", "--no-progress"],
    )
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert payload["input"] == [[4, 6], [4]]
    assert payload["check"]["passed"]
    assert (
        max(payload["check"]["loss_max_rel_diff"], payload["check"]["param_max_rel_diff"]) <= 1e-9
    )
    assert "def __call__(self, x, labels):" in out.read_text()


def test_a_wrong_count_of_inputs_ends_in_one_line_and_no_file(cli, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "labelledmodels.py").write_text(LABELLED_MODELS)
    out = tmp_path / "labelled_nnx.py"
    for inputs, given in ((["4,6"], 1), (["4,6", "4:int5", "4,2"], 3)):
        flags = [flag for spec in inputs for flag in ("--input", spec)]
        code, stdout, stderr = cli("translate", "labelledmodels:Labelled", *flags, "--out", out)
        assert code == 2 and stdout == ""
        assert stderr.strip().splitlines() == [
            f"error: the model: forward takes 2 inputs (x, labels), {given} were given"
        ]
        left = sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__")
        assert left == ["labelledmodels.py"]  # no source, no staging file beside it


# -- what cannot be translated -----------------------------------------------------------------


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor's value
            return self.fc(x)
        return x


class NoRule(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cumsum(self.fc(x), 1)


def test_untranslatable_modules_end_in_one_line_naming_node_op_and_source():
    with pytest.raises(CompareError) as err:
        tr.translate(Branchy(), torch.randn(2, 4))
    message = str(err.value)
    assert "\n" not in message and "control flow" in message
    assert "test_translate.py" in message and "if x.sum() > 0" in message
    with pytest.raises(CompareError) as err:
        tr.translate(NoRule(), torch.randn(2, 4))
    message = str(err.value)
    assert "\n" not in message and "cumsum" in message and "torch.cumsum(self.fc(x), 1)" in message
    with pytest.raises(CompareError, match="no rule for torch.nn.Softplus"):
        tr.translate(nn.Sequential(nn.Linear(4, 4), nn.Softplus()), torch.randn(2, 4))


def test_the_command_writes_nothing_for_what_it_cannot_translate(cli, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "usermodels.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Branchy(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 4)\n\n"
        "    def forward(self, x):\n        if x.sum() > 0:\n            return self.fc(x)\n"
        "        return x\n"
    )
    out = tmp_path / "branchy_nnx.py"
    code, stdout, stderr = cli("translate", "usermodels:Branchy", "--input", "2,4", "--out", out)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "usermodels.py:11" in stderr
    assert not out.exists() and not list(tmp_path.glob(".branchy*"))
    code, _, stderr = cli("translate", "nosuchmodule:Net", "--input", "2,4")
    assert code == 2 and stderr.startswith("error: nosuchmodule:Net: cannot import")
    code, _, stderr = cli("translate", "torch.nn:Linear", "--kwargs", "4", "--input", "2,4")
    assert code == 2 and "expected NAME=VALUE" in stderr


def test_the_command_writes_the_file_and_the_weights_and_checks(cli, tmp_path):
    import jaxnets

    out, weights = tmp_path / "cnn_nnx.py", tmp_path / "cnn.safetensors"
    code, stdout, _ = cli(
        *[
            "translate",
            "torchref.mnist_cnn:Model",
            "--input",
            "2,1,28,28",
            "--out",
            str(out),
            "--weights",
            str(weights),
            "--check",
            "--steps",
            "2",
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    import json

    result = json.loads(stdout)
    assert result["check"]["passed"] and result["out"] == str(out)
    namespace = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    model = namespace["Model"](rngs=nnx.Rngs(1))
    jaxnets.load_checkpoint(model, weights)
    torch.manual_seed(0)
    from torchref import mnist_cnn

    reference = mnist_cnn.Model()
    back = port.nnx_to_torch(model)
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(back[key], value.numpy())


ORBAX_MODELS = """import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        with torch.no_grad():  # statistics of their own: a restore that drops them shows
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(self.drop(torch.flatten(x, 1)))
"""


def _docs_restore_block():
    """The Python block of docs/TRANSLATE.md marked ``orbax-restore``, as written there."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "TRANSLATE.md").read_text()
    after = text.split("<!-- orbax-restore", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def _orbax_command(cli, tmp_path, monkeypatch, *extra):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "orbaxmodels.py").write_text(ORBAX_MODELS)
    target = ["translate", "orbaxmodels:SmallCNN", "--input", "2,3,8,8"]
    return cli(*target, "--out", tmp_path / "cnn_nnx.py", *extra)


def test_the_command_saves_an_orbax_checkpoint_the_docs_restore(cli, tmp_path, monkeypatch):
    """``--weights DIR``: an Orbax checkpoint of ``nnx.state``; docs/TRANSLATE.md's lines,
    run as written, restore it into the generated class: every parameter and BatchNorm
    statistic is torch's, and the restored model computes what torch computes."""
    import json
    import sys

    code, stdout, stderr = _orbax_command(
        cli, tmp_path, monkeypatch, "--weights", tmp_path / "cnn_ckpt", "--json"
    )
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert payload["weights_format"] == "orbax"
    assert payload["weights"] == str(tmp_path / "cnn_ckpt")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging
    monkeypatch.chdir(tmp_path)
    namespace = {}
    try:
        exec(compile(_docs_restore_block(), "docs/TRANSLATE.md", "exec"), namespace)
    finally:
        sys.modules.pop("cnn_nnx", None)
    model = namespace["model"]

    import orbaxmodels

    torch.manual_seed(0)  # what the command does before building the model
    reference = orbaxmodels.SmallCNN()
    want = {key: value.numpy() for key, value in reference.state_dict().items()}
    got = port.nnx_to_torch(model)
    assert set(got) == set(want)
    for key, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[key]), value, err_msg=key)
    stats = nnx.state(model, nnx.BatchStat)
    restored_stats = {".".join(map(str, path)) for path, _ in nnx.to_flat_state(stats)}
    assert restored_stats == {"bn.mean", "bn.var", "bn.num_batches_tracked"}
    reference.eval()
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = reference(x).numpy()
    out = np.asarray(model(x.numpy().transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_the_command_refuses_an_existing_weights_path(cli, tmp_path, monkeypatch):
    existing = tmp_path / "cnn_ckpt"
    existing.mkdir()
    (existing / "keep").write_text("mine")
    code, stdout, stderr = _orbax_command(cli, tmp_path, monkeypatch, "--weights", existing)
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        f"error: --weights {existing}: already exists; the weights go to a new path"
    ]
    assert [p.name for p in existing.iterdir()] == ["keep"]
    assert not (tmp_path / "cnn_nnx.py").exists()  # refused before any work
    flat = tmp_path / "cnn.safetensors"  # a flat file is refused alike, before any work
    flat.write_bytes(b"another run's weights")
    code, stdout, stderr = _orbax_command(cli, tmp_path, monkeypatch, "--weights", flat)
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        f"error: --weights {flat}: already exists; the weights go to a new path"
    ]
    assert flat.read_bytes() == b"another run's weights"
    assert not (tmp_path / "cnn_nnx.py").exists()
    code, _, stderr = _orbax_command(cli, tmp_path, monkeypatch, "--weights", tmp_path / "w.pt")
    assert code == 2 and "not torch's format" in stderr
    assert not (tmp_path / "w.pt").exists() and not (tmp_path / "cnn_nnx.py").exists()


def test_a_checkpoint_that_fails_midway_leaves_nothing(cli, tmp_path, monkeypatch):
    """Orbax fails after writing part of the checkpoint: no directory at the path, no staging
    beside it, no source either (the weights are written first)."""
    import orbax.checkpoint as ocp

    def save_half(self, directory, *args, **kwargs):
        from pathlib import Path

        Path(directory).mkdir(parents=True)
        (Path(directory) / "_METADATA").write_text("{}")  # what a complete one starts with
        raise OSError("No space left on device")

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", save_half)
    weights = tmp_path / "cnn_ckpt"
    code, stdout, stderr = _orbax_command(cli, tmp_path, monkeypatch, "--weights", weights)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "No space left on device" in stderr
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__")
    assert left == ["orbaxmodels.py"]


@pytest.mark.slow
def test_torchvision_resnet18_through_the_command(cli, tmp_path):
    pytest.importorskip("torchvision")
    out = tmp_path / "r18.py"
    code, stdout, _ = cli(
        *[
            "translate",
            "torchvision.models:resnet18",
            "--kwargs",
            "num_classes=10",
            "--input",
            "2,3,64,64",
            "--out",
            str(out),
            "--check",
            "--json",
            "--no-progress",
        ]
    )
    import json

    result = json.loads(stdout)
    assert code == 0 and result["check"]["passed"]
    assert max(result["check"]["loss_max_rel_diff"], result["check"]["param_max_rel_diff"]) < 1e-9
    assert "class BasicBlock(nnx.Module)" in out.read_text()


def _table_rates():
    """examples/translate_table.py's rows checked at a lower rate, read from the script itself
    so that the test and the table cannot drift apart."""
    import importlib.util

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "translate_table.py"
    spec = importlib.util.spec_from_file_location("translate_table", path)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    return [(name, *table.MODELS[name][:2], str(lr)) for name, lr in table.RATES.items()]


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs, shape, lr", _table_rates())
def test_torchvision_models_chaotic_at_the_default_rate_pass_within_1e9_at_the_tables(
    cli, tmp_path, name, kwargs, shape, lr
):
    """The proof table's rows checked at a lower SGD rate (``examples/translate_table.py``'s
    ``RATES``, where torch alone stays within 1e-10 of itself over 5 steps): within 1e-9, held
    to the fixed bound, not to torch's noise."""
    import json

    pytest.importorskip("torchvision")
    target = ["translate", f"torchvision.models:{name}", "--kwargs", *kwargs]
    flags = ["--input", shape, "--out", str(tmp_path / "m.py"), "--check", "--lr", lr]
    code, stdout, _ = cli(*target, *flags, "--json", "--no-progress")
    check = json.loads(stdout)["check"]
    assert code == 0 and check["passed"] and check["bound"]["kind"] == "fixed"
    assert max(check["loss_max_rel_diff"], check["param_max_rel_diff"]) <= 1e-9
