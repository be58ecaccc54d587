"""``compare.optim.to_optax``: every torch optimizer option and scheduler it translates, step
for step against torch in float64, each with a near miss that must fail.

A row of ``TWINS`` is a torch optimizer (and a scheduler, stepped every ``STEPS_PER_EPOCH``
optimizer steps); its translation must follow torch's trajectory on a quadratic to 1e-13 over
50 steps, with gradients of order 1 and of order 1e-4 (where eps placement shows). A row of
``NEAR_MISSES`` is a plausible hand-written port that must not.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from compare import CompareError, port
from compare.optim import to_optax
from compare.tutorials import registry

from helpers import (
    START,
    STEPS,
    STEPS_PER_EPOCH,
    optax_trajectory,
    rel_error,
    torch_trajectory,
)

lr_scheduler = torch.optim.lr_scheduler


def translated(make_optimizer, make_scheduler=None, interval="epoch"):
    opt = make_optimizer([torch.nn.Parameter(torch.tensor(START))])
    scheduler = make_scheduler(opt) if make_scheduler else None
    return to_optax(
        opt,
        scheduler,
        steps_per_epoch=STEPS_PER_EPOCH,
        scheduler_interval=interval,
        horizon=STEPS,
    )


def per_step(make_scheduler):
    """A scheduler torch steps after every batch (``scheduler_interval="step"``)."""
    make_scheduler.interval = "step"
    return make_scheduler


def interval(make_scheduler):
    return getattr(make_scheduler, "interval", "epoch")


def trajectories(make_optimizer, make_scheduler, scale):
    """torch's trajectory and its translation's, the scheduler stepped as it says."""
    every = 1 if interval(make_scheduler) == "step" else STEPS_PER_EPOCH
    want = torch_trajectory(make_optimizer, make_scheduler, scale, steps_per_epoch=every)
    tx = translated(make_optimizer, make_scheduler, interval(make_scheduler))
    return optax_trajectory(tx, scale), want


optim = torch.optim
TWINS = {
    "sgd": (lambda ps: optim.SGD(ps, lr=0.1), None),
    "sgd-momentum-nesterov": (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True), None),
    "sgd-dampening": (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.8, dampening=0.5), None),
    "sgd-everything": (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.05),
        None,
    ),
    "sgd-maximize": (lambda ps: optim.SGD(ps, lr=0.01, momentum=0.5, maximize=True), None),
    "adam": (lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6), None),
    "adam-weight-decay": (lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1), None),
    "adam-amsgrad": (lambda ps: optim.Adam(ps, lr=0.05, amsgrad=True, weight_decay=0.01), None),
    "adam-foreach": (lambda ps: optim.Adam(ps, lr=0.01, foreach=True), None),
    "adamw": (lambda ps: optim.AdamW(ps, lr=0.01), None),
    "adamw-amsgrad": (lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.1, amsgrad=True), None),
    "rmsprop": (lambda ps: optim.RMSprop(ps, lr=0.01), None),
    "rmsprop-centered-momentum": (
        lambda ps: optim.RMSprop(
            ps, lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.01
        ),
        None,
    ),
    "rmsprop-maximize": (lambda ps: optim.RMSprop(ps, lr=0.01, maximize=True), None),
    "adagrad": (lambda ps: optim.Adagrad(ps, lr=0.1), None),
    "adagrad-everything": (
        lambda ps: optim.Adagrad(
            ps, lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.2, eps=1e-6
        ),
        None,
    ),
    "adadelta": (lambda ps: optim.Adadelta(ps), None),
    "adadelta-everything": (
        lambda ps: optim.Adadelta(ps, lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01),
        None,
    ),
    "step-lr": (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.5),
        lambda opt: lr_scheduler.StepLR(opt, step_size=3, gamma=0.1),
    ),
    "multi-step-lr": (  # a milestone given twice multiplies twice
        lambda ps: optim.Adam(ps, lr=0.05),
        lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[2, 5, 5], gamma=0.1),
    ),
    "exponential-lr": (
        lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5),
        lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.9),
    ),
    "cosine-annealing-lr": (  # 10 epochs with T_max 4: down, up and down again
        lambda ps: optim.SGD(ps, lr=0.1),
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.01),
    ),
    "adagrad-lr-decay-with-a-schedule": (
        lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.1),
        lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    ),
    "linear-lr": (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.5),
        lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.25, end_factor=0.9, total_iters=4),
    ),
    "constant-lr": (
        lambda ps: optim.RMSprop(ps, lr=0.01),
        lambda opt: lr_scheduler.ConstantLR(opt, factor=0.3, total_iters=3),
    ),
    "polynomial-lr": (  # reaches 0 at total_iters and stays there
        lambda ps: optim.Adam(ps, lr=0.05),
        lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=6, power=2.0),
    ),
    "cosine-warm-restarts": (  # cycles of 2, 4, 8 epochs
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2, eta_min=0.01),
    ),
    "cosine-warm-restarts-even-cycles": (
        lambda ps: optim.Adam(ps, lr=0.05),
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3),
    ),
    "lambda-lr": (  # sampled from the lambda itself
        lambda ps: optim.SGD(ps, lr=0.1),
        lambda opt: lr_scheduler.LambdaLR(opt, lambda e: 0.9**e + 0.1 * (e % 3)),
    ),
    "multiplicative-lr": (
        lambda ps: optim.Adam(ps, lr=0.05),
        lambda opt: lr_scheduler.MultiplicativeLR(opt, lambda e: 0.7 if e % 2 else 1.1),
    ),
    "sequential-lr": (  # a warm-up, then a decay
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.5),
        lambda opt: lr_scheduler.SequentialLR(
            opt,
            [
                lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3),
                lr_scheduler.ExponentialLR(opt, gamma=0.8),
            ],
            milestones=[3],
        ),
    ),
    "chained-scheduler": (
        lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.1),
        lambda opt: lr_scheduler.ChainedScheduler(
            [lr_scheduler.ExponentialLR(opt, gamma=0.9), lr_scheduler.StepLR(opt, 3, 0.5)]
        ),
    ),
    "one-cycle-per-step": (  # the rate and the momentum cycle, every batch
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        per_step(lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=STEPS)),
    ),
    "one-cycle-adam-betas": (  # Adam's beta1 cycles, its bias correction with it
        lambda ps: optim.Adam(ps, lr=0.01),
        per_step(
            lambda opt: lr_scheduler.OneCycleLR(
                opt, max_lr=0.05, total_steps=STEPS, anneal_strategy="linear", three_phase=True
            )
        ),
    ),
    "one-cycle-without-momentum": (
        lambda ps: optim.RMSprop(ps, lr=0.01),
        per_step(
            lambda opt: lr_scheduler.OneCycleLR(
                opt, max_lr=0.02, total_steps=STEPS, cycle_momentum=False
            )
        ),
    ),
    "cyclic-lr-per-step": (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        per_step(lambda opt: lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=7)),
    ),
    "linear-warm-up-per-step": (
        lambda ps: optim.AdamW(ps, lr=0.05),
        per_step(lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=10)),
    ),
}


@pytest.mark.parametrize("scale", [1.0, 1e-4])
@pytest.mark.parametrize("name", sorted(TWINS))
def test_to_optax_takes_torchs_steps(name, scale):
    got, want = trajectories(*TWINS[name], scale)
    assert rel_error(got, want) < 1e-13


def _torch_optax_rmsprop_momentum():
    # optax.rmsprop traces *after* the learning rate: equal until a scheduler changes it
    return optax.rmsprop(
        optax.exponential_decay(np.float64(0.01), STEPS_PER_EPOCH, np.float64(0.9), True),
        decay=0.99,
        eps=1e-8,
        eps_in_sqrt=False,
        momentum=0.5,
    )


NEAR_MISSES = {
    "sgd-dampening-as-plain-momentum": (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.8, dampening=0.5),
        None,
        optax.sgd(0.1, momentum=0.8),
    ),
    "amsgrad-as-optax-amsgrad": (  # optax keeps the max of the corrected moment
        lambda ps: optim.Adam(ps, lr=0.05, amsgrad=True),
        None,
        optax.amsgrad(0.05),
    ),
    "centered-rmsprop-eps-inside": (
        lambda ps: optim.RMSprop(ps, lr=0.01, centered=True),
        None,
        optax.rmsprop(0.01, decay=0.99, eps=1e-8, centered=True),
    ),
    "rmsprop-momentum-traced-after-the-rate": (
        lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5),
        lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.9),
        _torch_optax_rmsprop_momentum(),
    ),
    "cosine-as-optax-cosine-decay": (  # flat after T_max; torch's climbs back
        lambda ps: optim.SGD(ps, lr=0.1),
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.01),
        optax.sgd(
            lambda count: optax.cosine_decay_schedule(np.float64(0.1), 4, np.float64(0.1))(
                count // STEPS_PER_EPOCH
            )
        ),
    ),
    "adamw-without-its-decay": (
        lambda ps: optim.AdamW(ps, lr=0.01),
        None,
        optax.adam(0.01),
    ),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_translations_part_from_torch(name):
    make_optimizer, make_scheduler, tx = NEAR_MISSES[name]
    got, want = trajectories(make_optimizer, make_scheduler, 1e-4)
    assert rel_error(optax_trajectory(tx, 1e-4), want) > 1e-9
    assert rel_error(got, want) < 1e-13  # and the translation of the same optimizer does not


def test_a_per_batch_scheduler_translated_per_epoch_parts_from_torch():
    """The interval is part of the translation: a warm-up torch steps every batch, read as
    stepped once per epoch, trains at other rates."""
    make_optimizer, make_scheduler = TWINS["linear-warm-up-per-step"]
    _, want = trajectories(make_optimizer, make_scheduler, 1.0)
    per_epoch = optax_trajectory(translated(make_optimizer, make_scheduler, "epoch"))
    assert rel_error(per_epoch, want) > 1e-3


def test_each_schedule_gives_torchs_learning_rate_epoch_by_epoch():
    """The rate itself, read from torch's param_groups each epoch, against the optax schedule
    (SGD's step is -lr * g: a gradient of -1 makes the update the rate)."""
    for name, (_, make_scheduler) in TWINS.items():
        if make_scheduler is None or "adagrad" in name:
            continue
        every = 1 if interval(make_scheduler) == "step" else STEPS_PER_EPOCH
        opt = optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=0.1)
        scheduler = make_scheduler(opt)
        if getattr(scheduler, "cycle_momentum", False):
            continue  # the momentum it moves makes SGD's update more than the rate
        want = []
        for _ in range(STEPS // every):
            want += [opt.param_groups[0]["lr"]] * every
            opt.step()  # (no gradients: nothing moves) torch wants it before scheduler.step()
            if len(want) < STEPS:  # OneCycleLR refuses a step past its total
                scheduler.step()
        fresh = optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=0.1)
        tx = to_optax(
            fresh,
            make_scheduler(fresh),
            steps_per_epoch=STEPS_PER_EPOCH,
            scheduler_interval=interval(make_scheduler),
            horizon=STEPS,
        )
        state, got = tx.init(jnp.zeros(1)), []
        for _ in range(STEPS):
            update, state = tx.update(-jnp.ones(1), state)
            got.append(float(update[0]))
        np.testing.assert_allclose(got, want, rtol=1e-15, err_msg=name)


