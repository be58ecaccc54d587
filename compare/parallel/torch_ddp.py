"""The torch side on N ranks: ``torch.distributed`` and ``DistributedDataParallel``.

N processes, started by the CLI (``launch``) or by ``torchrun`` (``python -m compare.parallel
torch`` reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), gloo on CPU and nccl on
CUDA, the tutorial's own ``train_step`` on the wrapped model. Rank r takes the r-th contiguous
slice of every global batch of ``compare/tutorials/data.py``'s order (``np.array_split``:
sizes differ by at most one). DDP's averaging assumes equal slices; a comm hook (DDP's own
``register_comm_hook``) weights each rank's gradient by its share ``b_r / B`` before the
all-reduce sums them, which is the global batch's mean gradient for a mean loss (a summed
loss: weight 1). Rank 0 alone writes the result, atomically, at the end.
"""

import argparse
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from compare.arrays import cast
from compare.parallel.launch import TIMEOUT_S, hp_from_json, launch, worker_args, write_npz
from compare.parallel.policy import check_split, rank_slices
from compare.tutorials import data, registry


def _torch_plan(args):
    """What one rank trains: the task's torch model from the common seed (or ``--init-from``),
    its optimizer, the data, the schedule and the noise, all as ``parity``/``run`` build them
    (``twins.make_twins`` without the JAX side)."""
    import torch

    from compare import port
    from compare.toolkit.engine import DTYPES
    from compare.tutorials.twins import draw_noise, fit_to_data

    task = registry.get(args.task)
    hp = hp_from_json(task, args.hp)
    np_dtype, torch_dtype = DTYPES[args.dtype]
    arrays = data.load(task.name, data_dir=args.data_dir)
    hp = fit_to_data(hp, arrays)
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
        order = data.first_steps(order, args.steps)
    holder = argparse.Namespace(task=task, hp=hp)
    noise = draw_noise(holder, order, seed=args.seed)
    tensors = {k: torch.from_numpy(cast(v, np_dtype)) for k, v in arrays.items()}
    return task, hp, module, model, tensors, order, noise, np_dtype


def torch_worker(args):
    """One rank of the torch side (started by ``launch`` or by ``torchrun``)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from compare import port

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if not cuda:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    task, hp, module, model, tensors, order, noise, np_dtype = _torch_plan(args)
    check_split(order, world)
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

    ddp.register_comm_hook(share, weighted_sum)
    start_epoch = getattr(module, "start_epoch", None)
    x, y = tensors["x"], tensors["y"]
    weighted, sizes = [], []

    def train(order, first_step=0):
        step = first_step
        for number, epoch in enumerate(order):
            if start_epoch is not None:
                start_epoch(optimizer, number, hp)
            for i, idx in enumerate(epoch):
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
                            k: torch.from_numpy(cast(v[start:stop], np_dtype)).to(device)
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
            write_npz(args.out, seconds=np.asarray(seconds), sizes=np.asarray(sizes), steps=timed)
        dist.barrier()
        dist.destroy_process_group()
        return
    train(order)
    losses = torch.stack(weighted).to(device)
    dist.all_reduce(losses)  # the global batch's loss: the ranks' shares summed
    if rank == 0:
        state = port.torch_state_dict(model.cpu())
        write_npz(args.out, losses=losses.cpu().numpy(), sizes=np.asarray(sizes), **state)
    dist.barrier()
    dist.destroy_process_group()


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
