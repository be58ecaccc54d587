"""MNIST with a three-layer net and batch normalisation, learning rate cut every 5 epochs.

Lesson D (Wu Maogui, Python深度学习, ch. 3.2 and 3.7; docs/LESSONS.md): ``Net(784, 300, 100, 10)``,
``layer1`` and ``layer2`` Sequential(Linear, BatchNorm1d), ``layer3`` Sequential(Linear), ReLU after
the first two; SGD lr 0.01 momentum 0.5, batch 64, 20 epochs, ``Normalize([0.5], [0.5])``. The loop
flattens each image to 784 before the model (done once in compare/tutorials/data.py here), and
"dynamically" cuts the learning rate: ``if epoch % 5 == 0: optimizer.param_groups[0]["lr"] *= 0.1``
at the start of every epoch, so already the first epoch trains at 0.001.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, in_dim, n_hidden_1, n_hidden_2, out_dim):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(in_dim, n_hidden_1), nn.BatchNorm1d(n_hidden_1))
        self.layer2 = nn.Sequential(nn.Linear(n_hidden_1, n_hidden_2), nn.BatchNorm1d(n_hidden_2))
        self.layer3 = nn.Sequential(nn.Linear(n_hidden_2, out_dim))

    def forward(self, x):
        x = F.relu(self.layer1(x))  # (batch, n_hidden_1)
        x = F.relu(self.layer2(x))  # (batch, n_hidden_2)
        return self.layer3(x)  # (batch, out_dim) logits


def new_model(hp):
    return Net(hp.in_dim, hp.n_hidden_1, hp.n_hidden_2, hp.out_dim)


def new_optimizer(model, hp):
    return torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum)


def start_epoch(optimizer, epoch, hp):
    """The lesson's dynamic learning rate, run before each epoch."""
    if epoch % hp.lr_every == 0:
        optimizer.param_groups[0]["lr"] *= hp.lr_gamma


def loss_fn(model, x, y):
    return F.cross_entropy(model(x), y)


def train_step(model, optimizer, x, y):
    loss = loss_fn(model, x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def predict(model, x):
    return model(x).argmax(dim=1)
