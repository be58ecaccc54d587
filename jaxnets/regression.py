"""Regression: fit y = x^2 + noise with a one-hidden-layer net.

Lesson A (Morvan Zhou, PyTorch-Tutorial 301_regression.py, "关系拟合 (回归)"; the quick build:
303_build_nn_quickly.py; docs/LESSONS.md).
"""

import jax.numpy as jnp
import optax
from flax import nnx


class Net(nnx.Module):
    def __init__(self, n_feature, n_hidden, n_output, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(n_feature, n_hidden, rngs=rngs)
        self.predict = nnx.Linear(n_hidden, n_output, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.hidden(x))  # (batch, n_hidden)
        return self.predict(x)  # (batch, n_output)


def quick_net(n_feature, n_hidden, n_output, *, rngs: nnx.Rngs):
    """The lesson's "quick build": the same function as ``Net``, keys ``0.*`` and ``2.*``."""
    return nnx.Sequential(
        nnx.Linear(n_feature, n_hidden, rngs=rngs),
        nnx.relu,
        nnx.Linear(n_hidden, n_output, rngs=rngs),
    )


def new_model(hp, rngs):
    return Net(hp.n_feature, hp.n_hidden, hp.n_output, rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.sgd(hp.lr), wrt=nnx.Param)


def loss_fn(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return model(x)
