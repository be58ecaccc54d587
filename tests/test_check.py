"""``compare.check`` on models no tutorial has: a right port passes with the report's fields,
dropout runs on fed masks or off, float32 reports the drift, parameter groups and schedulers
translate, and bad input of every kind is one line."""

import jax
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from compare import CompareError, check
from compare.toolkit import dropout as dropout_feed
from jaxnets import layers

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


# --- each tensor against its own rounding noise ------------------------------------------


class TorchAbsorbed(torch.nn.Module):
    """``norm1``'s shift feeds a bias-free 1x1 convolution and ``norm2`` (training mode): the
    second normalisation absorbs it, so its gradient is zero in exact arithmetic (MobileNet's
    inverted residuals have the pattern)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.norm1 = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 4, 1, bias=False)
        self.norm2 = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x):  # x (batch, 2, 5, 5)
        x = self.norm2(self.conv2(self.norm1(self.conv1(x))))  # (batch, 4, 5, 5)
        return self.fc(torch.relu(x).mean(dim=(2, 3)))  # (batch, 1)


class FlaxAbsorbed(nnx.Module):
    def __init__(self, frozen_norm2_bias=False, *, rngs):
        self.conv1 = nnx.Conv(2, 4, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.norm1 = layers.BatchNorm(4, rngs=rngs)
        self.conv2 = nnx.Conv(4, 4, (1, 1), use_bias=False, rngs=rngs)
        self.norm2 = layers.BatchNorm(4, rngs=rngs)
        self.fc = nnx.Linear(4, 1, rngs=rngs)
        self.frozen_norm2_bias = frozen_norm2_bias

    def __call__(self, x):  # x (batch, 5, 5, 2)
        x = self.norm2(self.conv2(self.norm1(self.conv1(x))))
        if self.frozen_norm2_bias:  # a mistake: the shift the loss depends on gets no gradient
            bias = self.norm2.bias[...][None, None, None, :]
            x = x - bias + jax.lax.stop_gradient(bias)
        return self.fc(nnx.relu(x).mean(axis=(1, 2)))


def absorbed_check(**flax_options):
    torch.manual_seed(0)
    torch_model = TorchAbsorbed()
    flax_model = FlaxAbsorbed(**flax_options, rngs=nnx.Rngs(0))
    optimizer = torch.optim.RMSprop(torch_model.parameters(), lr=0.01)
    batches = random_batches((6, 2, 5, 5), count=2)
    return check_mse(torch_model, flax_model, batches, optimizer, steps=4)


def test_a_parameter_the_loss_does_not_depend_on_is_reported_apart_not_failed():
    """norm1's shift: each side moves it by its own rounding noise, which RMSprop scales to a
    step (the two part by ~1 relative); held to that noise it passes, and is named."""
    report = absorbed_check()
    result = report.to_json()
    assert result["passed"] and result["first_divergence"] is None, report
    irrelevant = {entry["tensor"]: entry for entry in result["loss_irrelevant"]}
    assert "norm1.bias" in irrelevant and "norm2.bias" not in irrelevant
    assert irrelevant["norm1.bias"]["rel_diff"] > 1e-3  # far past the fixed 1e-9: noise
    assert "gradient is at rounding level" in irrelevant["norm1.bias"]["why"]
    assert result["loss_max_rel_diff"] <= 1e-12
    # norm2's running mean follows norm1's shift, which each side moves by its own noise:
    # held at norm2's deviation (what eval mode divides it by) it parts by 3.6e-11 (measured,
    # 2026-12-04), the difference it makes to the eval outputs; before, it was set apart as
    # rounding noise at its own size and the figure was 1e-12
    assert result["param_max_rel_diff"] <= 1e-10
    assert result["bound"]["reference"] == "torch from weights nudged by one rounding step"


def test_a_real_bias_mistake_still_fails_at_once():
    """The same check with norm2's shift (one the loss depends on) frozen on the JAX side: the
    forward pass agrees, its gradient does not, at step 0."""
    report = absorbed_check(frozen_norm2_bias=True)
    first = report.first_divergence
    assert not report.passed and (first["step"], first["tensor"]) == (0, "norm2.bias.grad")
    assert first["rel_diff"] > 1e6 * first["bound"]  # its own noise is rounding: 1e-9 holds
    assert "norm2.bias" not in {entry["tensor"] for entry in report.loss_irrelevant}


class TorchShaky(torch.nn.Module):
    """A net whose float32 training drifts far from its float64 one: BatchNorm over batches of
    four and a high learning rate."""

    def __init__(self, eps=1e-5):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 32)
        self.norm = torch.nn.BatchNorm1d(32, eps=eps)
        self.fc2 = torch.nn.Linear(32, 32)
        self.fc3 = torch.nn.Linear(32, 1)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.relu(self.norm(self.fc1(x))))))


class FlaxShaky(nnx.Module):
    def __init__(self, eps=1e-5, *, rngs):
        self.fc1 = nnx.Linear(4, 32, rngs=rngs)
        self.norm = layers.BatchNorm(32, eps=eps, rngs=rngs)
        self.fc2 = nnx.Linear(32, 32, rngs=rngs)
        self.fc3 = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
        return self.fc3(nnx.tanh(self.fc2(nnx.relu(self.norm(self.fc1(x))))))


def shaky_check(flax_eps=1e-5):
    torch.manual_seed(0)
    torch_model, flax_model = TorchShaky(), FlaxShaky(eps=flax_eps, rngs=nnx.Rngs(0))
    optimizer = torch.optim.Adam(torch_model.parameters(), lr=0.3)
    batches = random_batches((4, 4), count=6, seed=1)
    return check_mse(torch_model, flax_model, batches, optimizer, steps=12, dtype="float32")


def test_float32_is_held_to_torchs_own_float32_error():
    """Torch itself, in float32, parts from its float64 run by more than the fixed 1e-4 here:
    the check holds each tensor to 10 times that, says so, and passes the right port."""
    result = shaky_check().to_json()
    assert result["passed"], result
    bound = result["bound"]
    assert bound["kind"] == "sensitivity" and bound["reference"] == "torch in float64"
    assert bound["self_divergence"] > 1e-4  # torch's own float32 error: past the old bound
    assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) > 1e-4


def test_a_float64_check_held_to_torchs_noise_says_the_trajectory_is_chaotic():
    """In float64 a noise bound means torch, from weights one rounding step away, did not
    agree with itself: a passing report says so and names the way out (a smaller rate, the
    translate table's remedy); a failing one does not (a failure is a port to look at), nor
    does float32's, whose noise is float32's."""
    import dataclasses

    float32 = shaky_check()
    assert float32.bound["kind"] == "sensitivity" and "chaotic" not in str(float32)
    torch.manual_seed(0)
    fixed = check_mse(TorchShaky(), FlaxShaky(rngs=nnx.Rngs(0)), random_batches((4, 4)), steps=2)
    assert fixed.bound["kind"] == "fixed" and "chaotic" not in str(fixed)
    noisy = {**fixed.bound, "kind": "sensitivity", "self_divergence": 2.3e-10, "tolerance": 2.3e-9}
    text = str(dataclasses.replace(fixed, bound=noisy))
    assert "torch parts from itself by 2.3e-10 here (a chaotic trajectory)" in text
    assert "held to 10 x that, not to 1e-09" in text and "smaller learning rate" in text
    assert "chaotic" not in str(dataclasses.replace(fixed, bound=noisy, passed=False))


@pytest.mark.parametrize("lr", [0.01, 1e-4, 1e-6])
def test_a_small_rate_still_sees_an_update_one_part_in_a_million_off(lr):
    """A small rate barely moves the weights, so a wrong update shows less in them; but a
    parameter that starts at 0 (a BatchNorm bias) holds only updates, and so the momentum
    buffer's 1e-6 error at full size: caught at step 1 whatever the rate (the translate
    table checks four torchvision rows at 0.003 and 0.0001)."""
    batches = random_batches((4, 4), count=4, seed=1)
    for momentum, passes in ((0.9, True), (0.9 * (1 + 1e-6), False)):
        torch.manual_seed(0)
        torch_model, flax_model = TorchShaky(), FlaxShaky(rngs=nnx.Rngs(0))
        optimizer = torch.optim.SGD(torch_model.parameters(), lr=lr, momentum=0.9)
        tx = optax.sgd(lr, momentum=momentum)
        report = check_mse(torch_model, flax_model, batches, optimizer, optax_tx=tx, steps=4)
        assert report.passed is passes, str(report)
    assert report.first_divergence["step"] == 1 and report.first_divergence["rel_diff"] > 3e-9


def test_float32_still_fails_a_wrong_port_by_orders_of_magnitude():
    result = shaky_check(flax_eps=1e-3).to_json()  # nnx's eps where torch's is 1e-5
    first = result["first_divergence"]
    assert not result["passed"] and first["step"] == 0, result
    assert first["rel_diff"] > 30 * first["bound"]
    assert "norm-eps" in first["hint"]


class TorchConvGelu(torch.nn.Module):
    """A strided, padded convolution, LayerNorm over channels and exact GELU: no tutorial's."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm = torch.nn.LayerNorm(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 1)

    def forward(self, x):  # x (batch, 3, 8, 8)
        h = self.conv(x).permute(0, 2, 3, 1)  # (batch, 4, 4, 8)
        return self.fc(F.gelu(self.norm(h)).reshape(len(h), -1))  # HWC flatten on both sides


