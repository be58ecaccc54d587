"""Generative adversarial net: one fully connected net forges digits, another judges them.

Lesson F (Wu Maogui, Python深度学习, ch. 8.2-8.3; docs/LESSONS.md): ``D`` Linear(784, 256),
LeakyReLU(0.2), Linear(256, 256), LeakyReLU(0.2), Linear(256, 1), Sigmoid; ``G`` Linear(64, 256),
ReLU, Linear(256, 256), ReLU, Linear(256, 784), Tanh; ``BCELoss``; Adam lr 2e-4 for each net; batch
100; images ``Normalize([0.5], [0.5])`` into tanh's range [-1, 1]. Each step: D learns to call the
real images 1 and G's fakes 0 (the fakes detached: D's step must not reach into G), then G learns to
make the updated D call the same fakes 1.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxnets.layers import binary_cross_entropy


class GAN(nnx.Module):
    """The lesson's two nets, ``D`` and ``G``, in one module: one state dict holds both."""

    def __init__(self, image_size=784, hidden_size=256, latent_size=64, *, rngs: nnx.Rngs):
        self.latent_size = latent_size
        leaky_relu = functools.partial(nnx.leaky_relu, negative_slope=0.2)
        self.D = nnx.Sequential(
            nnx.Linear(image_size, hidden_size, rngs=rngs),
            leaky_relu,
            nnx.Linear(hidden_size, hidden_size, rngs=rngs),
            leaky_relu,
            nnx.Linear(hidden_size, 1, rngs=rngs),
            nnx.sigmoid,
        )
        self.G = nnx.Sequential(
            nnx.Linear(latent_size, hidden_size, rngs=rngs),
            nnx.relu,
            nnx.Linear(hidden_size, hidden_size, rngs=rngs),
            nnx.relu,
            nnx.Linear(hidden_size, image_size, rngs=rngs),
            nnx.tanh,
        )
        self.rngs = rngs  # the key stream of a normal run's z (model state: it advances)


def new_model(hp, rngs):
    return GAN(hp.image_size, hp.hidden_size, hp.latent_size, rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Dict(
        {
            "D": nnx.Optimizer(model.D, optax.adam(hp.lr), wrt=nnx.Param),
            "G": nnx.Optimizer(model.G, optax.adam(hp.lr), wrt=nnx.Param),
        }
    )


# torch's BCELoss: each log clamped at -100, and its own backward (jaxnets/layers.py)
criterion = binary_cross_entropy


def new_noise(model, images):
    """A step's randomness, drawn here in a normal run (compare hands one in for lockstep)."""
    shape = (len(images), model.latent_size)
    return {"z": jax.random.normal(model.rngs.noise(), shape, images.dtype)}


def d_loss_fn(D, images, fake_images):
    real_labels = jnp.ones((len(images), 1), images.dtype)
    fake_labels = jnp.zeros((len(fake_images), 1), images.dtype)
    return criterion(D(images), real_labels) + criterion(D(fake_images), fake_labels)


def g_loss_fn(G, D, z):
    fake_images = G(z)
    real_labels = jnp.ones((len(fake_images), 1), fake_images.dtype)
    return criterion(D(fake_images), real_labels)  # fakes labelled real


def loss_fn(model, x, y, noise=None):
    """Both losses of one step at the current weights, summed (parity's tiers 1 and 2)."""
    z = (noise or new_noise(model, x))["z"]
    fake_images = model.G(z)
    return d_loss_fn(model.D, x, jax.lax.stop_gradient(fake_images)) + g_loss_fn(
        model.G, model.D, z
    )


@nnx.jit
def train_step(model, optimizer, images, labels, noise=None):
    z = (noise or new_noise(model, images))["z"]
    fake_images = model.G(z)  # (batch, 784)

    # Discriminator: real images are 1, fakes 0; stop_gradient cuts what torch's detach() cuts.
    d_loss, grads = nnx.value_and_grad(d_loss_fn)(
        model.D, images, jax.lax.stop_gradient(fake_images)
    )
    optimizer["D"].update(model.D, grads)

    # Generator: the same fakes, judged by the updated D, should pass for real. torch
    # backpropagates through the graph it kept of G(z); a JAX gradient is of a function of G,
    # so g_loss_fn runs G(z) again (the same numbers: G has not moved since).
    g_loss, grads = nnx.value_and_grad(g_loss_fn)(model.G, model.D, z)
    optimizer["G"].update(model.G, grads)
    return jnp.stack([d_loss, g_loss])  # (2,): D, G


@nnx.jit
def predict(model, noise):
    """Digits forged from ``noise["z"]``."""
    return model.G(noise["z"])  # (n, 784) in [-1, 1]
