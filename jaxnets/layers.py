"""The layers a port may import: where Flax's default differs from torch in a way a port must
not inherit, a layer that keeps torch's. Public: the tutorials use them, and so may a user's
own port (docs/GUIDE.md).

``LSTMCell`` and ``RNNCell``: Flax's cells give one of their two matmuls a bias, because
``x W_ih + b_ih + h W_hh + b_hh`` needs only one. A forward pass ported that way is exact
(fold ``b = b_ih + b_hh``), training is not: torch gives each of its two biases the whole
gradient, so their sum moves twice as far per step as Flax's single bias (under SGD and Adam
alike). These subclasses keep torch's second bias; gates, order and carry stay Flax's own.

``Embed``: ``nnx.Embed`` fixes its compute dtype when it is built (float32 unless told), so a
float64 table loaded afterwards is rounded to float32 in every lookup (1e-8 apart in the
lockstep tier). This one looks up in whatever dtype the table holds, as ``nn.Embedding`` does.
``nnx.SimpleCell`` likewise computes in float32 by default; ``RNNCell`` passes ``dtype=None``.

``binary_cross_entropy``: ``torch.nn.BCELoss`` on probabilities, as torch computes it.

``BatchNorm``: ``nnx.BatchNorm`` normalises a batch exactly as torch does, but keeps different
running statistics: its ``momentum`` weighs the old value (torch's weighs the new one: torch
0.1 = Flax 0.9, and Flax's default is 0.99), it updates the running variance with the biased
batch variance where torch uses the unbiased one (n / (n - 1) larger), and it has no
``num_batches_tracked``. Eval-mode outputs drift apart with any of those; this subclass keeps
torch's statistics so that eval-mode predictions agree image for image.

``LSTM``, ``GRU``, ``RNN``: torch's stacked, bidirectional recurrent layers over those cells
(``GRUCell`` keeps torch's ``b_hn`` inside the reset gate).

``dot_product_attention``: ``nnx.MultiHeadAttention``'s ``attention_fn`` computed in the inputs'
dtype. Without dropout Flax's default hands attention to ``jax.nn.dot_product_attention``,
whose softmax runs in float32 even for float64 inputs (1e-8 from torch's float64).

``Conv``, ``ConvTranspose`` (from ``jaxnets._conv``): ``nnx.Conv`` / ``nnx.ConvTranspose``
whose convolutions stay in XLA:CPU's fast form inside a scanned training step (a depthwise
convolution as multiply-adds, with no convolution at all); the same numbers as lax's, which
they hand over to on any other backend.

``hard_sigmoid``: ``jax.nn.hard_sigmoid``, whose gradient is the exact 1/6 inside (-3, 3);
torch's CPU kernel multiplies by ``1.0f / 6.0f``, one sixth rounded to float32, even for float64
tensors (1/6 (1 + 3.0e-8)), so a float64 port through ``jax.nn``'s parts from torch by 3e-8 in
every gradient behind the layer (torchvision's MobileNetV3 squeeze-excitation blocks). This
one takes torch's constant in its gradient; its values, and everything in float32, are
``jax.nn``'s.

``max_pool`` (from ``jaxnets._pool``): ``nnx.max_pool``; windows that tile the input (torch's
``MaxPool2d(k)``) as a reshape and a max, other windows (``MaxPool2d(3, 2, padding=1)``) as
the max of strided slices, several times faster on a CPU than ``reduce_window``'s backward,
with the gradient at ties where torch puts it (the first maximum of each window), which a
plain ``max``'s gradient is not.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.attention import dot_product_attention_weights

from jaxnets._conv import Conv, ConvTranspose, conv_general_dilated, conv_transpose
from jaxnets._pool import max_pool

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "BatchNorm",
    "Conv",
    "ConvTranspose",
    "Embed",
    "GRUCell",
    "HiddenState",
    "LSTMCell",
    "RNNCell",
    "RecurrentStack",
    "binary_cross_entropy",
    "conv_general_dilated",
    "conv_transpose",
    "dot_product_attention",
    "hard_sigmoid",
    "max_pool",
]


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` with ``torch.nn.BatchNorm1d/2d`` running statistics (features last)."""

    def __init__(self, num_features, *, momentum=0.1, eps=1e-5, rngs: nnx.Rngs):
        super().__init__(
            num_features, momentum=1.0 - momentum, epsilon=eps, use_fast_variance=False, rngs=rngs
        )
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), dtype=jnp.int32))

    def __call__(self, x):
        if self.use_running_average:
            return super().__call__(x)
        axes = tuple(range(x.ndim - 1))  # every axis but the features
        n = x.size // x.shape[-1]
        mean = x.mean(axis=axes, keepdims=True)  # (1, ..., 1, features)
        var = x.var(
            axis=axes, keepdims=True
        )  # biased: what the batch is normalised with, in torch too
        keep = self.momentum
        self.mean[...] = jax.lax.stop_gradient(
            keep * self.mean[...] + (1 - keep) * mean.reshape(-1)
        )
        unbiased = var.reshape(-1) * n / (n - 1)
        self.var[...] = jax.lax.stop_gradient(keep * self.var[...] + (1 - keep) * unbiased)
        self.num_batches_tracked[...] += 1
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return y * self.scale[...].reshape(mean.shape) + self.bias[...].reshape(mean.shape)


