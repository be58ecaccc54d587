"""``port.torch_to_nnx`` / ``port.nnx_to_torch`` on models no tutorial has: each rule ports a
torch model into its NNX twin so that both compute the same, the round trip is bit-exact,
and the near miss of each rule fails; what NNX cannot hold is refused in one line.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from compare import port
from jaxnets import layers

RNG = np.random.default_rng(0)


def ported(torch_model, flax_model):
    torch_model = torch_model.double()
    port.torch_to_nnx(torch_model.state_dict(), flax_model)
    return torch_model, flax_model


def torch_out(model, x):
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out[0] if isinstance(out, tuple) else out).numpy()


def flax_out(model, x):
    out = model(jnp.asarray(x))
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def assert_round_trip(torch_model, flax_model):
    want = port.torch_state_dict(torch_model)
    back = port.nnx_to_torch(flax_model)
    assert set(back) == set(want)
    for key, value in want.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


# --- containers ---------------------------------------------------------------------------


class TorchNested(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            [torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 3))] * 1
            + [torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(3, 3)), torch.nn.Tanh())]
        )
        self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 2), "b": torch.nn.Linear(3, 1)})

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return torch.cat([self.heads["a"](x), self.heads["b"](x)], dim=1)


class FlaxNested(nnx.Module):
    def __init__(self, rngs):
        self.blocks = nnx.List(
            [
                nnx.Sequential(nnx.Linear(3, 3, rngs=rngs), nnx.relu, nnx.Linear(3, 3, rngs=rngs)),
                nnx.Sequential(nnx.Sequential(nnx.Linear(3, 3, rngs=rngs)), nnx.tanh),
            ]
        )
        self.heads = nnx.Dict({"a": nnx.Linear(3, 2, rngs=rngs), "b": nnx.Linear(3, 1, rngs=rngs)})

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return jnp.concatenate([self.heads["a"](x), self.heads["b"](x)], axis=1)


def test_nested_sequential_module_list_and_module_dict_keep_torchs_keys():
    torch.manual_seed(0)
    torch_model, flax_model = ported(TorchNested(), FlaxNested(nnx.Rngs(0)))
    assert (
        set(port.mapping(flax_model))
        == set(torch_model.state_dict())
        >= {
            "blocks.0.0.weight",
            "blocks.0.2.bias",
            "blocks.1.0.0.weight",
            "heads.a.weight",
            "heads.b.bias",
        }
    )
    x = RNG.standard_normal((4, 3))
    np.testing.assert_allclose(flax_out(flax_model, x), torch_out(torch_model, x), rtol=1e-13)
    assert_round_trip(torch_model, flax_model)


# --- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "torch_layer, flax_layer, shape",
    [
        (
            lambda: torch.nn.LayerNorm(6),
            lambda eps: nnx.LayerNorm(6, epsilon=eps, rngs=nnx.Rngs(0)),
            (4, 6),
        ),
        (
            lambda: torch.nn.GroupNorm(3, 6),  # NCHW input; Flax NHWC
            lambda eps: nnx.GroupNorm(6, num_groups=3, epsilon=eps, rngs=nnx.Rngs(0)),
            (2, 6, 3, 3),
        ),
    ],
    ids=["LayerNorm", "GroupNorm"],
)
def test_norm_layers_port_weight_and_bias_and_need_torchs_eps(torch_layer, flax_layer, shape):
    torch.manual_seed(0)
    layer = torch_layer().double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    x = RNG.standard_normal(shape)
    nhwc = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    want = torch_out(layer, x)
    want = want.transpose(0, 2, 3, 1) if want.ndim == 4 else want
    right = port.torch_to_nnx(layer.state_dict(), flax_layer(1e-5))
    np.testing.assert_allclose(flax_out(right, nhwc), want, rtol=1e-12, atol=1e-13)
    assert_round_trip(layer, right)
    # Flax's default epsilon, 1e-6, is another layer
    default = port.torch_to_nnx(layer.state_dict(), flax_layer(1e-6))
    assert np.max(np.abs(flax_out(default, nhwc) - want)) > 1e-7


# --- convolutions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "torch_conv, flax_conv, shape",
    [
        (
            lambda: torch.nn.Conv1d(3, 5, 4, stride=2, padding=1),
            lambda: nnx.Conv(3, 5, (4,), strides=2, padding=1, rngs=nnx.Rngs(0)),
            (2, 3, 11),
        ),
        (  # depthwise: one group per input channel, a multiplier of 2
            lambda: torch.nn.Conv2d(4, 8, (3, 2), groups=4, padding=(1, 0)),
            lambda: nnx.Conv(
                4, 8, (3, 2), feature_group_count=4, padding=((1, 1), (0, 0)), rngs=nnx.Rngs(0)
            ),
            (2, 4, 6, 5),
        ),
        (
            lambda: torch.nn.Conv2d(2, 3, 3, stride=(2, 1), dilation=2),
            lambda: nnx.Conv(
                2, 3, (3, 3), strides=(2, 1), kernel_dilation=2, padding="VALID", rngs=nnx.Rngs(0)
            ),
            (2, 2, 9, 8),
        ),
        (
            lambda: torch.nn.Conv3d(2, 3, (2, 3, 2)),
            lambda: nnx.Conv(2, 3, (2, 3, 2), padding="VALID", rngs=nnx.Rngs(0)),
            (1, 2, 4, 5, 3),
        ),
    ],
    ids=["conv1d-strided", "depthwise", "strided-dilated", "conv3d"],
)
def test_convolutions_of_any_rank_stride_dilation_and_groups(torch_conv, flax_conv, shape):
    torch.manual_seed(0)
    conv, twin = ported(torch_conv(), flax_conv())
    x = RNG.standard_normal(shape)
    want = torch_out(conv, x)
    got = np.moveaxis(flax_out(twin, np.moveaxis(x, 1, -1)), -1, 1)  # channels last in Flax
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    assert_round_trip(conv, twin)
    # the near miss: the kernel's spatial axes reversed (a transpose too few or too many)
    kernel = np.asarray(twin.kernel[...])
    twin.kernel.set_value(jnp.asarray(np.flip(kernel, tuple(range(kernel.ndim - 2)))))
    assert not np.allclose(np.moveaxis(flax_out(twin, np.moveaxis(x, 1, -1)), -1, 1), want)


# --- recurrent layers ---------------------------------------------------------------------


@nnx.jit
def run_rnn(model, x, state=None):
    return model(x, state)


@pytest.mark.parametrize("kind, batch_first", [("LSTM", True), ("GRU", False), ("RNN", True)])
def test_multi_layer_bidirectional_rnns_give_torchs_outputs_and_states(kind, batch_first):
    torch.manual_seed(0)
    options = dict(num_layers=2, bidirectional=True, batch_first=batch_first)
    rnn, twin = ported(
        getattr(torch.nn, kind)(3, 4, **options),
        getattr(layers, kind)(3, 4, **options, rngs=nnx.Rngs(0)),
    )
    assert (
        set(port.mapping(twin))
        == set(rnn.state_dict())
        >= {
            "weight_ih_l1_reverse",
            "bias_hh_l1",
        }
    )
    x = RNG.standard_normal((5, 6, 3))
    with torch.no_grad():
        want_out, want_state = rnn(torch.from_numpy(x))
    got_out, got_state = run_rnn(twin, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got_out), want_out.numpy(), atol=1e-14)
    for got, want in zip(
        got_state if kind == "LSTM" else (got_state,),
        want_state if kind == "LSTM" else (want_state,),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-14)
    assert_round_trip(rnn, twin)
    # an initial state in torch's layout is taken as torch takes it
    h0 = RNG.standard_normal((4, 5 if batch_first else 6, 4))  # (layers * directions, batch, H)
    state = (h0, h0 + 1) if kind == "LSTM" else h0
    with torch.no_grad():
        torch_state = (
            tuple(map(torch.from_numpy, state)) if kind == "LSTM" else torch.from_numpy(state)
        )
        want_out, _ = rnn(torch.from_numpy(x), torch_state)
    jax_state = tuple(map(jnp.asarray, state)) if kind == "LSTM" else jnp.asarray(state)
    np.testing.assert_allclose(
        np.asarray(twin(jnp.asarray(x), jax_state)[0]), want_out.numpy(), atol=1e-14
    )
    # the near miss: the two directions' weights swapped
    swapped = getattr(layers, kind)(3, 4, **options, rngs=nnx.Rngs(0))
    state_dict = port.torch_state_dict(rnn)
    swapped_dict = {
        k: state_dict[k.replace("_reverse", "") if "_reverse" in k else k + "_reverse"]
        if k.startswith(("weight", "bias")) and "_l0" in k
        else v
        for k, v in state_dict.items()
    }
    port.torch_to_nnx(swapped_dict, swapped)
    assert not np.allclose(np.asarray(run_rnn(swapped, jnp.asarray(x))[0]), got_out)


def test_gru_b_hn_sits_inside_the_reset_gate():
    """jaxnets' GRUCell holds all of torch's biases; b_hn moved into the input bias (the most
    nnx.GRUCell could hold) computes another GRU; nnx.GRUCell itself is refused, by name."""
    torch.manual_seed(0)
    rnn, twin = ported(
        torch.nn.GRU(3, 4, batch_first=True), layers.GRU(3, 4, batch_first=True, rngs=nnx.Rngs(0))
    )
    x = RNG.standard_normal((2, 5, 3))
    want = torch_out(rnn, x)
    np.testing.assert_allclose(flax_out(twin, x), want, atol=1e-14)
    cell = twin.layers[0].cell
    b_ih, b_hh = np.asarray(cell.dense_i.bias[...]), np.asarray(cell.dense_h.bias[...])
    cell.dense_i.bias.set_value(jnp.asarray(b_ih + b_hh))  # every hidden bias moved out
    cell.dense_h.bias.set_value(jnp.zeros_like(b_hh))
    assert np.max(np.abs(flax_out(twin, x) - want)) > 1e-3

    class StockGRU(nnx.Module):
        def __init__(self):
            self.rnn = nnx.RNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(0)))

    class TorchGRU(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4)

    with pytest.raises(
        port.PortError, match="^rnn: nnx.GRUCell cannot hold torch's GRU bias_hh_l0"
    ) as err:
        port.torch_to_nnx(TorchGRU().state_dict(), StockGRU())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "flax_layer, message",
    [
        (lambda: nnx.RNN(nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0))), "nnx.LSTMCell splits the gates"),
        (
            lambda: nnx.RNN(nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0))),
            "OptimizedLSTMCell holds one bias where torch has bias_ih_l0 and bias_hh_l0",
        ),
        (
            lambda: nnx.ConvTranspose(3, 3, (2, 2), rngs=nnx.Rngs(0)),
            "only with transpose_kernel=True",
        ),
        (
            lambda: nnx.MultiHeadAttention(2, 4, normalize_qk=True, rngs=nnx.Rngs(0)),
            "normalize_qk=True",
        ),
    ],
    ids=["LSTMCell", "OptimizedLSTMCell", "ConvTranspose", "attention-normalize-qk"],
)
def test_what_nnx_cannot_hold_is_one_line_naming_the_layer(flax_layer, message):
    class Holder(nnx.Module):
        def __init__(self):
            self.layer = flax_layer()

    with pytest.raises(port.PortError, match=message) as err:
        port.torch_to_nnx({}, Holder())
    assert str(err.value).startswith("layer: ") and "\n" not in str(err.value)


def test_fold_biases_ports_a_forward_pass_onto_flaxs_own_lstm_cell():
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(3, 4, batch_first=True).double()

    class Stock(nnx.Module):
        def __init__(self):
            self.rnn = nnx.RNN(nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0)))

    class TorchHolder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

    stock = port.torch_to_nnx(TorchHolder().state_dict(), Stock(), fold_biases=True)
    x = RNG.standard_normal((2, 5, 3))
    carry = (jnp.zeros((2, 4)), jnp.zeros((2, 4)))
    np.testing.assert_allclose(
        np.asarray(stock.rnn(jnp.asarray(x), initial_carry=carry)), torch_out(rnn, x), atol=1e-14
    )
    back = port.nnx_to_torch(stock)  # (the sum, zeros): the same forward pass in torch
    np.testing.assert_array_equal(back["rnn.bias_hh_l0"], 0)
    state = port.torch_state_dict(TorchHolder())
    np.testing.assert_allclose(
        back["rnn.bias_ih_l0"], state["rnn.bias_ih_l0"] + state["rnn.bias_hh_l0"], rtol=1e-15
    )


# --- shared weights -----------------------------------------------------------------------


class TorchTiedLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight  # one Parameter, two names

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class FlaxTiedLinear(nnx.Module):
    def __init__(self, tied=True, *, rngs):
        self.a = nnx.Linear(4, 4, rngs=rngs)
        self.b = nnx.Linear(4, 4, rngs=rngs)
        if tied:
            self.b.kernel = self.a.kernel  # one Param, two modules

    def __call__(self, x):
        return self.b(jnp.tanh(self.a(x)))


class TorchTiedEmbedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(7, 4)
        self.decoder = torch.nn.Linear(4, 7)
        self.decoder.weight = self.embed.weight  # (7, 4): the output layer reuses the table

    def forward(self, x):
        return self.decoder(torch.tanh(self.embed(x)))


class Bias(nnx.Module):
    def __init__(self, n):
        self.bias = nnx.Param(jnp.zeros((n,)))


class FlaxTiedEmbedding(nnx.Module):
    def __init__(self, *, rngs):
        self.embed = layers.Embed(7, 4, rngs=rngs)
        self.decoder = Bias(7)  # the weight is the table: Embed.attend

    def __call__(self, x):
        return self.embed.attend(jnp.tanh(self.embed(x))) + self.decoder.bias[None, None]


def test_shared_weights_port_and_train_as_one():
    from compare import check

    torch.manual_seed(0)
    tied_torch = TorchTiedLinear()
    tied = FlaxTiedLinear(rngs=nnx.Rngs(0))
    assert set(port.mapping(tied)) == set(tied_torch.state_dict())  # a.weight and b.weight
    batches = [(RNG.standard_normal((6, 4)), RNG.standard_normal((6, 4))) for _ in range(2)]

    def losses(model, x, y):
        return ((model(x) - y) ** 2).mean()

    def run(torch_model, flax_model):
        optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
        return check(
            torch_model,
            flax_model,
            batches=batches,
            torch_loss=losses,
            flax_loss=losses,
            torch_optimizer=optimizer,
        )

    assert run(tied_torch, tied).passed
    torch.manual_seed(0)
    untied = run(TorchTiedLinear(), FlaxTiedLinear(tied=False, rngs=nnx.Rngs(0)))
    # torch's one Parameter takes both layers' gradients: two Flax kernels do not
    assert not untied.passed and untied.first_divergence["step"] == 0
    assert untied.first_divergence["tensor"] == "a.weight.grad"

    torch.manual_seed(0)
    torch_model = TorchTiedEmbedding().double()
    twin = port.torch_to_nnx(torch_model.state_dict(), FlaxTiedEmbedding(rngs=nnx.Rngs(0)))
    words = np.array([[0, 3, 6], [2, 2, 5]])
    np.testing.assert_allclose(flax_out(twin, words), torch_out(torch_model, words), rtol=1e-13)
    # a copy is not the same tensor: an unexpected key, as for any other stray weight
    with pytest.raises(port.PortError, match="unexpected keys \\['decoder.weight'\\]"):
        port.torch_to_nnx(port.torch_state_dict(torch_model), FlaxTiedEmbedding(rngs=nnx.Rngs(0)))


# --- attention: torch packs query, key and value; Flax keeps them apart --------------------


def attention_pair(kdim=None, bias=True, batch_first=True):
    torch.manual_seed(0)
    torch_layer = torch.nn.MultiheadAttention(
        8, 2, bias=bias, kdim=kdim, vdim=kdim, batch_first=batch_first
    ).double()
    flax_layer = nnx.MultiHeadAttention(
        num_heads=2,
        in_features=8,
        in_kv_features=kdim,
        use_bias=bias,
        decode=False,
        attention_fn=layers.dot_product_attention,
        rngs=nnx.Rngs(0),
    )
    return torch_layer, port.torch_to_nnx(torch_layer.state_dict(), flax_layer, dtype=np.float64)


@pytest.mark.parametrize(
    "kdim, bias", [(None, True), (6, True), (None, False)], ids=["packed", "kdim", "no-bias"]
)
def test_multihead_attention_ports_onto_nnx_and_back_exactly(kdim, bias):
    torch_layer, flax_layer = attention_pair(kdim, bias)
    rng = np.random.default_rng(0)
    x, kv = rng.standard_normal((3, 5, 8)), rng.standard_normal((3, 4, kdim or 8))
    want = torch_layer(*map(torch.from_numpy, (x, kv, kv)))[0].detach().numpy()
    got = np.asarray(flax_layer(jnp.asarray(x), jnp.asarray(kv), jnp.asarray(kv)))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    back = port.nnx_to_torch(flax_layer)
    state = port.torch_state_dict(torch_layer)
    assert sorted(back) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(back[key], state[key])


def test_attention_heads_in_the_wrong_order_fail():
    """The near miss of the rule: the packed rows read as (head_dim, heads) instead of
    (heads, head_dim) compute another attention."""
    torch_layer, flax_layer = attention_pair()
    kernel = flax_layer.query.kernel
    wrong = np.asarray(kernel[...]).reshape(8, 4, 2).transpose(0, 2, 1)  # rows swapped
    kernel.set_value(jnp.asarray(wrong))
    x = np.random.default_rng(0).standard_normal((3, 5, 8))
    want = torch_layer(*[torch.from_numpy(x)] * 3)[0].detach().numpy()
    got = np.asarray(flax_layer(jnp.asarray(x)))
    assert np.max(np.abs(got - want)) > 1e-3


def test_flaxs_default_attention_runs_its_softmax_in_float32():
    """The reason for jaxnets.layers.dot_product_attention: without dropout, Flax's default
    attention_fn is jax.nn.dot_product_attention, which computes float64 in float32 there."""
    torch_layer, exact = attention_pair()
    default = nnx.MultiHeadAttention(num_heads=2, in_features=8, decode=False, rngs=nnx.Rngs(0))
    port.torch_to_nnx(torch_layer.state_dict(), default, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((3, 5, 8))
    want = torch_layer(*[torch.from_numpy(x)] * 3)[0].detach().numpy()
    assert np.max(np.abs(np.asarray(exact(jnp.asarray(x))) - want)) < 1e-14
    assert np.max(np.abs(np.asarray(default(jnp.asarray(x))) - want)) > 1e-10


def test_a_packed_tensor_of_the_wrong_size_is_one_line():
    torch_layer, flax_layer = attention_pair()
    state = port.torch_state_dict(torch_layer)
    state["in_proj_weight"] = state["in_proj_weight"][:16]
    with pytest.raises(
        port.PortError, match="in_proj_weight has shape \\(16, 8\\), the model expects \\(24, 8\\)"
    ):
        port.torch_to_nnx(state, flax_layer)
