"""MNIST with a three-layer net and batch normalisation, learning rate cut every 5 epochs.

Lesson D (Wu Maogui, Python深度学习, ch. 3.2 and 3.7; docs/LESSONS.md): ``Net(784, 300, 100, 10)``,
``layer1`` and ``layer2`` Sequential(Linear, BatchNorm1d), ``layer3`` Sequential(Linear), ReLU after
the first two; SGD lr 0.01 momentum 0.5, batch 64, 20 epochs, ``Normalize([0.5], [0.5])``. The
lesson cuts the learning rate by 10 at the start of epochs 0, 5, 10, 15; optax says the same as a
schedule counted in steps.
"""

import numpy as np
import optax
from flax import nnx

from jaxnets.layers import BatchNorm


class Net(nnx.Module):
    def __init__(self, in_dim, n_hidden_1, n_hidden_2, out_dim, *, rngs: nnx.Rngs):
        self.layer1 = nnx.Sequential(
            nnx.Linear(in_dim, n_hidden_1, rngs=rngs), BatchNorm(n_hidden_1, rngs=rngs)
        )
        self.layer2 = nnx.Sequential(
            nnx.Linear(n_hidden_1, n_hidden_2, rngs=rngs), BatchNorm(n_hidden_2, rngs=rngs)
        )
        self.layer3 = nnx.Sequential(nnx.Linear(n_hidden_2, out_dim, rngs=rngs))

    def __call__(self, x):
        x = nnx.relu(self.layer1(x))  # (batch, n_hidden_1)
        x = nnx.relu(self.layer2(x))  # (batch, n_hidden_2)
        return self.layer3(x)  # (batch, out_dim) logits


def new_model(hp, rngs):
    return Net(hp.in_dim, hp.n_hidden_1, hp.n_hidden_2, hp.out_dim, rngs=rngs)


def lr_schedule(hp):
    # Epoch e trains at lr * gamma ** (e // lr_every + 1). float64 numbers: optax counts steps
    # in int32, and with Python floats it would evaluate the schedule in float32.
    return optax.exponential_decay(
        np.float64(hp.lr * hp.lr_gamma),
        transition_steps=hp.lr_every * hp.steps_per_epoch,
        decay_rate=np.float64(hp.lr_gamma),
        staircase=True,
    )


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.sgd(lr_schedule(hp), momentum=hp.momentum), wrt=nnx.Param)


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return model(x).argmax(axis=1)
