"""Every task: its two tutorial modules, its data and its hyperparameters, in one place.

Adding a tutorial = ``jaxnets/<stem>.py`` + ``torchref/<stem>.py`` + one entry in ``TASKS``
(docs/ADDING_A_TASK.md). Both sides receive the same frozen hyperparameter object and read it
by attribute; ``--set KEY=VALUE`` changes a copy (``with_overrides``). What a lesson adds
beyond training (a numpy version by hand, the tags it prints, a table of function twins) is a
field of its entry, which ``run`` and ``parity`` read: they never test a task's name.
"""

import dataclasses
import importlib
import math
from dataclasses import dataclass, field

from compare.errors import CompareError


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
class VaeHP:
    image_size: int = 784
    h_dim: int = 400
    z_dim: int = 20
    lr: float = 1e-3
    num_epochs: int = 30
    batch_size: int | None = 128


@dataclass(frozen=True)
class GanHP:
    image_size: int = 784
    hidden_size: int = 256
    latent_size: int = 64
    lr: float = 2e-4
    num_epochs: int = 200
    batch_size: int | None = 100


@dataclass(frozen=True)
class CganHP(GanHP):
    num_classes: int = 10  # the digits, each label embedded in num_classes numbers


@dataclass(frozen=True)
class DcganHP:
    latent_size: int = 100  # nz
    # feature maps of G and D: 64 in PyTorch's DCGAN example (64x64 images); 16 here keeps the
    # float64 lockstep and the fast tests quick on a CPU (--set ngf=64 --set ndf=64: the example's)
    ngf: int = 16
    ndf: int = 16
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    num_epochs: int = 25
    batch_size: int | None = 100


@dataclass(frozen=True)
class HousingHP:
    in_dim: int = 12  # the lesson's 13 features, B dropped (compare/tutorials/datasets/housing/)
    n_hidden_1: int = 16
    n_hidden_2: int = 32
    out_dim: int = 1
    # not in the lesson's surviving text (its code is lost): Adam, as the book's other examples
    lr: float = 0.01
    weight_decay: float = 0.01  # the L2 variant's torch weight_decay (coupled: added to grads)
    # The chapter advises 20-50 %; on these 16- and 32-unit layers 20 % already underfits
    # (test loss above the plain net's), 10 % shows the lesson's effect. --set dropout=0.2
    dropout: float = 0.1
    num_epochs: int = 200
    # 27 divides the 405 training rows: every step a full batch (and one compiled JAX step)
    batch_size: int | None = 27


@dataclass(frozen=True)
class HousingParallelHP:
    in_dim: int = 12  # the lesson's 13 features, B dropped (compare/tutorials/datasets/housing/)
    n_hidden_1: int = 16
    n_hidden_2: int = 32
    out_dim: int = 1
    # the lesson's optimizer and loss are lost with its code: Adam and MSE, as
    # housing-regularization (the same Net1 on the same data)
    lr: float = 0.01
    num_epochs: int = 100
    batch_size: int | None = 128  # the lesson's: split 64 + 64 over its two GPUs


@dataclass(frozen=True)
class OptimizersCh5HP:
    n_hidden: int = 20
    lr: float = 0.01
    momentum: float = 0.9  # the chapter's alpha, for momentum and NAG
    alpha: float = 0.99  # RMSProp's decay rate (the chapter's rho; torch's default)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's rho_1, rho_2 (torch's defaults)
    delta: float = 1e-7  # the chapter's small constant; torch: eps 1e-10 (Adagrad), 1e-8
    num_epochs: int = 12
    batch_size: int | None = 10  # the pseudo-code's batch_size = 10 over m = 1000 samples


@dataclass(frozen=True)
class InitActivationsHP:
    n_feature: int = 2
    n_hidden: int = 16
    n_output: int = 3
    negative_slope: float = 0.1  # layer3's leaky ReLU (and its kaiming gain's a)
    class_weight: tuple[float, float, float] = (1.0, 2.0, 0.5)  # CrossEntropyLoss(weight=...)
    label_smoothing: float = 0.1
    lr: float = 0.01
    num_epochs: int = 20
    batch_size: int | None = 30


