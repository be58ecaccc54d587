"""Parity tiers 1 to 3: forward, one step (gradients), lockstep trajectory.

Both sides start from the same weights and train on identical batches in the same order; the
loss of every step and the parameters at the end are compared. In float64 any semantic
difference shows (a misplaced eps is ~1e-7, a wrong momentum convention ~1e-2) while rounding
stays far below the 1e-9 tolerance; float32 reports the drift the two sides really have.
The work is done by the lockstep engine (``compare.lockstep``), with the tutorial as the pair.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import torch

from compare import CompareError, equivalences, port, registry
from compare import lockstep as engine
from compare.twins import (
    DTYPES,
    draw,
    draw_noise,
    evaluate_side,
    fixed_noise,
    generate,
    make_twins,
    max_rel_diff,
    noise_note,
    schedule,
    tensor_rel_diff,
    train_jax,
    train_torch,
)

TIER12_ROWS = 5000
global_rel_diff = engine.global_rel_diff


def forward_and_grads(twins, seed=0):
    """Tiers 1 and 2 on the initial weights and the training set (its first ``TIER12_ROWS``
    rows, so the full MNIST does not need tens of GB in float64; one batch for a model that
    consumes noise, drawn in numpy for both); returns the relative differences of the outputs
    and of the gradients."""
    rows = slice(0, TIER12_ROWS)
    torch_noise = jax_noise = None
    if twins.task.noise:
        rows = slice(0, twins.hp.batch_size)
        rng = np.random.default_rng([seed, 2])
        noise = {n.name: draw(n, rng, rows.stop, twins.hp) for n in twins.task.noise}
        np_dtype = np.dtype(twins.dtype)
        noise = {k: v.astype(np_dtype) if v.dtype.kind == "f" else v for k, v in noise.items()}
        jax_noise = {k: jnp.asarray(v) for k, v in noise.items()}
        torch_noise = {k: torch.from_numpy(v) for k, v in noise.items()}
    torch_inputs = (twins.torch_arrays["x"][rows], twins.torch_arrays["y"][rows], torch_noise)
    jax_inputs = (twins.jax_arrays["x"][rows], twins.jax_arrays["y"][rows], jax_noise)
    return engine.probe(engine.tutorial_pair(twins), torch_inputs, jax_inputs)


def lockstep(
    task_name,
    dtype="float64",
    steps=None,
    init_from=None,
    seed=0,
    hp=None,
    progress=False,
    data_dir=None,
    data_parallel=None,
):
    """Tiers 1-3 for a task over its parity schedule (or its first ``steps`` steps).

    ``data_parallel`` N: each side also trains on N devices (``compare.parallel``) over the
    same schedule; the cross-side fields then compare the two data-parallel runs, and
    ``vs_single_device`` each side's against its single-device run (tiers 1-2 and the test
    predictions stay those of the single-device models).

    The schedule is the lesson's whole one, or ``task.parity_epochs`` epochs of it (in float32,
    ``task.float32_steps`` steps where that is set). Where the
    task has a test split, the eval-mode predictions of both sides on it are compared too.
    """
    task = registry.get(task_name)
    if steps is not None and steps < 1:
        raise CompareError("--steps must be at least 1")
    if steps is None and dtype == "float32":
        steps = task.float32_steps  # None but for chaotic trajectories
    if data_parallel is not None:
        from compare import parallel

        parallel.check_task(task, hp or task.hp, data_parallel)
    twins = make_twins(task, dtype=dtype, seed=seed, init_from=init_from, hp=hp, data_dir=data_dir)
    forward, grads = forward_and_grads(twins, seed=seed)

    order = schedule(twins, task.parity_epochs or twins.hp.num_epochs, seed=seed)
    if steps is not None:
        order = _first_steps(schedule(twins, twins.hp.num_epochs, seed=seed), steps)
    if data_parallel is not None:
        parallel.check_split(order, data_parallel)  # before anything trains
    noise = draw_noise(twins, order, seed=seed)  # the same noise for both sides, step by step
    torch_losses, jax_losses = engine.run_fast(
        twins, order, noise=noise, progress=progress, train_torch=train_torch, train_jax=train_jax
    )

    loss_diff = max_rel_diff(jax_losses, torch_losses)
    param_diff = tensor_rel_diff(
        port.from_nnx(twins.jax_model), port.torch_state_dict(twins.torch_model)
    )
    # tiers 1-2 (one forward pass, one gradient) are held to the task's fixed tolerance
    tolerance, bound = trajectory_bound(twins, order, noise, torch_losses, seed=seed)
    passed = (
        max(loss_diff, param_diff) <= tolerance and max(forward, grads) <= task.tolerance[dtype]
    )
    result = {
        "task": task.name,
        "dtype": dtype,
        "steps": int(len(torch_losses)),
        "loss_max_rel_diff": loss_diff,
        "param_max_rel_diff": param_diff,
        "forward_max_rel_diff": forward,
        "grad_max_rel_diff": grads,
        "tolerance": tolerance,
        "passed": bool(passed),
        "bound": bound,
        "dataset": twins.dataset,
        "init": str(init_from) if init_from else f"torch default init, seed {seed}",
        "final_loss": {
            "jax": np.asarray(jax_losses[-1]).tolist(),
            "torch": np.asarray(torch_losses[-1]).tolist(),
        },
    }
    if task.noise:  # the noise (z, eps, dropout masks) both sides consumed, and whose it was
        result["noise"] = noise_note(task, "drawn once in numpy, fed to both sides")
    fixed = fixed_noise(twins, seed=seed)
    if fixed is not None:  # eval mode (BatchNorm's running statistics): the same digits
        result["samples_max_rel_diff"] = tensor_rel_diff(
            {"samples": generate(twins, "jax", fixed)},
            {"samples": generate(twins, "torch", fixed)},
        )
        result["passed"] = bool(result["passed"] and result["samples_max_rel_diff"] <= tolerance)
    if "x_test" in twins.arrays:
        tested = {side: evaluate_side(twins, side) for side in ("torch", "jax")}
        predicted = {side: tested[side]["predictions"] for side in tested}
        if task.metric == "accuracy":
            differ = int(np.sum(predicted["torch"] != predicted["jax"]))
            result["test_predictions_differ"] = differ
            result["test_accuracy"] = {side: tested[side]["accuracy"] for side in tested}
            if dtype == "float64":  # image for image; float32 may flip a borderline argmax
                result["passed"] = bool(result["passed"] and differ == 0)
        else:  # predicted values (a forecast): as close as the parameters
            diff = tensor_rel_diff({"test": predicted["jax"]}, {"test": predicted["torch"]})
            result["test_prediction_max_rel_diff"] = diff
            result["test_loss"] = {side: tested[side]["loss"] for side in tested}
            result["passed"] = bool(result["passed"] and diff <= tolerance)
    # the table of twins (init-and-activations) is float64 checks: float32 leaves it out
    if dtype == "float64" and equivalences.defined(twins.jax_module, twins.torch_module):
        table = equivalences.table(twins.jax_module, twins.torch_module)
        result["equivalences_max_rel_diff"] = table["max_rel_diff"]
        result["equivalences_passed"] = table["passed"]
        result["passed"] = bool(result["passed"] and table["passed"])
    if data_parallel is not None:
        epochs = task.parity_epochs or twins.hp.num_epochs
        if steps is not None:
            epochs = twins.hp.num_epochs
        runs, split = parallel.data_parallel_runs(
            twins, order, noise, data_parallel, seed, init_from, data_dir, epochs, steps
        )
        single = {
            "jax": (jax_losses, port.from_nnx(twins.jax_model)),
            "torch": (torch_losses, port.torch_state_dict(twins.torch_model)),
        }
        result.update(parallel.parity_fields(result, runs, single, tolerance))
        result["data_parallel"] = data_parallel
        result["split"] = split
    return result


SENSITIVITY_DRAWS = 2  # nudged restarts; their spread is about tenfold (docs/PARITY.md)


def trajectory_bound(twins, order, noise, torch_losses, seed=0):
    """The tolerance on the lockstep's losses and final parameters, and a record of it.

    Most trajectories keep rounding at rounding level: the task's fixed tolerance applies. A
    chaotic one (``Task.sensitivity_factor``) grows any difference in the order of operations
    tenfold every few steps, so the same port passes or fails a fixed bound depending on the
    library version or device. Its float64 bound is then ``sensitivity_factor`` times the
    trajectory's own sensitivity measured in the same run (``self_divergence``), never below
    the fixed tolerance: a semantic difference (a folded bias, a misplaced eps) starts many
    orders above rounding and still fails it.
    """
    task = twins.task
    fixed = task.tolerance[twins.dtype]
    if task.sensitivity_factor is None or twins.dtype != "float64":
        why = "the task's fixed tolerance (compare/registry.py; docs/PARITY.md)"
        if twins.dtype == "float32" and task.float32_steps is not None:
            why += (
                f"; float32 over its first {task.float32_steps} steps by default: the "
                "trajectory is chaotic and float32 rounding alone parts it later"
            )
        return fixed, {"kind": "fixed", "tolerance": fixed, "why": why}
    sensitivity = self_divergence(twins, order, noise, torch_losses, seed=seed)
    tolerance = max(fixed, task.sensitivity_factor * sensitivity)
    return tolerance, {
        "kind": "sensitivity",
        "tolerance": tolerance,
        "floor": fixed,
        "factor": task.sensitivity_factor,
        "self_divergence": sensitivity,
        "draws": SENSITIVITY_DRAWS,
        "why": (
            "chaotic trajectory: the bound is factor x the torch side's own divergence when "
            "its initial weights are nudged by one rounding step (self_divergence), so it "
            "holds on any library version or device; never below floor"
        ),
    }


def self_divergence(twins, order, noise, torch_losses, seed=0, draws=SENSITIVITY_DRAWS):
    """How far the torch side parts from its own run over ``order`` when it starts again
    from its initial weights nudged by one rounding step (every float times 1 +- eps, signs
    drawn from ``seed``): the largest relative difference of the losses (against
    ``torch_losses``) and of the final parameters (against ``twins.torch_model``), over
    ``draws`` restarts. A different order of operations (another framework, version or
    device) perturbs every step by that much, and the trajectory grows it alike."""
    torch_dtype = DTYPES[twins.dtype][1]
    reference = port.torch_state_dict(twins.torch_model)
    rng = np.random.default_rng([seed, 4])
    worst = 0.0
    for _ in range(draws):
        nudged = {}
        for key, value in twins.initial.items():
            if np.issubdtype(value.dtype, np.floating):
                signs = rng.choice([-1.0, 1.0], size=value.shape)
                value = value * (1 + signs * np.finfo(value.dtype).eps)
            nudged[key] = torch.from_numpy(np.asarray(value))
        with torch.random.fork_rng():  # building a model draws; leave torch's stream alone
            model = twins.torch_module.new_model(twins.hp).to(torch_dtype)
        model.load_state_dict(nudged)
        again = dataclasses.replace(
            twins,
            torch_model=model,
            torch_optimizer=twins.torch_module.new_optimizer(model, twins.hp),
        )
        losses = train_torch(again, order, noise=noise)
        worst = max(
            worst,
            max_rel_diff(losses, torch_losses),
            tensor_rel_diff(port.torch_state_dict(model), reference),
        )
    return worst


def _first_steps(order, steps):
    """The schedule cut after ``steps`` steps (the last epoch may be partial)."""
    cut, left = [], steps
    for epoch in order:
        if left <= 0:
            break
        cut.append(epoch[:left])
        left -= len(cut[-1])
    return cut
