"""Dropout in a check: the same masks on both sides, drawn in numpy, or none at all.

Random masks cannot match draw for draw across frameworks, so a check feeds each dropout site
the same mask on both sides (``mode="masks"``) or switches dropout off (``"off"``). A site is
where torch drops, paired by its torch name with the Flax layer that drops there:

- an ``nn.Dropout`` and the ``nnx.Dropout`` of the same name;
- the attention probabilities of an ``nn.MultiheadAttention`` (its ``dropout``) and of the
  ``nnx.MultiHeadAttention`` of the same name (its ``dropout_rate``);
- between the layers of an ``nn.LSTM`` / ``GRU`` / ``RNN`` with ``dropout`` (``num_layers``
  over 1), sites ``NAME.dropout_layers.K``, and the ``nnx.Dropout`` layers of the same names
  in ``jaxnets.layers``' recurrent stacks (their ``dropout``).

A site called several times in a pass (housing-regularization's ``Net1`` calls its one
``nn.Dropout`` after each of two layers, on two shapes; an attention or a recurrent stack
called twice) gets a mask per call, in call order, each in the shape of its call's input. A
pass is an outermost call of the site's module or of a module holding it (torch's hooks on
them count the calls, from 0 at each pass); the first pass fixes how many calls a pass makes,
and a pass that makes another number is one ``CompareError`` line. The Flax stand-in holds
that many masks and takes them in turn, its count going round once a pass. The count moves
as the calls are traced, so a Flax site inside a loop traced once (``nnx.scan``) counts one
call for all its turns: such a port cannot be paired with torch's calls. One call a pass is
the common case, and its masks are those drawn before sites could be called twice.

torch's attention and stacked recurrent layers drop inside their kernels, out of reach of a
hook: for a check, their forward is the same computation written out with the mask handed
in (``_attention_forward``, ``_stacked_forward``), restored afterwards.
"""

import math

import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx
from flax.nnx.nn.attention import dot_product_attention_weights

from compare import port
from compare.errors import CompareError
from compare.toolkit import engine


class _Mask(engine.Fed):
    """A dropout mask handed in from numpy: neither a parameter nor a statistic."""


class _FedMasks(nnx.Module):
    """The masks a site's stand-in is handed for a step, one per call of the site in a pass
    (torch's count), taken in call order: the count goes round once per pass, so it is back at
    0 between passes (``nnx.jit`` keys its compilations by it, and traces each pass's calls
    in order)."""

    def __init__(self, name):
        self.name = name
        self.masks = nnx.List([])
        self.calls = 0

    def put(self, call, mask):
        if call < len(self.masks):
            self.masks[call].set_value(mask)
        else:
            self.masks.append(_Mask(mask))

    def take(self):
        """The mask of this call (the count moves on to the next)."""
        if not self.masks:
            raise CompareError(f"{self.name}: Flax drops there before torch has")
        call = self.calls
        self.calls = (call + 1) % len(self.masks)
        return self.masks[call][...]


class FedDropout(_FedMasks):
    """Stands in for an ``nnx.Dropout`` during a check: multiplies by the mask handed in for
    this call (torch's layout, moved channels-last where the input is) and scales by
    ``1 / (1 - rate)`` with the Flax layer's own rate; ``off`` passes the input through."""

    def __init__(self, rate, off, name=""):
        super().__init__(name)
        self.rate, self.off = rate, off
        self.deterministic = False

    def __call__(self, x, *, deterministic=None, rngs=None):
        if self.off or self.deterministic or deterministic:
            return x
        call = self.calls
        mask = fed = self.take()
        if mask.shape != x.shape and mask.ndim >= 3:
            mask = jnp.moveaxis(mask, 1, -1)
        if mask.shape != x.shape:
            raise CompareError(
                f"{self.name}: torch's call {call + 1} of {len(self.masks)} in a pass drops a "
                f"{fed.shape} input, Flax's there a {x.shape} one (does Flax call it as often, "
                "in torch's order?)"
            )
        return x * mask / (1 - self.rate)


