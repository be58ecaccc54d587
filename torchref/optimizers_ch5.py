"""The chapter's optimizers: SGD, momentum, NAG, AdaGrad, RMSProp and Adam on one regression.

Lesson G (Wu Maogui, Python深度学习, ch. 5.6, the pseudo-code of 5.6.1-5.6.5; docs/LESSONS.md) on
lesson A's noisy parabola (1,000 points: the pseudo-code's m = 1000, batch_size = 10), with lesson
A's ``Net``. Six copies of one net, from the same weights, one ``torch.optim`` optimizer each, on
the same mini-batches; lr 0.01 for all, torch's default decay rates and eps (the chapter names
none), 12 epochs. The chapter's pseudo-code itself, in numpy with gradients derived on paper (as
ch. 2.6 does), is the third implementation: ``byhand/optimizers_ch5.py``.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

OPTIMIZERS = ("SGD", "Momentum", "NAG", "AdaGrad", "RMSProp", "Adam")


class Net(nn.Module):
    def __init__(self, n_hidden=20):
        super().__init__()
        self.hidden = nn.Linear(1, n_hidden)
        self.predict = nn.Linear(n_hidden, 1)

    def forward(self, x):
        x = F.relu(self.hidden(x))  # (batch, n_hidden)
        return self.predict(x)  # (batch, 1)


def new_model(hp):
    # One start for all six: keys "SGD.hidden.weight", ...
    net = Net(hp.n_hidden)
    return nn.ModuleDict({name: copy.deepcopy(net) for name in OPTIMIZERS})


def new_optimizer(nets, hp):
    def params(name):
        return nets[name].parameters()

    return {
        "SGD": torch.optim.SGD(params("SGD"), lr=hp.lr),
        "Momentum": torch.optim.SGD(params("Momentum"), lr=hp.lr, momentum=hp.momentum),
        "NAG": torch.optim.SGD(params("NAG"), lr=hp.lr, momentum=hp.momentum, nesterov=True),
        "AdaGrad": torch.optim.Adagrad(params("AdaGrad"), lr=hp.lr),
        "RMSProp": torch.optim.RMSprop(params("RMSProp"), lr=hp.lr, alpha=hp.alpha),
        "Adam": torch.optim.Adam(params("Adam"), lr=hp.lr, betas=hp.betas),
    }


def mse(net, x, y):
    return F.mse_loss(net(x), y)


def loss_fn(nets, x, y):
    # The nets share nothing, so the gradient of the sum is each net's own gradient.
    return sum(mse(net, x, y) for net in nets.values())


def train_step(nets, optimizers, x, y):
    losses = []
    for name in OPTIMIZERS:
        loss = mse(nets[name], x, y)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        losses.append(loss.detach())
    return torch.stack(losses)  # (6,) in OPTIMIZERS order


@torch.no_grad()
def predict(nets, x):
    return torch.stack([nets[name](x) for name in OPTIMIZERS])  # (6, batch, 1)
