"""The ``run`` verb: train both sides from the same weights on the same batches, write results.

Outputs go to a hidden sibling directory first and move into ``--out`` only when everything
succeeded, ``metrics.json`` last: a failed run leaves nothing that looks like a result.
"""

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch
from tqdm.auto import tqdm

from compare import CompareError, data, equivalences, plots, port, registry
from compare.twins import (
    accuracy,
    cast,
    draw_noise,
    evaluate_side,
    fixed_noise,
    generate,
    make_twins,
    max_rel_diff,
    noise_note,
    on_side,
    schedule,
    tensor_rel_diff,
    train_jax,
    train_torch,
)


def predictors(twins):
    """side -> function(numpy x) -> numpy prediction, in the dtype the side trained in."""
    np_dtype = np.dtype(twins.dtype)

    def torch_predict(x):
        model = twins.torch_model.eval()
        return twins.torch_module.predict(model, torch.from_numpy(cast(x, np_dtype))).numpy()

    def jax_predict(x):
        x = data.nhwc(x) if x.ndim == 4 else x  # numpy callers hold torch's NCHW images
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
    data_parallel=None,
):
    task = registry.get(task_name)
    if data_parallel is not None:
        from compare import parallel

        parallel.check_task(task, hp or task.hp, data_parallel)
    out_dir = Path(out) if out else Path("runs") / task.name
    _check_writable(out_dir)
    if download:
        if data_dir is None:
            raise CompareError("--download needs --data-dir: where to put the files")
        if task.dataset not in data.FILE_DATASETS:
            raise CompareError(f"{task.name} generates its data; there is nothing to download")
        data.download_mnist(data_dir)
    twins = make_twins(
        task, dtype="float32", seed=seed, init_from=init_from, hp=hp, data_dir=data_dir
    )
    if epochs is not None and epochs < 1:
        raise CompareError("--epochs must be at least 1")
    num_epochs = (
        epochs if epochs is not None else (task.quick_epochs if quick else twins.hp.num_epochs)
    )
    order = schedule(twins, num_epochs, seed=seed)

    fixed = fixed_noise(twins, seed=seed)  # what the generators draw from after every epoch
    samples = {"torch": [], "jax": []}
    losses, seconds, epoch_seconds, history = {}, {}, {}, {}
    split = None
    if data_parallel is not None:  # the whole schedule on N devices, each side
        losses, seconds, split = _train_data_parallel(
            twins, order, data_parallel, seed, init_from, data_dir, num_epochs
        )
        if fixed is not None:
            samples = {side: [generate(twins, side, fixed)] for side in ("torch", "jax")}
    for side, train in (("torch", train_torch), ("jax", train_jax)):
        if split is not None:
            break
        if "x_test" not in twins.arrays and fixed is None:  # the whole schedule at once
            start = time.perf_counter()
            losses[side] = train(twins, order, progress=progress)
            seconds[side] = time.perf_counter() - start
            continue
        # Test after every epoch, as the lessons do; the clock stops while testing.
        chunks, epoch_seconds[side], history[side] = [], [], []
        bar = tqdm(total=num_epochs, desc=side, unit="epoch", disable=not progress, leave=False)
        for number, epoch in enumerate(order):
            start = time.perf_counter()
            first_step = sum(map(len, chunks))
            chunks.append(train(twins, [epoch], first_epoch=number, first_step=first_step))
            epoch_seconds[side].append(time.perf_counter() - start)
            if fixed is not None:  # a generator's digits from the same z on both sides
                samples[side].append(generate(twins, side, fixed))
            if "x_test" in twins.arrays:
                tested = evaluate_side(twins, side)
                history[side].append(
                    {
                        "epoch": number + 1,
                        "train_loss": _named(task, np.mean(chunks[-1], axis=0)),  # the steps'
                        "test_loss": tested["loss"],
                    }
                )
                if "accuracy" in tested:
                    history[side][-1]["test_accuracy"] = tested["accuracy"]
                    bar.set_postfix(test_accuracy=f"{100 * tested['accuracy']:.2f} %")
                else:
                    bar.set_postfix(test_loss=_short(tested["loss"]))
            bar.update()
        bar.close()
        losses[side] = np.concatenate(chunks)
        seconds[side] = float(sum(epoch_seconds[side]))

    predict = predictors(twins)
    metrics = evaluate(twins, predict, losses)
    tested = {}
    if "x_test" in twins.arrays:
        tested = {side: evaluate_side(twins, side) for side in ("torch", "jax")}
        for side in ("torch", "jax"):
            if "accuracy" in tested[side]:
                metrics[side]["test_accuracy"] = tested[side]["accuracy"]
            metrics[side]["test_loss"] = tested[side]["loss"]
            if side in history:  # data-parallel runs test once, at the end
                metrics[side]["per_epoch"] = history[side]
    result = {
        "task": task.name,
        "dataset": twins.dataset,
        "epochs": num_epochs,
        "steps": int(len(losses["torch"])),
        "seed": seed,
        "init": str(init_from) if init_from else f"torch default init, seed {seed}",
        "hyperparameters": _plain(twins.hp),
        "jax": {
            "losses": losses["jax"].tolist(),
            "metrics": metrics["jax"],
            "train_seconds": seconds["jax"],
        },
        "torch": {
            "losses": losses["torch"].tolist(),
            "metrics": metrics["torch"],
            "train_seconds": seconds["torch"],
        },
        "loss_max_abs_diff": float(np.max(np.abs(losses["jax"] - losses["torch"]))),
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
        "device": {"jax": str(jax.devices()[0]), "torch": "cpu"},
    }
    if split is not None:
        result["data_parallel"] = split
    if task.noise and split is not None:
        result["noise"] = noise_note(
            task, "drawn once in numpy, fed to both sides (each torch rank its slice)"
        )
    elif task.noise:
        result["noise"] = noise_note(
            task, "each side draws its own (torch's generator; the JAX model's nnx.Rngs)"
        )
    if epoch_seconds:
        for side in ("torch", "jax"):
            result[side]["epoch_seconds"] = epoch_seconds[side]
    if tested:
        predicted = {side: tested[side]["predictions"] for side in tested}
        if task.metric == "accuracy":
            result["test_predictions_differ"] = int(np.sum(predicted["torch"] != predicted["jax"]))
        else:
            result["test_prediction_max_rel_diff"] = tensor_rel_diff(
                {"test": predicted["jax"]}, {"test": predicted["torch"]}
            )
    for side, model in (
        ("torch", port.torch_state_dict(twins.torch_model)),
        ("jax", port.from_nnx(twins.jax_model)),
    ):
        params = small_params(model)
        if params is not None:
            result[side]["metrics"]["params"] = params
    if task.dataset == "tagged-sentences":  # the lesson prints the tags it finds
        result["tags"] = _tags(predict)
    by_hand = None
    if hasattr(twins.torch_module, "numpy_by_hand"):  # the lesson's numpy joins the comparison
        by_hand = _by_hand(twins, order)
        predict["numpy by hand"] = by_hand.pop("predict")
        result["numpy_by_hand"] = {k: v for k, v in by_hand.items() if k != "losses"}
    table = None
    if equivalences.defined(
        twins.jax_module, twins.torch_module
    ):  # the lesson's functions, torch's and JAX's, compared
        table = equivalences.table(twins.jax_module, twins.torch_module)
        result["equivalences"] = {k: v for k, v in table.items() if k != "curves"}

    picture = plots.Picture(
        task.name,
        twins.arrays,
        predict,
        losses,
        task.loss_names,
        metrics,
        predictions={side: t["predictions"] for side, t in tested.items()},
        samples=samples if fixed is not None else None,
        reconstructions=_reconstructions(twins, fixed),
        by_hand=by_hand,
        equivalences=table,
    )
    result["out_dir"] = str(out_dir)
    _write(out_dir, result, picture, task.picture)
    return result


