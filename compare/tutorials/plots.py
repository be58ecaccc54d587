"""The pictures a run writes: both loss curves on one plot, and each lesson's own figure.

Every picture function takes the run's ``Picture`` (data, both sides' predictions, losses) and
a path. torch is drawn solid, JAX dashed, so that agreeing curves lie on top of each other.
"""

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

SIDES = ("torch", "jax")
STYLE = {"torch": {"ls": "-", "lw": 2.0, "alpha": 0.8}, "jax": {"ls": "--", "lw": 1.5}}
COLORS = {"torch": "tab:red", "jax": "tab:blue"}
FEW_STEPS = 30  # loss curves this short get a marker on every step


@dataclass
class Picture:
    task: str
    arrays: dict  # numpy data
    predict: dict  # side -> function(numpy x) -> numpy prediction
    losses: dict  # side -> (steps,) or (steps, k) losses
    loss_names: tuple = ()
    metrics: dict | None = None
    predictions: dict | None = None  # side -> predicted labels of the whole test set
    samples: dict | None = None  # side -> per epoch, (n, 28, 28) digits from the fixed noise
    reconstructions: dict | None = None  # "original", "torch", "jax" -> (n, 28, 28)
    by_hand: dict | None = None  # the lesson's numpy version: "losses" (steps[, k]), ...
    equivalences: dict | None = None  # compare.tutorials.equivalences.table: "curves", "rows"


