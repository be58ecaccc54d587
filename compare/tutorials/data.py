"""Every dataset and every batch order, in numpy, seeded: both frameworks see the same arrays.

``load(task)`` gives a task's data as a dict of numpy arrays (``x``, ``y``; ``x_test``,
``y_test`` where there is a test split). Features are float64 here; each side casts them once
to the dtype it trains in. Class labels and word indices are int64.
"""

import functools
import gzip
import zlib
from pathlib import Path

import numpy as np

from compare.errors import CompareError
from compare.tutorials import registry

SHIPPED_MNIST = Path(__file__).parent / "datasets" / "mnist"
SHIPPED_CO2 = Path(__file__).parent / "datasets" / "co2" / "co2_weekly.csv"
SHIPPED_HOUSING = Path(__file__).parent / "datasets" / "housing" / "boston_housing.csv"
HOUSING_COLUMNS = (
    "CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B",
    "LSTAT", "MEDV",
)  # fmt: skip
MNIST_FILES = {  # the four standard IDX files of the full set, each also read gzip-compressed
    "x": "train-images-idx3-ubyte",
    "y": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
SHIPPED_FILES = {
    "x": "train5k-images-idx3-ubyte.gz",
    "y": "train5k-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def parabola(seed=0):
    """Lesson A regression: x = linspace(-1, 1, 100), y = x^2 + 0.2 * U[0, 1)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, 100)[:, None]  # (100, 1)
    return {"x": x, "y": x**2 + 0.2 * rng.random(x.shape)}


def two_clouds(seed=0):
    """Lesson A classification: N((2, 2), 1) labelled 0 and N((-2, -2), 1) labelled 1."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(2.0, 1.0, size=(100, 2))
    x1 = rng.normal(-2.0, 1.0, size=(100, 2))
    y = np.concatenate([np.zeros(100), np.ones(100)]).astype(np.int64)
    return {"x": np.concatenate([x0, x1]), "y": y}  # (200, 2), (200,)


def noisy_parabola(seed=0):
    """Lesson A optimizers: x = linspace(-1, 1, 1000), y = x^2 + 0.1 * N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, 1000)[:, None]  # (1000, 1)
    return {"x": x, "y": x**2 + 0.1 * rng.standard_normal(x.shape)}


def flower(seed=1):
    """Lesson B's two petals, drawn exactly as the lesson does (legacy ``np.random.seed(1)``)."""
    rng = np.random.RandomState(seed)
    m, n_per_class, a = 400, 200, 4
    x = np.zeros((m, 2))
    y = np.zeros((m, 1))
    for j in range(2):
        ix = range(n_per_class * j, n_per_class * (j + 1))
        t = np.linspace(j * 3.12, (j + 1) * 3.12, n_per_class) + rng.rand(n_per_class) * 0.2
        r = a * np.sin(4 * t) + rng.rand(n_per_class) * 0.2
        x[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return {"x": x, "y": y}  # (400, 2), (400, 1) float labels for BCEWithLogits


def quadratic(seed=100):
    """Lesson C: x = linspace(-1, 1, 100), y = 3 x^2 + 2 + 0.2 * U[0, 1) (seed 100, as there)."""
    rng = np.random.RandomState(seed)
    x = np.linspace(-1, 1, 100).reshape(100, 1)
    return {"x": x, "y": 3 * x**2 + 2 + 0.2 * rng.rand(100, 1)}


def ten_points(seed=0):
    """Lesson A's DataLoader demo: x = linspace(1, 10, 10), y = linspace(10, 1, 10)."""
    return {"x": np.linspace(1, 10, 10), "y": np.linspace(10, 1, 10)}


def read_idx(path):
    """An IDX file (MNIST's format; plain or ``.gz``) as a numpy array of its stored shape.

    torchvision's reader (``read_sn3_pascalvincent_tensor``) takes uncompressed files only and
    returns torch tensors; this one reads both forms into numpy for both frameworks.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # unreadable, truncated, or not gzip at all
        raise CompareError(f"{path}: cannot be read ({err})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise CompareError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise CompareError(f"{path}: its IDX header is cut short")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise CompareError(f"{path}: holds {body.size} bytes of data, its header says {shape}")
    return body.reshape(shape)


def find_mnist(data_dir):
    """The four full-MNIST IDX files in ``data_dir`` (plain or .gz; also under MNIST/raw/, where
    torchvision downloads them); one error naming every missing file."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CompareError(f"--data-dir {data_dir}: not a directory")
    found, missing = {}, []
    for key, name in MNIST_FILES.items():
        candidates = [
            data_dir / name,
            data_dir / f"{name}.gz",
            data_dir / "MNIST" / "raw" / name,
            data_dir / "MNIST" / "raw" / f"{name}.gz",
        ]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            missing.append(f"{name}[.gz]")
        found[key] = path
    if missing:
        raise CompareError(
            f"{data_dir}: missing {', '.join(missing)}; put the four MNIST IDX files there, or "
            "add --download to fetch them with torchvision (needs internet)"
        )
    return found


def download_mnist(data_dir):
    """Fetch the full MNIST into ``data_dir``/MNIST/raw with torchvision's downloader."""
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(str(data_dir), train=train, download=True)
    except Exception as err:  # URLError, HTTPError, a failed checksum... over several lines
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CompareError(f"could not download MNIST into {data_dir}: {first}") from None


def mnist(seed=0, normalize=(0.1307, 0.3081), flatten=False, test_count=None, data_dir=None):
    """MNIST as the lessons feed it: ``ToTensor()`` (pixels / 255) then ``Normalize(mean,
    std)``, images NCHW ``(n, 1, 28, 28)`` float64, labels int64.

    Without ``data_dir``: the shipped 5,000 training and 10,000 test images (``mnist-5k``).
    ``normalize=None`` keeps pixels in [0, 1]; ``flatten`` gives ``(n, 784)`` rows, for the
    lessons whose loop flattens before the model; ``test_count`` keeps only the first test
    images. ``seed`` is unused: the images are fixed.
    """
    paths = (
        {k: SHIPPED_MNIST / name for k, name in SHIPPED_FILES.items()}
        if data_dir is None
        else find_mnist(data_dir)
    )
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for key in ("x", "x_test"):
        if arrays[key].ndim != 3 or arrays[key].shape[1:] != (28, 28):
            raise CompareError(f"{paths[key]}: holds {arrays[key].shape}, not 28x28 images")
    for key in ("y", "y_test"):
        if arrays[key].ndim != 1 or arrays[key].size == 0 or arrays[key].max() > 9:
            raise CompareError(f"{paths[key]}: holds {arrays[key].shape}, not labels 0-9")
    for key in ("x", "x_test"):
        images = arrays[key].astype(np.float64)[:, None, :, :] / 255.0  # (n, 1, 28, 28)
        if normalize is not None:
            mean, std = normalize
            images = (images - mean) / std
        arrays[key] = images.reshape(len(images), -1) if flatten else images
    for key in ("y", "y_test"):
        arrays[key] = arrays[key].astype(np.int64)
    if len(arrays["x"]) != len(arrays["y"]) or len(arrays["x_test"]) != len(arrays["y_test"]):
        raise CompareError("MNIST images and labels differ in number")
    if test_count is not None:
        arrays["x_test"], arrays["y_test"] = (
            arrays["x_test"][:test_count],
            arrays["y_test"][:test_count],
        )
    return arrays


def sin_to_cos(seed=0, num_steps=100, time_step=10):
    """Lesson E's RNN regression: step k reads sin at ``time_step`` points of
    linspace(k pi, (k + 1) pi) and predicts cos there. ``x``, ``y``: ``(num_steps, 10, 1)``, one
    row per training step, taken in order (the hidden state runs on from row to row)."""
    steps = np.stack(
        [np.linspace(k * np.pi, (k + 1) * np.pi, time_step) for k in range(num_steps)]
    )  # (num_steps, time_step)
    return {"x": np.sin(steps)[:, :, None], "y": np.cos(steps)[:, :, None]}


# Lesson E's POS tagger (Wu Maogui, Python深度学习, ch. 7.7): two tagged sentences and one to tag.
TRAINING_SENTENCES = (
    ("The cat ate the fish".split(), ("DET", "NN", "V", "DET", "NN")),
    ("They read that book".split(), ("NN", "V", "DET", "NN")),
)
TEST_SENTENCES = (("They ate the fish".split(), ("NN", "V", "DET", "NN")),)
TAG_TO_IX = {"DET": 0, "NN": 1, "V": 2}
IGNORE_INDEX = -100  # torch's NLLLoss/CrossEntropyLoss default ignore_index


def word_to_ix():
    """Each word's index, in order of first appearance in the training sentences."""
    index = {}
    for words, _ in TRAINING_SENTENCES:
        for word in words:
            index.setdefault(word, len(index))
    return index


def tagged_sentences(seed=0):
    """The sentences as padded index arrays: ``x`` ``(2, 5)`` word indices, ``y`` ``(2, 5)`` tag
    indices, ``IGNORE_INDEX`` after a sentence's end. The lesson feeds one unpadded sentence at
    a time; an LSTM reads left to right and the loss skips ``IGNORE_INDEX``, so the padded
    sentence has the same loss and gradients (the padding word, index 0, is never scored)."""
    words = word_to_ix()

    def encode(sentences):
        length = max(len(s) for s, _ in sentences)
        x = np.zeros((len(sentences), length), np.int64)
        y = np.full((len(sentences), length), IGNORE_INDEX, np.int64)
        for i, (sentence, tags) in enumerate(sentences):
            x[i, : len(sentence)] = [words[w] for w in sentence]
            y[i, : len(tags)] = [TAG_TO_IX[t] for t in tags]
        return x, y

    x, y = encode(TRAINING_SENTENCES)
    x_test, y_test = encode(TEST_SENTENCES)
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}


def co2_series():
    """The shipped weekly Mauna Loa CO2 series (ppmv), empty weeks linearly interpolated."""
    try:
        table = np.genfromtxt(SHIPPED_CO2, delimiter=",", skip_header=1)
    except OSError as err:
        raise CompareError(f"{SHIPPED_CO2}: cannot be read ({err})") from None
    if table.ndim != 2 or table.shape[1] != 2:
        raise CompareError(f"{SHIPPED_CO2}: expected two columns, date and co2")
    values = table[:, 1]
    known = np.isfinite(values)
    weeks = np.arange(len(values))
    return np.interp(weeks, weeks[known], values[known])


def co2_windows(seed=0, window=30, test_fraction=0.2):
    """Lesson E's forecaster on the shipped CO2 series: normalised by the whole series' mean and
    std (as the lesson does), ``x`` ``(n, window, 1)`` the previous ``window`` values and ``y``
    ``(n, 1)`` the next; the last ``test_fraction`` of the windows are the held-out tail."""
    series = co2_series()
    series = (series - series.mean()) / series.std()
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], window)[:, :, None]  # (n, 30, 1)
    y = series[window:, None]  # (n, 1): the value after each window
    split = int(round(len(x) * (1 - test_fraction)))
    return {
        "x": x[:split].copy(),
        "y": y[:split].copy(),
        "x_test": x[split:].copy(),
        "y_test": y[split:].copy(),
    }


