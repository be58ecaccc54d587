"""``twinnets check SPEC.py``: a user's port described in one Python file, checked.

A spec defines, at module level (examples/sequence_classifier.py is one):

- ``torch_model()`` and ``flax_model()``: the two models, built fresh;
- ``torch_loss(model, x, y)`` and ``flax_loss(model, x, y)``: each side's loss;
- ``torch_optimizer(model)``: the ``torch.optim`` optimizer on the torch model's parameters;
- ``batches()``: a list of ``(x, y)`` numpy pairs in torch's layout (one epoch).

and may define ``optax_tx()`` (the optax side, instead of ``compare.optim.to_optax``),
``scheduler(optimizer)`` (a torch scheduler stepped per epoch), ``to_flax(array)`` (the Flax
layout of an array; default NCHW -> NHWC for 4-D arrays), ``tolerance`` (a number), and, for
steps that are not one loss and one optimizer, ``torch_step(model, optimizer, x, y)``,
``flax_step(model, optimizer, x, y)`` with ``flax_optimizer(model)``; ``scheduler_interval``
(``"step"`` when the scheduler steps after every batch).

The spec's own folder goes on the import path first, so it may import the modules beside it
(``from my_model import Net``) wherever the command runs.
"""

import importlib.util
import sys
from pathlib import Path

from compare.errors import CompareError

REQUIRED = ("torch_model", "flax_model", "torch_loss", "flax_loss", "torch_optimizer", "batches")


def load(path):
    """The spec file as a module, or one ``CompareError`` line."""
    path = Path(path)
    if not path.is_file():
        raise CompareError(f"{path}: no such file")
    folder = str(path.resolve().parent)
    if folder not in sys.path:  # the spec imports its neighbours, as a script run there would
        sys.path.insert(0, folder)
    name = f"twinnets_spec_{abs(hash(str(path.resolve())))}"
    loader = importlib.util.spec_from_file_location(name, path)
    if loader is None or path.suffix != ".py":
        raise CompareError(f"{path}: a spec is a Python file (.py)")
    module = importlib.util.module_from_spec(loader)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        loader.loader.exec_module(module)
    except Exception as err:  # the user's file: any error, one line about it
        sys.modules.pop(name, None)
        raise CompareError(f"{path}: could not be loaded ({_first_line(err)})") from None
    missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise CompareError(
            f"{path} defines no {', '.join(f'{m}()' for m in missing)} "
            f"(a spec defines {', '.join(REQUIRED)})"
        )
    return module


def _first_line(err):
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _call(path, name, fn, *args):
    try:
        return fn(*args)
    except CompareError:
        raise
    except Exception as err:  # the user's code
        raise CompareError(f"{path}: {name}() raised {_first_line(err)}") from None


def check_spec(path, steps=None, dtype="float64", progress=False):
    """Build what the spec at ``path`` describes and run ``compare.check`` on it."""
    from compare.toolkit.check import check

    spec = load(path)
    custom = callable(getattr(spec, "torch_step", None))
    if steps is not None and steps < 1:
        raise CompareError("--steps must be at least 1")
    torch_model = _call(path, "torch_model", spec.torch_model)
    flax_model = _call(path, "flax_model", spec.flax_model)
    optimizer = _call(path, "torch_optimizer", spec.torch_optimizer, torch_model)
    options = {}
    if callable(getattr(spec, "scheduler", None)):
        options["scheduler"] = _call(path, "scheduler", spec.scheduler, optimizer)
        options["scheduler_interval"] = getattr(spec, "scheduler_interval", "epoch")
    optax_tx = None
    if custom:
        if not callable(getattr(spec, "flax_step", None)) or not callable(
            getattr(spec, "flax_optimizer", None)
        ):
            raise CompareError(f"{path}: torch_step needs flax_step and flax_optimizer(model)")
        options.update(torch_step=spec.torch_step, flax_step=spec.flax_step)
        optax_tx = spec.flax_optimizer
    elif callable(getattr(spec, "optax_tx", None)):
        optax_tx = _call(path, "optax_tx", spec.optax_tx)
    return check(
        torch_model,
        flax_model,
        batches=_call(path, "batches", spec.batches),
        torch_loss=spec.torch_loss,
        flax_loss=spec.flax_loss,
        torch_optimizer=optimizer,
        optax_tx=optax_tx,
        steps=steps,
        dtype=dtype,
        to_flax=getattr(spec, "to_flax", None),
        tolerance=getattr(spec, "tolerance", None),
        progress=progress,
        **options,
    )