@dataclass(frozen=True)
class Noise:
    """Randomness a training step consumes, per sample: drawn in numpy by ``compare`` and
    handed to both sides in lockstep (each side draws its own in normal runs).

    ``shape`` names hyperparameters (``("latent_size",)``) or gives numbers; ``kind`` is
    ``"normal"`` (N(0, 1), like ``torch.randn``), ``"labels"`` (integers below ``classes``,
    like ``torch.randint``) or ``"mask"`` (a dropout mask: each entry kept with probability
    ``1 - p`` and then worth ``1 / (1 - p)``, dropped as 0, as ``nn.Dropout(p)`` scales it;
    ``p`` a hyperparameter's name or a number). Masks exist in training only: eval mode has
    no dropout, so nothing is drawn from them for pictures."""

    name: str
    shape: tuple = ()
    kind: str = "normal"
    classes: str | int = 0
    p: str | float = 0.0

    def sample_shape(self, hp):
        return tuple(getattr(hp, d) if isinstance(d, str) else d for d in self.shape)

    def num_classes(self, hp):
        return getattr(hp, self.classes) if isinstance(self.classes, str) else self.classes

    def drop_probability(self, hp):
        return getattr(hp, self.p) if isinstance(self.p, str) else self.p


@dataclass(frozen=True)
class Task:
    name: str
    lesson: str
    module: str  # the same file stem in jaxnets/ and torchref/
    dataset: str  # a name in compare.data.DATASETS
    hp: object
    metric: str  # how runs score it: "loss" or "accuracy"
    picture: str  # a function in compare.tutorials.plots drawing the lesson's own figure
    quick_epochs: int  # the schedule of --quick
    # Lockstep tolerance on relative loss and parameter differences, per dtype. float64 is the
    # project-wide 1e-9; float32 is the drift measured over the parity schedule, about doubled
    # (docs/PARITY.md; mnist-cnn's covers its scanned loop, used off CPU: 6.8e-4 measured).
    tolerance: dict = field(default_factory=dict)
    loss_names: tuple[str, ...] = ()  # when one step reports several losses
    tiers: tuple[int, ...] = (1, 2, 3)
    parity_epochs: int | None = None  # parity's default schedule; None: the whole lesson
    shuffle: bool = True  # the lesson's DataLoader(shuffle=...); False: batches in data order
    # float32 lockstep's default length where the trajectory is chaotic (mnist-lstm): beyond
    # it float32 rounding alone parts the two sides, so a bound would measure nothing
    float32_steps: int | None = None
    # A chaotic trajectory amplifies any change in the order of floating-point operations (a
    # library version, a device) past a fixed float64 bound within its schedule. For such a
    # task the float64 bound is this many times the trajectory's own sensitivity, measured in
    # the same run (parity.self_divergence), and never below tolerance["float64"].
    sensitivity_factor: float | None = None
    noise: tuple[Noise, ...] = ()  # per-step randomness (generative models, dropout masks)
    # --data-parallel N: None when the step splits over devices (full-batch tasks are refused
    # by compare.parallel.policy.why_not), else why it cannot, one line (shown by list)
    data_parallel: str | None = None
    # how the loss reduces over the batch: "mean" (rank r's gradient weighted b_r / B before
    # the all-reduce sums them) or "sum" (weight 1)
    loss_reduction: str = "mean"
    # the torch model holds BatchNorm: under DDP on CPU its statistics are each rank's own
    # (SyncBatchNorm needs CUDA), so torch cannot equal its single-device run there
    batchnorm: bool = False
    data_parallel_default: int | None = None  # run's --data-parallel when none is given
    # What the lesson adds beyond training, read by run and parity:
    # the lesson's own numpy version, byhand/<module>.py, run beside torch in float64
    by_hand: bool = False
    # the lesson prints the tags it finds for its sentences: run does too
    tags: bool = False
    # the tutorial files hold tables of torch functions and their JAX twins (INITIALIZERS,
    # ACTIVATIONS, LOSSES): compare.tutorials.equivalences measures them
    equivalences: bool = False

    def modules(self):
        """The two tutorial modules: (jaxnets.<module>, torchref.<module>)."""
        return (
            importlib.import_module(f"jaxnets.{self.module}"),
            importlib.import_module(f"torchref.{self.module}"),
        )

    def by_hand_module(self):
        """The lesson's numpy version, ``byhand.<module>`` (``by_hand`` tasks)."""
        return importlib.import_module(f"byhand.{self.module}")


