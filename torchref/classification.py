"""Classification: two Gaussian clouds told apart by a one-hidden-layer net.

Lesson A (Morvan Zhou, PyTorch-Tutorial 302_classification.py, "区分类型 (分类)"; docs/LESSONS.md).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, n_feature, n_hidden, n_output):
        super().__init__()
        self.hidden = nn.Linear(n_feature, n_hidden)
        self.out = nn.Linear(n_hidden, n_output)

    def forward(self, x):
        x = F.relu(self.hidden(x))  # (batch, n_hidden)
        return self.out(x)  # (batch, n_output) logits, not probabilities


def new_model(hp):
    return Net(hp.n_feature, hp.n_hidden, hp.n_output)


def new_optimizer(model, hp):
    return torch.optim.SGD(model.parameters(), lr=hp.lr)


def loss_fn(model, x, y):
    # y holds class indices (batch,), not one-hot.
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
