"""The ``run`` verb: train both sides from the same weights on the same batches, write results.

``run`` builds the twins, trains them (epoch by epoch, testing after each epoch where the task
has a test split, as the lessons do), scores them, adds what the lesson itself adds (its
registry entry says: ``Task.tags``, ``Task.by_hand``, ``Task.equivalences``), and writes
``metrics.json`` with the pictures. Outputs go to a hidden sibling directory first and move
into ``--out`` only when everything succeeded, ``metrics.json`` last: a failed run leaves
nothing that looks like a result.
"""

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
import torch
from tqdm.auto import tqdm

from compare import port
from compare.arrays import cast, to_flax_layout
from compare.diff import max_rel_diff, tensor_rel_diff
from compare.errors import CompareError
from compare.files import check_writable, write_whole
from compare.tutorials import data, equivalences, plots, registry
from compare.tutorials.twins import (
    accuracy,
    evaluate_side,
    fixed_noise,
    generate,
    make_twins,
    noise_note,
    on_side,
    schedule,
    train_jax,
    train_torch,
)

SIDES = ("torch", "jax")


@dataclass
class Trained:
    """What training both sides gave: per side the per-step ``losses`` and ``seconds``; where
    the sides were tested after every epoch, ``epoch_seconds`` and ``history``; a generative
    task's digits after each epoch (``samples``); ``fields`` a runner adds to the result."""

    losses: dict
    seconds: dict
    epoch_seconds: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    samples: dict = field(default_factory=lambda: {side: [] for side in SIDES})
    fields: dict = field(default_factory=dict)


def run(
    task_name,
    epochs=None,
    seed=0,
    data_dir=None,
    init_from=None,
    out=None,
    quick=False,
    hp=None,
    progress=True,
    download=False,
    train_both=None,
):
    """Train both sides of ``task_name`` and write ``metrics.json``, ``curves.png`` and the
    lesson's picture to ``out`` (default ``runs/TASK``); returns the result ``run --json``
    prints.

    The schedule is ``epochs`` epochs, else the lesson's (``quick``: ``task.quick_epochs``).
    ``train_both(twins, order)`` trains both sides over the whole schedule instead, returning
    a ``Trained`` (``compare.parallel`` runs the sides on N devices so).
    """
    task = registry.get(task_name)
    out_dir = Path(out) if out else Path("runs") / task.name
    check_writable(out_dir)
    if download:
        _download(task, data_dir)
    twins = make_twins(
        task, dtype="float32", seed=seed, init_from=init_from, hp=hp, data_dir=data_dir
    )
    if epochs is not None and epochs < 1:
        raise CompareError("--epochs must be at least 1")
    if epochs is None:
        epochs = task.quick_epochs if quick else twins.hp.num_epochs
    order = schedule(twins, epochs, seed=seed)
    fixed = fixed_noise(twins, seed=seed)  # what the generators draw from after every epoch
    if train_both is None:
        trained = _train_sides(twins, order, fixed, progress)
    else:
        trained = train_both(twins, order)
        if fixed is not None:
            trained.samples = {side: [generate(twins, side, fixed)] for side in SIDES}

    predict = predictors(twins)
    metrics = evaluate(twins, predict, trained.losses)
    tested = {}
    if "x_test" in twins.arrays:
        tested = {side: evaluate_side(twins, side) for side in SIDES}
        for side in SIDES:
            if "accuracy" in tested[side]:
                metrics[side]["test_accuracy"] = tested[side]["accuracy"]
            metrics[side]["test_loss"] = tested[side]["loss"]
            if side in trained.history:  # a run over the whole schedule tests once, at the end
                metrics[side]["per_epoch"] = trained.history[side]
    result = _result(twins, seed, init_from, epochs, trained, metrics, tested)

    hand = table = None
    if task.tags:  # the lesson prints the tags it finds
        result["tags"] = _tags(predict)
    if task.by_hand:  # the lesson's numpy version joins the comparison
        hand = compare_by_hand(twins, order)
        predict["numpy by hand"] = hand.pop("predict")
        result["numpy_by_hand"] = {k: v for k, v in hand.items() if k != "losses"}
    if task.equivalences:  # the lesson's functions, torch's and JAX's, compared
        table = equivalences.table(twins.jax_module, twins.torch_module)
        result["equivalences"] = {k: v for k, v in table.items() if k != "curves"}

    picture = plots.Picture(
        task.name,
        twins.arrays,
        predict,
        trained.losses,
        task.loss_names,
        metrics,
        predictions={side: t["predictions"] for side, t in tested.items()},
        samples=trained.samples if fixed is not None else None,
        reconstructions=_reconstructions(twins, fixed),
        by_hand=hand,
        equivalences=table,
    )
    result["out_dir"] = str(out_dir)
    _write(out_dir, result, picture, task.picture)
    return result


