"""An RNN that reads sin and predicts cos, its hidden state carried from step to step.

Lesson E (Morvan Zhou, PyTorch-Tutorial 403_RNN_regressor.py, "RNN 循环神经网络 (回归)";
docs/LESSONS.md): ``RNN`` with ``rnn`` RNN(1, 32, tanh, batch_first) and ``out`` Linear(32, 1)
applied at every time step. Step k reads sin at 10 points of linspace(k pi, (k + 1) pi) and predicts
cos there; Adam lr 0.02, MSE, 100 steps. The hidden state of one step is the initial state of the
next, cut from the graph (``h_state = h_state.data``): truncated backpropagation through time.
"""

import jax.numpy as jnp
import optax
from flax import nnx

from jaxnets.layers import HiddenState, RNNCell


class RNN(nnx.Module):
    def __init__(self, hidden_size=32, *, rngs: nnx.Rngs):
        self.rnn = nnx.RNN(RNNCell(1, hidden_size, rngs=rngs), return_carry=True)
        self.out = nnx.Linear(hidden_size, 1, rngs=rngs)
        # carried by train_step; a zero state for a batch of one, torch's None
        self.h_state = HiddenState(jnp.zeros((1, hidden_size)))

    def __call__(self, x, h_state=None):
        # x (batch, time_step, 1); h_state (batch, hidden_size): Flax has no layer axis
        h_state, r_out = self.rnn(x, initial_carry=h_state)  # r_out (batch, time_step, hidden)
        return self.out(r_out), h_state  # Linear maps the last axis: every step at once


def new_model(hp, rngs):
    return RNN(hp.hidden_size, rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.adam(hp.lr), wrt=nnx.Param)


def mse(prediction, y):
    return jnp.mean((prediction - y) ** 2)


def loss_fn(model, x, y):
    """The loss from a zero hidden state (the first step's); ``train_step`` carries it on."""
    prediction, _ = model(x)
    return mse(prediction, y)


@nnx.jit
def train_step(model, optimizer, x, y):
    def carried_loss(model):
        prediction, h_state = model(x, model.h_state[...])
        return mse(prediction, y), h_state

    (loss, h_state), grads = nnx.value_and_grad(carried_loss, has_aux=True)(model)
    optimizer.update(model, grads)
    # The state goes on as a value: no gradient reaches the previous step (torch's .detach()).
    model.h_state[...] = h_state
    return loss


@nnx.jit
def predict(model, x):
    """cos predicted for every row of ``x`` ``(steps, time_step, 1)``, read as one sequence
    from a zero state, as training reads them."""
    prediction, _ = model(x.reshape(1, -1, 1))  # (1, steps * time_step, 1)
    return prediction.reshape(x.shape)
