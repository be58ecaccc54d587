"""Training steps per second beyond the tutorials: torchvision's resnet18 and mobilenet_v2 on
one CPU core, torch against the Flax NNX twin ``compare.translate`` writes from the same net.

Each model is torchvision's own (``num_classes=10``, ``torch.manual_seed(0)``), in training
mode (mobilenet_v2 with ``dropout=0.0``: its classifier's dropout draws its masks from each
framework's own random numbers, so the two sides' losses could not be compared; it acts on
32x1280 numbers a step, next to nothing in the step's time), on batches of 32 3x32x32
float32 images with labels drawn once (numpy, seed 0): NCHW tensors for torch, the same
numbers transposed to NHWC for JAX (the translated module takes images channels-last,
docs/TRANSLATE.md). Cross-entropy, SGD with momentum 0.9 and learning
rate 0.01, no weight decay; JAX's optimizer is ``compare.optim.to_optax`` of torch's. Four
variants, each starting from the same initial weights:

- ``torch-eager``: ``zero_grad``, forward, ``backward``, ``optimizer.step()`` per batch;
- ``torch-compile``: ``torch.compile`` of that whole step (Inductor; Dynamo breaks the graph
  at ``backward`` and in the optimizer, as in ``python -m compare bench``); where it does not
  compile on the machine, its row says why and the rest goes on;
- ``jax-nnx-jit``: an ``@nnx.jit`` step per batch, as Flax users write it;
- ``jax-scan``: the block's steps as one compiled ``lax.scan`` over the stack of batches
  (``jaxnets.train_epoch(loop="scan")``, the bench's ``jax-scan``).

One block is ``--steps`` steps (20; ``--quick``: 4), the same batches for every variant. Every
variant runs one block to warm up (compilation included: ``warmup_s``, and ``compile_s`` = the
warm-up minus the median block), then ``--repeats`` rounds (5; ``--quick``: 2) in which each
variant runs one block in turn (``compare.bench.timing.time_in_turns``), so a shared machine's
load falls on all alike; steps/s from the median block, with the spread (max - min) / median.

Before any block is timed, every variant's first-step loss (its warm-up block's first) must
agree with torch eager's from the same weights on the same batch to ``LOSS_RTOL`` (relative,
float32): a model, weights, layout or mode that differ end the run with one line, and nothing
is written. The later steps are not held to it, only recorded: float32's rounding grows
through the updates (BatchNorm over 1x1 maps), so that on resnet18 torch-compile's own loss
was 2.5e-4 from eager's by the third step; a difference in the optimizer shows only from the
second step, in those records, not in the check.

One core: torch is held to one thread (``torch.set_num_threads(1)``); XLA:CPU sizes its
thread pool by the cores the process may use, so the process is pinned from outside, as the
bench's figures are: every thread of it (XLA's, torch's, Inductor's compile workers) on core 0.
The cores it may use are printed and recorded; more than one draws a warning. Run as

    taskset -c 0 python examples/vision_speed_cpu.py --json runs/vision-speed-cpu.json

``--json FILE`` records every block's seconds, the warm-up and compile times, the losses
checked, versions, python, the CPU and the cores used, the load average before and after,
the git commit and the date (UTC). docs/BENCHMARKS.md describes it.
"""

import argparse
import copy
import datetime
import functools
import json
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

VARIANTS = ("torch-eager", "torch-compile", "jax-nnx-jit", "jax-scan")
TORCH_VARIANTS = ("torch-eager", "torch-compile")
MODELS = {  # mobilenet_v2's classifier dropout off: see the module docstring
    "resnet18": torchvision.models.resnet18,
    "mobilenet_v2": functools.partial(torchvision.models.mobilenet_v2, dropout=0.0),
}
CLASSES, BATCH, SIZE = 10, 32, 32
LR, MOMENTUM = 0.01, 0.9
STEPS, REPEATS, QUICK_STEPS, QUICK_REPEATS = 20, 5, 4, 2
LOSS_RTOL = 1e-4  # the first step's losses, float32