class FedMaskStream(_FedMasks):
    """Stands in for an ``nnx.MultiHeadAttention``'s random stream during a check: what it
    "draws" is the mask handed in for this call (``fed_attention`` multiplies the attention
    probabilities by it), or nothing when dropout is off."""

    def __init__(self, off, name=""):
        super().__init__(name)
        self.off = off

    def __call__(self):
        return None if self.off else self.take()


def fed_attention(query, key, value, bias=None, mask=None, **options):
    """``nnx.dot_product_attention`` with the probabilities dropped by the fed mask (passed as
    ``dropout_rng``, see ``FedMaskStream``), in the inputs' dtype."""
    weights = dot_product_attention_weights(
        query,
        key,
        bias,
        mask,
        deterministic=True,
        dtype=options.get("dtype"),
        precision=options.get("precision"),
        is_causal=options.get("is_causal", False),
    )  # (batch, heads, q_length, kv_length)
    fed, rate = options.get("dropout_rng"), options.get("dropout_rate", 0.0)
    if fed is not None and not options.get("deterministic") and rate > 0:
        weights = weights * fed / (1 - rate)
    return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=options.get("precision"))


# --- torch: the sites inside a layer, written out --------------------------------------------


def _attention_forward(attention, drops):
    """``nn.MultiheadAttention.forward`` written out, its probabilities dropped by
    ``drops[None]`` (the fed mask, scaled) in training."""

    def forward(
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        if not attention.batch_first:  # (length, batch, features) -> batch first
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        heads, head_dim = attention.num_heads, attention.head_dim
        if attention._qkv_same_embed_dim:
            weights = attention.in_proj_weight.chunk(3)
        else:
            weights = (attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight)
        biases = (
            attention.in_proj_bias.chunk(3) if attention.in_proj_bias is not None else [None] * 3
        )
        q, k, v = (
            F.linear(t, w, b) for t, w, b in zip((query, key, value), weights, biases, strict=True)
        )
        batch, length, kv_length = q.shape[0], q.shape[1], k.shape[1]
        q = q.view(batch, length, heads, head_dim).transpose(1, 2)  # (batch, heads, L, D)
        k = k.view(batch, kv_length, heads, head_dim).transpose(1, 2)  # (batch, heads, S, D)
        v = v.view(batch, kv_length, heads, head_dim).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)  # (batch, heads, L, S)
        if attn_mask is None and is_causal:
            ones = torch.ones(length, kv_length, dtype=torch.bool, device=scores.device)
            attn_mask = ones.triu(1)  # True above the diagonal: the future, left out
        if attn_mask is not None:
            attn_mask = (
                attn_mask.view(-1, heads, length, kv_length) if attn_mask.dim() == 3 else attn_mask
            )
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask
        if key_padding_mask is not None:
            padding = key_padding_mask[:, None, None, :]
            if padding.dtype == torch.bool:
                scores = scores.masked_fill(padding, float("-inf"))
            else:
                scores = scores + padding
        probabilities = torch.softmax(scores, dim=-1)
        if attention.training and attention.dropout > 0:
            probabilities = drops[None](probabilities)
        out = (probabilities @ v).transpose(1, 2).reshape(batch, length, heads * head_dim)
        out = attention.out_proj(out)  # (batch, L, E)
        if not attention.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, probabilities.mean(dim=1) if average_attn_weights else probabilities

    return forward


