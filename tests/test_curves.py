"""Tier 4: independent runs, each side its own random init, reach the same place.

Slow tier (``pytest -m slow``): several seeds per side over the lesson's whole schedule.
"""

import numpy as np
import pytest
import torch
from flax import nnx

from compare import data, registry
from jaxnets import _train as jax_train

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
