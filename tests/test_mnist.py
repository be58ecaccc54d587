"""The MNIST family: shipped data, IDX reading, and the porting rules lesson D needs."""

import gzip
import hashlib
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from compare import CompareError, port
from compare.arrays import nhwc
from compare.tutorials import data, parity, registry
from jaxnets.layers import BatchNorm

MNIST_TASKS = ["mnist-mlp", "mnist-mlp-bn", "mnist-cnn", "mnist-resnet"]
MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "train5k-images-idx3-ubyte.gz": "6057ca5a67cd8660e9946050476aec42",
    "train5k-labels-idx1-ubyte.gz": "f4e4f8640ad2a3b028472f5598c37e79",
}


def test_shipped_files_are_the_documented_ones():
    for name, md5 in MD5.items():
        assert hashlib.md5((data.SHIPPED_MNIST / name).read_bytes()).hexdigest() == md5


def test_shipped_set_loads_normalised_nchw():
    arrays = data.load("mnist-cnn")
    assert arrays["x"].shape == (5000, 1, 28, 28) and arrays["x_test"].shape == (10000, 1, 28, 28)
    assert np.bincount(arrays["y"]).tolist() == [500] * 10
    raw = data.read_idx(data.SHIPPED_MNIST / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_allclose(arrays["x_test"][:, 0], (raw / 255 - 0.1307) / 0.3081)
    flat = data.load("mnist-mlp-bn")  # Normalize(0.5, 0.5), flattened as the lesson's loop does
    assert flat["x"].shape == (5000, 784) and flat["x"].min() == -1.0 and flat["x"].max() == 1.0


def full_set(tmp_path, compress=True, skip=()):
    """A directory laid out like the full MNIST (built from the shipped files)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    names = {
        "train-images-idx3-ubyte": "train5k-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte": "train5k-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte": "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte": "t10k-labels-idx1-ubyte.gz",
    }
    for name, shipped in names.items():
        if name in skip:
            continue
        if compress:
            shutil.copy(data.SHIPPED_MNIST / shipped, tmp_path / f"{name}.gz")
        else:
            (tmp_path / name).write_bytes(
                gzip.decompress((data.SHIPPED_MNIST / shipped).read_bytes())
            )
    return tmp_path


@pytest.mark.parametrize("compress", [True, False])
def test_data_dir_reads_the_four_standard_files_gz_or_not(tmp_path, compress):
    arrays = data.load("mnist-cnn", data_dir=full_set(tmp_path, compress))
    shipped = data.load("mnist-cnn")
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(arrays[key], shipped[key])
    assert data.dataset_label("mnist-cnn", tmp_path) == "mnist"
    assert data.dataset_label("mnist-cnn") == "mnist-5k"


def test_missing_files_are_named(tmp_path, cli):
    full_set(tmp_path, skip=("t10k-labels-idx1-ubyte",))
    code, out, err = cli("run", "mnist-cnn", "--data-dir", tmp_path, "--no-progress")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "missing t10k-labels-idx1-ubyte[.gz]" in err and "train-images" not in err


def test_broken_mnist_files_get_one_line(tmp_path):
    gz = (data.SHIPPED_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "truncated.gz").write_bytes(gz[: len(gz) // 2])
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")
    (tmp_path / "header").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    for name, fragment in (
        ("truncated.gz", "cannot be read"),
        ("plain.gz", "cannot be read"),
        ("header", "header is cut short"),
    ):
        with pytest.raises(CompareError, match=fragment):
            data.read_idx(tmp_path / name)
    swapped = full_set(tmp_path / "swapped", skip=("train-images-idx3-ubyte",))
    shutil.copy(
        data.SHIPPED_MNIST / "train5k-labels-idx1-ubyte.gz", swapped / "train-images-idx3-ubyte.gz"
    )
    with pytest.raises(CompareError, match="not 28x28 images"):
        data.load("mnist-cnn", data_dir=swapped)
    with pytest.raises(CompareError, match="not a directory"):
        data.load("mnist-cnn", data_dir=tmp_path / "plain.gz")


def test_a_batch_of_one_is_refused_for_batchnorm(cli):
    code, out, err = cli("run", "mnist-mlp-bn", "--set", "batch_size=4999", "--no-progress")
    assert code == 2 and "batch of one sample" in err and len(err.strip().splitlines()) == 1


def test_a_file_that_is_not_idx_is_refused(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x09\x01")
    with pytest.raises(CompareError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")
    with pytest.raises(CompareError, match="its header says"):
        data.read_idx(tmp_path / "short")


def test_max_pooling_rule():
    x = np.random.default_rng(0).normal(size=(2, 3, 9, 8))  # NCHW, odd height: floor like torch
    want = F.max_pool2d(torch.from_numpy(x), 2).numpy()
    got = nnx.max_pool(jnp.asarray(nhwc(x)), window_shape=(2, 2), strides=(2, 2))
    np.testing.assert_array_equal(np.asarray(got).transpose(0, 3, 1, 2), want)


def test_flatten_order_before_a_linear():
    """torch flattens NCHW channel-major; NHWC flattened as is would scramble fc's inputs."""
    from jaxnets import mnist_cnn as jax_cnn
    from torchref import mnist_cnn as torch_cnn

    torch.manual_seed(0)
    torch_model = torch_cnn.Model().double()
    jax_model = port.torch_to_nnx(
        port.torch_state_dict(torch_model), jax_cnn.Model(rngs=nnx.Rngs(0))
    )
    x = data.load("mnist-cnn")["x_test"][:16]
    with torch.no_grad():
        want = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(jax_model(jnp.asarray(nhwc(x)))), want, rtol=1e-12)
    features = np.asarray(
        jax_model.pooling(
            nnx.relu(
                jax_model.conv2(jax_model.pooling(nnx.relu(jax_model.conv1(jnp.asarray(nhwc(x))))))
            )
        )
    )
    naive = np.asarray(jax_model.fc(jnp.asarray(features.reshape(16, -1))))  # HWC order
    assert not np.allclose(naive, want, atol=1e-3)