class Embed(nnx.Embed):
    """``torch.nn.Embedding``: rows of the table, in the table's own dtype."""

    def __init__(self, num_embeddings, features, *, rngs: nnx.Rngs):
        super().__init__(num_embeddings, features, rngs=rngs)
        self.dtype = None  # promote nothing: keep the table's dtype


class LSTMCell(nnx.OptimizedLSTMCell):
    """``torch.nn.LSTM``'s cell: gates i, f, g, o in torch's order, both biases, carry (c, h)."""

    def __init__(self, in_features, hidden_features, *, rngs: nnx.Rngs):
        super().__init__(in_features, hidden_features, rngs=rngs)
        # torch's bias_ih; the inherited dense_h already holds bias_hh
        self.dense_i = nnx.Linear(in_features, 4 * hidden_features, rngs=rngs)

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        # torch's None: zeros, in the weights' dtype (float64 in the lockstep tier)
        zeros = _zeros_state(self, input_shape)
        return zeros, zeros  # (c, h); torch returns (h, c)


class RNNCell(nnx.SimpleCell):
    """``torch.nn.RNN``'s cell (tanh): ``h' = tanh(x W_ih + b_ih + h W_hh + b_hh)``."""

    def __init__(self, in_features, hidden_features, *, rngs: nnx.Rngs):
        # dtype=None: compute in the weights' dtype (SimpleCell's default computes in float32)
        super().__init__(in_features, hidden_features, dtype=None, rngs=rngs)
        # torch's bias_hh; the inherited dense_i already holds bias_ih
        self.dense_h = nnx.Linear(
            hidden_features,
            hidden_features,
            kernel_init=nnx.initializers.orthogonal(),
            rngs=rngs,
        )

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        return _zeros_state(self, input_shape)  # torch's None


def _zeros_state(cell, input_shape):
    """A zero hidden state for inputs of ``input_shape`` (batch..., features)."""
    dtype = cell.dense_h.kernel[...].dtype
    return jnp.zeros((*input_shape[:-1], cell.hidden_features), dtype)


class HiddenState(nnx.Variable):
    """A recurrent state a model carries from one training step to the next (lesson E's
    ``h_state``): neither a parameter nor a torch state-dict entry, so never ported."""


# torch's BCELoss: -(y log p + (1 - y) log1p(-p)), each log term clamped at -100 (a saturated
# p = 0 or 1 costs 100, not inf), and its own backward, (p - y) / max(p (1 - p), eps), which is
# not the derivative of the clamped forward: finite at p = 0 and 1, and 10x smaller than 1 / p
# at p = 1e-13. eps is the C float 1e-12f, in float64 too.
_LOG_FLOOR = -100.0
_GRAD_EPS = float(np.float32(1e-12))


