"""MNIST with a five-layer perceptron.

Lesson D (Liu Er, PyTorch深度学习实践, lecture 9 "多分类问题"; docs/LESSONS.md): ``Model`` with
``linear1..linear5`` 784-512-256-128-64-10, ReLU, CrossEntropyLoss, SGD lr 0.01 momentum 0.5, batch
64, 10 epochs, ``Normalize((0.1307,), (0.3081,))``.
"""

import optax
from flax import nnx


class Model(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(784, 512, rngs=rngs)
        self.linear2 = nnx.Linear(512, 256, rngs=rngs)
        self.linear3 = nnx.Linear(256, 128, rngs=rngs)
        self.linear4 = nnx.Linear(128, 64, rngs=rngs)
        self.linear5 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        # One channel, so NHWC flattens in the same pixel order as torch's NCHW.
        x = x.reshape(x.shape[0], 784)  # (batch, 28, 28, 1) -> (batch, 784)
        x = nnx.relu(self.linear1(x))  # (batch, 512)
        x = nnx.relu(self.linear2(x))  # (batch, 256)
        x = nnx.relu(self.linear3(x))  # (batch, 128)
        x = nnx.relu(self.linear4(x))  # (batch, 64)
        return self.linear5(x)  # (batch, 10) logits


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
