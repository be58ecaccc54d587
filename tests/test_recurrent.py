"""Lesson E's recurrent nets: the porting rules for LSTM, RNN and Embedding, each shown to fail
when it is wrong, the carried hidden state, the padded sentences, and the shipped series."""

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from compare import port
from compare.tutorials import data, parity, registry
from compare.tutorials.twins import make_twins, schedule, train_jax, train_torch
from jaxnets import layers
from jaxnets import pos_tagger as jax_tagger
from torchref import pos_tagger as torch_tagger
from torchref import rnn_sincos as torch_sincos

RNG = np.random.default_rng(0)


class TorchNet(torch.nn.Module):
    """A torch recurrent layer and a Linear, as the lessons build them."""

    def __init__(self, layer):
        super().__init__()
        self.rnn = layer
        self.out = torch.nn.Linear(layer.hidden_size, 2)


class FlaxNet(nnx.Module):
    def __init__(self, cell, hidden, **rnn_options):
        self.rnn = nnx.RNN(cell, **rnn_options)
        self.out = nnx.Linear(hidden, 2, rngs=nnx.Rngs(0))


def twin_lstm(cell_class=layers.LSTMCell, **rnn_options):
    torch.manual_seed(0)
    torch_net = TorchNet(torch.nn.LSTM(3, 4, batch_first=True)).double()
    flax_net = FlaxNet(cell_class(3, 4, rngs=nnx.Rngs(0)), 4, return_carry=True, **rnn_options)
    return torch_net, flax_net


def test_lstm_port_gives_torchs_outputs_and_carry_in_flax_order():
    torch_net, flax_net = twin_lstm()
    port.torch_to_nnx(port.torch_state_dict(torch_net), flax_net)
    x = RNG.standard_normal((2, 6, 3))
    out, (h_n, c_n) = torch_net.rnn(torch.from_numpy(x))
    (c, h), flax_out = flax_net.rnn(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(flax_out), out.detach().numpy(), rtol=0, atol=1e-15)
    # torch returns (h, c) with a layer axis; Flax's carry is (c, h) without one
    np.testing.assert_allclose(np.asarray(c), c_n[0].detach().numpy(), atol=1e-15)
    np.testing.assert_allclose(np.asarray(h), h_n[0].detach().numpy(), atol=1e-15)
    assert np.abs(np.asarray(c) - np.asarray(h)).max() > 0.1  # so the order is really tested


@pytest.mark.parametrize(
    "wrong_gates",
    [[1, 0, 2, 3], [0, 2, 1, 3], [0, 1, 3, 2]],  # f,i,g,o / i,g,f,o / i,f,o,g
)
def test_lstm_gate_order_is_torchs(wrong_gates):
    torch_net, flax_net = twin_lstm()
    state = port.torch_state_dict(torch_net)
    for key in ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0"):
        state[key] = np.concatenate([np.split(state[key], 4)[g] for g in wrong_gates])
    port.torch_to_nnx(state, flax_net)
    x = RNG.standard_normal((2, 6, 3))
    out, _ = torch_net.rnn(torch.from_numpy(x))
    _, flax_out = flax_net.rnn(jnp.asarray(x))
    assert np.abs(np.asarray(flax_out) - out.detach().numpy()).max() > 1e-3


def sgd_losses(net, step, steps=20):
    return np.array([float(step(net)) for _ in range(steps)])


def test_folding_torchs_two_lstm_biases_into_one_trains_differently():
    """Flax's own cell has one bias: b_ih + b_hh ports its forward pass exactly, but torch
    moves each of its two biases by the whole gradient, the folded one moves half as far."""
    torch_net, _ = twin_lstm()
    stock = nnx.RNN(nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0)))
    with pytest.raises(port.PortError, match="bias_ih_l0"):  # the missing bias is named
        port.torch_to_nnx(port.torch_state_dict(torch_net), FlaxNet(stock.cell, 4))
    state = port.torch_state_dict(torch_net)
    cell = stock.cell
    cell.dense_i.kernel.set_value(jnp.asarray(state["rnn.weight_ih_l0"].T))
    cell.dense_h.kernel.set_value(jnp.asarray(state["rnn.weight_hh_l0"].T))
    cell.dense_h.bias.set_value(jnp.asarray(state["rnn.bias_ih_l0"] + state["rnn.bias_hh_l0"]))
    ours = nnx.RNN(layers.LSTMCell(3, 4, rngs=nnx.Rngs(0)))
    port.torch_to_nnx(state, FlaxNet(ours.cell, 4))
    x, y = RNG.standard_normal((5, 6, 3)), RNG.standard_normal((5, 6, 4))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    zeros = (jnp.zeros((5, 4)), jnp.zeros((5, 4)))  # the stock cell's own would be float32

    def forward(rnn):
        return rnn(jnp.asarray(x), initial_carry=zeros)

    np.testing.assert_allclose(np.asarray(forward(stock)), np.asarray(forward(ours)), atol=1e-15)

    torch_opt = torch.optim.SGD(torch_net.rnn.parameters(), lr=0.5)

    def torch_step(rnn):
        loss = F.mse_loss(rnn(tx)[0], ty)
        torch_opt.zero_grad()
        loss.backward()
        torch_opt.step()
        return loss.detach()

    @nnx.jit  # one compile per cell: 20 eager steps of a scanned RNN took most of a minute
    def jitted_step(rnn, optimizer):
        loss, grads = nnx.value_and_grad(lambda r: jnp.mean((forward(r) - y) ** 2))(rnn)
        optimizer.update(rnn, grads)
        return loss

    def flax_step(rnn):
        return jitted_step(rnn, flax_optimizers[id(rnn)])

    flax_optimizers = {
        id(rnn): nnx.Optimizer(rnn, optax.sgd(0.5), wrt=nnx.Param) for rnn in (stock, ours)
    }
    torch_losses = sgd_losses(torch_net.rnn, torch_step)
    np.testing.assert_allclose(sgd_losses(ours, flax_step), torch_losses, rtol=1e-12)
    assert np.max(np.abs(sgd_losses(stock, flax_step) / torch_losses - 1)) > 1e-4


