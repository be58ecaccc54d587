"""Part-of-speech tagging with an LSTM.

Lesson E (Wu Maogui, Python深度学习, ch. 7.7, after the PyTorch tutorial "Sequence Models and LSTM
Networks"; docs/LESSONS.md): ``LSTMTagger`` with ``word_embeddings`` Embedding(9, 10), ``lstm``
LSTM(10, 3) reading the sentence time-major (torch's default), ``hidden2tag`` Linear(3, 3),
log_softmax; NLLLoss, SGD lr 0.1, 300 epochs over the two tagged sentences, one sentence per step,
in order.

``compare`` pads the shorter sentence and marks its padding with ``IGNORE_INDEX``, which
NLLLoss skips; an LSTM reads left to right, so a sentence's scores ignore what follows it.
"""

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # NLLLoss's default ignore_index


class LSTMTagger(nn.Module):
    def __init__(self, embedding_dim, hidden_dim, vocab_size, tagset_size):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.word_embeddings = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim)  # input (seq_len, batch, embedding_dim)
        self.hidden2tag = nn.Linear(hidden_dim, tagset_size)

    def forward(self, sentence):
        # sentence (batch, seq_len) word indices
        embeds = self.word_embeddings(sentence)  # (batch, seq_len, embedding_dim)
        lstm_out, _ = self.lstm(embeds.transpose(0, 1))  # zero initial state; (seq_len, batch, H)
        tag_space = self.hidden2tag(lstm_out.transpose(0, 1))  # (batch, seq_len, tagset_size)
        return F.log_softmax(tag_space, dim=-1)


def new_model(hp):
    return LSTMTagger(hp.embedding_dim, hp.hidden_dim, hp.vocab_size, hp.tagset_size)


def new_optimizer(model, hp):
    return torch.optim.SGD(model.parameters(), lr=hp.lr)


def loss_fn(model, x, y):
    tag_scores = model(x)  # (batch, seq_len, tagset_size)
    return F.nll_loss(tag_scores.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)


def train_step(model, optimizer, x, y):
    loss = loss_fn(model, x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def predict(model, x):
    return model(x).argmax(dim=-1)  # (batch, seq_len) tag indices
