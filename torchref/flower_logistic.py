"""Logistic regression on the two-petal "flower" data (it cannot separate them).

Lesson B (Liao Xingyu, 深度学习入门之PyTorch, ch. 3: logistic regression to a two-layer net;
docs/LESSONS.md): ``w = randn(2, 1)``, ``b = 0``, ``logistic_regression(x) = x @ w + b``,
BCEWithLogitsLoss, SGD lr 0.1.
"""

import torch
import torch.nn.functional as F
from torch import nn


class LogisticRegression(nn.Module):
    """The lesson's raw parameters ``w`` and ``b``, held by a Module so they have a state dict."""

    def __init__(self, n_feature=2):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_feature, 1))
        self.b = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.mm(x, self.w) + self.b  # (batch, 1) logits


def new_model(hp):
    return LogisticRegression(hp.n_feature)


def new_optimizer(model, hp):
    return torch.optim.SGD(model.parameters(), lr=hp.lr)


def loss_fn(model, x, y):
    return F.binary_cross_entropy_with_logits(model(x), y)


def train_step(model, optimizer, x, y):
    loss = loss_fn(model, x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def predict(model, x):
    # sigmoid(logit) > 0.5 exactly when logit > 0
    return (model(x) > 0).long()  # (batch, 1)
