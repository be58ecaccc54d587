"""Conditional GAN: the GAN of ``gan.py`` told which digit to forge and which digit it judges.

Lesson F (Wu Maogui, Python深度学习, ch. 8; docs/LESSONS.md): each net embeds the digit label
(``label_emb``, Embedding(10, 10)) and joins it to its input: ``Generator`` z (64) + label (10) ->
256 ReLU -> 256 ReLU -> 784 Tanh; ``Discriminator`` image (784) + label (10) -> 256 LeakyReLU(0.2)
-> 256 LeakyReLU(0.2) -> 1 Sigmoid. Trained as ``gan``: real images with their labels are 1; fakes,
forged for labels drawn at random, are 0 for D (detached) and 1 for G. The picture: one row per
digit.
"""

import torch
from torch import nn


class Discriminator(nn.Module):
    def __init__(self, image_size=784, hidden_size=256, num_classes=10):
        super().__init__()
        self.label_emb = nn.Embedding(num_classes, num_classes)
        self.model = nn.Sequential(
            nn.Linear(image_size + num_classes, hidden_size),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_size, hidden_size),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_size, 1),
            nn.Sigmoid(),
        )

    def forward(self, x, labels):
        x = torch.cat([x, self.label_emb(labels)], dim=1)  # (batch, image_size + num_classes)
        return self.model(x)  # (batch, 1)


class Generator(nn.Module):
    def __init__(self, image_size=784, hidden_size=256, latent_size=64, num_classes=10):
        super().__init__()
        self.label_emb = nn.Embedding(num_classes, num_classes)
        self.model = nn.Sequential(
            nn.Linear(latent_size + num_classes, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, image_size),
            nn.Tanh(),
        )

    def forward(self, z, labels):
        z = torch.cat([z, self.label_emb(labels)], dim=1)  # (batch, latent_size + num_classes)
        return self.model(z)  # (batch, image_size)


class CGAN(nn.Module):
    """``D`` and ``G`` in one module: one state dict holds both."""

    def __init__(self, image_size=784, hidden_size=256, latent_size=64, num_classes=10):
        super().__init__()
        self.latent_size, self.num_classes = latent_size, num_classes
        self.D = Discriminator(image_size, hidden_size, num_classes)
        self.G = Generator(image_size, hidden_size, latent_size, num_classes)


def new_model(hp):
    return CGAN(hp.image_size, hp.hidden_size, hp.latent_size, hp.num_classes)


def new_optimizer(model, hp):
    return {
        "D": torch.optim.Adam(model.D.parameters(), lr=hp.lr),
        "G": torch.optim.Adam(model.G.parameters(), lr=hp.lr),
    }


criterion = nn.BCELoss()


def new_noise(model, images):
    """A step's randomness, drawn here in a normal run (compare hands one in for lockstep):
    z, and the digits the fakes are forged for."""
    return {
        "z": torch.randn(len(images), model.latent_size, dtype=images.dtype, device=images.device),
        "labels": torch.randint(0, model.num_classes, (len(images),), device=images.device),
    }


def d_loss_fn(D, images, labels, fake_images, fake_labels):
    real = torch.ones(len(images), 1, dtype=images.dtype, device=images.device)
    fake = torch.zeros(len(fake_images), 1, dtype=images.dtype, device=images.device)
    return criterion(D(images, labels), real) + criterion(D(fake_images, fake_labels), fake)


def g_loss_fn(D, fake_images, fake_labels):
    real = torch.ones(len(fake_images), 1, dtype=fake_images.dtype, device=fake_images.device)
    return criterion(D(fake_images, fake_labels), real)  # fakes labelled real


def loss_fn(model, x, y, noise=None):
    """Both losses of one step at the current weights, summed (parity's tiers 1 and 2)."""
    noise = noise or new_noise(model, x)
    fake_images = model.G(noise["z"], noise["labels"])
    return d_loss_fn(model.D, x, y, fake_images.detach(), noise["labels"]) + g_loss_fn(
        model.D, fake_images, noise["labels"]
    )


def train_step(model, optimizer, images, labels, noise=None):
    noise = noise or new_noise(model, images)
    fake_labels = noise["labels"]  # (batch,)
    fake_images = model.G(noise["z"], fake_labels)  # (batch, 784)

    # Discriminator: real pairs are 1, fakes 0; detach() keeps this backward out of G.
    d_loss = d_loss_fn(model.D, images, labels, fake_images.detach(), fake_labels)
    optimizer["D"].zero_grad()
    d_loss.backward()
    optimizer["D"].step()

    # Generator: the same fakes, judged by the updated D, should pass for their digits.
    g_loss = g_loss_fn(model.D, fake_images, fake_labels)
    optimizer["G"].zero_grad()
    g_loss.backward()
    optimizer["G"].step()
    return torch.stack([d_loss.detach(), g_loss.detach()])  # (2,): D, G


@torch.no_grad()
def predict(model, noise):
    """Digits ``noise["labels"]`` forged from ``noise["z"]``."""
    return model.G(noise["z"], noise["labels"])  # (n, 784) in [-1, 1]
