"""The lesson's multi-GPU example: ``Net1`` on the house prices, each batch split over devices.

Lesson G (Wu Maogui, Python深度学习, ch. 5.7.2; docs/LESSONS.md): ``Net1`` with ``layer1``
Linear(12, 16), ``layer2`` Linear(16, 32), ``layer3`` Linear(32, 1), each in a ``Sequential``, ReLU
after the first two (12 inputs: the B column is dropped); batch 128, shuffled. The lesson wraps it
in ``nn.DataParallel`` on two GPUs; in JAX nothing in the model changes: the batch is sharded
over a ``Mesh`` of devices and XLA splits this same jitted step (the mean over the batch
becomes an all-reduce, ``compare/parallel/``). Adam lr 0.01 and MSE, as
``housing_regularization`` (the lesson's own code is lost).
"""

import jax.numpy as jnp
import optax
from flax import nnx


class Net1(nnx.Module):
    def __init__(self, in_dim, n_hidden_1, n_hidden_2, out_dim, *, rngs):
        self.layer1 = nnx.Sequential(nnx.Linear(in_dim, n_hidden_1, rngs=rngs))
        self.layer2 = nnx.Sequential(nnx.Linear(n_hidden_1, n_hidden_2, rngs=rngs))
        self.layer3 = nnx.Sequential(nnx.Linear(n_hidden_2, out_dim, rngs=rngs))

    def __call__(self, x):
        x = nnx.relu(self.layer1(x))  # (batch, n_hidden_1); sharded: each device its rows
        x = nnx.relu(self.layer2(x))  # (batch, n_hidden_2)
        return self.layer3(x)  # (batch, out_dim)


def new_model(hp, rngs):
    return Net1(hp.in_dim, hp.n_hidden_1, hp.n_hidden_2, hp.out_dim, rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.adam(hp.lr), wrt=nnx.Param)


def loss_fn(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return model(x)  # (batch, 1)
