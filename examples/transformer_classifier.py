"""A port to check: a ``nn.TransformerEncoder`` classifying sequences, in PyTorch and Flax NNX.

Not one of the tutorials: the kind of model a user brings. ``twinnets check
examples/transformer_classifier.py`` trains both from the same weights on the same batches in
float64 lockstep, AdamW with a linear warm-up stepped every batch (``scheduler_interval``);
the dropout of every layer, the attention probabilities' included, is fed the same masks on
both sides. The sequences have different lengths: zero steps at the end are padding, left out
of the attention (torch's ``src_key_padding_mask``) and of the mean over the sequence.

torch's encoder layer (post-norm, ReLU) written in Flax with torch's names, so the
``state_dict`` keys are the ``nnx.State`` paths. What differs by default and is spelled out:
the attention's softmax precision (``jaxnets.layers.dot_product_attention``: Flax's default
runs it in float32), its dropout drawn per element as torch's (``broadcast_dropout=False``:
Flax's default shares one mask across the batch and the heads), LayerNorm's eps, and the
padding mask's convention: torch's is True where a key is left out, Flax's True where it is
attended.
"""

import numpy as np
import optax
import torch
import torch.nn.functional as F
from flax import nnx

from jaxnets import layers

FEATURES, WIDTH, HEADS, FEED_FORWARD, CLASSES, DROPOUT = 4, 16, 2, 32, 3, 0.1
LENGTH, BATCH = 6, 8


class TorchClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(FEATURES, WIDTH)
        layer = torch.nn.TransformerEncoderLayer(
            WIDTH, HEADS, FEED_FORWARD, DROPOUT, batch_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(WIDTH, CLASSES)

    def forward(self, x):  # x (batch, length, features)
        padding = (x == 0).all(dim=-1)  # (batch, length): True where left out
        h = self.encoder(self.embed(x), src_key_padding_mask=padding)  # (batch, length, WIDTH)
        kept = (~padding).unsqueeze(-1).to(h.dtype)  # (batch, length, 1)
        return self.head((h * kept).sum(dim=1) / kept.sum(dim=1))  # (batch, classes)


class EncoderLayer(nnx.Module):
    """torch's ``TransformerEncoderLayer`` (post-norm): attention, then the feed-forward."""

    def __init__(self, *, rngs):
        self.self_attn = nnx.MultiHeadAttention(
            num_heads=HEADS,
            in_features=WIDTH,
            dropout_rate=DROPOUT,
            broadcast_dropout=False,  # a mask per element, as torch's
            attention_fn=layers.dot_product_attention,  # the softmax in float64 too
            decode=False,
            rngs=rngs,
        )
        self.linear1 = nnx.Linear(WIDTH, FEED_FORWARD, rngs=rngs)
        self.dropout = nnx.Dropout(DROPOUT, rngs=rngs)
        self.linear2 = nnx.Linear(FEED_FORWARD, WIDTH, rngs=rngs)
        self.norm1 = nnx.LayerNorm(WIDTH, epsilon=1e-5, rngs=rngs)  # torch's eps (Flax: 1e-6)
        self.norm2 = nnx.LayerNorm(WIDTH, epsilon=1e-5, rngs=rngs)
        self.dropout1 = nnx.Dropout(DROPOUT, rngs=rngs)
        self.dropout2 = nnx.Dropout(DROPOUT, rngs=rngs)

    def __call__(self, x, mask):  # x (batch, length, WIDTH), mask (batch, 1, 1, length)
        x = self.norm1(x + self.dropout1(self.self_attn(x, mask=mask)))
        feed = self.linear2(self.dropout(nnx.relu(self.linear1(x))))
        return self.norm2(x + self.dropout2(feed))


class Encoder(nnx.Module):
    def __init__(self, num_layers, *, rngs):
        self.layers = nnx.List([EncoderLayer(rngs=rngs) for _ in range(num_layers)])

    def __call__(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return x


class FlaxClassifier(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.embed = nnx.Linear(FEATURES, WIDTH, rngs=rngs)
        self.encoder = Encoder(2, rngs=rngs)
        self.head = nnx.Linear(WIDTH, CLASSES, rngs=rngs)

    def __call__(self, x):  # x (batch, length, features)
        kept = ~(x == 0).all(axis=-1)  # (batch, length): True where attended
        h = self.encoder(self.embed(x), kept[:, None, None, :])  # (batch, length, WIDTH)
        kept = kept[..., None].astype(h.dtype)  # (batch, length, 1)
        return self.head((h * kept).sum(axis=1) / kept.sum(axis=1))  # (batch, classes)


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
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def scheduler(optimizer):
    return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=4)


scheduler_interval = "step"  # a warm-up: torch steps it after every batch


def batches():
    """Three batches of random sequences of 3 to 6 steps, zero-padded to 6; the class is the
    sign pattern of their mean."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(3):
        x = rng.standard_normal((BATCH, LENGTH, FEATURES))
        lengths = rng.integers(3, LENGTH + 1, BATCH)
        x[np.arange(LENGTH) >= lengths[:, None]] = 0.0  # the padding
        mean = x.sum(axis=1) / lengths[:, None]
        y = (mean[:, 0] > 0).astype(np.int64) + (mean[:, 1] > 0)
        out.append((x, y))
    return out
