"""A ``torch.optim`` optimizer (and its learning-rate scheduler) as the optax transformation
that takes the same steps: ``to_optax(torch_optimizer, scheduler=None)``.

Every translation is proven in float64 lockstep against torch (tests/test_to_optax.py, each
option with a near miss that must fail). optax's own transforms are used where they are exact;
``jaxnets/optim.py`` holds torch's rules optax has no exact twin of (Adagrad's eps, SGD's
dampening, Adam's amsgrad). What cannot be translated ends in one ``CompareError`` line.

torch's schedulers step once per *epoch* (``scheduler.step()`` after the epoch's batches);
optax counts optimizer steps. ``steps_per_epoch`` says how many optimizer steps an epoch has
(1: the scheduler steps after every optimizer step).

Parameter groups: each group becomes its own transformation, joined by
``optax.multi_transform`` with a label per parameter. Which Flax parameter is which torch
parameter is told by the two models (``torch_model`` and ``flax_model``), through the porting
rules' torch key names; parameters of ``torch_model`` that no group holds are frozen
(``optax.set_to_zero``), as torch leaves them.
"""

import math

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


def to_optax(
    torch_optimizer,
    scheduler=None,
    *,
    steps_per_epoch=1,
    torch_model=None,
    flax_model=None,
):
    """The optax transformation that reproduces ``torch_optimizer`` (and ``scheduler``, a
    ``torch.optim.lr_scheduler`` stepped once per epoch of ``steps_per_epoch`` optimizer steps)
    step for step, or a ``CompareError`` naming what cannot be translated.

    Translated: SGD (momentum, dampening, nesterov, weight decay), Adam and AdamW (amsgrad,
    coupled or decoupled weight decay), RMSprop (centered, momentum), Adagrad (lr_decay,
    initial accumulator), Adadelta; ``maximize`` in each; StepLR, MultiStepLR, ExponentialLR,
    CosineAnnealingLR. Several parameter groups with different settings need ``torch_model``
    and ``flax_model`` (the NNX twin the transformation will update) to tell which parameter
    is in which group.
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
    schedules = _schedules(torch_optimizer, scheduler, int(steps_per_epoch))
    transforms = [
        _TRANSLATIONS[name](_settings(name, group), lr)
        for group, lr in zip(torch_optimizer.param_groups, schedules, strict=True)
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
        skipped = ("params", "param_names", "initial_lr", "capturable", "differentiable")
        if key in skipped or key in _IMPLEMENTATION:
            continue
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, tuple):
            value = tuple(v.item() if isinstance(v, torch.Tensor) else v for v in value)
        settings[key] = value
    return settings


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
            body.append(torch_rules.scale_by_torch_momentum(momentum, dampening, nesterov))
        else:
            body.append(optax.trace(decay=momentum, nesterov=nesterov))
    return optax.chain(*_head(settings), *body, optax.scale_by_learning_rate(lr))


def _adam(settings, lr, decoupled=False):
    known = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    _known("AdamW" if decoupled else "Adam", settings, (*known, "decoupled_weight_decay"))
    decoupled = decoupled or settings.get("decoupled_weight_decay", False)
    b1, b2 = settings.get("betas", (0.9, 0.999))
    eps = settings.get("eps", 1e-8)
    if settings.get("amsgrad"):
        direction = torch_rules.scale_by_torch_amsgrad(b1=b1, b2=b2, eps=eps)
    else:
        direction = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
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
        body.append(optax.trace(decay=settings["momentum"]))
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


def _schedules(optimizer, scheduler, steps_per_epoch):
    """Each group's learning rate: a number, or an optax schedule when ``scheduler`` is given.

    float64 numbers throughout: optax counts in int32, and a schedule of Python floats would be
    evaluated in float32 (0.1 -> 0.10000000149) even with x64 on."""
    groups = optimizer.param_groups
    if scheduler is None:
        return [_number(g["lr"]) for g in groups]
    name = type(scheduler).__name__
    if name not in _SCHEDULES:
        raise CompareError(
            f"cannot translate the scheduler {name} to optax; translated: {', '.join(_SCHEDULES)}"
        )
    if scheduler.optimizer is not optimizer:
        raise CompareError(f"the {name} given steps another optimizer than the one translated")
    if scheduler.last_epoch != 0:
        raise CompareError(
            f"{name} has already stepped {scheduler.last_epoch} times: to_optax translates a "
            "scheduler at its start"
        )
    return [
        _per_epoch(_SCHEDULES[name](scheduler, np.float64(_number(base))), steps_per_epoch)
        for base in scheduler.base_lrs
    ]


def _number(value):
    return value.item() if isinstance(value, torch.Tensor) else value


def _per_epoch(epoch_schedule, steps_per_epoch):
    """An epoch-counted schedule as an optax schedule of optimizer steps (torch steps its
    scheduler after each epoch, so step k trains at the rate of epoch k // steps_per_epoch)."""
    return lambda count: epoch_schedule(count // steps_per_epoch)


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


def _cosine_annealing_lr(scheduler, base):
    # torch's cosine is periodic past T_max (it climbs back up); optax.cosine_decay_schedule
    # stays at its floor there, so the closed form is written out here.
    eta_min, t_max = np.float64(scheduler.eta_min), np.float64(scheduler.T_max)

    def schedule(epoch):
        return eta_min + (base - eta_min) * (1 + jnp.cos(np.float64(math.pi) * epoch / t_max)) / 2

    return schedule


_SCHEDULES = {
    "StepLR": _step_lr,
    "MultiStepLR": _multi_step_lr,
    "ExponentialLR": _exponential_lr,
    "CosineAnnealingLR": _cosine_annealing_lr,
}


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
