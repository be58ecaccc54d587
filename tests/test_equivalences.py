"""Lesson G's table of equivalences: torch's initialisers, activations and losses next to their
JAX twins, and the plausible JAX spellings that are not twins, each caught."""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import optax
import pytest
import torch

from compare.tutorials import equivalences, registry
from jaxnets import init_and_activations as jax_side
from torchref import init_and_activations as torch_side

from helpers import torch_default_init

TASK = registry.TASKS["init-and-activations"]


@pytest.fixture(scope="module")
def table():
    return equivalences.table(jax_side, torch_side)


def test_every_torch_function_has_its_twin_and_every_row_passes(table):
    assert set(jax_side.INITIALIZERS) == set(torch_side.INITIALIZERS) == set(equivalences.SCHEMES)
    assert set(jax_side.ACTIVATIONS) == set(torch_side.ACTIVATIONS)
    assert set(jax_side.LOSSES) == set(torch_side.LOSSES)
    kinds = [row["kind"] for row in table["rows"]]
    assert kinds.count("activation") == 5 and kinds.count("loss") == 12
    assert kinds.count("init") == 2 * 7 + 4  # each scheme on a Linear and a Conv2d; defaults
    failed = [row["name"] for row in table["rows"] if not row["passed"]]
    assert table["passed"] and not failed, failed
    assert table["max_rel_diff"] < 1e-14  # values and derivatives: rounding only


def test_torchs_default_linear_init_is_kaiming_uniform_with_a_sqrt_5():
    """What the table's default rows stand on: nn.Linear draws its weight with exactly
    kaiming_uniform_(a=sqrt(5)), U(+-1/sqrt(fan_in)), bit for bit."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 512)
    torch.manual_seed(0)
    weight = torch.nn.init.kaiming_uniform_(torch.empty(512, 256), a=math.sqrt(5))
    assert torch.equal(layer.weight.detach(), weight)
    assert layer.weight.abs().max() <= 1 / 16 and layer.bias.abs().max() <= 1 / 16


def init_row(torch_init, jax_init, distribution, gain, mode):
    """One initialiser compared as the table compares it, on the Linear shape."""
    fan = dict(zip(("fan_in", "fan_out"), equivalences.fans(equivalences.LINEAR), strict=True))
    fan["fan_avg"] = (fan["fan_in"] + fan["fan_out"]) / 2
    torch.manual_seed(1)
    torch_sample = torch_init(torch.empty(equivalences.LINEAR, dtype=torch.float64)).numpy()
    jax_sample = jax_init(jax.random.key(1), equivalences.LINEAR[::-1], jnp.float32)
    std, bound = equivalences.expected(distribution, gain, fan[mode])
    return equivalences.compare_draws("", "", torch_sample, jax_sample, distribution, std, bound)


# torch's untruncated normals and Flax's named normals, truncated at two standard deviations
# and rescaled to the same variance: the standard deviation alone cannot tell them apart
TRUNCATED = {
    "he_normal": (
        lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu"),
        jax.nn.initializers.he_normal(),
        jax_side.kaiming_normal(nonlinearity="relu"),
        math.sqrt(2.0),
        "fan_in",
    ),
    "glorot_normal": (
        torch.nn.init.xavier_normal_,
        jax.nn.initializers.glorot_normal(),
        jax_side.xavier_normal(),
        1.0,
        "fan_avg",
    ),
    "lecun_normal": (
        lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="linear"),
        jax.nn.initializers.lecun_normal(),
        jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
        1.0,
        "fan_in",
    ),
}


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_flax_named_normals_are_truncated_and_fail_the_distribution_test(name):
    torch_init, truncated, twin, gain, mode = TRUNCATED[name]
    good = init_row(torch_init, twin, "normal", gain, mode)
    bad = init_row(torch_init, truncated, "normal", gain, mode)
    assert good["passed"] and not bad["passed"]
    assert abs(bad["std"]["jax"] / bad["expected_std"] - 1) < 0.01  # the right variance...
    assert bad["ks_pvalue"]["jax"] < 1e-6 and bad["ks_pvalue"]["torch_vs_jax"] < 1e-6  # ...shape
    assert bad["max_abs"]["jax"] < 2.3 * bad["expected_std"]  # no tails past ~2.3 std


@pytest.mark.parametrize(
    "wrong, why",
    [
        (jax_side.kaiming_uniform(nonlinearity="relu", mode="fan_out"), "fan_out for fan_in"),
        (jax.nn.initializers.glorot_uniform(), "xavier's gain instead of kaiming's"),
        (jax.nn.initializers.uniform(math.sqrt(6 / 256)), "U[0, s) is not U(-s, s)"),
    ],
)
def test_a_wrong_scale_fan_or_range_fails_the_initializer_row(wrong, why):
    torch_init = torch_side.INITIALIZERS["kaiming_uniform_(w, nonlinearity='relu')"]
    scheme = equivalences.SCHEMES["kaiming_uniform_(w, nonlinearity='relu')"]
    assert init_row(
        torch_init, jax_side.INITIALIZERS["kaiming_uniform_(w, nonlinearity='relu')"], *scheme
    )["passed"]
    assert not init_row(torch_init, wrong, *scheme)["passed"], why


def one_row(kind, name, jax_fn):
    """The table's row for one function, with ``jax_fn`` as the JAX twin."""
    part = {"activation": "ACTIVATIONS", "loss": "LOSSES"}[kind]
    torch_module = SimpleNamespace(**{part: {name: getattr(torch_side, part)[name]}})
    jax_module = SimpleNamespace(**{part: {name: jax_fn}})
    with jax.enable_x64(True):
        if kind == "activation":
            return equivalences.activation_rows(jax_module, torch_module, {})[0]
        return equivalences.loss_rows(jax_module, torch_module)[0]


