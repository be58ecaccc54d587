"""The ``bench`` verb: how fast each framework runs a task's training step (docs/BENCHMARKS.md).

The parent (``bench``) starts one child process per framework, ``python -m compare.bench
--worker torch|jax ...``, and merges what they report: torch.compile's threads and JAX's
device memory never share a process, and each child sets the same precision mode. Each child
builds its side with ``compare.twins.make_twins`` (the same initial weights on both sides, the
data on the device in the bench dtype) and times every variant of its framework:

- ``torch-eager``: the tutorial's ``train_step`` once per batch, batches indexed on the device
  beforehand;
- ``torch-compile``: ``torch.compile(train_step)``, the whole step (forward, backward,
  optimizer) compiled by Inductor, graph breaks where Dynamo puts them;
- ``torch-cudagraphs``: the same with ``mode="reduce-overhead"`` (CUDA graphs), GPU only;
- ``jax-nnx-jit``: the tutorial's ``@nnx.jit`` ``train_step`` once per batch, as Flax users
  write it (the module graph is walked in Python on every call);
- ``jax-steps``: one jitted pure step per Python iteration, the graph split once
  (``jaxnets._train.train_epoch(loop="steps")``);
- ``jax-scan``: the steps as one jitted ``lax.scan`` (``train_epoch(loop="scan")``,
  ``train_full_batch`` for full-batch tasks);
- ``lesson``: the lesson as written: torchvision's ``datasets.MNIST`` with ``ToTensor()`` and
  ``Normalize`` applied per sample through ``DataLoader(batch_size, shuffle=True)``, each batch
  moved to the device and its loss read back (``loss.item()``), or the lesson's own loader or
  loop for the other datasets (``LESSONS``).

One repeat is one block of ``steps`` training steps at the lesson's batch size (mini-batch
tasks: the full batches of one epoch; full-batch tasks: ``FULL_BATCH_STEPS`` steps). The first
block is the warm-up (compilation included) and is reported apart; the device is awaited
before every clock read; steps/s comes from the median of ``repeats`` blocks, with min and max.
"""

import argparse
import contextlib
import copy
import dataclasses
import datetime
import functools
import gzip
import inspect
import itertools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from compare import CompareError, registry

ROOT = Path(__file__).resolve().parents[1]
TORCH_VARIANTS = ("torch-eager", "torch-compile", "torch-cudagraphs")  # the ratios' reference
JAX_VARIANTS = ("jax-nnx-jit", "jax-steps", "jax-scan")
VARIANTS = TORCH_VARIANTS + JAX_VARIANTS + ("lesson",)
WORKER_VARIANTS = {"torch": TORCH_VARIANTS + ("lesson",), "jax": JAX_VARIANTS}
FULL_BATCH_STEPS = 500  # one repeat of a full-batch task (flower-net's lesson runs 10,000)
MIN_BLOCK_STEPS = 50  # a block is one epoch, or this many steps of a shorter one (pos-tagger: 2)
QUICK_STEPS, QUICK_REPEATS, REPEATS = 4, 2, 5

DESCRIPTIONS = {
    "torch-eager": "the tutorial's train_step per batch, batches on the device",
    "torch-compile": "torch.compile(train_step), Inductor (GANs: each net compiled)",
    "torch-cudagraphs": 'torch.compile(train_step, mode="reduce-overhead"): CUDA graphs',
    "jax-nnx-jit": "the tutorial's @nnx.jit train_step per batch, batches on the device",
    "jax-steps": "one jitted pure step per Python iteration (graph split once)",
    "jax-scan": "all the block's steps as one jitted lax.scan",
    "lesson": "the lesson as written: DataLoader, per-sample transforms, .to(device), .item()",
}


# ------------------------------------------------------------------------------------------
# What the lesson does, per dataset (the "lesson" variant)


@dataclasses.dataclass(frozen=True)
class Lesson:
    kind: str  # "mnist": torchvision MNIST + transforms; "tensors": TensorDataset; "loop"
    mean: float = 0.0
    std: float = 1.0
    flatten: bool = False  # the lesson's loop flattens each batch before the model
    num_workers: int = 0


