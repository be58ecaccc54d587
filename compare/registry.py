"""Every task: its two tutorial modules, its data and its hyperparameters, in one place.

Adding a tutorial = ``jaxnets/<stem>.py`` + ``torchref/<stem>.py`` + one entry in ``TASKS``.
Both sides receive the same frozen hyperparameter object and read it by attribute.
"""

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RegressionHP:
    n_feature: int = 1
    n_hidden: int = 10
    n_output: int = 1
    lr: float = 0.2
    num_epochs: int = 100
    batch_size: int | None = None  # None: full batch


@dataclass(frozen=True)
class ClassificationHP:
    n_feature: int = 2
    n_hidden: int = 10
    n_output: int = 2
    lr: float = 0.02
    num_epochs: int = 100
    batch_size: int | None = None


@dataclass(frozen=True)
class OptimizersHP:
    n_hidden: int = 20
    lr: float = 0.01
    momentum: float = 0.8
    alpha: float = 0.9  # RMSprop's smoothing constant (optax calls it decay)
    betas: tuple[float, float] = (0.9, 0.99)
    num_epochs: int = 12
    batch_size: int | None = 32


@dataclass(frozen=True)
class FlowerLogisticHP:
    n_feature: int = 2
    lr: float = 0.1
    num_epochs: int = 100
    batch_size: int | None = None


@dataclass(frozen=True)
class FlowerNetHP:
    n_input: int = 2
    n_hidden: int = 4
    n_output: int = 1
    lr: float = 1.0
    num_epochs: int = 10_000
    batch_size: int | None = None


@dataclass(frozen=True)
class AutogradFitHP:
    lr: float = 0.001
    num_epochs: int = 800
    batch_size: int | None = None


@dataclass(frozen=True)
class MnistHP:
    lr: float = 0.01
    momentum: float = 0.5
    num_epochs: int = 10
    batch_size: int | None = 64


@dataclass(frozen=True)
class MnistBnHP:
    in_dim: int = 784
    n_hidden_1: int = 300
    n_hidden_2: int = 100
    out_dim: int = 10
    lr: float = 0.01
    momentum: float = 0.5
    lr_every: int = 5  # the lesson multiplies lr by lr_gamma when epoch % lr_every == 0
    lr_gamma: float = 0.1
    num_epochs: int = 20
    batch_size: int | None = 64
    steps_per_epoch: int | None = None  # filled in from the data (the schedule counts steps)


@dataclass(frozen=True)
class MnistLstmHP:
    input_size: int = 28  # pixels per image row: one row per time step
    hidden_size: int = 64
    lr: float = 0.01
    num_epochs: int = 1
    batch_size: int | None = 64
    unroll: int = 1  # JAX only: time steps per iteration of the scan over time; same result


@dataclass(frozen=True)
class RnnSinCosHP:
    hidden_size: int = 32
    lr: float = 0.02
    num_epochs: int = 1  # one pass over the 100 windows: the lesson's 100 steps
    batch_size: int | None = 1  # one 10-point window per step, in order


@dataclass(frozen=True)
class PosTaggerHP:
    embedding_dim: int = 10
    hidden_dim: int = 3
    vocab_size: int = 9  # the words of the two training sentences
    tagset_size: int = 3  # DET, NN, V
    lr: float = 0.1
    num_epochs: int = 300
    batch_size: int | None = 1  # one sentence per step, as the lesson


@dataclass(frozen=True)
class LstmForecastHP:
    hidden_size: int = 64
    lr: float = 0.001
    num_epochs: int = 30
    batch_size: int | None = 20
    unroll: int = 1  # JAX only: time steps per iteration of the scan over time; same result


@dataclass(frozen=True)
class Task:
    name: str
    lesson: str
    module: str  # the same file stem in jaxnets/ and torchref/
    dataset: str  # a name in compare.data.DATASETS
    hp: object
    metric: str  # how runs score it: "loss" or "accuracy"
    picture: str  # a function in compare.plots drawing the lesson's own figure
    quick_epochs: int  # the schedule of --quick
    # Lockstep tolerance on relative loss and parameter differences, per dtype. float64 is the
    # project-wide 1e-9; float32 is the drift measured over the parity schedule, about doubled
    # (docs/PARITY.md; mnist-cnn's covers its scanned loop, used off CPU: 6.8e-4 measured).
    tolerance: dict = field(default_factory=dict)
    loss_names: tuple[str, ...] = ()  # when one step reports several losses
    tiers: tuple[int, ...] = (1, 2, 3)
    parity_epochs: int | None = None  # parity's default schedule; None: the whole lesson
    shuffle: bool = True  # the lesson's DataLoader(shuffle=...); False: batches in data order

    def modules(self):
        """The two tutorial modules: (jaxnets.<module>, torchref.<module>)."""
        return (
            importlib.import_module(f"jaxnets.{self.module}"),
            importlib.import_module(f"torchref.{self.module}"),
        )


