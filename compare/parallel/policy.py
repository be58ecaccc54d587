"""What can run data-parallel, checked before JAX or any rank starts.

A step splits over N devices when it is one forward pass over a mini-batch (no full batch, no
nets called directly, no state carried between steps: the registry says why not, per task),
every batch of the schedule gives each device at least one sample, and N is no more devices
than this machine can hold: each is a JAX host device and a torch process.
"""

import os

import numpy as np

from compare.errors import CompareError

# One torch process per device, each holding its own torch (~0.5 GB): beyond the cores (or 8,
# a GPU box's usual count) they only queue for the CPU, and JAX's host devices likewise
MAX_DEVICES = max(8, os.cpu_count() or 1)


def check_request(task, hp, n):
    """``--data-parallel n`` for ``task`` with ``hp``: one CompareError line, from the registry
    alone (no data, no JAX backend, no rank), when it cannot be (JAX fixes its CPU device
    count when it starts: a wrong ``n`` must not reach it)."""
    if n < 1:
        raise CompareError("--data-parallel must be at least 1")
    reason = why_not(task, hp)
    if reason is not None:
        raise CompareError(f"{task.name} cannot be data-parallel: {reason}")
    if n > hp.batch_size:
        raise CompareError(
            f"--data-parallel {n}: more devices than the {hp.batch_size} samples of a "
            f"{task.name} batch; use at most {min(hp.batch_size, MAX_DEVICES)}"
        )
    if n > MAX_DEVICES:
        raise CompareError(
            f"--data-parallel {n}: more than the {MAX_DEVICES} devices this machine can hold "
            "(each is a torch process and a JAX host device)"
        )


def why_not(task, hp=None):
    """None when ``task``'s step can be split over devices, else the one-line reason."""
    hp = hp or task.hp
    if task.data_parallel is not None:
        return task.data_parallel
    if hp.batch_size is None:
        return "full-batch training: every step sees the whole data set (nothing to split)"
    return None


def batchnorm_note(torch_model, device="cpu"):
    """Why the torch side cannot equal its single-device run (BatchNorm statistics per rank),
    or None."""
    import torch

    has_bn = any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in torch_model.modules()
    )
    if not has_bn or device == "cuda":
        return None
    return (
        "torch DDP on CPU: BatchNorm normalises each rank's slice by that slice's statistics "
        "(SyncBatchNorm, which would use the global batch's, needs CUDA), so the torch side "
        "cannot equal its single-device run; JAX's sharded batch statistics are the global "
        "batch's"
    )


def check_split(order, n):
    """Every batch must give each of the ``n`` ranks at least one sample."""
    if n < 1:
        raise CompareError("--data-parallel must be at least 1")
    smallest = min(len(idx) for epoch in order for idx in epoch)
    if smallest < n:
        raise CompareError(
            f"--data-parallel {n}: the schedule has a batch of {smallest} sample(s), fewer than "
            f"the {n} devices it would be split over; use at most {smallest}"
        )


def rank_slices(size, n):
    """The contiguous ``(start, stop)`` of each of ``n`` ranks in a batch of ``size``."""
    bounds = np.cumsum([0] + [len(s) for s in np.array_split(np.arange(size), n)])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