LESSONS = {
    # seeds/004: ToTensor(), Normalize((0.1307,), (0.3081,)), DataLoader(shuffle=True, 64)
    "mnist": Lesson("mnist", mean=0.1307, std=0.3081),
    # seeds/002 ch. 3: Normalize([0.5], [0.5]); the loop does img.view(img.size(0), -1)
    "mnist-half": Lesson("mnist", mean=0.5, std=0.5, flatten=True),
    # seeds/000 optimizers: Data.DataLoader(TensorDataset(x, y), BATCH_SIZE, shuffle, workers=2)
    "noisy-parabola": Lesson("tensors", num_workers=2),
    # seeds/003 (mnist-lstm): ToTensor() only, b_x.view(-1, 28, 28) inside the model
    "mnist-unit-2k": Lesson("mnist"),
    # seeds/002 ch. 8: the VAE's ToTensor() pixels, the GANs' Normalize([0.5], [0.5]), flattened
    # by the loop (DCGAN keeps the images)
    "mnist-pixels": Lesson("mnist", flatten=True),
    "mnist-half-train": Lesson("mnist", mean=0.5, std=0.5, flatten=True),
    "mnist-half-train-2d": Lesson("mnist", mean=0.5, std=0.5),
}


def lesson_for(task, hp):
    """The lesson's input pipeline; full-batch lessons loop over tensors built once on the CPU."""
    if task.dataset in LESSONS:
        return LESSONS[task.dataset]
    return Lesson("loop") if hp.batch_size is None else Lesson("tensors")


# ------------------------------------------------------------------------------------------
# How the bench feeds a task's train_step: one adapter per step signature


class Adapter:
    """The default: ``train_step(model, optimizer, x, y)`` on ``arrays["x"]``, ``arrays["y"]``.

    A task whose step takes more (noise drawn per step, a carried state, two optimizers)
    gets a subclass overriding what differs, registered in ``ADAPTERS`` under its name.
    """

    def unsupported(self, task):
        """Why the bench cannot run ``task`` (None when it can); checked without a device."""
        jax_module, torch_module = task.modules()
        for side, module in (("jax", jax_module), ("torch", torch_module)):
            try:
                params = list(inspect.signature(module.train_step).parameters)
            except (TypeError, ValueError, AttributeError):
                return f"{side} train_step has no inspectable signature"
            required = [
                p
                for p in inspect.signature(module.train_step).parameters.values()
                if p.default is inspect.Parameter.empty
            ]
            # a step whose noise argument defaults to None draws its own: a normal run's step
            if len(params) < 4 or len(required) != 4:
                return (
                    f"its {side} train_step{inspect.signature(module.train_step)} is not "
                    "(model, optimizer, x, y); add an Adapter for it in compare.bench.ADAPTERS"
                )
        return None

    # torch: the step function (run as it is, or compiled), and its arguments after
    # (model, optimizer), one tuple per step, already on the device
    def torch_step(self, module):
        return module.train_step

    def torch_compiled(self, module, mode=None):
        """The step as torch-compile times it: the whole step compiled."""
        import torch

        return torch.compile(self.torch_step(module), mode=mode)

    def lesson_step(self, module, model, optimizer, inputs, target):
        """One step of the lesson's loop, on the batch its loader yields."""
        return module.train_step(model, optimizer, inputs, target)

    def torch_batches(self, x, y, batches, full_batch):
        if full_batch:
            return [(x, y)] * len(batches)
        import torch

        index = [torch.from_numpy(np.asarray(b)).to(x.device) for b in batches]
        return [(x[i], y[i]) for i in index]

    # jax: the three loops, each returning something to block on
    def jax_nnx_jit(self, module, model, optimizer, x, y, batches, full_batch):
        if full_batch:
            args = [(x, y)] * len(batches)
        else:
            args = [(x[i], y[i]) for i in _device_put(batches)]
        return functools.partial(_nnx_jit_loop, module.train_step, model, optimizer, args)

    def jax_steps(self, module, model, optimizer, x, y, batches, full_batch):
        from jaxnets import _train

        if full_batch:
            return functools.partial(
                _full_batch_steps, module.train_step, model, optimizer, x, y, len(batches)
            )
        index = _device_put(batches)
        return _last(_train.train_epoch, module.train_step, model, optimizer, x, y, index, "steps")

    def jax_scan(self, module, model, optimizer, x, y, batches, full_batch):
        from jaxnets import _train

        if full_batch:
            return _last(
                _train.train_full_batch, module.train_step, model, optimizer, x, y, len(batches)
            )
        return _last(_train.train_epoch, module.train_step, model, optimizer, x, y, batches, "scan")