class FlaxConvGelu(nnx.Module):
    def __init__(self, *, rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=rngs)
        self.norm = nnx.LayerNorm(8, epsilon=1e-5, rngs=rngs)
        self.fc = nnx.Linear(8 * 4 * 4, 1, rngs=rngs)

    def __call__(self, x):  # x (batch, 8, 8, 3)
        h = nnx.gelu(self.norm(self.conv(x)), approximate=False)  # (batch, 4, 4, 8)
        return self.fc(h.reshape(len(h), -1))


def test_adagrad_built_before_the_float64_conversion_takes_torchs_float64_steps():
    """Adagrad makes its ``sum`` state in its constructor, in the model's float32; check turns
    the model into float64 afterwards, and once left the state float32, so torch accumulated
    ``g * g`` rounded to float32 (the two sides 2e-8 apart after one step). It converts the
    state with the parameters now: the sides agree to rounding."""
    torch.manual_seed(0)
    torch_model, flax_model = TorchConvGelu(), FlaxConvGelu(rngs=nnx.Rngs(0))
    optimizer = torch.optim.Adagrad(torch_model.parameters(), lr=0.05)
    assert optimizer.state[torch_model.conv.weight]["sum"].dtype == torch.float32
    report = check_mse(torch_model, flax_model, random_batches((8, 3, 8, 8)), optimizer, steps=6)
    assert report.passed and report.bound["kind"] == "fixed", report
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-13
    assert optimizer.state[torch_model.conv.weight]["sum"].dtype == torch.float64


