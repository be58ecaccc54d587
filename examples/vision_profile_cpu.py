"""Where the JAX training step's time goes on one CPU core for torchvision's resnet18 and
mobilenet_v2 as ``compare.translate`` writes them: an ablation per layer kind.

The step is ``examples/vision_speed_cpu.py``'s (the translated module from torchvision's
net, ``num_classes=10``, batches of 32 3x32x32 float32 images, cross-entropy, SGD with
momentum 0.9), as its ``jax-nnx-jit`` (one ``@nnx.jit`` step per batch) and its ``jax-scan``
(the block's steps as one ``lax.scan``, ``jaxnets.train_epoch(loop="scan")``). Each row is
that step with one kind of layer swapped for ``step_profile_cpu.py``'s stand-in that costs
next to nothing (the same output shape, a gradient to every parameter and input), so the time
it saves is what that kind costs in the step, forward and backward: the convolutions by kind
(kernel size, strided or not, depthwise, the 7x7 stem), all of them at once, BatchNorm (its
scale and shift left), max pooling (a strided slice), the optimizer's momentum (plain SGD);
"the rest" is the step with every stand-in at once (the linear layer, activations, residual
sums, loss, the loop). All variants are compiled first, then timed in turns (median of the
repeats), so that a shared machine's load falls on all of them alike. docs/BENCHMARKS.md
quotes it, run as

    taskset -c 0 python examples/vision_profile_cpu.py [--models resnet18 mobilenet_v2]
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
from contextlib import nullcontext

import jax
import optax
import torch
from flax import nnx
from step_profile_cpu import _AffineOnly, _stand_in
from vision_speed_cpu import (
    BATCH,
    CLASSES,
    LR,
    MODELS,
    SIZE,
    jax_model_and_optimizer,
    jax_train_step,
    make_batches,
    to_nhwc,
)

from compare.bench.jax_worker import set_jax_precision
from compare.bench.timing import time_in_turns
from jaxnets import _conv, layers

LOOPS = ("jax-nnx-jit", "jax-scan")
STEPS, REPEATS = 3, 3
_ConvStandIn = _stand_in(nnx.Conv)


def conv_kind(conv):
    """A convolution's row: its kernel, strided or not, depthwise (one group per feature)."""
    kernel = "x".join(map(str, conv.kernel_size))
    strided = any(s != 1 for s in (conv.strides or (1,)))
    depthwise = conv.feature_group_count > 1 and conv.feature_group_count == conv.in_features
    name = f"{'depthwise ' if depthwise else ''}{kernel}{' strided' if strided else ''}"
    return f"{name} (the stem)" if conv.in_features == 3 else name


def _convs(model):
    return [(path, node) for path, node in nnx.iter_graph(model) if type(node) is nnx.Conv]


def stand_in_convs(model, kind=None):
    """Every convolution of ``kind`` (every one: None) for the stand-in."""
    for _, conv in _convs(model):
        if kind is None or conv_kind(conv) == kind:
            conv.__class__ = _ConvStandIn


def stand_in_batch_norm(model):
    for _, node in nnx.iter_graph(model):
        if type(node) is layers.BatchNorm:
            node.__class__ = _AffineOnly


class _Pooling:
    """The translated module's ``layers``, whose ``max_pool`` is a strided slice (of the real
    one's output shape) while ``stand_in`` is True, and ``nnx.max_pool`` (``reduce_window``,
    what the translator wrote before ``jaxnets/_pool.py`` took strided windows) while it is
    ``"nnx"``: the module calls it as a function, not a layer, so it is swapped in the
    module's namespace while a variant is traced."""

    def __init__(self, real):
        self.real, self.stand_in = real, False

    def __getattr__(self, name):
        return getattr(self.real, name)

    def max_pool(self, x, window_shape, strides=None, padding="VALID"):
        def real(x):
            return self.real.max_pool(x, window_shape, strides, padding)

        if self.stand_in == "nnx":
            return nnx.max_pool(x, window_shape, strides, padding)
        if not self.stand_in:
            return real(x)
        shape = jax.eval_shape(real, x).shape
        strides = strides or (1,) * len(window_shape)
        at = tuple(slice(0, n * s, s) for n, s in zip(shape[1:-1], strides, strict=True))
        return x[(slice(None), *at, slice(None))]


@contextlib.contextmanager
def convolutions_as_before():
    """While a step is traced, ``jaxnets/_conv.py`` as it was before its depthwise form and its
    padding against XLA's operand swap (lax's grouped convolution, the padding in the
    window): the "before" of the same step, compiled and timed in the same process."""
    saved = _conv._is_depthwise, _conv._swapped
    _conv._is_depthwise = lambda *args: False
    _conv._swapped = lambda in_size, kernel_size: False
    try:
        yield
    finally:
        _conv._is_depthwise, _conv._swapped = saved


