"""Regularisation on the house prices: one net trained plain, with L2, with dropout, with BN.

Lesson G (Wu Maogui, Python深度学习, ch. 5.3: 5.3.1 weight decay, 5.3.2 dropout, 5.3.3 batch
normalisation; the net is the lesson's ``Net1`` of ch. 5.7.2; docs/LESSONS.md). ``layer1``
Linear(12, 16), ``layer2`` Linear(16, 32), ``layer3`` Linear(32, 1), each in a ``Sequential``, ReLU
after the first two (12 inputs: the B column is dropped,
compare/tutorials/datasets/housing/README.md). Four variants start from the same weights and train
side by side on the same mini-batches: ``plain``; ``L2``, torch's ``weight_decay`` (the chapter's
lambda: L2 added to the gradient); ``dropout``, an ``nn.Dropout`` after ``layer1`` and after
``layer2`` (the lesson's "two dropouts"); ``batchnorm``, a ``BatchNorm1d`` in ``layer1`` and
``layer2`` before the ReLU, as ch. 5.3.3 places it. MSE, Adam lr 0.01, batch 27, 200 epochs: the
lesson's code is lost, so its optimizer and schedule are not known; these are this project's choice
(compare/tutorials/registry.py).
"""

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("plain", "L2", "dropout", "batchnorm")


class Net1(nn.Module):
    def __init__(self, in_dim, n_hidden_1, n_hidden_2, out_dim, dropout=0.0, batch_norm=False):
        super().__init__()
        # BatchNorm subtracts the batch mean, so a bias before it does nothing: it is left out
        # (bias=False; under Adam it would wander on rounding noise, docs/PORTING.md)
        bias = not batch_norm
        norm1 = (nn.BatchNorm1d(n_hidden_1),) if batch_norm else ()
        norm2 = (nn.BatchNorm1d(n_hidden_2),) if batch_norm else ()
        self.layer1 = nn.Sequential(nn.Linear(in_dim, n_hidden_1, bias=bias), *norm1)
        self.layer2 = nn.Sequential(nn.Linear(n_hidden_1, n_hidden_2, bias=bias), *norm2)
        self.layer3 = nn.Sequential(nn.Linear(n_hidden_2, out_dim))
        self.dropout = nn.Dropout(dropout)  # p = 0: passes everything (the other variants)

    def forward(self, x, masks=None):
        """``masks``: ``{"layer1": (batch, n_hidden_1), "layer2": ...}`` to multiply by in
        place of the dropout's own draw (compare hands both sides the same in lockstep)."""
        x = self.layer1(x)  # (batch, n_hidden_1)
        x = F.relu(self.dropout(x) if masks is None else x * masks["layer1"])
        x = self.layer2(x)  # (batch, n_hidden_2)
        x = F.relu(self.dropout(x) if masks is None else x * masks["layer2"])
        return self.layer3(x)  # (batch, out_dim)


def new_model(hp):
    def net(**kwargs):
        return Net1(hp.in_dim, hp.n_hidden_1, hp.n_hidden_2, hp.out_dim, **kwargs)

    nets = nn.ModuleDict(
        {
            "plain": net(),
            "L2": net(),
            "dropout": net(dropout=hp.dropout),
            "batchnorm": net(batch_norm=True),
        }
    )
    # one start for all four: the plain net's Linears (BatchNorm starts at its defaults)
    with torch.no_grad():
        for name in VARIANTS[1:]:
            for layer in ("layer1", "layer2", "layer3"):
                source, target = getattr(nets["plain"], layer)[0], getattr(nets[name], layer)[0]
                target.weight.copy_(source.weight)
                if target.bias is not None:
                    target.bias.copy_(source.bias)
    return nets


def new_optimizer(nets, hp):
    return {
        name: torch.optim.Adam(
            nets[name].parameters(), lr=hp.lr, weight_decay=hp.weight_decay if name == "L2" else 0
        )
        for name in VARIANTS
    }


def losses(nets, x, y, noise=None):
    """Each variant's MSE, in VARIANTS order; ``noise`` holds the dropout net's masks."""
    return torch.stack(
        [F.mse_loss(nets[name](x, noise if name == "dropout" else None), y) for name in VARIANTS]
    )


def loss_fn(nets, x, y, noise=None):
    # The nets share nothing, so the gradient of the sum is each net's own gradient.
    return losses(nets, x, y, noise).sum()


def train_step(nets, optimizers, x, y, noise=None):
    step_losses = []
    for name in VARIANTS:
        loss = F.mse_loss(nets[name](x, noise if name == "dropout" else None), y)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        step_losses.append(loss.detach())
    return torch.stack(step_losses)  # (4,) in VARIANTS order


@torch.no_grad()
def predict(nets, x):
    return torch.cat([nets[name](x) for name in VARIANTS], dim=1)  # (batch, 4): a column each