@pytest.mark.parametrize("shape", [(64, 6), (8, 5, 5, 6)])  # BatchNorm1d and 2d (NHWC)
def test_batchnorm_keeps_torchs_running_statistics(shape):
    rng = np.random.default_rng(0)
    torch_bn = (torch.nn.BatchNorm1d(6) if len(shape) == 2 else torch.nn.BatchNorm2d(6)).double()
    with torch.no_grad():
        torch_bn.weight.uniform_(0.5, 1.5)
        torch_bn.bias.uniform_(-0.5, 0.5)
    ours = port.torch_to_nnx(port.torch_state_dict(torch_bn), BatchNorm(6, rngs=nnx.Rngs(0)))
    flax_default = port.torch_to_nnx(
        {k: v for k, v in port.torch_state_dict(torch_bn).items() if k != "num_batches_tracked"},
        nnx.BatchNorm(6, rngs=nnx.Rngs(0)),
    )
    flax_momentum = port.torch_to_nnx(
        {k: v for k, v in port.torch_state_dict(torch_bn).items() if k != "num_batches_tracked"},
        nnx.BatchNorm(6, momentum=0.9, rngs=nnx.Rngs(0)),
    )

    def to_torch_layout(a):
        return a if a.ndim == 2 else a.transpose(0, 3, 1, 2)

    for _ in range(3):  # train mode: the same outputs, and running statistics
        x = rng.normal(2.0, 3.0, size=shape)
        want = torch_bn(torch.from_numpy(to_torch_layout(x))).detach().numpy()
        for bn in (ours, flax_default, flax_momentum):
            np.testing.assert_allclose(
                to_torch_layout(np.asarray(bn(jnp.asarray(x)))), want, rtol=1e-10, atol=1e-12
            )
    state = port.torch_state_dict(torch_bn)
    mine = port.nnx_to_torch(ours)
    assert set(mine) == set(state) and mine["num_batches_tracked"] == 3
    for key in state:
        np.testing.assert_allclose(mine[key], state[key], rtol=1e-12)
    # Flax's default momentum (0.99) and its biased running variance are both caught here.
    assert not np.allclose(port.nnx_to_torch(flax_default)["running_mean"], state["running_mean"])
    momentum_only = port.nnx_to_torch(flax_momentum)
    np.testing.assert_allclose(momentum_only["running_mean"], state["running_mean"], rtol=1e-12)
    assert not np.allclose(momentum_only["running_var"], state["running_var"], rtol=1e-6)

    torch_bn.eval()
    ours.eval()
    x = rng.normal(size=shape)
    want = torch_bn(torch.from_numpy(to_torch_layout(x))).detach().numpy()
    np.testing.assert_allclose(to_torch_layout(np.asarray(ours(jnp.asarray(x)))), want, rtol=1e-10)


