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

import jaxnets
from compare import port
from compare.arrays import cast, to_flax_layout
from compare.diff import check_finite
from compare.errors import CompareError
from compare.toolkit.engine import DTYPES, Pair, Side, set_precision
from compare.tutorials import data, registry
from jaxnets.layers import HiddenState

NOTHING_WRITTEN = "nothing was written (try a smaller --set lr=...)"


@dataclass
class Twins:
    """A task's two sides from the same initial weights, with the data each trains on."""

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


def make_twins(task, dtype="float32", seed=0, init_from=None, hp=None, data_dir=None):
    """Both sides of ``task`` in ``dtype``: torch's model built from ``seed`` (or loaded from
    ``init_from``), its state dict ported to the JAX model; each side's optimizer, and the data
    as numpy, on the JAX device and as torch tensors. ``hp`` replaces the task's own."""
    if dtype not in DTYPES:
        raise CompareError(f"unknown dtype {dtype!r}; use float32 or float64")
    set_precision(dtype)
    np_dtype, torch_dtype = DTYPES[dtype]
    hp = hp or task.hp
    jax_module, torch_module = task.modules()
    arrays = data.load(task.name, data_dir=data_dir)
    hp = fit_to_data(hp, arrays)

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
    port.torch_to_nnx(initial, jax_model, dtype=np_dtype)
    _cast_carried_state(jax_model, np_dtype)

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
        jax_arrays={k: jnp.asarray(cast(to_flax_layout(v), np_dtype)) for k, v in arrays.items()},
        torch_arrays={k: torch.from_numpy(cast(v, np_dtype)) for k, v in arrays.items()},
        initial=initial,
        dataset=data.dataset_label(task.name, data_dir),
    )


def fit_to_data(hp, arrays):
    """``hp`` with what depends on the data filled in: a schedule counted in steps needs the
    epoch's length (``steps_per_epoch``)."""
    if "steps_per_epoch" not in {f.name for f in dataclasses.fields(hp)}:
        return hp
    return dataclasses.replace(hp, steps_per_epoch=math.ceil(len(arrays["x"]) / hp.batch_size))


def _cast_carried_state(model, np_dtype):
    """A state the model carries between steps (rnn-sincos's hidden state) is not ported: it
    starts at zeros on both sides. It only needs the dtype the side trains in."""
    for _, var in nnx.to_flat_state(nnx.state(model, HiddenState)):
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
        check_finite(
            epoch_losses,
            "torch",
            first_step + sum(map(len, losses)),
            after=NOTHING_WRITTEN,
            task=twins.task.name,
        )
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
            chunk = jaxnets.train_full_batch(module.train_step, model, optimizer, x, y, steps)
            chunk = np.asarray(chunk)
            check_finite(
                chunk, "jax", first_step + start, after=NOTHING_WRITTEN, task=twins.task.name
            )
            losses.append(chunk)
            bar.update(steps)
    else:
        for number, epoch in enumerate(order):
            epoch_noise = None
            if noise is not None:
                epoch_noise = [
                    {k: cast(v, np_dtype) for k, v in step.items()} for step in noise[number]
                ]
            epoch_losses = jaxnets.train_epoch(
                module.train_step, model, optimizer, x, y, epoch, noise=epoch_noise
            )
            epoch_losses = np.asarray(epoch_losses)
            check_finite(
                epoch_losses,
                "jax",
                first_step + sum(map(len, losses)),
                after=NOTHING_WRITTEN,
                task=twins.task.name,
            )
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
        return jax.numpy.asarray(to_flax_layout(a))

    model = twins.torch_model if side == "torch" else twins.jax_model
    model.eval()  # BatchNorm on running statistics, as the lessons sample
    out = fn(model, *(convert(a) for a in arrays))
    model.train()
    out = out.numpy() if side == "torch" else np.asarray(out)
    return out.reshape(len(out), 28, 28)


def generate(twins, side, fixed):
    module = twins.torch_module if side == "torch" else twins.jax_module
    return on_side(twins, side, module.predict, fixed)


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


def tutorial_pair(twins):
    """A registered tutorial (``make_twins``) as the lockstep engine's pair: its own models,
    optimizers, ``loss_fn`` and ``train_step`` on each side."""
    np_dtype = DTYPES[twins.dtype][0]

    def to_torch(a):
        return torch.from_numpy(np.ascontiguousarray(cast(a, np_dtype)))

    def to_jax(a):
        return jnp.asarray(to_flax_layout(cast(a, np_dtype)))

    start_epoch = getattr(twins.torch_module, "start_epoch", None)
    if start_epoch is not None:
        torch_start = lambda epoch: start_epoch(twins.torch_optimizer, epoch, twins.hp)  # noqa: E731
    return Pair(
        torch=Side(
            "torch",
            twins.torch_model,
            twins.torch_optimizer,
            twins.torch_module.loss_fn,
            twins.torch_module.train_step,
            to_torch,
            start_epoch=None if start_epoch is None else torch_start,
        ),
        jax=Side(
            "jax",
            twins.jax_model,
            twins.jax_optimizer,
            twins.jax_module.loss_fn,
            twins.jax_module.train_step,
            to_jax,
        ),
        dtype=twins.dtype,
    )