def make_batches(steps, batch, size, seed):
    """``steps`` batches of images (NCHW, float32) and integer labels, the same for both."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((steps, batch, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, CLASSES, size=(steps, batch))
    return images, labels


def to_nhwc(images):
    """The JAX side's copy of the images: channels last, as the translated module takes them."""
    return np.ascontiguousarray(images.transpose(0, 1, 3, 4, 2))


def new_torch_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def torch_train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def jax_train_step(model, optimizer, x, y):
    import optax
    from flax import nnx

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def torch_block(step, initial, images, labels):
    """A fresh copy of the initial weights and a new optimizer; the block runs ``step`` once
    per batch, the batches made tensors beforehand."""
    model = copy.deepcopy(initial).train()
    optimizer = new_torch_optimizer(model)
    xs = [torch.from_numpy(a) for a in images]
    ys = [torch.from_numpy(a) for a in labels]

    def block():
        return [step(model, optimizer, x, y) for x, y in zip(xs, ys, strict=True)]

    return block


def jax_model_and_optimizer(translation, initial):
    from flax import nnx

    from compare.optim import to_optax

    model = translation.new_module(initial)  # a fresh instance holding the initial weights
    model.train()
    # torch's optimizer is only read here (no step taken): its settings become optax's
    tx = to_optax(new_torch_optimizer(initial))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def jax_nnx_jit_block(translation, initial, images, labels):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model, optimizer = jax_model_and_optimizer(translation, initial)
    step = nnx.jit(jax_train_step)
    xs = [jnp.asarray(a) for a in to_nhwc(images)]
    ys = [jnp.asarray(a, dtype=jnp.int32) for a in labels]

    def block():
        losses = [step(model, optimizer, x, y) for x, y in zip(xs, ys, strict=True)]
        return jax.block_until_ready((losses, nnx.state((model, optimizer))))[0]

    return block


def jax_scan_block(translation, initial, images, labels):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxnets import train_epoch

    model, optimizer = jax_model_and_optimizer(translation, initial)
    steps, batch = labels.shape
    nhwc = to_nhwc(images)
    x = jnp.asarray(nhwc.reshape(steps * batch, *nhwc.shape[2:]))
    y = jnp.asarray(labels.reshape(-1), dtype=jnp.int32)
    batches = [np.arange(i * batch, (i + 1) * batch) for i in range(steps)]

    def block():
        losses = train_epoch(jax_train_step, model, optimizer, x, y, batches, loop="scan")
        return jax.block_until_ready((losses, nnx.state((model, optimizer))))[0]

    return block


def as_losses(out):
    """A block's losses (tensors, JAX scalars or one JAX array) as float64 numbers."""
    return np.array([float(v) for v in out])


def check_losses(name, reference, warmups):
    """Each variant's first-step loss against torch eager's: a ``CompareError`` for the first
    that is off. Returns {variant: [relative difference at each step of the warm-up block]}."""
    from compare.errors import CompareError

    apart = {}
    for variant, (_, losses) in warmups.items():
        rel = np.abs(losses - reference) / np.abs(reference)
        if not rel[0] <= LOSS_RTOL:  # a NaN fails too
            raise CompareError(
                f"{name}: {variant}'s first-step loss is {losses[0]:.7g}, torch eager's "
                f"{reference[0]:.7g} ({rel[0]:.1e} apart relative, allowed {LOSS_RTOL:.0e}): "
                "the two sides are not the same model on the same data; nothing timed"
            )
        apart[variant] = rel.tolist()
    return apart


