"""Parity tiers 1-3 for every task over its whole tutorial schedule, and the fast JAX loops."""

import dataclasses
import functools
import gzip
import json
import struct
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from compare import CompareError, port
from compare.tutorials import data, parity, registry
from compare.tutorials.twins import make_twins, schedule, train_jax
from jaxnets import _train as jax_train
from jaxnets import optimizers as jax_optimizers

TASKS = sorted(registry.TASKS)


# the two heaviest float64 lockstep runs (mnist-resnet: tiers 1-2 on 5,000 images and the
# 10,000 test predictions; dcgan: 50 steps of three nets): the default tier runs their first
# steps on a smaller MNIST (the first images of the shipped files, through --data-dir), the
# slow tier the whole schedule on the shipped set, as the float32 drift below does
LONG_FLOAT64 = {"mnist-resnet", "dcgan"}
FIRST_FLOAT64_STEPS = 12
SMALL_MNIST = {"train": 1024, "t10k": 1000}


def _idx_head(path, count):
    """The first ``count`` items of an IDX file: its header with the count rewritten."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = struct.unpack(f">{dims}I", raw[4 : 4 + 4 * dims])
    item = int(np.prod(shape[1:], dtype=np.int64))
    header = raw[:4] + struct.pack(f">{dims}I", count, *shape[1:])
    return header + raw[4 + 4 * dims : 4 + 4 * dims + count * item]


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-mnist")
    for split, count in SMALL_MNIST.items():
        shipped = "train5k" if split == "train" else split
        for kind, idx in (("images", "idx3"), ("labels", "idx1")):
            source = data.SHIPPED_MNIST / f"{shipped}-{kind}-{idx}-ubyte.gz"
            (folder / f"{split}-{kind}-{idx}-ubyte").write_bytes(_idx_head(source, count))
    return folder


@pytest.mark.parametrize(
    "name, steps",
    [(name, FIRST_FLOAT64_STEPS if name in LONG_FLOAT64 else None) for name in TASKS]
    + [pytest.param(name, None, marks=pytest.mark.slow) for name in sorted(LONG_FLOAT64)],
)
def test_float64_lockstep_over_the_parity_schedule(name, steps, request):
    data_dir = request.getfixturevalue("small_mnist") if steps is not None else None
    result = parity.lockstep(name, dtype="float64", steps=steps, data_dir=data_dir)
    task = registry.TASKS[name]
    epochs = task.parity_epochs or task.hp.num_epochs
    if steps is None:
        assert result["steps"] == sum(map(len, schedule(make_twins(task), epochs))) >= 50
    else:
        assert result["steps"] == steps
    if task.equivalences:  # the table of twins joins the verdict
        assert result["equivalences_passed"] and result["equivalences_max_rel_diff"] <= 1e-9
    bound = result["bound"]
    if task.sensitivity_factor is None:
        assert bound["kind"] == "fixed" and result["tolerance"] == 1e-9
    else:  # chaotic: factor x the trajectory's own sensitivity, measured in the same run
        assert bound["kind"] == "sensitivity" and bound["floor"] == 1e-9
        assert result["tolerance"] == max(1e-9, bound["factor"] * bound["self_divergence"])
        assert result["tolerance"] <= 1e-7  # far below any semantic difference (1e-4 and up)
    assert result["loss_max_rel_diff"] <= result["tolerance"]
    assert result["param_max_rel_diff"] <= result["tolerance"]
    assert result["forward_max_rel_diff"] <= 1e-9 and result["grad_max_rel_diff"] <= 1e-9
    assert result.get("test_predictions_differ", 0) == 0  # eval mode, image for image
    if task.noise:  # and says so
        assert "drawn once in numpy, fed to both sides" in result["noise"]
    assert result["passed"]


def parity_cli(*args):
    """``python -m compare parity ... --json`` in a fresh process: float32 exactly as a user
    runs it (this test process has x64 switched on for the float64 tier)."""
    done = subprocess.run(
        [sys.executable, "-m", "compare", "parity", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


# the MNIST nets, the GANs and the VAE: their float32 schedules take 20-45 s each (a fresh
# process per task), so the default tier drifts them over their first steps, the slow tier
# over the whole schedule
LONG_FLOAT32 = {"mnist-mlp", "mnist-mlp-bn", "mnist-cnn", "mnist-resnet", "mnist-lstm"}
LONG_FLOAT32 |= {"vae", "gan", "cgan", "dcgan"}
FIRST_STEPS = 20


# one task per kind of training loop in the default tier (a fresh process each, 10-20 s):
# full-batch, a dict of nets, convolutional, recurrent, a custom step, noise, two nets, fed
# dropout masks; every task's bound in the slow tier
FLOAT32_DEFAULT_TIER = {"regression", "optimizers", "mnist-cnn", "mnist-lstm", "rnn-sincos"}
FLOAT32_DEFAULT_TIER |= {"vae", "gan", "housing-regularization"}


@pytest.mark.parametrize(
    "name, steps",
    [
        pytest.param(
            name,
            FIRST_STEPS if name in LONG_FLOAT32 else None,
            marks=() if name in FLOAT32_DEFAULT_TIER else pytest.mark.slow,
        )
        for name in TASKS
    ]
    + [pytest.param(name, None, marks=pytest.mark.slow) for name in sorted(LONG_FLOAT32)],
)
def test_float32_drift_stays_within_the_measured_bound(name, steps):
    cut = () if steps is None else ("--steps", str(steps))
    result = parity_cli(name, "--dtype", "float32", *cut)
    bound = registry.TASKS[name].tolerance["float32"]
    assert result["passed"], result
    assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) <= bound
    assert result["forward_max_rel_diff"] <= 1e-5  # DESIGN tier 1 for float32


def test_lockstep_catches_a_wrong_port(monkeypatch):
    """RMSprop with optax's default eps placement: close, and still caught in float64."""

    def eps_inside_sqrt(nets, hp):
        transforms = {
            "SGD": optax.sgd(hp.lr),
            "Momentum": optax.sgd(hp.lr, momentum=hp.momentum),
            "RMSprop": optax.rmsprop(hp.lr, decay=hp.alpha, eps=1e-8),  # eps_in_sqrt=True
            "Adam": optax.adam(hp.lr, b1=hp.betas[0], b2=hp.betas[1]),
        }
        return nnx.Dict(
            {k: nnx.Optimizer(nets[k], tx, wrt=nnx.Param) for k, tx in transforms.items()}
        )

    monkeypatch.setattr(jax_optimizers, "new_optimizer", eps_inside_sqrt)
    result = parity.lockstep("optimizers", dtype="float64", steps=100)
    assert not result["passed"]
    assert result["loss_max_rel_diff"] > 1e-6


