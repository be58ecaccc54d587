"""Conditional GAN: the GAN of ``gan.py`` told which digit to forge and which digit it judges.

Lesson F (Wu Maogui, Python深度学习, ch. 8; docs/LESSONS.md): each net embeds the digit label
(``label_emb``, Embedding(10, 10)) and joins it to its input: ``Generator`` z (64) + label (10) ->
256 ReLU -> 256 ReLU -> 784 Tanh; ``Discriminator`` image (784) + label (10) -> 256 LeakyReLU(0.2)
-> 256 LeakyReLU(0.2) -> 1 Sigmoid. Trained as ``gan``: real images with their labels are 1; fakes,
forged for labels drawn at random, are 0 for D (detached) and 1 for G. The picture: one row per
digit.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxnets.layers import Embed, binary_cross_entropy

leaky_relu = functools.partial(nnx.leaky_relu, negative_slope=0.2)


class Discriminator(nnx.Module):
    def __init__(self, image_size=784, hidden_size=256, num_classes=10, *, rngs: nnx.Rngs):
        self.label_emb = Embed(num_classes, num_classes, rngs=rngs)
        self.model = nnx.Sequential(
            nnx.Linear(image_size + num_classes, hidden_size, rngs=rngs),
            leaky_relu,
            nnx.Linear(hidden_size, hidden_size, rngs=rngs),
            leaky_relu,
            nnx.Linear(hidden_size, 1, rngs=rngs),
            nnx.sigmoid,
        )

    def __call__(self, x, labels):
        x = jnp.concatenate([x, self.label_emb(labels)], axis=1)  # (batch, 784 + num_classes)
        return self.model(x)  # (batch, 1)


class Generator(nnx.Module):
    def __init__(
        self, image_size=784, hidden_size=256, latent_size=64, num_classes=10, *, rngs: nnx.Rngs
    ):
        self.label_emb = Embed(num_classes, num_classes, rngs=rngs)
        self.model = nnx.Sequential(
            nnx.Linear(latent_size + num_classes, hidden_size, rngs=rngs),
            nnx.relu,
            nnx.Linear(hidden_size, hidden_size, rngs=rngs),
            nnx.relu,
            nnx.Linear(hidden_size, image_size, rngs=rngs),
            nnx.tanh,
        )

    def __call__(self, z, labels):
        z = jnp.concatenate([z, self.label_emb(labels)], axis=1)  # (batch, 64 + num_classes)
        return self.model(z)  # (batch, image_size)


class CGAN(nnx.Module):
    """``D`` and ``G`` in one module: one state dict holds both."""

    def __init__(
        self, image_size=784, hidden_size=256, latent_size=64, num_classes=10, *, rngs: nnx.Rngs
    ):
        self.latent_size, self.num_classes = latent_size, num_classes
        self.D = Discriminator(image_size, hidden_size, num_classes, rngs=rngs)
        self.G = Generator(image_size, hidden_size, latent_size, num_classes, rngs=rngs)
        self.rngs = rngs  # the key stream of a normal run's noise (model state: it advances)


def new_model(hp, rngs):
    return CGAN(hp.image_size, hp.hidden_size, hp.latent_size, hp.num_classes, rngs=rngs)


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
    """A step's randomness, drawn here in a normal run (compare hands one in for lockstep):
    z, and the digits the fakes are forged for."""
    shape = (len(images), model.latent_size)
    return {
        "z": jax.random.normal(model.rngs.noise(), shape, images.dtype),
        "labels": jax.random.randint(model.rngs.noise(), (len(images),), 0, model.num_classes),
    }


def d_loss_fn(D, images, labels, fake_images, fake_labels):
    real = jnp.ones((len(images), 1), images.dtype)
    fake = jnp.zeros((len(fake_images), 1), images.dtype)
    return criterion(D(images, labels), real) + criterion(D(fake_images, fake_labels), fake)


def g_loss_fn(G, D, z, fake_labels):
    fake_images = G(z, fake_labels)
    real = jnp.ones((len(fake_images), 1), fake_images.dtype)
    return criterion(D(fake_images, fake_labels), real)  # fakes labelled real


def loss_fn(model, x, y, noise=None):
    """Both losses of one step at the current weights, summed (parity's tiers 1 and 2)."""
    noise = noise or new_noise(model, x)
    fake_images = model.G(noise["z"], noise["labels"])
    return d_loss_fn(
        model.D, x, y, jax.lax.stop_gradient(fake_images), noise["labels"]
    ) + g_loss_fn(model.G, model.D, noise["z"], noise["labels"])


@nnx.jit
def train_step(model, optimizer, images, labels, noise=None):
    noise = noise or new_noise(model, images)
    fake_labels = noise["labels"]  # (batch,)
    fake_images = model.G(noise["z"], fake_labels)  # (batch, 784)

    # Discriminator: real pairs are 1, fakes 0; stop_gradient cuts what torch's detach() cuts.
    d_loss, grads = nnx.value_and_grad(d_loss_fn)(
        model.D, images, labels, jax.lax.stop_gradient(fake_images), fake_labels
    )
    optimizer["D"].update(model.D, grads)

    # Generator: the same fakes, judged by the updated D, should pass for their digits (G(z)
    # runs again inside g_loss_fn, as in gan.py: the same numbers, G has not moved).
    g_loss, grads = nnx.value_and_grad(g_loss_fn)(model.G, model.D, noise["z"], fake_labels)
    optimizer["G"].update(model.G, grads)
    return jnp.stack([d_loss, g_loss])  # (2,): D, G


@nnx.jit
def predict(model, noise):
    """Digits ``noise["labels"]`` forged from ``noise["z"]``."""
    return model.G(noise["z"], noise["labels"])  # (n, 784) in [-1, 1]