def test_stepped_learning_rate_equals_the_lessons_param_groups_step_by_step():
    """jaxnets' optax schedule against the lesson's own per-epoch code, value for value."""
    import dataclasses

    from jaxnets import mnist_mlp_bn as jax_bn
    from torchref import mnist_mlp_bn as torch_bn

    hp = dataclasses.replace(registry.TASKS["mnist-mlp-bn"].hp, steps_per_epoch=3)
    torch_opt = torch_bn.new_optimizer(torch_bn.new_model(hp), hp)
    schedule = jax_bn.lr_schedule(hp)
    step = 0
    for epoch in range(hp.num_epochs):
        torch_bn.start_epoch(torch_opt, epoch, hp)  # the lesson's param_groups[0]["lr"] *= 0.1
        for _ in range(hp.steps_per_epoch):
            got = schedule(jnp.asarray(step, jnp.int32))  # optax's own step counter type
            assert got.dtype == jnp.float64
            # gamma ** k against k multiplications by gamma: an ulp or two apart; a schedule
            # evaluated in float32 would be 1e-8 apart
            assert abs(float(got) - torch_opt.param_groups[0]["lr"]) <= 1e-15 * float(got), epoch
            step += 1
    assert torch_opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.1**4)


def test_stepped_learning_rate_in_float64_lockstep_across_a_cut():
    """Six epochs of mnist-mlp-bn in float64 lockstep: the lr cut at epoch 5 included."""
    steps = 5 * 79 + 20
    result = parity.lockstep("mnist-mlp-bn", dtype="float64", steps=steps)
    assert result["steps"] == steps and result["passed"], result


def test_mnist_parity_runs_one_epoch_of_the_shipped_set_by_default(cli):
    code, out, _ = cli("parity", "mnist-mlp", "--json")
    result = json.loads(out)
    assert code == 0 and result["steps"] == 79 >= 50 and result["dataset"] == "mnist-5k"
    assert result["test_predictions_differ"] == 0 and result["passed"]


def test_quick_mnist_run_reports_both_test_accuracies_and_draws_digits(cli, tmp_path):
    code, out, _ = cli(
        "run", "mnist-mlp", "--quick", "--json", "--no-progress", "--out", tmp_path / "m"
    )
    result = json.loads(out)
    assert code == 0 and result["dataset"] == "mnist-5k"
    for side in ("torch", "jax"):
        metrics = result[side]["metrics"]
        assert 0 < metrics["test_accuracy"] <= 1 and len(metrics["per_epoch"]) == 1
    # one epoch of 79 steps barely starts this deep MLP (17 %): what matters is that both sides
    # label the test images alike (float32 may part on a few borderline ones)
    assert result["test_predictions_differ"] <= 20
    accuracy = [result[side]["metrics"]["test_accuracy"] for side in ("torch", "jax")]
    assert abs(accuracy[0] - accuracy[1]) <= 0.002
    assert (tmp_path / "m" / "digits.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("name", MNIST_TASKS)
def test_full_schedule_test_accuracies_within_three_tenths_of_a_point(cli, tmp_path, name):
    code, out, _ = cli("run", name, "--json", "--no-progress", "--out", tmp_path / name)
    result = json.loads(out)
    accuracy = {side: result[side]["metrics"]["test_accuracy"] for side in ("torch", "jax")}
    assert code == 0 and abs(accuracy["torch"] - accuracy["jax"]) <= 0.003, accuracy
    if name == "mnist-cnn":  # the bar on the shipped 5k/10k set
        assert min(accuracy.values()) > 0.94
