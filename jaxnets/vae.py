"""Variational autoencoder: MNIST digits through a 20-number latent space that is kept normal.

Lesson F (Wu Maogui, Python深度学习, ch. 8.1.3; docs/LESSONS.md): ``VAE`` with ``fc1`` Linear(784,
400) and ReLU, ``fc2`` and ``fc3`` Linear(400, 20) (mu and log_var), ``fc4`` Linear(20, 400) and
ReLU, ``fc5`` Linear(400, 784) and sigmoid. z = mu + exp(log_var / 2) * eps with eps ~ N(0, I): the
text's formula 8.1 prints exp(log_var), its code (``reparameterize``) takes the standard deviation.
Loss: BCE summed over pixels and batch plus the KL divergence from N(0, I); Adam lr 1e-3,
batch 128, 30 epochs, pixels in [0, 1] (``ToTensor()`` alone: they are BCE's targets).
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxnets.layers import binary_cross_entropy


class VAE(nnx.Module):
    def __init__(self, image_size=784, h_dim=400, z_dim=20, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(image_size, h_dim, rngs=rngs)
        self.fc2 = nnx.Linear(h_dim, z_dim, rngs=rngs)
        self.fc3 = nnx.Linear(h_dim, z_dim, rngs=rngs)
        self.fc4 = nnx.Linear(z_dim, h_dim, rngs=rngs)
        self.fc5 = nnx.Linear(h_dim, image_size, rngs=rngs)
        # torch draws eps from its global generator; here the model carries its key stream,
        # which advances with every draw (inside jit and scan too: it is model state)
        self.rngs = rngs

    def encode(self, x):
        h = nnx.relu(self.fc1(x))  # (batch, h_dim)
        return self.fc2(h), self.fc3(h)  # mu, log_var: (batch, z_dim) each

    def reparameterize(self, mu, log_var, eps=None):
        std = jnp.exp(log_var / 2)
        if eps is None:  # the lesson draws here; compare hands both sides one eps in lockstep
            eps = jax.random.normal(self.rngs.noise(), std.shape, std.dtype)
        return mu + eps * std  # (batch, z_dim)

    def decode(self, z):
        h = nnx.relu(self.fc4(z))  # (batch, h_dim)
        return nnx.sigmoid(self.fc5(h))  # (batch, image_size), pixels in (0, 1)

    def __call__(self, x, eps=None):
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var, eps)
        return self.decode(z), mu, log_var


def new_model(hp, rngs):
    return VAE(hp.image_size, hp.h_dim, hp.z_dim, rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.adam(hp.lr), wrt=nnx.Param)


def loss_fn(model, x, y, noise=None):
    """Reconstruction (BCE, summed: the lesson's ``size_average=False``) plus KL divergence;
    ``y`` (the digit) is unused, ``noise`` is ``{"eps": (batch, z_dim)}`` or drawn here."""
    x_reconst, mu, log_var = model(x, None if noise is None else noise["eps"])
    # torch's BCELoss clamps each log at -100 and has its own backward: jaxnets/layers.py
    reconst_loss = binary_cross_entropy(x_reconst, x, reduction="sum")
    kl_div = -0.5 * jnp.sum(1 + log_var - mu**2 - jnp.exp(log_var))
    return reconst_loss + kl_div


@nnx.jit
def train_step(model, optimizer, x, y, noise=None):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y, noise)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, noise):
    """New digits: the decoder on z ~ N(0, I), here ``noise["eps"]``, drawn as eps is."""
    return model.decode(noise["eps"])  # (n, image_size)


@nnx.jit
def reconstruct(model, x, noise):
    """The lesson's reconstructions: the images through encoder, sampling and decoder."""
    return model(x, noise["eps"])[0]  # (n, image_size)
