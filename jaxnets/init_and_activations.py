"""Initialisation, activation functions and losses: torch's, written in JAX, and a net using them.

Lesson G (Wu Maogui, Python深度学习, ch. 5.3.4 weight initialisation, 5.4 activation functions, 5.5
loss functions; the chapter's code listings are lost, its prose names the schemes and functions;
docs/LESSONS.md).

- ``INITIALIZERS``, ``ACTIVATIONS``, ``LOSSES``, ``default_linear``, ``default_conv``: the
  JAX twin of each of torch's schemes and functions, under torch's keys
  (``torchref.init_and_activations``); ``compare/tutorials/equivalences.py`` proves each pair equal
  (values and derivatives) or drawing from one distribution. Three of them are not the
  obvious JAX function: ``jax.nn.initializers.he_normal``, ``glorot_normal`` and
  ``lecun_normal`` draw *truncated* normals (torch's kaiming and xavier normals are not);
  ``jax.nn.leaky_relu``'s derivative at 0 is 1 (torch's: the slope); and torch's
  cross-entropy skips label -100, weighs label smoothing per class and divides its weighted
  mean by the summed weights.
- ``Net``: a small classifier built from them: each hidden layer initialised by the scheme the
  chapter recommends for the activation after it, torch's default init for ``out``, and
  torch's ``CrossEntropyLoss(weight=..., label_smoothing=...)``, which skips the unlabelled
  points (label -100) of the three clouds. Adam lr 0.01, batch 30, 20 epochs.
"""

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx import initializers

IGNORE_INDEX = -100  # torch's CrossEntropyLoss default


def gain(nonlinearity, a=0.0):
    """``torch.nn.init.calculate_gain(nonlinearity, a)`` for the chapter's activations."""
    gains = {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3, "relu": math.sqrt(2.0)}
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + a**2))
    return gains[nonlinearity]


# torch's schemes are variance_scaling(gain ** 2, mode, distribution); its normals are
# untruncated ("normal"), where Flax's named he/glorot/lecun normals are "truncated_normal"
def xavier_uniform(gain=1.0):
    """``xavier_uniform_``: U(+-gain sqrt(6 / (fan_in + fan_out))); ``glorot_uniform`` at 1."""
    return initializers.variance_scaling(gain**2, "fan_avg", "uniform")


def xavier_normal(gain=1.0):
    """``xavier_normal_``: N(0, gain^2 2 / (fan_in + fan_out)), not ``glorot_normal``."""
    return initializers.variance_scaling(gain**2, "fan_avg", "normal")


def kaiming_uniform(a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """``kaiming_uniform_``: U(+-gain sqrt(3 / fan)); ``he_uniform`` for relu and fan_in."""
    return initializers.variance_scaling(gain(nonlinearity, a) ** 2, mode, "uniform")


def kaiming_normal(a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """``kaiming_normal_``: N(0, gain^2 / fan), not ``he_normal`` (truncated)."""
    return initializers.variance_scaling(gain(nonlinearity, a) ** 2, mode, "normal")


def fan_in_uniform(fan_in):
    """U(+-1/sqrt(fan_in)): torch's default bias. Flax hands a bias initialiser only the bias
    shape, so the weight's fan_in is closed over; ``initializers.uniform`` draws U[0, scale)."""
    bound = 1 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# ch. 5.3.4: an initialiser of a kernel in Flax's layout ((in, out), or HWIO), torch's keys
INITIALIZERS = {
    "xavier_uniform_(w)": xavier_uniform(),
    "xavier_uniform_(w, gain=calculate_gain('tanh'))": xavier_uniform(gain("tanh")),
    "xavier_normal_(w)": xavier_normal(),
    "kaiming_uniform_(w, nonlinearity='relu')": kaiming_uniform(nonlinearity="relu"),
    "kaiming_normal_(w)": kaiming_normal(),
    "kaiming_uniform_(w, a=0.1, mode='fan_out')": kaiming_uniform(a=0.1, mode="fan_out"),
    "kaiming_normal_(w, a=0.1, mode='fan_out')": kaiming_normal(a=0.1, mode="fan_out"),
}

# torch's default weight init, kaiming_uniform_(a=sqrt(5)): gain^2 = 2 / 6, U(+-1/sqrt(fan_in))
TORCH_DEFAULT_KERNEL = kaiming_uniform(a=math.sqrt(5))


def default_linear(in_features, out_features, *, rngs):
    """torch's ``nn.Linear`` as built: weight and bias U(+-1/sqrt(in_features))."""
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=TORCH_DEFAULT_KERNEL,
        bias_init=fan_in_uniform(in_features),
        rngs=rngs,
    )


def default_conv(in_channels, out_channels, kernel_size, *, rngs):
    """torch's ``nn.Conv2d`` as built: weight and bias U(+-1/sqrt(in_channels * kH * kW))."""
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel_size, kernel_size),
        padding="VALID",
        kernel_init=TORCH_DEFAULT_KERNEL,  # HWIO: the fan_in is I * H * W, as torch's
        bias_init=fan_in_uniform(in_channels * kernel_size**2),
        rngs=rngs,
    )


def leaky_relu(x, negative_slope=0.01):
    """torch's ``F.leaky_relu``: ``jax.nn.leaky_relu`` tests ``x >= 0``, so its derivative at
    0 is 1 where torch's is ``negative_slope``."""
    return jnp.where(x > 0, x, negative_slope * x)


# ch. 5.4
ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,  # derivative 0 at 0, as torch's
    "leaky_relu": leaky_relu,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
}


def _reduce(losses, reduction):
    return {"none": losses, "sum": losses.sum(), "mean": losses.mean()}[reduction]


def mse_loss(out, targets, reduction="mean"):
    """``F.mse_loss``."""
    return _reduce(optax.squared_error(out, targets), reduction)


