"""Data and batch order come from compare/tutorials/data.py, identically for both frameworks."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compare.tutorials import data, registry


def test_lesson_a_dataloader_demo_gives_both_sides_the_same_batches():
    """x = linspace(1, 10, 10), y = linspace(10, 1, 10), batch 5, shuffled, 3 epochs."""
    arrays = data.DATASETS["ten-points"]()
    order = data.batch_order(len(arrays["x"]), batch_size=5, num_epochs=3, seed=1)
    torch_batches = []
    for epoch in order:
        # The lesson's DataLoader, with its shuffling replaced by compare's batch order.
        loader = DataLoader(
            TensorDataset(torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])),
            batch_sampler=[idx.tolist() for idx in epoch],
        )
        torch_batches += [(bx.numpy(), by.numpy()) for bx, by in loader]
    x, y = jnp.asarray(arrays["x"]), jnp.asarray(arrays["y"])
    jax_batches = [(np.asarray(x[idx]), np.asarray(y[idx])) for epoch in order for idx in epoch]

    assert len(torch_batches) == len(jax_batches) == 6  # 2 steps x 3 epochs
    for (tx, ty), (jx, jy) in zip(torch_batches, jax_batches, strict=True):
        np.testing.assert_array_equal(tx, jx)
        np.testing.assert_array_equal(ty, jy)
        np.testing.assert_array_equal(tx + ty, 11.0)  # pairs stay pairs
    for epoch in order:  # each epoch is a fresh permutation of all ten points
        assert sorted(np.concatenate(epoch).tolist()) == list(range(10))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(order, order[1:], strict=False))


def test_batch_order_is_seeded_and_keeps_a_short_last_batch():
    a = data.batch_order(1000, 32, num_epochs=2, seed=0)
    b = data.batch_order(1000, 32, num_epochs=2, seed=0)
    c = data.batch_order(1000, 32, num_epochs=2, seed=1)
    assert [len(idx) for idx in a[0]] == [32] * 31 + [8]  # what DataLoader(drop_last=False) does
    assert all(
        np.array_equal(i, j)
        for ea, eb in zip(a, b, strict=True)
        for i, j in zip(ea, eb, strict=True)
    )
    assert not np.array_equal(a[0][0], c[0][0])
    full = data.batch_order(7, None, num_epochs=3)
    assert len(full) == 3 and all(np.array_equal(e[0], np.arange(7)) for e in full)


def test_flower_data_is_the_lessons_own():
    np.random.seed(1)  # noqa: NPY002 (the lesson's generator, verbatim)
    m, n, d, a = 400, 200, 2, 4
    x = np.zeros((m, d))
    y = np.zeros((m, 1), dtype="uint8")
    for j in range(2):
        ix = range(n * j, n * (j + 1))
        t = np.linspace(j * 3.12, (j + 1) * 3.12, n) + np.random.rand(n) * 0.2  # noqa: NPY002
        r = a * np.sin(4 * t) + np.random.rand(n) * 0.2  # noqa: NPY002
        x[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    ours = data.load("flower-net")
    np.testing.assert_array_equal(ours["x"], x)
    np.testing.assert_array_equal(ours["y"], y)


@pytest.mark.parametrize("name", sorted(registry.TASKS))
def test_every_task_loads_numpy_arrays(name):
    arrays = data.load(name)
    assert {"x", "y"} <= set(arrays)
    # features float64, each side casts them once; the tagger's words are int64 indices
    expected = np.int64 if registry.TASKS[name].dataset == "tagged-sentences" else np.float64
    assert arrays["x"].dtype == expected and len(arrays["x"]) == len(arrays["y"])
    again = data.load(name)
    np.testing.assert_array_equal(arrays["y"], again["y"])  # seeded: the same every time


def test_autograd_fit_data_follows_lesson_c():
    arrays = data.load("autograd-fit")
    noise = arrays["y"] - 3 * arrays["x"] ** 2 - 2
    assert arrays["x"].shape == (100, 1) and 0 <= noise.min() and noise.max() < 0.2
