"""A property of ``compare.translate``: random compositions of the supported layers translate and
train as torch does (``check``, float64, 2 steps).

Hypothesis draws each model as a plain description (a list of layer specs with their
settings), kept valid as it is drawn: every layer's output is at least 1x1, every group count
divides its channels, every pooling's padding is at most half its window, and no setting the
translator refuses on purpose is drawn (avg pooling whose ``ceil_mode`` adds a window, dilated
max pooling, grouped transposed convolutions). The test builds the torch modules from the
description after ``torch.manual_seed(0)`` (the weights come from torch's generator, not
Hypothesis's), wraps some layers in a small class with a residual add or a channel
concatenation (the layout bookkeeping meets a second branch), translates, and runs ``check``.

Reproducible and bounded for CI: ``derandomize=True`` (the same examples every run),
``database=None`` (nothing written into the repository), ``deadline=None`` (a check compiles),
no shrinking, and a handful of examples per family. To shrink a failure locally, run with
``phases`` left at Hypothesis's default.
"""

import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from torch import nn

from compare.toolkit import translate as tr

PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=3,
    # a check takes seconds: shrinking a failure would take many minutes in CI, so a failure
    # shows the drawn model whole instead (its report and generated source with it)
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
SEQUENCE_PROPERTY = settings(PROPERTY, max_examples=2)  # a recurrent check compiles longer


# -- drawing image models --------------------------------------------------------------------


def _conv_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _pool_size(n, k, s, p, ceil):
    span = n + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + p:  # torch drops a last window starting in the padding
        out -= 1
    return out


