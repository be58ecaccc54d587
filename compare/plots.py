"""The pictures a run writes: both loss curves on one plot, and each lesson's own figure.

Every picture function takes the run's ``Picture`` (data, both sides' predictions, losses) and
a path. torch is drawn solid, JAX dashed, so that agreeing curves lie on top of each other.
"""

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SIDES = ("torch", "jax")
STYLE = {"torch": {"ls": "-", "lw": 2.0, "alpha": 0.8}, "jax": {"ls": "--", "lw": 1.5}}


@dataclass
class Picture:
    task: str
    arrays: dict  # numpy data
    predict: dict  # side -> function(numpy x) -> numpy prediction
    losses: dict  # side -> (steps,) or (steps, k) losses
    loss_names: tuple = ()
    metrics: dict | None = None
    predictions: dict | None = None  # side -> predicted labels of the whole test set


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
        for i, name in enumerate(names):
            label = f"{side} {name}" if pic.loss_names else side
            ax.plot(
                losses[:, i],
                color=colors[i if pic.loss_names else SIDES.index(side)],
                label=label,
                **STYLE[side],
            )
    ax.set_yscale("log")
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
    colors = {"torch": "tab:red", "jax": "tab:blue"}
    for side, predict in pic.predict.items():  # torch, jax, and any third implementation
        style = STYLE.get(side, {"ls": ":", "lw": 2.5})
        ax.plot(x[order, 0], predict(x)[order, 0], color=colors.get(side, "k"), label=side, **style)
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
