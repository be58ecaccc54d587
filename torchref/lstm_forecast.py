"""Forecasting a time series with an LSTM: each value from the 30 before it.

Lesson E (Wu Maogui, Python深度学习, ch. 7.8; docs/LESSONS.md): the lesson read daily highs of the
CSI 300 index from a web API; here the shipped weekly Mauna Loa CO2 series
(compare/tutorials/datasets/co2/README.md), normalised by its mean and std. ``RNN`` with ``rnn``
LSTM(1, 64, batch_first) over the 30-value window and ``out`` Linear(64, 1) on its last step; MSE,
Adam, batch 20, windows in order (the lesson's DataLoader does not shuffle); trained on the head of
the series, tested on its tail.
"""

import torch
import torch.nn.functional as F
from torch import nn


class RNN(nn.Module):
    def __init__(self, hidden_size=64):
        super().__init__()
        self.rnn = nn.LSTM(input_size=1, hidden_size=hidden_size, num_layers=1, batch_first=True)
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, x):
        # x (batch, window 30, 1): the 30 values before the one to predict
        r_out, (h_n, h_c) = self.rnn(x, None)  # (batch, 30, hidden_size)
        return self.out(r_out[:, -1, :])  # (batch, 1): the next value


def new_model(hp):
    return RNN(hp.hidden_size)


def new_optimizer(model, hp):
    return torch.optim.Adam(model.parameters(), lr=hp.lr)


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
