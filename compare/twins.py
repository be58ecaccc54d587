"""Both sides of a task, built from the same initial weights, and their training loops.

The torch side starts from its own default initialisation (``torch.manual_seed(seed)``) or
from ``--init-from``; its state dict is ported to the JAX side, so both begin identical.
"""

import dataclasses
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from tqdm.auto import tqdm

from compare import CompareError, data, port, registry
from jaxnets import _layers as jax_layers
from jaxnets import _train as jax_train

DTYPES = {"float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64)}


@dataclass
class Twins:
    task: registry.Task
    hp: object
    dtype: str
    jax_module: object
    torch_module: object
    jax_model: object
    jax_optimizer: object
    torch_model: object
    torch_optimizer: object
    arrays: dict  # the numpy data
    jax_arrays: dict  # the same, on the JAX device, in dtype
    torch_arrays: dict  # the same, as torch tensors, in dtype
    initial: dict  # the common initial state dict (torch names, numpy)
    dataset: str  # what results call the data ("mnist-5k", "flower", ...)


def set_precision(dtype):
    """Full-precision matmuls on both sides (no TF32), and 64-bit JAX for float64."""
    if dtype == "float64":
        jax_train.use_float64()
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def with_overrides(hp, overrides):
    """``hp`` with ``{"lr": "0.5"}``-style strings applied, each parsed as its field's type."""
    if not overrides:
        return hp
    fields = {f.name: f for f in dataclasses.fields(hp)}
    changes = {}
    for key, text in overrides.items():
        if key not in fields:
            raise CompareError(f"--set {key}: no such hyperparameter; known: {', '.join(fields)}")
        current = getattr(hp, key)
        try:
            if isinstance(current, tuple):
                changes[key] = tuple(float(v) for v in text.split(","))
            elif isinstance(current, bool):
                changes[key] = text.lower() in ("1", "true", "yes")
            elif isinstance(current, int) or (current is None and text.lower() != "none"):
                changes[key] = int(text)
            elif current is None or text.lower() == "none":
                changes[key] = None
            else:
                changes[key] = type(current)(text)
        except ValueError:
            raise CompareError(
                f"--set {key}={text}: not a valid {type(current).__name__}"
            ) from None
        value = changes[key]
        if isinstance(current, tuple) and len(value) != len(current):
            raise CompareError(f"--set {key}={text}: needs {len(current)} comma-separated numbers")
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise CompareError(f"--set {key}={text}: must be at least 1")
        if isinstance(value, float) and not np.isfinite(value):
            raise CompareError(f"--set {key}={text}: must be a finite number")
    return dataclasses.replace(hp, **changes)


def make_twins(task, dtype="float32", seed=0, init_from=None, hp=None, data_dir=None):
    if dtype not in DTYPES:
        raise CompareError(f"unknown dtype {dtype!r}; use float32 or float64")
    set_precision(dtype)
    np_dtype, torch_dtype = DTYPES[dtype]
    hp = hp or task.hp
    jax_module, torch_module = task.modules()
    arrays = data.load(task.name, data_dir=data_dir)
    if "steps_per_epoch" in {f.name for f in dataclasses.fields(hp)}:
        # schedules counted in steps need the epoch length, which depends on the data
        hp = dataclasses.replace(hp, steps_per_epoch=math.ceil(len(arrays["x"]) / hp.batch_size))

    torch.manual_seed(seed)
    try:
        torch_model = torch_module.new_model(hp)
    except ValueError as err:  # a hyperparameter the layers refuse (--set dropout=1.5)
        raise CompareError(f"{task.name}: {err}") from None
    if init_from is not None:
        state = port.read_state_dict(init_from)
        port.load_into_torch(torch_model, state, source=str(init_from))
    torch_model = torch_model.to(torch_dtype)
    initial = port.torch_state_dict(torch_model)

    try:
        torch_optimizer = torch_module.new_optimizer(torch_model, hp)
    except ValueError as err:  # a setting torch.optim refuses (--set lr=-1); optax takes any
        raise CompareError(f"{task.name}: {err}") from None

    jax_model = jax_module.new_model(hp, nnx.Rngs(seed))
    port.to_nnx(jax_model, initial, dtype=np_dtype)
    _cast_carried_state(jax_model, np_dtype)

    def jax_layout(array):
        return data.nhwc(array) if array.ndim == 4 else array  # images: NCHW -> NHWC, once

    return Twins(
        task=task,
        hp=hp,
        dtype=dtype,
        jax_module=jax_module,
        torch_module=torch_module,
        jax_model=jax_model,
        jax_optimizer=jax_module.new_optimizer(jax_model, hp),
        torch_model=torch_model,
        torch_optimizer=torch_optimizer,
        arrays=arrays,
        jax_arrays={k: jnp.asarray(cast(jax_layout(v), np_dtype)) for k, v in arrays.items()},
        torch_arrays={k: torch.from_numpy(cast(v, np_dtype)) for k, v in arrays.items()},
        initial=initial,
        dataset=data.dataset_label(task.name, data_dir),
    )


def _cast_carried_state(model, np_dtype):
    """A state the model carries between steps (rnn-sincos's hidden state) is not ported: it
    starts at zeros on both sides. It only needs the dtype the side trains in."""
    for _, var in nnx.to_flat_state(nnx.state(model, jax_layers.HiddenState)):
        var.set_value(jnp.asarray(var.get_value(), np_dtype))


def schedule(twins, num_epochs, seed=0):
    """The batch order both sides follow: ``order[epoch][step]`` index arrays."""
    n = len(twins.arrays["x"])
    order = data.batch_order(
        n, twins.hp.batch_size, num_epochs, seed=seed, shuffle=twins.task.shuffle
    )
    has_batchnorm = any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in twins.torch_model.modules()
    )
    if has_batchnorm and any(len(idx) == 1 for epoch in order for idx in epoch):
        raise CompareError(
            f"{twins.task.name}: batch_size {twins.hp.batch_size} leaves a batch of one sample, "
            "which BatchNorm cannot train on; choose another batch_size"
        )
    return order


