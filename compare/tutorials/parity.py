"""Parity tiers 1 to 3 for a tutorial: forward, one step (gradients), lockstep trajectory.

Both sides start from the same weights and train on identical batches in the same order; the
loss of every step and the parameters at the end are compared. In float64 any semantic
difference shows (a misplaced eps is ~1e-7, a wrong momentum convention ~1e-2) while rounding
stays far below the 1e-9 tolerance; float32 reports the drift the two sides really have.
Tiers 1-2 run on the lockstep engine (``compare.toolkit.engine.probe``) with the tutorial as
its pair; the trajectory on each side's fast loop (``twins.train_torch``, ``twins.train_jax``).

``lockstep`` is the ``parity`` verb: ``prepare`` (a ``Plan``: the twins, the schedule, the
noise) then ``measure``. Another run of the same plan can be held against it
(``compare.parallel`` does, on N devices).
"""

import dataclasses
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import torch

from compare import port
from compare.diff import max_rel_diff, tensor_rel_diff
from compare.errors import CompareError
from compare.toolkit import engine
from compare.tutorials import data, equivalences, registry
from compare.tutorials.twins import (
    draw,
    draw_noise,
    evaluate_side,
    fixed_noise,
    generate,
    make_twins,
    noise_note,
    schedule,
    train_jax,
    train_torch,
    tutorial_pair,
)

TIER12_ROWS = 5000
SENSITIVITY_DRAWS = 2  # nudged restarts; their spread is about tenfold (docs/PARITY.md)


@dataclass
class Plan:
    """What a lockstep trains: the twins from the same weights, the schedule ``order`` (cut
    from ``epochs`` epochs of the lesson's), the noise of every step; after ``measure``,
    each side's per-step ``losses``."""

    twins: object
    order: list
    noise: list | None
    epochs: int
    seed: int = 0
    init_from: object = None
    losses: dict | None = None


def prepare(task_name, dtype="float64", steps=None, init_from=None, seed=0, hp=None, data_dir=None):
    """The twins of a task and its parity schedule: the lesson's whole one, or
    ``task.parity_epochs`` epochs of it, or its first ``steps`` steps (in float32,
    ``task.float32_steps`` where that is set), with the noise every step consumes."""
    task = registry.get(task_name)
    if steps is not None and steps < 1:
        raise CompareError("--steps must be at least 1")
    if steps is None and dtype == "float32":
        steps = task.float32_steps  # None but for chaotic trajectories
    twins = make_twins(task, dtype=dtype, seed=seed, init_from=init_from, hp=hp, data_dir=data_dir)
    epochs = task.parity_epochs or twins.hp.num_epochs
    if steps is not None:
        epochs = twins.hp.num_epochs
    order = schedule(twins, epochs, seed=seed)
    if steps is not None:
        order = data.first_steps(order, steps)
    noise = draw_noise(twins, order, seed=seed)  # the same noise for both sides, step by step
    return Plan(twins, order, noise, epochs, seed=seed, init_from=init_from)


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
    return engine.probe(tutorial_pair(twins), torch_inputs, jax_inputs)


def lockstep(
    task_name,
    dtype="float64",
    steps=None,
    init_from=None,
    seed=0,
    hp=None,
    progress=False,
    data_dir=None,
):
    """Tiers 1-3 for a task over its parity schedule (``prepare``): the ``parity --json`` fields.
    Where the task has a test split, the eval-mode predictions of both sides are compared too."""
    return measure(prepare(task_name, dtype, steps, init_from, seed, hp, data_dir), progress)


def measure(plan, progress=False):
    """Tiers 1-3 of a ``Plan``: trains both sides over it and returns the ``parity --json``
    fields (``plan.losses`` keeps each side's per-step losses)."""
    twins, task, dtype = plan.twins, plan.twins.task, plan.twins.dtype
    forward, grads = forward_and_grads(twins, seed=plan.seed)
    torch_losses = train_torch(twins, plan.order, progress=progress, noise=plan.noise)
    jax_losses = train_jax(twins, plan.order, progress=progress, noise=plan.noise)
    plan.losses = {"torch": torch_losses, "jax": jax_losses}

    loss_diff = max_rel_diff(jax_losses, torch_losses)
    param_diff = tensor_rel_diff(
        port.nnx_to_torch(twins.jax_model), port.torch_state_dict(twins.torch_model)
    )
    # tiers 1-2 (one forward pass, one gradient) are held to the task's fixed tolerance
    tolerance, bound = trajectory_bound(twins, plan.order, plan.noise, torch_losses, seed=plan.seed)
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
        "init": str(plan.init_from) if plan.init_from else f"torch default init, seed {plan.seed}",
        "final_loss": {
            "jax": np.asarray(jax_losses[-1]).tolist(),
            "torch": np.asarray(torch_losses[-1]).tolist(),
        },
    }
    if task.noise:  # the noise (z, eps, dropout masks) both sides consumed, and whose it was
        result["noise"] = noise_note(task, "drawn once in numpy, fed to both sides")
    fixed = fixed_noise(twins, seed=plan.seed)
    if fixed is not None:  # eval mode (BatchNorm's running statistics): the same digits
        result["samples_max_rel_diff"] = tensor_rel_diff(
            {"samples": generate(twins, "jax", fixed)},
            {"samples": generate(twins, "torch", fixed)},
        )
        result["passed"] = bool(result["passed"] and result["samples_max_rel_diff"] <= tolerance)
    if "x_test" in twins.arrays:
        result.update(_test_split(twins, tolerance))
        result["passed"] = bool(result["passed"] and result.pop("test_passed"))
    # the table of twins (init-and-activations) is float64 checks: float32 leaves it out
    if dtype == "float64" and task.equivalences:
        table = equivalences.table(twins.jax_module, twins.torch_module)
        result["equivalences_max_rel_diff"] = table["max_rel_diff"]
        result["equivalences_passed"] = table["passed"]
        result["passed"] = bool(result["passed"] and table["passed"])
    return result


def _test_split(twins, tolerance):
    """Both sides' eval-mode predictions on the test split, compared: image for image for a
    classifier (in float64; float32 may flip a borderline argmax), as close as the parameters
    for predicted values (a forecast). ``test_passed`` is the verdict."""
    tested = {side: evaluate_side(twins, side) for side in ("torch", "jax")}
    predicted = {side: tested[side]["predictions"] for side in tested}
    if twins.task.metric == "accuracy":
        differ = int(np.sum(predicted["torch"] != predicted["jax"]))
        return {
            "test_predictions_differ": differ,
            "test_accuracy": {side: tested[side]["accuracy"] for side in tested},
            "test_passed": twins.dtype != "float64" or differ == 0,
        }
    diff = tensor_rel_diff({"test": predicted["jax"]}, {"test": predicted["torch"]})
    return {
        "test_prediction_max_rel_diff": diff,
        "test_loss": {side: tested[side]["loss"] for side in tested},
        "test_passed": diff <= tolerance,
    }


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
        why = "the task's fixed tolerance (compare/tutorials/registry.py; docs/PARITY.md)"
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
    torch_dtype = engine.DTYPES[twins.dtype][1]
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
