"""The command line end to end: list, run, parity, convert, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from compare import port
from compare.tutorials import data, registry

TASKS = sorted(registry.TASKS)
PICTURES = {name: registry.TASKS[name].picture for name in TASKS}


def test_list_json_names_every_task(cli):
    code, out, _ = cli("list", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == list(registry.TASKS)
    assert all({"name", "lesson", "dataset", "tiers"} <= set(r) for r in rows)


@pytest.mark.parametrize("name", TASKS)
def test_quick_run_writes_metrics_curves_and_the_lesson_picture(cli, tmp_path, name):
    out_dir = tmp_path / name
    code, out, _ = cli("run", name, "--quick", "--json", "--no-progress", "--out", out_dir)
    assert code == 0
    result = json.loads(out)
    assert {"task", "dataset", "epochs", "jax", "torch", "out_dir"} <= set(result)
    for side in ("jax", "torch"):
        assert {"losses", "metrics", "train_seconds"} <= set(result[side])
        assert np.all(np.isfinite(np.asarray(result[side]["losses"])))
    assert result["epochs"] == registry.TASKS[name].quick_epochs
    task = registry.TASKS[name]
    if task.loss_names and "test_loss" in result["torch"]["metrics"]:  # one per net
        assert set(result["torch"]["metrics"]["test_loss"]) == set(task.loss_names)
    if task.noise:  # a normal run says whose noise each side consumed
        assert "each side draws its own" in result["noise"]
    if task.equivalences:  # and writes the table of twins it measured
        assert result["equivalences"]["passed"] and "curves" not in result["equivalences"]
    assert json.loads((out_dir / "metrics.json").read_text())["task"] == name
    for picture in ("curves.png", f"{PICTURES[name]}.png"):
        assert (out_dir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no staging directory left behind


def test_classification_run_reports_accuracy_of_both_sides(cli, tmp_path):
    code, out, _ = cli("run", "classification", "--json", "--no-progress", "--out", tmp_path / "c")
    result = json.loads(out)
    assert code == 0
    assert result["torch"]["metrics"]["accuracy"] == result["jax"]["metrics"]["accuracy"] > 0.95


def test_parity_json_and_exit_status(cli):
    code, out, _ = cli("parity", "regression", "--dtype", "float64", "--json")
    result = json.loads(out)
    assert code == 0 and result["passed"]
    assert {
        "task",
        "dtype",
        "steps",
        "loss_max_rel_diff",
        "param_max_rel_diff",
        "tolerance",
        "passed",
    } <= set(result)
    assert result["steps"] == 100 and result["loss_max_rel_diff"] <= 1e-9
    assert result["bound"]["kind"] == "fixed" and result["bound"]["tolerance"] == 1e-9


def test_parity_fails_with_exit_one_when_the_sides_disagree(cli, monkeypatch):
    import optax
    from flax import nnx

    from jaxnets import regression

    def with_momentum(model, hp):  # a port that forgot the lesson's plain SGD
        return nnx.Optimizer(model, optax.sgd(hp.lr, momentum=0.1), wrt=nnx.Param)

    monkeypatch.setattr(regression, "new_optimizer", with_momentum)
    code, out, _ = cli("parity", "regression", "--json")
    assert code == 1 and not json.loads(out)["passed"]


def lesson_a_regression(path, steps=100):
    """Lesson A's own code: its Net, its seed, its state dict file, its training loop."""
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def __init__(self, n_feature, n_hidden, n_output):
            super(Net, self).__init__()  # noqa: UP008 (the lesson's spelling)
            self.hidden = torch.nn.Linear(n_feature, n_hidden)
            self.predict = torch.nn.Linear(n_hidden, n_output)

        def forward(self, x):
            x = F.relu(self.hidden(x))
            x = self.predict(x)
            return x

    torch.manual_seed(1)
    net = Net(n_feature=1, n_hidden=10, n_output=1)
    torch.save(net.state_dict(), path)
    arrays = data.load("regression")
    x = torch.from_numpy(arrays["x"]).float()
    y = torch.from_numpy(arrays["y"]).float()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2)
    loss_func = torch.nn.MSELoss()
    losses = []
    for _ in range(steps):
        prediction = net(x)
        loss = loss_func(prediction, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses)