def draw(noise, rng, n, hp):
    """``n`` samples of one ``registry.Noise`` from ``rng``: float64 normals, int64 labels, or
    float64 dropout masks (0 or ``1 / (1 - p)``, what ``nn.Dropout(p)`` multiplies by)."""
    shape = (n, *noise.sample_shape(hp))
    if noise.kind == "normal":
        return rng.standard_normal(shape)
    if noise.kind == "labels":
        return rng.integers(0, noise.num_classes(hp), size=shape)
    if noise.kind == "mask":
        p = noise.drop_probability(hp)
        if not 0 <= p < 1:
            raise CompareError(f"a dropout probability of {p} cannot be fed: it must be in [0, 1)")
        return (rng.random(shape) < 1 - p) / (1 - p)
    raise ValueError(f"unknown kind of noise {noise.kind!r}")


def draw_noise(twins, order, seed=0):
    """The randomness every step of ``order`` consumes, drawn once in numpy for both sides:
    ``noise[epoch][step]`` is ``{name: array}`` with the batch's length (None: the task has
    none). A generator of its own, so the batch order does not move when noise is added."""
    if not twins.task.noise:
        return None
    rng = np.random.default_rng([seed, 1])
    return [
        [{n.name: draw(n, rng, len(idx), twins.hp) for n in twins.task.noise} for idx in epoch]
        for epoch in order
    ]


def noise_note(task, source):
    """What a result says about the noise a task consumed: its names and kinds, and where it
    came from (``source``)."""
    kinds = {"normal": "N(0, 1)", "labels": "labels", "mask": "dropout mask"}
    names = ", ".join(f"{n.name} ({kinds.get(n.kind, n.kind)})" for n in task.noise)
    return f"{names}: {source}"


def cast(array, np_dtype):
    """Features in a side's dtype; labels and word indices stay integers."""
    array = np.asarray(array)
    return array.astype(np_dtype) if np.issubdtype(array.dtype, np.floating) else array


def _check_finite(losses, side, task, start):
    bad = ~np.isfinite(losses)
    if bad.any():
        step = start + int(np.argmax(bad.reshape(len(losses), -1).any(axis=1)))
        value = losses.reshape(len(losses), -1)[step - start]
        raise CompareError(
            f"{task}: the {side} loss became non-finite ({value.tolist()}) at step {step}; "
            "nothing was written (try a smaller --set lr=...)"
        )


