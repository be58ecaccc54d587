"""Tier 4: independent runs, each side its own random init, reach the same place.

Slow tier (``pytest -m slow``): several seeds per side over the lesson's whole schedule.
"""

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from compare.tutorials import data, registry
from compare.tutorials.twins import evaluate_side, make_twins, schedule, train_jax, train_torch
from jaxnets import _train as jax_train

from helpers import torch_default_init

SEEDS = range(5)


def independent_final_losses(name):
    task = registry.TASKS[name]
    jax_module, torch_module = task.modules()
    arrays = data.load(name)
    finals = {"torch": [], "jax": []}
    for seed in SEEDS:
        order = data.batch_order(len(arrays["x"]), task.hp.batch_size, task.hp.num_epochs, seed)
        torch.manual_seed(seed)
        model = torch_module.new_model(task.hp)
        optimizer = torch_module.new_optimizer(model, task.hp)
        x, y = (
            torch.from_numpy(a.astype(np.float32) if a.dtype == np.float64 else a)
            for a in (arrays["x"], arrays["y"])
        )
        losses = [
            torch_module.train_step(model, optimizer, x[idx], y[idx])
            for epoch in order
            for idx in epoch
        ]
        finals["torch"].append(np.asarray(torch.stack(losses[-10:]).mean(0)))

        model = jax_module.new_model(task.hp, nnx.Rngs(seed))  # Flax's own init, not ported
        optimizer = jax_module.new_optimizer(model, task.hp)
        x, y = (
            a.astype(np.float32) if a.dtype == np.float64 else a for a in (arrays["x"], arrays["y"])
        )
        losses = np.concatenate(
            [
                np.asarray(
                    jax_train.train_epoch(jax_module.train_step, model, optimizer, x, y, epoch)
                )
                for epoch in order
            ]
        )
        finals["jax"].append(losses[-10:].mean(0))
    return {side: np.array(v) for side, v in finals.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["regression", "classification", "optimizers", "flower-net"])
def test_independent_inits_reach_the_same_loss(name):
    finals = independent_final_losses(name)
    mean = {side: v.mean(0) for side, v in finals.items()}
    spread = {side: v.std(0, ddof=1) / np.sqrt(len(SEEDS)) for side, v in finals.items()}
    band = 4 * np.sqrt(spread["torch"] ** 2 + spread["jax"] ** 2) + 0.1 * np.abs(mean["torch"])
    assert np.all(np.abs(mean["jax"] - mean["torch"]) <= band), (mean, spread)


# Tier 4 through the same machinery as a run (float32, each side's own loop), for the tasks
# with a held-out metric and the longer ones: task -> (epochs, seeds). Schedules are the
# lessons' where a seed costs seconds, shortened where it would cost minutes; the figures
# and the time each took are in docs/RESULTS.md (tier 4).
CURVES = {
    "housing-regularization": (200, 5),
    "optimizers-ch5": (12, 5),
    "init-and-activations": (20, 5),
    "mnist-mlp": (10, 5),
    "mnist-mlp-bn": (20, 5),
    "mnist-cnn": (5, 5),
    "mnist-resnet": (3, 5),
    "mnist-lstm": (1, 8),  # chaotic at the lesson's settings: more seeds, a wider spread
    "lstm-forecast": (10, 5),
    "vae": (10, 5),
}


# whose new_model draws the same schemes on both sides already (the chapter's nn.init)
OWN_INIT = {"init-and-activations"}


def independent_metrics(name, epochs, seeds, flax_default=False):
    """Per seed and side: the test accuracy (or test loss) after ``epochs``, or for tasks
    without a test split the mean loss of the last 10 steps; on the seed's batch order, each
    side drawing its own noise. torch starts from its own default init; JAX from an
    independent draw of the same distributions (``torch_default_init``: JAX's random
    numbers, not torch's), or with ``flax_default`` from Flax's own default init, a
    different distribution (lecun_normal kernels, zero biases).
    Returns ``{side: (seeds, k)}`` with one column per net (``task.loss_names``), and what
    was measured."""
    task = registry.TASKS[name]
    results = {"torch": [], "jax": []}
    measured = "final loss (mean of the last 10 steps)"
    for seed in range(seeds):
        twins = make_twins(task, dtype="float32", seed=seed)  # torch's init at this seed
        twins.jax_model = twins.jax_module.new_model(twins.hp, nnx.Rngs(seed))  # not ported
        if not (flax_default or name in OWN_INIT):
            torch_default_init(twins.jax_model, jax.random.key(seed))
        twins.jax_optimizer = twins.jax_module.new_optimizer(twins.jax_model, twins.hp)
        order = schedule(twins, epochs, seed=seed)
        for side, train in (("torch", train_torch), ("jax", train_jax)):
            losses = np.asarray(train(twins, order), np.float64)
            if "x_test" not in twins.arrays:
                value = losses[-10:].mean(axis=0)
            else:
                tested = evaluate_side(twins, side)
                measured = "test accuracy" if "accuracy" in tested else "test loss"
                value = tested.get("accuracy", tested["loss"])
                value = list(value.values()) if isinstance(value, dict) else value
            results[side].append(np.atleast_1d(value))
    return {side: np.array(v) for side, v in results.items()}, measured


def band(values, measured):
    """Four standard errors of the difference of the two means, plus a stated margin: half a
    point of accuracy, or 10 % of a loss."""
    mean = {side: v.mean(axis=0) for side, v in values.items()}
    spread = {side: v.std(axis=0, ddof=1) / np.sqrt(len(v)) for side, v in values.items()}
    margin = 0.005 if measured == "test accuracy" else 0.1 * np.abs(mean["torch"])
    return mean, 4 * np.sqrt(spread["torch"] ** 2 + spread["jax"] ** 2) + margin


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CURVES))
def test_independent_inits_reach_the_same_metric(name):
    values, measured = independent_metrics(name, *CURVES[name])
    mean, width = band(values, measured)
    print(f"\n{name}: {measured}, {CURVES[name][1]} seeds, {CURVES[name][0]} epochs")
    for side in ("torch", "jax"):
        per_seed = values[side].round(4).tolist()
        print(f"  {side:<5} mean {mean[side].round(4).tolist()} per seed {per_seed}")
    difference = np.abs(mean["jax"] - mean["torch"])
    print(f"  |difference| {difference.round(4).tolist()} band {width.round(4).tolist()}")
    assert np.all(np.abs(mean["jax"] - mean["torch"]) <= width), (mean, width)
