"""MNIST read row by row by an LSTM.

Lesson E (Morvan Zhou, PyTorch-Tutorial 402_RNN_classifier.py, "RNN 循环神经网络 (分类)";
docs/LESSONS.md): ``RNN`` with ``rnn`` LSTM(28, 64, one layer, batch_first) and ``out`` Linear(64,
10) on the last time step. Each 28x28 image is 28 time steps of 28 pixels in [0, 1] (``ToTensor()``
only); Adam lr 0.01, batch 64, one epoch, CrossEntropyLoss; tested on the first 2000 test images.
"""

import torch
import torch.nn.functional as F
from torch import nn


class RNN(nn.Module):
    def __init__(self, input_size=28, hidden_size=64):
        super().__init__()
        self.rnn = nn.LSTM(
            input_size=input_size, hidden_size=hidden_size, num_layers=1, batch_first=True
        )
        self.out = nn.Linear(hidden_size, 10)

    def forward(self, x):
        x = x.view(-1, 28, 28)  # (batch, 1, 28, 28) -> (batch, time_step 28, input_size 28)
        r_out, (h_n, h_c) = self.rnn(x, None)  # None: zero initial state; (batch, 28, 64)
        return self.out(r_out[:, -1, :])  # (batch, 10) logits from the last time step


def new_model(hp):
    return RNN(hp.input_size, hp.hidden_size)


def new_optimizer(model, hp):
    return torch.optim.Adam(model.parameters(), lr=hp.lr)


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
