"""What one timed block is, and how a variant is timed: warm-up apart, device awaited,
median of the repeats; several variants in one process are timed in turns."""

import time
import traceback

import numpy as np

from compare.bench.variants import FULL_BATCH_STEPS, MIN_BLOCK_STEPS, QUICK_STEPS
from compare.errors import CompareError


def plan(twins, opts):
    """The block of steps every variant times, and the samples one step trains on.

    Mini-batch tasks: the full batches of the first epoch of ``data.batch_order`` (the short
    last batch left out, so every step has the lesson's batch size and nothing recompiles; at
    least ``MIN_BLOCK_STEPS``, running on into the next epochs); full-batch tasks:
    ``FULL_BATCH_STEPS`` steps on all the data. ``--steps`` and ``--quick`` shorten or
    lengthen the block."""
    from compare.tutorials import data

    n = len(twins.arrays["x"])
    size = twins.hp.batch_size
    if size is None:
        steps = opts["steps"] or (QUICK_STEPS if opts["quick"] else FULL_BATCH_STEPS)
        return [np.arange(n)] * steps, n
    per_epoch = n // size
    if per_epoch == 0:
        raise CompareError(f"{twins.task.name}: fewer than {size} samples, no full batch")
    steps = opts["steps"] or (QUICK_STEPS if opts["quick"] else max(per_epoch, MIN_BLOCK_STEPS))
    epochs = -(-steps // per_epoch)
    order = data.batch_order(n, size, epochs, seed=opts["seed"], shuffle=twins.task.shuffle)
    full = [b for epoch in order for b in epoch if len(b) == size]
    return full[:steps], size


def time_block(block, sync, repeats):
    """Run ``block`` once to warm up, then ``repeats`` times; the device awaited around each."""
    sync(None)
    start = time.perf_counter()
    out = block()
    sync(out)
    warmup = time.perf_counter() - start
    seconds = []
    for _ in range(repeats):
        sync(None)
        start = time.perf_counter()
        out = block()
        sync(out)
        seconds.append(time.perf_counter() - start)
    return warmup, seconds, out


def time_in_turns(runs, repeats):
    """``repeats`` rounds, each running every one of ``runs`` (``{name: a function that runs
    one block and returns once its work is done}``, the device awaited) once, in the same
    order; ``{name: [seconds of each round]}``. Timed in turns rather than one after another,
    a shared machine's load falls on all of them alike: a variant timed while another session
    was busy would otherwise look slower than it is. Warm them up (compile) before."""
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def summarize(warmup, seconds, steps, samples_per_step, last_loss=None):
    median = float(np.median(seconds))
    low, high = float(min(seconds)), float(max(seconds))
    row = {
        "status": "ran",
        "steps_per_s": steps / median,
        "samples_per_s": steps * samples_per_step / median,
        "steps_per_s_range": [steps / high, steps / low],
        "median_s": median,
        "min_s": low,
        "max_s": high,
        "spread": (high - low) / median,
        "seconds": [float(s) for s in seconds],
        "warmup_s": float(warmup),
        "compile_s": max(0.0, float(warmup) - median),  # the warm-up block beyond a steady one
    }
    if last_loss is not None:
        row["last_loss"] = last_loss
    return row


def one_line(err):
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip().rstrip(":")[:300]


def loss_value(loss):
    value = np.asarray(loss, dtype=np.float64)
    return float(value.mean())


def run_variant(build, sync, opts, steps, samples_per_step, read_loss, extra=None):
    try:
        block = build()
        warmup, seconds, out = time_block(block, sync, opts["repeats"])
        row = summarize(warmup, seconds, steps, samples_per_step, read_loss(out))
        if extra is not None:
            row.update(extra())
        return row
    except Exception as err:  # one variant failing (no C compiler, no CUDA...) is a result
        if opts.get("debug"):
            traceback.print_exc()
        return {"status": "failed", "reason": one_line(err)}
