"""Data-parallel training (``--data-parallel N``) on each framework's own engine.

JAX: a ``Mesh`` over N devices, every global batch sharded along ``"data"``
(``NamedSharding(mesh, P(None, "data"))`` over the epoch's stacked batches), the model and
optimizer state replicated (``P()``); the tutorial's own jitted ``train_step`` inside one
``lax.scan`` per run of equal batches, as on one device. XLA partitions the step: the batch
mean of the loss (and BatchNorm's batch statistics) become an all-reduce over the devices.
On CPU the N devices are host devices (``jax_num_cpu_devices``, set before JAX starts); on
several hosts ``jax.distributed.initialize`` joins them and each process feeds its own rows
(``jax.make_array_from_process_local_data``): ``python -m compare.parallel jax ...``.

torch: N processes (the CLI starts them, or ``torchrun``: ``python -m compare.parallel torch``
reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), ``torch.distributed`` with
gloo on CPU and nccl on CUDA, the model in ``DistributedDataParallel``, the tutorial's own
``train_step`` on the wrapper. Rank r takes the r-th contiguous slice of every global batch
from ``compare/data.py``'s order (``np.array_split``: sizes differ by at most one). DDP's
averaging assumes equal slices; a comm hook (DDP's own ``register_comm_hook``) weights each
rank's gradient by its share ``b_r / B`` before the all-reduce sums them, which is the global
batch's mean gradient for a mean loss (a summed loss: weight 1). Rank 0 alone writes the
result, atomically, at the end.

Batches whose size N does not divide (a short last batch) run replicated on the JAX side:
every device the whole batch, the single-device result, no speed-up (counted in the output).
"""

import argparse
import dataclasses
import functools
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from compare import CompareError, registry

TIMEOUT_S = float(os.environ.get("TWINNETS_DIST_TIMEOUT", "120"))  # a collective's time-out


# --- what can be data-parallel ----------------------------------------------------------------


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


# --- JAX: one mesh -----------------------------------------------------------------------------


def set_jax_devices(n):
    """Ask for ``n`` host devices on CPU; must run before JAX's backend starts (the CLI calls
    it first thing). Elsewhere (GPUs) the devices are what the machine has."""
    import jax

    try:
        if int(jax.config.jax_num_cpu_devices or 0) < n:
            jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # the backend is already up: mesh() says what there is
        pass


def mesh(n):
    """A 1-d ``Mesh`` named ``"data"`` over the first ``n`` devices (all processes')."""
    import jax
    from jax.sharding import Mesh

    devices = jax.devices()
    if len(devices) < n:
        raise CompareError(
            f"--data-parallel {n}: JAX sees {len(devices)} device(s) "
            f"({jax.default_backend()}); on CPU the count is fixed when JAX starts "
            "(jax_num_cpu_devices)"
        )
    return Mesh(np.array(devices[:n]), ("data",))


def _put(array, sharding):
    """``array`` (the same numpy array in every process) as a global array: this process
    feeds the rows its devices hold (all of them in a single process)."""
    import jax

    array = np.asarray(array)
    spec = sharding.spec
    if len(spec) < 2 or spec[1] is None or jax.process_count() == 1:
        local = array
    else:  # axis 1 (the batch) split evenly over the processes, in process order
        rows = array.shape[1] // jax.process_count()
        start = jax.process_index() * rows
        local = array[:, start : start + rows]
    return jax.make_array_from_process_local_data(sharding, local, array.shape)


