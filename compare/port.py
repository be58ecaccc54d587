"""Weights across frameworks: a torch state dict (as numpy) <-> an ``nnx`` module's variables.

The canonical format is the torch ``state_dict`` with the model's own key names, as numpy
arrays. ``torch_to_nnx(state_dict, nnx_module)`` loads one into any NNX module and
``nnx_to_torch(nnx_module)`` writes one back; neither needs a key table: the rules are per
layer type (``RULES``) and the keys follow from the module tree, torch's way (a
``nnx.Sequential``'s ``layers`` level is dropped, list and dict children keep their index or
key, as ``nn.ModuleList`` and ``nn.ModuleDict``). A Module's own raw ``nnx.Param`` attributes
(the lessons' ``w``, ``b``, ``w1``...) map to the same name unchanged. A round trip is exact:
every rule is a transpose or a copy, never arithmetic (one exception, asked for by name:
``fold_biases``). docs/PORTING.md lists the rules and the test of each.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from compare.errors import PortError
from jaxnets.layers import RecurrentStack


def _linear(kernel):
    # torch Linear weight is (out, in) for y = x W^T; Flax kernel is (in, out) for y = x K.
    return kernel.T


def _conv(kernel):
    # Flax Conv kernel is (*spatial, in, out) -> torch Conv1d/2d/3d weight (out, in, *spatial).
    n = kernel.ndim
    return kernel.transpose(n - 1, n - 2, *range(n - 2))


def _conv_back(weight):
    # torch (out, in, *spatial) -> Flax (*spatial, in, out); grouped and depthwise convs too:
    # torch's (out, in / groups, ...) is Flax's (..., in / feature_group_count, out)
    n = weight.ndim
    return weight.transpose(*range(2, n), 1, 0)


def _conv_transpose(kernel):
    # torch ConvTranspose2d weight is (in, out, kH, kW); nnx.ConvTranspose with
    # transpose_kernel=True holds (kH, kW, out, in): the gradient of a Conv whose kernel is
    # HWIO with I = out, O = in, which is what torch's transposed convolution computes.
    return _conv(kernel)


def _conv_transpose_back(weight):
    return _conv_back(weight)


def _same(array):
    return array


def _zeros(array):
    return np.zeros_like(array)


def _int64(array):
    # torch counts batches in int64; JAX holds int32 unless x64 is on
    return np.asarray(array).astype(np.int64)


_LINEAR = {"kernel": ("weight", _linear, _linear), "bias": ("bias", _same, _same)}
_AFFINE = {"scale": ("weight", _same, _same), "bias": ("bias", _same, _same)}


class _Fold:
    """One Flax bias holding the sum of two torch biases (``fold_biases=True``): the forward
    pass ports exactly, training does not (torch moves each of the two by the whole
    gradient). Written back to torch as (the sum, zeros)."""

    def __init__(self, names, message):
        self.names = names
        self.message = message  # why it is refused unless asked for


class _Part:
    """One Flax variable holding part ``label`` (of ``labels``, in order) of a torch tensor
    packed along its first axis: torch's ``in_proj_weight`` is query, key and value stacked.
    Its table key is ``name[label]``; the packed torch key splits into them and joins back."""

    def __init__(self, name, label, labels, to_torch, to_nnx):
        self.name, self.label, self.labels = name, label, labels
        self.to_torch, self.to_nnx = to_torch, to_nnx


def _heads_kernel(kernel):
    # Flax (in, heads, head_dim) -> torch's (heads * head_dim, in) block of the projection
    return kernel.reshape(kernel.shape[0], -1).T


def _heads_bias(bias):
    return bias.reshape(-1)  # (heads, head_dim) -> (heads * head_dim,)


def _attention_rules(attention, where):
    """``nn.MultiheadAttention`` <- ``nnx.MultiHeadAttention``: the packed ``in_proj_weight``
    (or ``q/k/v_proj_weight`` for other key and value sizes) and ``in_proj_bias`` split into
    ``query``, ``key`` and ``value`` (each ``(in, heads, head_dim)``), ``out_proj`` onto ``out``
    (``(heads, head_dim, out)``). Keyed by paths inside it."""
    heads, head_dim = attention.num_heads, attention.head_dim
    out_features = attention.out_features

    def kernel_back(weight):  # torch (heads * head_dim, in) -> Flax (in, heads, head_dim)
        return weight.T.reshape(weight.shape[1], heads, head_dim)

    def bias_back(bias):
        return bias.reshape(heads, head_dim)

    def out_kernel(kernel):  # Flax (heads, head_dim, out) -> torch (out, heads * head_dim)
        return kernel.reshape(heads * head_dim, -1).T

    def out_kernel_back(weight):
        return weight.T.reshape(heads, head_dim, out_features)

    labels = ("q", "k", "v")
    same_size = attention.in_kv_features == attention.in_features
    rules = {("out", "kernel"): ("out_proj.weight", out_kernel, out_kernel_back)}
    for label, part in zip(labels, ("query", "key", "value"), strict=True):
        if same_size:
            rules[(part, "kernel")] = _Part(
                "in_proj_weight", label, labels, _heads_kernel, kernel_back
            )
        else:
            rules[(part, "kernel")] = (f"{label}_proj_weight", _heads_kernel, kernel_back)
        if attention.use_bias:
            rules[(part, "bias")] = _Part("in_proj_bias", label, labels, _heads_bias, bias_back)
    if attention.use_bias:
        rules[("out", "bias")] = ("out_proj.bias", _same, _same)
    if attention.normalize_qk:
        raise PortError(
            f"{where}: nnx.MultiHeadAttention(normalize_qk=True) normalises queries and keys, "
            "which torch's nn.MultiheadAttention does not"
        )
    return rules


def _rnn_rules(rnn, where, suffix="_l0"):
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` layer ``suffix`` <- an ``nnx.RNN`` over a cell with
    torch's two matmuls (``dense_i``, ``dense_h``). LSTM gates are i, f, g, o and GRU gates
    r, z, n on both sides, so the stacked weights transpose whole. Keyed by paths inside it."""
    cell = rnn.cell
    name = type(cell).__name__
    hint = "docs/PORTING.md#trap-folded-lstm-bias"
    if isinstance(cell, nnx.LSTMCell):
        raise PortError(
            f"{where}: nnx.LSTMCell splits the gates into eight Linears and cannot hold "
            "torch's stacked LSTM weights; use jaxnets.layers.LSTMCell (torch's layout)"
        )
    if not (hasattr(cell, "dense_i") and hasattr(cell, "dense_h")):
        raise PortError(f"{where}: no porting rule for an nnx.RNN over {name}")
    has_bias_i = getattr(cell.dense_i, "bias", None) is not None
    has_bias_h = getattr(cell.dense_h, "bias", None) is not None
    if isinstance(cell, nnx.GRUCell) and not has_bias_h:
        raise PortError(
            f"{where}: nnx.GRUCell cannot hold torch's GRU bias_hh{suffix} (its n part, b_hn, "
            "sits inside r * (W_hn h + b_hn)); use jaxnets.layers.GRUCell"
        )
    rules = {
        ("cell", "dense_i", "kernel"): (f"weight_ih{suffix}", _linear, _linear),
        ("cell", "dense_h", "kernel"): (f"weight_hh{suffix}", _linear, _linear),
    }
    biases = (f"bias_ih{suffix}", f"bias_hh{suffix}")
    if has_bias_i and has_bias_h:
        rules[("cell", "dense_i", "bias")] = (biases[0], _same, _same)
        rules[("cell", "dense_h", "bias")] = (biases[1], _same, _same)
    elif has_bias_i or has_bias_h:  # Flax's stock cells: one bias for torch's two
        rules[("cell", "dense_i" if has_bias_i else "dense_h", "bias")] = _Fold(
            biases,
            f"{where}: {name} holds one bias where torch has {biases[0]} and {biases[1]}; "
            "folding them ports the forward pass but trains that bias at half speed: use "
            f"jaxnets.layers.{'LSTMCell' if 'LSTM' in name else 'RNNCell'} ({hint})",
        )
    return rules


