"""Every dataset and every batch order, in numpy, seeded: both frameworks see the same arrays.

``load(task)`` gives a task's data as a dict of numpy arrays (``x``, ``y``; ``x_test``,
``y_test`` where there is a test split). Features are float64 here; each side casts them once
to the dtype it trains in. Class labels are int64.
"""

import numpy as np

from compare import registry


def parabola(seed=0):
    """Lesson A regression: x = linspace(-1, 1, 100), y = x^2 + 0.2 * U[0, 1)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, 100)[:, None]  # (100, 1)
    return {"x": x, "y": x**2 + 0.2 * rng.random(x.shape)}


def two_clouds(seed=0):
    """Lesson A classification: N((2, 2), 1) labelled 0 and N((-2, -2), 1) labelled 1."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(2.0, 1.0, size=(100, 2))
    x1 = rng.normal(-2.0, 1.0, size=(100, 2))
    y = np.concatenate([np.zeros(100), np.ones(100)]).astype(np.int64)
    return {"x": np.concatenate([x0, x1]), "y": y}  # (200, 2), (200,)


def noisy_parabola(seed=0):
    """Lesson A optimizers: x = linspace(-1, 1, 1000), y = x^2 + 0.1 * N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, 1000)[:, None]  # (1000, 1)
    return {"x": x, "y": x**2 + 0.1 * rng.standard_normal(x.shape)}


def flower(seed=1):
    """Lesson B's two petals, drawn exactly as the lesson does (legacy ``np.random.seed(1)``)."""
    rng = np.random.RandomState(seed)
    m, n_per_class, a = 400, 200, 4
    x = np.zeros((m, 2))
    y = np.zeros((m, 1))
    for j in range(2):
        ix = range(n_per_class * j, n_per_class * (j + 1))
        t = np.linspace(j * 3.12, (j + 1) * 3.12, n_per_class) + rng.rand(n_per_class) * 0.2
        r = a * np.sin(4 * t) + rng.rand(n_per_class) * 0.2
        x[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return {"x": x, "y": y}  # (400, 2), (400, 1) float labels for BCEWithLogits


def quadratic(seed=100):
    """Lesson C: x = linspace(-1, 1, 100), y = 3 x^2 + 2 + 0.2 * U[0, 1) (seed 100, as there)."""
    rng = np.random.RandomState(seed)
    x = np.linspace(-1, 1, 100).reshape(100, 1)
    return {"x": x, "y": 3 * x**2 + 2 + 0.2 * rng.rand(100, 1)}


def ten_points(seed=0):
    """Lesson A's DataLoader demo: x = linspace(1, 10, 10), y = linspace(10, 1, 10)."""
    return {"x": np.linspace(1, 10, 10), "y": np.linspace(10, 1, 10)}


DATASETS = {
    "parabola": parabola,
    "two-clouds": two_clouds,
    "noisy-parabola": noisy_parabola,
    "flower": flower,
    "quadratic": quadratic,
    "ten-points": ten_points,
}


def load(task, seed=None):
    """The data ``task`` trains on; ``seed=None`` takes the dataset's default (the lesson's)."""
    make = DATASETS[registry.get(task).dataset]
    return make() if seed is None else make(seed)


def batch_order(n, batch_size, num_epochs, seed=0, shuffle=True):
    """Index arrays for every batch: ``order[epoch][step]``.

    What ``DataLoader(dataset, batch_size, shuffle)`` yields, reshuffled every epoch, the last
    batch shorter when ``batch_size`` does not divide ``n``. ``batch_size=None`` is full batch
    (one batch of every sample, in order). One seeded generator for the whole run, so the
    order depends on nothing but ``seed``.
    """
    if batch_size is None:
        return [[np.arange(n)] for _ in range(num_epochs)]
    rng = np.random.default_rng(seed)
    order = []
    for _ in range(num_epochs):
        perm = rng.permutation(n) if shuffle else np.arange(n)
        order.append([perm[i : i + batch_size] for i in range(0, n, batch_size)])
    return order
