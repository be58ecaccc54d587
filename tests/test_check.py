"""``compare.check`` on models no tutorial has: a right port passes with the report's fields,
dropout runs on fed masks or off, float32 reports the drift, parameter groups and schedulers
translate, and bad input of every kind is one line."""

import numpy as np
import pytest
import torch
from flax import nnx

from compare import CompareError, check

from helpers import FlaxMLP, TorchMLP, check_mse, mse_flax, mse_torch, random_batches

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
    report = check_mse(torch_model, flax_model, random_batches((6, 3)), optimizer)
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
    batches = random_batches((8, 4), count=1)
    x, y = (torch.from_numpy(a) for a in batches[0])
    torch_model.double().eval()
    no_dropout = mse_torch(torch_model, x, y).item()
    report = check_mse(torch_model, flax_model, batches, steps=1)
    assert report.passed
    assert abs(float(report.torch_losses[0]) - no_dropout) > 1e-3  # the masks did drop units
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(dropout=0.5), FlaxMLP(dropout=0.5, rngs=nnx.Rngs(0))
    report = check_mse(torch_model, flax_model, batches, steps=1, dropout="off")
    assert report.passed and report.dropout == "off: drop"
    assert float(report.torch_losses[0]) == pytest.approx(no_dropout, rel=1e-12)


def test_float32_reports_the_drift():
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(norm=True), FlaxMLP(norm_eps=1e-5, rngs=nnx.Rngs(0))
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    result = check_mse(
        torch_model, flax_model, random_batches((8, 4)), optimizer, dtype="float32"
    ).to_json()
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
    report = check_mse(
        torch_model,
        flax_model,
        random_batches((8, 4), count=2),
        optimizer,
        steps=6,
        scheduler=scheduler,
    )
    assert report.passed, report
    np.testing.assert_array_equal(np.asarray(flax_model.fc2.bias[...]), bias.double().numpy())
    assert optimizer.param_groups[0]["lr"] == 0.05 * 0.25  # the scheduler did step, per epoch


# --- bad input: one line ------------------------------------------------------------------


def test_models_whose_keys_do_not_fit_are_named():
    torch.manual_seed(0)
    with pytest.raises(CompareError, match="missing keys \\['norm.bias', 'norm.weight'\\]"):
        check_mse(TorchMLP(), FlaxMLP(norm_eps=1e-5, rngs=nnx.Rngs(0)), random_batches((8, 4)))


def test_a_loss_that_turns_nan_is_one_line_with_its_step():
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(), FlaxMLP(rngs=nnx.Rngs(0))
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=1e200)
    with pytest.raises(CompareError, match="loss became non-finite .* at step \\d"):
        check_mse(torch_model, flax_model, random_batches((8, 4)), optimizer, steps=5)


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
        batches=random_batches((8, 4)),
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
        check_mse(TorchMLP(dropout=0.2), FlaxMLP(rngs=nnx.Rngs(0)), random_batches((8, 4)))
