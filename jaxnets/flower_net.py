"""A two-layer tanh net on the "flower" data (it separates the petals).

Lesson B (Liao Xingyu, 深度学习入门之PyTorch, ch. 3: logistic regression to a two-layer net;
docs/LESSONS.md). The lesson writes the same 2 -> 4 tanh -> 1 net three ways: raw parameters
(``two_network``), ``nn.Sequential`` (``seq_net``) and an ``nn.Module`` (``module_net``, whose state
dict it saves). All three are here; the Module is the one the task trains.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class TwoNetwork(nnx.Module):
    """The lesson's ``two_network``: raw ``w1, b1, w2, b2``, small random weights."""

    def __init__(self, n_input=2, n_hidden=4, n_output=1, *, rngs: nnx.Rngs):
        self.w1 = nnx.Param(jax.random.normal(rngs.params(), (n_input, n_hidden)) * 0.01)
        self.b1 = nnx.Param(jnp.zeros((n_hidden,)))
        self.w2 = nnx.Param(jax.random.normal(rngs.params(), (n_hidden, n_output)) * 0.01)
        self.b2 = nnx.Param(jnp.zeros((n_output,)))

    def __call__(self, x):
        # Ranks broadcast explicitly in JAX code here: the (n,) biases become (1, n).
        x1 = jnp.tanh(x @ self.w1[...] + self.b1[None])  # (batch, n_hidden)
        return x1 @ self.w2[...] + self.b2[None]  # (batch, n_output) logits


def seq_net(n_input=2, n_hidden=4, n_output=1, *, rngs: nnx.Rngs):
    """The lesson's ``seq_net``: keys ``0.weight``, ``0.bias``, ``2.weight``, ``2.bias``."""
    return nnx.Sequential(
        nnx.Linear(n_input, n_hidden, rngs=rngs),
        nnx.tanh,
        nnx.Linear(n_hidden, n_output, rngs=rngs),
    )


class ModuleNet(nnx.Module):
    """The lesson's ``module_net``: ``layer1``, ``layer2`` (the tanh), ``layer3``."""

    def __init__(self, num_input, num_hidden, num_output, *, rngs: nnx.Rngs):
        self.layer1 = nnx.Linear(num_input, num_hidden, rngs=rngs)
        self.layer2 = nnx.tanh
        self.layer3 = nnx.Linear(num_hidden, num_output, rngs=rngs)

    def __call__(self, x):
        x = self.layer1(x)  # (batch, num_hidden)
        x = self.layer2(x)
        return self.layer3(x)  # (batch, num_output) logits


def new_model(hp, rngs):
    return ModuleNet(hp.n_input, hp.n_hidden, hp.n_output, rngs=rngs)


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
    return (model(x) > 0).astype(jnp.int32)  # (batch, 1): sigmoid(logit) > 0.5
