"""The lessons' alternative forms of one model compute the same function, on both sides."""

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from byhand import autograd_fit as by_hand_fit
from compare import port
from compare.tutorials import data
from jaxnets import autograd_fit as jax_fit
from jaxnets import flower_net as jax_flower
from jaxnets import regression as jax_regression
from torchref import autograd_fit as torch_fit
from torchref import flower_net as torch_flower
from torchref import regression as torch_regression


def flower_forms(module_state):
    """The three flower-net forms holding the same weights, as torch state dicts."""
    raw = {
        "w1": module_state["layer1.weight"].T,
        "b1": module_state["layer1.bias"],
        "w2": module_state["layer3.weight"].T,
        "b2": module_state["layer3.bias"],
    }
    sequential = {
        "0.weight": module_state["layer1.weight"],
        "0.bias": module_state["layer1.bias"],
        "2.weight": module_state["layer3.weight"],
        "2.bias": module_state["layer3.bias"],
    }
    return {"module": module_state, "raw": raw, "sequential": sequential}


def test_flower_net_module_sequential_and_raw_forms_agree_on_both_sides():
    torch.manual_seed(0)
    module_state = port.torch_state_dict(torch_flower.ModuleNet(2, 4, 1).double())
    states = flower_forms(module_state)
    x = data.load("flower-net")["x"]
    rngs = nnx.Rngs(0)
    outputs = {}
    torch_models = {
        "module": torch_flower.ModuleNet(2, 4, 1),
        "raw": torch_flower.TwoNetwork(),
        "sequential": torch_flower.seq_net(),
    }
    jax_models = {
        "module": jax_flower.ModuleNet(2, 4, 1, rngs=rngs),
        "raw": jax_flower.TwoNetwork(rngs=rngs),
        "sequential": jax_flower.seq_net(rngs=rngs),
    }
    for form, state in states.items():
        model = port.load_into_torch(torch_models[form].double(), state)
        with torch.no_grad():
            outputs[f"torch {form}"] = model(torch.from_numpy(x)).numpy()
        jax_model = port.torch_to_nnx(state, jax_models[form])
        outputs[f"jax {form}"] = np.asarray(jax_model(jnp.asarray(x)))
    reference = outputs["torch module"]
    for name, out in outputs.items():
        np.testing.assert_allclose(out, reference, rtol=1e-13, atol=1e-15, err_msg=name)


def test_flower_net_forms_train_alike():
    """Ten steps of the lesson's SGD(lr=1) from equal weights: raw and Module forms agree."""
    torch.manual_seed(0)
    module = torch_flower.ModuleNet(2, 4, 1).double()
    raw = port.load_into_torch(
        torch_flower.TwoNetwork().double(), flower_forms(port.torch_state_dict(module))["raw"]
    )
    arrays = data.load("flower-net")
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    losses = {}
    for name, model in (("module", module), ("raw", raw)):
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        losses[name] = [torch_flower.train_step(model, optimizer, x, y).item() for _ in range(10)]
    np.testing.assert_allclose(losses["raw"], losses["module"], rtol=1e-12)


def test_regression_net_and_quick_build_agree_on_both_sides():
    torch.manual_seed(0)
    net = torch_regression.Net(1, 10, 1).double()
    state = port.torch_state_dict(net)
    quick_state = {k.replace("hidden", "0").replace("predict", "2"): v for k, v in state.items()}
    quick = port.load_into_torch(torch_regression.quick_net(1, 10, 1).double(), quick_state)
    x = data.load("regression")["x"]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(quick(torch.from_numpy(x)).numpy(), want)
    jax_net = port.torch_to_nnx(state, jax_regression.Net(1, 10, 1, rngs=nnx.Rngs(0)))
    jax_quick = port.torch_to_nnx(quick_state, jax_regression.quick_net(1, 10, 1, rngs=nnx.Rngs(0)))
    np.testing.assert_allclose(np.asarray(jax_net(jnp.asarray(x))), want, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(jax_quick(jnp.asarray(x))), want, rtol=1e-13)


def test_autograd_fit_by_hand_with_autograd_and_with_jax_grad_agree():
    arrays = data.load("autograd-fit")
    lr, steps = 0.001, 800
    torch.manual_seed(0)
    model = torch_fit.Quadratic().double()
    w0, b0 = model.w.detach().numpy().copy(), model.b.detach().numpy().copy()

    w_hand, b_hand, hand_losses = by_hand_fit.fit_by_hand(
        w0, b0, arrays["x"], arrays["y"], lr, steps
    )

    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    torch_losses = [torch_fit.train_step(model, lr, x, y).item() for _ in range(steps)]

    jax_model = port.torch_to_nnx({"w": w0, "b": b0}, jax_fit.Quadratic(rngs=nnx.Rngs(0)))
    jx, jy = jnp.asarray(arrays["x"]), jnp.asarray(arrays["y"])
    jax_losses = [float(jax_fit.train_step(jax_model, lr, jx, jy)) for _ in range(steps)]

    np.testing.assert_allclose(torch_losses, hand_losses, rtol=1e-12)
    np.testing.assert_allclose(jax_losses, hand_losses, rtol=1e-12)
    for got in (model.w.detach().numpy(), np.asarray(jax_model.w.get_value())):
        np.testing.assert_allclose(got, w_hand, rtol=1e-12)
    for got in (model.b.detach().numpy(), np.asarray(jax_model.b.get_value())):
        np.testing.assert_allclose(got, b_hand, rtol=1e-12)
    # what the lesson found: w close to 3 and b close to 2 (it printed 2.96 and 2.10)
    assert abs(w_hand.item() - 3) < 0.1 and abs(b_hand.item() - 2.1) < 0.1
