"""examples/vision_speed_cpu.py's code path, on a tiny net in place of torchvision's (the
resnet18 and mobilenet_v2 figures are measured on a quiet pinned core, not here): the record it
writes, and the loss check that keeps a broken pairing from being timed. No speed is
asserted."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compare.bench import timing

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vision_speed_cpu.py"
STEPS = 3
TINY = ["--models", "tiny", "--size", "8", "--batch", "4", "--steps", str(STEPS)]
TINY += ["--repeats", "2", "--variants", "torch-eager", "jax-nnx-jit", "jax-scan"]


class TinyNet(nn.Module):
    """A convolution, BatchNorm, pooling and a flatten (which translate must transpose back
    to NCHW first): what the torchvision nets are made of, at 8x8."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(x, 1))


@pytest.fixture
def speed(monkeypatch):
    spec = importlib.util.spec_from_file_location("vision_speed_cpu", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(module.MODELS, "tiny", TinyNet)
    threads = torch.get_num_threads()  # the script holds torch to one thread
    yield module
    torch.set_num_threads(threads)


def test_the_record_holds_every_variant_timed_from_the_same_training(speed, tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert speed.main([*TINY, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    tiny = record["models"]["tiny"]
    assert list(tiny["variants"]) == ["torch-eager", "jax-nnx-jit", "jax-scan"]
    reference = tiny["torch_reference_losses"]
    assert len(reference) == STEPS
    for variant, row in tiny["variants"].items():
        assert row["status"] == "ran", variant
        assert len(row["seconds"]) == 2 and row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["steps_per_s"] == pytest.approx(STEPS / row["median_s"])
        assert row["warmup_s"] > 0 and row["compile_s"] >= 0
        # every variant trained the same steps from the same weights as torch eager (a net
        # this small keeps float32's rounding small past the first step too)
        np.testing.assert_allclose(row["warmup_losses"], reference, rtol=speed.LOSS_RTOL)
        apart = tiny["loss_check"]["rel_diff_per_step"][variant]
        assert len(apart) == STEPS and apart[0] <= speed.LOSS_RTOL
    fastest_torch = tiny["variants"]["torch-eager"]["steps_per_s"]
    assert tiny["best_torch"] == "torch-eager" and tiny["variants"]["torch-eager"]["ratio"] == 1
    best_jax = tiny["variants"][tiny["best_jax"]]["steps_per_s"]
    assert best_jax == max(tiny["variants"][v]["steps_per_s"] for v in ("jax-nnx-jit", "jax-scan"))
    assert tiny["best_jax_over_best_torch"] == pytest.approx(best_jax / fastest_torch)
    assert record["one_core"]["torch_threads"] == 1
    assert record["one_core"]["cores_usable"] and "taskset" in record["one_core"]["how"]
    assert record["settings"]["steps_per_block"] == STEPS and record["settings"]["batch"] == 4
    for key in ("python", "jax", "jaxlib", "flax", "torch", "torchvision"):
        assert record["versions"][key]
    assert record["git"] and record["date"] and "load_average_1min" in record["host"]
    assert record["command"].endswith("--json " + str(out))
    printed = capsys.readouterr().out
    assert "| tiny | jax-scan |" in printed and "best JAX" in printed


def _channels_reversed(images):
    return np.ascontiguousarray(images.transpose(0, 1, 3, 4, 2)[..., ::-1])


def _left_in_eval_mode(translation, initial):
    from flax import nnx

    from compare.optim import to_optax

    model = translation.new_module(initial)
    model.eval()  # BatchNorm on its running statistics, torch's on the batch's
    return model, nnx.Optimizer(model, to_optax(speed_optimizer(initial)), wrt=nnx.Param)


def speed_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


@pytest.mark.parametrize(
    "where, broken",
    [
        # the classic layout slip: the channels handed over reversed (BGR for RGB)
        ("to_nhwc", _channels_reversed),
        # the JAX twin not switched to training mode
        ("jax_model_and_optimizer", _left_in_eval_mode),
    ],
    ids=["channels-reversed", "eval-mode"],
)
def test_a_broken_pairing_is_one_line_and_nothing_timed(
    speed, monkeypatch, tmp_path, where, broken
):
    def timed(*_):
        raise AssertionError("a block was timed")

    monkeypatch.setattr(speed, where, broken)
    monkeypatch.setattr(timing, "time_in_turns", timed)
    out = tmp_path / "speed.json"
    argv = [*TINY[: TINY.index("--variants")], "--variants", "torch-eager", "jax-nnx-jit"]
    with pytest.raises(SystemExit) as stopped:
        speed.main([*argv, "--json", str(out)])
    message = str(stopped.value.code)
    assert message.startswith("error: tiny: jax-nnx-jit's first-step loss")
    assert "nothing timed" in message
    assert "\n" not in message and not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--models", "resnet"], "invalid choice: 'resnet'"),
        (["--json", "/no/such/dir/x.json"], "no such directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_two(speed, capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        speed.main(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