def _last(loop, *args):
    """``loop(*args)`` returns every step's loss; the bench keeps the last step's."""
    return lambda: loop(*args)[-1]


class CompiledNets(Adapter):
    """A GAN step backpropagates twice, the second time through G's graph kept from before D's
    update; compiled whole, Dynamo's graph breaks free that graph ("backward through the graph
    a second time"). So compile each net, ``D.compile()`` and ``G.compile()``, as PyTorch's
    DCGAN users do, and keep the step's Python as written."""

    def torch_compiled(self, module, mode=None):
        def step(model, optimizer, x, y):
            if not getattr(model, "bench_compiled", False):
                for net in (model.D, model.G):
                    net.compile(mode=mode)
                model.bench_compiled = True
            return module.train_step(model, optimizer, x, y)

        return step


# task name -> Adapter instance, for steps that are not (model, optimizer, x, y); the
# generative steps' fifth argument, noise, defaults to None (each side draws its own)
ADAPTERS = {"gan": CompiledNets(), "cgan": CompiledNets(), "dcgan": CompiledNets()}


def adapter_for(task):
    return ADAPTERS.get(task.name, Adapter())


def _device_put(batches):
    import jax

    return [jax.device_put(np.asarray(b)) for b in batches]


def _nnx_jit_loop(train_step, model, optimizer, args):
    loss = None
    for xb, yb in args:
        loss = train_step(model, optimizer, xb, yb)
    return loss