# --- parameter groups ---------------------------------------------------------------------


class TorchTwo(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(3, 4)
        self.second = torch.nn.Sequential(torch.nn.Linear(4, 2))


class FlaxTwo(nnx.Module):
    def __init__(self, rngs):
        self.first = nnx.Linear(3, 4, rngs=rngs)
        self.second = nnx.Sequential(nnx.Linear(4, 2, rngs=rngs))


def test_parameter_groups_and_a_frozen_parameter_by_their_torch_names():
    torch.manual_seed(0)
    torch_model = TorchTwo().double()
    flax_model = port.torch_to_nnx(torch_model.state_dict(), FlaxTwo(nnx.Rngs(0)))
    opt = optim.SGD(
        [
            {"params": [torch_model.first.weight], "lr": 0.05, "momentum": 0.9},
            {"params": [torch_model.second[0].weight, torch_model.second[0].bias]},
        ],
        lr=0.1,
        weight_decay=0.01,
    )  # first.bias is in no group: frozen
    scheduler = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with pytest.raises(CompareError, match="pass torch_model= and flax_model="):
        to_optax(opt)
    tx = to_optax(opt, scheduler, steps_per_epoch=2, torch_model=torch_model, flax_model=flax_model)
    optimizer = nnx.Optimizer(flax_model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))

    def torch_loss():
        return (
            (torch_model.second(torch_model.first(torch.from_numpy(x))) - torch.from_numpy(y)) ** 2
        ).mean()

    def flax_loss(model):
        return jnp.mean((model.second(model.first(jnp.asarray(x))) - y) ** 2)

    for step in range(8):
        opt.zero_grad()
        torch_loss().backward()
        opt.step()
        if step % 2 == 1:
            scheduler.step()
        optimizer.update(flax_model, nnx.grad(flax_loss)(flax_model))
    want = port.torch_state_dict(torch_model)
    got = port.nnx_to_torch(flax_model)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-13, atol=1e-15, err_msg=key)
    assert not np.allclose(
        want["first.weight"], port.torch_state_dict(TorchTwo().double())["first.weight"]
    )
    torch.manual_seed(0)
    np.testing.assert_array_equal(
        want["first.bias"], port.torch_state_dict(TorchTwo().double())["first.bias"]
    )


