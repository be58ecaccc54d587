"""Deep convolutional GAN: transposed convolutions forge 28x28 digits, convolutions judge them.

Lesson F (Wu Maogui, Python深度学习, ch. 8; the layout of PyTorch's DCGAN example, sized for 28x28;
ngf = ndf = 16 here, 64 there; docs/LESSONS.md): ``Generator`` z (100) as a 1x1 image ->
ConvTranspose2d(100, 2 ngf, 7) 7x7 -> BatchNorm2d, ReLU -> ConvTranspose2d(2 ngf, ngf, 4, stride 2,
padding 1) 14x14 -> BatchNorm2d, ReLU -> ConvTranspose2d(ngf, 1, 4, 2, 1) 28x28 -> Tanh;
``Discriminator`` Conv2d(1, ndf, 4, 2, 1) 14x14 -> LeakyReLU(0.2) -> Conv2d(ndf, 2 ndf, 4, 2, 1) 7x7
-> BatchNorm2d, LeakyReLU(0.2) -> Conv2d(2 ndf, 1, 7) 1x1 -> Sigmoid; no biases, as the example.
``BCELoss``, Adam lr 2e-4 betas (0.5, 0.999) for each net, batch 100, images in [-1, 1].
Trained as ``gan``: one G(z) per step, its fakes detached for D's step, then reused for G's.
"""

import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, latent_size=100, ngf=16):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(latent_size, ngf * 2, 7, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z):
        z = z.view(len(z), -1, 1, 1)  # (batch, latent_size, 1, 1)
        # -> (batch, ngf * 2, 7, 7) -> (batch, ngf, 14, 14) -> (batch, 1, 28, 28)
        return self.main(z)


class Discriminator(nn.Module):
    def __init__(self, ndf=16):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        # (batch, 1, 28, 28) -> (batch, ndf, 14, 14) -> (batch, ndf * 2, 7, 7) -> (batch, 1, 1, 1)
        return self.main(x).view(len(x), 1)  # (batch, 1)


class DCGAN(nn.Module):
    """``D`` and ``G`` in one module: one state dict holds both."""

    def __init__(self, latent_size=100, ngf=16, ndf=16):
        super().__init__()
        self.latent_size = latent_size
        self.D = Discriminator(ndf)
        self.G = Generator(latent_size, ngf)


def new_model(hp):
    return DCGAN(hp.latent_size, hp.ngf, hp.ndf)


def new_optimizer(model, hp):
    return {
        "D": torch.optim.Adam(model.D.parameters(), lr=hp.lr, betas=hp.betas),
        "G": torch.optim.Adam(model.G.parameters(), lr=hp.lr, betas=hp.betas),
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
    fake_images = model.G(noise["z"])  # (batch, 1, 28, 28)

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
    """Digits forged from ``noise["z"]`` (in eval mode: BatchNorm's running statistics)."""
    return model.G(noise["z"])  # (n, 1, 28, 28) in [-1, 1]
