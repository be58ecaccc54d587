"""Forecasting a time series with an LSTM: each value from the 30 before it.

Lesson E (Wu Maogui, Python深度学习, ch. 7.8; docs/LESSONS.md): the lesson read daily highs of the
CSI 300 index from a web API; here the shipped weekly Mauna Loa CO2 series
(compare/tutorials/datasets/co2/README.md), normalised by its mean and std. ``RNN`` with ``rnn``
LSTM(1, 64, batch_first) over the 30-value window and ``out`` Linear(64, 1) on its last step; MSE,
Adam, batch 20, windows in order (the lesson's DataLoader does not shuffle); trained on the head of
the series, tested on its tail.
"""

import jax.numpy as jnp
import optax
from flax import nnx

from jaxnets.layers import LSTMCell


class RNN(nnx.Module):
    def __init__(self, hidden_size=64, unroll=1, *, rngs: nnx.Rngs):
        self.rnn = nnx.RNN(LSTMCell(1, hidden_size, rngs=rngs), unroll=unroll)
        self.out = nnx.Linear(hidden_size, 1, rngs=rngs)

    def __call__(self, x):
        # x (batch, window 30, 1): the 30 values before the one to predict
        r_out = self.rnn(x)  # zero initial carry (c, h); (batch, 30, hidden_size)
        return self.out(r_out[:, -1, :])  # (batch, 1): the next value


def new_model(hp, rngs):
    return RNN(hp.hidden_size, hp.unroll, rngs=rngs)


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
    return model(x)