def measure(name, factory, *, steps, repeats, batch, size, seed, variants=VARIANTS, log=print):
    """One model: translate it, warm every variant up, check the losses, time in turns.
    Returns the model's record (the rows and what was checked)."""
    import compare
    from compare.bench.timing import one_line, summarize, time_in_turns

    torch.manual_seed(seed)
    initial = factory(num_classes=CLASSES).train()
    images, labels = make_batches(steps, batch, size, seed)
    log(f"{name}: translating ...")
    start = time.perf_counter()
    translation = compare.translate(initial, torch.from_numpy(images[0]))
    translate_s = time.perf_counter() - start
    # the reference losses: torch eager's block, from the same weights on the same batches
    reference = as_losses(torch_block(torch_train_step, initial, images, labels)())
    builders = {
        "torch-eager": lambda: torch_block(torch_train_step, initial, images, labels),
        "torch-compile": lambda: compiled_torch_block(initial, images, labels),
        "jax-nnx-jit": lambda: jax_nnx_jit_block(translation, initial, images, labels),
        "jax-scan": lambda: jax_scan_block(translation, initial, images, labels),
    }
    blocks, warmups, rows = {}, {}, {}
    for variant in variants:
        log(f"{name}: {variant}: building and warming up (compilation included) ...")
        try:
            block = builders[variant]()
            start = time.perf_counter()
            out = block()
            warmups[variant] = (time.perf_counter() - start, as_losses(out))
            blocks[variant] = block
            log(f"{name}: {variant}: warm-up block {warmups[variant][0]:.1f} s")
        except Exception as err:  # torch.compile without a working C compiler, say: a result
            rows[variant] = {"status": "failed", "reason": one_line(err)}
            log(f"{name}: {variant}: failed: {rows[variant]['reason']}")
    apart = check_losses(name, reference, warmups)
    log(f"{name}: losses agree; timing {repeats} rounds of {steps} steps in turns ...")
    seconds = time_in_turns(blocks, repeats)
    for variant in blocks:
        warmup, losses = warmups[variant]
        row = summarize(warmup, seconds[variant], steps, batch, float(losses[-1]))
        row["ms_per_step"] = row["median_s"] / steps * 1e3
        row["warmup_losses"] = losses.tolist()
        rows[variant] = row
    ran = {v: r for v, r in rows.items() if r["status"] == "ran"}
    best_torch = _best(ran, TORCH_VARIANTS)
    best_jax = _best(ran, [v for v in VARIANTS if v not in TORCH_VARIANTS])
    for row in ran.values():
        row["ratio"] = row["steps_per_s"] / ran[best_torch]["steps_per_s"] if best_torch else None
    return {
        "model": f"{getattr(factory, 'func', factory).__name__}(num_classes={CLASSES}"
        + "".join(f", {k}={v!r}" for k, v in getattr(factory, "keywords", {}).items())
        + ")",
        "translate_s": translate_s,
        "torch_reference_losses": reference.tolist(),
        "loss_check": {
            "checked": "the first step's loss, each variant against torch eager's",
            "rtol": LOSS_RTOL,
            # every warm-up step, for the record: past the first, float32's rounding grows
            # through the updates (torch-compile's own distance from eager shows how far)
            "rel_diff_per_step": apart,
        },
        "best_torch": best_torch,
        "best_jax": best_jax,
        "best_jax_over_best_torch": (
            ran[best_jax]["steps_per_s"] / ran[best_torch]["steps_per_s"]
            if best_jax and best_torch
            else None
        ),
        "variants": {v: rows[v] for v in VARIANTS if v in rows},
    }


def compiled_torch_block(initial, images, labels):
    torch._dynamo.reset()  # its own compilation, inside its own warm-up
    return torch_block(torch.compile(torch_train_step), initial, images, labels)


def _best(ran, candidates):
    return max(
        (v for v in candidates if v in ran), key=lambda v: ran[v]["steps_per_s"], default=None
    )


