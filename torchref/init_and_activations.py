"""Initialisation, activation functions and losses as torch has them, and a net that uses them.

Lesson G (Wu Maogui, Python深度学习, ch. 5.3.4 weight initialisation, 5.4 activation functions, 5.5
loss functions; the chapter's code listings are lost, its prose names the schemes and functions;
docs/LESSONS.md).

- ``INITIALIZERS``, ``ACTIVATIONS``, ``LOSSES``, ``default_linear``, ``default_conv``: each scheme
  and function of the chapter as torch writes it, under the same keys as its twin in
  ``jaxnets.init_and_activations``. ``compare/tutorials/equivalences.py`` draws and evaluates both
  sides and writes the table of equivalences (``run`` and ``parity`` of ``init-and-activations``).
- ``Net``: a small classifier built from them: each hidden layer initialised by the scheme the
  chapter recommends for the activation after it (xavier for the S-shaped tanh and sigmoid,
  kaiming for the ReLU family), torch's default init for ``out``, and
  ``CrossEntropyLoss(weight=..., label_smoothing=...)``, whose default ``ignore_index=-100``
  skips the unlabelled points of the three clouds. Adam lr 0.01, batch 30, 20 epochs.
"""

import torch
import torch.nn.functional as F
from torch import nn

# ch. 5.3.4: an in-place initialiser of a weight in torch's layout ((out, in), or
# (out, in, kH, kW) for a convolution), which gives its fans
INITIALIZERS = {
    "xavier_uniform_(w)": nn.init.xavier_uniform_,
    "xavier_uniform_(w, gain=calculate_gain('tanh'))": lambda w: nn.init.xavier_uniform_(
        w, gain=nn.init.calculate_gain("tanh")
    ),
    "xavier_normal_(w)": nn.init.xavier_normal_,
    "kaiming_uniform_(w, nonlinearity='relu')": lambda w: nn.init.kaiming_uniform_(
        w, nonlinearity="relu"
    ),
    # the default nonlinearity is 'leaky_relu', whose gain with a = 0 is relu's sqrt(2)
    "kaiming_normal_(w)": nn.init.kaiming_normal_,
    "kaiming_uniform_(w, a=0.1, mode='fan_out')": lambda w: nn.init.kaiming_uniform_(
        w, a=0.1, mode="fan_out"
    ),
    "kaiming_normal_(w, a=0.1, mode='fan_out')": lambda w: nn.init.kaiming_normal_(
        w, a=0.1, mode="fan_out"
    ),
}


def default_linear(in_features, out_features):
    """``nn.Linear`` as built: ``reset_parameters`` draws the weight with
    ``kaiming_uniform_(a=sqrt(5))``, U(+-1/sqrt(fan_in)), and the bias from the same range."""
    return nn.Linear(in_features, out_features)


def default_conv(in_channels, out_channels, kernel_size):
    """``nn.Conv2d`` as built: weight and bias U(+-1/sqrt(in_channels * kH * kW))."""
    return nn.Conv2d(in_channels, out_channels, kernel_size)


# ch. 5.4: sigmoid, tanh, relu, leaky relu and softmax, applied to a tensor
ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": F.leaky_relu,  # negative_slope 0.01
    "softmax": lambda x: F.softmax(x, dim=-1),
}