# --- dropout inside layers: attention probabilities, between recurrent layers --------------


class TorchDropping(torch.nn.Module):
    """Attention with dropout on its probabilities, then a two-layer GRU dropping between its
    layers: torch drops inside both kernels."""

    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True)
        self.gru = torch.nn.GRU(8, 6, num_layers=2, dropout=0.4, batch_first=True)
        self.fc = torch.nn.Linear(6, 1)

    def forward(self, x):  # x (batch, length, 8)
        h = self.attn(x, x, x, need_weights=False)[0]
        return self.fc(self.gru(h)[0][:, -1])


class FlaxDropping(nnx.Module):
    def __init__(self, gru_dropout=0.4, *, rngs):
        self.attn = nnx.MultiHeadAttention(
            num_heads=2,
            in_features=8,
            dropout_rate=0.3,
            broadcast_dropout=False,
            attention_fn=layers.dot_product_attention,
            decode=False,
            rngs=rngs,
        )
        self.gru = layers.GRU(8, 6, 2, batch_first=True, dropout=gru_dropout, rngs=rngs)
        self.fc = nnx.Linear(6, 1, rngs=rngs)

    def __call__(self, x):
        return self.fc(self.gru(self.attn(x))[0][:, -1])


@pytest.mark.parametrize("mode", ["masks", "off"])
def test_dropout_inside_attention_and_between_recurrent_layers_is_fed_or_off(mode):
    torch.manual_seed(0)
    torch_model, flax_model = TorchDropping(), FlaxDropping(rngs=nnx.Rngs(0))
    optimizer = torch.optim.Adam(torch_model.parameters(), lr=0.01)
    report = check_mse(torch_model, flax_model, random_batches((4, 5, 8)), optimizer, dropout=mode)
    assert report.passed and max(report.loss_max_rel_diff, report.param_max_rel_diff) < 1e-12
    how = "masks fed from numpy" if mode == "masks" else "off"
    assert report.dropout == (
        f"{how}: attn (attention probabilities), gru.dropout_layers.0 (between layers)"
    )
    assert torch_model.attn.dropout == 0.3 and torch_model.gru.dropout == 0.4  # put back
    assert "forward" not in vars(torch_model.attn) and "forward" not in vars(torch_model.gru)


