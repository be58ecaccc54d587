"""Parity tiers 1 to 3: forward, one step (gradients), lockstep trajectory.

Both sides start from the same weights and train on identical batches in the same order; the
loss of every step and the parameters at the end are compared. In float64 any semantic
difference shows (a misplaced eps is ~1e-7, a wrong momentum convention ~1e-2) while rounding
stays far below the 1e-9 tolerance; float32 reports the drift the two sides really have.
"""

import numpy as np
import torch
from flax import nnx

from compare import port, registry
from compare.twins import (
    make_twins,
    max_rel_diff,
    schedule,
    tensor_rel_diff,
    train_jax,
    train_torch,
)


def forward_and_grads(twins):
    """Tiers 1 and 2 on the initial weights and the whole training set."""
    jx, jy = twins.jax_arrays["x"], twins.jax_arrays["y"]
    tx, ty = twins.torch_arrays["x"], twins.torch_arrays["y"]
    jax_model, torch_model = twins.jax_model, twins.torch_model
    jax_module, torch_module = twins.jax_module, twins.torch_module

    if callable(torch_model) and not isinstance(torch_model, torch.nn.ModuleDict):
        with torch.no_grad():
            torch_out = torch_model(tx).numpy()
        jax_out = np.asarray(jax_model(jx))
    else:  # a dict of nets (optimizers): compare their summed loss
        torch_out = np.asarray(torch_module.loss_fn(torch_model, tx, ty).item())
        jax_out = np.asarray(jax_module.loss_fn(jax_model, jx, jy))
    forward = tensor_rel_diff({"out": jax_out}, {"out": torch_out})

    loss = torch_module.loss_fn(torch_model, tx, ty)
    torch_model.zero_grad(set_to_none=True)
    loss.backward()
    torch_grads = {k: p.grad.numpy().copy() for k, p in torch_model.named_parameters()}
    torch_model.zero_grad(set_to_none=True)
    jax_grads = port.grads_from_nnx(jax_model, nnx.grad(jax_module.loss_fn)(jax_model, jx, jy))
    if sorted(jax_grads) != sorted(torch_grads):
        raise AssertionError(f"gradient keys differ: {sorted(jax_grads)} vs {sorted(torch_grads)}")
    return forward, tensor_rel_diff(jax_grads, torch_grads)


def lockstep(
    task_name, dtype="float64", steps=None, init_from=None, seed=0, hp=None, progress=False
):
    """Tiers 1-3 for a task over its full schedule (or its first ``steps`` steps)."""
    task = registry.get(task_name)
    twins = make_twins(task, dtype=dtype, seed=seed, init_from=init_from, hp=hp)
    forward, grads = forward_and_grads(twins)

    order = schedule(twins, twins.hp.num_epochs, seed=seed)
    if steps is not None:
        order = _first_steps(order, steps)
    torch_losses = train_torch(twins, order, progress=progress)
    jax_losses = train_jax(twins, order, progress=progress)

    loss_diff = max_rel_diff(jax_losses, torch_losses)
    param_diff = tensor_rel_diff(
        port.from_nnx(twins.jax_model), port.torch_state_dict(twins.torch_model)
    )
    tolerance = task.tolerance[dtype]
    return {
        "task": task.name,
        "dtype": dtype,
        "steps": int(len(torch_losses)),
        "loss_max_rel_diff": loss_diff,
        "param_max_rel_diff": param_diff,
        "forward_max_rel_diff": forward,
        "grad_max_rel_diff": grads,
        "tolerance": tolerance,
        "passed": bool(max(loss_diff, param_diff, forward, grads) <= tolerance),
        "init": str(init_from) if init_from else f"torch default init, seed {seed}",
        "final_loss": {
            "jax": np.asarray(jax_losses[-1]).tolist(),
            "torch": np.asarray(torch_losses[-1]).tolist(),
        },
    }


def _first_steps(order, steps):
    """The schedule cut after ``steps`` steps (the last epoch may be partial)."""
    cut, left = [], steps
    for epoch in order:
        if left <= 0:
            break
        cut.append(epoch[:left])
        left -= len(cut[-1])
    return cut