def test_jax_leaky_relu_has_another_derivative_at_zero():
    """jax.nn.leaky_relu tests x >= 0: its derivative at 0 is 1, torch's is the slope."""
    row = one_row("activation", "leaky_relu", jax.nn.leaky_relu)
    assert row["value_max_rel_diff"] == 0.0 and row["grad_max_rel_diff"] > 0.1
    assert one_row("activation", "leaky_relu", jax_side.leaky_relu)["passed"]


def weighted_mean_over_n(logits, labels, targets, weight):
    keep = labels != -100
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(keep, labels, 0))
    return (losses * weight[jnp.where(keep, labels, 0)] * keep).sum() / keep.sum()


def smoothing_then_label_weight(logits, labels, targets, weight):
    keep = labels != -100
    safe = jnp.where(keep, labels, 0)
    smoothed = optax.smooth_labels(jax.nn.one_hot(safe, logits.shape[-1]), 0.1)
    losses = optax.softmax_cross_entropy(logits, smoothed) * weight[safe] * keep
    return losses.sum() / (weight[safe] * keep).sum()


def no_ignore_index(logits, labels, targets, weight):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.mark.parametrize(
    "name, wrong",
    [
        ("CrossEntropyLoss(weight=w)", weighted_mean_over_n),  # torch divides by sum of w[y]
        ("CrossEntropyLoss(weight=w, label_smoothing=0.1)", smoothing_then_label_weight),
        ("CrossEntropyLoss()", no_ignore_index),  # torch skips -100 even when not asked
    ],
)
def test_plausible_cross_entropy_ports_are_caught(name, wrong):
    assert one_row("loss", name, jax_side.LOSSES[name])["passed"]
    row = one_row("loss", name, wrong)
    assert not row["passed"] and max(row["value_max_rel_diff"], row["grad_max_rel_diff"]) > 1e-3


def test_torch_default_init_draws_torchs_distributions_with_jax_numbers():
    """Tier 4's independent JAX start: every Linear, Conv and LSTM of a Flax model re-drawn
    from torch's default distributions (not torch's numbers): the same bounds and shape."""
    from flax import nnx

    layer = torch_default_init(nnx.Linear(256, 512, rngs=nnx.Rngs(0)), jax.random.key(3))
    torch.manual_seed(3)
    reference = torch.nn.Linear(256, 512)
    for name, param in (("weight", "kernel"), ("bias", "bias")):
        row = equivalences.compare_draws(
            name,
            "Linear",
            getattr(reference, name).detach().numpy(),
            getattr(layer, param).get_value(),
            "uniform",
            1 / 16 / math.sqrt(3),
            1 / 16,
        )
        assert row["passed"], row
    task = registry.TASKS["mnist-lstm"]
    lstm = task.modules()[0].new_model(task.hp, nnx.Rngs(0))
    before = lstm.out.kernel.get_value().copy()
    torch_default_init(lstm, jax.random.key(0))
    kernel = lstm.rnn.cell.dense_h.kernel.get_value()
    assert abs(kernel).max() <= 1 / 8 and abs(kernel.std() * math.sqrt(3) * 8 - 1) < 0.05
    assert (
        abs(lstm.out.kernel.get_value()).max() <= 1 / 8
        and (before != lstm.out.kernel.get_value()).all()
    )
