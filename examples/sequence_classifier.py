"""A port to check: a 1-D convolution and a GRU classifying noisy waves, in PyTorch and Flax.

Not one of the tutorials: the kind of model a user brings. ``twinnets check
examples/sequence_classifier.py`` trains both from the same weights, on the same batches, in
float64 lockstep, and says where they part if they do (docs/GUIDE.md walks through it).

The torch model reads ``(batch, channels, time)``, as ``Conv1d`` wants; the Flax twin reads
``(batch, time, channels)``, as ``nnx.Conv`` wants: ``to_flax`` moves the axis once, at the
data. The attribute names are the same on both sides, so the torch state dict ports as it is.
"""

import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from flax import nnx

from jaxnets import layers

CHANNELS, STEPS_IN_TIME, CLASSES, HIDDEN = 2, 24, 3, 16


class TorchClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(CHANNELS, 8, kernel_size=5, padding=2)
        self.gru = torch.nn.GRU(8, HIDDEN, batch_first=True)
        self.norm = torch.nn.LayerNorm(HIDDEN)
        self.drop = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):  # x (batch, channels, time)
        h = F.relu(self.conv(x))  # (batch, 8, time)
        out, _ = self.gru(h.transpose(1, 2))  # (batch, time, HIDDEN)
        return self.head(self.drop(self.norm(out[:, -1])))  # (batch, CLASSES) logits


class FlaxClassifier(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        # torch's padding=2, spelled out (nnx.Conv pads 'SAME' unless told)
        self.conv = nnx.Conv(CHANNELS, 8, kernel_size=(5,), padding=((2, 2),), rngs=rngs)
        # jaxnets' GRU holds torch's two biases (nnx.GRUCell cannot hold b_hn)
        self.gru = layers.GRU(8, HIDDEN, batch_first=True, rngs=rngs)
        self.norm = nnx.LayerNorm(HIDDEN, epsilon=1e-5, rngs=rngs)  # torch's eps (Flax: 1e-6)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.head = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):  # x (batch, time, channels)
        h = nnx.relu(self.conv(x))  # (batch, time, 8)
        out, _ = self.gru(h)  # (batch, time, HIDDEN)
        return self.head(self.drop(self.norm(out[:, -1])))  # (batch, CLASSES) logits


def torch_model():
    torch.manual_seed(0)
    return TorchClassifier()


def flax_model():
    return FlaxClassifier(rngs=nnx.Rngs(0))  # its weights are replaced by torch's


def torch_loss(model, x, y):
    return F.cross_entropy(model(x), y)


def flax_loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def torch_optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)


def scheduler(optimizer):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)


def to_flax(array):
    """(batch, channels, time) -> (batch, time, channels); labels stay as they are."""
    return np.swapaxes(array, 1, 2) if np.ndim(array) == 3 else array


def batches():
    """Four batches of 16 noisy waves; the class is the wave's frequency."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, STEPS_IN_TIME)
    out = []
    for _ in range(4):
        y = rng.integers(0, CLASSES, 16)
        phase = rng.uniform(0, 2 * np.pi, (16, 1))
        wave = np.sin(2 * np.pi * (y[:, None] + 1) * t + phase)
        x = np.stack([wave, np.cos(2 * np.pi * t + phase)], axis=1)  # (16, CHANNELS, time)
        out.append((x + 0.1 * rng.standard_normal(x.shape), y))
    return out


def predict(model, x):
    """Labels from the Flax model (the ported weights at work after the check)."""
    return jnp.argmax(model(jnp.asarray(to_flax(x))), axis=-1)
