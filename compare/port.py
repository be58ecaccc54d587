"""Weights across frameworks: a torch state dict (as numpy) <-> an ``nnx`` module's variables.

The canonical format is the torch ``state_dict`` with the tutorial's own key names, as numpy
arrays. Rules are per layer type (``RULES``); a Module's own raw ``nnx.Param`` attributes
(the lessons' ``w``, ``b``, ``w1``...) map to the same name unchanged. A round trip is exact:
every rule is a transpose or a copy, never arithmetic.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from compare import CompareError


class PortError(CompareError):
    """A weights file or state dict that does not fit the model."""


def _linear(kernel):
    # torch Linear weight is (out, in) for y = x W^T; Flax kernel is (in, out) for y = x K.
    return kernel.T


def _conv(kernel):
    # torch Conv2d weight is OIHW; Flax Conv kernel is HWIO.
    return kernel.transpose(3, 2, 0, 1)


def _conv_back(weight):
    return weight.transpose(2, 3, 1, 0)


def _conv_transpose(kernel):
    # torch ConvTranspose2d weight is (in, out, kH, kW); nnx.ConvTranspose with
    # transpose_kernel=True holds (kH, kW, out, in): the gradient of a Conv whose kernel is
    # HWIO with I = out, O = in, which is what torch's transposed convolution computes.
    return kernel.transpose(3, 2, 0, 1)


def _conv_transpose_back(weight):
    return weight.transpose(2, 3, 1, 0)


def _same(array):
    return array


def _int64(array):
    # torch counts batches in int64; JAX holds int32 unless x64 is on
    return np.asarray(array).astype(np.int64)


# layer type -> {nnx attribute: (torch name, nnx -> torch, torch -> nnx)}
RULES = {
    nnx.Linear: {"kernel": ("weight", _linear, _linear), "bias": ("bias", _same, _same)},
    nnx.Conv: {"kernel": ("weight", _conv, _conv_back), "bias": ("bias", _same, _same)},
    # needs transpose_kernel=True and padding dilation * (k - 1) - p per side (torch's p)
    nnx.ConvTranspose: {
        "kernel": ("weight", _conv_transpose, _conv_transpose_back),
        "bias": ("bias", _same, _same),
    },
    nnx.Embed: {"embedding": ("weight", _same, _same)},
    # nn.LSTM / nn.RNN (one layer) <- nnx.RNN over jaxnets' LSTMCell / RNNCell: the cell's two
    # Linears hold torch's two matmuls and two biases. LSTM gates are i, f, g, o on both sides,
    # so the (4H, in) weights transpose whole. Keyed by paths inside the nnx.RNN.
    nnx.RNN: {
        ("cell", "dense_i", "kernel"): ("weight_ih_l0", _linear, _linear),
        ("cell", "dense_h", "kernel"): ("weight_hh_l0", _linear, _linear),
        ("cell", "dense_i", "bias"): ("bias_ih_l0", _same, _same),
        ("cell", "dense_h", "bias"): ("bias_hh_l0", _same, _same),
    },
    # nnx.BatchNorm and jaxnets' torch-statistics subclass (which adds num_batches_tracked)
    nnx.BatchNorm: {
        "scale": ("weight", _same, _same),
        "bias": ("bias", _same, _same),
        "mean": ("running_mean", _same, _same),
        "var": ("running_var", _same, _same),
        "num_batches_tracked": ("num_batches_tracked", _int64, _same),
    },
}


def _rules(module):
    """The rules of ``module``'s class or of the nearest base class that has some."""
    return next((RULES[cls] for cls in type(module).__mro__ if cls in RULES), None)


def _torch_prefix(path, modules):
    """``('layer1', 'layers', 0)`` -> ``'layer1.0.'``: nnx.Sequential keeps its children under
    ``layers``, torch's Sequential under their bare index."""
    parts = []
    for i, part in enumerate(path):
        if part == "layers" and isinstance(modules.get(path[:i]), nnx.Sequential):
            continue
        parts.append(str(part))
    return "".join(f"{p}." for p in parts)


def _is_path(key):
    return isinstance(key, tuple)


def _ported(module):
    """``module``'s own Param and BatchStat attributes: {name: variable}."""
    return {k: v for k, v in vars(module).items() if isinstance(v, nnx.Param | nnx.BatchStat)}


