"""A port to check: torchvision's ResNet-18, written in Flax NNX by hand, trained with SGD.

Not one of the tutorials: a model nobody here wrote. ``twinnets check examples/vision_resnet.py``
trains torchvision's own ``resnet18(num_classes=10)`` and the Flax twin below from the same
weights on the same batches, in float64 lockstep: each step's output, loss, gradients,
parameters, BatchNorm running statistics and SGD momentum buffers agree to rounding (SGD with
momentum and weight decay, a cosine learning rate stepped per batch; two steps, so that the
momentum and the schedule both act). ``--dtype float32``: each tensor held to torch's own
float32 error, its distance from torch in float64.

The twin keeps torchvision's module tree, so its ``nnx.State`` paths are the ``state_dict``
keys (``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight``,
``layer2.0.downsample.0.weight``, ``layer2.0.downsample.1.bias``, ``fc.weight``...) and the
weights port as they are. Where a Flax default differs from torch's, it is spelled out:

- convolution padding: ``nnx.Conv`` pads ``'SAME'`` unless told, torch pads what it is given
  (``conv1``: 3 around a 7x7 kernel at stride 2, the 3x3 convolutions 1, the 1x1 ``downsample``
  convolution 0). At a stride of 2 on an even size ``'SAME'`` is not even symmetric: (0, 1)
  around a 3x3 kernel, (2, 3) around the stem's 7x7, where torch pads (1, 1) and (3, 3);
- BatchNorm's statistics: ``jaxnets.layers.BatchNorm`` takes torch's momentum (0.1 weighs the
  new batch; ``nnx.BatchNorm``'s weighs the old value, default 0.99) and keeps the unbiased
  running variance and ``num_batches_tracked``;
- the stem's max pool: torch's ``MaxPool2d(3, 2, padding=1)`` pads with -inf, and so does
  ``nnx.max_pool`` given ``padding=((1, 1), (1, 1))`` (``lax.reduce_window`` from -inf; checked
  against torch on negative inputs). Here the pool reads a ReLU's output, so padding with zeros
  would go unseen; the amount would not: ``padding='SAME'`` pads a 16x16 map (0, 1);
- the ``downsample`` branch: a bias-free 1x1 convolution at the block's stride and a
  BatchNorm, in a ``Sequential`` so that its children keep torch's indices 0 and 1; the
  first block of ``layer1`` has none (64 channels in and out, stride 1);
- ``AdaptiveAvgPool2d(1)`` and ``flatten``: the mean over both spatial axes (NHWC: axes 1, 2).

Images are 32x32 (the stem and the four stages leave 1x1 before the pool), batches of 8,
training mode throughout (each BatchNorm of ``layer4`` normalises 8 values a channel).

What float32 cannot promise here: a ReLU unit whose input is within float32 rounding of zero
(about 1e-6) may land on the other side of zero on one side only; that one unit moves the
gradients by a finite amount (1e-2 relative) and the float32 check fails for a correct port.
With some 377 000 ReLU units a step, that is a matter of the draw: with these batches (seed
0) and two steps it passes; four steps part at step 2 (``bn1.weight``'s gradient, 1.2e-3);
``default_rng(4)`` with ``manual_seed(4)`` parts at step 0 on one unit at 1.1e-6
(``conv1.weight``'s gradient, 9.6e-3). torch alone does the same: at seed 4, 2 of 16 copies of
the float32 model with every weight nudged by one float32 rounding step move that gradient by
3.3e-3 from the unnudged run, the rest by 7e-6 (``python examples/float32_switches.py``). So
a float32 failure on a ReLU net that is a finite jump on a gradient, with the outputs
agreeing, is not a verdict: float64 (the default check) is not exposed to it and is the one
to trust.
"""

import numpy as np
import optax
import torch
import torch.nn.functional as F
import torchvision
from flax import nnx

from jaxnets import layers

CLASSES, SIZE, BATCH = 10, 32, 8


