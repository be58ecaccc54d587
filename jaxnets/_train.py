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

from jaxnets import _conv


def use_float64(enabled=True):
    """Switch JAX to 64-bit arrays (needed before any float64 array is created)."""
    jax.config.update("jax_enable_x64", enabled)


def _noise_args(noise):
    # A step that consumes randomness takes it as a fifth argument when it is handed in
    # (lockstep); without it the step draws its own and the tutorials' steps keep four.
    return () if noise is None else (noise,)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _scan_batches(train_step, graphdef, state, x, y, batch_idx, noise=None):
    def body(state, step):
        idx, step_noise = step  # step_noise: {name: (batch, ...)} or None
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(model, optimizer, x[idx], y[idx], *_noise_args(step_noise))
        return nnx.state((model, optimizer)), loss

    return jax.lax.scan(body, state, (batch_idx, noise))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _one_batch(train_step, graphdef, state, x, y, idx, noise=None):
    model, optimizer = nnx.merge(graphdef, state)
    loss = train_step(model, optimizer, x[idx], y[idx], *_noise_args(noise))
    return nnx.state((model, optimizer)), loss


def scan_is_slower(model):
    """XLA:CPU runs lax's convolution inside a loop body (a scan) far slower than the same
    convolution dispatched on its own: the backward convolutions autodiff makes fall back to
    its unoptimised form there (jax-ml/jax#12868; mnist-cnn, one core: an epoch 4.3 s scanned,
    0.8 s step by step). ``jaxnets._conv``'s convolution keeps them fast, and scanned it is as
    fast as stepping or faster; so the scan is slower only on a CPU, for a model with an
    ``nnx.Conv`` or ``nnx.ConvTranspose`` on lax's own convolution."""
    if jax.default_backend() != "cpu":
        return False
    for _, module in nnx.iter_modules(model):
        if isinstance(module, _conv.ConvTranspose):
            continue
        if isinstance(module, nnx.ConvTranspose) or (
            isinstance(module, nnx.Conv)
            and module.conv_general_dilated is not _conv.conv_general_dilated
        ):
            return True
    return False


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def _scan_full_batch(train_step, graphdef, state, x, y, num_steps):
    def body(state, _):
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(model, optimizer, x, y)
        return nnx.state((model, optimizer)), loss

    return jax.lax.scan(body, state, None, length=num_steps)


def train_epoch(train_step, model, optimizer, x, y, batches, loop="auto", noise=None):
    """One epoch of mini-batch steps; returns the losses, one per batch, as a jax array.

    ``x`` and ``y`` stay on the device; ``batches`` is the epoch's list of index arrays. With
    ``loop="scan"`` the equal-sized batches run as one jitted ``lax.scan``, and a shorter last
    batch (what a ``DataLoader`` without ``drop_last`` yields) takes one more step after them,
    in order. ``loop="steps"`` dispatches one jitted pure step per batch (the graph split once,
    not walked per step). ``"auto"`` takes the scan unless ``scan_is_slower(model)``.
    ``noise``, when given, is one ``{name: array}`` per batch, handed to its step (the scan
    walks it along with the batch indices).
    """
    if loop == "auto":
        loop = "steps" if scan_is_slower(model) else "scan"
    per_batch = [None] * len(batches) if noise is None else list(noise)
    if loop == "steps":
        graphdef, state = nnx.split((model, optimizer))
        losses = []
        for idx, step_noise in zip(batches, per_batch, strict=True):
            state, loss = _one_batch(train_step, graphdef, state, x, y, idx, step_noise)
            losses.append(loss)
        nnx.update((model, optimizer), state)
        return jax.numpy.stack(losses)
    size = len(batches[0])
    full = [i for i, b in enumerate(batches) if len(b) == size]
    rest = [i for i, b in enumerate(batches) if len(b) != size]
    if len(rest) > 1 or (rest and len(batches[-1]) == size):
        raise ValueError("only the last batch of an epoch may be shorter")
    stacked = None
    if noise is not None:  # {name: (steps, batch, ...)}
        stacked = {k: np.stack([per_batch[i][k] for i in full]) for k in per_batch[0]}
    graphdef, state = nnx.split((model, optimizer))
    state, losses = _scan_batches(
        train_step, graphdef, state, x, y, np.stack([batches[i] for i in full]), stacked
    )
    nnx.update((model, optimizer), state)
    if rest:
        last = batches[rest[0]]
        last = train_step(model, optimizer, x[last], y[last], *_noise_args(per_batch[rest[0]]))
        losses = jax.numpy.concatenate([losses, last[None]])
    return losses


def train_full_batch(train_step, model, optimizer, x, y, num_steps):
    """``num_steps`` full-batch steps as one jitted ``lax.scan``; returns their losses."""
    graphdef, state = nnx.split((model, optimizer))
    state, losses = _scan_full_batch(train_step, graphdef, state, x, y, num_steps)
    nnx.update((model, optimizer), state)
    return losses


def _flat_variables(model):
    # weights and statistics only: not the RNG streams of nnx.RNN or of a model that draws its
    # own noise, nor a carried hidden state
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    return {".".join(map(str, path)): var for path, var in nnx.to_flat_state(state)}


def checkpoint_keys(model):
    """The keys ``save_checkpoint`` writes for ``model``."""
    return set(_flat_variables(model))


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
