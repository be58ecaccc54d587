"""The known porting traps, each ported wrong on purpose on a model no tutorial has: the check
fails at the step and tensor where it first diverges, with the hint of the trap's row in
docs/PORTING.md; a model that cannot even run names the layer configured otherwise.

The models are tiny and the runs a few float64 steps: the check compiles one step and one
forward pass per run, which is most of its time.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from compare import CompareError
from compare.toolkit import traps
from jaxnets import layers

from helpers import FlaxMLP, TorchMLP, check_mse, random_batches

RNG = np.random.default_rng(0)


class TorchRaw(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, 3))
        self.out = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.out(F.linear(x, self.w))  # x @ w.T


class FlaxRawTransposed(nnx.Module):
    def __init__(self, *, rngs):
        self.w = nnx.Param(jnp.zeros((3, 3)))
        self.out = nnx.Linear(3, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(x @ self.w[...])  # the trap: torch computes x @ w.T


class TorchConv1d(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 1, 3, bias=False)
        self.out = torch.nn.Linear(6, 1)

    def forward(self, x):  # x (batch, 1, 8)
        return self.out(self.conv(x)[:, 0])


class RawKernel(nnx.Module):
    def __init__(self):
        self.weight = nnx.Param(jnp.zeros((1, 1, 3)))  # torch's layout, kept as a raw Param


class FlaxTrueConvolution(nnx.Module):
    def __init__(self, *, rngs):
        self.conv = RawKernel()
        self.out = nnx.Linear(6, 1, rngs=rngs)

    def __call__(self, x):  # the trap: jnp.convolve flips the kernel, torch's Conv does not
        kernel = self.conv.weight[...][0, 0]
        return self.out(jax.vmap(lambda row: jnp.convolve(row, kernel, mode="valid"))(x[:, 0]))


class TorchConvPool(torch.nn.Module):
    def __init__(self, stride=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, stride=stride)
        self.fc = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class FlaxConvPool(nnx.Module):
    def __init__(self, padding="SAME", strides=1, *, rngs):
        self.conv = nnx.Conv(2, 3, (3, 3), strides=strides, padding=padding, rngs=rngs)
        self.fc = nnx.Linear(3, 1, rngs=rngs)

    def __call__(self, x):
        return self.fc(nnx.relu(self.conv(x)).mean(axis=(1, 2)))


class TorchConvFlatten(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.fc = torch.nn.Linear(3 * 4 * 4, 1)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))  # NCHW, channels first


class FlaxConvFlatten(nnx.Module):
    def __init__(self, nchw=True, *, rngs):
        self.nchw = nchw
        self.conv = nnx.Conv(2, 3, (3, 3), padding=1, rngs=rngs)
        self.fc = nnx.Linear(48, 1, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv(x))  # (batch, 4, 4, 3)
        if self.nchw:
            x = x.transpose(0, 3, 1, 2)
        return self.fc(x.reshape(len(x), -1))


class TorchBatchNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 5)
        self.bn = torch.nn.BatchNorm1d(5)
        self.out = torch.nn.Linear(5, 1)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x))))


class FlaxBatchNorm(nnx.Module):
    def __init__(self, bn, *, rngs):
        self.fc = nnx.Linear(4, 5, rngs=rngs)
        self.bn = bn
        self.out = nnx.Linear(5, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.bn(self.fc(x))))


class TorchLSTM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(3, 4, batch_first=True)
        self.out = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.out(self.rnn(x)[0][:, -1])


class FlaxLSTM(nnx.Module):
    def __init__(self, cell, *, rngs):
        self.rnn = nnx.RNN(cell)
        self.out = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        carry = (jnp.zeros((len(x), 4), x.dtype),) * 2  # the stock cell's own is float32
        return self.out(self.rnn(x, initial_carry=carry)[:, -1])


class TorchEmbedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.out = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.out(self.embed(x))


class FlaxEmbedding(nnx.Module):
    def __init__(self, embed, *, rngs):
        self.embed = embed
        self.out = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.embed(x))


class TorchFunctionalDropout(TorchMLP):
    def forward(self, x):
        return self.fc2(F.dropout(torch.relu(self.fc1(x)), 0.5, training=self.training))


class TorchActivation(torch.nn.Module):
    """fc1, an activation module, fc2: the activation is the trap."""

    def __init__(self, activation):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.act = activation
        self.fc2 = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class FlaxActivation(nnx.Module):
    def __init__(self, activation, *, rngs):
        self.fc1 = nnx.Linear(4, 8, rngs=rngs)
        self.activation = activation  # "gelu" or "relu": nnx's, as a port calls it
        self.fc2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        h = self.fc1(x)
        h = nnx.gelu(h) if self.activation == "gelu" else nnx.relu(h)
        return self.fc2(h)


class TorchUp(torch.nn.Module):
    """A transposed convolution (padding 1) or a resize, then a pooled head."""

    def __init__(self, resize=False):
        super().__init__()
        if resize:
            self.up = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            self.up = torch.nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1)
        self.fc = torch.nn.Linear(3 if not resize else 2, 1)

    def forward(self, x):  # x (batch, 2, 4, 4)
        return self.fc(torch.relu(self.up(x)).mean(dim=(2, 3)))


class FlaxUp(nnx.Module):
    def __init__(self, resize=False, *, rngs):
        self.resize = resize
        if not resize:  # torch's padding 1 written as Flax's padding 1 (it is 4 - 1 - 1): the trap
            self.up = nnx.ConvTranspose(
                2, 3, (4, 4), strides=2, padding=((1, 1), (1, 1)), transpose_kernel=True, rngs=rngs
            )
        self.fc = nnx.Linear(3 if not resize else 2, 1, rngs=rngs)

    def __call__(self, x):  # x (batch, 4, 4, 2)
        if self.resize:  # half-pixel centres where torch aligns the corners: the trap
            up = jax.image.resize(x, (len(x), 8, 8, x.shape[-1]), "bilinear")
        else:
            up = self.up(x)
        return self.fc(nnx.relu(up).mean(axis=(1, 2)))


class TorchPool(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = torch.nn.Linear(3, 1)

    def forward(self, x):  # x (batch, 2, 6, 6)
        return self.fc(self.pool(self.conv(x)).mean(dim=(2, 3)))


class FlaxPool(nnx.Module):
    def __init__(self, *, rngs):
        self.conv = nnx.Conv(2, 3, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
        self.fc = nnx.Linear(3, 1, rngs=rngs)

    def __call__(self, x):  # x (batch, 6, 6, 2): torch's padding 1 left out: the trap
        return self.fc(nnx.max_pool(self.conv(x), (3, 3), (2, 2)).mean(axis=(1, 2)))


class TorchAttention(torch.nn.Module):
    def __init__(self, dropout=0.0):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(8, 2, dropout=dropout, batch_first=True)
        self.fc = torch.nn.Linear(8, 1)

    def forward(self, x):  # x (batch, length, 8)
        return self.fc(self.attn(x, x, x, need_weights=False)[0].mean(dim=1))


class FlaxAttention(nnx.Module):
    def __init__(self, dropout=0.0, attention_fn=layers.dot_product_attention, *, rngs, **options):
        self.attn = nnx.MultiHeadAttention(
            num_heads=2,
            in_features=8,
            dropout_rate=dropout,
            attention_fn=attention_fn,
            decode=False,
            rngs=rngs,
            **options,
        )
        self.fc = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.fc(self.attn(x).mean(axis=1))


class TorchPaddedAttention(TorchAttention):
    def forward(self, x):  # x (batch, length, 8); zero rows are padding
        padding = (x == 0).all(dim=-1)  # (batch, length): True where left out
        out = self.attn(x, x, x, key_padding_mask=padding, need_weights=False)[0]
        return self.fc(out.mean(dim=1))


class FlaxPaddedAttention(FlaxAttention):
    def __call__(self, x):  # torch's mask passed as it is: the trap
        padding = (x == 0).all(axis=-1)
        return self.fc(self.attn(x, mask=padding[:, None, None, :]).mean(axis=1))


def padded_batches():
    """Sequences of 5 whose last one (even rows) or two (odd rows) steps are zero: padding."""
    out = []
    for x, y in random_batches((4, 5, 8)):
        x[:, 4:] = 0.0
        x[1::2, 3:] = 0.0
        out.append((x, y))
    return out


def unscaled_attention(query, key, value, bias=None, mask=None, **options):
    """A hand-written attention that forgets 1/sqrt(head_dim)."""
    return layers.dot_product_attention(
        query * np.sqrt(query.shape[-1]), key, value, bias, mask, **options
    )


def words(count=3):
    rng = np.random.default_rng(1)
    return [(rng.integers(0, 10, (8,)), rng.standard_normal((8, 1))) for _ in range(count)]


def mlp_pair(**flax_options):
    torch.manual_seed(0)
    return TorchMLP(), FlaxMLP(**flax_options, rngs=nnx.Rngs(0))


def optimizer_row(make_torch, optax_tx):
    def build():
        torch_model, flax_model = mlp_pair()
        # small gradients: where eps sits shows at once
        batches = [(x, 1e-3 * y) for x, y in random_batches((8, 4))]
        return check_mse(
            torch_model, flax_model, batches, make_torch(torch_model), optax_tx, steps=3
        )

    return build


def model_row(torch_cls, flax_build, batches, **options):
    def build():
        torch.manual_seed(0)
        return check_mse(torch_cls(), flax_build(nnx.Rngs(0)), batches, **options)

    return build


# trap -> (a run of a deliberately wrong port, the step, the tensor it first diverges at)
TRAP_ROWS = {
    "gelu-approximate": (
        model_row(
            lambda: TorchActivation(torch.nn.GELU()),
            lambda r: FlaxActivation("gelu", rngs=r),  # approximate=True by default
            random_batches((8, 4)),
        ),
        0,
        "output",
    ),
    "relu6": (
        model_row(
            lambda: TorchActivation(torch.nn.ReLU6()),
            lambda r: FlaxActivation("relu", rngs=r),
            [(20 * x, y) for x, y in random_batches((8, 4))],  # past 6 somewhere
        ),
        0,
        "output",
    ),
    "conv-transpose-padding": (
        model_row(TorchUp, lambda r: FlaxUp(rngs=r), random_batches((4, 2, 4, 4))),
        0,
        "output",
    ),
    "align-corners": (
        model_row(
            lambda: TorchUp(resize=True),
            lambda r: FlaxUp(resize=True, rngs=r),
            random_batches((4, 2, 4, 4)),
        ),
        0,
        "output",
    ),
    "pool-padding": (
        model_row(TorchPool, lambda r: FlaxPool(rngs=r), random_batches((4, 2, 6, 6))),
        0,
        "output",
    ),
    "attention-fn": (
        model_row(
            TorchAttention,
            lambda r: FlaxAttention(attention_fn=unscaled_attention, rngs=r),
            random_batches((4, 5, 8)),
        ),
        0,
        "output",
    ),
    "attention-mask": (
        model_row(TorchPaddedAttention, lambda r: FlaxPaddedAttention(rngs=r), padded_batches()),
        0,
        "output",
    ),
    "transposed-kernel": (
        model_row(TorchRaw, lambda r: FlaxRawTransposed(rngs=r), random_batches((8, 3))),
        0,
        "output",
    ),
    "flipped-kernel": (
        model_row(TorchConv1d, lambda r: FlaxTrueConvolution(rngs=r), random_batches((8, 1, 8))),
        0,
        "output",
    ),
    "padding": (
        model_row(TorchConvPool, lambda r: FlaxConvPool(rngs=r), random_batches((4, 2, 6, 6))),
        0,
        "output",
    ),
    "conv-config": (
        model_row(
            lambda: TorchConvPool(stride=2),
            lambda r: FlaxConvPool(padding="VALID", rngs=r),
            random_batches((4, 2, 7, 7)),
        ),
        0,
        "output",
    ),
    "flatten-order": (
        model_row(
            TorchConvFlatten,
            lambda r: FlaxConvFlatten(nchw=False, rngs=r),
            random_batches((4, 2, 4, 4)),
        ),
        0,
        "output",
    ),
    "batchnorm-momentum": (
        model_row(
            TorchBatchNorm,
            lambda r: FlaxBatchNorm(nnx.BatchNorm(5, rngs=r), rngs=r),
            random_batches((8, 4)),
        ),
        0,
        "bn.running_mean",
    ),
    "batchnorm-variance": (
        model_row(
            TorchBatchNorm,
            lambda r: FlaxBatchNorm(nnx.BatchNorm(5, momentum=0.9, rngs=r), rngs=r),
            random_batches((8, 4)),
        ),
        0,
        "bn.running_var",
    ),
    "norm-eps": (
        model_row(
            lambda: TorchMLP(norm=True),
            lambda r: FlaxMLP(norm_eps=1e-6, rngs=r),
            random_batches((8, 4)),
        ),
        0,
        "output",
    ),
    "dropout-rate": (  # a keep probability where torch's p is the fraction dropped
        model_row(
            lambda: TorchMLP(dropout=0.2),
            lambda r: FlaxMLP(dropout=0.8, rngs=r),
            random_batches((8, 4)),
        ),
        0,
        "output",
    ),
    "float32-layer": (
        model_row(
            TorchEmbedding, lambda r: FlaxEmbedding(nnx.Embed(10, 4, rngs=r), rngs=r), words()
        ),
        0,
        "embed.weight.grad",  # the lookups round to float32 (1e-8), its gradient more so
    ),
    "folded-lstm-bias": (
        model_row(
            TorchLSTM,
            lambda r: FlaxLSTM(nnx.OptimizedLSTMCell(3, 4, rngs=r), rngs=r),
            random_batches((8, 5, 3)),
        ),
        0,
        "rnn.bias_ih_l0 + rnn.bias_hh_l0",
    ),
    "random-forward": (
        model_row(TorchFunctionalDropout, lambda r: FlaxMLP(rngs=r), random_batches((8, 4))),
        0,
        "output",
    ),
    "eps-placement": (
        optimizer_row(
            lambda m: torch.optim.RMSprop(m.parameters(), lr=0.01),
            optax.rmsprop(0.01, decay=0.99, eps=1e-8),
        ),
        0,
        "fc1.weight",
    ),
    "weight-decay": (
        optimizer_row(
            lambda m: torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.1),
            optax.adamw(0.01, weight_decay=0.1),
        ),
        0,
        "fc1.weight",
    ),
    "momentum-dampening": (  # torch's buffer starts undamped: the steps part at the second
        optimizer_row(
            lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, dampening=0.5),
            optax.sgd(0.1, momentum=0.9),
        ),
        1,
        "fc1.weight",
    ),
    "adam-betas": (  # the first step is lr * sign(g) whatever the betas; the moments differ
        optimizer_row(
            lambda m: torch.optim.Adam(m.parameters(), lr=0.01, betas=(0.9, 0.99)),
            optax.adam(0.01),
        ),
        0,
        "optimizer.state[fc1.weight]['exp_avg_sq']",
    ),
    "adagrad-start": (
        optimizer_row(
            lambda m: torch.optim.Adagrad(m.parameters(), lr=0.1), optax.adagrad(0.1, eps=1e-10)
        ),
        0,
        "fc1.weight",
    ),
    "optimizer": (
        optimizer_row(lambda m: torch.optim.Adam(m.parameters(), lr=0.01), optax.sgd(0.01)),
        0,
        "fc1.weight",
    ),
}


def groups_missing():
    """A depthwise convolution ported without its groups: the kernel cannot even load."""
    torch_conv = torch.nn.Conv2d(4, 4, 3, groups=4)
    flax_conv = nnx.Conv(4, 4, (3, 3), padding="VALID", rngs=nnx.Rngs(0))
    return check_mse(torch_conv, flax_conv, random_batches((2, 4, 5, 5), (2, 4, 3, 3)))


def broadcast_dropout():
    """Attention dropout drawn once for the batch and heads on the Flax side: the check feeds
    both the same masks, so only a note can tell."""
    torch.manual_seed(0)
    return check_mse(
        TorchAttention(dropout=0.2),
        FlaxAttention(dropout=0.2, rngs=nnx.Rngs(0)),  # broadcast_dropout=True by default
        random_batches((4, 5, 8)),
    )


# traps that show before any step: a weights file that cannot load, a note in the report
BEFORE_ROWS = {"groups": groups_missing, "broadcast-dropout": broadcast_dropout}


def test_every_trap_has_a_row_here():
    assert set(TRAP_ROWS) | set(BEFORE_ROWS) == set(traps.TRAPS)


def test_a_depthwise_convolution_without_its_groups_is_named_at_load():
    with pytest.raises(CompareError, match="feature_group_count=4.*#trap-groups") as err:
        groups_missing()
    assert "\n" not in str(err.value)


def test_a_shared_attention_dropout_mask_is_a_note():
    report = broadcast_dropout()
    assert report.passed, report  # the masks fed alike: the lockstep cannot see it
    assert report.dropout == "masks fed from numpy: attn (attention probabilities)"
    [note] = report.notes
    assert "attn: broadcast_dropout=True" in note and "#trap-broadcast-dropout" in note


@pytest.mark.parametrize("trap", sorted(TRAP_ROWS))
def test_a_wrong_port_fails_where_it_first_diverges_with_the_traps_hint(trap):
    build, step, tensor = TRAP_ROWS[trap]
    report = build()
    first = report.first_divergence
    assert not report.passed and first is not None, report
    assert (first["step"], first["tensor"]) == (step, tensor), first
    assert first["rel_diff"] > report.tolerance
    assert f"docs/PORTING.md#trap-{trap})" in first["hint"], first["hint"]


def test_a_model_that_raises_is_one_line_with_the_layer_that_differs():
    torch.manual_seed(0)

    class FlaxFlattenSame(FlaxConvFlatten):
        def __init__(self, *, rngs):
            super().__init__(rngs=rngs)
            self.conv = nnx.Conv(2, 3, (3, 3), padding="VALID", rngs=rngs)  # 2x2 maps, not 4x4

    with pytest.raises(CompareError) as err:
        check_mse(
            TorchConvFlatten(), FlaxFlattenSame(rngs=nnx.Rngs(0)), random_batches((4, 2, 4, 4))
        )
    message = str(err.value)
    assert message.startswith("the jax forward raised TypeError") and "\n" not in message
    assert "conv: torch pads ((1, 1), (1, 1)), nnx.Conv VALID" in message


@pytest.mark.parametrize(("kind", "hinted"), [("output", True), ("loss", True), ("grad", False)])
def test_a_padded_torch_pool_is_suspected_only_while_the_outputs_differ(kind, hinted):
    """The audit sees a pool's padding on the torch side only; a wrong amount changes what the
    layer outputs, so once this step's output and loss agreed it is not the cause (a correct
    ResNet port parting in float32 on a gradient was told to look at its stem's pool)."""
    suspects = {"pool": [("pool-padding", "MaxPool2d(padding=1, ceil_mode=False)")]}
    no_folds = types.SimpleNamespace(folds=[])
    diagnosis = traps.Diagnosis(pair=no_folds, suspects=suspects, tolerance=1e-4)
    found = diagnosis({"kind": kind, "tensor": "conv1.weight"}, context={"step": 1})
    assert (found is not None and "#trap-pool-padding" in found) == hinted, found