def housing(seed=0, test_fraction=0.2, standardize_target=True):
    """Lesson G's house prices (the shipped Boston data, ``compare/tutorials/datasets/housing/``).

    The B column is dropped: it encodes the proportion of Black residents of a town, a racial
    variable widely considered unfit for use, and nothing in the lesson needs it; 12 features
    remain (the lesson's ``Net1`` reads 13). A seeded split (``test_fraction`` of the rows for
    testing); every feature standardised with the training split's mean and standard
    deviation, and the target too unless ``standardize_target=False`` (then it stays in k$).
    ``x`` ``(405, 12)``, ``y`` ``(405, 1)``, ``x_test`` ``(101, 12)``, ``y_test`` ``(101, 1)``.
    """
    try:
        table = np.loadtxt(SHIPPED_HOUSING, delimiter=",", ndmin=2)
    except (OSError, ValueError) as err:
        raise CompareError(f"{SHIPPED_HOUSING}: cannot be read ({err})") from None
    if table.shape != (506, len(HOUSING_COLUMNS)) or not np.all(np.isfinite(table)):
        raise CompareError(f"{SHIPPED_HOUSING}: expected 506 rows of 14 finite numbers")
    x = np.delete(table[:, :-1], HOUSING_COLUMNS.index("B"), axis=1)  # (506, 12)
    y = table[:, -1:]  # (506, 1) MEDV, k$
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    # the training split's statistics only: the test rows must not leak into them
    x = (x - x[train].mean(axis=0)) / x[train].std(axis=0)
    if standardize_target:
        y = (y - y[train].mean()) / y[train].std()
    return {"x": x[train], "y": y[train], "x_test": x[test], "y_test": y[test]}