@st.composite
def convs(draw, c, h, w, keep_size=False, keep_channels=False):
    """A Conv2d from ``c`` channels; ``keep_size``: stride 1 and padding that keeps h x w."""
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
    out = c if keep_channels else groups * draw(st.integers(1, 3))
    bias = draw(st.booleans())
    if keep_size:
        k = draw(st.integers(1, 3))
        d = draw(st.integers(1, 2)) if k > 1 else 1
        padding = "same" if k == 2 or draw(st.booleans()) else d * (k - 1) // 2
        spec = ("conv", dict(c=c, out=out, k=k, s=1, p=padding, d=d, g=groups, bias=bias))
        return spec, (out, h, w)
    k = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2)) if k > 1 else 1
    s = draw(st.integers(1, 2))
    p = draw(st.integers(0, d * (k - 1) // 2 + 1))
    while d * (k - 1) + 1 > min(h, w) + 2 * p:  # the window must fit somewhere
        d, k = (1, k) if d > 1 else (d, k - 1)
    spec = ("conv", dict(c=c, out=out, k=k, s=s, p=p, d=d, g=groups, bias=bias))
    return spec, (out, _conv_size(h, k, s, p, d), _conv_size(w, k, s, p, d))


@st.composite
def conv_transposes(draw, c, h, w):
    out = draw(st.integers(1, 4))
    k = draw(st.integers(1, 3))
    s = draw(st.integers(1, 2))
    d = draw(st.integers(1, 2)) if k > 1 else 1
    p = draw(st.integers(0, d * (k - 1)))  # the translator pads d * (k - 1) - p: not negative
    extra = draw(st.integers(0, max(s, d) - 1))  # torch: output_padding < stride or dilation

    def size(n):
        return (n - 1) * s - 2 * p + d * (k - 1) + extra + 1

    if min(size(h), size(w)) < 1:
        p = 0
    bias = draw(st.booleans())
    spec = ("conv_transpose", dict(c=c, out=out, k=k, s=s, p=p, d=d, extra=extra, bias=bias))
    return spec, (out, size(h), size(w))


@st.composite
def pools(draw, c, h, w, kind):
    k = draw(st.integers(1, min(3, h, w)))
    s = draw(st.integers(1, k))
    p = draw(st.integers(0, k // 2))  # torch: padding at most half the window
    ceil = draw(st.booleans())
    include = draw(st.booleans())
    if kind == "avg" and any((n + 2 * p - k) % s for n in (h, w)):
        ceil = False  # avg pooling whose ceil_mode adds a window is refused: not drawn
    spec = ("pool", dict(kind=kind, k=k, s=s, p=p, ceil=ceil, include=include))
    return spec, (c, _pool_size(h, k, s, p, ceil), _pool_size(w, k, s, p, ceil))


@st.composite
def adaptive_pools(draw, c, h, w):
    kind = draw(st.sampled_from(["avg", "max"]))
    bins_h = draw(st.one_of(st.none(), st.integers(1, h + 1)))  # more bins than pixels: repeats
    bins_w = draw(st.integers(1, w + 1))
    single = draw(st.booleans()) and bins_h is not None
    bins = bins_h if single else (bins_h, bins_w)
    size = (bins_h, bins_h) if single else (bins_h or h, bins_w)
    return ("adaptive", dict(kind=kind, bins=bins)), (c, *size)


@st.composite
def batch_norms(draw, c, h, w):
    momentum = draw(st.sampled_from([0.1, 0.3]))
    eps = draw(st.sampled_from([1e-5, 1e-3]))
    return ("batchnorm", dict(c=c, momentum=momentum, eps=eps)), (c, h, w)


@st.composite
def group_norms(draw, c, h, w):
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
    eps = draw(st.sampled_from([1e-5, 1e-3]))
    return ("groupnorm", dict(groups=groups, c=c, eps=eps)), (c, h, w)


@st.composite
def layer_norms(draw, c, h, w):
    """Over the width, torch's last dim: the layout goes back to NCHW for it."""
    eps = draw(st.sampled_from([1e-5, 1e-3]))
    return ("layernorm", dict(width=w, eps=eps)), (c, h, w)


@st.composite
def norms(draw, c, h, w):
    return draw(st.one_of(batch_norms(c, h, w), group_norms(c, h, w), layer_norms(c, h, w)))


ACTIVATIONS = st.one_of(
    st.sampled_from(
        [
            ("relu",),
            ("relu6",),
            ("hardswish",),
            ("hardsigmoid",),
            ("silu",),
            ("sigmoid",),
            ("tanh",),
            ("identity",),
            ("gelu", "none"),
            ("gelu", "tanh"),
        ]
    ),
    st.tuples(st.just("leaky_relu"), st.sampled_from([0.01, 0.2])),
    st.tuples(st.just("elu"), st.sampled_from([1.0, 0.5])),
)


@st.composite
def activations(draw, c, h, w):
    return ("activation", draw(ACTIVATIONS)), (c, h, w)


@st.composite
def dropouts(draw, c, h, w):
    return ("dropout", dict(p=draw(st.sampled_from([0.2, 0.5])))), (c, h, w)


@st.composite
def residuals(draw, c, h, w):
    """A body of shape-keeping layers and its input joined by ``x + body(x)`` or
    ``cat([x, body(x)], 1)``."""
    join = draw(st.sampled_from(["add", "cat"]))
    body, state = [], (c, h, w)
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["conv", "norm", "activation"]))
        if kind == "conv":
            layer, state = draw(convs(*state, keep_size=True, keep_channels=join == "add"))
        elif kind == "norm":
            layer, state = draw(norms(*state))
        else:
            layer, state = draw(activations(*state))
        body.append(layer)
    out = c + state[0] if join == "cat" else c
    return ("residual", dict(join=join, body=body)), (out, h, w)


IMAGE_LAYERS = {
    "conv": convs,
    "conv_transpose": conv_transposes,
    "max_pool": lambda c, h, w: pools(c, h, w, "max"),
    "avg_pool": lambda c, h, w: pools(c, h, w, "avg"),
    "adaptive": adaptive_pools,
    "batchnorm": batch_norms,
    "groupnorm": group_norms,
    "layernorm": layer_norms,
    "activation": activations,
    "dropout": dropouts,
    "residual": residuals,
}


@st.composite
def image_models(draw):
    """(input shape, trunk specs, head spec, top): a valid stack of image layers and a head."""
    batch = draw(st.integers(2, 3))
    state = (draw(st.integers(1, 4)), draw(st.integers(3, 8)), draw(st.integers(3, 8)))
    shape = (batch, *state)
    trunk = []
    # distinct kinds in a drawn order: a handful of examples still meets every kind
    kinds = draw(st.permutations(sorted(IMAGE_LAYERS)))
    for kind in kinds[: draw(st.integers(3, 5))]:
        if kind == "conv_transpose" and max(state[1:]) > 6:
            kind = "conv"  # keep the maps small: a transposed convolution grows them
        layer, state = draw(IMAGE_LAYERS[kind](*state))
        trunk.append(layer)
    c, h, w = state
    head = dict(
        kind=draw(st.sampled_from(["flatten", "pool", "mlp"])),
        features=c * h * w,
        channels=c,
        classes=draw(st.integers(2, 4)),
        hidden=draw(st.integers(2, 5)),
        activation=draw(ACTIVATIONS),
    )
    top = draw(st.sampled_from(["sequential", "class"]))
    return shape, trunk, head, top


# -- building torch modules from the descriptions ----------------------------------------------


def activation(spec):
    name, *args = spec
    make = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "hardswish": nn.Hardswish,
        "hardsigmoid": nn.Hardsigmoid,
        "silu": nn.SiLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "identity": nn.Identity,
        "gelu": lambda approximate: nn.GELU(approximate=approximate),
        "leaky_relu": nn.LeakyReLU,
        "elu": nn.ELU,
    }[name]
    return make(*args)


class Residual(nn.Module):
    """``x + body(x)``, or ``cat([x, body(x)], 1)``: the branch is taken at trace time, so two
    joins are two generated classes."""

    def __init__(self, body, join):
        super().__init__()
        self.body = body
        self.join = join

    def extra_repr(self):
        return f"join={self.join!r}"

    def forward(self, x):
        y = self.body(x)
        return x + y if self.join == "add" else torch.cat([x, y], dim=1)


def layer(spec):
    kind, a = spec
    if kind == "conv":
        return nn.Conv2d(
            a["c"], a["out"], a["k"], a["s"], a["p"], a["d"], groups=a["g"], bias=a["bias"]
        )
    if kind == "conv_transpose":
        return nn.ConvTranspose2d(
            a["c"], a["out"], a["k"], a["s"], a["p"], a["extra"], bias=a["bias"], dilation=a["d"]
        )
    if kind == "pool":
        if a["kind"] == "max":
            return nn.MaxPool2d(a["k"], a["s"], a["p"], ceil_mode=a["ceil"])
        return nn.AvgPool2d(a["k"], a["s"], a["p"], a["ceil"], count_include_pad=a["include"])
    if kind == "adaptive":
        pool = nn.AdaptiveAvgPool2d if a["kind"] == "avg" else nn.AdaptiveMaxPool2d
        return pool(a["bins"])
    if kind == "batchnorm":
        return nn.BatchNorm2d(a["c"], eps=a["eps"], momentum=a["momentum"])
    if kind == "groupnorm":
        return nn.GroupNorm(a["groups"], a["c"], eps=a["eps"])
    if kind == "layernorm":
        return nn.LayerNorm(a["width"], eps=a["eps"])
    if kind == "activation":
        return activation(a)
    if kind == "dropout":
        return nn.Dropout(a["p"])
    if kind == "residual":
        return Residual(nn.Sequential(*(layer(s) for s in a["body"])), a["join"])
    raise AssertionError(kind)


def head(a):
    if a["kind"] == "flatten":  # channel-major flatten of a channels-last map: the transpose
        return [nn.Flatten(), nn.Linear(a["features"], a["classes"])]
    if a["kind"] == "pool":
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(a["channels"], a["classes"])]
    return [
        nn.Flatten(),
        nn.Linear(a["features"], a["hidden"]),
        activation(a["activation"]),
        nn.Dropout(0.25),
        nn.Linear(a["hidden"], a["classes"]),
    ]


