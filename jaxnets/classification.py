"""Classification: two Gaussian clouds told apart by a one-hidden-layer net.

Lesson A (Morvan Zhou, PyTorch-Tutorial 302_classification.py, "区分类型 (分类)"; docs/LESSONS.md).
"""

import optax
from flax import nnx


class Net(nnx.Module):
    def __init__(self, n_feature, n_hidden, n_output, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(n_feature, n_hidden, rngs=rngs)
        self.out = nnx.Linear(n_hidden, n_output, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.hidden(x))  # (batch, n_hidden)
        return self.out(x)  # (batch, n_output) logits, not probabilities


def new_model(hp, rngs):
    return Net(hp.n_feature, hp.n_hidden, hp.n_output, rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.sgd(hp.lr), wrt=nnx.Param)


def loss_fn(model, x, y):
    # y holds class indices (batch,), not one-hot.
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return model(x).argmax(axis=1)