def _download(task, data_dir):
    if data_dir is None:
        raise CompareError("--download needs --data-dir: where to put the files")
    if task.dataset not in data.FILE_DATASETS:
        raise CompareError(f"{task.name} generates its data; there is nothing to download")
    data.download_mnist(data_dir)


def _train_sides(twins, order, fixed, progress):
    """Each side over ``order``, torch then JAX: the whole schedule at once, or epoch by epoch
    where there is something to do after each (test, as the lessons do, with the clock
    stopped; draw a generator's digits from ``fixed``)."""
    task = twins.task
    trained = Trained(losses={}, seconds={})
    for side, train in (("torch", train_torch), ("jax", train_jax)):
        if "x_test" not in twins.arrays and fixed is None:  # the whole schedule at once
            start = time.perf_counter()
            trained.losses[side] = train(twins, order, progress=progress)
            trained.seconds[side] = time.perf_counter() - start
            continue
        chunks, seconds, history = [], [], []
        bar = tqdm(total=len(order), desc=side, unit="epoch", disable=not progress, leave=False)
        for number, epoch in enumerate(order):
            start = time.perf_counter()
            first_step = sum(map(len, chunks))
            chunks.append(train(twins, [epoch], first_epoch=number, first_step=first_step))
            seconds.append(time.perf_counter() - start)
            if fixed is not None:  # a generator's digits from the same z on both sides
                trained.samples[side].append(generate(twins, side, fixed))
            if "x_test" in twins.arrays:
                tested = evaluate_side(twins, side)
                history.append(
                    {
                        "epoch": number + 1,
                        "train_loss": _named(task, np.mean(chunks[-1], axis=0)),  # the steps'
                        "test_loss": tested["loss"],
                    }
                )
                if "accuracy" in tested:
                    history[-1]["test_accuracy"] = tested["accuracy"]
                    bar.set_postfix(test_accuracy=f"{100 * tested['accuracy']:.2f} %")
                else:
                    bar.set_postfix(test_loss=_short(tested["loss"]))
            bar.update()
        bar.close()
        trained.losses[side] = np.concatenate(chunks)
        trained.seconds[side] = float(sum(seconds))
        trained.epoch_seconds[side] = seconds
        trained.history[side] = history
    return trained