class Net(nn.Module):
    """A user's class around the stack: ``features``, a functional flatten, ``classifier``."""

    def __init__(self, features, classifier):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def image_model(trunk, head_spec, top):
    layers = [layer(spec) for spec in trunk]
    if top == "sequential":
        return nn.Sequential(*layers, *head(head_spec))
    tail = head(head_spec)
    if head_spec["kind"] == "pool":
        layers.append(tail.pop(0))  # the pooling stays in features, the flatten is Net's
    return Net(nn.Sequential(*layers), nn.Sequential(*tail[1:]))


def passes_check(model, example):
    result = tr.translate(model, example)
    report = result.check(steps=2)
    assert report.passed, f"{model}\n{report}\n{result.source}"
    assert report.forward_rel_diff <= 1e-9, f"{model}\n{report}"


# Pinned besides the drawn ones: the structure that matters most meets every run, whatever
# a handful of draws happens to hold: BatchNorm, a residual add around a grouped 'same'
# convolution and a GroupNorm, a concatenation around a LayerNorm (NCHW) joined to a
# channels-last input, and a max pooling whose ceil_mode adds a window.
PINNED_IMAGE_MODEL = (
    (2, 3, 6, 6),
    [
        ("conv", dict(c=3, out=4, k=3, s=1, p=1, d=1, g=1, bias=True)),
        ("batchnorm", dict(c=4, momentum=0.1, eps=1e-5)),
        (
            "residual",
            dict(
                join="add",
                body=[
                    ("conv", dict(c=4, out=4, k=3, s=1, p="same", d=1, g=2, bias=False)),
                    ("groupnorm", dict(groups=2, c=4, eps=1e-5)),
                ],
            ),
        ),
        (
            "residual",
            dict(
                join="cat",
                body=[("layernorm", dict(width=6, eps=1e-5)), ("activation", ("relu6",))],
            ),
        ),
        ("pool", dict(kind="max", k=3, s=2, p=1, ceil=True, include=True)),
    ],
    dict(kind="flatten", features=8 * 4 * 4, channels=8, classes=3, hidden=3, activation=("relu",)),
    "class",
)


