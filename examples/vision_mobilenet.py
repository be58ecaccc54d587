"""A port to check: torchvision's MobileNetV2, written in Flax NNX by hand, trained with RMSprop.

Not one of the tutorials: a model nobody here wrote. ``twinnets check
examples/vision_mobilenet.py`` trains torchvision's own ``mobilenet_v2`` and the Flax twin
below from the same weights on the same batches, in float64 lockstep (``--dtype float32``: in
float32, each tensor held to torch's own float32 error).

The twin keeps torchvision's module tree, so its ``nnx.State`` paths are the ``state_dict``
keys (``features.1.conv.0.0.weight``...) and the weights port as they are. Where a Flax default
differs from torch's, it is spelled out: convolution padding (torch pads 0 unless told),
depthwise groups (``feature_group_count``), BatchNorm's statistics (``jaxnets.layers``' takes
torch's momentum and keeps the unbiased variance), ReLU6.

One trap this model shows: a BatchNorm's shift (``features.1.conv.0.1.bias`` and its kind)
feeding a bias-free 1x1 convolution and another BatchNorm in training mode is absorbed by the
second normalisation, so its gradient is zero in exact arithmetic: each framework moves it by
its own rounding noise (RMSprop scales that noise to a full step). The check reports such
parameters as ``loss_irrelevant`` and holds them to their own noise.
"""

import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
import torchvision
from flax import nnx

from jaxnets import layers

WIDTH, CLASSES, SIZE, BATCH = 0.35, 10, 32, 16
# torchvision's table: expand ratio t, channels c, repeats n, first stride s
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
SETTINGS += ((6, 160, 3, 2), (6, 320, 1, 1))


def divisible(value, by=8):
    """torchvision's channel rounding: the nearest multiple of ``by``, never 10 % below."""
    rounded = max(by, int(value + by / 2) // by * by)
    return rounded + by if rounded < 0.9 * value else rounded


def relu6(x):
    return jnp.clip(x, 0.0, 6.0)


def conv_bn(cin, cout, kernel, stride=1, groups=1, activation=True, *, rngs):
    """torchvision's ``Conv2dNormActivation``: a bias-free convolution padded (k - 1) / 2,
    BatchNorm, ReLU6; a ``Sequential``, so its children keep torch's indices 0, 1 (2)."""
    pad = (kernel - 1) // 2
    conv = layers.Conv(
        cin,
        cout,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=False,
        rngs=rngs,
    )
    norm = layers.BatchNorm(cout, rngs=rngs)
    return nnx.Sequential(conv, norm, relu6) if activation else nnx.Sequential(conv, norm)


class InvertedResidual(nnx.Module):
    def __init__(self, cin, cout, stride, expand_ratio, *, rngs):
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        blocks = [conv_bn(cin, hidden, 1, rngs=rngs)] if expand_ratio != 1 else []
        blocks.append(conv_bn(hidden, hidden, 3, stride, groups=hidden, rngs=rngs))  # depthwise
        # the projection: a bare 1x1 convolution and BatchNorm, torch's indices continued
        project = conv_bn(hidden, cout, 1, activation=False, rngs=rngs)
        self.conv = nnx.Sequential(*blocks, *project.layers)

    def __call__(self, x):  # x (batch, H, W, cin)
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nnx.Module):
    def __init__(self, num_classes=CLASSES, width_mult=WIDTH, *, rngs: nnx.Rngs):
        channels = divisible(32 * width_mult)
        last = divisible(1280 * max(1.0, width_mult))
        features = [conv_bn(3, channels, 3, 2, rngs=rngs)]
        for t, c, n, s in SETTINGS:
            out = divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t, rngs=rngs))
                channels = out
        features.append(conv_bn(channels, last, 1, rngs=rngs))
        self.features = nnx.Sequential(*features)
        self.classifier = nnx.Sequential(
            nnx.Dropout(0.2, rngs=rngs), nnx.Linear(last, num_classes, rngs=rngs)
        )

    def __call__(self, x):  # x (batch, H, W, 3)
        x = self.features(x)  # (batch, H / 32, W / 32, last)
        x = x.mean(axis=(1, 2))  # adaptive_avg_pool2d(1) and flatten: (batch, last)
        return self.classifier(x)  # (batch, num_classes) logits


def torch_model():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2(num_classes=CLASSES, width_mult=WIDTH)


def flax_model():
    return MobileNetV2(rngs=nnx.Rngs(0))  # its weights are replaced by torch's


def torch_loss(model, x, y):
    return F.cross_entropy(model(x), y)


def flax_loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def torch_optimizer(model):
    return torch.optim.RMSprop(
        model.parameters(), lr=1e-3, alpha=0.9, momentum=0.9, weight_decay=4e-5
    )


def scheduler(optimizer):
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)


def batches():
    """Three batches of random 32x32 images (NCHW, torch's layout) and labels."""
    rng = np.random.default_rng(0)
    return [
        (rng.standard_normal((BATCH, 3, SIZE, SIZE)), rng.integers(0, CLASSES, BATCH))
        for _ in range(3)
    ]
