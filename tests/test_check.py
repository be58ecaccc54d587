"""``compare.check`` on models no tutorial has: a right port passes, and each known porting
trap, ported wrong on purpose, fails at the step and tensor where it first diverges, with the
hint of its row in docs/PORTING.md.

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

from compare import CompareError, check, traps

RNG = np.random.default_rng(0)


def mse_torch(model, x, y):
    return F.mse_loss(model(x), y)


def mse_flax(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def data(x_shape, y_shape=None, count=3, seed=0):
    rng = np.random.default_rng(seed)
    y_shape = y_shape or (x_shape[0], 1)
    return [(rng.standard_normal(x_shape), rng.standard_normal(y_shape)) for _ in range(count)]


def run(torch_model, flax_model, batches, optimizer=None, optax_tx=None, **options):
    optimizer = optimizer or torch.optim.SGD(torch_model.parameters(), lr=0.1)
    return check(
        torch_model,
        flax_model,
        batches=batches,
        torch_loss=mse_torch,
        flax_loss=mse_flax,
        torch_optimizer=optimizer,
        optax_tx=optax_tx,
        **options,
    )


# --- models ------------------------------------------------------------------------------


class TorchMLP(torch.nn.Module):
    def __init__(self, norm=False, dropout=0.0):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.norm = torch.nn.LayerNorm(8) if norm else torch.nn.Identity()
        self.drop = torch.nn.Dropout(dropout) if dropout else torch.nn.Identity()
        self.fc2 = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.norm(self.fc1(x)))))


class FlaxMLP(nnx.Module):
    def __init__(self, norm_eps=None, dropout=0.0, *, rngs):
        self.fc1 = nnx.Linear(4, 8, rngs=rngs)
        self.norm = None if norm_eps is None else nnx.LayerNorm(8, epsilon=norm_eps, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.fc2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        x = self.fc1(x)
        if self.norm is not None:
            x = self.norm(x)
        x = nnx.relu(x)
        if self.drop is not None:
            x = self.drop(x)
        return self.fc2(x)


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
        batches = [(x, 1e-3 * y) for x, y in data((8, 4))]
        return run(torch_model, flax_model, batches, make_torch(torch_model), optax_tx, steps=3)

    return build


def model_row(torch_cls, flax_build, batches, **options):
    def build():
        torch.manual_seed(0)
        return run(torch_cls(), flax_build(nnx.Rngs(0)), batches, **options)

    return build


# trap -> (a run of a deliberately wrong port, the step, the tensor it first diverges at)
TRAP_ROWS = {
    "transposed-kernel": (
        model_row(TorchRaw, lambda r: FlaxRawTransposed(rngs=r), data((8, 3))),
        0,
        "output",
    ),
    "flipped-kernel": (
        model_row(TorchConv1d, lambda r: FlaxTrueConvolution(rngs=r), data((8, 1, 8))),
        0,
        "output",
    ),
    "padding": (
        model_row(TorchConvPool, lambda r: FlaxConvPool(rngs=r), data((4, 2, 6, 6))),
        0,
        "output",
    ),
    "conv-config": (
        model_row(
            lambda: TorchConvPool(stride=2),
            lambda r: FlaxConvPool(padding="VALID", rngs=r),
            data((4, 2, 7, 7)),
        ),
        0,
        "output",
    ),
    "flatten-order": (
        model_row(
            TorchConvFlatten, lambda r: FlaxConvFlatten(nchw=False, rngs=r), data((4, 2, 4, 4))
        ),
        0,
        "output",
    ),
    "batchnorm-momentum": (
        model_row(
            TorchBatchNorm, lambda r: FlaxBatchNorm(nnx.BatchNorm(5, rngs=r), rngs=r), data((8, 4))
        ),
        0,
        "bn.running_mean",
    ),
    "batchnorm-variance": (
        model_row(
            TorchBatchNorm,
            lambda r: FlaxBatchNorm(nnx.BatchNorm(5, momentum=0.9, rngs=r), rngs=r),
            data((8, 4)),
        ),
        0,
        "bn.running_var",
    ),
    "norm-eps": (
        model_row(
            lambda: TorchMLP(norm=True), lambda r: FlaxMLP(norm_eps=1e-6, rngs=r), data((8, 4))
        ),
        0,
        "output",
    ),
    "dropout-rate": (  # a keep probability where torch's p is the fraction dropped
        model_row(
            lambda: TorchMLP(dropout=0.2), lambda r: FlaxMLP(dropout=0.8, rngs=r), data((8, 4))
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
            data((8, 5, 3)),
        ),
        0,
        "rnn.bias_ih_l0 + rnn.bias_hh_l0",
    ),
    "random-forward": (
        model_row(TorchFunctionalDropout, lambda r: FlaxMLP(rngs=r), data((8, 4))),
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


# --- right ports pass; the report ---------------------------------------------------------


class TorchNestedNet(torch.nn.Module):
    """Nested containers, LayerNorm and dropout (a GRU's check is the example spec's)."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh())
        self.heads = torch.nn.ModuleDict(
            {"main": torch.nn.Sequential(torch.nn.LayerNorm(6), torch.nn.Dropout(0.3))}
        )
        self.out = torch.nn.Linear(6, 1)

    def forward(self, x):
        return self.out(self.heads["main"](self.encoder(x)))


