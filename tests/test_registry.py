"""Every task exists twice, with the same names on both sides; what a lesson adds is declared in
its registry entry (the import rules: tests/test_layout.py)."""

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from compare.tutorials import registry

ROOT = Path(__file__).resolve().parents[1]
TASKS = sorted(registry.TASKS)
CONTRACT = ("new_model", "new_optimizer", "loss_fn", "train_step", "predict")


def test_six_foundation_tasks_are_registered():
    expected = {
        "regression",
        "classification",
        "optimizers",
        "flower-logistic",
        "flower-net",
        "autograd-fit",
    }
    assert expected <= set(registry.TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_task_has_both_sides_with_the_same_names(name):
    task = registry.TASKS[name]
    jax_module, torch_module = task.modules()
    for fn in CONTRACT:
        assert callable(getattr(jax_module, fn)), f"jaxnets.{task.module}.{fn}"
        assert callable(getattr(torch_module, fn)), f"torchref.{task.module}.{fn}"
    jax_classes = {
        n
        for n, v in vars(jax_module).items()
        if inspect.isclass(v) and v.__module__ == jax_module.__name__
    }
    torch_classes = {
        n
        for n, v in vars(torch_module).items()
        if inspect.isclass(v) and v.__module__ == torch_module.__name__
    }
    assert jax_classes == torch_classes
    assert jax_module.__doc__.splitlines()[0] and torch_module.__doc__.splitlines()[0]


@pytest.mark.parametrize("name", TASKS)
def test_hyperparameters_are_frozen_and_shared(name):
    hp = registry.TASKS[name].hp
    assert dataclasses.is_dataclass(hp)
    field = dataclasses.fields(hp)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(hp, field, 0)
    assert hp.num_epochs >= 1 and hp.lr > 0


@pytest.mark.parametrize("name", TASKS)
def test_parameter_counts_and_shapes_agree(name):
    task = registry.TASKS[name]
    jax_module, torch_module = task.modules()
    torch_model = torch_module.new_model(task.hp)
    jax_model = jax_module.new_model(task.hp, nnx.Rngs(0))
    torch_count = sum(p.numel() for p in torch_model.parameters())
    jax_count = sum(
        np.size(v.get_value()) for _, v in nnx.to_flat_state(nnx.state(jax_model, nnx.Param))
    )
    assert torch_count == jax_count > 0


def test_unknown_task_names_the_known_ones():
    from compare import CompareError

    with pytest.raises(CompareError, match="known tasks: regression"):
        registry.get("regresion")


@pytest.mark.parametrize("name", TASKS)
def test_what_a_lesson_adds_is_declared_in_its_entry(name):
    """run and parity read these fields, never a task's name: a lesson whose files carry a
    table of equivalences, or that has a numpy version by hand, must say so."""
    task = registry.TASKS[name]
    jax_module, torch_module = task.modules()
    tables = ("INITIALIZERS", "ACTIVATIONS", "LOSSES")
    has_tables = any(hasattr(jax_module, t) and hasattr(torch_module, t) for t in tables)
    assert task.equivalences == has_tables
    has_by_hand = (ROOT / "byhand" / f"{task.module}.py").exists()
    assert task.by_hand == has_by_hand
    if task.by_hand:
        assert callable(task.by_hand_module().numpy_by_hand)
    assert task.tags == (task.dataset == "tagged-sentences")
    if task.picture == "reconstructions":  # drawn from each side's reconstruct(model, x, eps)
        assert callable(jax_module.reconstruct) and callable(torch_module.reconstruct)
