"""The lockstep engine's two runs of a pair agree: ``compare.check`` on the two tutorial models
of every task gives parity's figures.

Parity's trajectory runs each side's fast loop (``twins.train_torch``: torch one step at a
time; ``twins.train_jax``: JAX one jitted scan per epoch) and its tiers 1-2 on the engine's
``probe``; check runs the same models one recorded step at a time (``engine.run_recorded``).
Over the first ``STEPS`` steps of the task's parity schedule (each mini-batch cut to its first
``ROWS`` rows, to keep float64 convolutions on a CPU short), from torch's seed-0 weights, with
parity's batches and noise:

- the torch losses are bit for bit parity's (the same torch computation: the tutorial's own
  step, or zero_grad / loss / backward / step on the tutorial's loss and optimizer);
- the JAX losses and final parameters agree with parity's to 1e-12 (a scan and single jitted
  steps round differently), so the loss and parameter figures agree to 1e-12;
- tiers 1-2 (``forward_rel_diff``, ``grad_rel_diff``) are parity's probe on the same first
  batch (check's runs jitted, parity's op by op: to 1e-13);
- check passes, with no first divergence.

How each task's training step reaches check: tasks with one loss and one optimizer go through
check's own step, their torch optimizer translated by ``compare.optim.to_optax`` (it equals
the tutorial's optax side, tests/test_to_optax.py); ``mnist-mlp-bn``'s lesson cuts the learning
rate by hand at epoch starts, which is ``StepLR(lr_every, lr_gamma)`` on ``SGD(lr *
lr_gamma)`` (check steps the scheduler per epoch). Tasks whose step is not "one loss, one
optimizer" hand check their tutorial's own steps (``torch_step`` / ``flax_step``):
``optimizers`` (four nets, four optimizers), ``autograd-fit`` (a hand-written update),
``rnn-sincos`` (a hidden state carried across steps) and the GANs (alternating D and G steps,
two optimizers, noise).
"""

import numpy as np
import pytest
import torch
from flax import nnx

from compare import check, port
from compare.diff import max_rel_diff, tensor_rel_diff
from compare.toolkit import engine
from compare.tutorials import data, registry
from compare.tutorials.twins import (
    draw_noise,
    make_twins,
    schedule,
    train_jax,
    train_torch,
    tutorial_pair,
)

STEPS = 3
ROWS = 8  # each mini-batch cut to its first rows: float64 convolutions are slow on a CPU
CUSTOM_STEPS = {"optimizers", "autograd-fit", "rnn-sincos", "gan", "cgan", "dcgan"}


def parity_run(name):
    """Parity's trajectory: the twins, the first STEPS steps, their noise, both sides' losses."""
    task = registry.TASKS[name]
    tw = make_twins(task, dtype="float64", seed=0)
    order = data.first_steps(schedule(tw, tw.hp.num_epochs, seed=0), STEPS)
    if tw.hp.batch_size is not None:
        order = [[idx[:ROWS] for idx in epoch] for epoch in order]
    noise = draw_noise(tw, order, seed=0)
    batches = []
    for e, epoch in enumerate(order):
        for s, idx in enumerate(epoch):
            x = tw.arrays["x"] if tw.hp.batch_size is None else tw.arrays["x"][idx]
            y = tw.arrays["y"] if tw.hp.batch_size is None else tw.arrays["y"][idx]
            batches.append((x, y) if noise is None else (x, y, noise[e][s]))
    pair = tutorial_pair(tw)
    probe = engine.probe(pair, *pair.feed(*batches[0]))
    torch_losses = train_torch(tw, order, noise=noise)
    jax_losses = train_jax(tw, order, noise=noise)
    return tw, batches, probe, torch_losses, jax_losses


def check_run(tw, batches):
    task, hp = tw.task, tw.hp
    jax_module, torch_module = task.modules()
    torch.manual_seed(0)
    torch_model = torch_module.new_model(hp)
    flax_model = jax_module.new_model(hp, nnx.Rngs(0))
    common = dict(
        batches=batches,
        torch_loss=torch_module.loss_fn,
        flax_loss=jax_module.loss_fn,
        steps=STEPS,
    )
    if task.name in CUSTOM_STEPS:
        report = check(
            torch_model,
            flax_model,
            torch_optimizer=torch_module.new_optimizer(torch_model, hp),
            optax_tx=lambda model: jax_module.new_optimizer(model, hp),
            torch_step=torch_module.train_step,
            flax_step=jax_module.train_step,
            **common,
        )
    elif task.name == "mnist-mlp-bn":
        optimizer = torch.optim.SGD(
            torch_model.parameters(), lr=hp.lr * hp.lr_gamma, momentum=hp.momentum
        )
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, hp.lr_every, hp.lr_gamma)
        report = check(
            torch_model, flax_model, torch_optimizer=optimizer, scheduler=scheduler, **common
        )
    else:
        optimizer = torch_module.new_optimizer(torch_model, hp)
        report = check(torch_model, flax_model, torch_optimizer=optimizer, **common)
    return report, torch_model, flax_model


# The default tier runs one task of each route (check's own step with to_optax; the
# tutorial's steps, four optimizers; the tutorial's steps, a carried state); all eighteen run
# under the slow marker (their float64 convolutions and GAN compilations take minutes on a CPU).
DEFAULT_TIER = {"regression", "optimizers", "rnn-sincos"}


@pytest.mark.parametrize(
    "name",
    [
        name if name in DEFAULT_TIER else pytest.param(name, marks=pytest.mark.slow)
        for name in sorted(registry.TASKS)
    ],
)
def test_check_on_the_tutorial_models_gives_paritys_figures(name):
    tw, batches, (forward, grads), torch_losses, jax_losses = parity_run(name)
    parity_params = tensor_rel_diff(
        port.nnx_to_torch(tw.jax_model), port.torch_state_dict(tw.torch_model)
    )
    report, torch_model, flax_model = check_run(tw, batches)
    result = report.to_json()
    assert result["passed"] and result["first_divergence"] is None, result
    assert result["steps"] == len(torch_losses) == STEPS
    np.testing.assert_array_equal(report.torch_losses, torch_losses)
    np.testing.assert_allclose(report.jax_losses, jax_losses, rtol=1e-12)
    # check's probe is jitted, parity's runs op by op: the same figure, to rounding
    assert abs(result["forward_rel_diff"] - forward) <= 1e-13
    assert abs(result["grad_rel_diff"] - grads) <= 1e-13
    loss_figure = max_rel_diff(jax_losses, torch_losses)
    assert abs(result["loss_max_rel_diff"] - loss_figure) <= 1e-12
    assert abs(result["param_max_rel_diff"] - parity_params) <= 1e-12
    assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) <= 1e-9
    final = port.torch_state_dict(torch_model)
    for key, value in port.torch_state_dict(tw.torch_model).items():
        np.testing.assert_array_equal(final[key], value)
    final = port.nnx_to_torch(flax_model)
    for key, value in port.nnx_to_torch(tw.jax_model).items():
        np.testing.assert_allclose(final[key], value, rtol=1e-12, atol=1e-15)