def cross_entropy(logits, labels, weight=None, label_smoothing=0.0, reduction="mean"):
    """``F.cross_entropy(logits, labels, weight, ignore_index=-100, label_smoothing)``.

    torch skips labels equal to ``ignore_index`` (-100 by default: always on); with
    ``weight`` its mean divides by the summed weights of the counted labels, not by their
    number; with label smoothing eps each class's share eps / C of the target is weighted by
    that class's own weight, the label's share 1 - eps by the label's. As a target
    distribution for optax: (1 - eps) w[y] onehot(y) + eps / C * w.
    """
    num_classes = logits.shape[-1]
    counted = labels != IGNORE_INDEX  # (batch,)
    safe = jnp.where(counted, labels, 0)
    weight = jnp.ones(num_classes, logits.dtype) if weight is None else weight
    label_weight = weight[safe] * counted  # (batch,), 0 where skipped
    onehot = jax.nn.one_hot(safe, num_classes, dtype=logits.dtype)  # (batch, C)
    targets = (1 - label_smoothing) * label_weight[:, None] * onehot
    targets += label_smoothing / num_classes * weight[None, :] * counted[:, None]
    losses = optax.softmax_cross_entropy(logits, targets)  # (batch,)
    if reduction == "mean":
        return losses.sum() / label_weight.sum()
    return _reduce(losses, reduction)


# ch. 5.5, as loss(scores (N, C), labels (N,), targets (N, C), weight (C,)), torch's keys
LOSSES = {
    "MSELoss()": lambda out, labels, targets, weight: mse_loss(out, targets),
    "MSELoss(reduction='sum')": lambda out, labels, targets, weight: mse_loss(
        out, targets, reduction="sum"
    ),
    "MSELoss(reduction='none')": lambda out, labels, targets, weight: mse_loss(
        out, targets, reduction="none"
    ),
    "CrossEntropyLoss()": lambda out, labels, targets, weight: cross_entropy(out, labels),
    "CrossEntropyLoss(reduction='sum')": lambda out, labels, targets, weight: cross_entropy(
        out, labels, reduction="sum"
    ),
    "CrossEntropyLoss(reduction='none')": lambda out, labels, targets, weight: cross_entropy(
        out, labels, reduction="none"
    ),
    "CrossEntropyLoss(weight=w)": lambda out, labels, targets, weight: cross_entropy(
        out, labels, weight=weight
    ),
    "CrossEntropyLoss(weight=w, reduction='sum')": lambda out, labels, targets, weight: (
        cross_entropy(out, labels, weight=weight, reduction="sum")
    ),
    "CrossEntropyLoss(weight=w, reduction='none')": lambda out, labels, targets, weight: (
        cross_entropy(out, labels, weight=weight, reduction="none")
    ),
    "CrossEntropyLoss(label_smoothing=0.1)": lambda out, labels, targets, weight: cross_entropy(
        out, labels, label_smoothing=0.1
    ),
    "CrossEntropyLoss(weight=w, label_smoothing=0.1)": lambda out, labels, targets, weight: (
        cross_entropy(out, labels, weight=weight, label_smoothing=0.1)
    ),
    "CrossEntropyLoss(weight=w, label_smoothing=0.1, reduction='none')": (
        lambda out, labels, targets, weight: cross_entropy(
            out, labels, weight=weight, label_smoothing=0.1, reduction="none"
        )
    ),
}


class Net(nnx.Module):
    def __init__(
        self, n_feature, n_hidden, n_output, negative_slope, class_weight, smoothing, *, rngs
    ):
        zeros = initializers.zeros
        # each hidden layer for the activation after it (ch. 5.3.4); biases start at zero
        self.layer1 = nnx.Linear(
            n_feature,
            n_hidden,
            kernel_init=xavier_uniform(gain("tanh")),
            bias_init=zeros,
            rngs=rngs,
        )
        self.layer2 = nnx.Linear(  # sigmoid's gain is 1
            n_hidden, n_hidden, kernel_init=xavier_normal(), bias_init=zeros, rngs=rngs
        )
        self.layer3 = nnx.Linear(
            n_hidden,
            n_hidden,
            kernel_init=kaiming_uniform(a=negative_slope),
            bias_init=zeros,
            rngs=rngs,
        )
        self.layer4 = nnx.Linear(
            n_hidden,
            n_hidden,
            kernel_init=kaiming_normal(mode="fan_out", nonlinearity="relu"),
            bias_init=zeros,
            rngs=rngs,
        )
        self.out = default_linear(n_hidden, n_output, rngs=rngs)
        self.negative_slope = negative_slope
        self.class_weight, self.label_smoothing = class_weight, smoothing

    def __call__(self, x):
        x = jnp.tanh(self.layer1(x))  # (batch, n_hidden)
        x = nnx.sigmoid(self.layer2(x))  # (batch, n_hidden)
        x = leaky_relu(self.layer3(x), self.negative_slope)  # (batch, n_hidden)
        x = nnx.relu(self.layer4(x))  # (batch, n_hidden)
        return self.out(x)  # (batch, n_output) logits


def new_model(hp, rngs):
    return Net(
        hp.n_feature,
        hp.n_hidden,
        hp.n_output,
        hp.negative_slope,
        hp.class_weight,
        hp.label_smoothing,
        rngs=rngs,
    )


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.adam(hp.lr), wrt=nnx.Param)


def loss_fn(model, x, y):
    logits = model(x)
    weight = jnp.asarray(model.class_weight, logits.dtype)
    return cross_entropy(logits, y, weight=weight, label_smoothing=model.label_smoothing)


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return nnx.softmax(model(x), axis=1).argmax(axis=1)  # the class of the largest probability