def train_torch(twins, order, progress=False, first_epoch=0, first_step=0, noise=None):
    """The torch side over ``order``: one ``train_step`` per batch. Returns the losses.

    A tutorial that changes its optimizer between epochs defines ``start_epoch``, called with
    the epoch's number (``first_epoch`` onwards) before its first batch. ``noise`` (from
    ``draw_noise``) is handed to each step; without it a step draws its own.
    """
    module, model, optimizer = twins.torch_module, twins.torch_model, twins.torch_optimizer
    x, y = twins.torch_arrays["x"], twins.torch_arrays["y"]
    full_batch = twins.hp.batch_size is None
    start_epoch = getattr(module, "start_epoch", None)
    np_dtype = DTYPES[twins.dtype][0]
    model.train()
    losses = []
    bar = tqdm(order, desc="torch", unit="epoch", disable=not progress, leave=False)
    for number, epoch in enumerate(bar, start=first_epoch):
        if start_epoch is not None:
            start_epoch(optimizer, number, twins.hp)
        epoch_noise = [None] * len(epoch) if noise is None else noise[number - first_epoch]
        epoch_losses = []
        for idx, step_noise in zip(epoch, epoch_noise, strict=True):
            xb, yb = (x, y) if full_batch else (x[idx], y[idx])
            args = ()
            if step_noise is not None:
                args = ({k: torch.from_numpy(cast(v, np_dtype)) for k, v in step_noise.items()},)
            epoch_losses.append(module.train_step(model, optimizer, xb, yb, *args))
        epoch_losses = torch.stack(epoch_losses).numpy()
        _check_finite(epoch_losses, "torch", twins.task.name, first_step + sum(map(len, losses)))
        losses.append(epoch_losses)
    return np.concatenate(losses)


def train_jax(twins, order, progress=False, first_epoch=0, first_step=0, chunks=20, noise=None):
    """The JAX side over ``order``: each epoch one jitted ``lax.scan`` (full-batch schedules in
    ``chunks`` scans, so the progress bar moves). Returns the losses.

    ``first_epoch`` is accepted for symmetry with ``train_torch``: optax schedules count
    steps in the optimizer state, so nothing happens between epochs here. ``first_step``
    numbers the steps in error messages. ``noise`` as for ``train_torch``."""
    module, model, optimizer = twins.jax_module, twins.jax_model, twins.jax_optimizer
    x, y = twins.jax_arrays["x"], twins.jax_arrays["y"]
    np_dtype = DTYPES[twins.dtype][0]
    model.train()  # BatchNorm on batch statistics, as torch's model.train()
    losses = []
    bar = tqdm(total=len(order), desc="jax", unit="epoch", disable=not progress, leave=False)
    if twins.hp.batch_size is None:
        size = max(1, math.ceil(len(order) / chunks))
        for start in range(0, len(order), size):
            steps = min(size, len(order) - start)
            chunk = jax_train.train_full_batch(module.train_step, model, optimizer, x, y, steps)
            chunk = np.asarray(chunk)
            _check_finite(chunk, "jax", twins.task.name, first_step + start)
            losses.append(chunk)
            bar.update(steps)
    else:
        for number, epoch in enumerate(order):
            epoch_noise = None
            if noise is not None:
                epoch_noise = [
                    {k: cast(v, np_dtype) for k, v in step.items()} for step in noise[number]
                ]
            epoch_losses = jax_train.train_epoch(
                module.train_step, model, optimizer, x, y, epoch, noise=epoch_noise
            )
            epoch_losses = np.asarray(epoch_losses)
            _check_finite(epoch_losses, "jax", twins.task.name, first_step + sum(map(len, losses)))
            losses.append(epoch_losses)
            bar.update(1)
    bar.close()
    return np.concatenate(losses)


SAMPLES = 100  # a 10 x 10 grid; CGAN's labels run 0-9 down its rows