_RECURRENT = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def _stacked_forward(rnn, drops):
    """``nn.LSTM`` / ``GRU`` / ``RNN`` with ``num_layers`` over 1, one layer at a time (torch's
    own kernel for each), layer ``k``'s output but the last's dropped by ``drops[k]`` in
    training: the dropout torch applies between layers inside its kernel."""
    function = getattr(torch._VF, _RECURRENT[rnn.mode])
    directions = 2 if rnn.bidirectional else 1
    per_layer = len(rnn._flat_weights) // rnn.num_layers

    def forward(x, state=None):
        if isinstance(x, torch.nn.utils.rnn.PackedSequence):
            raise CompareError(
                f"{rnn.mode} over a PackedSequence: its dropout cannot be fed; pass dropout='off'"
            )
        batch_axis = 0 if rnn.batch_first else 1
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(batch_axis)
        size = (rnn.num_layers * directions, x.shape[batch_axis], rnn.hidden_size)
        lstm = rnn.mode == "LSTM"
        if state is None:
            zeros = x.new_zeros(size)
            state = (zeros, zeros.clone()) if lstm else zeros
        elif not batched:
            state = tuple(s.unsqueeze(1) for s in state) if lstm else state.unsqueeze(1)
        finals = []
        for k in range(rnn.num_layers):
            weights = rnn._flat_weights[k * per_layer : (k + 1) * per_layer]
            rows = slice(k * directions, (k + 1) * directions)
            layer_state = (state[0][rows], state[1][rows]) if lstm else state[rows]
            if lstm:
                out, h, c = function(
                    x,
                    layer_state,
                    weights,
                    rnn.bias,
                    1,
                    0.0,
                    rnn.training,
                    rnn.bidirectional,
                    rnn.batch_first,
                )
                finals.append((h, c))
            else:
                out, h = function(
                    x,
                    layer_state,
                    weights,
                    rnn.bias,
                    1,
                    0.0,
                    rnn.training,
                    rnn.bidirectional,
                    rnn.batch_first,
                )
                finals.append(h)
            x = drops[k](out) if rnn.training and k < rnn.num_layers - 1 else out
        if lstm:
            final = (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
        else:
            final = torch.cat(finals)
        if not batched:
            x = x.squeeze(batch_axis)
            final = tuple(f.squeeze(1) for f in final) if lstm else final.squeeze(1)
        return x, final

    return forward


# --- the feed --------------------------------------------------------------------------------


class DropoutFeed:
    """Pairs every dropout site of the torch model with the Flax layer that drops there (by
    name) and, for a check, makes both drop alike: each step, the mask of a site's ``k``-th
    call in a pass is drawn in numpy (from the seed, the step, the site and ``k``) when torch
    first drops there, in the shape of that call's input, and handed to the Flax side, whose
    stand-in takes its masks in call order; ``off``, neither drops. A pass is an outermost
    call of the site's module or of a module holding it (the model, or a net of a dict of
    nets); each pass of a step drops alike. ``also``: more torch models with the same module
    names (the check's reference), made to drop alike. ``remove`` puts everything back."""

    def __init__(self, torch_model, flax_model, mode, seed, np_dtype, also=()):
        self.mode, self.seed, self.np_dtype = mode, seed, np_dtype
        self.step, self.masks = None, {}
        # torch's calls of each site in the pass under way, and per pass (from the first)
        self.calls, self.per_pass, self.depth = {}, {}, 0
        self.restore, self.stand_ins, self.kinds = [], {}, {}
        self.site_modules = set()
        torch_sites = self._torch_sites(torch_model, also)
        flax_sites = self._flax_sites(flax_model)
        if sorted(torch_sites) != sorted(flax_sites):
            raise CompareError(
                f"dropout differs: torch drops at {sorted(torch_sites)}, "
                f"Flax at {sorted(flax_sites)}"
            )
        self.names = sorted(torch_sites)
        for index, name in enumerate(self.names):
            kind, p, install = torch_sites[name]
            self.kinds[name] = kind
            self.stand_ins[name] = flax_sites[name](mode == "off", name)
            install(self._drop(name, index, p))
        if mode == "masks" and self.names:
            self._count_passes([torch_model, *also])

    # torch: {name: (kind, p, install(drop))}, drop(tensor) -> the tensor dropped
    def _torch_sites(self, model, also=()):
        sites = {}
        twins = [dict(other.named_modules()) for other in also]
        for name, module in model.named_modules():
            alike = [module] + [other[name] for other in twins]
            if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
                if self.mode == "masks" and type(module) is not torch.nn.Dropout:
                    raise CompareError(
                        f"{name}: {type(module).__name__} masks cannot be fed; pass dropout='off'"
                    )
                sites[name] = ("dropout", module.p, self._hook(alike))
                self.site_modules.add(name)
            elif isinstance(module, torch.nn.MultiheadAttention) and module.dropout > 0:
                if module.bias_k is not None or module.add_zero_attn:
                    raise CompareError(
                        f"{name}: nn.MultiheadAttention(add_bias_kv/add_zero_attn) has no Flax twin"
                    )
                if self.mode == "off":  # torch's own forward, dropping nothing
                    install = self._zero(alike)
                else:
                    install = self._patch(alike, _attention_forward)
                sites[name] = ("attention probabilities", module.dropout, install(None))
                self.site_modules.add(name)
            elif (
                isinstance(module, torch.nn.RNNBase)
                and module.dropout > 0
                and module.num_layers > 1
            ):
                if module.proj_size:
                    raise CompareError(f"{name}: an LSTM's proj_size has no Flax twin")
                install = (
                    self._zero(alike)
                    if self.mode == "off"
                    else self._patch(alike, _stacked_forward)
                )
                self.site_modules.add(name)
                for k in range(module.num_layers - 1):
                    sites[f"{name}.dropout_layers.{k}"] = (
                        "between layers",
                        module.dropout,
                        install(k),
                    )
        return sites

    def _hook(self, modules):
        def install(drop):
            for module in modules:
                if getattr(module, "inplace", False):
                    # an in-place dropout has overwritten its input with torch's own random
                    # mask before the hook sees it: out of place meanwhile (the same numbers)
                    module.inplace = False
                    self.restore.append(lambda m=module: setattr(m, "inplace", True))
                handle = module.register_forward_hook(
                    lambda m, inputs, output: drop(inputs[0]) if m.training else None
                )
                self.restore.append(handle.remove)

        return install

    def _count_passes(self, models):
        """Hooks on each site's module and the modules holding it, in every torch model: the
        outermost call of one starts a pass (its calls counted from 0) and ends it (the
        counts held to the first pass's)."""
        holders = {""}
        for name in self.site_modules:
            parts = name.split(".")
            holders.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
        for model in models:
            for name in sorted(holders):
                module = model.get_submodule(name)
                for handle in (
                    module.register_forward_pre_hook(self._enter),
                    module.register_forward_hook(self._leave),
                ):
                    self.restore.append(handle.remove)

    def _enter(self, module, inputs):
        if self.depth == 0:
            self.calls = {}
        self.depth += 1

    def _leave(self, module, inputs, output):
        self.depth -= 1
        if self.depth:
            return
        for name, count in self.calls.items():
            first = self.per_pass.setdefault(name, count)
            if count != first:
                raise CompareError(
                    f"{name}: {count} calls in a pass, {first} in the first: "
                    "its masks cannot be paired by call; pass dropout='off'"
                )

    def _zero(self, modules):
        """``install(site)(drop)`` for "off": the modules' ``dropout`` set to 0 meanwhile."""

        def install(site):
            def put(drop):
                for module in modules:
                    if module.dropout:
                        rate, module.dropout = module.dropout, 0.0
                        self.restore.append(lambda m=module, r=rate: setattr(m, "dropout", r))

            return put

        return install

    def _patch(self, modules, forward):
        """For modules whose dropout runs inside their kernel: ``install(site)(drop)`` gives
        their site ``site`` the drop, their forward written out for the check at the first."""
        drops = {}

        def install(site):
            def put(drop):
                if not drops:
                    for module in modules:
                        module.forward = forward(module, drops)
                        self.restore.append(lambda m=module: vars(m).pop("forward", None))
                drops[site] = drop

            return put

        return install

    # Flax: {name: stand_in(off) -> a holder of the mask}
    def _flax_sites(self, model):
        modules = dict(nnx.iter_modules(model))
        sites = {}
        for path, module in modules.items():
            name = port.torch_prefix(path, modules).rstrip(".")
            # rate 0 drops nothing, and torch's side skips p = 0 alike
            if isinstance(module, nnx.Dropout) and module.rate > 0 and path:
                sites[name] = self._swap_dropout(modules[path[:-1]], path[-1], module)
            elif isinstance(module, nnx.MultiHeadAttention) and module.dropout_rate > 0:
                sites[name] = self._swap_attention(module)
        return sites

    def _swap_dropout(self, parent, key, original):
        def stand_in(off, name):
            fed = FedDropout(original.rate, off=off, name=name)
            _put(parent, key, fed)
            self.restore.append(lambda: _put(parent, key, original))
            return fed

        return stand_in

    def _swap_attention(self, attention):
        """Masks: the layer's stream hands out the fed mask, and ``fed_attention`` (torch's
        arithmetic) drops the probabilities by it, in place of the layer's ``attention_fn``.
        Off: no dropout, the layer's own ``attention_fn``."""

        def stand_in(off, name):
            stream, function, rate = attention.rngs, attention.attention_fn, attention.dropout_rate
            fed = FedMaskStream(off=off, name=name)
            if off:
                attention.dropout_rate = 0.0
            else:
                attention.rngs, attention.attention_fn = fed, fed_attention
            self.restore.append(
                lambda: _set(attention, rngs=stream, attention_fn=function, dropout_rate=rate)
            )
            return fed

        return stand_in

    def begin(self, step):
        """Before a step (and before the probe): between passes, each Flax stand-in's count
        is back at 0 unless the Flax side calls its site another number of times per pass
        than torch does."""
        for name, stand_in in self.stand_ins.items():
            if stand_in.calls:
                raise CompareError(
                    f"{name}: Flax drops there another number of times a pass than torch "
                    f"({len(stand_in.masks)})"
                )
        self.calls, self.depth = {}, 0  # after a pass that raised: none is under way
        if step != self.step:
            self.step, self.masks = step, {}

    def _drop(self, name, index, p):
        """What torch's side of site ``name`` does to a tensor: the step's mask for this call
        of the site in the pass (drawn the first time, handed to the Flax side), scaled;
        nothing when dropout is off."""

        def drop(x):
            if self.mode == "off":
                return x
            call = self.calls.get(name, 0)
            self.calls[name] = call + 1
            first = self.per_pass.get(name)
            if first is not None and call >= first:
                raise CompareError(
                    f"{name}: more than {first} calls in a pass, {first} in the first: "
                    "its masks cannot be paired by call; pass dropout='off'"
                )
            if (name, call) not in self.masks:
                # a site's first call draws what it drew before sites could be called twice
                seeds = [self.seed, 7, self.step or 0, index] + ([call] if call else [])
                rng = np.random.default_rng(seeds)
                keep = (rng.random(tuple(x.shape)) >= p).astype(self.np_dtype)
                self.masks[name, call] = keep
                self.stand_ins[name].put(call, jnp.asarray(keep))
            mask = self.masks[name, call]
            if mask.shape != tuple(x.shape):
                raise CompareError(
                    f"{name} drops a {tuple(x.shape)} input at call {call + 1} of a pass and a "
                    f"{mask.shape} one at the same call of another pass in the step; "
                    "pass dropout='off'"
                )
            return x * torch.from_numpy(mask).to(x.dtype) / (1 - p)

        return drop

    def remove(self):
        for undo in reversed(self.restore):
            undo()
        self.restore = []

    def describe(self):
        if not self.names:
            return "none"
        how = "masks fed from numpy" if self.mode == "masks" else "off"
        return f"{how}: {', '.join(self._describe_site(name) for name in self.names)}"

    def _describe_site(self, name):
        notes = [] if self.kinds[name] == "dropout" else [self.kinds[name]]
        if self.per_pass.get(name, 1) > 1:
            notes.append(f"{self.per_pass[name]} calls a pass")
        return f"{name} ({', '.join(notes)})" if notes else name


def _put(parent, key, module):
    if isinstance(key, int) or isinstance(parent, nnx.Dict):
        parent[key] = module
    else:
        setattr(parent, key, module)


def _set(module, **values):
    for key, value in values.items():
        setattr(module, key, value)