def _stack_rules(stack, where):
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` with ``num_layers`` and ``bidirectional`` <- the
    stacks of ``jaxnets.layers`` (``layers[k]`` and ``reverse[k]``): torch's suffixes
    ``_l{k}`` and ``_l{k}_reverse``."""
    rules = {}
    directions = [("layers", "")] + ([("reverse", "_reverse")] if stack.bidirectional else [])
    for attr, tail in directions:
        for k, rnn in enumerate(getattr(stack, attr)):
            for sub, rule in _rnn_rules(rnn, where, f"_l{k}{tail}").items():
                rules[(attr, k, *sub)] = rule
    return rules


def _conv_transpose_rules(conv, where):
    if not conv.transpose_kernel:
        raise PortError(
            f"{where}: nnx.ConvTranspose holds torch's ConvTranspose kernel only with "
            "transpose_kernel=True (otherwise it is unflipped and its in/out axes swapped)"
        )
    return {
        "kernel": ("weight", _conv_transpose, _conv_transpose_back),
        "bias": ("bias", _same, _same),
    }


# layer type -> {nnx attribute or path inside it: (torch name, nnx -> torch, torch -> nnx)},
# or a function (module, where) -> such a dict, for layers whose keys depend on their shape
RULES = {
    nnx.Linear: _LINEAR,
    # Conv1d/2d/3d, strided, dilated, grouped and depthwise alike; nnx.Conv's default padding
    # is 'SAME', torch's 0: pass it explicitly
    nnx.Conv: {"kernel": ("weight", _conv, _conv_back), "bias": ("bias", _same, _same)},
    # needs transpose_kernel=True and padding dilation * (k - 1) - p per side (torch's p)
    nnx.ConvTranspose: _conv_transpose_rules,
    nnx.Embed: {"embedding": ("weight", _same, _same)},
    nnx.RNN: _rnn_rules,
    RecurrentStack: _stack_rules,
    # nn.MultiheadAttention: query, key and value packed in torch, apart in Flax
    nnx.MultiHeadAttention: _attention_rules,
    # nnx.BatchNorm and jaxnets' torch-statistics subclass (which adds num_batches_tracked)
    nnx.BatchNorm: {
        **_AFFINE,
        "mean": ("running_mean", _same, _same),
        "var": ("running_var", _same, _same),
        "num_batches_tracked": ("num_batches_tracked", _int64, _same),
    },
    # nn.LayerNorm / nn.GroupNorm: weight and bias (Flax's default epsilon is 1e-6, torch's 1e-5)
    nnx.LayerNorm: _AFFINE,
    nnx.GroupNorm: _AFFINE,
}

# torch keys a Flax layer may lack without changing what it computes: BatchNorm's counter is
# read only with momentum=None (a cumulative average), which nnx.BatchNorm does not offer
_OPTIONAL = ("num_batches_tracked",)


def _rules(module, where=""):
    """The rules of ``module``'s class or of the nearest base class that has some."""
    for cls in type(module).__mro__:
        if cls in RULES:
            rules = RULES[cls]
            return rules(module, where.rstrip(".") or "the model") if callable(rules) else rules
    return None


def torch_prefix(path, modules):
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


class Table(dict):
    """torch key -> (nnx path, variable, nnx -> torch, torch -> nnx); ``folds`` lists the
    torch key pairs one Flax bias holds the sum of; ``parts`` maps a torch key packed from
    several Flax variables to their keys, ``name[label]``, in order."""

    def __init__(self):
        super().__init__()
        self.folds = []
        self.parts = {}

    def torch_keys(self):
        """The keys of the torch state dict this table ports: packed keys whole."""
        inside = {key for keys in self.parts.values() for key in keys}
        return [key for key in self if key not in inside] + list(self.parts)

    def owner(self, key):
        """The torch key a table key belongs to (itself, or the packed key of a part)."""
        for packed, keys in self.parts.items():
            if key in keys:
                return packed
        return key

    def split(self, state):
        """A torch-named dict with each packed tensor split into its parts' keys."""
        return split_parts(state, self.parts)

    def join(self, state):
        """The reverse of ``split``: parts joined along the first axis under their torch key."""
        out = dict(state)
        for packed, keys in self.parts.items():
            if all(key in out for key in keys):
                out[packed] = np.concatenate([np.asarray(out.pop(key)) for key in keys])
        return out


def split_parts(state, parts):
    """``state`` (torch names) with each packed tensor of ``parts`` (``Table.parts``) split
    along its first axis into its parts' keys; a key may also be ``(name, what)``."""
    out = dict(state)
    for key in list(out):
        name, what = key if isinstance(key, tuple) else (key, None)
        if name in parts:
            pieces = np.split(np.asarray(out.pop(key)), len(parts[name]))
            for part, piece in zip(parts[name], pieces, strict=True):
                out[part if what is None else (part, what)] = piece
    return out


def mapping(model, fold_biases=False):
    """Every ported variable of ``model``: torch key -> (nnx path, variable, to_torch, to_nnx).

    ``fold_biases``: an ``nnx.RNN`` over one of Flax's own cells (one bias where torch has two)
    maps that bias to the sum of torch's two instead of refusing it."""
    modules = dict(nnx.iter_modules(model))
    table = Table()
    rules_of = {}
    for path, module in modules.items():
        rules_of[path] = _rules(module, torch_prefix(path, modules))
    # modules whose rules reach into their children (nnx.RNN's cell) port those children
    owners = [p for p, r in rules_of.items() if r and all(map(_is_path, r))]
    for path, module in modules.items():
        if any(path[: len(p)] == p and path != p for p in owners):
            continue  # ported by the rule of the module that owns it
        prefix = torch_prefix(path, modules)
        rules = rules_of[path]
        if path in owners:
            for sub, child in nnx.iter_modules(module):
                for attr, var in _ported(child).items():
                    key = (*sub, attr)
                    if key not in rules:
                        where = ".".join(map(str, key))
                        raise PortError(f"no porting rule for {type(module).__name__}.{where}")
                    _add(table, prefix, (*path, *key), var, rules[key], fold_biases)
            continue
        for attr, var in _ported(module).items():
            if rules is not None:
                if attr not in rules:
                    raise PortError(f"no porting rule for {type(module).__name__}.{attr}")
                rule = rules[attr]
            else:
                rule = (attr, _same, _same)
            _add(table, prefix, (*path, attr), var, rule, fold_biases)
    return table


def _add(table, prefix, path, var, rule, fold_biases):
    if isinstance(rule, _Part):
        key = f"{prefix}{rule.name}[{rule.label}]"
        table[key] = (path, var, rule.to_torch, rule.to_nnx)
        keys = table.parts.setdefault(prefix + rule.name, [])
        keys.append(key)
        order = [f"{prefix}{rule.name}[{label}]" for label in rule.labels]
        keys.sort(key=lambda k: order.index(k) if k in order else len(order))
        return
    if isinstance(rule, _Fold):
        if not fold_biases:
            raise PortError(rule.message)
        first, second = (prefix + name for name in rule.names)
        table[first] = (path, var, _same, _same)
        table[second] = (path, var, _zeros, _same)
        table.folds.append((first, second))
        return
    name, to_torch, to_nnx = rule
    table[prefix + name] = (path, var, to_torch, to_nnx)


def path_of(keypath):
    """A ``jax.tree_util`` key path into an ``nnx.State`` (or an optimizer state holding one)
    as the module path ``mapping`` uses: ``('layer1', 'layers', 0, 'kernel')``."""
    parts = []
    for entry in keypath:
        if hasattr(entry, "key"):
            parts.append(entry.key)
        elif hasattr(entry, "idx"):
            parts.append(entry.idx)
    return tuple(parts)


def _check_keys(expected, state_dict, source, optional=()):
    """One line naming every missing and unexpected key, for either framework's model."""
    missing = sorted(set(expected) - set(state_dict) - set(optional))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise PortError(f"{source}: {'; '.join(parts)}")


def _check_shape(key, got, want, source):
    got, want = tuple(got), tuple(want)
    if got != want:
        found = _shape_trap(got, want)
        hint = f"; this looks like {found[1]} (docs/PORTING.md#trap-{found[0]})" if found else ""
        raise PortError(f"{source}: {key} has shape {got}, the model expects {want}{hint}")


def _shape_trap(got, want):
    """The porting trap a shape mismatch looks like, ``(id, what)``, or None (both in torch's
    layout: ``got`` the file's, ``want`` the model's)."""
    if len(got) == len(want) == 2 and got == want[::-1]:
        return "transposed-kernel", "a weight stored transposed ((in, out) for torch's (out, in))"
    if len(got) == len(want) >= 3 and got[0] == want[0] and got[2:] == want[2:]:
        if got[1] and want[1] % got[1] == 0:
            groups = want[1] // got[1]
            return "groups", (
                f"a grouped convolution: torch's weight (out, in / groups, ...) has groups="
                f"{groups}; nnx.Conv needs feature_group_count={groups}"
            )
    if len(got) == len(want) == 2 and got[0] == want[0]:
        return "padding", (
            "other features before this layer: convolution padding (torch pads 0, nnx.Conv "
            "'SAME'), pooling, or a flatten of another map"
        )
    return None


def _as_numpy(state_dict):
    """numpy views of a state dict's tensors (torch tensors share their memory: ties show)."""
    out = {}
    for key, value in state_dict.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        out[key] = np.asarray(value)
    return out


def _ties(table, state_dict):
    """Keys of ``state_dict`` the model has no place for that are the very tensor of a key it
    has (torch ties one Parameter under two names, e.g. an output layer sharing the embedding
    that Flax reuses through ``Embed.attend``): {alias: key}."""
    ties = {}
    for alias in set(state_dict) - set(table):
        for key in table:
            a, b = state_dict[alias], state_dict.get(key)
            if b is not None and a.shape == b.shape and np.shares_memory(a, b):
                ties[alias] = key
                break
    return ties


def torch_to_nnx(state_dict, nnx_module, *, dtype=None, fold_biases=False, source="state dict"):
    """Load a torch state dict (tensors or numpy arrays, torch's key names) into ``nnx_module``
    in place, and return it. Keys and shapes must fit, or one ``PortError`` line names them.

    The rules come from the module tree (``RULES``, docs/PORTING.md); torch names a tied
    weight twice, and the second name is accepted when it is the same tensor. BatchNorm's
    ``num_batches_tracked`` may be absent on the Flax side (``nnx.BatchNorm`` has none).
    ``fold_biases=True`` ports an RNN onto Flax's own one-bias cells by folding torch's two
    biases into one: exact for the forward pass, not for training. ``dtype`` casts floats.
    """
    table = mapping(nnx_module, fold_biases=fold_biases)
    arrays = _as_numpy(state_dict)
    ties = _ties(table, arrays)
    arrays = {k: v for k, v in arrays.items() if k not in ties}
    optional = [k for k in arrays if k.rsplit(".", 1)[-1] in _OPTIONAL and k not in table]
    arrays = {k: v for k, v in arrays.items() if k not in optional}
    _check_keys(table.torch_keys(), arrays, source)
    for packed, keys in table.parts.items():  # a packed tensor: its parts stacked on axis 0
        shapes = [table[key][2](np.empty(table[key][1].get_value().shape)).shape for key in keys]
        want = (sum(shape[0] for shape in shapes), *shapes[0][1:])
        _check_shape(packed, np.shape(arrays[packed]), want, source)
    arrays = table.split(arrays)
    for key, (_, var, to_torch, _) in table.items():
        # compare in torch's layout: the one the file and the message speak
        want = to_torch(np.empty(var.get_value().shape)).shape
        _check_shape(key, np.shape(arrays[key]), want, source)
    folded = {second: first for first, second in table.folds}
    values = {}  # one value per Flax variable: a fold sums its two, a tie must agree
    for key, (_, var, _, to_nnx) in table.items():
        array = to_nnx(np.asarray(arrays[key]))
        if key in folded:
            continue
        partner = next((s for f, s in table.folds if f == key), None)
        if partner is not None:
            array = array + table[partner][3](np.asarray(arrays[partner]))
        shared = values.get(id(var))  # two modules holding one Param: torch's tied weight
        if shared is not None and not np.array_equal(shared[1], array):
            raise PortError(
                f"{source}: {shared[0]} and {key} are one shared Flax parameter, "
                "but their torch values differ"
            )
        values[id(var)] = (key, array, var)
    for _, array, var in values.values():
        if dtype is not None and np.issubdtype(array.dtype, np.floating):
            array = array.astype(dtype)
        var.set_value(jnp.asarray(array))
    return nnx_module


def nnx_to_torch(nnx_module):
    """``nnx_module``'s weights and statistics as a torch state dict of numpy arrays, torch's
    key names and layouts (``load_into_torch`` or ``model.load_state_dict`` takes it)."""
    table = mapping(nnx_module, fold_biases=True)
    return table.join(
        {key: to_torch(np.asarray(var.get_value())) for key, (_, var, to_torch, _) in table.items()}
    )


def grads_from_nnx(model, grads):
    """An ``nnx.grad`` result for ``model`` as a torch-named numpy dict (parameters only)."""
    flat = dict(nnx.to_flat_state(grads))
    table = mapping(model, fold_biases=True)
    out = {}
    for key, (path, _, to_torch, _) in table.items():
        if path in flat:
            leaf = flat[path]
            leaf = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
            out[key] = to_torch(np.asarray(leaf))
    return table.join(out)


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
    optional = [k for k in own if k.rsplit(".", 1)[-1] in _OPTIONAL]
    _check_keys(own, state_dict, source, optional)
    for key, value in own.items():
        if key in state_dict:
            _check_shape(key, np.shape(state_dict[key]), value.shape, source)
    # torch's BatchNorm fills a missing num_batches_tracked itself (with its current value)
    model.load_state_dict(
        {k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()},
        strict=not any(k not in state_dict for k in optional),
    )
    return model
