"""How far apart two sides are: relative differences, and the check that a loss is finite.

Every verdict in the project (``parity``, ``check``, the data-parallel proofs, the bench's
sanity check) is one of these numbers held against a tolerance. A non-finite value never
compares as "no difference": the difference is then infinite.
"""

import numpy as np

from compare.errors import CompareError

_TINY = np.finfo(np.float64).tiny


def max_rel_diff(a, b):
    """max |a - b| / |b| elementwise (|b| floored at the smallest normal float64); for losses,
    whose every value matters at its own scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), _TINY)))


def tensor_rel_diff(a, b):
    """max over the tensors of ``b`` of max |a - b| / max |b|: each tensor at its own scale
    (a state dict against another, by key)."""
    worst = 0.0
    for key in b:
        x, y = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return float("inf")
        if y.size:
            scale = max(float(np.max(np.abs(y))), _TINY)
            worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


def global_rel_diff(a, b):
    """max |a - b| over all tensors / max |b| over all tensors.

    For gradients: a Linear bias feeding a BatchNorm has a gradient that is zero in exact
    arithmetic, so its own scale is rounding noise; the whole gradient's scale is not.
    """
    if not all(np.all(np.isfinite(a[k])) and np.all(np.isfinite(b[k])) for k in b):
        return float("inf")
    worst = max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in b)
    scale = max(float(np.max(np.abs(np.asarray(b[k])))) for k in b)
    return worst / max(scale, _TINY)


def rel_diff(a, b, scale=None):
    """max |a - b| / ``scale`` (default max |b|) of one tensor; inf for another shape or a
    non-finite value."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    if a.size == 0:
        return 0.0
    scale = float(np.max(np.abs(b))) if scale is None else scale
    return float(np.max(np.abs(a - b))) / max(scale, _TINY)


def check_finite(losses, side, first_step=0, *, after, task=None):
    """One ``CompareError`` line at the first non-finite loss in ``losses`` (one row per step,
    the first being step ``first_step``; a row holds one loss per net): the task, the side,
    the row, the step, and ``after``: what became of the run."""
    rows = np.asarray(losses, np.float64).reshape(len(losses), -1)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        index = int(np.argmax(bad))
        prefix = f"{task}: " if task else ""
        raise CompareError(
            f"{prefix}the {side} loss became non-finite ({rows[index].tolist()}) at step "
            f"{first_step + index}; {after}"
        )
