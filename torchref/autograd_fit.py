"""Fit y = w x^2 + b with torch autograd.

Lesson C (Wu Maogui, Python深度学习, ch. 2.6 "使用Numpy实现机器学习" and 2.7 "使用Tensor及autograd";
docs/LESSONS.md): squared error summed and halved, plain gradient descent written out by hand (no
torch.optim). ``loss.backward()`` fills ``w.grad`` and ``b.grad``; the JAX twin uses ``jax.grad``.
The lesson's numpy version (ch. 2.6, gradients derived on paper) is the third implementation:
``byhand/autograd_fit.py``.
"""

import torch
from torch import nn


class Quadratic(nn.Module):
    """The lesson's tensors ``w`` (randn) and ``b`` (zeros), held by a Module for its state dict."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 1))
        self.b = nn.Parameter(torch.zeros(1, 1))

    def forward(self, x):
        return x.pow(2).mm(self.w) + self.b  # (batch, 1)


def new_model(hp):
    return Quadratic()


def new_optimizer(model, hp):
    # No optimizer object: the lesson steps the parameters by hand, so all it needs is lr.
    return hp.lr


def loss_fn(model, x, y):
    return 0.5 * ((model(x) - y) ** 2).sum()


def train_step(model, lr, x, y):
    loss = loss_fn(model, x, y)
    loss.backward()  # fills w.grad and b.grad
    with torch.no_grad():
        for param in model.parameters():
            param -= lr * param.grad
            param.grad.zero_()
    return loss.detach()


@torch.no_grad()
def predict(model, x):
    return model(x)
