"""Machinery the JAX tutorials share: precision, whole-epoch scans, checkpoints.

Each tutorial's ``train_step`` is an ``@nnx.jit`` function, the way Flax users write it.
Called once per batch from Python it walks the module graph on every call; the functions here
run many steps inside one jitted ``lax.scan`` instead: the model and optimizer are split into a
static graph definition and a pytree of arrays once, merged back inside the traced body, and
the arrays stay on the device between steps. ``nnx.cached_partial`` is the per-step middle way.
"""

import functools

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file


def use_float64(enabled=True):
    """Switch JAX to 64-bit arrays (needed before any float64 array is created)."""
    jax.config.update("jax_enable_x64", enabled)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _scan_batches(train_step, graphdef, state, x, y, batch_idx):
    def body(state, idx):
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(model, optimizer, x[idx], y[idx])  # x[idx]: (batch, ...)
        return nnx.state((model, optimizer)), loss

    return jax.lax.scan(body, state, batch_idx)


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def _scan_full_batch(train_step, graphdef, state, x, y, num_steps):
    def body(state, _):
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(model, optimizer, x, y)
        return nnx.state((model, optimizer)), loss

    return jax.lax.scan(body, state, None, length=num_steps)


def train_epoch(train_step, model, optimizer, x, y, batches):
    """One epoch of mini-batch steps; returns the losses, one per batch, as a jax array.

    ``x`` and ``y`` stay on the device; ``batches`` is the epoch's list of index arrays. The
    equal-sized batches run as one jitted ``lax.scan``; a shorter last batch (what a
    ``DataLoader`` without ``drop_last`` yields) takes one more step after them, in order.
    """
    size = len(batches[0])
    full = [b for b in batches if len(b) == size]
    rest = [b for b in batches if len(b) != size]
    if len(rest) > 1 or (rest and len(batches[-1]) == size):
        raise ValueError("only the last batch of an epoch may be shorter")
    graphdef, state = nnx.split((model, optimizer))
    state, losses = _scan_batches(train_step, graphdef, state, x, y, np.stack(full))
    nnx.update((model, optimizer), state)
    if rest:
        last = train_step(model, optimizer, x[rest[0]], y[rest[0]])
        losses = jax.numpy.concatenate([losses, last[None]])
    return losses


def train_full_batch(train_step, model, optimizer, x, y, num_steps):
    """``num_steps`` full-batch steps as one jitted ``lax.scan``; returns their losses."""
    graphdef, state = nnx.split((model, optimizer))
    state, losses = _scan_full_batch(train_step, graphdef, state, x, y, num_steps)
    nnx.update((model, optimizer), state)
    return losses


def _flat_variables(model):
    return {".".join(map(str, path)): var for path, var in nnx.to_flat_state(nnx.state(model))}


def save_checkpoint(model, path):
    """Save every variable of ``model`` to a safetensors file, keys like ``hidden.kernel``."""
    tensors = {key: np.asarray(var.get_value()) for key, var in _flat_variables(model).items()}
    save_file(tensors, str(path))


def load_checkpoint(model, path):
    """Restore a checkpoint written by ``save_checkpoint``; keys and shapes must match exactly."""
    tensors = load_file(str(path))
    variables = _flat_variables(model)
    missing = sorted(set(variables) - set(tensors))
    unexpected = sorted(set(tensors) - set(variables))
    if missing or unexpected:
        raise ValueError(f"checkpoint keys differ: missing {missing}, unexpected {unexpected}")
    for key, var in variables.items():
        if tensors[key].shape != var.get_value().shape:
            raise ValueError(
                f"checkpoint {key}: shape {tensors[key].shape}, model {var.get_value().shape}"
            )
    for key, var in variables.items():
        var.set_value(jax.numpy.asarray(tensors[key]))
