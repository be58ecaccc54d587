"""MNIST with two convolutions and max pooling.

Lesson D (Liu Er, PyTorch深度学习实践, lecture 10 "卷积神经网络（基础篇）"; docs/LESSONS.md):
``conv1`` Conv2d(1, 10, 5), ``conv2`` Conv2d(10, 20, 5), ``pooling`` MaxPool2d(2), ``fc``
Linear(320, 10); relu(pool(conv(x))) twice, flatten, fc. Trained like ``mnist_mlp``.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.pooling = nn.MaxPool2d(2)
        self.fc = nn.Linear(320, 10)

    def forward(self, x):
        batch_size = x.size(0)
        x = F.relu(self.pooling(self.conv1(x)))  # (batch, 10, 12, 12)
        x = F.relu(self.pooling(self.conv2(x)))  # (batch, 20, 4, 4)
        x = x.view(batch_size, -1)  # (batch, 320), channel-major
        return self.fc(x)  # (batch, 10) logits


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
