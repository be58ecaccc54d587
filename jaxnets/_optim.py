"""optax transformations for the ``torch.optim`` rules optax has no exact twin of.

``adagrad``: ``torch.optim.Adagrad``. optax's ``adagrad`` differs from torch's in two places
that matter in a lockstep: it starts its accumulator at 0.1 (torch: 0), and it adds eps
*inside* the square root, ``g / sqrt(r + eps)`` (torch: ``g / (sqrt(r) + eps)``). Passing
``initial_accumulator_value=0`` fixes the first; nothing in optax fixes the second, and with
small gradients the two placements part by far more than rounding (tests/test_optimizers.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def scale_by_torch_adagrad(initial_accumulator_value=0.0, eps=1e-10):
    """``g / (sqrt(r) + eps)`` with ``r`` the running sum of squared gradients (torch's rule).

    The state is optax's own ``ScaleByRssState(sum_of_squares=...)``, so tools that look into
    an optax Adagrad state find the accumulator where they expect it.
    """

    def init_fn(params):
        return optax.ScaleByRssState(
            sum_of_squares=jax.tree.map(
                lambda p: jnp.full_like(p, initial_accumulator_value), params
            )
        )

    def update_fn(updates, state, params=None):
        del params
        sum_of_squares = jax.tree.map(lambda g, r: r + g * g, updates, state.sum_of_squares)
        updates = jax.tree.map(lambda g, r: g / (jnp.sqrt(r) + eps), updates, sum_of_squares)
        return updates, optax.ScaleByRssState(sum_of_squares=sum_of_squares)

    return optax.GradientTransformation(init_fn, update_fn)


def adagrad(lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    """``torch.optim.Adagrad(params, lr, lr_decay, weight_decay, initial_accumulator_value,
    eps)`` step for step: coupled weight decay first (added to the gradient), then the sum of
    squares, then the step ``lr / (1 + (t - 1) lr_decay)`` at torch's step ``t = 1, 2, ...``.
    """
    transforms = []
    if weight_decay:
        transforms.append(optax.add_decayed_weights(weight_decay))
    transforms.append(scale_by_torch_adagrad(initial_accumulator_value, eps))
    if lr_decay:
        # optax counts from 0: its count is torch's t - 1. float64 numbers: the count is int32,
        # and with Python floats the schedule would be evaluated in float32.
        lr, lr_decay = np.float64(lr), np.float64(lr_decay)
        transforms.append(optax.scale_by_schedule(lambda count: -lr / (1 + count * lr_decay)))
    else:
        transforms.append(optax.scale(-lr))
    return optax.chain(*transforms)
