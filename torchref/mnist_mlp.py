"""MNIST with a five-layer perceptron.

Lesson D (Liu Er, PyTorch深度学习实践, lecture 9 "多分类问题"; docs/LESSONS.md): ``Model`` with
``linear1..linear5`` 784-512-256-128-64-10, ReLU, CrossEntropyLoss, SGD lr 0.01 momentum 0.5, batch
64, 10 epochs, ``Normalize((0.1307,), (0.3081,))``.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(784, 512)
        self.linear2 = nn.Linear(512, 256)
        self.linear3 = nn.Linear(256, 128)
        self.linear4 = nn.Linear(128, 64)
        self.linear5 = nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(-1, 784)  # (batch, 1, 28, 28) -> (batch, 784)
        x = F.relu(self.linear1(x))  # (batch, 512)
        x = F.relu(self.linear2(x))  # (batch, 256)
        x = F.relu(self.linear3(x))  # (batch, 128)
        x = F.relu(self.linear4(x))  # (batch, 64)
        return self.linear5(x)  # (batch, 10) logits


def new_model(hp):
    return Model()


def new_optimizer(model, hp):
    return torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum)


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