def test_the_masks_really_drop():
    """A Flax GRU that does not drop between its layers while torch does: named, not passed."""
    torch.manual_seed(0)
    with pytest.raises(CompareError, match="torch drops at .*'gru.dropout_layers.0'"):
        check_mse(
            TorchDropping(),
            FlaxDropping(gru_dropout=0.0, rngs=nnx.Rngs(0)),
            random_batches((4, 5, 8)),
        )


# --- one dropout site called several times in a pass: a mask per call ------------------------


class TorchDropTwice(torch.nn.Module):
    """One ``nn.Dropout`` after two layers (housing-regularization's ``Net1``): called twice
    a pass, on ``(batch, 6)`` then ``(batch, hidden)``; ``second_pass_calls``, how many times
    the second pass calls it instead."""

    def __init__(self, hidden=5, second_pass_calls=2):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(4, 6), torch.nn.Linear(6, hidden)
        self.out = torch.nn.Linear(hidden, 1)
        self.drop = torch.nn.Dropout(0.5)
        self.second_pass_calls, self.passes = second_pass_calls, 0

    def forward(self, x):
        self.passes += 1
        calls = self.second_pass_calls if self.passes == 2 else 2
        x = torch.relu(self.drop(self.fc1(x)))
        x = self.fc2(x)
        for _ in range(calls - 1):
            x = self.drop(x)
        return self.out(torch.relu(x))


