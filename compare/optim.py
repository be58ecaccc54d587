"""A ``torch.optim`` optimizer (and its learning-rate scheduler) as the optax transformation
that takes the same steps: ``to_optax(torch_optimizer, scheduler=None)``.

Every translation is proven in float64 lockstep against torch (tests/test_to_optax.py, each
option with a near miss that must fail). optax's own transforms are used where they are exact;
``jaxnets/optim.py`` holds torch's rules optax has no exact twin of (Adagrad's eps, SGD's
dampening, Adam's amsgrad). What cannot be translated ends in one ``CompareError`` line.

torch's schedulers step when the training loop says: once per *epoch* (``scheduler.step()``
after the epoch's batches; ``steps_per_epoch`` says how many optimizer steps an epoch has) or
after every batch (``scheduler_interval="step"``: OneCycleLR, CyclicLR, warm-ups); optax counts
optimizer steps. The usual schedulers are written in closed form; those defined by a Python
function or by other schedulers (LambdaLR, MultiplicativeLR, SequentialLR, ChainedScheduler,
CyclicLR, OneCycleLR) are sampled from torch itself, a copy of the optimizer and scheduler
stepped ``horizon`` optimizer steps ahead (past it, the last rate holds). A scheduler that also
moves the momentum (OneCycleLR's and CyclicLR's ``cycle_momentum``) moves optax's too.

Parameter groups: each group becomes its own transformation, joined by
``optax.multi_transform`` with a label per parameter. Which Flax parameter is which torch
parameter is told by the two models (``torch_model`` and ``flax_model``), through the porting
rules' torch key names; parameters of ``torch_model`` that no group holds are frozen
(``optax.set_to_zero``), as torch leaves them.
"""

import copy
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from compare import port
from compare.errors import CompareError
from jaxnets import optim as torch_rules

# Options that change how torch computes, not what: they translate to nothing.
_IMPLEMENTATION = ("foreach", "fused")
# What schedulers write into a parameter group for their own use: the schedule translates them
_SCHEDULERS_OWN = ("initial_lr", "max_lr", "min_lr", "base_momentum", "max_momentum")


def to_optax(
    torch_optimizer,
    scheduler=None,
    *,
    steps_per_epoch=1,
    scheduler_interval="epoch",
    horizon=None,
    torch_model=None,
    flax_model=None,
):
    """The optax transformation that reproduces ``torch_optimizer`` (and ``scheduler``, a
    ``torch.optim.lr_scheduler``) step for step, or a ``CompareError`` naming what cannot be
    translated.

    ``scheduler_interval``: ``"epoch"`` (the scheduler steps once per epoch of
    ``steps_per_epoch`` optimizer steps) or ``"step"`` (after every optimizer step).
    ``horizon``: how many optimizer steps a sampled scheduler must cover (LambdaLR,
    MultiplicativeLR, SequentialLR, ChainedScheduler, CyclicLR; OneCycleLR knows its own).

    Translated: SGD (momentum, dampening, nesterov, weight decay), Adam and AdamW (amsgrad,
    coupled or decoupled weight decay), RMSprop (centered, momentum), Adagrad (lr_decay,
    initial accumulator), Adadelta; ``maximize`` in each; the schedulers of ``SCHEDULERS``.
    Several parameter groups with different settings need ``torch_model`` and ``flax_model``
    (the NNX twin the transformation will update) to tell which parameter is in which group.
    """
    if not isinstance(torch_optimizer, torch.optim.Optimizer):
        raise CompareError(
            f"to_optax takes a torch.optim.Optimizer, not {type(torch_optimizer).__name__}"
        )
    if steps_per_epoch is None or int(steps_per_epoch) < 1:
        raise CompareError("steps_per_epoch must be at least 1")
    name = type(torch_optimizer).__name__
    if name not in _TRANSLATIONS:
        raise CompareError(
            f"cannot translate torch.optim.{name} to optax; translated: {', '.join(_TRANSLATIONS)}"
        )
    if any(_stepped(state) for state in torch_optimizer.state.values()):
        raise CompareError(
            f"{name} has already taken steps: to_optax translates an optimizer before its "
            "first step (its state would have to be ported too)"
        )
    rates = learning_rates(torch_optimizer, scheduler, steps_per_epoch, scheduler_interval, horizon)
    transforms = [
        _TRANSLATIONS[name](_with_momentum(_settings(name, group), momentum), lr)
        for group, (lr, momentum) in zip(torch_optimizer.param_groups, rates, strict=True)
    ]
    labels = _group_labels(torch_optimizer, torch_model, flax_model)
    if labels is None:
        return transforms[0]
    inner = {f"group{i}": tx for i, tx in enumerate(transforms)}
    inner["frozen"] = optax.set_to_zero()
    return optax.multi_transform(inner, labels)


