"""Optimizers: SGD, momentum, RMSprop and Adam race on the same regression.

Lesson A (Morvan Zhou, PyTorch-Tutorial 306_optimizer.py, "优化器"; docs/LESSONS.md). Four copies of
one ``Net``, one optimizer each, trained on the same shuffled mini-batches.
"""

import torch
import torch.nn.functional as F
from torch import nn

OPTIMIZERS = ("SGD", "Momentum", "RMSprop", "Adam")


class Net(nn.Module):
    def __init__(self, n_hidden=20):
        super().__init__()
        self.hidden = nn.Linear(1, n_hidden)
        self.predict = nn.Linear(n_hidden, 1)

    def forward(self, x):
        x = F.relu(self.hidden(x))  # (batch, n_hidden)
        return self.predict(x)  # (batch, 1)


def new_model(hp):
    # The lesson's net_SGD, net_Momentum, ... as one dict: keys "SGD.hidden.weight", ...
    return nn.ModuleDict({name: Net(hp.n_hidden) for name in OPTIMIZERS})


def new_optimizer(nets, hp):
    return {
        "SGD": torch.optim.SGD(nets["SGD"].parameters(), lr=hp.lr),
        "Momentum": torch.optim.SGD(nets["Momentum"].parameters(), lr=hp.lr, momentum=hp.momentum),
        "RMSprop": torch.optim.RMSprop(nets["RMSprop"].parameters(), lr=hp.lr, alpha=hp.alpha),
        "Adam": torch.optim.Adam(nets["Adam"].parameters(), lr=hp.lr, betas=hp.betas),
    }


def mse(net, x, y):
    return F.mse_loss(net(x), y)


def loss_fn(nets, x, y):
    # The nets share nothing, so the gradient of the sum is each net's own gradient.
    return sum(mse(net, x, y) for net in nets.values())


def train_step(nets, optimizers, x, y):
    losses = []
    for name in OPTIMIZERS:
        loss = mse(nets[name], x, y)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        losses.append(loss.detach())
    return torch.stack(losses)  # (4,) in OPTIMIZERS order


@torch.no_grad()
def predict(nets, x):
    return torch.stack([nets[name](x) for name in OPTIMIZERS])  # (4, batch, 1)
