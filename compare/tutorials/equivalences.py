"""The table of equivalences: a tutorial's torch functions next to their JAX twins, measured.

A tutorial may define, on both sides and under the same keys (``init-and-activations``):

- ``INITIALIZERS``: torch an in-place ``init(weight)`` on torch's layout, JAX an initialiser
  ``init(key, shape, dtype)`` on Flax's; both are drawn large (a Linear's and a Conv2d's
  weight) and must draw from one distribution: the documented standard deviation (and bound,
  for uniforms) on both sides, and Kolmogorov-Smirnov tests between the two samples and of
  each against the documented distribution. Random draws cannot match number for number, so
  this is the test, and it sees what a standard deviation cannot: a truncated normal scaled to
  the right variance (``jax.nn.initializers.he_normal``) fails it.
- ``default_linear`` / ``default_conv``: a layer as torch builds it and its JAX twin, weight
  and bias checked the same way.
- ``ACTIVATIONS``: ``f(x)`` on both sides; values and derivatives (a vector-Jacobian product
  with one random cotangent) in float64, at ``TOLERANCE``.
- ``LOSSES``: ``loss(scores, labels, targets, weight)``; values and gradients with respect to
  the scores in float64, at ``TOLERANCE``.

A task with such tables says so in its registry entry (``Task.equivalences``). ``table``
returns the rows and a verdict; ``run`` writes it into ``metrics.json`` and draws the
activations, ``parity`` adds ``equivalences_max_rel_diff`` and ``equivalences_passed``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from scipy import stats

from compare import port
from compare.diff import tensor_rel_diff

TOLERANCE = 1e-9  # float64, as the lockstep
P_VALUE = 1e-3  # below it a Kolmogorov-Smirnov test rejects "the same distribution"
LINEAR = (512, 256)  # torch's (out, in): fan_in 256, fan_out 512
CONV = (128, 64, 3, 3)  # torch's OIHW: fan_in 64 * 9 = 576, fan_out 128 * 9 = 1152
SEED = 2026

# The documented distribution of each torch scheme: (uniform or normal, gain, fan): a normal
# has std gain / sqrt(fan), a uniform the bound gain * sqrt(3 / fan) (the same variance).
# fan_avg is (fan_in + fan_out) / 2 (xavier).
SCHEMES = {
    "xavier_uniform_(w)": ("uniform", 1.0, "fan_avg"),
    "xavier_uniform_(w, gain=calculate_gain('tanh'))": ("uniform", 5.0 / 3, "fan_avg"),
    "xavier_normal_(w)": ("normal", 1.0, "fan_avg"),
    "kaiming_uniform_(w, nonlinearity='relu')": ("uniform", math.sqrt(2.0), "fan_in"),
    "kaiming_normal_(w)": ("normal", math.sqrt(2.0), "fan_in"),
    "kaiming_uniform_(w, a=0.1, mode='fan_out')": ("uniform", math.sqrt(2 / 1.01), "fan_out"),
    "kaiming_normal_(w, a=0.1, mode='fan_out')": ("normal", math.sqrt(2 / 1.01), "fan_out"),
}


def fans(torch_shape):
    """(fan_in, fan_out) of a weight in torch's layout, as ``torch.nn.init`` counts them."""
    receptive = math.prod(torch_shape[2:])
    return torch_shape[1] * receptive, torch_shape[0] * receptive


def expected(distribution, gain, fan):
    """The documented standard deviation (and a uniform's bound, else None)."""
    std = gain / math.sqrt(fan)
    return std, (std * math.sqrt(3.0) if distribution == "uniform" else None)


