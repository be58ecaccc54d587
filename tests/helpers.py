"""What several test files share: an optimizer's trajectory on a quadratic on each side,
torch's default initialisation drawn with JAX's random numbers, and a small MLP twin with the
``compare.check`` call the toolkit's tests make on it.

The quadratic: ``scale * (x A x / 2 + b x)`` in float64 from ``START``, ``STEPS`` steps; a
torch scheduler steps every ``STEPS_PER_EPOCH`` optimizer steps, as once per epoch. Gradients of
order 1 (``scale=1``) and of order 1e-4 (where eps placement shows).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from flax import nnx

from compare import check
from jaxnets.layers import LSTMCell, RNNCell

STEPS, STEPS_PER_EPOCH = 50, 5
A = np.diag([1.0, 3.0, 0.5, 2.0]) + 0.1  # a positive definite Hessian
B = np.array([0.5, -1.0, 2.0, 0.1])
START = np.array([1.0, -2.0, 0.5, 3.0])


def torch_trajectory(make_optimizer, make_scheduler=None, scale=1.0, steps_per_epoch=None):
    """The parameters after each step of ``make_optimizer([p])`` (and its scheduler, stepped
    every ``steps_per_epoch`` steps) on the quadratic."""
    steps_per_epoch = steps_per_epoch or STEPS_PER_EPOCH
    p = torch.tensor(START, requires_grad=True)
    a, b = torch.from_numpy(scale * A), torch.from_numpy(scale * B)
    opt = make_optimizer([p])
    scheduler = make_scheduler(opt) if make_scheduler else None
    trajectory = []
    for step in range(STEPS):
        opt.zero_grad()
        (0.5 * p @ a @ p + p @ b).backward()
        opt.step()
        if scheduler and (step + 1) % steps_per_epoch == 0:
            scheduler.step()  # torch's schedulers count epochs
        trajectory.append(p.detach().numpy().copy())
    return np.array(trajectory)


def optax_trajectory(tx, scale=1.0):
    """The parameters after each step of the optax transformation ``tx`` on the quadratic."""
    p = jnp.asarray(START)
    state = tx.init(p)
    trajectory = []
    for _ in range(STEPS):
        grad = scale * (jnp.asarray(A) @ p + jnp.asarray(B))  # A is symmetric
        updates, state = tx.update(grad, state, p)
        p = optax.apply_updates(p, updates)
        trajectory.append(np.asarray(p))
    return np.array(trajectory)


def rel_error(got, want):
    """max |got - want| / max |want| over a whole trajectory."""
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def torch_default_init(model, key):
    """Re-draw every Linear, Conv and recurrent cell of ``model`` from the distribution torch
    gives it by default, with JAX's random numbers: Linear and Conv weights and biases
    U(+-1/sqrt(fan_in)) (fan_in = in_features, or kH * kW * in_channels), an LSTM's or RNN's
    weights and biases U(+-1/sqrt(hidden_size)); BatchNorm and the rest stay as built. An
    independent start from torch's distributions, not torch's numbers (tier 4 of the
    curves). Returns ``model``."""

    def redraw(layer, bound, key):
        for name, sub in zip(("kernel", "bias"), jax.random.split(key), strict=True):
            param = getattr(layer, name, None)
            if param is not None:
                value = param.get_value()
                param.set_value(jax.random.uniform(sub, value.shape, value.dtype, -bound, bound))

    done = set()
    modules = list(nnx.iter_modules(model))
    keys = jax.random.split(key, len(modules))
    for (_, module), sub in zip(modules, keys, strict=True):
        if isinstance(module, LSTMCell | RNNCell):  # torch: 1/sqrt(hidden) for all of it
            denses = (module.dense_i, module.dense_h)
            for dense, dense_key in zip(denses, jax.random.split(sub), strict=True):
                redraw(dense, 1 / math.sqrt(module.hidden_features), dense_key)
                done.add(id(dense))
        elif isinstance(module, nnx.Linear | nnx.Conv) and id(module) not in done:
            fan_in = math.prod(module.kernel.get_value().shape[:-1])
            redraw(module, 1 / math.sqrt(fan_in), sub)
    return model


# --- a small twin for compare.check ------------------------------------------------------


def mse_torch(model, x, y):
    return F.mse_loss(model(x), y)


def mse_flax(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def random_batches(x_shape, y_shape=None, count=3, seed=0):
    """``count`` (x, y) pairs of standard normals: a batch list for ``compare.check``."""
    rng = np.random.default_rng(seed)
    y_shape = y_shape or (x_shape[0], 1)
    return [(rng.standard_normal(x_shape), rng.standard_normal(y_shape)) for _ in range(count)]


def check_mse(torch_model, flax_model, batches, optimizer=None, optax_tx=None, **options):
    """``compare.check`` with an MSE loss on both sides and, unless given, SGD(lr=0.1)."""
    optimizer = optimizer or torch.optim.SGD(torch_model.parameters(), lr=0.1)
    return check(
        torch_model,
        flax_model,
        batches=batches,
        torch_loss=mse_torch,
        flax_loss=mse_flax,
        torch_optimizer=optimizer,
        optax_tx=optax_tx,
        **options,
    )


class TorchMLP(torch.nn.Module):
    def __init__(self, norm=False, dropout=0.0):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.norm = torch.nn.LayerNorm(8) if norm else torch.nn.Identity()
        self.drop = torch.nn.Dropout(dropout) if dropout else torch.nn.Identity()
        self.fc2 = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.norm(self.fc1(x)))))


class FlaxMLP(nnx.Module):
    def __init__(self, norm_eps=None, dropout=0.0, *, rngs):
        self.fc1 = nnx.Linear(4, 8, rngs=rngs)
        self.norm = None if norm_eps is None else nnx.LayerNorm(8, epsilon=norm_eps, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.fc2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        x = self.fc1(x)
        if self.norm is not None:
            x = self.norm(x)
        x = nnx.relu(x)
        if self.drop is not None:
            x = self.drop(x)
        return self.fc2(x)