TASKS = {
    "regression": Task(
        name="regression",
        lesson="A: Morvan's PyTorch basics, regression (seeds/000)",
        module="regression",
        dataset="parabola",
        hp=RegressionHP(),
        metric="loss",
        picture="fitted_curve",
        quick_epochs=10,
        tolerance={"float64": 1e-9, "float32": 1e-6},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py
    ),
    "classification": Task(
        name="classification",
        lesson="A: Morvan's PyTorch basics, classification (seeds/000)",
        module="classification",
        dataset="two-clouds",
        hp=ClassificationHP(),
        metric="accuracy",
        picture="predicted_classes",
        quick_epochs=10,
        tolerance={"float64": 1e-9, "float32": 2e-6},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py
    ),
    "optimizers": Task(
        name="optimizers",
        lesson="A: Morvan's PyTorch basics, optimizers (seeds/000)",
        module="optimizers",
        dataset="noisy-parabola",
        hp=OptimizersHP(),
        metric="loss",
        picture="optimizer_curves",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 3e-6},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py
        loss_names=("SGD", "Momentum", "RMSprop", "Adam"),
    ),
    "flower-logistic": Task(
        name="flower-logistic",
        lesson="B: logistic regression on the flower data (seeds/001)",
        module="flower_logistic",
        dataset="flower",
        hp=FlowerLogisticHP(),
        metric="accuracy",
        picture="decision_boundary",
        quick_epochs=10,
        tolerance={"float64": 1e-9, "float32": 2e-6},
    ),
    "flower-net": Task(
        name="flower-net",
        lesson="B: two-layer net on the flower data (seeds/001)",
        module="flower_net",
        dataset="flower",
        hp=FlowerNetHP(),
        metric="accuracy",
        picture="decision_boundary",
        quick_epochs=200,
        tolerance={"float64": 1e-9, "float32": 2e-5},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py
    ),
    "autograd-fit": Task(
        name="autograd-fit",
        lesson="C: numpy by hand, autograd, jax.grad (seeds/002 ch. 2.6-2.7)",
        module="autograd_fit",
        dataset="quadratic",
        hp=AutogradFitHP(),
        metric="loss",
        picture="fitted_curve",
        quick_epochs=50,
        tolerance={"float64": 1e-9, "float32": 3e-6},
    ),
    "mnist-mlp": Task(
        name="mnist-mlp",
        lesson="D: MNIST, five-layer perceptron (seeds/004)",
        module="mnist_mlp",
        dataset="mnist",
        hp=MnistHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1e-3},
        parity_epochs=1,
    ),
    "mnist-mlp-bn": Task(
        name="mnist-mlp-bn",
        lesson="D: MNIST, batch-normalised net, stepped learning rate (seeds/002 ch. 3)",
        module="mnist_mlp_bn",
        dataset="mnist-half",
        hp=MnistBnHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 3e-3},
        parity_epochs=1,
    ),
    "mnist-cnn": Task(
        name="mnist-cnn",
        lesson="D: MNIST, two convolutions and max pooling (seeds/004)",
        module="mnist_cnn",
        dataset="mnist",
        hp=MnistHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1.5e-3},
        parity_epochs=1,
    ),
    "mnist-resnet": Task(
        name="mnist-resnet",
        lesson="D: MNIST, residual network (seeds/004)",
        module="mnist_resnet",
        dataset="mnist",
        hp=MnistHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 3e-2},
        parity_epochs=1,
    ),
    "mnist-lstm": Task(
        name="mnist-lstm",
        lesson="E: MNIST rows read by an LSTM (seeds/003)",
        module="mnist_lstm",
        dataset="mnist-unit-2k",
        hp=MnistLstmHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        # float32: the two trajectories part completely within the epoch (loss 0.29, parameters
        # 0.45 apart after 79 steps): Adam at lr 0.01 makes this LSTM's training chaotic, and
        # float64 shows the same growth from 1e-16 (4.5e-11 at step 79). float64 is the check.
        tolerance={"float64": 1e-9, "float32": 1.0},
    ),
    "rnn-sincos": Task(
        name="rnn-sincos",
        lesson="E: RNN from sin to cos, hidden state carried (seeds/003)",
        module="rnn_sincos",
        dataset="sin-to-cos",
        hp=RnnSinCosHP(),
        metric="loss",
        picture="sin_to_cos",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1.5e-3},
        shuffle=False,
    ),
    "pos-tagger": Task(
        name="pos-tagger",
        lesson="E: part-of-speech tagging with an LSTM (seeds/002 ch. 7.7)",
        module="pos_tagger",
        dataset="tagged-sentences",
        hp=PosTaggerHP(),
        metric="accuracy",
        picture="tagged_sentences",
        quick_epochs=30,
        tolerance={"float64": 1e-9, "float32": 3e-6},
        shuffle=False,
    ),
    "lstm-forecast": Task(
        name="lstm-forecast",
        lesson="E: LSTM forecast of a time series (seeds/002 ch. 7.8; CO2 for CSI 300)",
        module="lstm_forecast",
        dataset="co2-weekly",
        hp=LstmForecastHP(),
        metric="loss",
        picture="forecast",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1.5e-3},
        parity_epochs=1,
        shuffle=False,
    ),
}


def get(name):
    """The task called ``name``, or a CompareError listing the known ones."""
    from compare import CompareError

    try:
        return TASKS[name]
    except KeyError:
        raise CompareError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