def compare_draws(name, layer, torch_sample, jax_sample, distribution, std, bound=None):
    """One initialiser row: both samples against the documented distribution and each other."""
    torch_sample = np.asarray(torch_sample, np.float64).reshape(-1)
    jax_sample = np.asarray(jax_sample, np.float64).reshape(-1)
    n = min(len(torch_sample), len(jax_sample))
    reference = stats.uniform(-bound, 2 * bound) if distribution == "uniform" else None
    reference = reference or stats.norm(0.0, std)
    # a sample's std is within a few standard errors of the true one: sqrt((kurtosis - 1) / 4n)
    kurtosis = 1.8 if distribution == "uniform" else 3.0
    std_tolerance = 5 * math.sqrt((kurtosis - 1) / (4 * n))
    row = {
        "kind": "init",
        "name": name,
        "layer": layer,
        "distribution": distribution,
        "samples": n,
        "expected_std": std,
        "std": {"torch": float(torch_sample.std()), "jax": float(jax_sample.std())},
        "max_abs": {
            "torch": float(np.abs(torch_sample).max()),
            "jax": float(np.abs(jax_sample).max()),
        },
        "ks_pvalue": {
            "torch_vs_jax": float(stats.ks_2samp(torch_sample, jax_sample).pvalue),
            "torch": float(stats.kstest(torch_sample, reference.cdf).pvalue),
            "jax": float(stats.kstest(jax_sample, reference.cdf).pvalue),
        },
    }
    checks = [abs(row["std"][side] / std - 1) <= std_tolerance for side in ("torch", "jax")]
    checks += [p >= P_VALUE for p in row["ks_pvalue"].values()]
    if bound is not None:
        row["expected_bound"] = bound
        checks += [row["max_abs"][side] <= bound for side in ("torch", "jax")]
    row["passed"] = bool(all(checks))
    return row


def initializer_rows(jax_module, torch_module):
    rows = []
    for i, (name, torch_init) in enumerate(torch_module.INITIALIZERS.items()):
        jax_init = jax_module.INITIALIZERS[name]
        distribution, gain, mode = SCHEMES[name]
        for j, (layer, shape) in enumerate((("Linear", LINEAR), ("Conv2d", CONV))):
            fan_in, fan_out = fans(shape)
            fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
            with torch.random.fork_rng():
                torch.manual_seed(SEED + 2 * i + j)
                torch_sample = torch_init(torch.empty(shape, dtype=torch.float64))
            flax_shape = shape[::-1] if layer == "Linear" else (*shape[2:], shape[1], shape[0])
            key = jax.random.key(SEED + 2 * i + j)
            jax_sample = jax_init(key, flax_shape, jnp.float32)
            rows.append(
                compare_draws(
                    name,
                    f"{layer} {tuple(shape)}",
                    torch_sample.numpy(),
                    jax_sample,
                    distribution,
                    *expected(distribution, gain, fan),
                )
            )
    return rows


def default_layer_rows(jax_module, torch_module):
    """torch's default Linear and Conv2d init (weight and bias U(+-1/sqrt(fan_in))) and the
    JAX twins of those layers, compared in torch's layout (``port.nnx_to_torch``)."""
    rows = []
    layers = (
        ("Linear", LINEAR, "default_linear", (LINEAR[1], LINEAR[0])),
        ("Conv2d", CONV, "default_conv", (CONV[1], CONV[0], CONV[2])),
    )
    for i, (layer, shape, factory, args) in enumerate(layers):
        if not (hasattr(torch_module, factory) and hasattr(jax_module, factory)):
            continue
        with torch.random.fork_rng():
            torch.manual_seed(SEED + 100 + i)
            torch_layer = getattr(torch_module, factory)(*args)
        jax_layer = getattr(jax_module, factory)(*args, rngs=nnx.Rngs(SEED + 100 + i))
        jax_state = port.nnx_to_torch(jax_layer)
        fan_in = fans(shape)[0]
        bound = 1 / math.sqrt(fan_in)
        for param in ("weight", "bias"):
            rows.append(
                compare_draws(
                    f"{layer}{args} default {param}",
                    f"{layer} {tuple(shape)}",
                    getattr(torch_layer, param).detach().numpy(),
                    jax_state[param],
                    "uniform",
                    bound / math.sqrt(3.0),
                    bound,
                )
            )
    return rows


def _torch_vjp(fn, inputs, cotangent):
    leaf = torch.from_numpy(inputs).requires_grad_(True)
    out = fn(leaf)
    (grad,) = torch.autograd.grad(out, leaf, torch.from_numpy(cotangent))
    return out.detach().numpy(), grad.numpy()


def _jax_vjp(fn, inputs, cotangent):
    out, pullback = jax.vjp(fn, jnp.asarray(inputs))
    return np.asarray(out), np.asarray(pullback(jnp.asarray(cotangent))[0])


def exact_row(kind, name, torch_out, jax_out):
    value = tensor_rel_diff({"v": jax_out[0]}, {"v": torch_out[0]})
    grad = tensor_rel_diff({"g": jax_out[1]}, {"g": torch_out[1]})
    return {
        "kind": kind,
        "name": name,
        "value_max_rel_diff": value,
        "grad_max_rel_diff": grad,
        "passed": bool(max(value, grad) <= TOLERANCE),
    }


