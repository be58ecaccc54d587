"""The lesson's multi-GPU example: ``Net1`` on the house prices, each batch split over devices.

Lesson G (Wu Maogui, Python深度学习, ch. 5.7.2; docs/LESSONS.md): ``Net1`` with ``layer1``
Linear(12, 16), ``layer2`` Linear(16, 32), ``layer3`` Linear(32, 1), each in a ``Sequential``,
ReLU after the first two (12 inputs: the B column is dropped,
compare/tutorials/datasets/housing/README.md); batch 128, shuffled. The lesson wraps it in
``nn.DataParallel`` on two GPUs, which cuts every batch of 128 into 64 + 64; this project trains
it with ``DistributedDataParallel`` (one process per device, ``compare/parallel/``), the lesson's
"faster and better" alternative. This file is the single-device tutorial: the data-parallel run
wraps this very model and step. The lesson's optimizer and loss are lost with its code: Adam lr
0.01 and MSE, as ``housing_regularization`` (compare/tutorials/registry.py).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Net1(nn.Module):
    def __init__(self, in_dim, n_hidden_1, n_hidden_2, out_dim):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(in_dim, n_hidden_1))
        self.layer2 = nn.Sequential(nn.Linear(n_hidden_1, n_hidden_2))
        self.layer3 = nn.Sequential(nn.Linear(n_hidden_2, out_dim))

    def forward(self, x):
        x = F.relu(self.layer1(x))  # (batch, n_hidden_1); batch: this device's slice
        x = F.relu(self.layer2(x))  # (batch, n_hidden_2)
        return self.layer3(x)  # (batch, out_dim)


def new_model(hp):
    return Net1(hp.in_dim, hp.n_hidden_1, hp.n_hidden_2, hp.out_dim)


def new_optimizer(model, hp):
    return torch.optim.Adam(model.parameters(), lr=hp.lr)


def loss_fn(model, x, y):
    return F.mse_loss(model(x), y)


def train_step(model, optimizer, x, y):
    loss = loss_fn(model, x, y)
    optimizer.zero_grad()
    loss.backward()  # in DistributedDataParallel: the gradients are all-reduced here
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def predict(model, x):
    return model(x)  # (batch, 1)