class FlaxNestedNet(nnx.Module):
    def __init__(self, *, rngs):
        self.encoder = nnx.Sequential(nnx.Linear(3, 6, rngs=rngs), nnx.tanh)
        self.heads = nnx.Dict(
            {
                "main": nnx.Sequential(
                    nnx.LayerNorm(6, epsilon=1e-5, rngs=rngs), nnx.Dropout(0.3, rngs=rngs)
                )
            }
        )
        self.out = nnx.Linear(6, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.heads["main"](self.encoder(x)))


def test_a_right_port_passes_and_the_report_has_parity_fields():
    torch.manual_seed(0)
    torch_model, flax_model = TorchNestedNet(), FlaxNestedNet(rngs=nnx.Rngs(0))
    optimizer = torch.optim.Adam(torch_model.parameters(), lr=0.01, weight_decay=0.01)
    report = run(torch_model, flax_model, data((6, 3)), optimizer)
    result = report.to_json()
    assert result["passed"] and result["first_divergence"] is None, result
    assert result["dropout"] == "masks fed from numpy: heads.main.1"
    for key in ("loss_max_rel_diff", "param_max_rel_diff", "forward_rel_diff", "grad_rel_diff"):
        assert result[key] <= 1e-9
    assert set(result["compared"]) == {"output", "loss", "grad", "param", "optimizer"}
    assert result["optimizer"] == "compare.optim.to_optax(Adam)"
    assert {"dtype", "steps", "tolerance", "passed"} <= set(result)
    assert result["steps"] == 3 and result["dtype"] == "float64"


def test_dropout_runs_with_masks_fed_from_numpy_or_off():
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(dropout=0.5), FlaxMLP(dropout=0.5, rngs=nnx.Rngs(0))
    batches = data((8, 4), count=1)
    x, y = (torch.from_numpy(a) for a in batches[0])
    torch_model.double().eval()
    no_dropout = mse_torch(torch_model, x, y).item()
    report = run(torch_model, flax_model, batches, steps=1)
    assert report.passed
    assert abs(float(report.torch_losses[0]) - no_dropout) > 1e-3  # the masks did drop units
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(dropout=0.5), FlaxMLP(dropout=0.5, rngs=nnx.Rngs(0))
    report = run(torch_model, flax_model, batches, steps=1, dropout="off")
    assert report.passed and report.dropout == "off: drop"
    assert float(report.torch_losses[0]) == pytest.approx(no_dropout, rel=1e-12)


def test_float32_reports_the_drift():
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(norm=True), FlaxMLP(norm_eps=1e-5, rngs=nnx.Rngs(0))
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    result = run(torch_model, flax_model, data((8, 4)), optimizer, dtype="float32").to_json()
    assert result["dtype"] == "float32" and result["passed"] and result["tolerance"] == 1e-4
    assert 1e-9 < max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) < 1e-4