@functools.cache
def _full_batch_step():
    import jax
    from flax import nnx

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def step(train_step, graphdef, state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(model, optimizer, x, y)
        return nnx.state((model, optimizer)), loss

    return step


def _full_batch_steps(train_step, model, optimizer, x, y, num_steps):
    """The full-batch twin of ``train_epoch(loop="steps")``: one jitted pure step per step."""
    from flax import nnx

    step = _full_batch_step()
    graphdef, state = nnx.split((model, optimizer))
    loss = None
    for _ in range(num_steps):
        state, loss = step(train_step, graphdef, state, x, y)
    nnx.update((model, optimizer), state)
    return loss


# ------------------------------------------------------------------------------------------
# Timing


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


def _one_line(err):
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip().rstrip(":")[:300]


def _loss_value(loss):
    value = np.asarray(loss, dtype=np.float64)
    return float(value.mean())


# ------------------------------------------------------------------------------------------
# The torch child


def torch_worker(task, opts):
    import torch

    from compare.twins import make_twins

    if opts["device"] == "cuda" and not torch.cuda.is_available():
        raise CompareError("--device cuda: torch sees no CUDA device")
    cuda = opts["device"] == "cuda" or (opts["device"] == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    twins = make_twins(task, dtype=opts["dtype"], seed=opts["seed"])
    precision = set_torch_precision(opts["tf32"])
    hp, module = twins.hp, twins.torch_module
    full_batch = hp.batch_size is None
    batches, samples_per_step = plan(twins, opts)
    x = twins.torch_arrays["x"].to(device)
    y = twins.torch_arrays["y"].to(device)
    adapter = adapter_for(task)
    args = adapter.torch_batches(x, y, batches, full_batch)

    def sync(_):
        if cuda:
            torch.cuda.synchronize(device)

    def fresh():  # the common initial weights, a new optimizer: every variant starts alike
        model = copy.deepcopy(twins.torch_model).to(device)
        model.train()
        optimizer = module.new_optimizer(model, hp)
        if hasattr(module, "start_epoch"):  # the lesson's learning rate for epoch 0, which
            module.start_epoch(optimizer, 0, hp)  # optax's schedule holds from step 0
        return model, optimizer

    def stepper(step, mark=False):
        model, optimizer = fresh()

        def block():
            loss = None
            for batch in args:
                if mark:  # a new iteration: earlier outputs may be overwritten by the replay
                    torch.compiler.cudagraph_mark_step_begin()
                loss = step(model, optimizer, *batch)
            return loss

        return block

    def compiled(mode=None):
        from torch._dynamo.utils import counters

        torch._dynamo.reset()  # its own compilation, timed in its own warm-up
        counters.clear()
        step = adapter.torch_compiled(module, mode=mode)
        return stepper(step, mark=mode == "reduce-overhead")

    results = {}
    builders = {
        "torch-eager": lambda: stepper(adapter.torch_step(module)),
        "torch-compile": lambda: compiled(),
        "torch-cudagraphs": lambda: compiled("reduce-overhead"),
    }
    for name, build in builders.items():
        if name == "torch-cudagraphs" and not cuda:
            results[name] = {"status": "skipped", "reason": "CUDA graphs need a CUDA device"}
            continue
        results[name] = _run_variant(
            build,
            sync,
            opts,
            len(args),
            samples_per_step,
            lambda out: _loss_value(out.cpu()),
            extra=_dynamo_counts if name != "torch-eager" else None,
        )
    with tempfile.TemporaryDirectory(prefix="bench-lesson-") as tmp:
        results["lesson"] = _run_variant(
            lambda: lesson_block(twins, adapter, fresh, device, len(batches), opts, tmp),
            sync,
            opts,
            len(batches),
            samples_per_step,
            lambda out: out,
        )
    return {
        "variants": results,
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({cpu_name()})",
        "device_kind": "cuda" if cuda else "cpu",
        "precision": precision,
        "threads": torch.get_num_threads(),
        "dataset": twins.dataset,
        "batch_size": hp.batch_size,
        "samples_per_step": samples_per_step,
        "steps": len(batches),
    }


def set_torch_precision(tf32):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return {
        "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "torch.get_float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def _run_variant(build, sync, opts, steps, samples_per_step, read_loss, extra=None):
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
        return {"status": "failed", "reason": _one_line(err)}


def _dynamo_counts():
    """What torch.compile made of the step: graphs, graph breaks, CUDA graph skips (each skip
    is logged with its reason under ``TORCH_LOGS=cudagraphs``)."""
    from torch._dynamo.utils import counters

    return {
        "compiled_graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"]),
    }


def lesson_block(twins, adapter, fresh, device, steps, opts, tmp):
    """The lesson's own loop: its loader, ``.to(device)`` per batch, the loss read back."""
    import torch

    task, hp, module = twins.task, twins.hp, twins.torch_module
    lesson = lesson_for(task, hp)
    model, optimizer = fresh()
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[twins.dtype]
    if lesson.kind == "loop":  # lessons A-C: tensors built once, on the CPU, no device code
        model, optimizer = model.cpu(), module.new_optimizer(model.cpu(), hp)
        x, y = twins.torch_arrays["x"], twins.torch_arrays["y"]

        def block():
            loss = None
            for _ in range(steps):
                loss = adapter.lesson_step(module, model, optimizer, x, y)
            return _loss_value(loss)

        return block
    if lesson.kind == "mnist":
        dataset = lesson_mnist(tmp, lesson)
    else:
        from torch.utils.data import TensorDataset

        dataset = TensorDataset(twins.torch_arrays["x"], twins.torch_arrays["y"])
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=hp.batch_size,
        shuffle=True,
        num_workers=lesson.num_workers,
        generator=torch.Generator().manual_seed(opts["seed"]),
    )

    def block():
        running_loss = 0.0
        # the block's full batches, epoch after epoch when the block is longer than one
        epochs = itertools.chain.from_iterable(iter(loader) for _ in itertools.count())
        for inputs, target in itertools.islice(epochs, steps):
            # features in the run's dtype; word indices stay integers
            dtype = torch_dtype if inputs.is_floating_point() else inputs.dtype
            inputs, target = inputs.to(device, dtype), target.to(device)
            if lesson.flatten:
                inputs = inputs.view(inputs.size(0), -1)
            loss = adapter.lesson_step(module, model, optimizer, inputs, target)
            running_loss += float(np.mean(loss.tolist()))  # the lesson's loss.item()
        return running_loss / steps

    return block


def lesson_mnist(root, lesson):
    """torchvision's ``datasets.MNIST`` over the shipped files, unpacked where it looks for
    them (``root/MNIST/raw``, under the full set's names), with the lesson's transforms."""
    from torchvision import datasets, transforms

    from compare import data

    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for key, name in data.MNIST_FILES.items():
        target = raw / name
        if not target.exists():
            target.write_bytes(
                gzip.decompress((data.SHIPPED_MNIST / data.SHIPPED_FILES[key]).read_bytes())
            )
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((lesson.mean,), (lesson.std,))]
    )
    return datasets.MNIST(root=str(root), train=True, download=False, transform=transform)


