"""Weight porting: each per-layer rule, exact round trips, and one-line errors for bad files."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from compare import port
from compare.arrays import to_flax_layout
from compare.tutorials import registry
from jaxnets import _train as jax_train
from jaxnets.layers import Embed
from torchref import _train as torch_train

TASKS = sorted(registry.TASKS)


class TwoLinears(nnx.Module):
    def __init__(self, rngs):
        self.first = nnx.Linear(4, 4, rngs=rngs)  # square: a missing transpose would still load
        self.second = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.second(nnx.relu(self.first(x)))


class TorchTwoLinears(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 4)
        self.second = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


def test_linear_weight_is_transposed():
    torch_model = TorchTwoLinears().double()
    jax_model = port.torch_to_nnx(port.torch_state_dict(torch_model), TwoLinears(nnx.Rngs(0)))
    x = np.random.default_rng(0).normal(size=(5, 4))
    want = torch_model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.asarray(jax_model(jnp.asarray(x))), want, rtol=1e-13)
    # The rule matters: the untransposed square weight loads but computes something else.
    untransposed = TwoLinears(nnx.Rngs(0))
    untransposed.first.kernel.set_value(jnp.asarray(torch_model.first.weight.detach().numpy()))
    assert not np.allclose(np.asarray(untransposed(jnp.asarray(x))), want)


def test_conv2d_kernel_layout_and_explicit_padding():
    torch_conv = torch.nn.Conv2d(3, 5, kernel_size=(3, 2)).double()  # torch default padding 0
    sd = port.torch_state_dict(torch_conv)
    jax_conv = nnx.Conv(3, 5, kernel_size=(3, 2), padding="VALID", rngs=nnx.Rngs(0))
    port.torch_to_nnx(sd, jax_conv)
    x = np.random.default_rng(1).normal(size=(2, 3, 7, 6))  # NCHW
    want = torch_conv(torch.from_numpy(x)).detach().numpy()
    got = np.asarray(jax_conv(jnp.asarray(x.transpose(0, 2, 3, 1))))  # NHWC in, NHWC out
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, rtol=1e-12, atol=1e-14)
    # nnx.Conv's default padding is 'SAME', not torch's 0: the output shape gives it away.
    same = nnx.Conv(3, 5, kernel_size=(3, 2), rngs=nnx.Rngs(0))
    assert same(jnp.asarray(x.transpose(0, 2, 3, 1))).shape[1:3] != got.shape[1:3]


def test_conv2d_kernel_goes_back_to_torch_layout():
    """Flax -> torch: a Flax-initialised non-square conv exported to torch computes the same."""
    jax_conv = nnx.Conv(2, 4, kernel_size=(3, 2), padding="VALID", rngs=nnx.Rngs(0))
    torch_conv = port.load_into_torch(
        torch.nn.Conv2d(2, 4, kernel_size=(3, 2)).double(),
        {k: v.astype(np.float64) for k, v in port.nnx_to_torch(jax_conv).items()},
    )
    x = np.random.default_rng(2).normal(size=(2, 2, 6, 5))
    want = np.asarray(jax_conv(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    got = torch_conv(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", TASKS)
def test_flax_initialised_weights_exported_to_torch_compute_the_same(name):
    """The to-torch direction of every rule: start in Flax, not in torch."""
    from compare.tutorials import data

    task = registry.TASKS[name]
    jax_module, torch_module = task.modules()
    jax_model = jax_module.new_model(task.hp, nnx.Rngs(3))
    state = {
        k: v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v
        for k, v in port.nnx_to_torch(jax_model).items()
    }
    port.torch_to_nnx(state, jax_model)  # the same weights, in float64
    torch_model = port.load_into_torch(torch_module.new_model(task.hp).double(), state)
    arrays = data.load(name)
    x, y = arrays["x"][:32], arrays["y"][:32]
    jax_x = to_flax_layout(x)
    jax_args, torch_args = (), ()
    if task.noise:  # generative models: the same noise on both sides
        from compare.tutorials.twins import draw

        rng = np.random.default_rng(0)
        noise = {n.name: draw(n, rng, len(x), task.hp) for n in task.noise}
        jax_args = ({k: jnp.asarray(v) for k, v in noise.items()},)
        torch_args = ({k: torch.from_numpy(v) for k, v in noise.items()},)
    want = float(jax_module.loss_fn(jax_model, jnp.asarray(jax_x), jnp.asarray(y), *jax_args))
    got = torch_module.loss_fn(
        torch_model, torch.from_numpy(x), torch.from_numpy(y), *torch_args
    ).item()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_embedding_rule():
    torch_embed = torch.nn.Embedding(7, 3).double()
    jax_embed = port.torch_to_nnx(port.torch_state_dict(torch_embed), Embed(7, 3, rngs=nnx.Rngs(0)))
    idx = np.array([0, 6, 2, 2])
    np.testing.assert_array_equal(
        np.asarray(jax_embed(jnp.asarray(idx))), torch_embed(torch.from_numpy(idx)).detach().numpy()
    )


def test_sequential_keys_are_bare_indices():
    from jaxnets import regression as jax_regression
    from torchref import regression as torch_regression

    torch_quick = torch_regression.quick_net(1, 10, 1)
    jax_quick = jax_regression.quick_net(1, 10, 1, rngs=nnx.Rngs(0))
    assert (
        set(port.mapping(jax_quick))
        == set(torch_quick.state_dict())
        == {"0.weight", "0.bias", "2.weight", "2.bias"}
    )


def test_raw_parameters_keep_their_names_and_layout():
    from jaxnets import flower_net as jax_flower
    from torchref import flower_net as torch_flower

    torch_raw = torch_flower.TwoNetwork()
    jax_raw = jax_flower.TwoNetwork(rngs=nnx.Rngs(0))
    assert set(port.mapping(jax_raw)) == set(torch_raw.state_dict()) == {"w1", "b1", "w2", "b2"}
    port.torch_to_nnx(port.torch_state_dict(torch_raw), jax_raw)
    np.testing.assert_array_equal(np.asarray(jax_raw.w1.get_value()), torch_raw.w1.detach().numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", TASKS)
def test_round_trip_is_exact(name, dtype):
    task = registry.TASKS[name]
    jax_module, torch_module = task.modules()
    torch.manual_seed(0)
    sd = {
        k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v
        for k, v in port.torch_state_dict(torch_module.new_model(task.hp)).items()
    }
    jax_model = port.torch_to_nnx(sd, jax_module.new_model(task.hp, nnx.Rngs(1)))
    back = port.nnx_to_torch(jax_model)
    assert set(back) == set(sd)
    for key in sd:
        assert back[key].dtype == sd[key].dtype and back[key].shape == sd[key].shape
        np.testing.assert_array_equal(back[key], sd[key])


def regression_state_dict():
    task = registry.TASKS["regression"]
    return port.torch_state_dict(task.modules()[1].new_model(task.hp))


def new_jax_regression():
    task = registry.TASKS["regression"]
    return task.modules()[0].new_model(task.hp, nnx.Rngs(0))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("hidden.bias"), "missing keys \\['hidden.bias'\\]"),
        (
            lambda sd: sd.update({"hidden.extra": np.zeros(1)}),
            "unexpected keys \\['hidden.extra'\\]",
        ),
        (
            lambda sd: sd.update({"predict.weight": np.zeros((2, 10))}),
            "predict.weight has shape \\(2, 10\\)",
        ),
    ],
)
def test_state_dict_that_does_not_fit_is_refused(edit, message):
    sd = regression_state_dict()
    edit(sd)
    with pytest.raises(port.PortError, match=message):
        port.torch_to_nnx(sd, new_jax_regression())
    task = registry.TASKS["regression"]
    with pytest.raises(port.PortError, match=message):
        port.load_into_torch(task.modules()[1].new_model(task.hp), sd)


def test_unreadable_files_get_one_line(tmp_path):
    corrupt = tmp_path / "net.pt"
    corrupt.write_bytes(b"\x00 not a pickle")
    with pytest.raises(port.PortError, match="not a readable state dict") as err:
        port.read_state_dict(corrupt)
    assert "\n" not in str(err.value)
    corrupt_st = tmp_path / "net.safetensors"
    corrupt_st.write_bytes(b"garbage")
    with pytest.raises(port.PortError, match="not a readable state dict"):
        port.read_state_dict(corrupt_st)
    with pytest.raises(port.PortError, match="no such file"):
        port.read_state_dict(tmp_path / "absent.pt")
    whole = tmp_path / "whole.pkl"  # the lesson's torch.save(net1): a pickled module, not weights
    task = registry.TASKS["regression"]
    torch.save(task.modules()[1].new_model(task.hp), whole)
    with pytest.raises(port.PortError, match="not a readable state dict"):
        port.read_state_dict(whole)
    scalars = tmp_path / "scalars.pt"
    torch.save({"lr": 0.1}, scalars)
    with pytest.raises(port.PortError, match="holds no state dict"):
        port.read_state_dict(scalars)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_torch_checkpoint_save_and_restore(tmp_path, suffix):
    task = registry.TASKS["flower-net"]
    torch_module = task.modules()[1]
    model = torch_module.new_model(task.hp)
    torch_train.save_checkpoint(model, tmp_path / f"net{suffix}")
    restored = torch_module.new_model(task.hp)
    torch_train.load_checkpoint(restored, tmp_path / f"net{suffix}")
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)
    assert set(port.read_state_dict(tmp_path / f"net{suffix}")) == set(model.state_dict())


def test_jax_checkpoint_save_and_restore(tmp_path):
    task = registry.TASKS["optimizers"]
    jax_module = task.modules()[0]
    model = jax_module.new_model(task.hp, nnx.Rngs(0))
    jax_train.save_checkpoint(model, tmp_path / "nets.safetensors")
    restored = jax_module.new_model(task.hp, nnx.Rngs(1))
    jax_train.load_checkpoint(restored, tmp_path / "nets.safetensors")
    for key, value in port.nnx_to_torch(model).items():
        np.testing.assert_array_equal(port.nnx_to_torch(restored)[key], value)
    other = registry.TASKS["regression"]
    with pytest.raises(ValueError, match="checkpoint keys differ"):
        jax_train.load_checkpoint(
            other.modules()[0].new_model(other.hp, nnx.Rngs(0)), tmp_path / "nets.safetensors"
        )
