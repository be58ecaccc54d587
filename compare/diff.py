"""How far apart two sides are: relative differences, and the check that a loss is finite.

Every verdict in the project (``parity``, ``check``, the data-parallel proofs, the bench's
sanity check) is one of these numbers held against a tolerance. A non-finite value never
compares as "no difference": the difference is then infinite.
"""

import numpy as np

from compare.errors import CompareError

_TINY = np.finfo(np.float64).tiny
# elements per slice of a tensor reduced in pieces: a difference of two model-sized tensors
# is then a few MB of temporaries, never another copy of the model (a vgg's classifier weight
# is 0.8 GB in float64)
CHUNK = 1 << 18


def _slices(*arrays):
    """The arrays (one shape) in float64 pieces along the first axis, ``CHUNK`` elements or so
    each: views of them, converted a piece at a time."""
    first = arrays[0]
    if first.ndim == 0:
        yield tuple(np.asarray(a, np.float64).reshape(1) for a in arrays)
        return
    row = max(1, first.size // max(1, first.shape[0]))
    step = max(1, CHUNK // row)
    for start in range(0, first.shape[0], step):
        yield tuple(np.asarray(a[start : start + step], np.float64) for a in arrays)


def max_abs(a):
    """max |a| in float64, NaN when ``a`` holds one (as ``np.max(np.abs(a))``), without a
    temporary the size of ``a``."""
    a = np.asarray(a)
    if a.size == 0:
        raise ValueError("max_abs of an empty array")
    worst = np.float64(0.0)
    for (piece,) in _slices(a):
        if piece.size:
            worst = np.maximum(worst, np.max(np.abs(piece)))
    return float(worst)


def _finite(*arrays):
    return all(np.all(np.isfinite(p)) for a in arrays for (p,) in _slices(np.asarray(a)))


def _max_abs_diff(a, b):
    """max |a - b| of two finite arrays of one shape, in pieces."""
    if a.size == 0:
        raise ValueError("max |a - b| of empty arrays")
    worst = 0.0
    for x, y in _slices(a, b):
        if x.size:
            apart = np.subtract(x, y)
            worst = max(worst, float(np.max(np.abs(apart, out=apart))))
    return worst


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
        x, y = np.asarray(a[key]), np.asarray(b[key])
        if not _finite(x, y):
            return float("inf")
        if y.size:
            scale = max(max_abs(y), _TINY)
            worst = max(worst, _max_abs_diff(*np.broadcast_arrays(x, y)) / scale)
    return worst


def global_rel_diff(a, b):
    """max |a - b| over all tensors / max |b| over all tensors.

    For gradients: a Linear bias feeding a BatchNorm has a gradient that is zero in exact
    arithmetic, so its own scale is rounding noise; the whole gradient's scale is not.
    """
    if not all(_finite(a[k], b[k]) for k in b):
        return float("inf")
    worst = max(_max_abs_diff(*np.broadcast_arrays(np.asarray(a[k]), np.asarray(b[k]))) for k in b)
    scale = max(max_abs(b[k]) for k in b)
    return worst / max(scale, _TINY)


def rel_diff(a, b, scale=None):
    """max |a - b| / ``scale`` (default max |b|) of one tensor; inf for another shape or a
    non-finite value."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not _finite(a, b):
        return float("inf")
    if a.size == 0:
        return 0.0
    scale = max_abs(b) if scale is None else scale
    return _max_abs_diff(a, b) / max(scale, _TINY)


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
