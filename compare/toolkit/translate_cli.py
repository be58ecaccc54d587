"""``twinnets translate MODULE:CALLABLE --input SHAPE``: the command around ``translate``.

It builds the torch module (``torch.manual_seed(0)`` first: the same weights every run), makes
the example inputs (one per ``--input``, in the forward's order), translates, writes the
source (whole or not at all), saves the ported weights when asked and, with ``check``, trains
both in float64 lockstep.

The weights go where Flax users keep them: a path ending in ``.safetensors`` is one flat file
(Flax's key names; ``jaxnets.load_checkpoint`` reads it into the generated class), any other
path a new Orbax checkpoint directory holding ``nnx.state`` of the generated module (its
parameters and BatchNorm statistics; docs/TRANSLATE.md shows the lines that restore it).
"""

import ast
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from compare.errors import CompareError
from compare.files import write_file_whole


def _first_line(err):
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def parse_kwargs(pairs):
    """``["num_classes=10", "name=x"]`` -> ``{"num_classes": 10, "name": "x"}`` (Python
    literals where they parse, strings otherwise)."""
    out = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise CompareError(f"--kwargs {pair}: expected NAME=VALUE, e.g. num_classes=10")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def parse_input(spec, position=0):
    """``2,3,32,32`` -> a standard normal tensor of that shape; ``4,12:int100`` -> integers
    from 0 to 99 (word indices for an embedding). ``position``: which of the forward's inputs
    it is, the seed of its draw (two inputs of one shape are not the same numbers)."""
    import torch

    shape_text, _, kind = spec.partition(":")
    try:
        shape = tuple(int(s) for s in shape_text.split(","))
    except ValueError:
        raise CompareError(f"--input {spec}: expected a shape like 2,3,32,32") from None
    if not shape or any(s < 1 for s in shape):
        raise CompareError(f"--input {spec}: every size must be at least 1")
    generator = torch.Generator().manual_seed(position)
    if not kind:
        return torch.randn(shape, generator=generator)
    if kind.startswith("int") and kind[3:].isdigit() and int(kind[3:]) > 0:
        return torch.randint(0, int(kind[3:]), shape, generator=generator)
    raise CompareError(f"--input {spec}: the kind after ':' is intN (integers below N)")


def build(target, kwargs):
    """``MODULE:CALLABLE`` called with ``kwargs``: the torch module, or one line."""
    import torch

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CompareError(f"{target}: expected MODULE:CALLABLE, e.g. torchvision.models:resnet18")
    if "" not in sys.path and "." not in sys.path:  # the user's own modules, run from their folder
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the user's module: whatever it raises, one line
        raise CompareError(f"{target}: cannot import {module_name} ({_first_line(err)})") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise CompareError(f"{target}: {module_name} has no {attr}")
    if not callable(fn):
        raise CompareError(f"{target}: {attr} is not callable")
    torch.manual_seed(0)
    try:
        model = fn(**kwargs)
    except Exception as err:  # the user's constructor
        raise CompareError(f"{target}: {attr}(...) raised {_first_line(err)}") from None
    if not isinstance(model, torch.nn.Module):
        raise CompareError(f"{target}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_weights_path(weights):
    """``--weights``'s format by its path (``"safetensors"`` or ``"orbax"``), or one line
    before any work is done: the weights, a file or a checkpoint directory, go to a new path,
    never over what is there (another run's weights, a user's file)."""
    path = Path(weights)
    if path.suffix in (".pt", ".pth"):
        raise CompareError(
            f"--weights {weights}: Flax weights are a .safetensors file or an Orbax checkpoint "
            "directory (a path without that suffix), not torch's format"
        )
    if path.exists() or path.is_symlink():
        raise CompareError(f"--weights {weights}: already exists; the weights go to a new path")
    return "safetensors" if path.suffix == ".safetensors" else "orbax"


def save_orbax(module, path):
    """``nnx.state(module)`` as an Orbax checkpoint at ``path``, whole or not at all: Orbax
    writes into a staging directory beside it, which is renamed to ``path`` only once the
    checkpoint is complete; a failure leaves nothing at ``path`` and no staging behind."""
    import orbax.checkpoint as ocp
    from flax import nnx

    path = Path(path).absolute()  # Orbax takes absolute paths only
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    except OSError as err:
        why = err.strerror or err
        raise CompareError(f"--weights {path}: cannot write there ({why})") from None
    try:
        written = staging / path.name
        with ocp.StandardCheckpointer() as checkpointer:  # leaving it waits for the writes
            checkpointer.save(written, nnx.state(module))
        if path.exists():  # appeared while the checkpoint was being written
            raise CompareError(f"--weights {path}: appeared while writing; nothing written")
        written.rename(path)
    except CompareError:
        raise
    except Exception as err:  # Orbax and tensorstore raise their own kinds: one line
        why = _first_line(err)
        raise CompareError(f"--weights {path}: writing the checkpoint failed ({why})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(path)


def run(
    target,
    *,
    kwargs=(),
    input_specs,
    out=None,
    weights=None,
    check=False,
    steps=5,
    lr=0.01,
    class_name=None,
    progress=False,
):
    """What ``twinnets translate`` does; returns its JSON result. ``input_specs``: one
    ``--input`` per argument of the forward, in order (a string alone is one)."""
    from compare.toolkit.translate import translate

    if isinstance(input_specs, str):
        input_specs = [input_specs]
    if not input_specs:
        raise CompareError("--input: give one per argument of the model's forward, in order")

    weights_format = check_weights_path(weights) if weights is not None else None
    if out is not None and Path(out).suffix != ".py":
        raise CompareError(f"--out {out}: the source goes to a .py file")
    for path in (out, weights):
        if path is not None and not Path(path).parent.is_dir():
            raise CompareError(f"{path}: no such directory {Path(path).parent}")
    model = build(target, parse_kwargs(kwargs))
    model.train()  # check's probes and default batches run it as the lockstep will
    examples = tuple(parse_input(spec, k) for k, spec in enumerate(input_specs))
    start = time.perf_counter()
    result = translate(model, examples, class_name=class_name)
    seconds = time.perf_counter() - start
    shapes = [list(x.shape) for x in examples]
    payload = {
        "target": target,
        "kwargs": parse_kwargs(kwargs),
        # one input's shape, or a list of shapes for a forward of several
        "input": shapes[0] if len(shapes) == 1 else shapes,
        "class_name": result.class_name,
        "lines": result.source.count("\n"),
        "translate_seconds": round(seconds, 3),
        "out": None,
        "weights": None,
        "weights_format": weights_format,
    }
    # the weights first: a checkpoint that cannot be written leaves no source behind either
    if weights_format == "safetensors":
        import jaxnets

        tmp = Path(weights).with_name(f".{Path(weights).name}.partial")
        jaxnets.save_checkpoint(result.module, tmp)
        tmp.replace(weights)
        payload["weights"] = str(weights)
    elif weights_format == "orbax":
        payload["weights"] = save_orbax(result.module, weights)
    if out is not None:
        payload["out"] = write_file_whole(out, result.source)
    else:
        payload["source"] = result.source
    if check:
        start = time.perf_counter()
        report = result.check(steps=steps, lr=lr, progress=progress)
        payload["lr"] = lr
        payload["check"] = report.to_json()
        payload["check"]["report"] = str(report)
        payload["check_seconds"] = round(time.perf_counter() - start, 3)
    return payload
