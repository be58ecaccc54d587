"""Fit y = w x^2 + b with torch autograd, and by hand in numpy.

Lesson C (Wu Maogui, Python深度学习, ch. 2.6 "使用Numpy实现机器学习" and 2.7 "使用Tensor及autograd";
docs/LESSONS.md): squared error summed and halved, plain gradient descent written out by hand (no
torch.optim). ``loss.backward()`` fills ``w.grad`` and ``b.grad``; the JAX twin uses ``jax.grad``.
The lesson's numpy version (ch. 2.6, gradients derived on paper) is ``fit_by_hand`` below: the
third implementation.
"""

import numpy as np
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


def fit_by_hand(w, b, x, y, lr, num_steps):
    """Chapter 2.6: the same descent in numpy with the gradients derived on paper.

    Returns the final ``w``, ``b`` and the loss before every step.
    """
    w, b = np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)
    losses = []
    for _ in range(num_steps):
        y_pred = np.power(x, 2) @ w + b  # (batch, 1)
        losses.append(0.5 * np.sum((y_pred - y) ** 2))
        grad_w = np.power(x, 2).T @ (y_pred - y)  # d loss / d w = sum((y_pred - y) * x^2)
        grad_b = np.sum(y_pred - y, keepdims=True)  # d loss / d b = sum(y_pred - y)
        w = w - lr * grad_w
        b = b - lr * grad_b
    return w, b, np.array(losses)


def numpy_by_hand(initial, arrays, hp, order):
    """``fit_by_hand`` from the common initial ``w``, ``b``, one full-batch step per entry of
    ``order``: the hook through which ``compare`` runs the third implementation."""
    num_steps = sum(len(epoch) for epoch in order)
    w, b, losses = fit_by_hand(
        initial["w"], initial["b"], arrays["x"], arrays["y"], hp.lr, num_steps
    )
    return {"losses": losses, "state": {"w": w, "b": b}}