def _result(twins, seed, init_from, epochs, trained, metrics, tested):
    """The result's common fields (``run --json``), before what a lesson adds."""
    task, losses = twins.task, trained.losses
    result = {
        "task": task.name,
        "dataset": twins.dataset,
        "epochs": epochs,
        "steps": int(len(losses["torch"])),
        "seed": seed,
        "init": str(init_from) if init_from else f"torch default init, seed {seed}",
        "hyperparameters": _plain(twins.hp),
        "jax": {
            "losses": losses["jax"].tolist(),
            "metrics": metrics["jax"],
            "train_seconds": trained.seconds["jax"],
        },
        "torch": {
            "losses": losses["torch"].tolist(),
            "metrics": metrics["torch"],
            "train_seconds": trained.seconds["torch"],
        },
        "loss_max_abs_diff": float(np.max(np.abs(losses["jax"] - losses["torch"]))),
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
        "device": {"jax": str(jax.devices()[0]), "torch": "cpu"},
    }
    if task.noise:
        result["noise"] = noise_note(
            task, "each side draws its own (torch's generator; the JAX model's nnx.Rngs)"
        )
    result.update(trained.fields)
    if trained.epoch_seconds:
        for side in SIDES:
            result[side]["epoch_seconds"] = trained.epoch_seconds[side]
    if tested:
        predicted = {side: tested[side]["predictions"] for side in tested}
        if task.metric == "accuracy":
            result["test_predictions_differ"] = int(np.sum(predicted["torch"] != predicted["jax"]))
        else:
            result["test_prediction_max_rel_diff"] = tensor_rel_diff(
                {"test": predicted["jax"]}, {"test": predicted["torch"]}
            )
    for side, state in (
        ("torch", port.torch_state_dict(twins.torch_model)),
        ("jax", port.nnx_to_torch(twins.jax_model)),
    ):
        params = small_params(state)
        if params is not None:
            result[side]["metrics"]["params"] = params
    return result


def predictors(twins):
    """side -> function(numpy x) -> numpy prediction, in the dtype the side trained in."""
    np_dtype = np.dtype(twins.dtype)

    def torch_predict(x):
        model = twins.torch_model.eval()
        return twins.torch_module.predict(model, torch.from_numpy(cast(x, np_dtype))).numpy()

    def jax_predict(x):
        x = to_flax_layout(x)  # numpy callers hold torch's NCHW images
        twins.jax_model.eval()  # as torch's model.eval(): BatchNorm on running statistics
        return np.asarray(
            twins.jax_module.predict(twins.jax_model, jax.numpy.asarray(cast(x, np_dtype)))
        )

    return {"torch": torch_predict, "jax": jax_predict}


def evaluate(twins, predict, losses):
    """Per side: the last training loss(es), and the training-set accuracy of tasks without a
    test split (those with one are scored on it by ``evaluate_side``)."""
    metrics = {}
    for side in ("torch", "jax"):
        last = np.asarray(losses[side][-1])
        if twins.task.loss_names:
            side_metrics = {
                "final_loss": dict(zip(twins.task.loss_names, last.tolist(), strict=True))
            }
        else:
            side_metrics = {"final_loss": float(last)}
        if twins.task.metric == "accuracy" and "x_test" not in twins.arrays:
            side_metrics["accuracy"] = accuracy(predict[side](twins.arrays["x"]), twins.arrays["y"])
        metrics[side] = side_metrics
    return metrics


def small_params(state_dict, limit=8):
    """A model's parameters as plain numbers when there are only a few (autograd-fit's w, b)."""
    if sum(np.size(v) for v in state_dict.values()) > limit:
        return None
    return {k: np.asarray(state_dict[k]).reshape(-1).tolist() for k in sorted(state_dict)}


def _reconstructions(twins, fixed, count=50):
    """The VAE's originals and both sides' reconstructions of them (the same eps), for a task
    whose picture is ``reconstructions`` (its tutorial files define ``reconstruct``)."""
    if fixed is None or twins.task.picture != "reconstructions":
        return None
    # spread over the set: the shipped images are stored sorted by class
    pick = np.linspace(0, len(twins.arrays["x"]) - 1, count).astype(int)
    x = twins.arrays["x"][pick].astype(np.dtype(twins.dtype))
    noise = {k: v[:count] for k, v in fixed.items()}
    out = {"original": x.reshape(count, 28, 28)}
    for side in ("torch", "jax"):
        module = twins.torch_module if side == "torch" else twins.jax_module
        out[side] = on_side(twins, side, module.reconstruct, x, noise)
    return out


