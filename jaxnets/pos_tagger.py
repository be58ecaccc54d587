"""Part-of-speech tagging with an LSTM.

Lesson E (Wu Maogui, Python深度学习, ch. 7.7, after the PyTorch tutorial "Sequence Models and LSTM
Networks"; docs/LESSONS.md): ``LSTMTagger`` with ``word_embeddings`` Embedding(9, 10), ``lstm``
LSTM(10, 3) reading the sentence time-major (torch's default), ``hidden2tag`` Linear(3, 3),
log_softmax; NLLLoss, SGD lr 0.1, 300 epochs over the two tagged sentences, one sentence per step,
in order.

``compare`` pads the shorter sentence and marks its padding with ``IGNORE_INDEX``, which
NLLLoss skips; an LSTM reads left to right, so a sentence's scores ignore what follows it.
"""

import jax.numpy as jnp
import optax
from flax import nnx

from jaxnets.layers import Embed, LSTMCell

IGNORE_INDEX = -100  # torch NLLLoss's default ignore_index


class LSTMTagger(nnx.Module):
    def __init__(self, embedding_dim, hidden_dim, vocab_size, tagset_size, *, rngs: nnx.Rngs):
        self.hidden_dim = hidden_dim
        # jaxnets' Embed keeps the table's dtype (nnx.Embed fixes float32 when built)
        self.word_embeddings = Embed(vocab_size, embedding_dim, rngs=rngs)
        # time_major=True: torch's LSTM default (nnx.RNN is batch first unless told)
        self.lstm = nnx.RNN(LSTMCell(embedding_dim, hidden_dim, rngs=rngs), time_major=True)
        self.hidden2tag = nnx.Linear(hidden_dim, tagset_size, rngs=rngs)

    def __call__(self, sentence):
        # sentence (batch, seq_len) word indices
        embeds = self.word_embeddings(sentence)  # (batch, seq_len, embedding_dim)
        lstm_out = self.lstm(embeds.transpose(1, 0, 2))  # zero initial carry; (seq_len, batch, H)
        tag_space = self.hidden2tag(lstm_out.transpose(1, 0, 2))  # (batch, seq_len, tagset_size)
        return nnx.log_softmax(tag_space, axis=-1)


def new_model(hp, rngs):
    return LSTMTagger(hp.embedding_dim, hp.hidden_dim, hp.vocab_size, hp.tagset_size, rngs=rngs)


def new_optimizer(model, hp):
    return nnx.Optimizer(model, optax.sgd(hp.lr), wrt=nnx.Param)


def loss_fn(model, x, y):
    tag_scores = model(x)  # (batch, seq_len, tagset_size)
    # NLLLoss: the mean of -log p(tag) over the words whose target is not IGNORE_INDEX
    scored = y != IGNORE_INDEX
    picked = jnp.take_along_axis(tag_scores, jnp.where(scored, y, 0)[..., None], axis=-1)
    return -jnp.sum(jnp.where(scored, picked[..., 0], 0.0)) / jnp.sum(scored)


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return model(x).argmax(axis=-1)  # (batch, seq_len) tag indices
