"""Layers whose Flax default differs from torch in a way a port must not inherit.

``BatchNorm``: ``nnx.BatchNorm`` normalises a batch exactly as torch does, but keeps different
running statistics: its ``momentum`` weighs the old value (torch's weighs the new one: torch
0.1 = Flax 0.9, and Flax's default is 0.99), it updates the running variance with the biased
batch variance where torch uses the unbiased one (n / (n - 1) larger), and it has no
``num_batches_tracked``. Eval-mode outputs drift apart with any of those; this subclass keeps
torch's statistics so that eval-mode predictions agree image for image.
"""

import jax
import jax.numpy as jnp
from flax import nnx


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` with ``torch.nn.BatchNorm1d/2d`` running statistics (features last)."""

    def __init__(self, num_features, *, momentum=0.1, eps=1e-5, rngs: nnx.Rngs):
        super().__init__(
            num_features, momentum=1.0 - momentum, epsilon=eps, use_fast_variance=False, rngs=rngs
        )
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), dtype=jnp.int32))

    def __call__(self, x):
        if self.use_running_average:
            return super().__call__(x)
        axes = tuple(range(x.ndim - 1))  # every axis but the features
        n = x.size // x.shape[-1]
        mean = x.mean(axis=axes, keepdims=True)  # (1, ..., 1, features)
        var = x.var(
            axis=axes, keepdims=True
        )  # biased: what the batch is normalised with, in torch too
        keep = self.momentum
        self.mean[...] = jax.lax.stop_gradient(
            keep * self.mean[...] + (1 - keep) * mean.reshape(-1)
        )
        unbiased = var.reshape(-1) * n / (n - 1)
        self.var[...] = jax.lax.stop_gradient(keep * self.var[...] + (1 - keep) * unbiased)
        self.num_batches_tracked[...] += 1
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return y * self.scale[...].reshape(mean.shape) + self.bias[...].reshape(mean.shape)