class FlaxDropTwice(nnx.Module):
    def __init__(self, hidden=5, second_drop=True, *, rngs):
        self.fc1, self.fc2 = nnx.Linear(4, 6, rngs=rngs), nnx.Linear(6, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.second_drop = second_drop

    def __call__(self, x):
        x = nnx.relu(self.drop(self.fc1(x)))
        x = self.fc2(x)
        return self.out(nnx.relu(self.drop(x) if self.second_drop else x))


def test_a_dropout_called_twice_on_two_shapes_gets_a_mask_per_call():
    torch.manual_seed(0)
    torch_model, flax_model = TorchDropTwice(), FlaxDropTwice(rngs=nnx.Rngs(0))
    report = check_mse(torch_model, flax_model, random_batches((8, 4)), steps=2, tolerance=1e-12)
    assert report.passed and report.bound["kind"] == "fixed", str(report)
    assert max(report.loss_max_rel_diff, report.param_max_rel_diff) <= 1e-12
    assert report.dropout == "masks fed from numpy: drop (2 calls a pass)"
    assert isinstance(flax_model.drop, nnx.Dropout)  # put back, and torch's hooks removed
    assert not torch_model.drop._forward_hooks and not torch_model._forward_pre_hooks


def test_a_port_fed_the_first_calls_mask_at_the_second_is_caught(monkeypatch):
    """Both calls on (8, 6): a Flax side whose count never moves on drops the second call
    with the first call's mask, and the check sees it where it passes with the count."""

    def models():
        torch.manual_seed(0)
        return TorchDropTwice(hidden=6), FlaxDropTwice(hidden=6, rngs=nnx.Rngs(0))

    report = check_mse(*models(), random_batches((8, 4)), steps=1, tolerance=1e-12)
    assert report.passed, str(report)
    monkeypatch.setattr(dropout_feed._FedMasks, "take", lambda fed: fed.masks[0][...])
    report = check_mse(*models(), random_batches((8, 4)), steps=1, tolerance=1e-12)
    assert not report.passed and report.first_divergence["step"] == 0, str(report)


class TorchDroppingTwice(TorchDropping):
    """``TorchDropping``'s attention and GRU each called twice a pass, on two shapes."""

    def forward(self, x):  # x (batch, length, 8)
        h = self.attn(x, x, x, need_weights=False)[0]
        h = self.attn(h[:, :3], h, h, need_weights=False)[0]  # (batch, 3, 8) against 5
        whole, tail = self.gru(h)[0], self.gru(h[:, 1:])[0]
        return self.fc(whole[:, -1] + tail[:, -1])


class FlaxDroppingTwice(FlaxDropping):
    def __call__(self, x):
        h = self.attn(x)
        h = self.attn(h[:, :3], h, h)
        whole, tail = self.gru(h)[0], self.gru(h[:, 1:])[0]
        return self.fc(whole[:, -1] + tail[:, -1])


@pytest.mark.slow  # the GRU's compilations: half a minute
def test_attention_and_a_recurrent_stack_called_twice_get_a_mask_per_call():
    torch.manual_seed(0)
    torch_model, flax_model = TorchDroppingTwice(), FlaxDroppingTwice(rngs=nnx.Rngs(0))
    report = check_mse(torch_model, flax_model, random_batches((4, 5, 8)), steps=2)
    assert report.passed and max(report.loss_max_rel_diff, report.param_max_rel_diff) < 1e-12
    assert report.dropout == (
        "masks fed from numpy: attn (attention probabilities, 2 calls a pass), "
        "gru.dropout_layers.0 (between layers, 2 calls a pass)"
    )


@pytest.mark.parametrize(
    "hidden, second_pass_calls, flax_second_drop, say",
    [
        (5, 2, False, "drop: torch's call 2 of 2 in a pass drops a (8, 5) input, Flax's"),
        (5, 3, True, "drop: more than 2 calls in a pass, 2 in the first"),
        (5, 1, True, "drop: 1 calls in a pass, 2 in the first"),
    ],
)
def test_a_dropout_called_another_number_of_times_is_one_line(
    hidden, second_pass_calls, flax_second_drop, say
):
    """The Flax side calls the site once a pass where torch calls it twice (its second
    pass meets the mask of torch's second call); torch's second pass calls it three times,
    or once: no mask per call can be paired up."""
    torch.manual_seed(0)
    torch_model = TorchDropTwice(hidden, second_pass_calls=second_pass_calls)
    flax_model = FlaxDropTwice(hidden, second_drop=flax_second_drop, rngs=nnx.Rngs(0))
    with pytest.raises(CompareError) as err:
        check_mse(torch_model, flax_model, random_batches((8, 4)), steps=2)
    assert str(err.value).startswith(say) and "\n" not in str(err.value)


def test_a_flax_side_left_between_calls_at_a_step_is_one_line():
    """Each pass's count goes round to 0 where the Flax side calls the site as often as
    torch: a Flax pass that calls it once of torch's twice is found at the next step (where
    both calls have one shape, no mask of the wrong shape shows it)."""
    torch.manual_seed(0)
    torch_model = TorchDropTwice(hidden=6).double().train()
    flax_model = FlaxDropTwice(hidden=6, second_drop=False, rngs=nnx.Rngs(0))
    feed = dropout_feed.DropoutFeed(torch_model, flax_model, "masks", 0, np.float64)
    try:
        feed.begin(0)
        torch_model(torch.ones(3, 4, dtype=torch.float64))
        flax_model(jax.numpy.ones((3, 4)))
        with pytest.raises(CompareError, match=r"^drop: Flax drops there another number"):
            feed.begin(1)
        flax_model(jax.numpy.ones((3, 4)))
        feed.begin(1)  # back at 0: two passes of one call
    finally:
        feed.remove()


def test_keys_that_do_not_fit_name_the_layers_on_each_side():
    torch.manual_seed(0)

    class FlaxLinearForAttention(nnx.Module):
        def __init__(self, *, rngs):
            self.attn = nnx.Linear(8, 8, rngs=rngs)
            self.fc = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.fc(self.attn(x).mean(axis=1))

    with pytest.raises(CompareError) as err:
        check_mse(
            TorchAttentionOnly(),
            FlaxLinearForAttention(rngs=nnx.Rngs(0)),
            random_batches((4, 5, 8)),
        )
    message = str(err.value)
    assert "attn: torch MultiheadAttention, Flax Linear" in message and "\n" not in message


class TorchAttentionOnly(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.fc(self.attn(x, x, x)[0].mean(dim=1))


# --- schedulers: per epoch or per batch ---------------------------------------------------


def test_a_scheduler_stepped_per_batch_and_the_default_steps_that_move_a_schedule():
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(), FlaxMLP(rngs=nnx.Rngs(0))
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.2, total_steps=9)
    report = check_mse(
        torch_model,
        flax_model,
        random_batches((8, 4), count=3),
        optimizer,
        steps=9,
        scheduler=one_cycle,
        scheduler_interval="step",
    )
    assert report.passed, report
    assert report.optimizer.endswith("OneCycleLR stepped per step")
    # per epoch, a StepLR of step_size 3 first moves at epoch 3: the default runs 4 epochs
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(), FlaxMLP(rngs=nnx.Rngs(0))
    optimizer = torch.optim.Adam(torch_model.parameters(), lr=0.01)
    step_lr = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    batches = random_batches((8, 4), count=2)
    report = check_mse(torch_model, flax_model, batches, optimizer, scheduler=step_lr)
    assert report.passed and report.steps == 4 * len(batches), report
    assert optimizer.param_groups[0]["lr"] == 0.005  # it moved


def test_an_optimizer_hint_with_a_scheduler():
    """The witness replays the JAX updates at the scheduler's rates: an RMSprop whose eps sits
    inside the root is still named when a StepLR moves the rate."""
    torch.manual_seed(0)
    torch_model, flax_model = TorchMLP(), FlaxMLP(rngs=nnx.Rngs(0))
    optimizer = torch.optim.RMSprop(torch_model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    lr = optax.exponential_decay(np.float64(0.01), 2, np.float64(0.5), staircase=True)
    wrong = optax.rmsprop(lr, decay=0.99, eps=1e-8)  # eps inside the root: optax's default
    batches = [(x, 1e-3 * y) for x, y in random_batches((8, 4), count=2)]
    report = check_mse(
        torch_model, flax_model, batches, optimizer, optax_tx=wrong, scheduler=scheduler, steps=4
    )
    assert not report.passed
    assert "docs/PORTING.md#trap-eps-placement" in report.first_divergence["hint"]


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
    with pytest.raises(CompareError, match="dropout differs: torch drops at \\['drop'\\]"):
        check_mse(TorchMLP(dropout=0.2), FlaxMLP(rngs=nnx.Rngs(0)), random_batches((8, 4)))


# -- a BatchNorm's running mean, held at its layer's deviation -------------------------------


def test_a_running_mean_is_measured_against_its_layers_deviation():
    """After a normalisation and a convolution without bias, a BatchNorm's input averages to
    zero, so its running mean is rounding noise (1e-17 beside a deviation near 1): relative
    to its own size any two right sides differ by ~100 % (mobilenet_v2 failed `check` so at
    step 0, 1.02 against a bound of 0.68 from torch's own noise). It is held at the larger of
    its size and its layer's smallest sqrt(running_var + eps), the scale eval mode divides
    it by; a real error of 1e-6 of that deviation still diverges."""
    from compare.diff import rel_diff
    from compare.toolkit import engine

    torch_state = {"bn.running_mean": np.full(4, 1e-17), "bn.running_var": np.full(4, 0.81)}
    want = torch_state["bn.running_mean"]
    scale = engine.running_mean_scale("bn.running_mean", want, torch_state)
    assert scale == pytest.approx(np.sqrt(0.81 + 1e-5))
    assert engine.running_mean_scale("bn.weight", want, torch_state) is None
    noise, error = want * -1.0, want + 1e-6 * scale
    assert rel_diff(noise, want) == pytest.approx(2.0)  # its own size: 200 %
    assert rel_diff(noise, want, scale) < 1e-16
    # torch's own noise (the reference) 5 % of the mean's size by chance: at its own size the
    # right side's 200 % is past 10x that, at the deviation's it is nothing
    own = want * 0.95
    at_own_size = engine.Recorder(1e-9)
    assert at_own_size.compare(0, "buffer", "bn.running_mean", noise, want, own=own)
    recorder = engine.Recorder(1e-9)
    assert not recorder.compare(0, "buffer", "bn.running_mean", noise, want, scale=scale, own=own)
    assert recorder.compare(0, "buffer", "bn.running_mean", error, want, scale=scale, own=own)
    # a mean far from zero keeps its own size as the scale
    torch_state["bn.running_mean"] = np.full(4, 30.0)
    assert engine.running_mean_scale("bn.running_mean", np.full(4, 30.0), torch_state) == 30.0


def test_a_zero_mean_statistic_passes_check_and_a_wrong_momentum_still_fails(monkeypatch):
    from compare import translate

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(6),
        torch.nn.Conv2d(6, 6, 1, bias=False),  # input of zero mean per channel: so is this
        torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 5 * 5, 3),
    ).double()
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    report = translate(model, x).check(steps=3)
    assert report.passed and report.param_max_rel_diff <= 1e-12, str(report)
    assert report.bound["kind"] == "fixed"
    # the control: keeping half of the old statistics instead of torch's 0.9 still fails
    call = layers.BatchNorm.__call__

    def half_kept(self, x):
        self.momentum = 0.5
        return call(self, x)

    monkeypatch.setattr(layers.BatchNorm, "__call__", half_kept)
    assert not translate(model, x).check(steps=3).passed