def conv(cin, cout, kernel, stride=1, *, rngs):
    """A bias-free ``Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2)``, torch's
    padding written out."""
    pad = (kernel - 1) // 2
    return layers.Conv(
        cin,
        cout,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        rngs=rngs,
    )


class BasicBlock(nnx.Module):
    """torchvision's ``BasicBlock``: two 3x3 convolutions with BatchNorm, the input added back
    (through ``downsample`` where the shape changes), ReLU."""

    def __init__(self, cin, cout, stride, *, rngs):
        self.conv1 = conv(cin, cout, 3, stride, rngs=rngs)
        self.bn1 = layers.BatchNorm(cout, rngs=rngs)
        self.conv2 = conv(cout, cout, 3, rngs=rngs)
        self.bn2 = layers.BatchNorm(cout, rngs=rngs)
        # where the shape changes, torch's Sequential(conv1x1, BatchNorm2d): keys .0 and .1
        changes = stride != 1 or cin != cout
        self.downsample = (
            nnx.Sequential(conv(cin, cout, 1, stride, rngs=rngs), layers.BatchNorm(cout, rngs=rngs))
            if changes
            else None
        )

    def __call__(self, x):  # x (batch, H, W, cin)
        identity = x if self.downsample is None else self.downsample(x)
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))  # (batch, H / stride, W / stride, cout)
        return nnx.relu(out + identity)


def stage(cin, cout, stride, blocks=2, *, rngs):
    """One of resnet18's four ``layerN``: ``blocks`` BasicBlocks, the first at ``stride``."""
    first = BasicBlock(cin, cout, stride, rngs=rngs)
    return nnx.Sequential(first, *(BasicBlock(cout, cout, 1, rngs=rngs) for _ in range(blocks - 1)))


class ResNet18(nnx.Module):
    def __init__(self, num_classes=CLASSES, *, rngs: nnx.Rngs):
        self.conv1 = layers.Conv(
            3, 64, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False, rngs=rngs
        )
        self.bn1 = layers.BatchNorm(64, rngs=rngs)
        # torch's _make_layer: a Sequential of BasicBlocks, keys layer1.0.conv1.weight...
        self.layer1 = stage(64, 64, 1, rngs=rngs)
        self.layer2 = stage(64, 128, 2, rngs=rngs)
        self.layer3 = stage(128, 256, 2, rngs=rngs)
        self.layer4 = stage(256, 512, 2, rngs=rngs)
        self.fc = nnx.Linear(512, num_classes, rngs=rngs)

    def __call__(self, x):  # x (batch, H, W, 3)
        x = nnx.relu(self.bn1(self.conv1(x)))  # (batch, H / 2, W / 2, 64)
        # torch's MaxPool2d(3, 2, padding=1): nnx.max_pool pads with -inf too, as told
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (batch, H / 32, W / 32, 512)
        x = x.mean(axis=(1, 2))  # adaptive_avg_pool2d(1) and flatten: (batch, 512)
        return self.fc(x)  # (batch, num_classes) logits


def torch_model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=CLASSES)


def flax_model():
    # its weights are replaced by torch's: built abstract (shapes only), it skips drawing 11M
    # random numbers (8 s on a CPU); the check writes every variable from torch's state_dict
    return nnx.eval_shape(lambda: ResNet18(rngs=nnx.Rngs(0)))


def torch_loss(model, x, y):
    return F.cross_entropy(model(x), y)


def flax_loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def torch_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def scheduler(optimizer):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)


scheduler_interval = "step"  # stepped after every batch: the check runs 2 steps, not 2 epochs


def batches():
    """Two batches of random 32x32 images (NCHW, torch's layout; the check moves them to NHWC
    for Flax) and labels."""
    rng = np.random.default_rng(0)
    return [
        (rng.standard_normal((BATCH, 3, SIZE, SIZE)), rng.integers(0, CLASSES, BATCH))
        for _ in range(2)
    ]