def mapping(model):
    """Every ported variable of ``model``: torch key -> (nnx path, variable, to_torch, to_nnx)."""
    modules = dict(nnx.iter_modules(model))
    table = {}
    # modules whose rules reach into their children (nnx.RNN's cell) port those children
    owners = [p for p, m in modules.items() if _rules(m) and all(map(_is_path, _rules(m)))]
    for path, module in modules.items():
        if any(path[: len(p)] == p and path != p for p in owners):
            continue  # ported by the rule of the module that owns it
        prefix = _torch_prefix(path, modules)
        rules = _rules(module)
        if path in owners:
            for sub, child in nnx.iter_modules(module):
                for attr, var in _ported(child).items():
                    key = (*sub, attr)
                    if key not in rules:
                        where = ".".join(map(str, key))
                        raise PortError(f"no porting rule for {type(module).__name__}.{where}")
                    name, to_torch, to_nnx = rules[key]
                    table[prefix + name] = ((*path, *key), var, to_torch, to_nnx)
            continue
        for attr, var in _ported(module).items():
            if rules is not None:
                if attr not in rules:
                    raise PortError(f"no porting rule for {type(module).__name__}.{attr}")
                name, to_torch, to_nnx = rules[attr]
            else:
                name, to_torch, to_nnx = attr, _same, _same
            table[prefix + name] = ((*path, attr), var, to_torch, to_nnx)
    return table


def _check_keys(expected, state_dict, source):
    """One line naming every missing and unexpected key, for either framework's model."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise PortError(f"{source}: {'; '.join(parts)}")


def _check_shape(key, got, want, source):
    if tuple(got) != tuple(want):
        raise PortError(f"{source}: {key} has shape {tuple(got)}, the model expects {tuple(want)}")


def _check(table, state_dict, source):
    _check_keys(table, state_dict, source)
    for key, (_, var, to_torch, _) in table.items():
        # compare in torch's layout: the one the file and the message speak
        want = to_torch(np.empty(var.get_value().shape)).shape
        _check_shape(key, np.shape(state_dict[key]), want, source)


def to_nnx(model, state_dict, dtype=None, source="state dict"):
    """Load a torch-named numpy state dict into ``model`` in place; keys and shapes must match."""
    table = mapping(model)
    _check(table, state_dict, source)
    for key, (_, var, _, to_nnx) in table.items():
        array = np.asarray(state_dict[key])
        if dtype is not None and np.issubdtype(array.dtype, np.floating):
            array = array.astype(dtype)
        var.set_value(jnp.asarray(to_nnx(array)))
    return model


def from_nnx(model):
    """``model``'s variables as a torch-named numpy state dict."""
    table = mapping(model)
    return {
        key: to_torch(np.asarray(var.get_value())) for key, (_, var, to_torch, _) in table.items()
    }


def grads_from_nnx(model, grads):
    """An ``nnx.grad`` result for ``model`` as a torch-named numpy dict (parameters only)."""
    flat = dict(nnx.to_flat_state(grads))
    out = {}
    for key, (path, _, to_torch, _) in mapping(model).items():
        if path in flat:
            leaf = flat[path]
            leaf = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
            out[key] = to_torch(np.asarray(leaf))
    return out


def torch_state_dict(model):
    """A torch module's state dict as numpy arrays (float64 kept as is)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def read_state_dict(path):
    """A torch state dict from ``.safetensors`` or ``.pt``/``.pth``/``.pkl``, as numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise PortError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            state = load_file(str(path))
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # each library raises its own kinds; the message is what matters
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PortError(f"{path}: not a readable state dict ({first})") from None
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise PortError(f"{path}: holds no state dict of tensors (save model.state_dict())")
    arrays = {}
    for key, value in state.items():
        try:
            arrays[key] = (
                value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            )
        except (TypeError, RuntimeError) as err:  # bfloat16 has no numpy twin, for one
            raise PortError(f"{path}: tensor {key} cannot be read as numpy ({err})") from None
    return arrays


def write_state_dict(state_dict, path):
    """Write a numpy state dict as torch would: ``.safetensors`` or ``torch.save`` (.pt)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(path))
    else:
        import torch

        torch.save(
            {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}, path
        )


def load_into_torch(model, state_dict, source="state dict"):
    """``model.load_state_dict`` with key and shape errors turned into one line."""
    import torch

    own = model.state_dict()
    _check_keys(own, state_dict, source)
    for key, value in own.items():
        _check_shape(key, np.shape(state_dict[key]), value.shape, source)
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()})
    return model
