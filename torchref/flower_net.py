"""A two-layer tanh net on the "flower" data (it separates the petals).

Lesson B (Liao Xingyu, 深度学习入门之PyTorch, ch. 3: logistic regression to a two-layer net;
docs/LESSONS.md). The lesson writes the same 2 -> 4 tanh -> 1 net three ways: raw parameters
(``two_network``), ``nn.Sequential`` (``seq_net``) and an ``nn.Module`` (``module_net``, whose state
dict it saves). All three are here; the Module is the one the task trains.
"""

import torch
import torch.nn.functional as F
from torch import nn


class TwoNetwork(nn.Module):
    """The lesson's ``two_network``: raw ``w1, b1, w2, b2``, small random weights."""

    def __init__(self, n_input=2, n_hidden=4, n_output=1):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(n_input, n_hidden) * 0.01)
        self.b1 = nn.Parameter(torch.zeros(n_hidden))
        self.w2 = nn.Parameter(torch.randn(n_hidden, n_output) * 0.01)
        self.b2 = nn.Parameter(torch.zeros(n_output))

    def forward(self, x):
        x1 = torch.tanh(torch.mm(x, self.w1) + self.b1)  # (batch, n_hidden)
        return torch.mm(x1, self.w2) + self.b2  # (batch, n_output) logits


def seq_net(n_input=2, n_hidden=4, n_output=1):
    """The lesson's ``seq_net``: keys ``0.weight``, ``0.bias``, ``2.weight``, ``2.bias``."""
    return nn.Sequential(nn.Linear(n_input, n_hidden), nn.Tanh(), nn.Linear(n_hidden, n_output))


class ModuleNet(nn.Module):
    """The lesson's ``module_net``: ``layer1``, ``layer2`` (the tanh), ``layer3``."""

    def __init__(self, num_input, num_hidden, num_output):
        super().__init__()
        self.layer1 = nn.Linear(num_input, num_hidden)
        self.layer2 = nn.Tanh()
        self.layer3 = nn.Linear(num_hidden, num_output)

    def forward(self, x):
        x = self.layer1(x)  # (batch, num_hidden)
        x = self.layer2(x)
        return self.layer3(x)  # (batch, num_output) logits


def new_model(hp):
    return ModuleNet(hp.n_input, hp.n_hidden, hp.n_output)


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
    return (model(x) > 0).long()  # (batch, 1): sigmoid(logit) > 0.5