# ch. 5.5: MSELoss and CrossEntropyLoss, each as loss(scores (N, C), labels (N,), targets
# (N, C), weight (C,)). The labels hold some -100: CrossEntropyLoss's default ignore_index,
# so every cross-entropy below skips those samples.
LOSSES = {
    "MSELoss()": lambda out, labels, targets, weight: F.mse_loss(out, targets),
    "MSELoss(reduction='sum')": lambda out, labels, targets, weight: F.mse_loss(
        out, targets, reduction="sum"
    ),
    "MSELoss(reduction='none')": lambda out, labels, targets, weight: F.mse_loss(
        out, targets, reduction="none"
    ),
    "CrossEntropyLoss()": lambda out, labels, targets, weight: F.cross_entropy(out, labels),
    "CrossEntropyLoss(reduction='sum')": lambda out, labels, targets, weight: F.cross_entropy(
        out, labels, reduction="sum"
    ),
    "CrossEntropyLoss(reduction='none')": lambda out, labels, targets, weight: F.cross_entropy(
        out, labels, reduction="none"
    ),
    "CrossEntropyLoss(weight=w)": lambda out, labels, targets, weight: F.cross_entropy(
        out, labels, weight=weight
    ),
    "CrossEntropyLoss(weight=w, reduction='sum')": lambda out, labels, targets, weight: (
        F.cross_entropy(out, labels, weight=weight, reduction="sum")
    ),
    "CrossEntropyLoss(weight=w, reduction='none')": lambda out, labels, targets, weight: (
        F.cross_entropy(out, labels, weight=weight, reduction="none")
    ),
    "CrossEntropyLoss(label_smoothing=0.1)": lambda out, labels, targets, weight: F.cross_entropy(
        out, labels, label_smoothing=0.1
    ),
    "CrossEntropyLoss(weight=w, label_smoothing=0.1)": lambda out, labels, targets, weight: (
        F.cross_entropy(out, labels, weight=weight, label_smoothing=0.1)
    ),
    "CrossEntropyLoss(weight=w, label_smoothing=0.1, reduction='none')": (
        lambda out, labels, targets, weight: F.cross_entropy(
            out, labels, weight=weight, label_smoothing=0.1, reduction="none"
        )
    ),
}


class Net(nn.Module):
    def __init__(self, n_feature, n_hidden, n_output, negative_slope, class_weight, smoothing):
        super().__init__()
        self.layer1 = nn.Linear(n_feature, n_hidden)
        self.layer2 = nn.Linear(n_hidden, n_hidden)
        self.layer3 = nn.Linear(n_hidden, n_hidden)
        self.layer4 = nn.Linear(n_hidden, n_hidden)
        self.out = default_linear(n_hidden, n_output)
        self.negative_slope = negative_slope
        # CrossEntropyLoss's settings, as plain numbers: an nn.CrossEntropyLoss(weight=...)
        # attribute would put its weight into the state dict
        self.class_weight, self.label_smoothing = class_weight, smoothing
        # each hidden layer for the activation after it (ch. 5.3.4); biases start at zero
        nn.init.xavier_uniform_(self.layer1.weight, gain=nn.init.calculate_gain("tanh"))
        nn.init.xavier_normal_(self.layer2.weight)  # sigmoid's gain is 1
        nn.init.kaiming_uniform_(self.layer3.weight, a=negative_slope)  # leaky_relu's gain
        nn.init.kaiming_normal_(self.layer4.weight, mode="fan_out", nonlinearity="relu")
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        x = torch.tanh(self.layer1(x))  # (batch, n_hidden)
        x = torch.sigmoid(self.layer2(x))  # (batch, n_hidden)
        x = F.leaky_relu(self.layer3(x), self.negative_slope)  # (batch, n_hidden)
        x = F.relu(self.layer4(x))  # (batch, n_hidden)
        return self.out(x)  # (batch, n_output) logits


def new_model(hp):
    return Net(
        hp.n_feature,
        hp.n_hidden,
        hp.n_output,
        hp.negative_slope,
        hp.class_weight,
        hp.label_smoothing,
    )


def new_optimizer(model, hp):
    return torch.optim.Adam(model.parameters(), lr=hp.lr)


def loss_fn(model, x, y):
    logits = model(x)
    weight = torch.tensor(model.class_weight, dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=model.label_smoothing)


def train_step(model, optimizer, x, y):
    loss = loss_fn(model, x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def predict(model, x):
    return F.softmax(model(x), dim=1).argmax(dim=1)  # the class of the largest probability
