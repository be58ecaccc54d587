"""Generative adversarial net: one fully connected net forges digits, another judges them.

Lesson F (Wu Maogui, Python深度学习, ch. 8.2-8.3; docs/LESSONS.md): ``D`` Linear(784, 256),
LeakyReLU(0.2), Linear(256, 256), LeakyReLU(0.2), Linear(256, 1), Sigmoid; ``G`` Linear(64, 256),
ReLU, Linear(256, 256), ReLU, Linear(256, 784), Tanh; ``BCELoss``; Adam lr 2e-4 for each net; batch
100; images ``Normalize([0.5], [0.5])`` into tanh's range [-1, 1]. Each step: D learns to call the
real images 1 and G's fakes 0 (the fakes detached: D's step must not reach into G), then G learns to
make the updated D call the same fakes 1.
"""

import torch
from torch import nn


class GAN(nn.Module):
    """The lesson's two nets, ``D`` and ``G``, in one module: one state dict holds both."""

    def __init__(self, image_size=784, hidden_size=256, latent_size=64):
        super().__init__()
        self.latent_size = latent_size
        self.D = nn.Sequential(
            nn.Linear(image_size, hidden_size),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_size, hidden_size),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_size, 1),
            nn.Sigmoid(),
        )
        self.G = nn.Sequential(
            nn.Linear(latent_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, image_size),
            nn.Tanh(),
        )


def new_model(hp):
    return GAN(hp.image_size, hp.hidden_size, hp.latent_size)


def new_optimizer(model, hp):
    return {
        "D": torch.optim.Adam(model.D.parameters(), lr=hp.lr),
        "G": torch.optim.Adam(model.G.parameters(), lr=hp.lr),
    }


criterion = nn.BCELoss()


def new_noise(model, images):
    """A step's randomness, drawn here in a normal run (compare hands one in for lockstep)."""
    return {
        "z": torch.randn(len(images), model.latent_size, dtype=images.dtype, device=images.device)
    }


def d_loss_fn(D, images, fake_images):
    real_labels = torch.ones(len(images), 1, dtype=images.dtype, device=images.device)
    fake_labels = torch.zeros(len(fake_images), 1, dtype=images.dtype, device=images.device)
    return criterion(D(images), real_labels) + criterion(D(fake_images), fake_labels)


def g_loss_fn(D, fake_images):
    real_labels = torch.ones(
        len(fake_images), 1, dtype=fake_images.dtype, device=fake_images.device
    )
    return criterion(D(fake_images), real_labels)  # fakes labelled real


def loss_fn(model, x, y, noise=None):
    """Both losses of one step at the current weights, summed (parity's tiers 1 and 2)."""
    fake_images = model.G((noise or new_noise(model, x))["z"])
    return d_loss_fn(model.D, x, fake_images.detach()) + g_loss_fn(model.D, fake_images)


def train_step(model, optimizer, images, labels, noise=None):
    noise = noise or new_noise(model, images)
    fake_images = model.G(noise["z"])  # (batch, 784)

    # Discriminator: real images are 1, fakes 0; detach() keeps this backward out of G.
    d_loss = d_loss_fn(model.D, images, fake_images.detach())
    optimizer["D"].zero_grad()
    d_loss.backward()
    optimizer["D"].step()

    # Generator: the same fakes, judged by the updated D, should pass for real.
    g_loss = g_loss_fn(model.D, fake_images)
    optimizer["G"].zero_grad()
    g_loss.backward()
    optimizer["G"].step()
    return torch.stack([d_loss.detach(), g_loss.detach()])  # (2,): D, G


@torch.no_grad()
def predict(model, noise):
    """Digits forged from ``noise["z"]``."""
    return model.G(noise["z"])  # (n, 784) in [-1, 1]