def _grid(images, rows):
    """(n, 28, 28) images tiled into one (rows * 28, n / rows * 28) picture, 2 px apart."""
    n = len(images)
    cols = -(-n // rows)
    tile = np.full((rows * 30, cols * 30), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        tile[r * 30 + 1 : r * 30 + 29, c * 30 + 1 : c * 30 + 29] = image
    return tile


def samples(pic, path, epoch=-1):
    """Digits each side's generator makes of the same fixed noise, torch left, JAX right
    (after ``epoch``, the last by default). CGAN's rows are the digits 0 to 9."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.3))
    number = len(pic.samples["torch"]) if epoch == -1 else epoch + 1
    for ax, side in zip(axes, SIDES, strict=True):
        images = pic.samples[side][epoch]
        ax.imshow(_grid(images, rows=int(np.sqrt(len(images)))), cmap="gray")
        ax.set_title(f"{side}, after epoch {number}")
        ax.axis("off")
    fig.suptitle(f"{pic.task}: generated from the same z on both sides", fontsize=10)
    _save(fig, path)


def reconstructions(pic, path):
    """The VAE's figure: originals, and each side's reconstructions of them (same eps); the
    per-epoch new digits are the ``samples`` pictures."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for ax, key in zip(axes, ("original", *SIDES), strict=True):
        ax.imshow(_grid(pic.reconstructions[key], rows=5), cmap="gray")
        ax.set_title(key if key == "original" else f"{key} reconstruction")
        ax.axis("off")
    _save(fig, path)


def digits(pic, path, count=40):
    """The first test images with both sides' predicted digits; red where a side is wrong."""
    images = pic.arrays["x_test"][:count].reshape(count, 28, 28)
    labels = pic.arrays["y_test"][:count]
    fig, axes = plt.subplots(4, count // 4, figsize=(count // 4 * 1.1, 5.2))
    for i, ax in enumerate(axes.flat):
        t, j = (pic.predictions[side][i] for side in ("torch", "jax"))
        ax.imshow(images[i], cmap="gray_r")
        ax.set_title(f"t {t}  j {j}", fontsize=8, color="k" if t == j == labels[i] else "red")
        ax.axis("off")
    accuracy = ", ".join(
        f"{side} {100 * (pic.metrics or {})[side]['test_accuracy']:.2f} %" for side in SIDES
    )
    fig.suptitle(
        f"{pic.task}: predicted digit, torch (t) and JAX (j); test accuracy {accuracy}", fontsize=9
    )
    _save(fig, path)


def loss_curves(pic, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = pic.loss_names or ("loss",)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for side in SIDES:
        losses = np.asarray(pic.losses[side]).reshape(len(pic.losses[side]), -1)
        # a line needs two points: a run of a step or a few (--quick with one huge batch) is
        # drawn as points, or the plot is empty
        marker = {"torch": "o", "jax": "x"}[side] if len(losses) <= FEW_STEPS else None
        for i, name in enumerate(names):
            label = f"{side} {name}" if pic.loss_names else side
            ax.plot(
                losses[:, i],
                color=colors[i if pic.loss_names else SIDES.index(side)],
                label=label,
                marker=marker,
                **STYLE[side],
            )
    finite = np.concatenate([np.ravel(pic.losses[side]) for side in SIDES]).astype(float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if finite.size and finite.max() > 3 * finite.min():  # log only where it spreads something
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{pic.task}: torch (solid) and JAX (dashed)")
    ax.legend(ncol=2 if pic.loss_names else 1, fontsize=8)
    _save(fig, path)


def fitted_curve(pic, path):
    x, y = pic.arrays["x"], pic.arrays["y"]
    order = np.argsort(x[:, 0])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(x[:, 0], y[:, 0], s=10, color="0.6", label="data")
    for side, predict in pic.predict.items():  # torch, jax, and any third implementation
        style = STYLE.get(side, {"ls": ":", "lw": 2.5})
        ax.plot(x[order, 0], predict(x)[order, 0], color=COLORS.get(side, "k"), label=side, **style)
    ax.set_title(f"{pic.task}: fitted curves")
    ax.legend()
    _save(fig, path)


def predicted_classes(pic, path):
    x = pic.arrays["x"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
    for ax, side in zip(axes, SIDES, strict=True):
        pred = np.asarray(pic.predict[side](x)).reshape(-1)
        ax.scatter(x[:, 0], x[:, 1], c=pred, s=14, cmap="RdYlGn")
        ax.set_title(f"{side}: predicted class, accuracy {_accuracy(pic, side)}")
    _save(fig, path)


def decision_boundary(pic, path):
    x, y = pic.arrays["x"], pic.arrays["y"].reshape(-1)
    (x0, x1), (y0, y1) = (
        (x[:, 0].min() - 1, x[:, 0].max() + 1),
        (x[:, 1].min() - 1, x[:, 1].max() + 1),
    )
    xx, yy = np.meshgrid(np.arange(x0, x1, 0.02), np.arange(y0, y1, 0.02))
    grid = np.c_[xx.ravel(), yy.ravel()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
    for ax, side in zip(axes, SIDES, strict=True):
        zz = np.asarray(pic.predict[side](grid)).reshape(xx.shape)
        ax.contourf(xx, yy, zz, cmap=plt.cm.Spectral, alpha=0.8)
        ax.scatter(
            x[:, 0], x[:, 1], c=y, s=12, cmap=plt.cm.Spectral, edgecolors="k", linewidths=0.3
        )
        ax.set_title(f"{side}: decision boundary, accuracy {_accuracy(pic, side)}")
        ax.set_xlabel("x1")
    axes[0].set_ylabel("x2")
    _save(fig, path)


def optimizer_curves(pic, path):
    """The lesson's figure: one loss curve per optimizer, for each side."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, side in zip(axes, SIDES, strict=True):
        losses = np.asarray(pic.losses[side])
        for i, name in enumerate(pic.loss_names):
            ax.plot(losses[:, i], lw=1, label=name)
        ax.set_title(f"{side}: one net per optimizer")
        ax.set_xlabel("step")
        ax.set_ylim(0, 0.2)
        ax.legend()
    axes[0].set_ylabel("training loss")
    _save(fig, path)


def regularization_curves(pic, path):
    """Lesson G's figure: each variant's training loss (the mean of its epoch's steps, in
    training mode: dropout on) and test loss (eval mode) per epoch, one panel per side."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, side in zip(axes, SIDES, strict=True):
        history = pic.metrics[side]["per_epoch"]
        epochs = [h["epoch"] for h in history]
        for i, name in enumerate(pic.loss_names):
            train = [h["train_loss"][name] for h in history]
            test = [h["test_loss"][name] for h in history]
            ax.plot(epochs, train, color=colors[i], ls=":", lw=1.2, label=f"{name} train")
            ax.plot(epochs, test, color=colors[i], lw=1.8, label=f"{name} test")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"{side}: training (dotted) and test (solid) loss")
        ax.legend(ncol=2, fontsize=8)
    axes[0].set_ylabel("MSE (standardised target)")
    _save(fig, path)


def optimizer_race(pic, path, window=20):
    """Lesson G's optimizers on one plot: each optimizer's loss (a running mean over
    ``window`` steps), torch solid, JAX dashed, the chapter's numpy pseudo-code dotted."""
    fig, ax = plt.subplots(figsize=(9, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    runs = {side: np.asarray(pic.losses[side]) for side in SIDES}
    if pic.by_hand is not None:
        runs["numpy"] = np.asarray(pic.by_hand["losses"])
    style = {**STYLE, "numpy": {"ls": ":", "lw": 2.0}}
    kernel = np.ones(window) / window
    for side, losses in runs.items():
        for i, name in enumerate(pic.loss_names):
            smooth = np.convolve(losses[:, i], kernel, mode="valid")
            label = name if side == "torch" else None
            ax.plot(
                np.arange(window, len(losses) + 1),
                smooth,
                color=colors[i],
                label=label,
                **style[side],
            )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (mean of {window} steps)")
    ax.set_title(f"{pic.task}: torch (solid), JAX (dashed), the chapter's numpy (dotted)")
    ax.legend(fontsize=8)
    _save(fig, path)


def activations(pic, path):
    """Lesson G's table of activation functions as a picture: each function and its
    derivative, torch solid, JAX dashed (softmax: its first output on (x, 0))."""
    curves = pic.equivalences["curves"]
    fig, axes = plt.subplots(2, len(curves), figsize=(3.2 * len(curves), 6), sharex=True)
    for column, (name, curve) in enumerate(curves.items()):
        for row, suffix in enumerate(("", "_grad")):
            ax = axes[row, column]
            for side in SIDES:
                ax.plot(
                    curve["x"], curve[side + suffix], color=COLORS[side], label=side, **STYLE[side]
                )
            ax.axhline(0, color="0.8", lw=0.5)
            ax.set_title(name if row == 0 else f"{name}'", fontsize=10)
        axes[1, column].set_xlabel("x")
    axes[0, 0].legend(fontsize=8)
    rows = pic.equivalences["rows"]
    failed = [r["name"] for r in rows if not r["passed"]]
    verdict = f"{len(rows)} rows, all equal" if not failed else f"differ: {', '.join(failed)}"
    fig.suptitle(
        f"{pic.task}: activations (top) and derivatives (bottom); the table: {verdict}, "
        f"largest difference {pic.equivalences['max_rel_diff']:.1e}",
        fontsize=9,
    )
    _save(fig, path)


def sin_to_cos(pic, path, windows=10):
    """Lesson E's regression: the cos both sides predict from sin over the last ``windows``
    training windows (the whole run read as one sequence, the hidden state carried along)."""
    x, y = pic.arrays["x"], pic.arrays["y"]
    t = np.concatenate([np.linspace(k * np.pi, (k + 1) * np.pi, x.shape[1]) for k in range(len(x))])
    shown = slice(-windows * x.shape[1], None)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t[shown], x.reshape(-1)[shown], color="0.75", lw=1, label="input sin")
    ax.plot(t[shown], y.reshape(-1)[shown], color="k", lw=1, label="target cos")
    for side in SIDES:
        prediction = pic.predict[side](x).reshape(-1)
        ax.plot(t[shown], prediction[shown], color=COLORS[side], label=side, **STYLE[side])
    ax.set_xlabel("t")
    ax.set_title(f"{pic.task}: cos predicted from sin over the last {windows} training windows")
    ax.legend(loc="upper right", ncol=4, fontsize=8)
    _save(fig, path)


def tagged_sentences(pic, path):
    """Lesson E's POS tagger: each word with the tag each side gives it; red where wrong."""
    from compare.tutorials.data import TAG_TO_IX, TEST_SENTENCES, TRAINING_SENTENCES

    names = {i: tag for tag, i in TAG_TO_IX.items()}
    rows = [
        ("train", TRAINING_SENTENCES, pic.arrays["x"]),
        ("test", TEST_SENTENCES, pic.arrays["x_test"]),
    ]
    lines = [
        (split, words, tags, x[i : i + 1])
        for split, sentences, x in rows
        for i, (words, tags) in enumerate(sentences)
    ]
    fig, ax = plt.subplots(figsize=(8, 0.9 * len(lines) + 0.8))
    ax.axis("off")
    for row, (split, words, tags, x) in enumerate(lines):
        top = 1 - (row + 0.5) / len(lines)
        ax.text(0.0, top, split, fontsize=9, color="0.4", va="center")
        predicted = {side: pic.predict[side](x)[0] for side in SIDES}
        for col, word in enumerate(words):
            left = 0.1 + col * 0.18
            ax.text(left, top + 0.12 / len(lines) * 2, word, fontsize=11, va="center")
            for k, side in enumerate(SIDES):
                tag = names[int(predicted[side][col])]
                ax.text(
                    left,
                    top - (0.1 + 0.12 * k) / len(lines) * 2,
                    f"{side[0]} {tag}",
                    fontsize=8,
                    va="center",
                    color="k" if tag == tags[col] else "red",
                )
    ax.set_title(f"{pic.task}: tags from torch (t) and JAX (j); red where wrong", fontsize=9)
    _save(fig, path)


def forecast(pic, path):
    """Lesson E's forecaster: both sides' predictions against the held-out tail."""
    y = pic.arrays["y_test"].reshape(-1)
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(y, color="k", lw=1, label="data (normalised)")
    for side in SIDES:
        loss = (pic.metrics or {}).get(side, {}).get("test_loss")
        label = side if loss is None else f"{side}, test MSE {loss:.3g}"
        ax.plot(
            np.asarray(pic.predictions[side]).reshape(-1),
            color=COLORS[side],
            label=label,
            **STYLE[side],
        )
    ax.set_xlabel("week of the held-out tail")
    ax.set_title(f"{pic.task}: each week predicted from the 30 before it")
    ax.legend(fontsize=8)
    _save(fig, path)


def _accuracy(pic, side):
    value = (pic.metrics or {}).get(side, {}).get("accuracy")
    return "?" if value is None else f"{100 * value:.1f} %"


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_speeds(results, path):
    """The ``bench`` verb's figure: steps/s of every variant that ran, per task, log scale."""
    variants = [v for v in results[0]["variants"]] if results else []
    variants = [v for v in variants if any(r["variants"][v]["status"] == "ran" for r in results)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(results) + 3), 4.8))
    width = 0.8 / max(1, len(variants))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, name in enumerate(variants):
        xs, ys = [], []
        for i, r in enumerate(results):
            row = r["variants"][name]
            if row["status"] == "ran":
                xs.append(i + (j - (len(variants) - 1) / 2) * width)
                ys.append(row["steps_per_s"])
        hatch = "//" if name.startswith("jax") else None
        ax.bar(xs, ys, width, label=name, color=colors[j % len(colors)], hatch=hatch)
    ax.set_yscale("log")
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels([r["task"] for r in results], rotation=20, ha="right")
    ax.set_ylabel("training steps per second (log)")
    if results:
        first = results[0]
        ax.set_title(
            f"bench: {first['device']['torch']} / {first['device']['jax']}, {first['dtype']}, "
            f"{first['date']}",
            fontsize=9,
        )
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    _save(fig, path)
