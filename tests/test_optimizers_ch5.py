"""Lesson G's optimizers three ways: the chapter's numpy pseudo-code, torch.optim and optax.

torch and optax agree in float64 lockstep (tests/test_parity.py, 1e-9; the rules in
tests/test_optax_twins.py). Here: where the chapter's own rules part from torch's, and why.
"""

import dataclasses

import numpy as np
import optax
import pytest
from flax import nnx

from byhand import optimizers_ch5 as by_hand_ch5
from compare.tutorials import registry, runs
from compare.tutorials.twins import make_twins, schedule, train_jax, train_torch
from jaxnets import optimizers_ch5 as jax_ch5

TASK = registry.TASKS["optimizers-ch5"]


@pytest.fixture(scope="module")
def twins():
    twins = make_twins(TASK, dtype="float64")
    return twins, [schedule(twins, 1)[0][:40]]  # 40 steps of 10


def by_hand(twins, order, **hp):
    """The run's hook: the pseudo-code against torch in float64, per optimizer."""
    twins = dataclasses.replace(twins, hp=dataclasses.replace(twins.hp, **hp))
    return runs.compare_by_hand(twins, order)["vs_torch_float64"]


def test_the_chapters_rules_against_torch_optim(twins):
    """With the chapter's delta = 1e-7: SGD and momentum are torch's rules (rounding only);
    NAG takes the same steps but keeps other parameters; the adaptive three part by their
    delta against torch's eps."""
    vs = by_hand(*twins)
    loss, params = vs["loss_max_rel_diff"], vs["param_max_rel_diff"]
    for name in ("SGD", "Momentum"):
        assert loss[name] < 1e-13 and params[name] < 1e-13, name
    assert loss["NAG"] < 1e-13 and params["NAG"] > 1e-4
    for name in ("AdaGrad", "RMSProp", "Adam"):
        assert loss[name] > 1e-8, name  # delta 1e-7 against eps 1e-10 / 1e-8


@pytest.mark.parametrize("eps, names", [(1e-10, ["AdaGrad"]), (1e-8, ["RMSProp", "Adam"])])
def test_with_torchs_eps_the_chapters_adaptive_rules_are_torchs(twins, eps, names):
    vs = by_hand(*twins, delta=eps)
    for name in names:
        assert vs["loss_max_rel_diff"][name] < 1e-12, name
        assert vs["param_max_rel_diff"][name] < 1e-12, name


def test_nag_look_ahead_form_keeps_theta_where_torch_keeps_theta_plus_alpha_v(twins):
    """The chapter evaluates the gradient at theta + alpha v and steps theta; torch's (and
    optax's) nesterov form holds the look-ahead point itself: theta_torch = theta + alpha v,
    exactly, after every step."""
    twins, order = twins
    hp = twins.hp
    initial = {
        k[4:]: v.astype(np.float64) for k, v in twins.initial.items() if k.startswith("NAG.")
    }
    params = {k: v.copy() for k, v in initial.items()}
    state = {"v": {k: np.zeros_like(v) for k, v in params.items()}}
    x, y = twins.arrays["x"], twins.arrays["y"]
    for idx in order[0]:
        by_hand_ch5.step_by_hand("NAG", params, state, x[idx], y[idx], hp)
    train_torch(twins, order)
    torch_nag = {k: v.detach().numpy() for k, v in twins.torch_model["NAG"].state_dict().items()}
    for key, value in torch_nag.items():
        look_ahead = params[key] + hp.momentum * state["v"][key]
        np.testing.assert_allclose(look_ahead, value, rtol=1e-12, atol=1e-15)
        assert not np.allclose(params[key], value, rtol=1e-6)


def test_optax_adagrad_as_it_comes_is_caught_on_the_task(monkeypatch):
    """optax.adagrad (accumulator from 0.1, eps inside the root) in place of
    jaxnets.optim.adagrad: the AdaGrad net, and only it, parts from torch's at once."""
    twins = make_twins(TASK, dtype="float64")
    order = [schedule(twins, 1)[0][:20]]
    want = train_torch(twins, order)

    as_written = jax_ch5.new_optimizer

    def stock_adagrad(nets, hp):
        optimizers = as_written(nets, hp)
        optimizers["AdaGrad"] = nnx.Optimizer(nets["AdaGrad"], optax.adagrad(hp.lr), wrt=nnx.Param)
        return optimizers

    monkeypatch.setattr(jax_ch5, "new_optimizer", stock_adagrad)
    twins.jax_optimizer = jax_ch5.new_optimizer(twins.jax_model, twins.hp)
    got = train_jax(twins, order)
    apart = np.abs(got / want - 1).max(axis=0)
    adagrad = TASK.loss_names.index("AdaGrad")
    assert apart[adagrad] > 1e-3
    assert np.delete(apart, adagrad).max() < 1e-13


def test_autograd_fit_runs_its_numpy_descent_through_the_same_hook():
    twins = make_twins(registry.TASKS["autograd-fit"], dtype="float32")
    hand = runs.compare_by_hand(twins, schedule(twins, 800))
    assert hand["vs_torch_float64"]["loss_max_rel_diff"] < 1e-12
    assert hand["vs_torch_float64"]["param_max_rel_diff"] < 1e-12
    assert set(hand["params"]) == {"w", "b"} and abs(hand["params"]["w"][0] - 3) < 0.1
    x = np.linspace(-1, 1, 5)[:, None]
    np.testing.assert_allclose(
        hand["predict"](x), x**2 * hand["params"]["w"][0] + hand["params"]["b"][0], rtol=1e-12
    )