def test_a_chaotic_trajectorys_bound_still_catches_a_folded_lstm_bias(monkeypatch):
    """mnist-lstm's float64 bound grows with the trajectory's own sensitivity; a port whose
    LSTM trains one bias where torch trains two (Flax's folded b_ih + b_hh: the forward pass
    is exact, the bias moves half as far) must still fail it, by orders of magnitude."""
    from jaxnets import mnist_lstm as jax_mnist_lstm

    def folded_bias(model, hp):  # b_hh frozen: b_ih alone carries the sum, as one bias would
        b_hh = nnx.All(nnx.PathContains("dense_h"), nnx.PathContains("bias"))
        trained = nnx.All(nnx.Param, nnx.Not(b_hh))
        return nnx.Optimizer(model, optax.adam(hp.lr), wrt=trained)

    monkeypatch.setattr(jax_mnist_lstm, "new_optimizer", folded_bias)
    result = parity.lockstep("mnist-lstm", dtype="float64")
    assert result["bound"]["kind"] == "sensitivity"
    assert not result["passed"]
    assert result["param_max_rel_diff"] > 1e3 * result["tolerance"]


def test_self_divergence_stays_at_rounding_level_where_the_trajectory_is_not_chaotic():
    task = registry.TASKS["classification"]
    twins = make_twins(task, dtype="float64")
    order = schedule(twins, task.hp.num_epochs)
    from compare.tutorials.twins import train_torch

    losses = train_torch(twins, order)
    assert 0 < parity.self_divergence(twins, order, None, losses) < 1e-13


def test_steps_cuts_the_schedule():
    result = parity.lockstep("optimizers", dtype="float64", steps=40)  # 32 + 8 of epoch two
    assert result["steps"] == 40 and result["passed"]


def test_init_from_starts_both_sides_there(tmp_path):
    import torch

    task = registry.TASKS["classification"]
    torch.manual_seed(123)
    model = task.modules()[1].new_model(task.hp)
    torch.save(model.state_dict(), tmp_path / "net.pt")
    twins = make_twins(task, dtype="float64", init_from=tmp_path / "net.pt")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(twins.initial[key], value.double().numpy())
        np.testing.assert_array_equal(
            port.nnx_to_torch(twins.jax_model)[key], value.double().numpy()
        )


