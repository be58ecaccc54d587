"""Optimizers: SGD, momentum, RMSprop and Adam race on the same regression.

Lesson A (Morvan Zhou, PyTorch-Tutorial 306_optimizer.py, "优化器"; docs/LESSONS.md). Four copies of
one ``Net``, one optimizer each, trained on the same shuffled mini-batches.
"""

import jax.numpy as jnp
import optax
from flax import nnx

OPTIMIZERS = ("SGD", "Momentum", "RMSprop", "Adam")


class Net(nnx.Module):
    def __init__(self, n_hidden=20, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(1, n_hidden, rngs=rngs)
        self.predict = nnx.Linear(n_hidden, 1, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.hidden(x))  # (batch, n_hidden)
        return self.predict(x)  # (batch, 1)


def new_model(hp, rngs):
    # The lesson's net_SGD, net_Momentum, ... as one dict: keys "SGD.hidden.weight", ...
    return nnx.Dict({name: Net(hp.n_hidden, rngs=rngs) for name in OPTIMIZERS})


def new_optimizer(nets, hp):
    b1, b2 = hp.betas
    transforms = {
        "SGD": optax.sgd(hp.lr),
        "Momentum": optax.sgd(hp.lr, momentum=hp.momentum),
        # torch adds eps after the square root; optax's default puts it inside (~6e-5 apart).
        "RMSprop": optax.rmsprop(hp.lr, decay=hp.alpha, eps=1e-8, eps_in_sqrt=False),
        "Adam": optax.adam(hp.lr, b1=b1, b2=b2),
    }
    return nnx.Dict(
        {name: nnx.Optimizer(nets[name], tx, wrt=nnx.Param) for name, tx in transforms.items()}
    )


def mse(net, x, y):
    return jnp.mean((net(x) - y) ** 2)


def loss_fn(nets, x, y):
    # The nets share nothing, so the gradient of the sum is each net's own gradient.
    return sum(mse(net, x, y) for net in nets.values())


@nnx.jit
def train_step(nets, optimizers, x, y):
    losses = []
    for name in OPTIMIZERS:
        loss, grads = nnx.value_and_grad(mse)(nets[name], x, y)
        optimizers[name].update(nets[name], grads)
        losses.append(loss)
    return jnp.stack(losses)  # (4,) in OPTIMIZERS order


@nnx.jit
def predict(nets, x):
    return jnp.stack([nets[name](x) for name in OPTIMIZERS])  # (4, batch, 1)
