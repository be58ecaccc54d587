"""What ``run`` and ``parity`` add with ``--data-parallel N``: both sides on N devices, each
held against its single-device run, and the split described for the user.

``parity`` trains the tutorial's plan on one device as usual (``compare.tutorials.parity``),
then both sides again on N devices over the same schedule and noise; its cross-side fields
then compare the two data-parallel runs, ``vs_single_device`` each side against itself.
``run`` trains on N devices instead of one (``compare.tutorials.runs.run(train_both=...)``).
"""

import time

import numpy as np
import torch

from compare import port
from compare.arrays import cast
from compare.diff import max_rel_diff, tensor_rel_diff
from compare.parallel.jax_mesh import mesh, train_jax_sharded
from compare.parallel.policy import batchnorm_note, check_request, check_split
from compare.parallel.torch_ddp import train_torch_ddp
from compare.tutorials import parity as tutorial_parity
from compare.tutorials import registry, runs
from compare.tutorials.twins import draw_noise, make_twins, noise_note


def parity(
    task_name,
    n,
    dtype="float64",
    steps=None,
    init_from=None,
    seed=0,
    hp=None,
    progress=False,
    data_dir=None,
):
    """``parity TASK --data-parallel n``: the tutorial's lockstep on one device, then each
    side on ``n`` devices over the same schedule and noise (``data_parallel_runs``); the
    parity fields, the cross-side ones now of the two data-parallel runs, plus
    ``data_parallel``, ``vs_single_device``, ``single_device`` and ``split``."""
    task = registry.get(task_name)
    check_request(task, hp or task.hp, n)
    mesh(n)  # enough devices, before anything trains
    plan = tutorial_parity.prepare(task_name, dtype, steps, init_from, seed, hp, data_dir)
    check_split(plan.order, n)
    result = tutorial_parity.measure(plan, progress)
    twins = plan.twins
    on_devices, split = data_parallel_runs(
        twins, plan.order, plan.noise, n, seed, init_from, data_dir, plan.epochs, steps
    )
    single = {
        "jax": (plan.losses["jax"], port.nnx_to_torch(twins.jax_model)),
        "torch": (plan.losses["torch"], port.torch_state_dict(twins.torch_model)),
    }
    result.update(parity_fields(result, on_devices, single, result["tolerance"]))
    result["data_parallel"] = n
    result["split"] = split
    return result


def run(task_name, n, seed=0, init_from=None, data_dir=None, hp=None, **options):
    """``run TASK --data-parallel n``: ``compare.tutorials.runs.run`` with both sides trained
    on ``n`` devices over the whole schedule (tested once, at the end); the result adds
    ``data_parallel``, the split."""
    task = registry.get(task_name)
    check_request(task, hp or task.hp, n)
    mesh(n)  # enough devices, before anything trains

    def train_both(twins, order):
        return _train_on_devices(twins, order, n, seed, init_from, data_dir)

    return runs.run(
        task_name,
        seed=seed,
        init_from=init_from,
        data_dir=data_dir,
        hp=hp,
        train_both=train_both,
        **options,
    )


def _train_on_devices(twins, order, n, seed, init_from, data_dir):
    """Both sides over ``order`` on ``n`` devices; the torch ranks' final weights are loaded
    into ``twins.torch_model`` for the evaluation and pictures."""
    check_split(order, n)
    data_mesh = mesh(n)
    # the torch ranks are fed the noise from numpy (each its slice: one rank's own draws
    # would repeat on every rank, all seeded alike); JAX gets the same
    noise = draw_noise(twins, order, seed=seed)
    start = time.perf_counter()
    jax_losses, info = train_jax_sharded(twins, order, data_mesh, noise=noise)
    jax_seconds = time.perf_counter() - start
    start = time.perf_counter()
    torch_losses, state, sizes = train_torch_ddp(
        twins.task.name, n, twins.dtype, seed, len(order), None, twins.hp, init_from, data_dir
    )
    torch_seconds = time.perf_counter() - start  # process start-up included
    port.load_into_torch(twins.torch_model, state)
    first = order[0][0]
    x = torch.from_numpy(cast(twins.arrays["x"][first], np.dtype(twins.dtype)))
    split = describe_split(n, data_mesh, info, sizes, twins.torch_model)
    split["lesson_nn_DataParallel"] = lesson_data_parallel(twins.torch_model, x)
    split["train_seconds_note"] = "torch's includes starting its processes"
    fields = {"data_parallel": split}
    if twins.task.noise:
        fields["noise"] = noise_note(
            twins.task, "drawn once in numpy, fed to both sides (each torch rank its slice)"
        )
    return runs.Trained(
        losses={"jax": jax_losses, "torch": torch_losses},
        seconds={"jax": jax_seconds, "torch": torch_seconds},
        fields=fields,
    )


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
        "jax": (jax_losses, port.nnx_to_torch(again.jax_model)),
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


def parity_fields(result, on_devices, single, tolerance):
    """``parity --data-parallel``'s fields: the usual cross-side differences now of the two
    data-parallel runs, each side's against its single-device run (``single``: side ->
    (losses, params)), and the single-device cross-side differences kept apart."""
    (jl, jp), (tl, tp) = on_devices["jax"], on_devices["torch"]
    out = {
        "single_device": {
            "loss_max_rel_diff": result["loss_max_rel_diff"],
            "param_max_rel_diff": result["param_max_rel_diff"],
        },
        "loss_max_rel_diff": max_rel_diff(jl, tl),
        "param_max_rel_diff": tensor_rel_diff(jp, tp),
    }
    vs = {}
    for side, (losses, params) in on_devices.items():
        if side in single:
            base_losses, base_params = single[side]
            vs[side] = max(max_rel_diff(losses, base_losses), tensor_rel_diff(params, base_params))
    out["vs_single_device"] = vs
    worst = max(out["loss_max_rel_diff"], out["param_max_rel_diff"], *vs.values())
    out["passed"] = bool(result["passed"] and worst <= tolerance)
    return out