def test_init_from_a_state_dict_saved_by_the_lessons_own_code(cli, tmp_path):
    lesson_losses = lesson_a_regression(tmp_path / "net_params.pkl")
    code, out, _ = cli(
        "run",
        "regression",
        "--init-from",
        tmp_path / "net_params.pkl",
        "--json",
        "--no-progress",
        "--out",
        tmp_path / "run",
    )
    result = json.loads(out)
    assert code == 0
    np.testing.assert_array_equal(result["torch"]["losses"], lesson_losses)  # same float32 ops
    bound = registry.TASKS["regression"].tolerance["float32"]
    np.testing.assert_allclose(result["jax"]["losses"], lesson_losses, rtol=bound)
    code, out, _ = cli("parity", "regression", "--init-from", tmp_path / "net_params.pkl", "--json")
    assert code == 0 and json.loads(out)["passed"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_convert_to_flax_and_back_loses_nothing(cli, tmp_path, suffix):
    task = registry.TASKS["flower-net"]
    torch.manual_seed(0)
    source = tmp_path / f"module_net{suffix}"
    from torchref import _train as torch_train

    torch_train.save_checkpoint(task.modules()[1].new_model(task.hp), source)
    code, out, _ = cli("convert", "flower-net", source, tmp_path / "flax.safetensors")
    assert code == 0 and "torch state dict to Flax" in out
    from safetensors.numpy import load_file

    flax_keys = set(load_file(str(tmp_path / "flax.safetensors")))
    assert flax_keys == {"layer1.kernel", "layer1.bias", "layer3.kernel", "layer3.bias"}
    back = tmp_path / f"back{suffix}"
    code, out, _ = cli("convert", "flower-net", tmp_path / "flax.safetensors", back)
    assert code == 0 and "Flax to torch" in out
    original, restored = port.read_state_dict(source), port.read_state_dict(back)
    assert set(original) == set(restored)
    for key in original:
        assert original[key].dtype == restored[key].dtype
        np.testing.assert_array_equal(original[key], restored[key])


@pytest.mark.parametrize("name", TASKS)
def test_convert_round_trip_for_every_task(cli, tmp_path, name):
    """Flax checkpoints hold weights and statistics only: no RNG stream (nnx.RNN keeps one),
    no carried hidden state; the torch state dict comes back bit for bit."""
    task = registry.TASKS[name]
    torch.manual_seed(0)
    source = tmp_path / "torch.pt"
    torch.save(task.modules()[1].new_model(task.hp).state_dict(), source)
    assert cli("convert", name, source, tmp_path / "flax.safetensors")[0] == 0
    assert cli("convert", name, tmp_path / "flax.safetensors", tmp_path / "back.pt")[0] == 0
    original, restored = port.read_state_dict(source), port.read_state_dict(tmp_path / "back.pt")
    assert set(original) == set(restored)
    for key in original:
        np.testing.assert_array_equal(original[key], restored[key])


def assert_one_line_error(code, out, err, *fragments):
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_unknown_task(cli):
    assert_one_line_error(*cli("run", "regresion", "--no-progress"), "unknown task 'regresion'")
    assert_one_line_error(*cli("parity", "nope"), "known tasks")


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda sd: sd.pop("hidden.bias"), "missing keys ['hidden.bias']"),
        (
            lambda sd: sd.update({"hiden.weight": sd.pop("hidden.weight")}),
            "unexpected keys ['hiden.weight']",
        ),
        (
            lambda sd: sd.update({"hidden.weight": torch.zeros(3, 1)}),
            "hidden.weight has shape (3, 1)",
        ),
    ],
)
def test_init_from_with_wrong_keys_or_shapes(cli, tmp_path, make, fragment):
    task = registry.TASKS["regression"]
    state = task.modules()[1].new_model(task.hp).state_dict()
    make(state)
    torch.save(state, tmp_path / "bad.pt")
    out_dir = tmp_path / "out"
    assert_one_line_error(
        *cli(
            "run",
            "regression",
            "--init-from",
            tmp_path / "bad.pt",
            "--out",
            out_dir,
            "--no-progress",
        ),
        fragment,
    )
    assert not out_dir.exists()


def test_corrupt_weights_file(cli, tmp_path):
    (tmp_path / "net.pt").write_bytes(b"this is not a checkpoint")
    assert_one_line_error(
        *cli(
            "run",
            "regression",
            "--init-from",
            tmp_path / "net.pt",
            "--out",
            tmp_path / "out",
            "--no-progress",
        ),
        "not a readable state dict",
    )
    assert not (tmp_path / "out").exists()
    (tmp_path / "net.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    assert_one_line_error(
        *cli("convert", "regression", tmp_path / "net.safetensors", tmp_path / "x.safetensors"),
        "net.safetensors",
    )
    assert_one_line_error(
        *cli("parity", "regression", "--init-from", tmp_path / "missing.pt"), "no such file"
    )


def test_non_finite_loss_stops_the_run_and_writes_nothing(cli, tmp_path):
    out_dir = tmp_path / "out"
    assert_one_line_error(
        *cli("run", "regression", "--set", "lr=1e6", "--out", out_dir, "--no-progress"),
        "non-finite",
        "step",
    )
    assert list(tmp_path.iterdir()) == []


def test_bad_hyperparameter_override(cli, tmp_path):
    assert_one_line_error(
        *cli("run", "regression", "--set", "learning_rate=1", "--no-progress"),
        "no such hyperparameter",
    )
    assert_one_line_error(*cli("run", "regression", "--set", "lr=fast", "--no-progress"), "lr=fast")