def compare_by_hand(twins, order):
    """The lesson's numpy version (``byhand/<module>.py``'s ``numpy_by_hand``), float64, from the
    common initial weights over the same batches, measured against torch in float64 (the
    float32 run's rounding would hide differences of 1e-7): every step's loss and the final
    parameters, per net where the model holds several (``task.loss_names``).

    ``numpy_by_hand(initial, arrays, hp, order)`` returns ``{"losses": (steps[, k]),
    "state": a state dict with torch's names}`` and may add ``"notes"``: one line per net on
    why it differs from torch."""
    initial = {k: v.astype(np.float64) for k, v in twins.initial.items()}
    hand = twins.task.by_hand_module().numpy_by_hand(initial, twins.arrays, twins.hp, order)
    model = port.load_into_torch(twins.torch_module.new_model(twins.hp).double(), initial)
    reference = dataclasses.replace(
        twins,
        dtype="float64",
        torch_model=model,
        torch_optimizer=twins.torch_module.new_optimizer(model, twins.hp),
        torch_arrays={k: torch.from_numpy(cast(v, np.float64)) for k, v in twins.arrays.items()},
    )
    torch_losses = train_torch(reference, order)
    torch_state = port.torch_state_dict(model)
    hand_losses = np.asarray(hand["losses"], np.float64)
    names = twins.task.loss_names or (None,)
    columns = hand_losses.reshape(len(hand_losses), -1).T
    torch_columns = torch_losses.reshape(len(torch_losses), -1).T
    loss_diff, param_diff = {}, {}
    for name, mine, theirs in zip(names, columns, torch_columns, strict=True):
        keys = [k for k in torch_state if name is None or k.startswith(f"{name}.")]
        loss_diff[name] = max_rel_diff(mine, theirs)
        param_diff[name] = tensor_rel_diff(
            {k: hand["state"][k] for k in keys}, {k: torch_state[k] for k in keys}
        )
    final = hand_losses[-1]
    result = {
        "final_loss": _named(twins.task, final),
        "losses": hand_losses,
        "vs_torch_float64": {
            "loss_max_rel_diff": loss_diff.get(None, loss_diff),
            "param_max_rel_diff": param_diff.get(None, param_diff),
        },
    }
    params = small_params(hand["state"])
    if params is not None:
        result["params"] = params
    if "notes" in hand:
        result["notes"] = dict(hand["notes"])
    hand_model = port.load_into_torch(
        twins.torch_module.new_model(twins.hp).double(), hand["state"]
    )

    def predict(x):
        return twins.torch_module.predict(hand_model.eval(), torch.from_numpy(cast(x, np.float64)))

    result["predict"] = lambda x: predict(x).numpy()
    return result


def _named(task, value):
    """A loss per net as ``{name: loss}`` where a model holds several, else a float."""
    value = np.asarray(value, np.float64)
    if value.ndim:
        return dict(zip(task.loss_names, value.tolist(), strict=True))
    return float(value)


def _short(loss):
    if isinstance(loss, dict):
        return " ".join(f"{name} {value:.3g}" for name, value in loss.items())
    return f"{loss:.3g}"


def _tags(predict):
    """Each side's tags for the training and test sentences: {side: {sentence: [tag, ...]}}."""
    names = {i: tag for tag, i in data.TAG_TO_IX.items()}
    index = data.word_to_ix()
    sentences = [words for words, _ in data.TRAINING_SENTENCES + data.TEST_SENTENCES]
    tags = {}
    for side in ("torch", "jax"):
        tags[side] = {}
        for words in sentences:
            x = np.array([[index[w] for w in words]], np.int64)  # (1, seq_len)
            tags[side][" ".join(words)] = [names[int(i)] for i in predict[side](x)[0]]
    return tags


def _plain(hp):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(hp).items()}


def _write(out_dir, result, picture, picture_name):
    def write(staging):
        plots.loss_curves(picture, staging / "curves.png")
        getattr(plots, picture_name)(picture, staging / f"{picture_name}.png")
        for epoch in range(len((picture.samples or {}).get("torch", []))):
            plots.samples(picture, staging / f"samples_epoch_{epoch + 1:03d}.png", epoch=epoch)
        (staging / "metrics.json").write_text(json.dumps(result, indent=1))

    write_whole(out_dir, write, last="metrics.json")
