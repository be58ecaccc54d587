"""The known porting traps, each ported wrong on purpose on a model no tutorial has: the check
fails at the step and tensor where it first diverges, with the hint of the trap's row in
docs/PORTING.md; a model that cannot even run names the layer configured otherwise.

The models are tiny and the runs a few float64 steps: the check compiles one step and one
forward pass per run, which is most of its time.
"""

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


def test_every_trap_has_a_row_here():
    assert set(TRAP_ROWS) == set(traps.TRAPS)


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