def test_rnn_cell_is_torchs_tanh_rnn_with_two_biases_in_float64():
    torch.manual_seed(0)
    torch_net = TorchNet(torch.nn.RNN(3, 4, batch_first=True)).double()
    state = port.torch_state_dict(torch_net)
    ours = FlaxNet(layers.RNNCell(3, 4, rngs=nnx.Rngs(0)), 4)
    port.torch_to_nnx(state, ours)
    assert {"rnn.bias_ih_l0", "rnn.bias_hh_l0"} <= set(port.nnx_to_torch(ours))
    x = RNG.standard_normal((2, 6, 3))
    out, _ = torch_net.rnn(torch.from_numpy(x))
    np.testing.assert_allclose(np.asarray(ours.rnn(jnp.asarray(x))), out.detach(), atol=1e-15)
    # nnx.SimpleCell computes in float32 unless told: 1e-8 off in the float64 tier
    stock = nnx.SimpleCell(3, 4, rngs=nnx.Rngs(0))
    stock.dense_i.kernel.set_value(jnp.asarray(state["rnn.weight_ih_l0"].T))
    stock.dense_i.bias.set_value(jnp.asarray(state["rnn.bias_ih_l0"] + state["rnn.bias_hh_l0"]))
    stock.dense_h.kernel.set_value(jnp.asarray(state["rnn.weight_hh_l0"].T))
    stock_out = np.asarray(nnx.RNN(stock)(jnp.asarray(x)))
    assert 1e-10 < np.abs(stock_out - out.detach().numpy()).max() < 1e-5


def test_embedding_looks_up_in_the_tables_dtype():
    table = RNG.standard_normal((9, 10))
    words = jnp.array([[0, 1, 2, 3, 4]])
    ours, stock = (
        cls(9, 10, rngs=nnx.Rngs(0)) for cls in (layers.Embed, nnx.Embed)
    )  # both built float32, then given a float64 table as the port does
    for embed in (ours, stock):
        embed.embedding.set_value(jnp.asarray(table))
    np.testing.assert_array_equal(np.asarray(ours(words)), table[np.asarray(words)])
    assert ours(words).dtype == jnp.float64
    assert stock(words).dtype == jnp.float32  # what the rule guards against