@pytest.mark.parametrize("name", TASKS)
def test_make_twins_starts_jax_from_torchs_initial_weights(name):
    task = registry.TASKS[name]
    twins = make_twins(task, dtype="float64", seed=7)
    torch.manual_seed(7)
    fresh = port.torch_state_dict(task.modules()[1].new_model(task.hp))
    jax_start = port.nnx_to_torch(twins.jax_model)
    for key, value in fresh.items():
        np.testing.assert_array_equal(jax_start[key], value.astype(jax_start[key].dtype))


# dcgan's and mnist-resnet's four float64 compilations take 40 s and 20 s: slow tier (mnist-cnn
# keeps a scanned convolutional net in the default tier)
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in LONG_FLOAT64 else name
        for name in TASKS
    ],
)
def test_fast_loops_equal_the_idiomatic_jit_step(name):
    """A whole-epoch lax.scan, a jitted pure step per batch, nnx.cached_partial and the
    tutorial's own @nnx.jit step: the same losses and parameters (float64)."""
    task = registry.TASKS[name]
    hp = dataclasses.replace(task.hp, num_epochs=min(task.hp.num_epochs, 3))
    runs = {}
    for how in ("scan", "steps", "cached", "nnx.jit"):
        twins = make_twins(task, dtype="float64", hp=hp)
        order = schedule(twins, hp.num_epochs)
        if hp.batch_size is not None:  # two epochs of three full batches and the short last one
            order = [epoch[:3] + epoch[-1:] for epoch in order[:2]]
        module, model, optimizer = twins.jax_module, twins.jax_model, twins.jax_optimizer
        x, y = twins.jax_arrays["x"], twins.jax_arrays["y"]
        if how in ("scan", "steps"):
            if hp.batch_size is None:
                losses = jax_train.train_full_batch(
                    module.train_step, model, optimizer, x, y, len(order)
                )
            else:
                losses = np.concatenate(
                    [
                        np.asarray(
                            jax_train.train_epoch(
                                module.train_step, model, optimizer, x, y, epoch, loop=how
                            )
                        )
                        for epoch in order
                    ]
                )
        else:
            step = (
                nnx.cached_partial(module.train_step, model, optimizer)
                if how == "cached"
                else functools.partial(module.train_step, model, optimizer)
            )
            losses = np.array(
                [np.asarray(step(x[idx], y[idx])) for epoch in order for idx in epoch]
            )
        runs[how] = (np.asarray(losses), port.nnx_to_torch(model))
    base_losses, base_params = runs["nnx.jit"]
    for how in ("scan", "steps", "cached"):
        np.testing.assert_allclose(runs[how][0], base_losses, rtol=1e-12, err_msg=how)
        for key, value in base_params.items():
            np.testing.assert_allclose(
                runs[how][1][key], value, rtol=1e-12, atol=1e-15, err_msg=how
            )


def test_scan_runs_a_short_last_batch_after_the_full_ones():
    task = registry.TASKS["regression"]
    jax_module = task.modules()[0]
    x = jnp.linspace(-1, 1, 10)[:, None]
    batches = [np.arange(6, 10), np.arange(0, 4), np.arange(4, 6)]
    losses = {}
    for how in ("scan", "one by one"):
        model = jax_module.new_model(task.hp, nnx.Rngs(0))
        optimizer = jax_module.new_optimizer(model, task.hp)
        if how == "scan":
            losses[how] = np.asarray(
                jax_train.train_epoch(
                    jax_module.train_step, model, optimizer, x, x**2, batches, loop="scan"
                )
            )
        else:
            losses[how] = np.array(
                [jax_module.train_step(model, optimizer, x[b], x[b] ** 2) for b in batches]
            )
    np.testing.assert_allclose(losses["scan"], losses["one by one"], rtol=1e-12)
    with pytest.raises(ValueError, match="only the last batch"):
        jax_train.train_epoch(
            jax_module.train_step, model, optimizer, x, x**2, batches[::-1], loop="scan"
        )


def test_a_non_finite_jax_loss_is_reported_with_its_step():
    task = registry.TASKS["regression"]
    twins = make_twins(task, hp=dataclasses.replace(task.hp, lr=1e6))
    with pytest.raises(CompareError, match="the jax loss became non-finite .* at step \\d+"):
        train_jax(twins, schedule(twins, 100))
