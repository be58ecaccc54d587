"""Fit y = w x^2 + b with ``jax.grad``: the JAX twin of the lesson's autograd chapter.

Lesson C (seeds/002, ch. 2.7 "使用Tensor及autograd"): squared error summed and halved, plain
gradient descent written out by hand (no optax). ``jax.grad`` differentiates a pure function
of the arrays ``w`` and ``b``, the way ``loss.backward()`` fills ``w.grad`` and ``b.grad``.
"""

import jax
import jax.numpy as jnp
from flax import nnx


class Quadratic(nnx.Module):
    """The lesson's tensors ``w`` (randn) and ``b`` (zeros), held by a Module for its state."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (1, 1)))
        self.b = nnx.Param(jnp.zeros((1, 1)))

    def __call__(self, x):
        return (x**2) @ self.w[...] + self.b[...]  # (batch, 1)


def new_model(hp, rngs):
    return Quadratic(rngs=rngs)


def new_optimizer(model, hp):
    # No optimizer object: the lesson steps the parameters by hand, so all it needs is lr.
    return hp.lr


def squared_error(w, b, x, y):
    y_pred = (x**2) @ w + b  # (batch, 1)
    return 0.5 * jnp.sum((y_pred - y) ** 2)


def loss_fn(model, x, y):
    return squared_error(model.w[...], model.b[...], x, y)


@nnx.jit
def train_step(model, lr, x, y):
    loss, (grad_w, grad_b) = jax.value_and_grad(squared_error, argnums=(0, 1))(
        model.w[...], model.b[...], x, y
    )
    model.w[...] = model.w[...] - lr * grad_w
    model.b[...] = model.b[...] - lr * grad_b
    return loss


@nnx.jit
def predict(model, x):
    return model(x)