def three_clouds(seed=0, per_class=100, unlabelled=0.1):
    """Three normal clouds in the plane (unit variance, centres 2.5 apart from the origin at
    0, 120 and 240 degrees), labelled 0, 1, 2; a seeded ``unlabelled`` fraction of the labels
    is ``IGNORE_INDEX`` (points without a label: cross-entropy's default ``ignore_index``
    skips them). ``x`` ``(300, 2)``, ``y`` ``(300,)`` int64."""
    rng = np.random.default_rng(seed)
    angles = np.deg2rad([0.0, 120.0, 240.0])
    centres = 2.5 * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (3, 2)
    y = np.repeat(np.arange(3), per_class)
    x = centres[y] + rng.standard_normal((len(y), 2))
    y[rng.random(len(y)) < unlabelled] = IGNORE_INDEX
    return {"x": x, "y": y.astype(np.int64)}


def mnist_train(**kwargs):
    """``mnist(**kwargs)`` without its test split: the generative lessons train on the training
    images alone (and CGAN on their labels), and have nothing to score on a test set."""
    arrays = mnist(**kwargs)
    return {"x": arrays["x"], "y": arrays["y"]}


DATASETS = {
    "parabola": parabola,
    "two-clouds": two_clouds,
    "noisy-parabola": noisy_parabola,
    "flower": flower,
    "quadratic": quadratic,
    "ten-points": ten_points,
    "mnist": mnist,  # Normalize(0.1307, 0.3081), lesson D (Liu Er, PyTorch深度学习实践)
    # Normalize([0.5], [0.5]) and flattened to 784, as ch. 3's loop does before the model
    "mnist-half": functools.partial(mnist, normalize=(0.5, 0.5), flatten=True),
    # ToTensor() only, and lesson E's test on the first 2000 test images
    "mnist-unit-2k": functools.partial(mnist, normalize=None, test_count=2000),
    "sin-to-cos": sin_to_cos,
    "tagged-sentences": tagged_sentences,
    "co2-weekly": co2_windows,
    # Lesson G: B dropped, features and target standardised with the training split's statistics
    "housing": housing,
    "three-clouds": three_clouds,
    # Lesson F, training images only: the VAE's ToTensor() pixels in [0, 1] (its BCE targets),
    # the GANs' Normalize([0.5], [0.5]) in [-1, 1] (tanh's range), flat or NCHW for DCGAN
    "mnist-pixels": functools.partial(mnist_train, normalize=None, flatten=True),
    "mnist-half-train": functools.partial(mnist_train, normalize=(0.5, 0.5), flatten=True),
    "mnist-half-train-2d": functools.partial(mnist_train, normalize=(0.5, 0.5)),
}
FILE_DATASETS = {  # read from files: --data-dir applies
    "mnist",
    "mnist-half",
    "mnist-unit-2k",
    "mnist-pixels",
    "mnist-half-train",
    "mnist-half-train-2d",
}