# --- what cannot be translated: one line --------------------------------------------------


def _param():
    return [torch.nn.Parameter(torch.zeros(2))]


class Halving(lr_scheduler.LRScheduler):
    """A user's own scheduler: nothing to_optax knows."""

    def get_lr(self):
        return [
            group["lr"] * (0.5 if self.last_epoch else 1.0) for group in self.optimizer.param_groups
        ]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: (optim.LBFGS(_param()), None), "cannot translate torch.optim.LBFGS"),
        (lambda: (optim.NAdam(_param()), None), "cannot translate torch.optim.NAdam"),
        (lambda: (optim.Adam(_param(), capturable=True), None), "capturable=True"),
        (lambda: (optim.SGD(_param(), differentiable=True), None), "differentiable=True"),
        (
            lambda: (opt := optim.SGD(_param(), lr=0.1), lr_scheduler.LambdaLR(opt, lambda e: 1.0)),
            "LambdaLR is sampled from torch, a copy stepped ahead: give horizon=N",
        ),
        (
            lambda: (
                opt := optim.SGD(_param(), lr=0.1),
                lr_scheduler.ReduceLROnPlateau(opt),
            ),
            "ReduceLROnPlateau steps on the losses it is given.*torch_step/flax_step",
        ),
        (
            lambda: (opt := optim.SGD(_param(), lr=0.1), Halving(opt)),
            "cannot translate the scheduler Halving.*optax_tx written by hand",
        ),
        (
            lambda: (optim.SGD(_param(), lr=0.1), lr_scheduler.StepLR(optim.SGD(_param()), 1)),
            "steps another optimizer",
        ),
        (lambda: ("sgd", None), "takes a torch.optim.Optimizer"),
    ],
)
def test_what_cannot_be_translated_is_one_line(build, message):
    opt, scheduler = build()
    with pytest.raises(CompareError, match=message) as err:
        to_optax(opt, scheduler)
    assert "\n" not in str(err.value)


