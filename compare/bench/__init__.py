"""The ``bench`` verb: how fast each framework runs a task's training step (docs/BENCHMARKS.md).

The parent (``bench``) starts one child process per framework, ``python -m compare.bench
--worker torch|jax ...``, and merges what they report: torch.compile's threads and JAX's
device memory never share a process, and each child sets the same precision mode. Each child
builds its side with ``compare.tutorials.twins.make_twins`` (the same initial weights on both
sides, the data on the device in the bench dtype) and times every variant of its framework:

- ``torch-eager``: the tutorial's ``train_step`` once per batch, batches indexed on the device
  beforehand;
- ``torch-compile``: ``torch.compile(train_step)``, the whole step (forward, backward,
  optimizer) compiled by Inductor, graph breaks where Dynamo puts them;
- ``torch-cudagraphs``: the same with ``mode="reduce-overhead"`` (CUDA graphs), GPU only;
- ``jax-nnx-jit``: the tutorial's ``@nnx.jit`` ``train_step`` once per batch, as Flax users
  write it (the module graph is walked in Python on every call);
- ``jax-steps``: one jitted pure step per Python iteration, the graph split once
  (``jaxnets.train_epoch(loop="steps")``);
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

The package, along those seams: ``variants`` (the names), ``timing`` (one block, timed),
``adapters`` (feeding a task's step), ``torch_worker`` and ``jax_worker`` (each framework's
timing loop), ``lessons`` (the lesson as written), ``machine`` (where it ran), ``report``
(markdown, files), ``__main__`` (the children's entry); this module is the parent.
"""

import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from compare.bench.adapters import Adapter, adapter_for
from compare.bench.machine import ROOT, git_revision, host, versions
from compare.bench.report import markdown, summary_markdown, write
from compare.bench.timing import one_line
from compare.bench.variants import (
    DESCRIPTIONS,
    JAX_VARIANTS,
    QUICK_REPEATS,
    QUICK_STEPS,
    REPEATS,
    TORCH_VARIANTS,
    VARIANTS,
    WORKER_VARIANTS,
)
from compare.errors import CompareError
from compare.tutorials import registry

__all__ = [
    "JAX_VARIANTS",
    "QUICK_STEPS",
    "TORCH_VARIANTS",
    "VARIANTS",
    "Adapter",
    "adapter_for",
    "bench_all",
    "bench_task",
    "command_line",
    "make_options",
    "markdown",
    "summary_markdown",
    "write",
]


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
            reason = one_line(err)
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
