"""Logistic regression on the two-petal "flower" data (it cannot separate them).

Lesson B (Liao Xingyu, 深度学习入门之PyTorch, ch. 3: logistic regression to a two-layer net;
docs/LESSONS.md): ``w = randn(2, 1)``, ``b = 0``, ``logistic_regression(x) = x @ w + b``,
BCEWithLogitsLoss, SGD lr 0.1.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class LogisticRegression(nnx.Module):
    """The lesson's raw parameters ``w`` and ``b``, held by a Module so they have a state dict."""

    def __init__(self, n_feature=2, *, rngs: nnx.Rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (n_feature, 1)))
        self.b = nnx.Param(jnp.zeros((1,)))

    def __call__(self, x):
        # b is (1,) as in the lesson; JAX code here broadcasts ranks explicitly: b[None] is (1, 1).
        return x @ self.w[...] + self.b[None]  # (batch, 1) logits


def new_model(hp, rngs):
    return LogisticRegression(hp.n_feature, rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.sgd(hp.lr), wrt=nnx.Param)


def loss_fn(model, x, y):
    return optax.sigmoid_binary_cross_entropy(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    # sigmoid(logit) > 0.5 exactly when logit > 0
    return (model(x) > 0).astype(jnp.int32)  # (batch, 1)
