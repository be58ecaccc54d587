"""Lesson G's house prices: the shipped data, dropout masks fed in lockstep, the four variants,
and why the batch-norm variant's Linears carry no bias."""

import hashlib

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from compare import port
from compare.diff import tensor_rel_diff
from compare.tutorials import data, registry
from compare.tutorials.twins import draw, draw_noise, make_twins, schedule, train_jax, train_torch
from jaxnets import _train as jax_train
from jaxnets import housing_regularization as jax_housing
from jaxnets.layers import BatchNorm
from torchref import housing_regularization as torch_housing

TASK = registry.TASKS["housing-regularization"]


def test_shipped_house_prices_are_the_documented_file():
    digest = hashlib.md5(data.SHIPPED_HOUSING.read_bytes()).hexdigest()
    # compare/tutorials/datasets/housing/README.md
    assert digest == "d49847a34e8c003e84d33190ba040e2a"


def test_b_is_dropped_and_both_splits_are_standardised_with_the_training_statistics():
    raw = np.loadtxt(data.SHIPPED_HOUSING, delimiter=",")
    arrays = data.load("housing-regularization")
    assert arrays["x"].shape == (405, 12) and arrays["x_test"].shape == (101, 12)
    features = np.delete(raw[:, :13], 11, axis=1)  # B is column 11
    perm = np.random.default_rng(0).permutation(506)
    test, train = perm[:101], perm[101:]
    mean, std = features[train].mean(axis=0), features[train].std(axis=0)
    np.testing.assert_allclose(arrays["x"], (features[train] - mean) / std, rtol=1e-12)
    np.testing.assert_allclose(arrays["x_test"], (features[test] - mean) / std, rtol=1e-12)
    y_mean, y_std = raw[train, 13].mean(), raw[train, 13].std()
    np.testing.assert_allclose(arrays["y_test"][:, 0], (raw[test, 13] - y_mean) / y_std)
    # the test split is not standardised with its own (or all rows') statistics
    assert abs(arrays["x_test"].mean(axis=0)).max() > 0.05
    # no feature is B: B standardised would correlate perfectly with one of them
    b = raw[train, 11]
    correlations = [abs(np.corrcoef(b, column)[0, 1]) for column in arrays["x"].T]
    assert max(correlations) < 0.7
    in_k_dollars = data.housing(standardize_target=False)
    np.testing.assert_array_equal(in_k_dollars["y"][:, 0], raw[train, 13])


def test_masks_are_what_nn_dropout_and_nnx_dropout_multiply_by():
    p = TASK.hp.dropout
    masks = draw(TASK.noise[0], np.random.default_rng(0), 20_000, TASK.hp)  # (20000, 16)
    assert masks.shape == (20_000, TASK.hp.n_hidden_1)
    keep = 1 / (1 - p)
    assert set(np.unique(masks)) == {0.0, keep}
    assert abs(np.mean(masks == 0) - p) < 0.005  # dropped with probability p
    ones = np.ones((2000, 16))
    torch_dropout = torch.nn.Dropout(p).train()(torch.from_numpy(ones)).numpy()
    jax_dropout = np.asarray(nnx.Dropout(p, rngs=nnx.Rngs(0))(jnp.asarray(ones)))
    for drawn in (torch_dropout, jax_dropout):
        np.testing.assert_allclose(np.unique(drawn), [0.0, keep], rtol=1e-12)


def test_the_four_variants_start_from_the_same_weights():
    torch.manual_seed(0)
    nets = port.torch_state_dict(torch_housing.new_model(TASK.hp))
    jax_nets = port.nnx_to_torch(jax_housing.new_model(TASK.hp, nnx.Rngs(0)))
    for state in (nets, jax_nets):
        for name in ("L2", "dropout", "batchnorm"):
            for key in ("layer1.0.weight", "layer2.0.weight", "layer3.0.weight", "layer3.0.bias"):
                np.testing.assert_array_equal(state[f"{name}.{key}"], state[f"plain.{key}"])
        assert "batchnorm.layer1.0.bias" not in state  # BatchNorm makes it redundant
        np.testing.assert_array_equal(state["batchnorm.layer1.1.weight"], np.ones(16))
    assert set(nets) == set(jax_nets)


def test_lockstep_feeds_both_sides_the_masks_and_sees_other_masks():
    """The same numpy masks: all four variants agree; the JAX side's masks shifted by one
    sample (as likely a draw): the dropout variant, and only it, parts at once. Without
    masks a normal run's JAX steps draw their own from the model's key stream, inside the
    scan (two draws a step)."""
    twins = make_twins(TASK, dtype="float64")
    order = [schedule(twins, 1)[0][:3]]
    noise = draw_noise(twins, order)
    assert noise[0][0]["layer1"].shape == (27, 16) and noise[0][0]["layer2"].shape == (27, 32)
    want = train_torch(twins, order, noise=noise)
    other = [
        [{k: np.roll(v, 1, axis=0) for k, v in step.items()} for step in epoch] for epoch in noise
    ]
    got = train_jax(twins, order, noise=other)
    apart = np.abs(got / want - 1).max(axis=0)  # per variant
    assert apart[2] > 1e-3 and apart[[0, 1, 3]].max() < 1e-13

    fresh = make_twins(TASK, dtype="float64")
    assert np.abs(train_jax(fresh, order, noise=noise) / want - 1).max() < 1e-13
    stream = fresh.jax_model["dropout"].dropout.rngs
    before = int(stream.count.get_value())
    train_jax(fresh, order)
    assert int(stream.count.get_value()) == before + 2 * 3