# ------------------------------------------------------------------------------------------
# The JAX child


def jax_worker(task, opts):
    import jax
    from flax import nnx

    from compare import port
    from compare.twins import DTYPES, make_twins

    backend = jax.default_backend()
    if opts["device"] == "cuda" and backend != "gpu":
        raise CompareError(f"--device cuda: JAX runs on {backend}, not on a CUDA device")
    twins = make_twins(task, dtype=opts["dtype"], seed=opts["seed"])
    precision = set_jax_precision(opts["tf32"])
    hp, module = twins.hp, twins.jax_module
    full_batch = hp.batch_size is None
    batches, samples_per_step = plan(twins, opts)
    x, y = twins.jax_arrays["x"], twins.jax_arrays["y"]
    adapter = adapter_for(task)
    np_dtype = DTYPES[opts["dtype"]][0]

    def fresh():
        model = module.new_model(hp, nnx.Rngs(opts["seed"]))
        port.to_nnx(model, twins.initial, dtype=np_dtype)
        model.train()
        return model, module.new_optimizer(model, hp)

    def sync(out):
        if out is not None:
            jax.block_until_ready(out)

    def build(loop):
        model, optimizer = fresh()
        run = loop(module, model, optimizer, x, y, batches, full_batch)

        def block():
            loss = run()
            return loss, nnx.state((model, optimizer))  # the last update awaited too

        return block

    results = {}
    loops = {
        "jax-nnx-jit": adapter.jax_nnx_jit,
        "jax-steps": adapter.jax_steps,
        "jax-scan": adapter.jax_scan,
    }
    for name, loop in loops.items():
        results[name] = _run_variant(
            functools.partial(build, loop),
            sync,
            opts,
            len(batches),
            samples_per_step,
            lambda out: _loss_value(out[0]),
        )
    device = jax.devices()[0]
    return {
        "variants": results,
        "device": device.device_kind if backend != "cpu" else f"cpu ({cpu_name()})",
        "device_kind": "cuda" if backend == "gpu" else backend,
        "precision": precision,
        "platform_version": getattr(device.client, "platform_version", "unknown"),
    }


def set_jax_precision(tf32):
    import jax

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    return {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision}


# ------------------------------------------------------------------------------------------
# Both children


def plan(twins, opts):
    """The block of steps every variant times, and the samples one step trains on.

    Mini-batch tasks: the full batches of the first epoch of ``data.batch_order`` (the short
    last batch left out, so every step has the lesson's batch size and nothing recompiles; at
    least ``MIN_BLOCK_STEPS``, running on into the next epochs); full-batch tasks:
    ``FULL_BATCH_STEPS`` steps on all the data. ``--steps`` and ``--quick`` shorten or
    lengthen the block."""
    from compare import data

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


def cpu_name():
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def worker_main(argv=None):
    """The hidden child entry: ``python -m compare.bench --worker torch|jax TASK ...``."""
    p = argparse.ArgumentParser(prog="python -m compare.bench")
    p.add_argument("--worker", choices=("torch", "jax"), required=True)
    p.add_argument("task")
    p.add_argument("--options", required=True, help="JSON")
    p.add_argument("--result", required=True, help="where to write the JSON result")
    args = p.parse_args(argv)
    opts = json.loads(args.options)
    try:
        task = registry.get(args.task)
        work = torch_worker if args.worker == "torch" else jax_worker
        result = work(task, opts)
        code = 0
    except CompareError as err:
        result, code = {"error": str(err)}, 2
    except Exception as err:
        if opts.get("debug"):
            traceback.print_exc()
        result, code = {"error": _one_line(err)}, 1
    Path(args.result).write_text(json.dumps(result))
    return code


# ------------------------------------------------------------------------------------------
# The parent


def make_options(
    quick=False,
    repeats=None,
    steps=None,
    dtype="float32",
    device="auto",
    tf32=False,
    seed=0,
    debug=False,
):
    """The children's settings, checked once (a bad option fails before any child starts)."""
    if dtype not in ("float32", "float64"):
        raise CompareError(f"unknown dtype {dtype!r}; use float32 or float64")
    if device not in ("auto", "cpu", "cuda"):
        raise CompareError(f"unknown device {device!r}; use auto, cpu or cuda")
    if repeats is not None and repeats < 1:
        raise CompareError("--repeats must be at least 1")
    if steps is not None and steps < 1:
        raise CompareError("--steps must be at least 1")
    return {
        "quick": quick,
        "repeats": repeats or (QUICK_REPEATS if quick else REPEATS),
        "steps": steps,
        "dtype": dtype,
        "device": device,
        "tf32": tf32,
        "seed": seed,
        "debug": debug,
    }