def test_an_optimizer_or_scheduler_that_has_stepped_is_refused():
    p = torch.nn.Parameter(torch.ones(2))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones(2)
    opt.step()
    with pytest.raises(CompareError, match="has already taken steps"):
        to_optax(opt)
    fresh = optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    scheduler = lr_scheduler.StepLR(fresh, 1)
    fresh.step()
    scheduler.step()
    with pytest.raises(CompareError, match="already stepped 1 times"):
        to_optax(fresh, scheduler)
    # Adagrad builds its state (step 0) at once: that is not a step taken
    assert to_optax(optim.Adagrad([torch.nn.Parameter(torch.ones(2))], lr=0.1)) is not None


# --- the tutorials: to_optax of each torch optimizer equals the tutorial's optax side -------


def tutorial_transforms(name):
    """``[(label, to_optax of the torch optimizer, the tutorial's own optax transformation,
    the parameters it updates)]`` of a task (a dict of optimizers gives one row each). The
    Flax side is built abstractly (``nnx.eval_shape``): only its transformations are used."""
    task = registry.TASKS[name]
    hp = task.hp
    if "steps_per_epoch" in {f.name for f in dataclasses.fields(hp)}:
        hp = dataclasses.replace(hp, steps_per_epoch=3)  # any epoch length: both sides read it
    jax_module, torch_module = task.modules()
    torch.manual_seed(0)
    torch_model = torch_module.new_model(hp)

    def flax_side():
        model = jax_module.new_model(hp, nnx.Rngs(0))
        return model, jax_module.new_optimizer(model, hp)

    flax_model, flax_opt = nnx.eval_shape(flax_side)
    torch_opt = torch_module.new_optimizer(torch_model, hp)
    if name == "mnist-mlp-bn":
        # the lesson's start_epoch cuts lr by lr_gamma at epochs 0, lr_every, ...: StepLR on
        # the first epoch's rate (test_step_lr_is_the_lessons_start_epoch checks that)
        torch_opt = optim.SGD(
            torch_model.parameters(), lr=hp.lr * hp.lr_gamma, momentum=hp.momentum
        )
        scheduler = lr_scheduler.StepLR(torch_opt, hp.lr_every, hp.lr_gamma)
        tx = to_optax(torch_opt, scheduler, steps_per_epoch=hp.steps_per_epoch)
        return [("", tx, flax_opt.tx, nnx.state(flax_model, nnx.Param))]
    if isinstance(torch_opt, dict):
        return [
            (
                key,
                to_optax(torch_opt[key]),
                flax_opt[key].tx,
                nnx.state(part(flax_model, key), nnx.Param),
            )
            for key in torch_opt
        ]
    return [("", to_optax(torch_opt), flax_opt.tx, nnx.state(flax_model, nnx.Param))]


