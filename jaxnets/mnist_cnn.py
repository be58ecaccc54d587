"""MNIST with two convolutions and max pooling.

Lesson D (Liu Er, PyTorch深度学习实践, lecture 10 "卷积神经网络（基础篇）"; docs/LESSONS.md):
``conv1`` Conv2d(1, 10, 5), ``conv2`` Conv2d(10, 20, 5), ``pooling`` MaxPool2d(2), ``fc``
Linear(320, 10); relu(pool(conv(x))) twice, flatten, fc. Trained like ``mnist_mlp``.
"""

import functools

import optax
from flax import nnx

from jaxnets.layers import Conv, max_pool


class Model(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        # torch's Conv2d pads nothing by default; nnx.Conv pads 'SAME' unless told.
        # Conv: nnx.Conv on lax's convolution with a backward XLA:CPU keeps fast inside a
        # whole-epoch scan (jaxnets/_conv.py); on a GPU, lax's own.
        self.conv1 = Conv(1, 10, kernel_size=(5, 5), padding="VALID", rngs=rngs)
        self.conv2 = Conv(10, 20, kernel_size=(5, 5), padding="VALID", rngs=rngs)
        # max_pool: nnx.max_pool, these 2x2 windows as a reshape and a max (faster on a CPU),
        # the gradient at ties to the first maximum, as torch's (jaxnets/_pool.py).
        self.pooling = functools.partial(max_pool, window_shape=(2, 2), strides=(2, 2))
        self.fc = nnx.Linear(320, 10, rngs=rngs)

    def __call__(self, x):
        batch_size = x.shape[0]
        x = nnx.relu(self.pooling(self.conv1(x)))  # (batch, 12, 12, 10)
        x = nnx.relu(self.pooling(self.conv2(x)))  # (batch, 4, 4, 20)
        # Flatten channel-major, as torch does from NCHW, so fc's weights port unchanged.
        x = x.transpose(0, 3, 1, 2).reshape(batch_size, -1)  # (batch, 320)
        return self.fc(x)  # (batch, 10) logits


def new_model(hp, rngs):
    return Model(rngs=rngs)


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