def _stepped(state):
    """Whether a parameter's optimizer state shows a step taken (Adagrad makes its state,
    step 0, when it is built; the others on their first step)."""
    if not state:
        return False
    step = state.get("step", 1)
    return float(step.item() if isinstance(step, torch.Tensor) else step) > 0


def _settings(name, group):
    """A group's hyperparameters as plain Python numbers; refuses what has no translation."""
    if group.get("capturable"):
        raise CompareError(f"{name}(capturable=True): CUDA-graph capture has no optax meaning")
    if group.get("differentiable"):
        raise CompareError(
            f"{name}(differentiable=True): a step to differentiate through is not translated "
            "(optax's update is differentiable as it is: translate the optimizer without it)"
        )
    settings = {}
    for key, value in group.items():
        skipped = ("params", "param_names", "capturable", "differentiable", *_SCHEDULERS_OWN)
        if key in skipped or key in _IMPLEMENTATION:
            continue
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, tuple):
            value = tuple(v.item() if isinstance(v, torch.Tensor) else v for v in value)
        settings[key] = value
    return settings


def _with_momentum(settings, momentum):
    """``settings`` with the momentum (Adam's ``betas[0]``) a scheduler moves, as a schedule."""
    if momentum is None:
        return settings
    settings = dict(settings)
    if "betas" in settings:
        settings["betas"] = (momentum, settings["betas"][1])
    else:
        settings["momentum"] = momentum
    return settings


def _scheduled(factory, static=(), **hyperparameters):
    """``factory(**hyperparameters)``, through ``optax.inject_hyperparams`` where one of them is
    a schedule (torch moves it between steps, and the step uses the moved value)."""
    if not any(callable(v) for v in hyperparameters.values()):
        return factory(**hyperparameters)
    return optax.inject_hyperparams(factory, static_args=static)(**hyperparameters)


def _known(name, settings, known):
    unknown = sorted(set(settings) - set(known))
    if unknown:
        shown = ", ".join(f"{k}={settings[k]!r}" for k in unknown)
        raise CompareError(f"cannot translate {name}'s option {shown} to optax")


def _head(settings, coupled_decay=True):
    """What every torch optimizer does to the gradient first: negate it (``maximize``), then
    add ``weight_decay * param`` to it (coupled L2), unless the decay is decoupled."""
    head = []
    if settings.get("maximize"):
        head.append(optax.scale(-1.0))
    if coupled_decay and settings.get("weight_decay"):
        head.append(optax.add_decayed_weights(settings["weight_decay"]))
    return head