def part(model, key):
    return model[key] if isinstance(model, nnx.Dict) else getattr(model, key)


def follow(tx, params, grads):
    state, trajectory = tx.init(params), []
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(params)]))
    return np.array(trajectory)


TUTORIALS = sorted(set(registry.TASKS) - {"autograd-fit"})  # its lesson steps by hand, no optimizer


@pytest.mark.parametrize("name", TUTORIALS)
def test_to_optax_of_each_tutorials_torch_optimizer_equals_its_optax_side(name):
    for label, translation, tutorial, params in tutorial_transforms(name):
        # the tree of the parameters, each leaf a few random entries: the rules are elementwise
        rng = np.random.default_rng(0)

        def entries(a, rng=rng):
            return jnp.asarray(rng.standard_normal(min(a.size, 4)))

        def draw(a, rng=rng):
            return jnp.asarray(1e-3 * rng.standard_normal(a.shape))

        params = jax.tree.map(entries, params)
        grads = [jax.tree.map(draw, params) for _ in range(12)]
        want = follow(tutorial, params, grads)
        got = follow(translation, params, grads)
        assert rel_error(got, want) < 1e-13, label


def test_step_lr_is_the_lessons_start_epoch():
    """mnist-mlp-bn: the lesson's lr cuts at epoch starts are StepLR on lr * lr_gamma."""
    task = registry.TASKS["mnist-mlp-bn"]
    hp, torch_module = task.hp, task.modules()[1]
    lesson = optim.SGD(_param(), lr=hp.lr, momentum=hp.momentum)
    stepped = optim.SGD(_param(), lr=hp.lr * hp.lr_gamma, momentum=hp.momentum)
    scheduler = lr_scheduler.StepLR(stepped, hp.lr_every, hp.lr_gamma)
    for epoch in range(hp.num_epochs):
        torch_module.start_epoch(lesson, epoch, hp)
        assert lesson.param_groups[0]["lr"] == stepped.param_groups[0]["lr"], epoch
        stepped.step()
        scheduler.step()
