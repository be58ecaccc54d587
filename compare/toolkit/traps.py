"""The known porting traps, and how ``compare.check`` recognises one behind a divergence.

Each trap has a row in docs/PORTING.md (``TRAPS``: id -> anchor and one line). A hint is only
given when the pattern is found, never guessed from the tensor's name alone:

- a layer configured differently on the two sides (``audit``: padding, stride, dilation,
  groups, BatchNorm momentum and variance, normalisation eps, dropout rate, a Flax layer that
  computes in float32) is named when the forward pass, the gradients or its statistics part;
- a forward pass that parts at the first step is tried again with each known wrong port undone
  (``forward_hypotheses``: a kernel transposed, a kernel flipped, an NHWC flatten before a
  Linear); the one that makes the two sides agree is the hint;
- parameters that part while the gradients agree are the optimizer's: the JAX side's updates
  are replayed through torch's optimizer translated exactly and through each near miss
  (``OptimizerWitness``: eps inside the root, coupled or decoupled weight decay, dampening,
  default betas, Adagrad's start); the one that reproduces them is the hint;
- a folded RNN bias (``port.torch_to_nnx(fold_biases=True)``) that parts after an update.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

from compare import optim, port
from compare.diff import rel_diff
from compare.toolkit import engine
from compare.toolkit.dropout import fed_attention
from jaxnets.layers import BatchNorm, dot_product_attention

DOC = "docs/PORTING.md"

TRAPS = {
    "transposed-kernel": "a weight used transposed: torch's Linear weight is (out, in), "
    "a Flax kernel (in, out)",
    "flipped-kernel": "a convolution kernel flipped: torch's Conv is a cross-correlation "
    "(as lax.conv); a true convolution (scipy.signal, jnp.convolve) flips it",
    "padding": "convolution padding: torch pads 0 (VALID) unless told, nnx.Conv pads 'SAME'",
    "conv-config": "convolution stride, dilation or groups differ",
    "flatten-order": "flatten order before a Linear: torch flattens NCHW (channels first), "
    "a Flax feature map is NHWC",
    "batchnorm-momentum": "BatchNorm momentum: torch's weighs the new batch (0.1), "
    "Flax's the old statistic (0.9; its default 0.99)",
    "batchnorm-variance": "BatchNorm running variance: torch keeps the unbiased batch "
    "variance, nnx.BatchNorm the biased one (jaxnets.layers.BatchNorm keeps torch's)",
    "norm-eps": "normalisation eps: nnx.LayerNorm and nnx.GroupNorm default to 1e-6, torch's "
    "norms to 1e-5 (nnx.BatchNorm's epsilon, jaxnets.layers.BatchNorm's eps)",
    "dropout-rate": "dropout rate: torch's p and nnx.Dropout's rate are both the fraction dropped",
    "float32-layer": "a Flax layer computes in float32 (its dtype), rounding float64 inputs",
    "folded-lstm-bias": "folded RNN biases: one Flax bias for torch's b_ih + b_hh trains at "
    "half speed (jaxnets.layers.LSTMCell / RNNCell keep both)",
    "eps-placement": "eps placement: torch adds eps after the square root, optax's rmsprop "
    "and adagrad put it inside (eps_in_sqrt)",
    "weight-decay": "weight decay: torch's Adam/SGD/RMSprop add it to the gradient (coupled, "
    "L2); AdamW and optax.adamw decouple it; AdamW's defaults differ (1e-2 vs 1e-4)",
    "momentum-dampening": "SGD dampening: optax's trace has none",
    "adam-betas": "Adam betas not passed through (optax's default b2 is 0.999)",
    "adagrad-start": "Adagrad's accumulator starts at 0 in torch, 0.1 in optax",
    "optimizer": "the optax transformation does not take torch's steps; "
    "compare.optim.to_optax(torch_optimizer) does",
    "random-forward": "torch's forward draws random numbers in train mode (functional dropout, "
    "noise): feed them from numpy (a batch's third element) or switch them off",
    "gelu-approximate": "GELU: torch's is exact unless approximate='tanh'; nnx.gelu and "
    "jax.nn.gelu default to the tanh approximation: pass approximate=False",
    "relu6": "ReLU6: torch clips at 6 (nn.ReLU6, F.relu6); nnx.relu does not: jnp.clip(x, 0, 6)",
    "conv-transpose-padding": "transposed-convolution padding: torch's padding p crops the "
    "output; nnx.ConvTranspose(transpose_kernel=True) pads its input by dilation * (k - 1) - p "
    "per side",
    "groups": "grouped convolution: torch's groups (depthwise: groups = channels) is "
    "nnx.Conv's feature_group_count; without it the kernel holds every input channel",
    "pool-padding": "pooling: torch's MaxPool pads with -inf (padding=p) and ceil_mode rounds "
    "the output size up, AvgPool counts the padding unless count_include_pad=False; "
    "nnx.max_pool / avg_pool pad as told (padding=((p, p), ...)), never round up",
    "align-corners": "resizing: torch's interpolate / Upsample with align_corners=True maps "
    "the corner pixels onto each other; jax.image.resize samples half-pixel centres "
    "(align_corners=False)",
    "attention-fn": "attention arithmetic: torch scales the scores by 1/sqrt(head_dim) and "
    "takes the softmax in the inputs' dtype; Flax's default attention_fn runs float64 in "
    "float32 (jax.nn.dot_product_attention), a hand-written one may scale otherwise: pass "
    "attention_fn=jaxnets.layers.dot_product_attention",
    "attention-mask": "attention masks: torch's key_padding_mask and boolean attn_mask are "
    "True where a key is left out; a Flax mask (nnx.MultiHeadAttention(mask=...), "
    "nnx.make_attention_mask) is True where it is attended: pass the negation, "
    "~padding[:, None, None, :] for torch's key_padding_mask",
    "broadcast-dropout": "attention dropout: torch draws a mask per element; "
    "nnx.MultiHeadAttention's broadcast_dropout=True (its default) shares one across the "
    "batch and the heads: pass broadcast_dropout=False",
}


def hint(trap, detail):
    """One line: what was found, the trap, and its row in docs/PORTING.md."""
    return f"{detail}: {TRAPS[trap]} ({DOC}#trap-{trap})"


# --- static audit: the same layer configured differently ------------------------------------


def _pairs(torch_model, flax_model):
    """``[(torch prefix, torch module, nnx module)]`` for the layers both models name alike."""
    modules = dict(nnx.iter_modules(flax_model))
    flax_by_name = {port.torch_prefix(p, modules).rstrip("."): m for p, m in modules.items()}
    return [
        (name, module, flax_by_name[name])
        for name, module in torch_model.named_modules()
        if name in flax_by_name
    ]


def _tuple(value, n):
    return tuple(value) if isinstance(value, tuple | list) else (value,) * n


def _flax_padding(conv, n):
    """nnx.Conv's padding as (low, high) per spatial axis, or None when it depends on the
    input size ('SAME' with a stride)."""
    padding = conv.padding
    kernel = _tuple(conv.kernel_size, n)
    dilation = _tuple(conv.kernel_dilation or 1, n)
    strides = _tuple(conv.strides or 1, n)
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return ((0, 0),) * n
        if padding.upper() == "SAME" and all(s == 1 for s in strides):
            totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            return tuple((t // 2, t - t // 2) for t in totals)
        return None
    if isinstance(padding, int):
        return ((padding, padding),) * n
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def _torch_padding(conv):
    n = len(conv.kernel_size)
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return ((0, 0),) * n
        totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in conv.padding)


def audit(torch_model, flax_model, dtype):
    """``{torch prefix: [(trap, detail)]}``: what is configured differently, layer by layer."""
    found = {}

    def note(name, trap, detail):
        found.setdefault(name, []).append((trap, f"{name or 'the model'}: {detail}"))

    for name, t, f in _pairs(torch_model, flax_model):
        if isinstance(t, torch.nn.modules.conv._ConvTransposeNd) and isinstance(
            f, nnx.ConvTranspose
        ):
            want = tuple(
                (d * (k - 1) - p, d * (k - 1) - p)
                for k, d, p in zip(t.kernel_size, t.dilation, t.padding, strict=True)
            )
            got = _flax_padding(f, len(t.kernel_size))
            if got != want:
                shown = f.padding if isinstance(f.padding, str) else got
                note(
                    name,
                    "conv-transpose-padding",
                    f"torch padding {tuple(t.padding)} is nnx.ConvTranspose padding {want}, "
                    f"not {shown}",
                )
        elif isinstance(t, torch.nn.modules.conv._ConvNd) and isinstance(f, nnx.Conv):
            n = len(t.kernel_size)
            flax_pad = _flax_padding(f, n)
            if t.padding_mode != "zeros":
                note(name, "padding", f"torch pads with {t.padding_mode!r}, nnx.Conv with zeros")
            elif flax_pad != _torch_padding(t):
                shown = f.padding if isinstance(f.padding, str) else flax_pad
                note(name, "padding", f"torch pads {_torch_padding(t)}, nnx.Conv {shown}")
            if _tuple(f.strides or 1, n) != tuple(t.stride):
                note(name, "conv-config", f"stride {tuple(t.stride)} vs strides {f.strides}")
            if _tuple(f.kernel_dilation or 1, n) != tuple(t.dilation):
                note(name, "conv-config", f"dilation {t.dilation} vs {f.kernel_dilation}")
            if (f.feature_group_count or 1) != t.groups:
                note(
                    name,
                    "groups",
                    f"groups {t.groups} vs feature_group_count {f.feature_group_count}",
                )
        if isinstance(t, torch.nn.modules.batchnorm._BatchNorm) and isinstance(f, nnx.BatchNorm):
            if t.momentum is None or not np.isclose(f.momentum, 1 - t.momentum, rtol=1e-12):
                if isinstance(f, BatchNorm):  # torch's convention: momentum as torch's
                    detail = (
                        f"torch momentum {t.momentum}, jaxnets.layers.BatchNorm momentum "
                        f"{1 - f.momentum:g} (it takes torch's: pass momentum={t.momentum})"
                    )
                else:
                    detail = (
                        f"torch momentum {t.momentum} is nnx.BatchNorm momentum "
                        f"{None if t.momentum is None else 1 - t.momentum}, not {f.momentum}"
                    )
                note(name, "batchnorm-momentum", detail)
            if not isinstance(f, BatchNorm):
                note(name, "batchnorm-variance", "nnx.BatchNorm keeps the biased variance")
            if not np.isclose(f.epsilon, t.eps, rtol=1e-12):
                note(name, "norm-eps", f"eps {t.eps} vs epsilon {f.epsilon}")
        if isinstance(t, torch.nn.LayerNorm | torch.nn.GroupNorm) and isinstance(
            f, nnx.LayerNorm | nnx.GroupNorm
        ):
            if not np.isclose(f.epsilon, t.eps, rtol=1e-12):
                note(name, "norm-eps", f"eps {t.eps} vs epsilon {f.epsilon}")
        if isinstance(t, torch.nn.Dropout) and isinstance(f, nnx.Dropout):
            if not np.isclose(f.rate, t.p, rtol=1e-12):
                note(name, "dropout-rate", f"torch p {t.p}, nnx.Dropout rate {f.rate}")
        if isinstance(t, torch.nn.MultiheadAttention) and isinstance(f, nnx.MultiHeadAttention):
            if not np.isclose(f.dropout_rate, t.dropout, rtol=1e-12):
                note(
                    name,
                    "dropout-rate",
                    f"torch dropout {t.dropout}, dropout_rate {f.dropout_rate}",
                )
            if f.attention_fn is nnx.dot_product_attention and dtype == "float64":
                note(name, "attention-fn", "nnx.MultiHeadAttention's default attention_fn")
        if isinstance(t, torch.nn.RNNBase) and t.num_layers > 1 and hasattr(f, "dropout_layers"):
            rate = f.dropout_layers[0].rate if len(f.dropout_layers) else 0.0
            if not np.isclose(rate, t.dropout, rtol=1e-12):
                note(name, "dropout-rate", f"torch dropout {t.dropout} between layers, {rate}")
    for name, t in torch_model.named_modules():  # what the Flax side does in functions
        if isinstance(t, torch.nn.modules.pooling._MaxPoolNd | torch.nn.modules.pooling._AvgPoolNd):
            padded = any(p != 0 for p in _tuple(t.padding, 1))
            if padded or t.ceil_mode:
                note(
                    name,
                    "pool-padding",
                    f"{type(t).__name__}(padding={t.padding}, ceil_mode={t.ceil_mode})",
                )
        if isinstance(t, torch.nn.Upsample) and t.align_corners:
            note(name, "align-corners", f"Upsample(mode={t.mode!r}, align_corners=True)")
    if dtype == "float64":
        for path, module in nnx.iter_modules(flax_model):
            compute = getattr(module, "dtype", None)
            if compute is not None and jnp.dtype(compute) == jnp.float32:
                name = port.torch_prefix(path, dict(nnx.iter_modules(flax_model))).rstrip(".")
                note(name, "float32-layer", f"{type(module).__name__}(dtype=float32)")
    return found


# --- forward hypotheses: a wrong port undone --------------------------------------------------


def _convs_out_features(flax_model):
    return sorted(
        {m.out_features for _, m in nnx.iter_modules(flax_model) if isinstance(m, nnx.Conv)}
    )


def _flatten_fixes(flax_model, table):
    """For a Linear after convolutions: its kernel's rows reordered from torch's (C, *spatial)
    flatten order to NHWC's (*spatial, C), for each way its input may factor."""
    channels = _convs_out_features(flax_model)
    for key, (path, var, _, _) in table.items():
        if not key.endswith("weight") or path[-1] != "kernel" or var.get_value().ndim != 2:
            continue
        rows = var.get_value().shape[0]
        for c in channels:
            if rows % c or rows == c:
                continue
            q = rows // c
            shapes = [(q,)] + [(h, q // h) for h in range(1, q + 1) if q % h == 0 and 1 < h < q]
            for spatial in shapes:

                def fix(k, c=c, spatial=spatial):
                    axes = tuple(range(1, len(spatial) + 1))
                    reordered = k.reshape(c, *spatial, -1).transpose(*axes, 0, len(spatial) + 1)
                    return reordered.reshape(k.shape)

                yield key, var, fix, f"{key.rsplit('.', 1)[0]} reads a (C={c}, {spatial}) map"


def forward_hypotheses(pair, context, tolerance):
    """The first known wrong port which, undone on the JAX side, makes the forward outputs
    agree at this step: a hint, or None."""
    torch_out = context.get("torch_output")
    if torch_out is None:
        return None
    jm = pair.jax.model
    x = context["jax_inputs"][0]
    forward = engine.jitted_forward()
    table = port.mapping(jm, fold_biases=True)

    def agrees_with(var, value):
        restore = engine.jax_snapshot(jm)
        old = var.get_value()
        var.set_value(jnp.asarray(value))
        try:
            out = engine.match_layout(np.asarray(forward(jm, x)), torch_out)
        except Exception:  # a modified kernel the model cannot run: not this hypothesis
            out = None
        finally:
            var.set_value(old)
            restore()
        return out is not None and rel_diff(out, torch_out) <= tolerance

    seen = set()
    candidates = []
    for key, (_, var, _, _) in table.items():
        value = np.asarray(var.get_value())
        if id(var) in seen or not np.issubdtype(value.dtype, np.floating):
            continue
        seen.add(id(var))
        if value.ndim == 2 and value.shape[0] == value.shape[1]:
            candidates.append(("transposed-kernel", var, value.T, f"{key} is used transposed"))
        if value.ndim >= 3:
            spatial_last = tuple(range(2, value.ndim))  # torch layout (out, in, *spatial)
            spatial_first = tuple(range(value.ndim - 2))  # Flax layout (*spatial, in, out)
            for axes in (spatial_first, spatial_last):
                candidates.append(
                    ("flipped-kernel", var, np.flip(value, axes), f"{key} is used flipped")
                )
    for _key, var, fix, detail in _flatten_fixes(jm, table):
        candidates.append(("flatten-order", var, fix(np.asarray(var.get_value())), detail))
    for trap, var, value, detail in candidates:
        if agrees_with(var, value):
            return hint(trap, detail)
    return function_hypotheses(pair, context, tolerance)


_GELU = jax.nn.gelu


def _exact_gelu(x, approximate=False):
    return _GELU(x, approximate=False)


def _relu6(x):
    return jnp.clip(x, 0.0, 6.0)


# where a Flax model reaches its activations: each is patched while a hypothesis runs
_ACTIVATION_HOMES = (jax.nn, nnx)


def function_hypotheses(pair, context, tolerance):
    """The first known wrong function which, replaced on the JAX side, makes the forward
    outputs agree: tanh GELU for torch's exact one, ReLU where torch clips at 6 (when the torch
    model has a ReLU6), an attention computed otherwise than torch's or with its mask negated.
    A hint, or None."""
    torch_out = context["torch_output"]
    tm, jm = pair.torch.model, pair.jax.model
    x = context["jax_inputs"][0]
    candidates = [
        ("gelu-approximate", "the JAX side's GELU is the tanh approximation", "gelu", _exact_gelu)
    ]
    if any(isinstance(m, torch.nn.ReLU6) for m in tm.modules()):
        candidates.append(("relu6", "the JAX side's ReLU does not clip at 6", "relu", _relu6))
    attentions = [m for _, m in nnx.iter_modules(jm) if isinstance(m, nnx.MultiHeadAttention)]
    for trap, detail, name, replacement in candidates:
        originals = [(home, getattr(home, name)) for home in _ACTIVATION_HOMES]
        try:
            for home, _ in originals:
                setattr(home, name, replacement)
            if _eager_agrees(jm, x, torch_out, tolerance):
                return hint(trap, detail)
        finally:
            for home, original in originals:
                setattr(home, name, original)
    if attentions:
        originals = [(m, m.attention_fn) for m in attentions]
        try:
            for m in attentions:
                if m.attention_fn is not fed_attention:  # a fed one is torch's arithmetic
                    m.attention_fn = dot_product_attention
            if _eager_agrees(jm, x, torch_out, tolerance):
                return hint("attention-fn", "the JAX side's attention computes otherwise")
            for m, original in originals:
                m.attention_fn = _mask_negated(original)
            if _eager_agrees(jm, x, torch_out, tolerance):
                return hint("attention-mask", "the JAX side's attention mask is negated")
        finally:
            for m, original in originals:
                m.attention_fn = original
    return None


def _mask_negated(attention_fn):
    """``attention_fn`` given the negation of the mask it is handed (None stays None)."""

    def negated(query, key, value, bias=None, mask=None, **options):
        return attention_fn(query, key, value, bias, None if mask is None else ~mask, **options)

    return negated


def _eager_agrees(model, x, torch_out, tolerance):
    """Whether ``model(x)``, run op by op (a patched function is looked up afresh), gives
    torch's output; statistics put back."""
    restore = engine.jax_snapshot(model)
    try:
        out = engine.match_layout(np.asarray(engine.first_output(engine.call(model, x))), torch_out)
    except Exception:  # the model cannot run this way: not this hypothesis
        return False
    finally:
        restore()
    return rel_diff(out, torch_out) <= tolerance


def torch_is_random(pair, context):
    """Whether two train-mode forward passes of the torch model on one batch differ."""
    tm, x = pair.torch.model, context["torch_inputs"][0]
    if not engine.has_forward(tm):
        return False
    restore = engine.torch_snapshot(tm)
    with torch.no_grad():
        first = engine.to_numpy(engine.first_output(engine.call(tm, x)))
        restore()
        second = engine.to_numpy(engine.first_output(engine.call(tm, x)))
        restore()
    return not np.array_equal(first, second)


# --- optimizer witnesses: the JAX updates replayed through torch's rule and its near misses ---


def near_misses(torch_optimizer, exact=None, lr=None):
    """``(exact, [(trap, detail, optax transformation)])``: the optax twin of
    ``torch_optimizer`` (one parameter group; ``exact`` when already built) and its plausible
    wrong ports, each at the learning rate ``lr`` (the group's, or the schedule a scheduler
    makes of it)."""
    g = torch_optimizer.param_groups[0]
    name = type(torch_optimizer).__name__
    lr, wd = g["lr"] if lr is None else lr, g.get("weight_decay", 0)
    misses = []

    def miss(trap, detail, tx):
        misses.append((trap, f"the optax side behaves like {detail}", tx))

    if name in ("Adam", "AdamW"):
        b1, b2 = g["betas"]
        eps = g["eps"]
        decoupled = name == "AdamW" or g.get("decoupled_weight_decay", False)
        if wd and not decoupled:
            miss(
                "weight-decay",
                "optax.adamw (decoupled decay) where torch's Adam adds it to the gradient",
                optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd),
            )
        if wd and decoupled:
            coupled = optax.chain(optax.add_decayed_weights(wd), optax.adam(lr, b1, b2, eps))
            miss(
                "weight-decay",
                "a coupled decay (added to the gradient) where AdamW decouples",
                coupled,
            )
            miss(
                "weight-decay",
                "optax.adamw's default weight_decay=1e-4",
                optax.adamw(lr, b1=b1, b2=b2, eps=eps),
            )
        if (b1, b2) != (0.9, 0.999):
            base = (
                optax.adamw(lr, eps=eps, weight_decay=wd) if decoupled else optax.adam(lr, eps=eps)
            )
            if wd and not decoupled:
                base = optax.chain(optax.add_decayed_weights(wd), base)
            miss("adam-betas", "optax's default betas (0.9, 0.999)", base)
    if name == "RMSprop":
        tx = optax.rmsprop(
            lr,
            decay=g["alpha"],
            eps=g["eps"],
            centered=g["centered"],
            momentum=g["momentum"] or None,
        )
        if wd:
            tx = optax.chain(optax.add_decayed_weights(wd), tx)
        miss("eps-placement", "optax.rmsprop's eps inside the square root", tx)
    if name == "Adagrad":
        tx = optax.adagrad(
            lr, initial_accumulator_value=g["initial_accumulator_value"], eps=g["eps"]
        )
        miss("eps-placement", "optax.adagrad's eps inside the square root", tx)
        miss(
            "adagrad-start",
            "optax.adagrad's accumulator starting at 0.1",
            optax.adagrad(lr, eps=g["eps"]),
        )
    if name == "SGD":
        momentum = g["momentum"]
        if momentum and g["dampening"]:
            miss(
                "momentum-dampening",
                f"sgd(momentum={momentum}) without torch's dampening={g['dampening']}",
                optax.sgd(lr, momentum=momentum, nesterov=g["nesterov"]),
            )
        if wd:
            miss(
                "weight-decay",
                "a decoupled decay (optax.add_decayed_weights after the momentum)",
                optax.chain(
                    optax.trace(momentum, nesterov=g["nesterov"]) if momentum else optax.identity(),
                    optax.add_decayed_weights(wd),
                    optax.scale_by_learning_rate(lr),
                ),
            )
    return exact or optim.to_optax(torch_optimizer), misses


class OptimizerWitness:
    """Replays the JAX side's gradients through torch's rule and each near miss, step by step,
    from the JAX side's parameters; ``explain`` names the one that reproduces its updates."""

    def __init__(self, torch_optimizer, params, tolerance, exact=None, lr=None):
        self.exact, misses = near_misses(torch_optimizer, exact, lr)
        self.tolerance = tolerance
        self.keys = sorted(params)
        # a state per parameter: torch's rules (and optax's twins of them) are elementwise,
        # so each parameter's replay needs its own arrays only, never a copy of the whole
        # model per stage of the update (a vgg's is a GB in float64)
        runs = [("exact", None, self.exact), *misses]
        self.runs = [[trap, detail, tx, {}, 0.0] for trap, detail, tx in runs]
        for k in self.keys:
            start = {k: jnp.asarray(params[k])}
            for run in self.runs:
                run[3][k] = run[2].init(start)

    def __call__(self, step, seen):
        before, after, grads = seen["jax_before"], seen["jax_after"], seen["jax_grads"]
        for k in self.keys:
            # numpy as the step left them (views of the JAX side's arrays): each rule makes
            # the JAX arrays it needs, no copy of them is held across the runs
            params, updates_in = {k: before[k]}, {k: grads[k]}
            for run in self.runs:
                run[4] = max(run[4], self._replay(run, k, params, updates_in, after[k]))

    @staticmethod
    def _replay(run, k, params, updates_in, after):
        """One parameter's step through one run's rule: how far it lands from the JAX side's
        (its update and prediction let go on return, before the next run's are made)."""
        updates, run[3][k] = run[2].update(updates_in, run[3][k], params)
        return rel_diff(np.asarray(params[k] + updates[k]), after)

    def explain(self):
        exact = self.runs[0]
        if exact[4] <= self.tolerance:
            return None  # the JAX side takes torch's steps: the optimizer is not the cause
        for trap, detail, _, _, error in self.runs[1:]:
            if error <= self.tolerance:
                return hint(trap, detail)
        return hint("optimizer", "its updates match no known near miss either")


# --- the hint for a divergence --------------------------------------------------------------


class Diagnosis:
    """``__call__(divergence, context)`` -> a hint or None, for ``engine.Recorder``."""

    def __init__(self, pair, suspects, tolerance, witness=None):
        self.pair, self.tolerance, self.witness = pair, tolerance, witness
        self.suspects = suspects  # audit()'s, taken before check swaps its dropout layers
        self.folded = {f"{a} + {b}" for a, b in pair.folds}

    def _layer_suspect(self, name, traps=None):
        """A suspect of the layer owning ``name`` (``layer.running_var`` -> ``layer``)."""
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        for trap, detail in self.suspects.get(owner, []):
            if traps is None or trap in traps:
                return hint(trap, detail)
        return None

    def _any_suspect(self, traps):
        for found in self.suspects.values():
            for trap, detail in found:
                if trap in traps:
                    return hint(trap, detail)
        return None

    # what changes a train-mode forward pass (BatchNorm's momentum does not)
    STRUCTURAL = (
        "padding",
        "conv-config",
        "groups",
        "conv-transpose-padding",
        "pool-padding",
        "align-corners",
        "attention-fn",
        "norm-eps",
        "dropout-rate",
        "float32-layer",
    )

    # seen on the torch side only (the Flax side does them in functions): a suspicion, which a
    # forward pass that agrees clears, since each changes what the layer outputs
    TORCH_SIDE_ONLY = ("pool-padding", "align-corners")

    def structural_hint(self, traps=STRUCTURAL):
        """A layer configured otherwise on the two sides, or None (for a model that raised)."""
        return self._any_suspect(traps)

    def __call__(self, divergence, context):
        kind, name = divergence["kind"], divergence["tensor"]
        if kind in ("output", "loss", "grad"):
            traps = self.STRUCTURAL
            if kind == "grad":  # the outputs and loss of this step agreed
                traps = tuple(t for t in traps if t not in self.TORCH_SIDE_ONLY)
            found = self.structural_hint(traps)
            if found:
                return found
            if kind == "output" and context.get("step") == 0:
                found = forward_hypotheses(self.pair, context, self.tolerance)
                if found:
                    return found
                if torch_is_random(self.pair, context):
                    return hint("random-forward", "two torch passes on one batch differ")
            return None
        if kind == "buffer":
            return self._layer_suspect(
                name, ("batchnorm-momentum", "batchnorm-variance", "norm-eps")
            )
        if kind == "param" and name in self.folded:
            return hint("folded-lstm-bias", f"{name} is one Flax bias")
        if kind in ("param", "optimizer") and self.witness is not None:
            return self.witness.explain  # asked at the end: it replays a few steps more
        return None


def notes(torch_model, flax_model):
    """What lockstep cannot see, because the check feeds both sides the same masks: a Flax
    attention that would draw its dropout otherwise in training. One line each."""
    found = []
    for name, t, f in _pairs(torch_model, flax_model):
        if (
            isinstance(t, torch.nn.MultiheadAttention)
            and isinstance(f, nnx.MultiHeadAttention)
            and t.dropout > 0
            and f.broadcast_dropout
        ):
            found.append(hint("broadcast-dropout", f"{name}: broadcast_dropout=True"))
    return found