def bench_task(name, opts, progress=False):
    """Both children for one task, merged: the JSON ``bench TASK --json`` prints."""
    task = registry.get(name)
    reason = adapter_for(task).unsupported(task)
    if reason is not None:
        raise CompareError(f"{task.name}: the bench cannot run it: {reason}")
    machine = host()  # the load before the children add theirs
    children = {}
    for framework in ("torch", "jax"):
        if progress:
            print(f"bench {task.name}: {framework} variants ...", file=sys.stderr, flush=True)
        children[framework] = _spawn(framework, task.name, opts)
    return merge(task, opts, children["torch"], children["jax"], machine)


def _spawn(framework, name, opts):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if framework == "torch" or opts["device"] == "cpu":
        env["JAX_PLATFORMS"] = "cpu"  # the torch child's JAX arrays never touch the GPU
    elif opts["device"] == "cuda":
        env["JAX_PLATFORMS"] = "cuda"
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "compare.bench", "--worker", framework, name]
        cmd += ["--options", json.dumps(opts), "--result", str(result_file)]
        proc = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True)
        if opts.get("debug"):
            sys.stderr.write(proc.stderr)
        if result_file.exists():
            result = json.loads(result_file.read_text())
        else:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit status {proc.returncode}"
            result = {"error": f"the {framework} child died: {last}"}
    if "error" in result:
        raise CompareError(f"{name}: {framework} bench: {result['error']}")
    return result


def merge(task, opts, torch_part, jax_part, machine=None):
    variants = {}
    for name in VARIANTS:
        part = torch_part if name in WORKER_VARIANTS["torch"] else jax_part
        row = {"framework": "torch" if part is torch_part else "jax"}
        row["what"] = DESCRIPTIONS[name]
        row.update(part["variants"][name])
        variants[name] = row
    ran = {n: v for n, v in variants.items() if v["status"] == "ran"}
    best = max(
        (n for n in TORCH_VARIANTS if n in ran), key=lambda n: ran[n]["steps_per_s"], default=None
    )
    lesson = ran.get("lesson")
    for row in variants.values():
        if row["status"] == "ran":
            row["ratio"] = row["steps_per_s"] / ran[best]["steps_per_s"] if best else None
            row["ratio_to_lesson"] = row["steps_per_s"] / lesson["steps_per_s"] if lesson else None
        else:
            row["ratio"] = row["ratio_to_lesson"] = None
    return {
        "task": task.name,
        "dataset": torch_part["dataset"],
        "dtype": opts["dtype"],
        "batch_size": torch_part["batch_size"],
        "samples_per_step": torch_part["samples_per_step"],
        "steps": torch_part["steps"],
        "repeats": opts["repeats"],
        "quick": opts["quick"],
        "precision": {
            "mode": "tf32" if opts["tf32"] else "highest (no TF32)",
            "torch": torch_part["precision"],
            "jax": jax_part["precision"],
        },
        "device": {"torch": torch_part["device"], "jax": jax_part["device"]},
        "device_kind": {"torch": torch_part["device_kind"], "jax": jax_part["device_kind"]},
        "torch_threads": torch_part["threads"],
        "host": machine or host(),
        "best_torch": best,
        "variants": variants,
        "versions": versions(jax_part.get("platform_version")),
        "git": git_revision(),
        "date": datetime.date.today().isoformat(),
        "command": command_line([task.name], opts),
    }