def _put_state(value, sharding):
    """A model or optimizer leaf replicated over the mesh; an RNG key through its key data."""
    import jax

    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = _put(np.asarray(jax.random.key_data(value)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    return _put(value, sharding)


@functools.cache
def _scan_sharded():
    """The jitted whole-run scan over batches already on the mesh (built once).

    ``jaxnets._train._scan_batches``'s twin, but fed the gathered batches, not indices into
    the data set: gathered outside, each batch is put on the mesh row-sharded (and, across
    processes, each process feeds only its rows); a gather inside the scan would leave the
    batch's layout to XLA's propagation."""
    import jax
    from flax import nnx

    from jaxnets._train import _noise_args

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def scan(train_step, graphdef, state, xs, ys, noise):
        def body(state, batch):
            xb, yb, step_noise = batch  # one global batch, sharded along "data"
            model, optimizer = nnx.merge(graphdef, state)
            loss = train_step(model, optimizer, xb, yb, *_noise_args(step_noise))
            return nnx.state((model, optimizer)), loss

        return jax.lax.scan(body, state, (xs, ys, noise))

    return scan


def train_jax_sharded(twins, order, data_mesh, noise=None, progress=False, **_):
    """The JAX side over ``order`` on ``data_mesh``: like ``twins.train_jax`` (the same
    tutorial step in a jitted scan) with each global batch sharded over the mesh and the
    state replicated. Returns ``(losses, info)``; ``info`` counts the sharded and the
    replicated batches and gives the per-device sizes of the first batch."""
    import jax
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from compare import data
    from compare.twins import DTYPES, _check_finite, cast

    scan = _scan_sharded()
    n = data_mesh.size
    np_dtype = DTYPES[twins.dtype][0]
    module, model, optimizer = twins.jax_module, twins.jax_model, twins.jax_optimizer
    x = cast(twins.arrays["x"], np_dtype)
    x = data.nhwc(x) if x.ndim == 4 else x  # images: NCHW -> NHWC, once
    y = cast(twins.arrays["y"], np_dtype)
    replicated = NamedSharding(data_mesh, P())
    graphdef, state = nnx.split((model, optimizer))
    state = jax.tree.map(lambda a: _put_state(a, replicated), state)
    model.train()
    losses, info = [], {"sharded_batches": 0, "replicated_batches": 0}
    for number, epoch in enumerate(order):
        step = 0
        while step < len(epoch):  # runs of equal-sized batches, each one scan
            size = len(epoch[step])
            end = step
            while end < len(epoch) and len(epoch[end]) == size:
                end += 1
            idx = np.stack(epoch[step:end])  # (steps, size)
            split = size % n == 0
            sharding = NamedSharding(data_mesh, P(None, "data") if split else P())
            xs, ys = _put(x[idx], sharding), _put(y[idx], sharding)
            run_noise = None
            if noise is not None:
                run_noise = {
                    k: _put(
                        np.stack([cast(s[k], np_dtype) for s in noise[number][step:end]]), sharding
                    )
                    for k in noise[number][step]
                }
            if "first_batch" not in info:
                info["first_batch"] = size
                info["jax_device_batches"] = [
                    int(s.data.shape[1])
                    for s in sorted(xs.addressable_shards, key=lambda s: s.device.id)
                ]
            state, chunk = scan(module.train_step, graphdef, state, xs, ys, run_noise)
            chunk = np.asarray(chunk.addressable_data(0))
            _check_finite(chunk, "jax", twins.task.name, sum(map(len, losses)))
            losses.append(chunk)
            info["sharded_batches" if split else "replicated_batches"] += end - step
            step = end
    # back on one device: the evaluation and pictures use the model as usual
    state = jax.tree.map(lambda a: a.addressable_data(0), state)
    nnx.update((model, optimizer), state)
    return np.concatenate(losses), info


# --- torch: N ranks ----------------------------------------------------------------------------


def _torch_plan(args):
    """What one rank trains: the task's torch model from the common seed (or ``--init-from``),
    its optimizer, the data, the schedule and the noise, all as ``parity``/``run`` build them
    (``twins.make_twins`` without the JAX side)."""
    import torch

    from compare import data, port, twins

    task = registry.get(args.task)
    hp = hp_from_json(task, args.hp)
    np_dtype, torch_dtype = twins.DTYPES[args.dtype]
    arrays = data.load(task.name, data_dir=args.data_dir)
    if "steps_per_epoch" in {f.name for f in dataclasses.fields(hp)}:
        hp = dataclasses.replace(hp, steps_per_epoch=math.ceil(len(arrays["x"]) / hp.batch_size))
    module = task.modules()[1]
    torch.manual_seed(args.seed)
    model = module.new_model(hp)
    if args.init_from:
        port.load_into_torch(model, port.read_state_dict(args.init_from), source=args.init_from)
    model = model.to(torch_dtype)
    order = data.batch_order(
        len(arrays["x"]), hp.batch_size, args.epochs, seed=args.seed, shuffle=task.shuffle
    )
    if getattr(args, "full_batches_only", False):  # the bench's block (compare.bench.timing)
        full = [idx for epoch in order for idx in epoch if len(idx) == hp.batch_size]
        order = [full[: args.steps or len(full)]]
    elif args.steps:
        from compare.parity import _first_steps

        order = _first_steps(order, args.steps)
    holder = argparse.Namespace(task=task, hp=hp)
    noise = twins.draw_noise(holder, order, seed=args.seed)
    tensors = {k: torch.from_numpy(twins.cast(v, np_dtype)) for k, v in arrays.items()}
    return task, hp, module, model, tensors, order, noise, np_dtype


def torch_worker(args):
    """One rank of the torch side (started by ``launch`` or by ``torchrun``)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from compare import port, twins

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if not cuda:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    task, hp, module, model, tensors, order, noise, np_dtype = _torch_plan(args)
    check_split(order, world)
    fail = os.environ.get("TWINNETS_TEST_FAIL", "")  # "rank:step" or "rank:start" (tests)
    if fail == f"{rank}:start":  # a rank that never joins
        os._exit(4)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=os.environ.get("TWINNETS_INIT", "env://"),
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # global batch statistics
    model = model.to(device)
    optimizer = module.new_optimizer(model, hp)
    ddp = DDP(model, device_ids=[local_rank] if cuda else None)
    share = {"weight": 1.0}

    def weighted_sum(state, bucket):  # DDP's comm-hook API: this rank's share, then a sum
        tensor = bucket.buffer().mul_(state["weight"])
        fut = dist.all_reduce(tensor, async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])

    if os.environ.get("TWINNETS_DDP_AVERAGE") != "1":  # "1": DDP's own average (tests: wrong
        ddp.register_comm_hook(share, weighted_sum)  # for uneven slices)
    start_epoch = getattr(module, "start_epoch", None)
    x, y = tensors["x"], tensors["y"]
    weighted, sizes = [], []

    def train(order, first_step=0):
        step = first_step
        for number, epoch in enumerate(order):
            if start_epoch is not None:
                start_epoch(optimizer, number, hp)
            for i, idx in enumerate(epoch):
                if fail == f"{rank}:{step}":
                    os._exit(3)
                start, stop = rank_slices(len(idx), world)[rank]
                mine = idx[start:stop]
                if not sizes:
                    sizes.extend(b - a for a, b in rank_slices(len(idx), world))
                weight = (stop - start) / len(idx) if task.loss_reduction == "mean" else 1.0
                share["weight"] = weight
                args_ = ()
                if noise is not None:
                    args_ = (
                        {
                            k: torch.from_numpy(twins.cast(v[start:stop], np_dtype)).to(device)
                            for k, v in noise[number][i].items()
                        },
                    )
                xb, yb = x[mine].to(device), y[mine].to(device)
                loss = module.train_step(ddp, optimizer, xb, yb, *args_)
                weighted.append(loss.detach().to(torch.float64).cpu() * weight)
                step += 1

    ddp.train()
    if args.time_repeats:  # bench: the block once to warm up, then timed, ranks in step
        seconds = []
        for _ in range(args.time_repeats + 1):
            dist.barrier()
            start = time.perf_counter()
            train(order)
            if cuda:
                torch.cuda.synchronize()
            dist.barrier()
            seconds.append(time.perf_counter() - start)
        if rank == 0:
            timed = np.asarray(sum(map(len, order)))
            _write_npz(args.out, seconds=np.asarray(seconds), sizes=np.asarray(sizes), steps=timed)
        dist.barrier()
        dist.destroy_process_group()
        return
    train(order)
    losses = torch.stack(weighted).to(device)
    dist.all_reduce(losses)  # the global batch's loss: the ranks' shares summed
    if rank == 0:
        state = port.torch_state_dict(model.cpu())
        _write_npz(args.out, losses=losses.cpu().numpy(), sizes=np.asarray(sizes), **state)
    dist.barrier()
    dist.destroy_process_group()


def _write_npz(path, **arrays):
    """Complete or absent: written aside, then renamed."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.partial")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hp_to_json(hp):
    return json.dumps(dataclasses.asdict(hp))


def hp_from_json(task, text):
    """The hyperparameters a launcher handed over (``hp_to_json``), or the task's own."""
    if not text:
        return task.hp
    fields = json.loads(text)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return dataclasses.replace(task.hp, **fields)


def worker_args(task, dtype, seed, epochs, steps, hp, init_from, data_dir, out, extra=()):
    argv = [task, "--dtype", dtype, "--seed", str(seed), "--epochs", str(epochs), "--out", out]
    argv += ["--hp", hp_to_json(hp), *extra]
    if steps:
        argv += ["--steps", str(steps)]
    if init_from:
        argv += ["--init-from", str(init_from)]
    if data_dir:
        argv += ["--data-dir", str(data_dir)]
    return argv


def launch(kind, n, argv, timeout=None, extra_env=None):
    """Start ``n`` local processes of ``python -m compare.parallel KIND ...`` (each as a
    launcher would: RANK etc. for torch, JAX_PROCESS_ID etc. for JAX), wait for them all, and
    raise one CompareError line when any fails: the others are stopped, none hangs."""
    timeout = timeout or float(os.environ.get("TWINNETS_LAUNCH_TIMEOUT", "1800"))
    port = _free_port()
    root = str(Path(__file__).resolve().parent.parent)
    threads = max(1, (os.cpu_count() or 1) // n)
    procs, logs = [], []
    with tempfile.TemporaryDirectory(prefix="twinnets-ranks-") as tmp:
        for rank in range(n):
            env = dict(os.environ, **(extra_env or {}))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            env.setdefault("OMP_NUM_THREADS", str(threads))
            if kind == "torch":
                env.update(
                    RANK=str(rank),
                    LOCAL_RANK=str(rank),
                    WORLD_SIZE=str(n),
                    MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port),
                    TWINNETS_INIT=f"file://{tmp}/store",
                )
            else:
                env.update(
                    JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                    JAX_NUM_PROCESSES=str(n),
                    JAX_PROCESS_ID=str(rank),
                )
            log = open(Path(tmp) / f"rank{rank}.log", "w+")
            logs.append(log)
            cmd = [sys.executable, "-m", "compare.parallel", kind, *argv]
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        failed = None
        try:
            while any(p.poll() is None for p in procs):
                failed = next((r for r, p in enumerate(procs) if p.poll() not in (None, 0)), None)
                if failed is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            else:
                failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
        finally:
            for p in procs:  # the ranks still waiting on a dead one
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if failed is None and any(p.returncode != 0 for p in procs):
            failed = next(r for r, p in enumerate(procs) if p.returncode != 0)
        if failed is None:
            return
        code = procs[failed].returncode
        logs[failed].seek(0)
        lines = [line.strip() for line in logs[failed].read().splitlines() if line.strip()]
        last = lines[-1] if lines else "no output"
        if code is None or code < 0 and time.monotonic() > deadline:
            raise CompareError(
                f"--data-parallel {n}: the {kind} ranks did not finish in {timeout:.0f} s"
            )
        raise CompareError(
            f"--data-parallel {n}: {kind} rank {failed} of {n} exited with status {code} "
            f"({last[:200]}); the other ranks were stopped, nothing was written"
        )


def train_torch_ddp(task_name, n, dtype, seed, epochs, steps, hp, init_from, data_dir):
    """The torch side on ``n`` local ranks; returns ``(losses, state_dict, rank sizes of the
    first batch)``."""
    with tempfile.TemporaryDirectory(prefix="twinnets-ddp-") as tmp:
        out = Path(tmp) / "torch.npz"
        argv = worker_args(task_name, dtype, seed, epochs, steps, hp, init_from, data_dir, str(out))
        launch("torch", n, argv)
        with np.load(out) as f:
            losses, sizes = f["losses"], f["sizes"].tolist()
            state = {k: f[k] for k in f.files if k not in ("losses", "sizes")}
    return losses, state, sizes


# --- JAX: several processes (as on several hosts) ----------------------------------------------


def jax_worker(args):
    """One process of the JAX side on several processes: ``jax.distributed.initialize`` from
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (CPU collectives: gloo), the
    mesh over every process's devices, each process feeding its own rows."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
        initialization_timeout=int(TIMEOUT_S),
    )
    from compare import port
    from compare.parity import _first_steps
    from compare.twins import draw_noise, make_twins, schedule

    task = registry.get(args.task)
    hp = hp_from_json(task, args.hp)
    tw = make_twins(
        task,
        dtype=args.dtype,
        seed=args.seed,
        init_from=args.init_from,
        hp=hp,
        data_dir=args.data_dir,
    )
    order = schedule(tw, args.epochs, seed=args.seed)
    if args.steps:
        order = _first_steps(order, args.steps)
    noise = draw_noise(tw, order, seed=args.seed)
    losses, info = train_jax_sharded(tw, order, mesh(len(jax.devices())), noise=noise)
    if jax.process_index() == 0:
        _write_npz(args.out, losses=losses, **port.from_nnx(tw.jax_model))
    jax.distributed.shutdown()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m compare.parallel",
        description="one rank of a data-parallel run (torchrun, or jax.distributed processes)",
    )
    parser.add_argument("kind", choices=("torch", "jax"))
    parser.add_argument("task")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--hp", help="the hyperparameters as a JSON object (default: the task's)")
    parser.add_argument("--init-from")
    parser.add_argument("--data-dir")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto")
    parser.add_argument("--out", required=True, help="rank 0 writes losses and weights (.npz)")
    parser.add_argument(
        "--time-repeats",
        type=int,
        default=0,
        help="bench (torch): time the schedule this many times after a warm-up; rank 0 "
        "writes the seconds instead",
    )
    parser.add_argument(
        "--full-batches-only",
        action="store_true",
        help="bench: the schedule without its short last batches",
    )
    args = parser.parse_args(argv)
    try:
        (torch_worker if args.kind == "torch" else jax_worker)(args)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


# --- what parity and run add ---------------------------------------------------------------


def check_task(task, hp, n):
    """One CompareError line when ``task`` cannot run on ``n`` devices."""
    if n < 1:
        raise CompareError("--data-parallel must be at least 1")
    reason = why_not(task, hp)
    if reason is not None:
        raise CompareError(f"{task.name} cannot be data-parallel: {reason}")
    mesh(n)  # enough devices, before anything trains


def lesson_data_parallel(torch_model, x):
    """What the lesson's ``nn.DataParallel(model)`` does here: its device ids, and the input
    sizes the model sees for one batch ``x`` (on CPU: none, and the whole batch once)."""
    import torch

    seen = []
    hook = torch_model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    wrapped = torch.nn.DataParallel(torch_model)
    with torch.no_grad():
        wrapped(x)
    hook.remove()
    ids = list(wrapped.device_ids)
    note = (
        f"torch.nn.DataParallel (the lesson's) here: device_ids {ids}; the model saw "
        f"{' + '.join(map(str, seen))} of {len(x)}"
    )
    if not ids:
        note += " (no GPU: it calls the model once on the whole batch, nothing is split)"
    return {"device_ids": ids, "model_input_sizes": seen, "note": note}


def replicated_note(count, n):
    return (
        f"JAX: {count} batch(es) of a size not divisible by {n} ran replicated (every device "
        "the whole batch: the single-device result, no speed-up); torch splits them unevenly "
        "and weights each rank's gradient by its share"
    )


def data_parallel_runs(twins, order, noise, n, seed, init_from, data_dir, epochs, steps):
    """Both sides on ``n`` devices over ``order``: JAX in this process on a mesh (a fresh copy
    of the twins from the same weights), torch on ``n`` ranks. Returns ``{"jax": (losses,
    params), "torch": (losses, state dict)}`` and a description of the split."""
    from compare import port
    from compare.twins import make_twins

    check_split(order, n)
    again = make_twins(
        twins.task,
        dtype=twins.dtype,
        seed=seed,
        init_from=init_from,
        hp=twins.hp,
        data_dir=data_dir,
    )
    data_mesh = mesh(n)
    jax_losses, info = train_jax_sharded(again, order, data_mesh, noise=noise)
    torch_losses, torch_state, sizes = train_torch_ddp(
        twins.task.name, n, twins.dtype, seed, epochs, steps, twins.hp, init_from, data_dir
    )
    return {
        "jax": (jax_losses, port.from_nnx(again.jax_model)),
        "torch": (torch_losses, torch_state),
    }, describe_split(n, data_mesh, info, sizes, twins.torch_model)


def describe_split(n, data_mesh, info, torch_sizes, torch_model):
    """How each global batch was split on both sides, with the notes a user must read (the
    JSON's ``split``): ``info`` from ``train_jax_sharded``, the torch ranks' batch sizes."""
    import torch

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    split = {
        "n": n,
        "global_batch": info["first_batch"],
        "jax_device_batches": info["jax_device_batches"],
        "torch_rank_batches": torch_sizes,
        "jax_devices": [str(d) for d in data_mesh.devices.flat],
        "torch": f"{n} processes, torch.distributed {backend}, DistributedDataParallel",
        "sharded_batches": info["sharded_batches"],
        "replicated_batches": info["replicated_batches"],
    }
    if info["replicated_batches"]:
        split["replicated_note"] = replicated_note(info["replicated_batches"], n)
    note = batchnorm_note(torch_model, "cuda" if backend == "nccl" else "cpu")
    if note is not None:
        split["batchnorm_note"] = note
    return split


def parity_fields(result, runs, single, tolerance):
    """``parity --data-parallel``'s fields: the usual cross-side differences now of the two
    data-parallel runs, each side's against its single-device run (``single``: side ->
    (losses, params)), and the single-device cross-side differences kept apart."""
    from compare.twins import max_rel_diff, tensor_rel_diff

    (jl, jp), (tl, tp) = runs["jax"], runs["torch"]
    out = {
        "single_device": {
            "loss_max_rel_diff": result["loss_max_rel_diff"],
            "param_max_rel_diff": result["param_max_rel_diff"],
        },
        "loss_max_rel_diff": max_rel_diff(jl, tl),
        "param_max_rel_diff": tensor_rel_diff(jp, tp),
    }
    vs = {}
    for side, (losses, params) in runs.items():
        if side in single:
            base_losses, base_params = single[side]
            vs[side] = max(max_rel_diff(losses, base_losses), tensor_rel_diff(params, base_params))
    out["vs_single_device"] = vs
    worst = max(out["loss_max_rel_diff"], out["param_max_rel_diff"], *vs.values())
    out["passed"] = bool(result["passed"] and worst <= tolerance)
    return out