def test_parameter_groups_a_frozen_parameter_and_a_scheduler():
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(), FlaxMLP(rngs=nnx.Rngs(0))
    torch_model.fc2.bias.requires_grad_(False)  # in no group: frozen
    optimizer = torch.optim.SGD(
        [
            {"params": [torch_model.fc1.weight, torch_model.fc1.bias], "lr": 0.05},
            {"params": [torch_model.fc2.weight], "momentum": 0.9},
        ],
        lr=0.1,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1, 2], gamma=0.5)
    bias = torch_model.fc2.bias.detach().clone()
    report = run(
        torch_model, flax_model, data((8, 4), count=2), optimizer, steps=6, scheduler=scheduler
    )
    assert report.passed, report
    np.testing.assert_array_equal(np.asarray(flax_model.fc2.bias[...]), bias.double().numpy())
    assert optimizer.param_groups[0]["lr"] == 0.05 * 0.25  # the scheduler did step, per epoch


# --- bad input: one line ------------------------------------------------------------------


def test_models_whose_keys_do_not_fit_are_named():
    torch.manual_seed(0)
    with pytest.raises(CompareError, match="missing keys \\['norm.bias', 'norm.weight'\\]"):
        run(TorchMLP(), FlaxMLP(norm_eps=1e-5, rngs=nnx.Rngs(0)), data((8, 4)))


def test_a_loss_that_turns_nan_is_one_line_with_its_step():
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(), FlaxMLP(rngs=nnx.Rngs(0))
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=1e200)
    with pytest.raises(CompareError, match="loss became non-finite .* at step \\d"):
        run(torch_model, flax_model, data((8, 4)), optimizer, steps=5)


def test_a_model_that_raises_is_one_line_with_the_layer_that_differs():
    torch.manual_seed(0)

    class FlaxFlattenSame(FlaxConvFlatten):
        def __init__(self, *, rngs):
            super().__init__(rngs=rngs)
            self.conv = nnx.Conv(2, 3, (3, 3), padding="VALID", rngs=rngs)  # 2x2 maps, not 4x4

    with pytest.raises(CompareError) as err:
        run(TorchConvFlatten(), FlaxFlattenSame(rngs=nnx.Rngs(0)), data((4, 2, 4, 4)))
    message = str(err.value)
    assert message.startswith("the jax forward raised TypeError") and "\n" not in message
    assert "conv: torch pads ((1, 1), (1, 1)), nnx.Conv VALID" in message


@pytest.mark.parametrize(
    "options, message",
    [
        ({"batches": []}, "batches must be a non-empty list"),
        ({"batches": [(np.zeros((2, 4)),)]}, "batch 0 must be an \\(x, y\\) pair"),
        ({"batches": [([0.0], np.zeros(2))]}, "batch 0's x must be a numpy array"),
        ({"dtype": "float16"}, "unknown dtype"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"dropout": "sometimes"}, "dropout must be"),
        ({"torch_optimizer": "sgd"}, "torch_optimizer must be a torch.optim.Optimizer"),
        ({"torch_step": lambda *a: None}, "give both torch_step and flax_step"),
        ({"torch_step": lambda *a: None, "flax_step": lambda *a: None}, "optax_tx is the opt"),
    ],
)
def test_bad_arguments_are_one_line(options, message):
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(), FlaxMLP(rngs=nnx.Rngs(0))
    kwargs = dict(
        batches=data((8, 4)),
        torch_loss=mse_torch,
        flax_loss=mse_flax,
        torch_optimizer=torch.optim.SGD(torch_model.parameters(), lr=0.1),
    )
    kwargs.update(options)
    with pytest.raises(CompareError, match=message):
        check(torch_model, flax_model, **kwargs)


def test_dropout_layers_must_pair_by_name():
    torch.manual_seed(0)
    with pytest.raises(CompareError, match="dropout layers differ: torch has \\['drop'\\]"):
        run(TorchMLP(dropout=0.2), FlaxMLP(rngs=nnx.Rngs(0)), data((8, 4)))