def _clamped(log, x, defined):
    # log(x) floored at -100; the double where keeps the gradient finite where log(x) = -inf
    safe = jnp.where(defined, x, 0.5)
    return jnp.where(defined, jnp.maximum(log(safe), _LOG_FLOOR), _LOG_FLOOR)


@jax.custom_vjp
def _bce(p, y):
    log_p = _clamped(jnp.log, p, p > 0)
    log_1mp = _clamped(lambda q: jnp.log1p(-q), p, p < 1)
    return -(y * log_p + (1 - y) * log_1mp)  # elementwise


def _bce_fwd(p, y):
    return _bce(p, y), (p, y)


def _bce_bwd(residuals, g):
    p, y = residuals
    grad_p = g * (p - y) / jnp.maximum((1 - p) * p, _GRAD_EPS)
    return grad_p, jnp.zeros_like(y)  # targets are labels: torch's BCELoss has no gradient there


_bce.defvjp(_bce_fwd, _bce_bwd)


def binary_cross_entropy(p, y, reduction="mean"):
    """``F.binary_cross_entropy(p, y)``: p in [0, 1] (a sigmoid's output), y the same shape."""
    losses = _bce(p, y)
    return losses.sum() if reduction == "sum" else losses.mean()


class GRUCell(nnx.GRUCell):
    """``torch.nn.GRU``'s cell: gates r, z, n in torch's order and both biases, so that
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` holds torch's ``b_hn`` inside the reset
    gate. ``nnx.GRUCell`` has no bias on its hidden matmul: ``b_hr`` and ``b_hz`` would fold
    into the input biases (and train apart, as the LSTM's), ``b_hn`` cannot go anywhere."""

    def __init__(self, in_features, hidden_features, *, rngs: nnx.Rngs):
        super().__init__(in_features, hidden_features, rngs=rngs)
        # torch's bias_hh (b_hr, b_hz, b_hn); the inherited dense_i already holds bias_ih.
        # nnx.GRUCell's __call__ adds dense_h(h) per gate, and r * hh_n, so b_hn lands inside.
        self.dense_h = nnx.Linear(
            hidden_features,
            3 * hidden_features,
            kernel_init=nnx.initializers.orthogonal(),
            rngs=rngs,
        )

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        return _zeros_state(self, input_shape)  # torch's None, in the weights' dtype


