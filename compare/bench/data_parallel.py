"""``bench TASK --data-parallel N``: steps/s and samples/s of each side on 1 and on N devices,
and the efficiency (speed-up / N) against one device, the global batch fixed (the lesson's).

One block is the bench's (``timing.plan``: the full batches of an epoch, at least
``MIN_BLOCK_STEPS`` of them, ``--steps`` to change it), timed ``repeats``
times after a warm-up block, as the rest of the bench. JAX runs in this process on the mesh
of ``compare.parallel`` (N host devices on a CPU: the CLI asks for them before JAX starts);
each timed JAX block includes putting its batches on the mesh. torch runs N
``DistributedDataParallel`` ranks (``compare.parallel.launch``) that time the block between
two barriers; their start-up is not timed. On a CPU with fewer cores than processes this
measures contention, not scaling: the figures are a demonstration there, real on GPUs.
"""

import datetime
import tempfile
import time
from pathlib import Path

import numpy as np

from compare.bench.machine import git_revision, host, versions
from compare.bench.timing import plan, summarize
from compare.errors import CompareError
from compare.parallel import jax_mesh, launch, policy
from compare.tutorials import registry


def _order(twins, opts):
    """The bench's block (``timing.plan``: full batches, at least ``MIN_BLOCK_STEPS``) as a
    one-epoch schedule, and the epochs of the data order it was taken from."""
    if twins.hp.batch_size is None:
        raise CompareError(f"{twins.task.name}: full-batch training, nothing to split")
    block, _ = plan(twins, opts)
    per_epoch = len(twins.arrays["x"]) // twins.hp.batch_size
    return [block], -(-len(block) // per_epoch)


def _row(framework, n, seconds, steps, batch, base=None):
    """The bench's usual figures of one side on ``n`` devices (``seconds[0]``: the warm-up)."""
    row = {"framework": framework, "devices": n}
    row.update(summarize(seconds[0], seconds[1:], steps, batch))
    row["efficiency"] = 1.0 if base is None else row["steps_per_s"] / base / n
    return row


def bench(name, n, opts):
    """Both sides at 1 and at ``n`` devices; the JSON ``bench TASK --data-parallel N`` prints."""
    import jax
    import torch

    from compare.tutorials.twins import make_twins

    task = registry.get(name)
    policy.check_request(task, task.hp, n)
    jax_mesh.mesh(n)  # enough devices, before anything runs
    counts = sorted({1, n})
    rows, torch_sizes = [], None
    twins = make_twins(task, dtype=opts["dtype"], seed=opts["seed"])
    order, epochs = _order(twins, opts)
    policy.check_split(order, n)
    steps, batch = len(order[0]), twins.hp.batch_size
    base = {}
    for count in counts:  # JAX in this process
        fresh = make_twins(task, dtype=opts["dtype"], seed=opts["seed"])
        data_mesh = jax_mesh.mesh(count)
        seconds = []
        for _ in range(opts["repeats"] + 1):
            start = time.perf_counter()
            losses, _ = jax_mesh.train_jax_sharded(fresh, order, data_mesh)
            np.asarray(losses)  # on the host: the block is done
            seconds.append(time.perf_counter() - start)
        row = _row("jax", count, seconds, steps, batch, base.get("jax"))
        base.setdefault("jax", row["steps_per_s"])
        rows.append(row)
    for count in counts:  # torch: count ranks
        with tempfile.TemporaryDirectory(prefix="twinnets-bench-dp-") as tmp:
            out = Path(tmp) / "torch.npz"
            extra = ["--time-repeats", str(opts["repeats"]), "--full-batches-only"]
            argv = launch.worker_args(
                task.name,
                opts["dtype"],
                opts["seed"],
                epochs,
                steps,
                twins.hp,
                None,
                None,
                str(out),
                extra,
            )
            launch.launch("torch", count, argv)
            with np.load(out) as f:
                seconds, sizes = f["seconds"].tolist(), f["sizes"].tolist()
                timed = int(f["steps"])
        if timed != steps:  # both sides must time the same block
            raise CompareError(f"bench: the torch ranks timed {timed} steps, JAX {steps}")
        row = _row("torch", count, seconds, steps, batch, base.get("torch"))
        base.setdefault("torch", row["steps_per_s"])
        rows.append(row)
        torch_sizes = sizes
    return {
        "task": task.name,
        "data_parallel": n,
        "dtype": opts["dtype"],
        "global_batch": batch,
        "steps": steps,
        "repeats": opts["repeats"],
        "per_device_batch": torch_sizes,
        "rows": rows,
        "device": {
            "jax": jax.default_backend(),
            "torch": "cuda" if torch.cuda.is_available() else "cpu",
        },
        "host": host(),
        "versions": versions(),
        "git": git_revision(),
        "date": datetime.date.today().isoformat(),
        "note": (
            "efficiency = steps/s on N devices / steps/s on 1 / N, the global batch fixed; "
            "on a CPU the N devices share its cores (a correctness demo, not a speed-up)"
        ),
    }


def markdown(result):
    lines = [
        f"## {result['task']}: data-parallel, global batch {result['global_batch']} "
        f"({' + '.join(map(str, result['per_device_batch']))} on {result['data_parallel']}), "
        f"{result['dtype']}, {result['steps']} steps per block, median of {result['repeats']}",
        "",
        "| framework | devices | steps/s | samples/s | efficiency vs 1 device | warm-up s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['framework']} | {r['devices']} | {r['steps_per_s']:.3g} | "
            f"{r['samples_per_s']:.3g} | {r['efficiency']:.2f} | {r['warmup_s']:.2f} |"
        )
    lines += ["", result["note"], ""]
    return "\n".join(lines)