def test_data_dir_is_refused_for_generated_data(cli, tmp_path):
    assert_one_line_error(
        *cli("run", "regression", "--data-dir", tmp_path, "--no-progress"),
        "--data-dir does not apply",
    )


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (("run", "regression", "--epochs", "0"), "--epochs must be at least 1"),
        (("parity", "regression", "--steps", "0"), "--steps must be at least 1"),
        (("run", "optimizers", "--set", "batch_size=0"), "batch_size=0: must be at least 1"),
        (("run", "optimizers", "--set", "betas=0.9"), "needs 2 comma-separated numbers"),
        (("run", "regression", "--set", "lr=nan"), "must be a finite number"),
    ],
)
def test_bad_numbers_get_one_line(cli, argv, fragment):
    assert_one_line_error(*cli(*argv, "--no-progress"), fragment)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (("run", "regression", "--seed", "-1"), "a seed is a whole number"),
        (("run",), "the following arguments are required: task"),
        (("fly",), "invalid choice: 'fly'"),
    ],
)
def test_command_line_mistakes_get_one_line(argv, fragment):
    done = subprocess.run([sys.executable, "-m", "compare", *argv], capture_output=True, text=True)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, fragment)


def test_out_that_cannot_be_a_directory_fails_before_training(cli, tmp_path):
    (tmp_path / "taken").write_text("a file")
    assert_one_line_error(
        *cli("run", "flower-net", "--out", tmp_path / "taken", "--no-progress"),
        "exists and is not a directory",
    )


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_convert_raw_parameter_lessons_both_ways(cli, tmp_path, suffix):
    """flower-logistic's keys (w, b) read the same in both frameworks: still bit for bit."""
    task = registry.TASKS["flower-logistic"]
    from torchref import _train as torch_train

    torch_train.save_checkpoint(task.modules()[1].new_model(task.hp), tmp_path / f"lr{suffix}")
    code, out, _ = cli(
        "convert", "flower-logistic", tmp_path / f"lr{suffix}", tmp_path / "flax.safetensors"
    )
    assert code == 0 and "torch state dict to Flax" in out
    code, out, _ = cli(
        "convert",
        "flower-logistic",
        tmp_path / "flax.safetensors",
        tmp_path / f"back{suffix}",
        "--to",
        "torch",
    )
    assert code == 0 and "Flax to torch" in out
    original, restored = (
        port.read_state_dict(tmp_path / f"lr{suffix}"),
        port.read_state_dict(tmp_path / f"back{suffix}"),
    )
    assert set(original) == set(restored)
    for key in original:
        np.testing.assert_array_equal(original[key], restored[key])
    code, out, _ = cli(
        "convert", "flower-logistic", tmp_path / "flax.safetensors", tmp_path / "auto.pt"
    )
    assert code == 0 and "Flax to torch" in out  # a .pt output settles the direction


def test_convert_names_the_keys_that_do_not_fit(cli, tmp_path):
    task = registry.TASKS["regression"]
    state = task.modules()[1].new_model(task.hp).state_dict()
    state.pop("predict.bias")
    torch.save(state, tmp_path / "partial.pt")
    assert_one_line_error(
        *cli("convert", "regression", tmp_path / "partial.pt", tmp_path / "f.safetensors"),
        "missing keys ['predict.bias']",
    )
    assert_one_line_error(
        *cli("convert", "regression", tmp_path / "partial.pt", tmp_path / "no" / "f.safetensors"),
        "no such directory",
    )


def test_list_keeps_its_columns_aligned_for_the_longest_dataset_name(cli):
    code, out, _ = cli("list")
    lines = out.split("\n\n")[0].splitlines()  # the table (then --data-parallel's section)
    assert code == 0 and lines[0].split() == ["task", "dataset", "tiers", "lesson"]
    assert len(lines) == 1 + len(registry.TASKS)
    # every column starts where its header does, after mnist-half-train-2d as before
    starts = [lines[0].index(word) for word in ("dataset", "tiers", "lesson")]
    for line, task in zip(lines[1:], registry.TASKS.values(), strict=True):
        assert [line[s - 2 : s] for s in starts] == ["  "] * 3, line
        assert line[starts[0] :].startswith(task.dataset + " ")
        assert line[starts[2] :] == task.lesson


def test_a_learning_rate_torch_refuses_is_one_line(cli, tmp_path):
    out_dir = tmp_path / "r"
    assert_one_line_error(
        *cli("run", "regression", "--set", "lr=-1", "--quick", "--out", out_dir),
        "regression: Invalid learning rate: -1.0",
    )
    assert not out_dir.exists()


def test_a_one_step_run_draws_its_losses_as_points(monkeypatch, tmp_path):
    from compare.tutorials import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    one_step = {side: np.array([0.5]) for side in plots.SIDES}
    plots.loss_curves(plots.Picture("mnist-mlp", {}, {}, one_step), tmp_path / "c.png")
    (ax,) = figures[0].axes
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
    assert len(lines) == 2  # a line of one point has no length: without a marker, nothing shows
    assert all(line.get_marker() not in (None, "", "None") for line in lines)