class BiasBeforeNorm(torch.nn.Module):
    """One BatchNorm layer of the lesson's net, its Linear with a bias (as ch. 3's net has)."""

    def __init__(self):
        super().__init__()
        self.layer1 = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.BatchNorm1d(16))
        self.layer3 = torch.nn.Sequential(torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.layer3(torch.relu(self.layer1(x)))


class JaxBiasBeforeNorm(nnx.Module):
    def __init__(self, rngs):
        self.layer1 = nnx.Sequential(nnx.Linear(12, 16, rngs=rngs), BatchNorm(16, rngs=rngs))
        self.layer3 = nnx.Sequential(nnx.Linear(16, 1, rngs=rngs))

    def __call__(self, x):
        return self.layer3(nnx.relu(self.layer1(x)))


def test_a_bias_before_batchnorm_wanders_under_adam_on_rounding_noise():
    """BatchNorm subtracts the batch mean, so the gradient of a bias right before it is zero
    up to rounding (1e-17). Adam divides by sqrt(v) + eps: lr / eps = 1e6 turns that noise
    into steps of 1e-11, which the two frameworks' rounding takes in different directions.
    The losses agree to rounding and the bias walks apart, past the 1e-9 tolerance within
    200 steps: hence ``bias=False`` in the batchnorm variant (every other tensor agrees)."""
    arrays = data.load("housing-regularization")
    torch.manual_seed(0)
    torch_net = BiasBeforeNorm().double()
    jax_net = port.torch_to_nnx(port.torch_state_dict(torch_net), JaxBiasBeforeNorm(nnx.Rngs(0)))
    torch_opt = torch.optim.Adam(torch_net.parameters(), lr=0.01)
    jax_opt = nnx.Optimizer(jax_net, optax.adam(0.01), wrt=nnx.Param)

    def mse(net, x, y):
        return jnp.mean((net(x) - y) ** 2)

    def jax_step(net, opt, x, y):
        loss, grads = nnx.value_and_grad(mse)(net, x, y)
        opt.update(net, grads)
        return loss

    batches = [idx for epoch in data.batch_order(405, 32, 16) for idx in epoch[:12]]  # 192
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    torch_losses, bias_grads = [], []
    for idx in batches:
        loss = torch.nn.functional.mse_loss(torch_net(x[idx]), y[idx])
        torch_opt.zero_grad()
        loss.backward()
        bias_grads.append(np.abs(torch_net.layer1[0].bias.grad.numpy()).max())
        torch_opt.step()
        torch_losses.append(loss.item())
    jax_losses = jax_train.train_epoch(
        jax_step, jax_net, jax_opt, jnp.asarray(arrays["x"]), jnp.asarray(arrays["y"]), batches
    )
    assert max(bias_grads) < 1e-15  # zero, but for rounding
    assert np.abs(np.asarray(jax_losses) / np.array(torch_losses) - 1).max() < 1e-13
    mine, theirs = port.nnx_to_torch(jax_net), port.torch_state_dict(torch_net)
    assert tensor_rel_diff({"b": mine["layer1.0.bias"]}, {"b": theirs["layer1.0.bias"]}) > 1e-9
    others = [k for k in theirs if k not in ("layer1.0.bias", "layer1.1.running_mean")]
    assert tensor_rel_diff({k: mine[k] for k in others}, {k: theirs[k] for k in others}) < 1e-12


@pytest.mark.parametrize("name", ["housing-regularization"])
def test_the_housing_dataset_can_be_named_by_another_task(name):
    """``housing`` is a plain dataset of compare/tutorials/data.py: another task (data-parallel
    training) names it and gets the same arrays."""
    assert registry.TASKS[name].dataset == "housing"
    np.testing.assert_array_equal(data.DATASETS["housing"]()["x"], data.load(name)["x"])


@pytest.mark.parametrize(
    "value, message",
    [
        ("1.5", "housing-regularization: dropout probability has to be between 0 and 1"),
        ("1", "a dropout probability of 1.0 cannot be fed"),  # torch's all-zero dropout
    ],
)
def test_a_dropout_probability_that_cannot_be_used_gets_one_line(cli, value, message):
    code, out, err = cli("parity", "housing-regularization", "--set", f"dropout={value}")
    assert code == 2 and out == "" and err.startswith(f"error: {message}"), err
    assert len(err.strip().splitlines()) == 1
