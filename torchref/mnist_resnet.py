"""MNIST with a small residual network.

Lesson D (Liu Er, PyTorch深度学习实践, lecture 11 "卷积神经网络（高级篇）", the course's standard
code; docs/LESSONS.md): ``conv1`` Conv2d(1, 16, 5), ``conv2`` Conv2d(16, 32, 5), ``mp``
MaxPool2d(2), ``rblock1`` ResidualBlock(16), ``rblock2`` ResidualBlock(32), ``fc`` Linear(512, 10).
Trained like ``mnist_mlp``.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x):
        y = F.relu(self.conv1(x))  # (batch, channels, h, w)
        y = self.conv2(y)
        return F.relu(x + y)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.mp = nn.MaxPool2d(2)
        self.rblock1 = ResidualBlock(16)
        self.rblock2 = ResidualBlock(32)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        in_size = x.size(0)
        x = self.mp(F.relu(self.conv1(x)))  # (batch, 16, 12, 12)
        x = self.rblock1(x)
        x = self.mp(F.relu(self.conv2(x)))  # (batch, 32, 4, 4)
        x = self.rblock2(x)
        x = x.view(in_size, -1)  # (batch, 512), channel-major
        return self.fc(x)  # (batch, 10) logits


def new_model(hp):
    return Net()


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