def activation_rows(jax_module, torch_module, curves):
    """Each activation on random inputs and on the grid (x, 0) of the picture, stacked into
    one (n, 2) input, with a vector-Jacobian product: random cotangents on the random rows,
    (1, 0) on the grid, whose first column then gives f(x) and f'(x) (softmax: its first
    output, softmax((x, 0))_0 = sigmoid(x), and that output's derivative in x)."""
    rng = np.random.default_rng(SEED)
    grid = np.stack([np.linspace(-5, 5, 1001), np.zeros(1001)], axis=1)  # 0 included
    random_rows = 3 * rng.standard_normal((200, 2))
    random_rows[0] = 0.0  # where relu and leaky relu have their kink: torch's derivative there
    inputs = np.concatenate([grid, random_rows])
    cotangent = np.concatenate([np.tile([1.0, 0.0], (len(grid), 1)), rng.standard_normal((200, 2))])
    rows = []
    for name, torch_fn in torch_module.ACTIVATIONS.items():
        sides = {
            "torch": _torch_vjp(torch_fn, inputs, cotangent),
            "jax": _jax_vjp(jax_module.ACTIVATIONS[name], inputs, cotangent),
        }
        curves[name] = {"x": grid[:, 0]}
        for side, (value, grad) in sides.items():
            curves[name][side] = value[: len(grid), 0]
            curves[name][f"{side}_grad"] = grad[: len(grid), 0]
        rows.append(exact_row("activation", name, sides["torch"], sides["jax"]))
    return rows


def loss_inputs():
    """Scores (32, 4), labels with four -100s (torch's default ignore_index), real targets,
    class weights: float64 numpy."""
    rng = np.random.default_rng(SEED + 1)
    scores = 2 * rng.standard_normal((32, 4))
    labels = rng.integers(0, 4, 32)
    labels[[3, 9, 17, 30]] = -100
    targets = rng.standard_normal((32, 4))
    weight = np.array([1.0, 2.0, 0.5, 3.0])
    return scores, labels, targets, weight


def loss_rows(jax_module, torch_module):
    scores, labels, targets, weight = loss_inputs()
    rows = []
    for name, torch_loss in torch_module.LOSSES.items():
        jax_loss = jax_module.LOSSES[name]
        rng = np.random.default_rng(SEED + 2)
        torch_args = [torch.from_numpy(a) for a in (labels, targets, weight)]
        jax_args = [jnp.asarray(a) for a in (labels, targets, weight)]
        probe = np.asarray(torch_loss(torch.from_numpy(scores), *torch_args).detach())
        cotangent = rng.standard_normal(probe.shape)  # a random weighting of 'none' losses
        torch_out = _torch_vjp(lambda s, f=torch_loss, a=torch_args: f(s, *a), scores, cotangent)
        jax_out = _jax_vjp(lambda s, f=jax_loss, a=jax_args: f(s, *a), scores, cotangent)
        rows.append(exact_row("loss", name, torch_out, jax_out))
    return rows


def table(jax_module, torch_module):
    """Every row, float64, and the verdict: ``{"rows", "max_rel_diff" (over the value and
    gradient rows), "passed", "curves"}`` (``curves``: the activations on a grid, for the
    picture; not JSON)."""
    curves = {}
    with jax.enable_x64(True):
        rows = []
        if hasattr(torch_module, "ACTIVATIONS"):
            rows += activation_rows(jax_module, torch_module, curves)
        if hasattr(torch_module, "LOSSES"):
            rows += loss_rows(jax_module, torch_module)
        if hasattr(torch_module, "INITIALIZERS"):
            rows += initializer_rows(jax_module, torch_module)
        rows += default_layer_rows(jax_module, torch_module)
    exact = [
        max(r["value_max_rel_diff"], r["grad_max_rel_diff"])
        for r in rows
        if "grad_max_rel_diff" in r
    ]
    return {
        "dtype": "float64",
        "tolerance": TOLERANCE,
        "p_value": P_VALUE,
        "rows": rows,
        "max_rel_diff": max(exact, default=0.0),
        "passed": all(r["passed"] for r in rows),
        "curves": curves,
    }
