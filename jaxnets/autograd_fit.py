"""Fit y = w x^2 + b with jax.grad: the JAX twin of the lesson's autograd chapter.

Lesson C (Wu Maogui, Python深度学习, ch. 2.6 "使用Numpy实现机器学习" and 2.7 "使用Tensor及autograd";
docs/LESSONS.md): squared error summed and halved, plain gradient descent written out by hand (no
optax). Where torch's ``loss.backward()`` fills ``w.grad`` and ``b.grad``, ``jax.grad``
differentiates a pure function of the parameter arrays. The lesson's numpy version (ch. 2.6,
gradients derived on paper) is the third implementation: ``byhand/autograd_fit.py``.
"""

import jax
import jax.numpy as jnp
from flax import nnx


class Quadratic(nnx.Module):
    """The lesson's tensors ``w`` (randn) and ``b`` (zeros), held by a Module for its state dict."""

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


def loss_fn(model, x, y):
    return 0.5 * jnp.sum((model(x) - y) ** 2)


@nnx.jit
def train_step(model, lr, x, y):
    graphdef, params = nnx.split(model)

    def loss_of(params):  # a pure function of the arrays w and b: what jax.grad differentiates
        return loss_fn(nnx.merge(graphdef, params), x, y)

    loss, grads = jax.value_and_grad(loss_of)(params)
    nnx.update(model, jax.tree.map(lambda param, grad: param - lr * grad, params, grads))
    return loss


@nnx.jit
def predict(model, x):
    return model(x)