def load(task, seed=None, data_dir=None):
    """The data ``task`` trains on; ``seed=None`` takes the dataset's default (the lesson's).

    ``data_dir`` applies to datasets read from files (MNIST): without it the shipped files.
    """
    name = registry.get(task).dataset
    kwargs = {} if seed is None else {"seed": seed}
    if data_dir is not None:
        if name not in FILE_DATASETS:
            raise CompareError(
                f"{task} generates its data in compare/tutorials/data.py; --data-dir does not apply"
            )
        kwargs["data_dir"] = data_dir
    return DATASETS[name](**kwargs)


def dataset_label(task, data_dir=None):
    """What results call the data: the loader's name, or for MNIST which set it was."""
    name = registry.get(task).dataset
    if name in FILE_DATASETS:
        return "mnist" if data_dir is not None else "mnist-5k"
    return name


def batch_order(n, batch_size, num_epochs, seed=0, shuffle=True):
    """Index arrays for every batch: ``order[epoch][step]``.

    What ``DataLoader(dataset, batch_size, shuffle)`` yields, reshuffled every epoch, the last
    batch shorter when ``batch_size`` does not divide ``n``. ``batch_size=None`` is full batch
    (one batch of every sample, in order). One seeded generator for the whole run, so the
    order depends on nothing but ``seed``.
    """
    if batch_size is None:
        return [[np.arange(n)] for _ in range(num_epochs)]
    rng = np.random.default_rng(seed)
    order = []
    for _ in range(num_epochs):
        perm = rng.permutation(n) if shuffle else np.arange(n)
        order.append([perm[i : i + batch_size] for i in range(0, n, batch_size)])
    return order


def first_steps(order, steps):
    """The schedule ``order`` cut after ``steps`` steps (the last epoch may be partial)."""
    cut, left = [], steps
    for epoch in order:
        if left <= 0:
            break
        cut.append(epoch[:left])
        left -= len(cut[-1])
    return cut