def host():
    """The machine: CPU, cores this process may use, load (timings on a shared machine vary)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_name(),
        "cores_usable": cores,
        "load_average_1min": round(load[0], 2) if load else None,
        "platform": platform.platform(),
    }


def versions(platform_version=None):
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "flax", "optax", "torch", "torchvision", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "absent"
    if platform_version:
        out["xla_platform"] = platform_version
    return out


def git_revision():
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"


def command_line(tasks, opts, all_tasks=False, out=None):
    words = ["python", "-m", "compare", "bench"] + (["--all"] if all_tasks else list(tasks))
    if opts["quick"]:
        words.append("--quick")
    words += ["--repeats", str(opts["repeats"])]
    if opts["steps"]:
        words += ["--steps", str(opts["steps"])]
    words += ["--dtype", opts["dtype"], "--device", opts["device"]]
    if opts["tf32"]:
        words.append("--tf32")
    if opts["seed"]:
        words += ["--seed", str(opts["seed"])]
    if out is not None:
        words += ["--out", str(out)]
    return shlex.join(words)


def bench_all(opts, progress=False):
    """Every task in the registry; those the bench cannot run are listed with the reason."""
    results, skipped = [], {}
    for name, task in registry.TASKS.items():
        try:
            reason = adapter_for(task).unsupported(task)
        except Exception as err:  # a task whose modules do not even import
            reason = _one_line(err)
        if reason is not None:
            skipped[name] = reason
            continue
        try:
            results.append(bench_task(name, opts, progress=progress))
        except CompareError as err:
            skipped[name] = str(err)
    return {
        "tasks": results,
        "skipped": skipped,
        "command": command_line([], opts, all_tasks=True),
    }


# ------------------------------------------------------------------------------------------
# Output


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def markdown(result):
    """One task's table, its setting above it."""
    lines = [
        f"### {result['task']}",
        "",
        f"`{result['command']}`",
        "",
        f"{result['date']}; torch on {result['device']['torch']}, JAX on "
        f"{result['device']['jax']}; {result['dtype']}, precision {result['precision']['mode']}; "
        f"batch {result['batch_size'] or 'full'} ({result['samples_per_step']} samples/step); "
        f"{result['steps']} steps x {result['repeats']} repeats after one warm-up block; "
        f"git {result['git'][:12]}.",
        "",
        "| variant | steps/s | samples/s | ratio to best torch | spread | warm-up s | compile s "
        "| status |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in result["variants"].items():
        if row["status"] == "ran":
            mark = " (best torch)" if name == result["best_torch"] else ""
            lines.append(
                f"| {name} | {_fmt(row['steps_per_s'])} | {_fmt(row['samples_per_s'])} "
                f"| {_fmt(row['ratio'])}{mark} | {100 * row['spread']:.0f} % "
                f"| {row['warmup_s']:.2f} | {row['compile_s']:.2f} | ran |"
            )
        else:
            lines.append(f"| {name} | - | - | - | - | - | - | {row['status']}: {row['reason']} |")
    return "\n".join(lines) + "\n"


def summary_markdown(results, skipped=None):
    """Every task in one table: steps/s per variant and, in brackets, its ratio to the best
    torch variant."""
    shown = [v for v in VARIANTS if any(r["variants"][v]["status"] == "ran" for r in results)]
    lines = [
        "| task | batch | " + " | ".join(shown) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in shown) + " |",
    ]
    for r in results:
        cells = []
        for v in shown:
            row = r["variants"][v]
            cells.append(
                f"{_fmt(row['steps_per_s'])} ({_fmt(row['ratio'], 2)}x)"
                if row["status"] == "ran"
                else row["status"]
            )
        lines.append(f"| {r['task']} | {r['batch_size'] or 'full'} | " + " | ".join(cells) + " |")
    for name, reason in (skipped or {}).items():
        lines.append(f"| {name} | - | skipped: {reason} |")
    return "\n".join(lines) + "\n"


def write(out_dir, payload, text, results):
    """``bench.md``, ``bench.png`` and ``bench.json`` (last), through a staging directory."""
    from compare import plots
    from compare.runs import _check_writable

    out_dir = Path(out_dir)
    _check_writable(out_dir)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as err:
        raise CompareError(f"--out {out_dir}: cannot write there ({err.strerror or err})") from None
    names = ("bench.md", "bench.png", "bench.json")
    try:
        (staging / "bench.md").write_text(text)
        plots.bench_speeds(results, staging / "bench.png")
        (staging / "bench.json").write_text(json.dumps(payload, indent=1))
        out_dir.mkdir(exist_ok=True)
        for name in names:  # bench.json last
            shutil.move(staging / name, out_dir / name)
    except OSError as err:
        raise CompareError(f"--out {out_dir}: writing the results failed ({err})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [str(out_dir / n) for n in names]


if __name__ == "__main__":
    sys.exit(worker_main())
