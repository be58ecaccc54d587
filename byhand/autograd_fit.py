"""Fit y = w x^2 + b by hand in numpy: the lesson's own first version.

Lesson C (Wu Maogui, Python深度学习, ch. 2.6 "使用Numpy实现机器学习"; docs/LESSONS.md): squared
error summed and halved, its gradients derived on paper, plain gradient descent. The third
implementation beside ``torchref/autograd_fit.py`` (autograd, ch. 2.7) and
``jaxnets/autograd_fit.py`` (``jax.grad``); ``compare`` runs ``numpy_by_hand`` beside torch in
float64.
"""

import numpy as np


def fit_by_hand(w, b, x, y, lr, num_steps):
    """The descent of ch. 2.6, from ``w``, ``b``, ``num_steps`` full-batch steps.

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
    """``fit_by_hand`` from the common initial ``w``, ``b`` (torch's state dict), one
    full-batch step per entry of ``order``: what ``compare`` runs beside torch."""
    num_steps = sum(len(epoch) for epoch in order)
    w, b, losses = fit_by_hand(
        initial["w"], initial["b"], arrays["x"], arrays["y"], hp.lr, num_steps
    )
    return {"losses": losses, "state": {"w": w, "b": b}}
