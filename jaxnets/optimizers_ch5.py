"""The chapter's optimizers: SGD, momentum, NAG, AdaGrad, RMSProp and Adam on one regression.

Lesson G (Wu Maogui, Python深度学习, ch. 5.6, the pseudo-code of 5.6.1-5.6.5; docs/LESSONS.md) on
lesson A's noisy parabola (1,000 points: the pseudo-code's m = 1000, batch_size = 10), with lesson
A's ``Net``. Six copies of one net, from the same weights, one optimizer each, on the same
mini-batches; lr 0.01 for all, torch's default decay rates and eps (the chapter names none), 12
epochs. The optax twin of each ``torch.optim`` rule; optax has none for torch's Adagrad (its
``adagrad`` starts the accumulator at 0.1 and puts eps inside the root): ``jaxnets.optim.adagrad``.
The chapter's own pseudo-code, in numpy, is ``byhand/optimizers_ch5.py``.
"""

import jax.numpy as jnp
import optax
from flax import nnx

from jaxnets import optim

OPTIMIZERS = ("SGD", "Momentum", "NAG", "AdaGrad", "RMSProp", "Adam")


class Net(nnx.Module):
    def __init__(self, n_hidden=20, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(1, n_hidden, rngs=rngs)
        self.predict = nnx.Linear(n_hidden, 1, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.hidden(x))  # (batch, n_hidden)
        return self.predict(x)  # (batch, 1)


def new_model(hp, rngs):
    # One start for all six: keys "SGD.hidden.weight", ...
    net = Net(hp.n_hidden, rngs=rngs)
    return nnx.Dict({name: nnx.clone(net) for name in OPTIMIZERS})


def new_optimizer(nets, hp):
    b1, b2 = hp.betas
    transforms = {
        "SGD": optax.sgd(hp.lr),
        "Momentum": optax.sgd(hp.lr, momentum=hp.momentum),
        # torch's nesterov form, which optax shares: it keeps the look-ahead point as the
        # parameters (the chapter keeps theta and looks ahead from it)
        "NAG": optax.sgd(hp.lr, momentum=hp.momentum, nesterov=True),
        "AdaGrad": optim.adagrad(hp.lr),  # torch's: zero start, eps 1e-10 outside the root
        # torch adds eps (1e-8) after the square root; optax's default puts it inside
        "RMSProp": optax.rmsprop(hp.lr, decay=hp.alpha, eps=1e-8, eps_in_sqrt=False),
        "Adam": optax.adam(hp.lr, b1=b1, b2=b2, eps=1e-8),
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
    return jnp.stack(losses)  # (6,) in OPTIMIZERS order


@nnx.jit
def predict(nets, x):
    return jnp.stack([nets[name](x) for name in OPTIMIZERS])  # (6, batch, 1)
