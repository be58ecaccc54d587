"""Lesson F, the generative family: noise shared in lockstep, torch's BCE clamp, detach versus
stop_gradient, the transposed-convolution rule, and the pictures a run draws."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from compare import CompareError, port
from compare.tutorials import data, parity, registry
from compare.tutorials.twins import draw_noise, make_twins, schedule, train_jax
from jaxnets import gan as jax_gan
from jaxnets import layers

GENERATIVE = [name for name, task in registry.TASKS.items() if task.noise]


def test_the_four_lesson_f_tasks_consume_noise_and_report_their_losses():
    assert {"vae", "gan", "cgan", "dcgan"} <= set(GENERATIVE)
    for name in ("gan", "cgan", "dcgan"):
        assert registry.TASKS[name].loss_names == ("D", "G")


@pytest.mark.parametrize(
    "name, low, shape", [("vae", 0.0, (784,)), ("gan", -1.0, (784,)), ("dcgan", -1.0, (1, 28, 28))]
)
def test_generative_data_is_the_training_set_in_the_lessons_range(name, low, shape):
    arrays = data.load(name)
    assert set(arrays) == {"x", "y"} and arrays["x"].shape[1:] == shape
    assert arrays["x"].min() == low and arrays["x"].max() == 1.0


@pytest.mark.parametrize("p", [0.0, 1.0, 1e-13, 1 - 1e-13, 0.3])
@pytest.mark.parametrize("y", [0.0, 1.0])
def test_bce_clamps_and_differentiates_as_torch_does(p, y):
    """At p = 0 and 1 torch's BCELoss is 100 (each log clamped at -100), not inf; its backward
    is (p - y) / max(p (1 - p), 1e-12f), not the derivative of the clamped forward."""
    tp = torch.tensor([p], dtype=torch.float64, requires_grad=True)
    want = torch.nn.functional.binary_cross_entropy(tp, torch.tensor([y], dtype=torch.float64))
    (want_grad,) = torch.autograd.grad(want, tp)
    loss, grad = jax.value_and_grad(layers.binary_cross_entropy)(jnp.array([p]), jnp.array([y]))
    if p in (0.0, 1.0):
        assert float(loss) == want.item()  # 0 or exactly 100
    np.testing.assert_allclose(float(loss), want.item(), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(grad), want_grad.numpy(), rtol=1e-15)


def test_bce_with_its_integer_free_targets_in_float32():
    p = jnp.array([0.0, 1.0, 0.5], jnp.float32)
    assert layers.binary_cross_entropy(p, jnp.ones(3, jnp.float32)).dtype == jnp.float32


def _saturated_gan(tmp_path):
    """The GAN with D's last bias at 50: sigmoid gives exactly 1.0, so the fakes' log(1 - p)
    is -inf, which torch clamps to -100."""
    torch.manual_seed(0)
    model = registry.TASKS["gan"].modules()[1].new_model(registry.TASKS["gan"].hp).double()
    with torch.no_grad():
        model.D[4].bias.fill_(50.0)
    torch.save(model.state_dict(), tmp_path / "saturated.pt")
    return tmp_path / "saturated.pt"


def test_an_unclamped_bce_is_caught_on_a_saturated_discriminator(tmp_path, monkeypatch):
    path = _saturated_gan(tmp_path)
    result = parity.lockstep("gan", dtype="float64", steps=3, init_from=path)
    assert result["passed"] and result["final_loss"]["torch"][0] >= 100  # clamped: 100 + ...

    def unclamped(p, y):
        return -(y * jnp.log(p) + (1 - y) * jnp.log1p(-p)).mean()

    monkeypatch.setattr(jax_gan, "criterion", unclamped)
    jax.clear_caches()  # the jitted step must be traced again with the patched loss
    try:
        with pytest.raises(CompareError, match="jax loss became non-finite"):
            parity.lockstep("gan", dtype="float64", steps=3, init_from=path)
    finally:
        jax.clear_caches()


def test_lockstep_hands_both_sides_the_same_noise_and_catches_different_noise(monkeypatch):
    twins = make_twins(registry.TASKS["cgan"], dtype="float64")
    order = schedule(twins, 1)
    noise = draw_noise(twins, order)
    assert [len(epoch) for epoch in noise] == [len(epoch) for epoch in order]
    step = noise[0][0]
    assert step["z"].shape == (100, 64) and step["labels"].shape == (100,)
    assert (
        step["labels"].dtype == np.int64 and 0 <= step["labels"].min() < step["labels"].max() <= 9
    )
    again = draw_noise(twins, order)
    np.testing.assert_array_equal(again[0][0]["z"], step["z"])  # seeded: both sides' copy

    def other_noise(twins, order, noise=None, **kwargs):  # the JAX side gets -z: as likely a draw
        noise = [[{k: -v for k, v in s.items()} for s in e] for e in noise]
        return train_jax(twins, order, noise=noise, **kwargs)

    monkeypatch.setattr(parity, "train_jax", other_noise)
    result = parity.lockstep("gan", dtype="float64", steps=3)
    assert not result["passed"] and result["loss_max_rel_diff"] > 1e-6


def test_stop_gradient_cuts_what_detach_cuts(monkeypatch):
    """Without stop_gradient the JAX side's D loss reaches into G: tier 2 sees G's gradients
    differ from torch's, where fake_images.detach() keeps D's loss out of G."""
    twins = make_twins(registry.TASKS["gan"], dtype="float64")
    assert parity.forward_and_grads(twins)[1] <= 1e-12
    monkeypatch.setattr(jax.lax, "stop_gradient", lambda x: x)
    assert parity.forward_and_grads(twins)[1] > 1e-3


def test_a_normal_run_draws_its_own_noise_inside_the_scan():
    """Without noise handed in, each JAX step draws from the model's key stream, which advances
    inside the scanned epoch (the model's state), so no two steps share a z."""
    twins = make_twins(registry.TASKS["gan"], dtype="float64")
    before = int(twins.jax_model.rngs.noise.count.get_value())
    order = [schedule(twins, 1)[0][:4]]
    losses = train_jax(twins, order)
    assert int(twins.jax_model.rngs.noise.count.get_value()) == before + 4
    assert len(np.unique(losses[:, 1])) == 4


def test_conv_transpose_kernel_layout_and_padding_rule():
    """torch ConvTranspose2d(in, out, (kH, kW), stride 2, padding 1): weight (in, out, kH, kW)
    to HWIO via transpose(2, 3, 1, 0) with transpose_kernel=True, padding k - 1 - p per side."""
    torch_conv = torch.nn.ConvTranspose2d(3, 5, kernel_size=(4, 3), stride=2, padding=1).double()
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 6))  # NCHW
    want = torch_conv(torch.from_numpy(x)).detach().numpy()

    def flax_conv(transpose_kernel=True, padding=((2, 2), (1, 1))):
        return nnx.ConvTranspose(
            3,
            5,
            (4, 3),
            strides=2,
            padding=padding,
            transpose_kernel=transpose_kernel,
            rngs=nnx.Rngs(0),
        )

    def out(conv):
        return np.asarray(conv(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)

    conv = port.torch_to_nnx(port.torch_state_dict(torch_conv), flax_conv())
    assert conv.kernel.get_value().shape == (4, 3, 5, 3)
    np.testing.assert_allclose(out(conv), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(
        port.nnx_to_torch(conv)["weight"], torch_conv.weight.detach().numpy()
    )
    # The rule matters: torch's padding p taken as Flax's padding gives another shape; the
    # kernel used without transpose_kernel (not flipped, in and out swapped) other numbers.
    assert (
        out(
            port.torch_to_nnx(
                port.torch_state_dict(torch_conv), flax_conv(padding=((1, 1), (1, 1)))
            )
        ).shape
        != want.shape
    )
    unflipped = flax_conv(transpose_kernel=False)
    weight = torch_conv.weight.detach().numpy()
    unflipped.kernel.set_value(jnp.asarray(weight.transpose(2, 3, 0, 1)))  # (kH, kW, in, out)
    unflipped.bias.set_value(jnp.asarray(torch_conv.bias.detach().numpy()))
    assert not np.allclose(out(unflipped), want)


def test_float64_embedding_is_looked_up_and_differentiated_in_float64():
    """nnx.Embed computes in the dtype it was built with (float32); ported float64 weights
    must not be rounded to float32 (a CGAN's label embedding would drift by 1e-7): jaxnets'
    Embed looks up in the table's dtype."""
    torch_embed = torch.nn.Embedding(10, 10).double()
    idx = np.random.default_rng(0).integers(0, 10, 100)
    g = np.random.default_rng(1).normal(size=(100, 10))
    (torch_embed(torch.from_numpy(idx)) * torch.from_numpy(g)).sum().backward()
    jax_embed = port.torch_to_nnx(
        port.torch_state_dict(torch_embed), layers.Embed(10, 10, rngs=nnx.Rngs(0))
    )
    grads = nnx.grad(lambda m: (m(jnp.asarray(idx)) * g).sum())(jax_embed)
    np.testing.assert_array_equal(
        np.asarray(grads["embedding"].get_value()), torch_embed.weight.grad.numpy()
    )


def test_quick_gan_run_draws_both_sides_digits_from_the_same_z(cli, tmp_path):
    out_dir = tmp_path / "gan"
    code, out, _ = cli("run", "gan", "--quick", "--json", "--no-progress", "--out", out_dir)
    assert code == 0
    result = json.loads(out)
    assert np.asarray(result["torch"]["losses"]).shape == (50, 2)
    assert set(result["jax"]["metrics"]["final_loss"]) == {"D", "G"}
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["curves.png", "metrics.json", "samples.png", "samples_epoch_001.png"]
    for name in ("samples.png", "samples_epoch_001.png"):
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
