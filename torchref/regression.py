"""Regression: fit y = x^2 + noise with a one-hidden-layer net.

Lesson A (Morvan Zhou, PyTorch-Tutorial 301_regression.py, "关系拟合 (回归)"; the quick build:
303_build_nn_quickly.py; docs/LESSONS.md).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, n_feature, n_hidden, n_output):
        super().__init__()
        self.hidden = nn.Linear(n_feature, n_hidden)
        self.predict = nn.Linear(n_hidden, n_output)

    def forward(self, x):
        x = F.relu(self.hidden(x))  # (batch, n_hidden)
        return self.predict(x)  # (batch, n_output)


def quick_net(n_feature, n_hidden, n_output):
    """The lesson's "quick build": the same function as ``Net``, keys ``0.*`` and ``2.*``."""
    return nn.Sequential(nn.Linear(n_feature, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_output))


def new_model(hp):
    return Net(hp.n_feature, hp.n_hidden, hp.n_output)


def new_optimizer(model, hp):
    return torch.optim.SGD(model.parameters(), lr=hp.lr)


def loss_fn(model, x, y):
    return F.mse_loss(model(x), y)


def train_step(model, optimizer, x, y):
    loss = loss_fn(model, x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def predict(model, x):
    return model(x)