def table(results):
    lines = [
        "| model | variant | steps/s | ms/step | spread | warm-up s | compile s | / best torch |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results["models"].items():
        for variant, row in result["variants"].items():
            if row["status"] != "ran":
                lines.append(f"| {name} | {variant} | {row['status']}: {row['reason']} |||||")
                continue
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
            lines.append(
                f"| {name} | {variant} | {row['steps_per_s']:.3g} | {row['ms_per_step']:.1f} "
                f"| {row['spread']:.0%} | {row['warmup_s']:.1f} | {row['compile_s']:.1f} "
                f"| {ratio} |"
            )
    lines.append("")
    for name, result in results["models"].items():
        ratio = result["best_jax_over_best_torch"]
        check = result["loss_check"]
        first = max((d[0] for d in check["rel_diff_per_step"].values()), default=float("nan"))
        last = ", ".join(
            f"{variant} {d[-1]:.1e}"
            for variant, d in check["rel_diff_per_step"].items()
            if variant != "torch-eager"
        )
        lines.append(
            f"{name}: best JAX ({result['best_jax']}) / best torch ({result['best_torch']}): "
            + (f"{ratio:.2f}x" if ratio is not None else "-")
            + f"; first-step loss within {first:.1e} of torch eager's (relative), at the "
            f"warm-up's last step: {last or '-'}; translated in {result['translate_s']:.1f} s"
        )
    return "\n".join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="vision_speed_cpu.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, help=f"steps per block (default {STEPS})")
    parser.add_argument("--repeats", type=int, help=f"timed rounds (default {REPEATS})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_STEPS} steps, {QUICK_REPEATS} rounds: that it runs, not how fast",
    )
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--size", type=int, default=SIZE, help="image height and width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="write the record there")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else STEPS
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else REPEATS
    for option in ("steps", "repeats", "batch", "size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    if args.json:
        if os.path.isdir(args.json):
            parser.error(f"--json {args.json}: is a directory")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
            parser.error(f"--json {args.json}: no such directory")
    return args


def main(argv=None):
    import jax

    from compare.bench.jax_worker import set_jax_precision
    from compare.bench.machine import git_revision, host, versions
    from compare.bench.torch_worker import set_torch_precision
    from compare.errors import CompareError
    from compare.files import write_file_whole

    words = sys.argv[1:] if argv is None else list(argv)
    args = parse(words)
    torch.set_num_threads(1)
    precision = {"torch": set_torch_precision(False), "jax": set_jax_precision(False)}
    cores = sorted(os.sched_getaffinity(0))
    machine = host()  # the load before this run adds its own
    revision = git_revision()  # the code that runs, read before a long run lets it change
    started = datetime.datetime.now(datetime.timezone.utc)

    def log(text):
        print(text, file=sys.stderr, flush=True)

    log(f"cores this process may use: {cores}; torch threads: {torch.get_num_threads()}")
    if len(cores) > 1:
        log(
            "warning: not pinned to one core: XLA:CPU's thread pool takes every core it may "
            "use; run under `taskset -c 0` for one-core figures"
        )
    results = {"models": {}}
    try:
        for name in args.models:
            results["models"][name] = measure(
                name,
                MODELS[name],
                steps=args.steps,
                repeats=args.repeats,
                batch=args.batch,
                size=args.size,
                seed=args.seed,
                variants=args.variants,
                log=log,
            )
    except CompareError as err:
        sys.exit(f"error: {err}")
    device = jax.devices()[0]
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results.update(
        {
            "what": "training steps per second, one core, torch against the translated twin",
            "command": shlex.join(["python", "examples/vision_speed_cpu.py", *words]),
            "date": started.isoformat(timespec="seconds"),
            "git": revision,
            "versions": versions(getattr(device.client, "platform_version", None)),
            "host": machine,
            "load_average_1min_after": round(load_after, 2) if load_after is not None else None,
            "one_core": {
                "cores_usable": cores,
                "pinned": len(cores) == 1,
                "how": "taskset -c 0 on the command line (the process's CPU affinity)",
                "torch_threads": torch.get_num_threads(),
                "xla_flags": os.environ.get("XLA_FLAGS", ""),
            },
            "precision": precision,
            "settings": {
                "batch": args.batch,
                "image": [3, args.size, args.size],
                "classes": CLASSES,
                "dtype": "float32",
                "optimizer": f"SGD(lr={LR}, momentum={MOMENTUM}, weight_decay=0)",
                "loss": "cross-entropy",
                "mode": "training",
                "steps_per_block": args.steps,
                "repeats": args.repeats,
                "quick": args.quick,
                "seed": args.seed,
            },
        }
    )
    print(
        f"python {results['versions']['python']}, jax {results['versions']['jax']}, "
        f"torch {results['versions']['torch']}, {started:%Y-%m-%d %H:%M} UTC, "
        f"load average {machine['load_average_1min']} / {results['load_average_1min_after']}, "
        f"cores {cores}, {args.steps} steps x {args.repeats} rounds"
    )
    print(table(results))
    if args.json:
        try:
            write_file_whole(args.json, json.dumps(results, indent=1))
        except CompareError as err:
            sys.exit(f"error: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