class RecurrentStack(nnx.Module):
    """``torch.nn.LSTM`` / ``GRU`` / ``RNN`` with ``num_layers`` and ``bidirectional``: a stack
    of ``nnx.RNN`` layers over a torch-exact cell, ``layers[k]`` reading forward and, when
    bidirectional, ``reverse[k]`` reading backward; each layer after the first reads the
    concatenated outputs of both directions, as torch's does. Returns what torch returns:
    ``(output, h_n)``, for the LSTM ``(output, (h_n, c_n))``, ``h_n`` of shape
    ``(num_layers * num_directions, batch, hidden_size)``. ``dropout``: as torch's, on the
    outputs of every layer but the last (``dropout_layers[k]``), in training. Subclasses name
    the cell."""

    cell_type = None  # the torch-exact cell of the subclass

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        *,
        batch_first=False,
        bidirectional=False,
        dropout=0.0,
        rngs: nnx.Rngs,
    ):
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.batch_first, self.bidirectional = batch_first, bidirectional
        directions = 2 if bidirectional else 1
        sizes = [input_size] + [directions * hidden_size] * (num_layers - 1)

        def rnn(size, reverse):
            cell = self.cell_type(size, hidden_size, rngs=rngs)
            return nnx.RNN(
                cell,
                time_major=not batch_first,
                return_carry=True,
                reverse=reverse,
                keep_order=True,
            )

        self.layers = nnx.List([rnn(size, False) for size in sizes])
        self.reverse = nnx.List([rnn(size, True) for size in sizes] if bidirectional else [])
        between = [nnx.Dropout(dropout, rngs=rngs) for _ in range(num_layers - 1)]
        self.dropout_layers = nnx.List(between if dropout else [])

    def _carry(self, state, index):
        # torch's (num_layers * directions, batch, H) state -> the cell's carry for one layer
        if state is None:
            return None
        if isinstance(state, tuple):  # LSTM (h_0, c_0) -> Flax's (c, h)
            h, c = state
            return c[index], h[index]
        return state[index]

    def __call__(self, x, state=None):
        directions = 2 if self.bidirectional else 1
        finals = []  # per layer and direction: the final carry
        for k in range(self.num_layers):
            outputs = []
            runs = [self.layers[k]] + ([self.reverse[k]] if self.bidirectional else [])
            for d, rnn in enumerate(runs):
                carry, out = rnn(x, initial_carry=self._carry(state, k * directions + d))
                finals.append(carry)
                outputs.append(out)
            x = jnp.concatenate(outputs, axis=-1)  # (..., directions * hidden_size)
            if self.dropout_layers and k < self.num_layers - 1:
                x = self.dropout_layers[k](x)
        if isinstance(finals[0], tuple):  # LSTM: (c, h) carries -> torch's (h_n, c_n)
            h_n = jnp.stack([h for _, h in finals])
            c_n = jnp.stack([c for c, _ in finals])
            return x, (h_n, c_n)
        return x, jnp.stack(finals)


class LSTM(RecurrentStack):
    """``torch.nn.LSTM(input_size, hidden_size, num_layers, batch_first, bidirectional,
    dropout)``."""

    cell_type = LSTMCell


class GRU(RecurrentStack):
    """``torch.nn.GRU(input_size, hidden_size, num_layers, batch_first, bidirectional,
    dropout)``."""

    cell_type = GRUCell


class RNN(RecurrentStack):
    """``torch.nn.RNN`` (tanh) ``(input_size, hidden_size, num_layers, batch_first,
    bidirectional, dropout)``."""

    cell_type = RNNCell


def dot_product_attention(query, key, value, bias=None, mask=None, **options):
    """``nnx.dot_product_attention`` for ``nnx.MultiHeadAttention(attention_fn=...)``, always
    as probabilities then their weighted sum, in the inputs' dtype (torch's arithmetic);
    dropout as Flax's (``dropout_rng``, ``dropout_rate``, ``broadcast_dropout``)."""
    weights = dot_product_attention_weights(
        query,
        key,
        bias,
        mask,
        broadcast_dropout=options.get("broadcast_dropout", True),
        dropout_rng=options.get("dropout_rng"),
        dropout_rate=options.get("dropout_rate", 0.0),
        deterministic=options.get("deterministic", False),
        dtype=options.get("dtype"),
        precision=options.get("precision"),
        module=options.get("module"),
        is_causal=options.get("is_causal", False),
    )  # (batch, heads, q_length, kv_length)
    return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=options.get("precision"))


# torch's hardsigmoid_backward: grad * (1.0f / 6.0f) inside (-3, 3), the constant a float32
TORCH_HARD_SIGMOID_SLOPE = float(np.float32(1.0) / np.float32(6.0))


@jax.custom_jvp
def hard_sigmoid(x):
    """``relu6(x + 3) / 6`` as ``torch.nn.Hardsigmoid`` computes it, gradient included."""
    return jax.nn.hard_sigmoid(x)


@hard_sigmoid.defjvp
def _hard_sigmoid_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    inside = (x > -3.0) & (x < 3.0)  # torch's open interval: 0 at the corners
    slope = jnp.asarray(TORCH_HARD_SIGMOID_SLOPE, dtype=t.dtype)
    return hard_sigmoid(x), jnp.where(inside, t * slope, jnp.zeros_like(t))