def fixed_noise(twins, seed=0, count=SAMPLES):
    """The noise a generative task's pictures are drawn from, the same for both sides and for
    every epoch (numpy, seeded); None for other tasks. Labels go in rows: ten 0s, ten 1s...
    Dropout masks are training noise only (eval mode drops nothing): a task with nothing but
    masks draws no pictures from noise."""
    if all(noise.kind == "mask" for noise in twins.task.noise):
        return None
    rng = np.random.default_rng([seed, 3])
    fixed = {}
    for noise in twins.task.noise:
        if noise.kind == "labels":
            classes = noise.num_classes(twins.hp)
            fixed[noise.name] = np.repeat(np.arange(classes), -(-count // classes))[:count]
        else:
            fixed[noise.name] = draw(noise, rng, count, twins.hp)
    return {
        k: v.astype(np.dtype(twins.dtype)) if v.dtype.kind == "f" else v for k, v in fixed.items()
    }


def on_side(twins, side, fn, *arrays):
    """``fn(model, *arrays)`` of one side's tutorial in eval mode, as (n, 28, 28) numpy images.
    Arrays are numpy, torch's NCHW images included; a dict is handed over as a dict."""

    def convert(a):
        if isinstance(a, dict):
            return {k: convert(v) for k, v in a.items()}
        if side == "torch":
            return torch.from_numpy(np.ascontiguousarray(a))
        return jax.numpy.asarray(data.nhwc(a) if a.ndim == 4 else a)

    model = twins.torch_model if side == "torch" else twins.jax_model
    model.eval()  # BatchNorm on running statistics, as the lessons sample
    out = fn(model, *(convert(a) for a in arrays))
    model.train()
    out = out.numpy() if side == "torch" else np.asarray(out)
    return out.reshape(len(out), 28, 28)


def generate(twins, side, fixed):
    module = twins.torch_module if side == "torch" else twins.jax_module
    return on_side(twins, side, module.predict, fixed)


def max_rel_diff(a, b):
    """max |a - b| / |b| elementwise (|b| floored at the smallest normal float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")  # a NaN must never compare as "no difference"
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), np.finfo(np.float64).tiny)))


def tensor_rel_diff(a, b):
    """max over tensors of max |a - b| / max |b|: relative to each tensor's own scale."""
    worst = 0.0
    for key in b:
        x, y = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return float("inf")  # a NaN must never compare as "no difference"
        scale = max(float(np.max(np.abs(y))) if y.size else 0.0, np.finfo(np.float64).tiny)
        worst = max(worst, float(np.max(np.abs(x - y))) / scale if y.size else 0.0)
    return worst


def evaluate_side(twins, side, x_key="x_test", y_key="y_test", chunk=1000):
    """Eval-mode mean loss, predictions and accuracy of one side on a split, in chunks.

    A tutorial whose model holds several nets (``task.loss_names``) may define
    ``losses(model, x, y)``, one loss per net: the loss is then ``{name: loss}``."""
    arrays = twins.torch_arrays if side == "torch" else twins.jax_arrays
    x, y = arrays[x_key], arrays[y_key]
    total, predictions = 0.0, []
    if side == "torch":
        model, module = twins.torch_model, twins.torch_module
        loss_fn = getattr(module, "losses", module.loss_fn)
        model.eval()
        with torch.no_grad():
            for i in range(0, len(x), chunk):
                xb, yb = x[i : i + chunk], y[i : i + chunk]
                total += loss_fn(model, xb, yb).numpy() * len(xb)
                predictions.append(module.predict(model, x[i : i + chunk]).numpy())
        model.train()
    else:
        model, module = twins.jax_model, twins.jax_module
        model.eval()  # BatchNorm on running statistics, as torch's model.eval()
        loss_fn = _jitted_loss(module)
        for i in range(0, len(x), chunk):
            xb, yb = x[i : i + chunk], y[i : i + chunk]
            total += np.asarray(loss_fn(model, xb, yb)) * len(xb)
            predictions.append(np.asarray(module.predict(model, x[i : i + chunk])))
        model.train()
    predictions = np.concatenate(predictions)
    loss = np.asarray(total, np.float64) / len(x)
    if loss.ndim:
        loss = dict(zip(twins.task.loss_names, loss.tolist(), strict=True))
    result = {"loss": float(loss) if isinstance(loss, np.ndarray) else loss}
    result["predictions"] = predictions
    if twins.task.metric == "accuracy":
        result["accuracy"] = accuracy(predictions, twins.arrays[y_key])
    return result


def accuracy(predictions, labels):
    """The fraction of labels predicted, skipping ``IGNORE_INDEX`` labels (a padded sentence's
    end), as torch's losses skip them."""
    predictions, labels = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    scored = labels != data.IGNORE_INDEX
    return float(np.mean(predictions[scored] == labels[scored]))


_LOSS_CACHE = {}


def _jitted_loss(module):
    if module not in _LOSS_CACHE:
        _LOSS_CACHE[module] = nnx.jit(getattr(module, "losses", module.loss_fn))
    return _LOSS_CACHE[module]
