"""MNIST read row by row by an LSTM.

Lesson E (Morvan Zhou, PyTorch-Tutorial 402_RNN_classifier.py, "RNN 循环神经网络 (分类)";
docs/LESSONS.md): ``RNN`` with ``rnn`` LSTM(28, 64, one layer, batch_first) and ``out`` Linear(64,
10) on the last time step. Each 28x28 image is 28 time steps of 28 pixels in [0, 1] (``ToTensor()``
only); Adam lr 0.01, batch 64, one epoch, CrossEntropyLoss; tested on the first 2000 test images.
"""

import optax
from flax import nnx

from jaxnets.layers import LSTMCell


class RNN(nnx.Module):
    def __init__(self, input_size=28, hidden_size=64, unroll=1, *, rngs: nnx.Rngs):
        # torch's LSTM: a cell scanned over time (lax.scan inside nnx.RNN), batch first by
        # default; jaxnets' cell keeps torch's two biases. ``unroll`` steps per scan iteration.
        self.rnn = nnx.RNN(LSTMCell(input_size, hidden_size, rngs=rngs), unroll=unroll)
        self.out = nnx.Linear(hidden_size, 10, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(-1, 28, 28)  # (batch, 28, 28, 1) -> (batch, time_step 28, input_size 28)
        r_out = self.rnn(x)  # zero initial carry (c, h); (batch, 28, 64)
        return self.out(r_out[:, -1, :])  # (batch, 10) logits from the last time step


def new_model(hp, rngs):
    return RNN(hp.input_size, hp.hidden_size, hp.unroll, rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.adam(hp.lr), wrt=nnx.Param)


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
