"""The example specs pass ``twinnets check`` as a user runs them, in float64 and in float32:
ports of models nobody here wrote (a ``nn.TransformerEncoder`` classifier with padding,
torchvision's MobileNetV2 and ResNet-18), each with the traps its docstring names. The vision
ones train a real torchvision net for a few steps and go to the slow tier."""

import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def check(cli, name, dtype):
    code, out, err = cli("check", str(EXAMPLES / name), "--dtype", dtype, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_transformer_example_passes(cli, dtype):
    result = check(cli, "transformer_classifier.py", dtype)
    assert result["passed"] and result["first_divergence"] is None
    # every dropout site is fed, the attention probabilities of both layers included
    assert result["dropout"].count("(attention probabilities)") == 2
    assert "LinearLR stepped per step" in result["optimizer"]
    # the key third of each attention's bias is compared apart: softmax ignores it
    apart = {row["tensor"] for row in result["loss_irrelevant"]}
    assert apart <= {f"encoder.layers.{i}.self_attn.in_proj_bias[k]" for i in (0, 1)}
    if dtype == "float64":
        assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) <= 1e-13
    else:
        assert result["bound"]["reference"] == "torch in float64"
        assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_mobilenet_example_passes(cli, dtype):
    result = check(cli, "vision_mobilenet.py", dtype)
    assert result["passed"] and result["first_divergence"] is None
    assert "RMSprop" in result["optimizer"] and "ExponentialLR" in result["optimizer"]
    # the BatchNorm shifts a following BatchNorm absorbs are reported, not failed on
    assert any(row["tensor"].endswith(".bias") for row in result["loss_irrelevant"])
    if dtype == "float64":
        assert result["loss_max_rel_diff"] <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_resnet_example_passes(cli, dtype):
    result = check(cli, "vision_resnet.py", dtype)
    assert result["passed"] and result["first_divergence"] is None
    assert result["steps"] == 2 and result["dropout"] == "none"
    assert result["optimizer"].startswith("compare.optim.to_optax(SGD)")
    assert "CosineAnnealingLR stepped per step" in result["optimizer"]
    assert result["loss_irrelevant"] == []  # every BatchNorm feeds a ReLU or the sum: none
    if dtype == "float64":
        assert result["bound"]["kind"] == "fixed"
        assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) <= 1e-12
    else:
        assert result["bound"]["reference"] == "torch in float64"
        assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) <= 1e-4