def _train_data_parallel(twins, order, n, seed, init_from, data_dir, num_epochs):
    """Both sides over ``order`` on ``n`` devices (``compare.parallel``); the torch ranks'
    final weights are loaded into ``twins.torch_model`` for the evaluation and pictures."""
    from compare import parallel

    parallel.check_split(order, n)
    data_mesh = parallel.mesh(n)
    # the torch ranks are fed the noise from numpy (each its slice: one rank's own draws
    # would repeat on every rank, all seeded alike); JAX gets the same
    noise = draw_noise(twins, order, seed=seed)
    start = time.perf_counter()
    jax_losses, info = parallel.train_jax_sharded(twins, order, data_mesh, noise=noise)
    jax_seconds = time.perf_counter() - start
    start = time.perf_counter()
    torch_losses, state, sizes = parallel.train_torch_ddp(
        twins.task.name, n, twins.dtype, seed, num_epochs, None, twins.hp, init_from, data_dir
    )
    torch_seconds = time.perf_counter() - start  # process start-up included
    port.load_into_torch(twins.torch_model, state)
    first = order[0][0]
    x = torch.from_numpy(cast(twins.arrays["x"][first], np.dtype(twins.dtype)))
    split = parallel.describe_split(n, data_mesh, info, sizes, twins.torch_model)
    split["lesson_nn_DataParallel"] = parallel.lesson_data_parallel(twins.torch_model, x)
    split["train_seconds_note"] = "torch's includes starting its processes"
    losses = {"jax": jax_losses, "torch": torch_losses}
    return losses, {"jax": jax_seconds, "torch": torch_seconds}, split