@PROPERTY
@given(image_models())
@example(PINNED_IMAGE_MODEL)
def test_random_image_models_translate_and_train_alike(drawn):
    shape, trunk, head_spec, top = drawn
    torch.manual_seed(0)
    model = image_model(trunk, head_spec, top)
    example = torch.randn(shape)
    passes_check(model, example)


# -- sequence models ---------------------------------------------------------------------------


@st.composite
def sequence_models(draw):
    """An embedding, one to three recurrent stacks of distinct kinds (each its own
    ``num_layers``, ``bidirectional``, ``batch_first`` and dropout between layers), a readout
    and a head."""
    features = draw(st.integers(2, 5))
    rnns, size = [], features
    kinds = draw(st.permutations(["LSTM", "GRU", "RNN"]))
    for kind in kinds[: draw(st.integers(1, 3))]:
        layers = draw(st.integers(1, 2))
        rnn = dict(
            kind=kind,
            input=size,
            hidden=draw(st.integers(2, 5)),
            num_layers=layers,
            bidirectional=draw(st.booleans()),
            batch_first=draw(st.booleans()),
            dropout=draw(st.sampled_from([0.0, 0.25])) if layers > 1 else 0.0,
        )
        rnns.append(rnn)
        size = rnn["hidden"] * (2 if rnn["bidirectional"] else 1)
    return dict(
        vocab=draw(st.integers(3, 12)),
        features=features,
        rnns=rnns,
        readout=draw(st.sampled_from(["last", "state", "mean"])),
        classes=draw(st.integers(2, 4)),
        batch=draw(st.integers(2, 3)),
        time=draw(st.integers(2, 5)),
    )


class SequenceNet(nn.Module):
    """Embedding, recurrent stacks one after the other (the time axis moved where each wants
    it), a readout of the last one's outputs or of its final state, a head."""

    def __init__(self, a):
        super().__init__()
        self.embed = nn.Embedding(a["vocab"], a["features"])
        self.rnns = nn.ModuleList(
            getattr(nn, r["kind"])(
                r["input"],
                r["hidden"],
                num_layers=r["num_layers"],
                bidirectional=r["bidirectional"],
                batch_first=r["batch_first"],
                dropout=r["dropout"],
            )
            for r in a["rnns"]
        )
        self.readout = a["readout"]
        last = a["rnns"][-1]
        width = last["hidden"] * (2 if last["bidirectional"] else 1)
        self.head = nn.Linear(last["hidden"] if a["readout"] == "state" else width, a["classes"])

    def forward(self, tokens):
        x = self.embed(tokens)  # (batch, time, features)
        batch_first = True
        for rnn in self.rnns:
            if rnn.batch_first != batch_first:
                x = x.transpose(0, 1)  # only the layout bookkeeping moves
                batch_first = rnn.batch_first
            x, state = rnn(x)
        if self.readout == "state":
            h_n = state[0] if isinstance(rnn, nn.LSTM) else state
            features = h_n[-1]  # the last layer's last direction
        elif self.readout == "mean":
            features = x.mean(dim=1 if batch_first else 0)
        else:
            features = x[:, -1] if batch_first else x[-1]
        return self.head(features)


# Pinned besides the drawn ones: a stacked bidirectional GRU, time-major, feeding a batch-first
# LSTM, read out from the LSTM's final state (a tuple inside a tuple).
PINNED_SEQUENCE_MODEL = dict(
    vocab=9,
    features=3,
    rnns=[
        dict(
            kind="GRU",
            input=3,
            hidden=4,
            num_layers=2,
            bidirectional=True,
            batch_first=False,
            dropout=0.25,
        ),
        dict(
            kind="LSTM",
            input=8,
            hidden=3,
            num_layers=1,
            bidirectional=False,
            batch_first=True,
            dropout=0.0,
        ),
    ],
    readout="state",
    classes=3,
    batch=2,
    time=4,
)


@SEQUENCE_PROPERTY
@given(sequence_models())
@example(PINNED_SEQUENCE_MODEL)
def test_random_sequence_models_translate_and_train_alike(a):
    torch.manual_seed(0)
    model = SequenceNet(a)
    tokens = torch.randint(0, a["vocab"], (a["batch"], a["time"]))
    passes_check(model, tokens)
