"""optax transformations for the ``torch.optim`` rules optax has no exact twin of.

``adagrad``: ``torch.optim.Adagrad``. optax's ``adagrad`` differs from torch's in two places
that matter in a lockstep: it starts its accumulator at 0.1 (torch: 0), and it adds eps
*inside* the square root, ``g / sqrt(r + eps)`` (torch: ``g / (sqrt(r) + eps)``). Passing
``initial_accumulator_value=0`` fixes the first; nothing in optax fixes the second, and with
small gradients the two placements part by far more than rounding (tests/test_optax_twins.py).

``scale_by_torch_momentum``: SGD's momentum with torch's ``dampening`` (optax's ``trace`` has
none). ``scale_by_torch_amsgrad``: Adam's ``amsgrad`` as torch computes it (the maximum of the
raw second moment, not of the bias-corrected one). ``compare.optim.to_optax`` builds every
``torch.optim`` optimizer it translates from these and from optax's own transforms.
"""

from typing import NamedTuple

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
    ``lr`` may be an optax schedule (a torch scheduler's learning rate, step by step).
    """
    transforms = []
    if weight_decay:
        transforms.append(optax.add_decayed_weights(weight_decay))
    transforms.append(scale_by_torch_adagrad(initial_accumulator_value, eps))
    if lr_decay or callable(lr):
        # optax counts from 0: its count is torch's t - 1. float64 numbers: the count is int32,
        # and with Python floats the schedule would be evaluated in float32.
        rate = lr if callable(lr) else optax.constant_schedule(np.float64(lr))
        lr_decay = np.float64(lr_decay)
        transforms.append(
            optax.scale_by_schedule(lambda count: -rate(count) / (1 + count * lr_decay))
        )
    else:
        transforms.append(optax.scale(-lr))
    return optax.chain(*transforms)


class TorchMomentumState(NamedTuple):
    """SGD's ``momentum_buffer`` (torch's name), and a count to tell the first step."""

    count: jax.Array
    momentum_buffer: optax.Updates


def scale_by_torch_momentum(momentum, dampening=0.0, nesterov=False):
    """``torch.optim.SGD``'s momentum with ``dampening``: the buffer starts as the first
    gradient itself (undamped), then ``buf = momentum * buf + (1 - dampening) * g``; nesterov
    steps along ``g + momentum * buf``. With dampening 0 this is ``optax.trace`` (which the
    translation uses then); optax has no dampening.
    """

    def init_fn(params):
        return TorchMomentumState(
            count=jnp.zeros([], jnp.int32), momentum_buffer=optax.tree.zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0
        buffer = jax.tree.map(
            lambda g, b: jnp.where(first, g, momentum * b + (1 - dampening) * g),
            updates,
            state.momentum_buffer,
        )
        if nesterov:
            updates = jax.tree.map(lambda g, b: g + momentum * b, updates, buffer)
        else:
            updates = buffer
        return updates, TorchMomentumState(
            count=optax.safe_increment(state.count), momentum_buffer=buffer
        )

    return optax.GradientTransformation(init_fn, update_fn)


class TorchAmsgradState(NamedTuple):
    """Adam's state with ``amsgrad=True``, in torch's names."""

    count: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    max_exp_avg_sq: optax.Updates


def scale_by_torch_amsgrad(b1=0.9, b2=0.999, eps=1e-8):
    """``torch.optim.Adam(amsgrad=True)``'s direction: torch keeps the running maximum of the
    *raw* second moment and bias-corrects it with the current step's factor,
    ``m_hat / (sqrt(max(v_max, v)) / sqrt(1 - b2^t) + eps)``. ``optax.scale_by_amsgrad`` takes
    the maximum of the *corrected* moments instead, which is another trajectory."""

    def init_fn(params):
        zeros = optax.tree.zeros_like
        return TorchAmsgradState(
            count=jnp.zeros([], jnp.int32),
            exp_avg=zeros(params),
            exp_avg_sq=zeros(params),
            max_exp_avg_sq=zeros(params),
        )

    def update_fn(updates, state, params=None):
        del params
        exp_avg = optax.tree.update_moment(updates, state.exp_avg, b1, 1)
        exp_avg_sq = optax.tree.update_moment_per_elem_norm(updates, state.exp_avg_sq, b2, 2)
        max_exp_avg_sq = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq)
        count = optax.safe_increment(state.count)
        step = count.astype(jnp.result_type(float))  # float64 under x64
        correction1, correction2 = 1 - b1**step, 1 - b2**step
        updates = jax.tree.map(
            lambda m, v: (m / correction1) / (jnp.sqrt(v) / jnp.sqrt(correction2) + eps),
            exp_avg,
            max_exp_avg_sq,
        )
        return updates, TorchAmsgradState(count, exp_avg, exp_avg_sq, max_exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)
