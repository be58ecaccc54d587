"""Regularisation on the house prices: one net trained plain, with L2, with dropout, with BN.

Lesson G (Wu Maogui, Python深度学习, ch. 5.3: 5.3.1 weight decay, 5.3.2 dropout, 5.3.3 batch
normalisation; the net is the lesson's ``Net1`` of ch. 5.7.2; docs/LESSONS.md). ``layer1``
Linear(12, 16), ``layer2`` Linear(16, 32), ``layer3`` Linear(32, 1), each in a ``Sequential``, ReLU
after the first two (12 inputs: the B column is dropped). Four variants start from the same weights
and train side by side on the same mini-batches: ``plain``; ``L2``, torch's coupled ``weight_decay``
as optax's ``add_decayed_weights`` chained before Adam; ``dropout``, an ``nnx.Dropout`` after
``layer1`` and after ``layer2``; ``batchnorm``, a BatchNorm in ``layer1`` and ``layer2``
(torch's running statistics: ``jaxnets.layers.BatchNorm``). MSE, Adam lr 0.01, batch 27,
200 epochs: the lesson's code is lost; these are this project's choice.
"""

import jax.numpy as jnp
import optax
from flax import nnx

from jaxnets.layers import BatchNorm

VARIANTS = ("plain", "L2", "dropout", "batchnorm")


class Net1(nnx.Module):
    def __init__(
        self, in_dim, n_hidden_1, n_hidden_2, out_dim, dropout=0.0, batch_norm=False, *, rngs
    ):
        # BatchNorm subtracts the batch mean, so a bias before it does nothing: it is left out
        # (use_bias=False; under Adam it would wander on rounding noise, docs/PORTING.md)
        bias = not batch_norm
        norm1 = (BatchNorm(n_hidden_1, rngs=rngs),) if batch_norm else ()
        norm2 = (BatchNorm(n_hidden_2, rngs=rngs),) if batch_norm else ()
        self.layer1 = nnx.Sequential(
            nnx.Linear(in_dim, n_hidden_1, use_bias=bias, rngs=rngs), *norm1
        )
        self.layer2 = nnx.Sequential(
            nnx.Linear(n_hidden_1, n_hidden_2, use_bias=bias, rngs=rngs), *norm2
        )
        self.layer3 = nnx.Sequential(nnx.Linear(n_hidden_2, out_dim, rngs=rngs))
        # rate 0: passes everything (the other variants). It draws its masks from its own
        # key stream, which advances with every draw (inside jit and scan too: model state)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x, masks=None):
        """``masks``: ``{"layer1": (batch, n_hidden_1), "layer2": ...}`` to multiply by in
        place of the dropout's own draw (compare hands both sides the same in lockstep)."""
        x = self.layer1(x)  # (batch, n_hidden_1)
        x = nnx.relu(self.dropout(x) if masks is None else x * masks["layer1"])
        x = self.layer2(x)  # (batch, n_hidden_2)
        x = nnx.relu(self.dropout(x) if masks is None else x * masks["layer2"])
        return self.layer3(x)  # (batch, out_dim)


def new_model(hp, rngs):
    def net(**kwargs):
        return Net1(hp.in_dim, hp.n_hidden_1, hp.n_hidden_2, hp.out_dim, **kwargs, rngs=rngs)

    nets = nnx.Dict(
        {
            "plain": net(),
            "L2": net(),
            "dropout": net(dropout=hp.dropout),
            "batchnorm": net(batch_norm=True),
        }
    )
    # one start for all four: the plain net's Linears (BatchNorm starts at its defaults)
    for name in VARIANTS[1:]:
        for layer in ("layer1", "layer2", "layer3"):
            source = getattr(nets["plain"], layer).layers[0]
            target = getattr(nets[name], layer).layers[0]
            target.kernel.set_value(source.kernel.get_value())
            if target.bias is not None:
                target.bias.set_value(source.bias.get_value())
    return nets


def new_optimizer(nets, hp):
    def transform(name):
        if name == "L2":  # torch's weight_decay: the decay joins the gradient before Adam
            return optax.chain(optax.add_decayed_weights(hp.weight_decay), optax.adam(hp.lr))
        return optax.adam(hp.lr)

    return nnx.Dict(
        {name: nnx.Optimizer(nets[name], transform(name), wrt=nnx.Param) for name in VARIANTS}
    )


def mse(net, x, y, masks=None):
    return jnp.mean((net(x, masks) - y) ** 2)


def losses(nets, x, y, noise=None):
    """Each variant's MSE, in VARIANTS order; ``noise`` holds the dropout net's masks."""
    return jnp.stack(
        [mse(nets[name], x, y, noise if name == "dropout" else None) for name in VARIANTS]
    )


def loss_fn(nets, x, y, noise=None):
    # The nets share nothing, so the gradient of the sum is each net's own gradient.
    return losses(nets, x, y, noise).sum()


@nnx.jit
def train_step(nets, optimizers, x, y, noise=None):
    step_losses = []
    for name in VARIANTS:
        masks = noise if name == "dropout" else None
        loss, grads = nnx.value_and_grad(mse)(nets[name], x, y, masks)
        optimizers[name].update(nets[name], grads)
        step_losses.append(loss)
    return jnp.stack(step_losses)  # (4,) in VARIANTS order


@nnx.jit
def predict(nets, x):
    return jnp.concatenate([nets[name](x) for name in VARIANTS], axis=1)  # (batch, 4)
