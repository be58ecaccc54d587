"""The chapter's optimizers as its pseudo-code: SGD, momentum, NAG, AdaGrad, RMSProp, Adam in numpy.

Lesson G (Wu Maogui, Python深度学习, ch. 5.6, the pseudo-code of 5.6.1-5.6.5; docs/LESSONS.md),
the third implementation beside ``torchref/optimizers_ch5.py`` (``torch.optim``) and
``jaxnets/optimizers_ch5.py`` (optax): each rule written out as the chapter writes it, on lesson
A's ``Net`` with its gradients derived on paper (as ch. 2.6 does). The chapter's names:
lambda = lr, alpha = momentum, rho = alpha (RMSProp), rho_1, rho_2 = betas, delta = its small
constant (1e-7). ``compare`` runs ``numpy_by_hand`` beside torch in float64 and reports how far
each rule is from ``torch.optim`` (``NOTES`` says why).
"""

import numpy as np

# Where each rule parts from torch.optim, measured in float64 by ``compare`` (run's
# ``numpy_by_hand``) and tests/test_optimizers_ch5.py
NOTES = {
    "SGD": "theta <- theta - lambda g is torch's SGD: rounding only",
    "Momentum": "v <- alpha v - lambda g, theta <- theta + v is torch's b <- mu b + g, "
    "theta <- theta - lr b with v = -lr b: rounding only",
    "NAG": "the chapter keeps theta and takes the gradient at theta + alpha v; torch (and "
    "optax) keep that look-ahead point as the parameters: the same losses, the parameters "
    "apart by alpha v",
    "AdaGrad": "delta 1e-7 (the chapter's example) where torch's eps is 1e-10, both outside "
    "the root",
    "RMSProp": "delta 1e-7 outside the root where torch's eps is 1e-8 (outside too; optax's "
    "default puts it inside)",
    "Adam": "delta 1e-7 where torch's eps is 1e-8; the pseudo-code's stray 'r <- rho r + "
    "(1 - rho) g g' after the bias corrections (RMSProp's line, rho undefined) is left out",
}


def grads_by_hand(params, x, y):
    """The net's MSE and its gradients, derived on paper (ch. 2.6's way)."""
    pre = x @ params["hidden.weight"].T + params["hidden.bias"]  # (batch, n_hidden)
    h = np.maximum(pre, 0.0)
    out = h @ params["predict.weight"].T + params["predict.bias"]  # (batch, 1)
    error = out - y
    d_out = 2 * error / error.size  # d mean((out - y)^2) / d out
    d_pre = (d_out @ params["predict.weight"]) * (pre > 0)  # relu'(0) = 0, as torch's
    grads = {
        "predict.weight": d_out.T @ h,
        "predict.bias": d_out.sum(axis=0),
        "hidden.weight": d_pre.T @ x,
        "hidden.bias": d_pre.sum(axis=0),
    }
    return np.mean(error**2), grads


def step_by_hand(name, params, state, x, y, hp):
    """One step of the chapter's rule ``name`` on ``params`` (updated in place); ``state``
    holds its v, r, s, t. Returns the loss it took its gradient of."""
    lr, alpha, delta = hp.lr, hp.momentum, hp.delta
    if name == "NAG":  # the gradient at the look-ahead point theta~ = theta + alpha v
        ahead = {k: p + alpha * state["v"][k] for k, p in params.items()}
        loss, grads = grads_by_hand(ahead, x, y)
    else:
        loss, grads = grads_by_hand(params, x, y)
    state["t"] = state.get("t", 0) + 1
    for k, g in grads.items():
        if name == "SGD":
            params[k] = params[k] - lr * g
        elif name in ("Momentum", "NAG"):
            state["v"][k] = alpha * state["v"][k] - lr * g
            params[k] = params[k] + state["v"][k]
        elif name == "AdaGrad":
            state["r"][k] = state["r"][k] + g * g
            params[k] = params[k] - lr / (delta + np.sqrt(state["r"][k])) * g
        elif name == "RMSProp":
            state["r"][k] = hp.alpha * state["r"][k] + (1 - hp.alpha) * g * g
            params[k] = params[k] - lr / (delta + np.sqrt(state["r"][k])) * g
        elif name == "Adam":
            rho_1, rho_2 = hp.betas
            state["s"][k] = rho_1 * state["s"][k] + (1 - rho_1) * g
            state["r"][k] = rho_2 * state["r"][k] + (1 - rho_2) * g * g
            s_hat = state["s"][k] / (1 - rho_1 ** state["t"])
            r_hat = state["r"][k] / (1 - rho_2 ** state["t"])
            params[k] = params[k] - lr * s_hat / (delta + np.sqrt(r_hat))
        else:
            raise ValueError(f"no pseudo-code for {name!r}")
    return loss


def numpy_by_hand(initial, arrays, hp, order):
    """Every optimizer's pseudo-code from the common ``initial`` state dict (torch's keys,
    ``"SGD.hidden.weight"``...: one net per optimizer, in that order) over the batches of
    ``order``; what ``compare`` runs beside torch. Returns each step's losses ``(steps, 6)``,
    the final state dict and ``NOTES``."""
    x, y = np.asarray(arrays["x"], np.float64), np.asarray(arrays["y"], np.float64)
    losses, final = [], {}
    for name in dict.fromkeys(key.split(".")[0] for key in initial):
        params = {
            k[len(name) + 1 :]: v.copy() for k, v in initial.items() if k.startswith(f"{name}.")
        }
        zeros = {k: np.zeros_like(p) for k, p in params.items()}
        state = {"v": dict(zeros), "r": dict(zeros), "s": dict(zeros)}
        losses.append(
            [
                step_by_hand(name, params, state, x[idx], y[idx], hp)
                for epoch in order
                for idx in epoch
            ]
        )
        final.update({f"{name}.{k}": p for k, p in params.items()})
    return {"losses": np.array(losses).T, "state": final, "notes": NOTES}