def test_time_major_must_match_the_layout():
    """pos-tagger reads time-major, as torch's LSTM does by default: the same sentence
    batch-major into a time-major nnx.RNN is a different computation."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4).double()  # (seq_len, batch, features)
    net = FlaxNet(layers.LSTMCell(3, 4, rngs=nnx.Rngs(0)), 4, time_major=True)
    port.torch_to_nnx(port.torch_state_dict(TorchNet(lstm)), net)
    x = RNG.standard_normal((6, 2, 3))  # 6 steps, batch 2
    out, _ = lstm(torch.from_numpy(x))
    np.testing.assert_allclose(np.asarray(net.rnn(jnp.asarray(x))), out.detach(), atol=1e-15)
    batch_major = np.asarray(net.rnn(jnp.asarray(x.transpose(1, 0, 2)))).transpose(1, 0, 2)
    assert np.abs(batch_major - out.detach().numpy()).max() > 1e-3


@pytest.mark.parametrize("name", ["mnist-lstm", "pos-tagger", "lstm-forecast", "rnn-sincos"])
def test_the_recurrence_is_one_scan_not_a_python_loop(name):
    task = registry.TASKS[name]
    twins = make_twins(task, dtype="float64")
    x = twins.jax_arrays["x"][:2]
    graphdef, state = nnx.split(twins.jax_model)

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    jaxpr = str(jax.make_jaxpr(forward)(state, x))
    assert jaxpr.count("scan[") == 1


def test_unrolled_scan_is_the_same_computation():
    hp = registry.TASKS["mnist-lstm"].hp
    base = parity.lockstep("mnist-lstm", dtype="float64", steps=5)
    unrolled = parity.lockstep("mnist-lstm", dtype="float64", steps=5, hp=hp.__class__(unroll=7))
    assert base["passed"] and unrolled["passed"]
    np.testing.assert_allclose(unrolled["final_loss"]["jax"], base["final_loss"]["jax"], rtol=1e-13)


def test_the_hidden_state_is_carried_from_step_to_step(monkeypatch):
    task = registry.TASKS["rnn-sincos"]
    twins = make_twins(task, dtype="float64")
    order = schedule(twins, 1)[:1]
    order = [order[0][:3]]
    train_torch(twins, order)
    train_jax(twins, order)
    torch_h = twins.torch_model.h_state.numpy()[0]  # (layers, batch, hidden) -> (batch, hidden)
    np.testing.assert_allclose(np.asarray(twins.jax_model.h_state[...]), torch_h, atol=1e-14)
    assert np.abs(torch_h).max() > 0.1

    # a torch step that starts every window from zeros is caught by the lockstep
    def forgetful_step(model, optimizer, x, y):
        model.h_state = None
        return original(model, optimizer, x, y)

    original = torch_sincos.train_step
    monkeypatch.setattr(torch_sincos, "train_step", forgetful_step)
    result = parity.lockstep("rnn-sincos", dtype="float64", steps=10)
    assert not result["passed"] and result["loss_max_rel_diff"] > 1e-3


def test_padded_sentences_score_as_the_lesson_scores_each_sentence():
    twins = make_twins(registry.TASKS["pos-tagger"], dtype="float64")
    x, y = twins.arrays["x"], twins.arrays["y"]
    assert (y == data.IGNORE_INDEX).sum() == 1  # the four-word sentence's padding
    for i, (words, _) in enumerate(data.TRAINING_SENTENCES):
        n = len(words)
        # the lesson: one unpadded sentence, a 1-D index tensor, time-major (n, 1, features)
        model = twins.torch_model
        embeds = model.word_embeddings(torch.from_numpy(x[i, :n]))
        lstm_out, _ = model.lstm(embeds.view(n, 1, -1))
        scores = F.log_softmax(model.hidden2tag(lstm_out.view(n, -1)), dim=1)
        lesson = F.nll_loss(scores, torch.from_numpy(y[i, :n])).item()
        padded = torch_tagger.loss_fn(
            model, torch.from_numpy(x[i : i + 1]), torch.from_numpy(y[i : i + 1])
        )
        jax_loss = jax_tagger.loss_fn(
            twins.jax_model, jnp.asarray(x[i : i + 1]), jnp.asarray(y[i : i + 1])
        )
        np.testing.assert_allclose([padded.item(), float(jax_loss)], lesson, rtol=1e-14)


def test_pos_tagger_run_tags_the_sentences_as_the_lesson(cli, tmp_path):
    code, out, _ = cli("run", "pos-tagger", "--json", "--no-progress", "--out", tmp_path / "p")
    assert code == 0
    tags = json.loads(out)["tags"]
    for side in ("torch", "jax"):
        assert tags[side]["The cat ate the fish"] == ["DET", "NN", "V", "DET", "NN"]
        assert tags[side]["They read that book"] == ["NN", "V", "DET", "NN"]
        assert tags[side]["They ate the fish"] == ["NN", "V", "DET", "NN"]
    assert (tmp_path / "p" / "tagged_sentences.png").is_file()


def test_shipped_co2_series_and_its_windows():
    csv = data.SHIPPED_CO2
    assert hashlib.md5(csv.read_bytes()).hexdigest() == "5abd47e6d4435255e0b3ab2c333502ba"
    series = data.co2_series()
    assert len(series) == 2284 and np.all(np.isfinite(series))
    assert 310 < series.min() and series.max() < 380  # ppmv, 1958-2001
    arrays = data.load("lstm-forecast")
    x = np.concatenate([arrays["x"], arrays["x_test"]])
    y = np.concatenate([arrays["y"], arrays["y_test"]])
    assert x.shape == (2284 - 30, 30, 1) and y.shape == (2284 - 30, 1)
    np.testing.assert_array_equal(x[1:, -1, 0], y[:-1, 0])  # each target is the next input
    assert len(arrays["x_test"]) == round(0.2 * len(x))
    normalised = (series - series.mean()) / series.std()
    np.testing.assert_allclose(y[:, 0], normalised[30:])