def _several_nets(what):
    return (
        f"{what}, each with its own optimizer and called directly, not through one forward "
        "pass that DistributedDataParallel could wrap"
    )


TWO_NETS = (
    "two nets (D and G), two optimizers, a step in two phases calling each net directly: "
    "no one forward pass for DistributedDataParallel"
)

TASKS = {
    "regression": Task(
        name="regression",
        lesson="A: Morvan Zhou's PyTorch tutorial 301, regression",
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
        lesson="A: Morvan Zhou's PyTorch tutorial 302, classification",
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
        lesson="A: Morvan Zhou's PyTorch tutorial 306, optimizers",
        module="optimizers",
        dataset="noisy-parabola",
        hp=OptimizersHP(),
        metric="loss",
        picture="optimizer_curves",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 3e-6},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py
        loss_names=("SGD", "Momentum", "RMSprop", "Adam"),
        data_parallel=_several_nets("four nets"),
    ),
    "flower-logistic": Task(
        name="flower-logistic",
        lesson="B: Liao Xingyu, 深度学习入门之PyTorch ch. 3, logistic regression on the flower "
        "data",
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
        lesson="B: Liao Xingyu, 深度学习入门之PyTorch ch. 3, two-layer net on the flower data",
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
        lesson="C: Wu Maogui, Python深度学习 ch. 2.6-2.7: numpy by hand, autograd, jax.grad",
        module="autograd_fit",
        dataset="quadratic",
        hp=AutogradFitHP(),
        metric="loss",
        picture="fitted_curve",
        quick_epochs=50,
        tolerance={"float64": 1e-9, "float32": 3e-6},
        by_hand=True,  # ch. 2.6's descent in numpy (byhand/autograd_fit.py)
    ),
    "mnist-mlp": Task(
        name="mnist-mlp",
        lesson="D: Liu Er's PyTorch course, lecture 9: MNIST, five-layer perceptron",
        module="mnist_mlp",
        dataset="mnist",
        hp=MnistHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1e-3},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py (slow)
        parity_epochs=1,
    ),
    "mnist-mlp-bn": Task(
        name="mnist-mlp-bn",
        lesson="D: Wu Maogui, Python深度学习 ch. 3: MNIST, batch-normalised net, stepped "
        "learning rate",
        module="mnist_mlp_bn",
        dataset="mnist-half",
        hp=MnistBnHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 3e-3},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py (slow)
        parity_epochs=1,
        batchnorm=True,
    ),
    "mnist-cnn": Task(
        name="mnist-cnn",
        lesson="D: Liu Er's PyTorch course, lecture 10: MNIST, two convolutions and max pooling",
        module="mnist_cnn",
        dataset="mnist",
        hp=MnistHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1.5e-3},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py (slow)
        parity_epochs=1,
    ),
    "mnist-resnet": Task(
        name="mnist-resnet",
        lesson="D: Liu Er's PyTorch course, lecture 11: MNIST, residual network",
        module="mnist_resnet",
        dataset="mnist",
        hp=MnistHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 3e-2},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py (slow)
        parity_epochs=1,
    ),
    "mnist-lstm": Task(
        name="mnist-lstm",
        lesson="E: Morvan Zhou's PyTorch tutorial 402, MNIST rows read by an LSTM",
        module="mnist_lstm",
        dataset="mnist-unit-2k",
        hp=MnistLstmHP(),
        metric="accuracy",
        picture="digits",
        quick_epochs=1,
        # Adam at lr 0.01 makes this LSTM's training chaotic: float32 rounding alone parts the
        # two sides completely within the epoch (loss 0.29, parameters 0.45 apart at step 79;
        # torch float32 against torch float64 likewise), float64 grows from 1e-16 to 4.5e-11.
        # So float32 is bounded over the first 30 steps (7.5e-4 measured, docs/PARITY.md).
        tolerance={"float64": 1e-9, "float32": 1.5e-3},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py (slow)
        float32_steps=30,
        # float64 over the epoch: 10x the torch side's own divergence from weights nudged by
        # one rounding step (cross-framework / self measured 0.1-2, docs/PARITY.md)
        sensitivity_factor=10.0,
    ),
    "rnn-sincos": Task(
        name="rnn-sincos",
        lesson="E: Morvan Zhou's PyTorch tutorial 403: RNN from sin to cos, hidden state carried",
        module="rnn_sincos",
        dataset="sin-to-cos",
        hp=RnnSinCosHP(),
        metric="loss",
        picture="sin_to_cos",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1.5e-3},
        shuffle=False,
        data_parallel="batch 1 and a hidden state carried from step to step: nothing to split, "
        "and each step needs the one before",
    ),
    "pos-tagger": Task(
        name="pos-tagger",
        lesson="E: Wu Maogui, Python深度学习 ch. 7.7, part-of-speech tagging with an LSTM",
        module="pos_tagger",
        dataset="tagged-sentences",
        hp=PosTaggerHP(),
        metric="accuracy",
        picture="tagged_sentences",
        quick_epochs=30,
        tolerance={"float64": 1e-9, "float32": 3e-6},
        shuffle=False,
        data_parallel="batch 1 (one sentence per step): nothing to split",
        tags=True,
    ),
    "lstm-forecast": Task(
        name="lstm-forecast",
        lesson="E: Wu Maogui, Python深度学习 ch. 7.8, LSTM forecast of a time series "
        "(CO2 for CSI 300)",
        module="lstm_forecast",
        dataset="co2-weekly",
        hp=LstmForecastHP(),
        metric="loss",
        picture="forecast",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1.5e-3},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py (slow)
        parity_epochs=1,
        shuffle=False,
    ),
    "vae": Task(
        name="vae",
        lesson="F: Wu Maogui, Python深度学习 ch. 8.1, variational autoencoder on MNIST",
        module="vae",
        dataset="mnist-pixels",
        hp=VaeHP(),
        metric="loss",
        picture="reconstructions",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 3e-1},
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py (slow)
        parity_epochs=2,  # 80 steps of 128 on the shipped 5,000 images
        noise=(Noise("eps", ("z_dim",)),),
        loss_reduction="sum",  # BCE summed over the batch (the lesson's size_average=False)
    ),
    "gan": Task(
        name="gan",
        lesson="F: Wu Maogui, Python深度学习 ch. 8.2-8.3, GAN of fully connected nets on MNIST",
        module="gan",
        dataset="mnist-half-train",
        hp=GanHP(),
        metric="loss",
        picture="samples",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1.2e-3},
        loss_names=("D", "G"),
        parity_epochs=1,  # 50 steps of 100
        noise=(Noise("z", ("latent_size",)),),
        data_parallel=TWO_NETS,
    ),
    "cgan": Task(
        name="cgan",
        lesson="F: Wu Maogui, Python深度学习 ch. 8: conditional GAN, the digit label joined to z "
        "and to the image",
        module="cgan",
        dataset="mnist-half-train",
        hp=CganHP(),
        metric="loss",
        picture="samples",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 2.5e-3},
        loss_names=("D", "G"),
        parity_epochs=1,
        noise=(Noise("z", ("latent_size",)), Noise("labels", (), "labels", "num_classes")),
        data_parallel=TWO_NETS,
    ),
    "dcgan": Task(
        name="dcgan",
        lesson="F: Wu Maogui, Python深度学习 ch. 8, deep convolutional GAN on MNIST",
        module="dcgan",
        dataset="mnist-half-train-2d",
        hp=DcganHP(),
        metric="loss",
        picture="samples",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 1.2e-1},
        loss_names=("D", "G"),
        parity_epochs=1,
        noise=(Noise("z", ("latent_size",)),),
        data_parallel=TWO_NETS,
        batchnorm=True,
    ),
    "housing-regularization": Task(
        name="housing-regularization",
        lesson="G: Wu Maogui, Python深度学习 ch. 5.3: plain, L2, dropout and batch norm on "
        "the house prices",
        module="housing_regularization",
        dataset="housing",
        hp=HousingHP(),
        metric="loss",
        picture="regularization_curves",
        quick_epochs=2,
        # float32: 2.6e-5 (loss) measured over the 60 steps: optax's float32 Adam steps part
        # from torch's by ~1e-5 at first (docs/PARITY.md). Other seeds cross a ReLU's kink at
        # different steps on the two sides and part by up to 5e-2 (--seed 2)
        tolerance={"float64": 1e-9, "float32": 5e-5},
        loss_names=("plain", "L2", "dropout", "batchnorm"),
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py
        parity_epochs=4,  # 60 steps of 27
        # the dropout variant's masks after layer1 and layer2: numpy's in lockstep
        noise=(
            Noise("layer1", ("n_hidden_1",), "mask", p="dropout"),
            Noise("layer2", ("n_hidden_2",), "mask", p="dropout"),
        ),
        data_parallel=_several_nets("four nets"),
        batchnorm=True,
    ),
    "housing-parallel": Task(
        name="housing-parallel",
        lesson="G: Wu Maogui, Python深度学习 ch. 5.7.2: the lesson's multi-GPU Net1, each batch "
        "split over devices",
        module="housing_parallel",
        dataset="housing",
        hp=HousingParallelHP(),
        metric="loss",
        picture="loss_curves",  # the lesson's figure 5-20: the training loss
        quick_epochs=2,
        # float32: 3.5e-3 measured (parameters, 52 steps; losses 1.7e-4): optax's float32
        # Adam steps part from torch's by ~1e-5 at first and Adam's small second moments
        # grow it, as housing-regularization's (docs/PARITY.md); float64 agrees to 1e-15
        tolerance={"float64": 1e-9, "float32": 7e-3},
        parity_epochs=13,  # 52 steps of 128 (the 405 training rows: 3 x 128 + 21)
        data_parallel_default=2,  # the lesson's two GPUs
    ),
    "optimizers-ch5": Task(
        name="optimizers-ch5",
        lesson="G: Wu Maogui, Python深度学习 ch. 5.6: SGD, momentum, NAG, AdaGrad, RMSProp, "
        "Adam as pseudo-code",
        module="optimizers_ch5",
        dataset="noisy-parabola",
        hp=OptimizersCh5HP(),
        metric="loss",
        picture="optimizer_race",
        quick_epochs=1,
        tolerance={"float64": 1e-9, "float32": 3e-5},  # 1.4e-5 measured (loss)
        loss_names=("SGD", "Momentum", "NAG", "AdaGrad", "RMSProp", "Adam"),
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py
        parity_epochs=1,  # 100 steps of 10
        data_parallel=_several_nets("six nets"),
        by_hand=True,  # the chapter's pseudo-code (byhand/optimizers_ch5.py)
    ),
    "init-and-activations": Task(
        name="init-and-activations",
        lesson="G: Wu Maogui, Python深度学习 ch. 5.3-5.5: initialisation, activations and losses, "
        "torch and JAX",
        module="init_and_activations",
        dataset="three-clouds",
        hp=InitActivationsHP(),
        metric="accuracy",
        picture="activations",
        quick_epochs=2,
        tolerance={"float64": 1e-9, "float32": 3.5e-5},  # 1.7e-5 measured (parameters)
        tiers=(1, 2, 3, 4),  # tier 4: tests/test_curves.py
        parity_epochs=5,  # 50 steps of 30
        # the loss is cross-entropy with class weights: its mean divides by the batch's sum
        # of weights, so a rank's share is not b_r / B (DDP would need the weights' sums)
        data_parallel="class-weighted cross-entropy: the mean divides by the batch's summed "
        "class weights, so a rank's share of the gradient is not its share of the samples",
        equivalences=True,
    ),
}


def get(name):
    """The task called ``name``, or a CompareError listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise CompareError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


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
        if isinstance(value, float) and not math.isfinite(value):
            raise CompareError(f"--set {key}={text}: must be a finite number")
    return dataclasses.replace(hp, **changes)