def variants_for(model, pools, ablate=True):
    """(row, change to a fresh model, plain SGD?, pooling: stood in (True), ``nnx.max_pool``
    ("nnx") or the module's (False)) for what ``model`` holds: the step, the step as before
    (convolutions), the step with ``nnx.max_pool``, and unless not ``ablate`` each
    stand-in."""
    rows = [("the step", None, False, False), ("the step as before", None, False, False)]
    if pools:
        rows.append(("the step, nnx.max_pool", None, False, "nnx"))
    if not ablate:
        return rows
    kinds = sorted({conv_kind(conv) for _, conv in _convs(model)})
    rows.append(("convolutions", stand_in_convs, False, False))
    for kind in kinds:
        rows.append((f"- {kind}", lambda m, kind=kind: stand_in_convs(m, kind), False, False))
    rows.append(("BatchNorm", stand_in_batch_norm, False, False))
    if pools:
        rows.append(("max pooling", None, False, True))
    rows.append(("optimizer state (momentum)", None, True, False))

    def everything(m):
        stand_in_convs(m)
        stand_in_batch_norm(m)

    rows.append(("the rest", everything, True, pools))
    return rows


def build(translation, initial, images, labels, loop, change, plain_sgd):
    import jax.numpy as jnp
    import numpy as np

    from jaxnets import train_epoch

    model, optimizer = jax_model_and_optimizer(translation, initial)
    if change:
        change(model)
    if plain_sgd:
        optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)

    def step(model, optimizer, x, y):  # a function of its own: compiled apart from the others
        return jax_train_step(model, optimizer, x, y)

    nhwc = to_nhwc(images)
    if loop == "jax-nnx-jit":
        jitted = nnx.jit(step)
        xs = [jnp.asarray(a) for a in nhwc]
        ys = [jnp.asarray(a, dtype=jnp.int32) for a in labels]

        def block():
            losses = [jitted(model, optimizer, x, y) for x, y in zip(xs, ys, strict=True)]
            return jax.block_until_ready((losses, nnx.state((model, optimizer))))

        return block
    steps, batch = labels.shape
    x = jnp.asarray(nhwc.reshape(steps * batch, *nhwc.shape[2:]))
    y = jnp.asarray(labels.reshape(-1), dtype=jnp.int32)
    batches = [np.arange(i * batch, (i + 1) * batch) for i in range(steps)]

    def block():
        losses = train_epoch(step, model, optimizer, x, y, batches, loop="scan")
        return jax.block_until_ready((losses, nnx.state((model, optimizer))))

    return block


def profile(name, loops, steps, repeats, ablate):
    import compare

    torch.manual_seed(0)
    initial = MODELS[name](num_classes=CLASSES).train()
    images, labels = make_batches(steps, BATCH, SIZE, 0)
    translation = compare.translate(initial, torch.from_numpy(images[0]))
    namespace = translation.namespace
    pooling = _Pooling(namespace.layers)
    namespace.layers = pooling
    pools = "max_pool" in translation.source
    rows_model = translation.new_module(initial)
    rows = variants_for(rows_model, pools)
    ms, spread = {}, 0.0
    for loop in loops:
        blocks = {}
        for row, change, plain_sgd, pool in variants_for(rows_model, pools, loop in ablate):
            blocks[row] = build(translation, initial, images, labels, loop, change, plain_sgd)
            pooling.stand_in = pool
            before = convolutions_as_before() if row == "the step as before" else nullcontext()
            try:
                with before:
                    blocks[row]()  # traced, compiled and warmed up with its pooling
            finally:
                pooling.stand_in = False
        seconds = time_in_turns(blocks, repeats)
        for row, times in seconds.items():
            ms[loop, row] = statistics.median(times) / steps * 1e3
            spread = max(spread, (max(times) - min(times)) / statistics.median(times))
    print(f"\n{name}: {steps} steps of batch {BATCH}, ms per step (cost: what the stand-in saves)")
    head = "".join(f" {loop} ms | cost | share |" for loop in loops)
    print(f"| {'what':38s} |{head}")
    print(f"| {'-' * 38} |" + " ---: | ---: | ---: |" * len(loops))
    for row, *_ in rows:
        label = row if row.startswith("the ") else f"{row} (stood in)"
        label = "the rest (all stood in)" if row == "the rest" else label
        cells = ""
        for loop in loops:
            if (loop, row) not in ms:
                cells += " - | | |"
                continue
            step, here = ms[loop, "the step"], ms[loop, row]
            cost = here if row.startswith("the ") else step - here
            if row == "the step":
                cells += f" {here:.1f} | | 100 % |"
            elif row in ("the step as before", "the step, nnx.max_pool"):  # over the step's
                cells += f" {here:.1f} | | {here / step:.2f}x |"
            else:
                cells += f" {here:.1f} | {cost:.1f} | {cost / step:.0%} |"
        print(f"| {label:38s} |{cells}")
    print(f"(largest spread of a variant's {repeats} repeats: {spread:.0%})", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="vision_profile_cpu.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS))
    parser.add_argument(
        "--ablate",
        nargs="*",
        choices=LOOPS,
        help="the loops that get the stand-in rows (default: all; the others only the step "
        "and the step as before)",
    )
    parser.add_argument("--steps", type=int, default=STEPS, help=f"per block ({STEPS})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"rounds ({REPEATS})")
    args = parser.parse_args(argv)
    for option in ("steps", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    torch.set_num_threads(1)
    set_jax_precision(False)
    print(
        f"jax {jax.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, cores "
        f"{sorted(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}"
    )
    for name in args.models:
        ablate = args.loops if args.ablate is None else args.ablate
        profile(name, args.loops, args.steps, args.repeats, ablate)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