def _reconstructions(twins, fixed, count=50):
    """The VAE's originals and both sides' reconstructions of them (the same eps)."""
    if fixed is None or not hasattr(twins.torch_module, "reconstruct"):
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


def _by_hand(twins, order):
    """The lesson's numpy version (a tutorial's ``numpy_by_hand`` hook), float64, from the
    common initial weights over the same batches, measured against torch in float64 (the
    float32 run's rounding would hide differences of 1e-7): every step's loss and the final
    parameters, per net where the model holds several (``task.loss_names``).

    ``numpy_by_hand(initial, arrays, hp, order)`` returns ``{"losses": (steps[, k]),
    "state": a state dict with torch's names}`` and may add ``"notes"``: one line per net on
    why it differs from torch."""
    initial = {k: v.astype(np.float64) for k, v in twins.initial.items()}
    hand = twins.torch_module.numpy_by_hand(initial, twins.arrays, twins.hp, order)
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


def _check_writable(out_dir):
    """Fail before training, not after, when the results could not be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CompareError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir.parent, prefix=".probe-")
        probe.close()
    except OSError as err:
        raise CompareError(f"--out {out_dir}: cannot write there ({err.strerror or err})") from None


def _write(out_dir, result, picture, picture_name):
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as err:
        raise CompareError(f"--out {out_dir}: cannot write there ({err.strerror or err})") from None
    try:
        plots.loss_curves(picture, staging / "curves.png")
        getattr(plots, picture_name)(picture, staging / f"{picture_name}.png")
        for epoch in range(len((picture.samples or {}).get("torch", []))):
            plots.samples(picture, staging / f"samples_epoch_{epoch + 1:03d}.png", epoch=epoch)
        (staging / "metrics.json").write_text(json.dumps(result, indent=1))
        out_dir.mkdir(exist_ok=True)
        names = sorted(p.name for p in staging.iterdir() if p.name != "metrics.json")
        for name in (*names, "metrics.json"):  # metrics.json last
            shutil.move(staging / name, out_dir / name)
    except OSError as err:
        raise CompareError(f"--out {out_dir}: writing the results failed ({err})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
