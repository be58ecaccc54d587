"""Flax NNX + Optax twins of the tutorial models, jit-compiled.

Never imports torch or compare: each file mirrors its twin in ``torchref`` name for name.
Public beside the tutorials: ``jaxnets.layers`` (the layers whose Flax defaults differ from
torch's, torch's way: BatchNorm, LSTM, GRU, Conv...) and ``jaxnets.optim`` (torch's optimizer
rules optax has no exact twin of). The machinery the tutorials share (float64, whole-epoch
scans, checkpoints) is ``jaxnets._train``'s, its public functions re-exported here.
"""

from jaxnets._train import (
    checkpoint_keys,
    load_checkpoint,
    save_checkpoint,
    scan_is_slower,
    train_epoch,
    train_full_batch,
    use_float64,
)

__all__ = [
    "checkpoint_keys",
    "load_checkpoint",
    "save_checkpoint",
    "scan_is_slower",
    "train_epoch",
    "train_full_batch",
    "use_float64",
]
