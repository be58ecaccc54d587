"""MNIST with a small residual network.

Lesson D (Liu Er, PyTorch深度学习实践, lecture 11 "卷积神经网络（高级篇）", the course's standard
code; docs/LESSONS.md): ``conv1`` Conv2d(1, 16, 5), ``conv2`` Conv2d(16, 32, 5), ``mp``
MaxPool2d(2), ``rblock1`` ResidualBlock(16), ``rblock2`` ResidualBlock(32), ``fc`` Linear(512, 10).
Trained like ``mnist_mlp``.
"""

import functools

import optax
from flax import nnx

# Conv: nnx.Conv on lax's convolution with a backward XLA:CPU keeps fast inside a whole-epoch
# scan (jaxnets/_conv.py); on a GPU, lax's own. max_pool: nnx.max_pool, these 2x2 windows as a
# reshape and a max (faster on a CPU), the gradient at ties to the first maximum, as torch's
# (jaxnets/_pool.py).
from jaxnets.layers import Conv, max_pool


class ResidualBlock(nnx.Module):
    def __init__(self, channels, *, rngs: nnx.Rngs):
        self.channels = channels
        # torch's padding=1, spelled out: one pixel on each side of height and width.
        self.conv1 = Conv(channels, channels, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
        self.conv2 = Conv(channels, channels, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)

    def __call__(self, x):
        y = nnx.relu(self.conv1(x))  # (batch, h, w, channels)
        y = self.conv2(y)
        return nnx.relu(x + y)


class Net(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = Conv(1, 16, kernel_size=(5, 5), padding="VALID", rngs=rngs)
        self.conv2 = Conv(16, 32, kernel_size=(5, 5), padding="VALID", rngs=rngs)
        self.mp = functools.partial(max_pool, window_shape=(2, 2), strides=(2, 2))
        self.rblock1 = ResidualBlock(16, rngs=rngs)
        self.rblock2 = ResidualBlock(32, rngs=rngs)
        self.fc = nnx.Linear(512, 10, rngs=rngs)

    def __call__(self, x):
        in_size = x.shape[0]
        x = self.mp(nnx.relu(self.conv1(x)))  # (batch, 12, 12, 16)
        x = self.rblock1(x)
        x = self.mp(nnx.relu(self.conv2(x)))  # (batch, 4, 4, 32)
        x = self.rblock2(x)
        # Flatten channel-major, as torch does from NCHW, so fc's weights port unchanged.
        x = x.transpose(0, 3, 1, 2).reshape(in_size, -1)  # (batch, 512)
        return self.fc(x)  # (batch, 10) logits


def new_model(hp, rngs):
    return Net(rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.sgd(hp.lr, momentum=hp.momentum), wrt=nnx.Param)


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return model(x).argmax(axis=1)
