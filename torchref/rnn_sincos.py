"""An RNN that reads sin and predicts cos, its hidden state carried from step to step.

Lesson E (Morvan Zhou, PyTorch-Tutorial 403_RNN_regressor.py, "RNN 循环神经网络 (回归)";
docs/LESSONS.md): ``RNN`` with ``rnn`` RNN(1, 32, tanh, batch_first) and ``out`` Linear(32, 1)
applied at every time step. Step k reads sin at 10 points of linspace(k pi, (k + 1) pi) and predicts
cos there; Adam lr 0.02, MSE, 100 steps. The hidden state of one step is the initial state of the
next, cut from the graph (``h_state = h_state.data``): truncated backpropagation through time.
"""

import torch
import torch.nn.functional as F
from torch import nn


class RNN(nn.Module):
    def __init__(self, hidden_size=32):
        super().__init__()
        self.rnn = nn.RNN(input_size=1, hidden_size=hidden_size, num_layers=1, batch_first=True)
        self.out = nn.Linear(hidden_size, 1)
        self.h_state = None  # carried by train_step; a plain attribute, not in the state dict

    def forward(self, x, h_state=None):
        # x (batch, time_step, 1); h_state (n_layers, batch, hidden_size), None for zeros
        r_out, h_state = self.rnn(x, h_state)  # r_out (batch, time_step, hidden_size)
        outs = [self.out(r_out[:, t, :]) for t in range(r_out.size(1))]  # the lesson's loop
        return torch.stack(outs, dim=1), h_state  # (batch, time_step, 1), (1, batch, hidden)


def new_model(hp):
    return RNN(hp.hidden_size)


def new_optimizer(model, hp):
    return torch.optim.Adam(model.parameters(), lr=hp.lr)


def loss_fn(model, x, y):
    """The loss from a zero hidden state (the first step's); ``train_step`` carries it on."""
    prediction, _ = model(x)
    return F.mse_loss(prediction, y)


def train_step(model, optimizer, x, y):
    prediction, h_state = model(x, model.h_state)
    model.h_state = h_state.detach()  # the lesson's h_state.data: the value goes on, no graph
    loss = F.mse_loss(prediction, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def predict(model, x):
    """cos predicted for every row of ``x`` ``(steps, time_step, 1)``, read as one sequence
    from a zero state, as training reads them."""
    prediction, _ = model(x.reshape(1, -1, 1))  # (1, steps * time_step, 1)
    return prediction.reshape(x.shape)