def _sgd(settings, lr):
    _known("SGD", settings, ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"))
    momentum, dampening = settings.get("momentum", 0), settings.get("dampening", 0)
    nesterov = settings.get("nesterov", False)
    body = []
    if momentum:
        if dampening:
            body.append(
                _scheduled(
                    torch_rules.scale_by_torch_momentum,
                    ("nesterov",),
                    momentum=momentum,
                    dampening=dampening,
                    nesterov=nesterov,
                )
            )
        else:
            body.append(_scheduled(optax.trace, ("nesterov",), decay=momentum, nesterov=nesterov))
    return optax.chain(*_head(settings), *body, optax.scale_by_learning_rate(lr))


def _adam(settings, lr, decoupled=False):
    known = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    _known("AdamW" if decoupled else "Adam", settings, (*known, "decoupled_weight_decay"))
    decoupled = decoupled or settings.get("decoupled_weight_decay", False)
    b1, b2 = settings.get("betas", (0.9, 0.999))
    eps = settings.get("eps", 1e-8)
    rule = torch_rules.scale_by_torch_amsgrad if settings.get("amsgrad") else optax.scale_by_adam
    direction = _scheduled(rule, b1=b1, b2=b2, eps=eps)
    decay = settings.get("weight_decay", 0)
    # decoupled (AdamW): param -= lr * weight_decay * param beside the Adam step, as optax.adamw
    tail = [optax.add_decayed_weights(decay)] if decoupled and decay else []
    return optax.chain(
        *_head(settings, coupled_decay=not decoupled),
        direction,
        *tail,
        optax.scale_by_learning_rate(lr),
    )


def _adamw(settings, lr):
    return _adam(settings, lr, decoupled=True)


def _rmsprop(settings, lr):
    _known(
        "RMSprop",
        settings,
        ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
    )
    alpha, eps = settings.get("alpha", 0.99), settings.get("eps", 1e-8)
    # torch adds eps after the square root (optax's default puts it inside)
    if settings.get("centered"):
        direction = optax.scale_by_stddev(decay=alpha, eps=eps, eps_in_sqrt=False)
    else:
        direction = optax.scale_by_rms(decay=alpha, eps=eps, eps_in_sqrt=False)
    body = [direction]
    if settings.get("momentum"):
        # torch's buffer holds g / avg before the learning rate (optax.rmsprop traces after
        # it, which parts from torch as soon as a scheduler changes the rate)
        body.append(_scheduled(optax.trace, decay=settings["momentum"]))
    return optax.chain(*_head(settings), *body, optax.scale_by_learning_rate(lr))


def _adagrad(settings, lr):
    _known(
        "Adagrad",
        settings,
        ("lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value", "maximize"),
    )
    tx = torch_rules.adagrad(
        lr,
        lr_decay=settings.get("lr_decay", 0),
        weight_decay=settings.get("weight_decay", 0),
        initial_accumulator_value=settings.get("initial_accumulator_value", 0),
        eps=settings.get("eps", 1e-10),
    )
    return optax.chain(*_head({"maximize": settings.get("maximize")}), tx)


def _adadelta(settings, lr):
    _known("Adadelta", settings, ("lr", "rho", "eps", "weight_decay", "maximize"))
    direction = optax.scale_by_adadelta(rho=settings.get("rho", 0.9), eps=settings.get("eps", 1e-6))
    return optax.chain(*_head(settings), direction, optax.scale_by_learning_rate(lr))


_TRANSLATIONS = {
    "SGD": _sgd,
    "Adam": _adam,
    "AdamW": _adamw,
    "RMSprop": _rmsprop,
    "Adagrad": _adagrad,
    "Adadelta": _adadelta,
}


# --- schedulers: one optax schedule per parameter group, counted in optimizer steps ---------

INTERVALS = ("epoch", "step")


def learning_rates(optimizer, scheduler, steps_per_epoch=1, interval="epoch", horizon=None):
    """Per parameter group, ``(lr, momentum)``: the learning rate as a number or an optax
    schedule of the optimizer step count, and ``None`` or a schedule of the momentum (Adam's
    ``betas[0]``) where the scheduler moves it too.

    float64 numbers throughout: optax counts in int32, and a schedule of Python floats would be
    evaluated in float32 (0.1 -> 0.10000000149) even with x64 on."""
    if interval not in INTERVALS:
        raise CompareError(f"scheduler_interval must be 'epoch' or 'step', not {interval!r}")
    if steps_per_epoch is None or int(steps_per_epoch) < 1:
        raise CompareError("steps_per_epoch must be at least 1")
    groups = optimizer.param_groups
    if scheduler is None:
        return [(_number(g["lr"]), None) for g in groups]
    name = type(scheduler).__name__
    if name == "ReduceLROnPlateau":
        raise CompareError(
            "ReduceLROnPlateau steps on the losses it is given, not on a count: no optax "
            "schedule reproduces it; translate the optimizer without it, and to check a "
            "training that uses it give check torch_step/flax_step that lower the rate alike"
        )
    if name not in SCHEDULERS:
        raise CompareError(
            f"cannot translate the scheduler {name} to optax; translated: {', '.join(SCHEDULERS)}"
            "; or give check an optax_tx written by hand (a schedule of optax's)"
        )
    if scheduler.optimizer is not optimizer:
        raise CompareError(f"the {name} given steps another optimizer than the one translated")
    stepped = getattr(scheduler, "last_epoch", None)
    if stepped is None:  # ChainedScheduler: its schedulers' own counts
        stepped = max(child.last_epoch for child in scheduler._schedulers)
    if stepped != 0:
        raise CompareError(
            f"{name} has already stepped {stepped} times: to_optax translates a scheduler at "
            "its start"
        )
    per = 1 if interval == "step" else int(steps_per_epoch)
    if name in _CLOSED_FORMS:
        return [
            (_every(per, _CLOSED_FORMS[name](scheduler, np.float64(_number(base)))), None)
            for base in scheduler.base_lrs
        ]
    if name == "OneCycleLR":
        count = scheduler.total_steps  # it refuses to step past them
    elif horizon is None:
        raise CompareError(
            f"{name} is sampled from torch, a copy stepped ahead: give horizon=N, the number "
            "of optimizer steps to cover"
        )
    else:
        count = -(-int(horizon) // per) + 1
    lrs, momenta = replay(optimizer, scheduler, count)
    return [
        (_every(per, _table(lr)), None if len(set(m)) <= 1 else _every(per, _table(m)))
        for lr, m in zip(lrs, momenta, strict=True)
    ]


def _number(value):
    return value.item() if isinstance(value, torch.Tensor) else value


def _every(per, schedule):
    """A schedule of scheduler steps as one of optimizer steps: torch steps its scheduler after
    every ``per`` optimizer steps, so step k trains at the rate of scheduler step k // per."""
    if per == 1:
        return schedule
    return lambda count: schedule(count // per)


def _table(values):
    """A schedule looking its value up in ``values`` (float64), the last one past the end."""
    table = jnp.asarray(np.asarray(values, np.float64))
    return lambda t: table[jnp.minimum(t, len(table) - 1)]


def _momentum(group):
    if "betas" in group:
        return _number(group["betas"][0])
    return _number(group.get("momentum", 0.0))


def replay(optimizer, scheduler, count):
    """Each group's learning rate and momentum at scheduler steps 0..count-1, read from a copy
    of ``optimizer`` and ``scheduler`` stepped ahead: exact for any scheduler whose rates
    depend on its step count alone (the copy shares the parameters, which it never moves)."""
    count = min(count, getattr(scheduler, "total_steps", count))  # OneCycleLR stops there
    shared = {id(p): p for g in optimizer.param_groups for p in g["params"]}
    opt, sched = copy.deepcopy((optimizer, scheduler), shared)
    lrs = [[] for _ in opt.param_groups]
    momenta = [[] for _ in opt.param_groups]
    with warnings.catch_warnings():  # the copy's step() is never called: nothing trains
        warnings.simplefilter("ignore")
        for t in range(count):
            for i, group in enumerate(opt.param_groups):
                lrs[i].append(_number(group["lr"]))
                momenta[i].append(_momentum(group))
            if t + 1 < count:
                sched.step()
    return lrs, momenta


def _step_lr(scheduler, base):
    return optax.exponential_decay(
        base, scheduler.step_size, np.float64(scheduler.gamma), staircase=True
    )


def _multi_step_lr(scheduler, base):
    # torch multiplies by gamma once per milestone (a milestone listed twice: twice)
    scales = {}
    for milestone, times in sorted(scheduler.milestones.items()):
        scales[int(milestone)] = np.float64(scheduler.gamma) ** times
    return optax.piecewise_constant_schedule(base, scales)


def _exponential_lr(scheduler, base):
    return optax.exponential_decay(base, 1, np.float64(scheduler.gamma), staircase=True)


def _cosine(base, eta_min, t, period):
    return eta_min + (base - eta_min) * (1 + jnp.cos(np.float64(math.pi) * t / period)) / 2


def _cosine_annealing_lr(scheduler, base):
    # torch's cosine is periodic past T_max (it climbs back up); optax.cosine_decay_schedule
    # stays at its floor there, so the closed form is written out here.
    eta_min, t_max = np.float64(scheduler.eta_min), np.float64(scheduler.T_max)
    return lambda t: _cosine(base, eta_min, t, t_max)


def _cosine_annealing_warm_restarts(scheduler, base):
    # restarts after T_0, T_0 * T_mult, T_0 * T_mult^2... steps: the cycles' starts up to
    # optax's int32 count, computed once
    t_0, t_mult, eta_min = scheduler.T_0, scheduler.T_mult, np.float64(scheduler.eta_min)
    if t_mult == 1:
        return lambda t: _cosine(base, eta_min, t % t_0, np.float64(t_0))
    starts, lengths = [0], [t_0]
    while starts[-1] + lengths[-1] < 2**31:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * t_mult)
    starts, periods = jnp.asarray(starts), jnp.asarray(lengths, jnp.float64)

    def schedule(t):
        cycle = jnp.searchsorted(starts, t, side="right") - 1
        return _cosine(base, eta_min, t - starts[cycle], periods[cycle])

    return schedule


def _linear_lr(scheduler, base):
    start, end = np.float64(scheduler.start_factor), np.float64(scheduler.end_factor)
    total = scheduler.total_iters
    return lambda t: base * (start + (end - start) * jnp.minimum(t, total) / total)


def _constant_lr(scheduler, base):
    factor = np.float64(scheduler.factor)
    return lambda t: jnp.where(t < scheduler.total_iters, base * factor, base)


def _polynomial_lr(scheduler, base):
    total, power = scheduler.total_iters, np.float64(scheduler.power)
    return lambda t: base * (1 - jnp.minimum(t, total) / np.float64(total)) ** power


# closed forms: lr at scheduler step t; the others are sampled from torch (``replay``)
_CLOSED_FORMS = {
    "StepLR": _step_lr,
    "MultiStepLR": _multi_step_lr,
    "ExponentialLR": _exponential_lr,
    "CosineAnnealingLR": _cosine_annealing_lr,
    "CosineAnnealingWarmRestarts": _cosine_annealing_warm_restarts,
    "LinearLR": _linear_lr,
    "ConstantLR": _constant_lr,
    "PolynomialLR": _polynomial_lr,
}
SAMPLED = (
    "LambdaLR",
    "MultiplicativeLR",
    "SequentialLR",
    "ChainedScheduler",
    "OneCycleLR",
    "CyclicLR",
)
SCHEDULERS = (*_CLOSED_FORMS, *SAMPLED)


# --- parameter groups -----------------------------------------------------------------------


def _group_labels(optimizer, torch_model, flax_model):
    """None when one transformation serves every parameter; else a function labelling each
    leaf of a Flax parameter tree with its torch parameter's group (or ``"frozen"``)."""
    groups = optimizer.param_groups
    settings = [{k: v for k, v in g.items() if k not in ("params", "param_names")} for g in groups]
    one_setting = all(s == settings[0] for s in settings)
    held = {id(p) for g in groups for p in g["params"]}
    every = torch_model is None or all(id(p) in held for p in torch_model.parameters())
    if one_setting and every:
        return None
    if torch_model is None or flax_model is None:
        raise CompareError(
            f"{type(optimizer).__name__} has {len(groups)} parameter groups with different "
            "settings (or leaves parameters out): pass torch_model= and flax_model= so that "
            "each Flax parameter finds its group"
        )
    group_of = {id(p): f"group{i}" for i, g in enumerate(groups) for p in g["params"]}
    label_of_key = {
        name: group_of.get(id(p), "frozen")
        for name, p in torch_model.named_parameters(remove_duplicate=False)
    }
    by_path = {}
    for key, (path, *_rest) in port.mapping(flax_model, fold_biases=True).items():
        if key in label_of_key:
            by_path.setdefault(path, label_of_key[key])
    if not by_path:
        raise CompareError("torch_model and flax_model share no parameter names")

    def labels(tree):
        def label(keypath, _leaf):
            path = port.path_of(keypath)
            if path not in by_path:
                raise CompareError(f"{'.'.join(map(str, path))}: a Flax parameter torch lacks")
            return by_path[path]

        return jax.tree_util.tree_map_with_path(label, tree)

    return labels
