"""The lockstep engine: two sides trained on the same batches and compared, step by step.

It knows models, losses, optimizers and numpy batches, never a tutorial: ``compare.check``
runs a user's pair on it, and the tutorials' ``parity`` builds its pair from the registry
(``compare.tutorials.twins.tutorial_pair``). Its seams:

- precision: ``DTYPES`` and ``set_precision``, the same on both sides;
- building: a ``Side`` per framework (model, optimizer, loss, step, how a numpy array becomes
  this side's tensor), two of them a ``Pair``;
- feeding: ``Pair.feed`` turns one numpy batch (torch's layout) into each side's tensors;
- running: ``run_recorded`` (one step at a time, every tensor of the step compared in torch's
  key names, the torch sides' read as views: a step holds no copy of a model beyond the
  gradients);
- comparing: ``probe`` (tiers 1-2), ``Recorder`` (the first tensor past the tolerance), with
  the relative differences of ``compare.diff``.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np
import torch
from flax import nnx
from tqdm.auto import tqdm

import jaxnets
from compare import port
from compare.diff import check_finite, global_rel_diff, max_abs, rel_diff, tensor_rel_diff
from compare.errors import CompareError, SideError

# --- precision ------------------------------------------------------------------------------

DTYPES = {"float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64)}


def set_precision(dtype):
    """Full-precision matmuls on both sides (no TF32), and 64-bit JAX for float64."""
    if dtype == "float64":
        jaxnets.use_float64()
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# --- building -------------------------------------------------------------------------------


@dataclass
class Side:
    """One framework's half of a lockstep.

    ``loss(model, x, y[, noise])`` is the scalar the gradients are of (tiers 1-2);
    ``step(model, optimizer, x, y[, noise])`` trains one step and returns its loss(es), or
    ``(loss, grads)`` when ``step_grads`` (grads in torch's names, taken inside the step);
    ``to_side`` turns one numpy array in torch's layout into this side's tensor. A batch's
    ``x`` (and ``y``) may be a tuple of arrays: one per forward argument (per output), each
    turned by ``to_side``, the model called as ``model(*x)`` (``call``).
    """

    framework: str  # "torch" or "jax"
    model: object
    optimizer: object
    loss: Callable
    step: Callable
    to_side: Callable
    step_grads: bool = False
    start_epoch: Callable | None = None  # (epoch) -> None, before the epoch's first step


@dataclass
class Pair:
    """The two sides, and optionally a ``reference``: torch again, trained beside them on the
    same batches, whose difference from ``torch`` is torch's own rounding noise (torch in
    float64 beside a float32 check, or from weights nudged by one rounding step); each tensor
    is then held to that noise (``Recorder``)."""

    torch: Side
    jax: Side
    dtype: str
    folds: list = field(default_factory=list)  # torch key pairs one Flax bias holds the sum of
    parts: dict = field(default_factory=dict)  # a packed torch key -> its parts' keys
    reference: Side | None = None

    def feed(self, x, y, noise=None):
        """One numpy batch as ``(torch_inputs, jax_inputs)``, each ``(x, y, noise)``."""
        return self.inputs(self.torch, x, y, noise), self.inputs(self.jax, x, y, noise)

    @staticmethod
    def inputs(side, x, y, noise=None):
        """One numpy batch as ``side``'s ``(x, y, noise)``."""
        return (
            each(side.to_side, x),
            each(side.to_side, y),
            None if noise is None else {k: side.to_side(v) for k, v in noise.items()},
        )


def each(fn, value):
    """``fn`` of every array of a tuple (a model's several inputs or targets), or of the one."""
    return tuple(fn(a) for a in value) if isinstance(value, tuple) else fn(value)


def call(model, x):
    """``model(x)``, or ``model(*x)`` when ``x`` is a tuple: a forward of several arguments
    gets them in order."""
    return model(*x) if isinstance(x, tuple) else model(x)


def guarded(side, what, fn, *args):
    """``fn(*args)``, with anything it raises as one ``SideError`` line."""
    try:
        return fn(*args)
    except CompareError:
        raise
    except Exception as err:  # the user's code: any kind of error, one line about it
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise SideError(f"the {side} {what} raised {type(err).__name__}: {text}") from err


# --- state kept aside while a probe runs ----------------------------------------------------


def torch_snapshot(model):
    """The model's buffers (BatchNorm's statistics), to put back after a train-mode pass."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]

    def restore():
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)

    return restore


class Fed(nnx.Variable):
    """A value handed to the JAX model from outside for each step (a dropout mask drawn in
    numpy): neither trained nor ported, and left alone by snapshots."""


def jax_snapshot(model):
    """Every variable but the parameters (statistics, carried states, RNG counts)."""
    kept = nnx.Not(nnx.Any(nnx.Param, Fed))
    saved = [(v, v.get_value()) for _, v in nnx.to_flat_state(nnx.state(model, kept))]

    def restore():
        for var, value in saved:
            var.set_value(value)

    return restore


def has_forward(model):
    """Whether ``model(x)`` means something: a torch module with its own ``forward``, an NNX
    module with a ``__call__`` (a dict of nets, a GAN's pair, has neither)."""
    if isinstance(model, torch.nn.Module):
        return type(model).forward is not torch.nn.Module.forward
    return callable(model)


def first_output(out):
    """A model's output; one returning ``(output, state)`` is compared on the output."""
    return out[0] if isinstance(out, tuple | list) else out


def to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def torch_grads(model):
    """``p.grad`` of every parameter that has one, by its first torch name, as numpy."""
    return {
        name: p.grad.detach().cpu().numpy().copy()
        for name, p in model.named_parameters()
        if p.grad is not None
    }


def unfold_grads(grads, folds):
    """A folded Flax bias's gradient is the gradient of each of torch's two: give the second
    torch name the same (``nnx_to_torch`` writes zeros there, for the forward pass)."""
    grads = dict(grads)
    for first, second in folds:
        if first in grads:
            grads[second] = grads[first]
    return grads


def probe(pair, torch_inputs, jax_inputs, jit=False):
    """Tiers 1 and 2 at the current weights on one batch: the relative difference of the
    outputs (of the loss, where the model takes noise or has no forward of its own) and of the
    gradients (relative to the whole gradient's scale). Statistics are put back afterwards.
    ``jit``: the JAX side's forward pass and gradient under ``nnx.jit`` (one compilation each
    instead of one per operation: parity's probe of the tutorials runs them op by op)."""
    tx, ty, tnoise = torch_inputs
    jx, jy, jnoise = jax_inputs
    t_args = () if tnoise is None else (tnoise,)
    j_args = () if jnoise is None else (jnoise,)
    tm, jm = pair.torch.model, pair.jax.model
    restore_torch, restore_jax = torch_snapshot(tm), jax_snapshot(jm)

    if tnoise is None and has_forward(tm) and has_forward(jm):
        with torch.no_grad():
            torch_out = to_numpy(first_output(guarded("torch", "forward", call, tm, tx)))
        forward_fn = jitted_forward() if jit else (lambda m, x: first_output(call(m, x)))
        jax_out = np.asarray(guarded("jax", "forward", forward_fn, jm, jx))
        jax_out = match_layout(jax_out, torch_out)
    else:  # a dict of nets (optimizers), a generative model: compare their (summed) loss
        with torch.no_grad():
            torch_out = to_numpy(guarded("torch", "loss", pair.torch.loss, tm, tx, ty, *t_args))
        loss_fn = jitted(pair.jax.loss) if jit else pair.jax.loss
        jax_out = np.asarray(guarded("jax", "loss", loss_fn, jm, jx, jy, *j_args))
    restore_torch()
    restore_jax()
    forward = tensor_rel_diff({"out": jax_out}, {"out": torch_out})

    loss = guarded("torch", "loss", pair.torch.loss, tm, tx, ty, *t_args)
    tm.zero_grad(set_to_none=True)
    guarded("torch", "backward pass", loss.backward)
    t_grads = torch_grads(tm)
    tm.zero_grad(set_to_none=True)
    grad_fn = jitted_grad(pair.jax.loss) if jit else nnx.grad(pair.jax.loss)
    j_grads = guarded("jax", "gradient", grad_fn, jm, jx, jy, *j_args)
    j_grads = port.grads_from_nnx(jm, j_grads)
    j_grads = unfold_grads(j_grads, pair.folds)
    restore_torch()
    restore_jax()
    if not set(t_grads) <= set(j_grads):  # torch may freeze some (no grad); JAX has them all
        raise AssertionError(f"gradient keys differ: {sorted(j_grads)} vs {sorted(t_grads)}")
    return forward, global_rel_diff(j_grads, t_grads)


def match_layout(jax_out, torch_out):
    """A Flax output in torch's layout: features last -> channels first (NHWC -> NCHW, NLC ->
    NCL) where that is what makes the shapes agree."""
    if jax_out.shape == torch_out.shape or jax_out.ndim < 3:
        return jax_out
    moved = np.moveaxis(jax_out, -1, 1)
    return moved if moved.shape == torch_out.shape else jax_out


# --- running --------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Compares every tensor of every step in order and keeps the first past its bound:
    ``{"step", "tensor", "rel_diff", "bound", "hint"}``. The bound is ``tolerance``, or, where
    the pair has a reference, ``factor`` times the tensor's own noise (how far the reference
    is from torch, the largest yet) when that is larger: each tensor judged against its own
    rounding noise.
    ``diagnose(divergence, context)`` returns the hint (``compare.toolkit.traps``), or a
    function to ask for it when the run is over. A parameter whose gradient is at rounding
    level on both sides (``noise_level`` times the whole gradient's scale) is kept in
    ``irrelevant``: to the precision of the step, the loss does not depend on it."""

    tolerance: float
    diagnose: Callable | None = None
    factor: float = 10.0
    noise_level: float = 0.0
    first: dict | None = None
    compared: set = field(default_factory=set)  # what kinds of tensor were compared
    irrelevant: dict = field(default_factory=dict)  # torch name -> what was measured
    noise: dict = field(default_factory=dict)  # tensor name -> its largest own noise

    @property
    def done(self):
        return self.first is not None

    def compare(self, step, kind, name, got, want, scale=None, context=None, own=None):
        """``got`` (JAX) against ``want`` (torch), ``own`` the reference's value of the same
        tensor; True when this is the first divergence."""
        if self.done:
            return False
        self.compared.add(kind)
        if kind == "grad":
            self._note_irrelevant(step, name.removesuffix(".grad"), got, want, scale)
        diff = rel_diff(got, want, scale)
        bound = self.tolerance
        if own is not None:  # torch's own noise in this tensor so far: once a trajectory
            # is chaotic it stays so, though one step's scalar may land close by chance
            self.noise[name] = max(self.noise.get(name, 0.0), rel_diff(own, want, scale))
            bound = max(bound, self.factor * self.noise[name])
        if diff <= bound:
            return False
        shapes = np.shape(got) != np.shape(want)
        self.first = {
            "step": int(step),
            "tensor": name,
            "rel_diff": diff,
            "bound": bound,
            "hint": None,
        }
        if shapes:
            self.first["shapes"] = {"jax": list(np.shape(got)), "torch": list(np.shape(want))}
        if self.diagnose is not None:
            self.first["hint"] = self.diagnose(
                dict(self.first, kind=kind), context if context is not None else {}
            )
        return True

    def _note_irrelevant(self, step, name, got, want, scale):
        largest = max(max_abs(a) if np.size(a) else 0.0 for a in (got, want))
        if step == 0 and scale and largest <= self.noise_level * scale:
            self.irrelevant[name] = {"grad_max": largest, "grad_scale": scale}

    def finish(self):
        """A hint that needed the steps after the divergence (a callable) is asked now."""
        if self.first is not None and callable(self.first["hint"]):
            self.first["hint"] = self.first["hint"]()


# --- optimizer state in torch's names -------------------------------------------------------

# optax state fields -> torch's state names (jaxnets/_optim.py's states use torch's names)
OPTAX_STATE_NAMES = {
    ("ScaleByAdamState", "mu"): "exp_avg",
    ("ScaleByAdamState", "nu"): "exp_avg_sq",
    ("TraceState", "trace"): "momentum_buffer",
    ("ScaleByRmsState", "nu"): "square_avg",
    ("ScaleByRStdDevState", "mu"): "grad_avg",
    ("ScaleByRStdDevState", "nu"): "square_avg",
    ("ScaleByRssState", "sum_of_squares"): "sum",
    ("ScaleByAdaDeltaState", "e_g"): "square_avg",
    ("ScaleByAdaDeltaState", "e_x"): "acc_delta",
}
TORCH_STATE_NAMES = {
    "momentum_buffer",
    "exp_avg",
    "exp_avg_sq",
    "max_exp_avg_sq",
    "square_avg",
    "grad_avg",
    "sum",
    "acc_delta",
}


def torch_optimizer_state(optimizer, model, copy=True):
    """``{(torch key, state name): numpy}`` of a torch optimizer (or a dict of them);
    ``copy=False``: views of the state's tensors, to be read before the next step."""
    optimizers = optimizer.values() if isinstance(optimizer, dict) else [optimizer]
    names = {id(p): name for name, p in model.named_parameters()}
    out = {}
    for opt in optimizers:
        if not isinstance(opt, torch.optim.Optimizer):
            return {}
        for param, state in opt.state.items():
            for field_name, value in state.items():
                if field_name in TORCH_STATE_NAMES and id(param) in names:
                    value = to_numpy(value)
                    out[(names[id(param)], field_name)] = value.copy() if copy else value
    return out


def jax_optimizer_state(optimizer, model):
    """The same from an ``nnx.Optimizer`` over the whole of ``model``: each optax state field
    that torch has a name for, per parameter, in torch's layout. Empty for anything else."""
    if not isinstance(optimizer, nnx.Optimizer):
        return {}
    table = port.mapping(model, fold_biases=True)
    by_path = {}
    for key, (path, _, to_torch, _) in table.items():
        by_path.setdefault(path, (key, to_torch))
    out = {}

    def walk(node):
        if hasattr(node, "_fields"):  # an optax state (NamedTuple)
            for field_name in node._fields:
                value = getattr(node, field_name)
                if isinstance(value, nnx.State):
                    name = OPTAX_STATE_NAMES.get((type(node).__name__, field_name))
                    if field_name in TORCH_STATE_NAMES:
                        name = field_name
                    if name is not None:
                        for path, leaf in nnx.to_flat_state(value):
                            leaf = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
                            if path in by_path and hasattr(leaf, "shape") and np.ndim(leaf):
                                key, to_torch = by_path[path]
                                out[(key, name)] = to_torch(np.asarray(leaf))
                else:
                    walk(value)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, tuple | list):
            for value in node:
                walk(value)

    walk(optimizer.opt_state)
    return out


# --- the recorded run -----------------------------------------------------------------------

EVIDENCE_STEPS = 3  # steps past a divergence the observers still see
NOT_COMPARED = "nothing is compared past it (a smaller learning rate?)"


def state_views(model):
    """A torch module's state dict as numpy views of its tensors (copies only off the CPU):
    read within the step, they cost no copy of the model (``port.torch_state_dict`` copies)."""
    return {k: to_numpy(v) for k, v in model.state_dict().items()}


def _params(model):
    return {name for name, _ in model.named_parameters()}


def state_pairs(pair, torch_state, jax_state):
    """``[(name, kind, jax array, torch array)]`` of the parameters and statistics after a
    step, in the torch state dict's order: a folded bias as the sum of torch's two; keys the
    Flax side has no place for (a tied alias, BatchNorm's counter) are skipped."""
    folded = dict(pair.folds)
    seconds = set(folded.values())
    params = _params(pair.torch.model)
    params |= {part for name in params for part in pair.parts.get(name, ())}
    torch_state = port.split_parts(torch_state, pair.parts)
    jax_state = port.split_parts(jax_state, pair.parts)
    out = []
    for key, want in torch_state.items():
        if key in seconds or key not in jax_state:
            continue
        got = jax_state[key]
        name = key
        if key in folded:
            want = want + torch_state[folded[key]]
            name = f"{key} + {folded[key]}"
        out.append((name, "param" if key in params else "buffer", got, want))
    return out


def run_recorded(pair, batches, steps, recorder, before_step=None, observers=(), progress=False):
    """``steps`` steps over ``batches`` (numpy ``(x, y[, noise])`` in torch's layout, cycled as
    epochs), one at a time. While nothing has diverged, each step's forward output, loss,
    gradients, parameters and statistics after the update, and optimizer state are compared
    by ``recorder`` in that order, in torch's key names, each with the reference's value of it
    where the pair has a reference. ``before_step(step)`` runs first (dropout masks, say);
    each of ``observers`` is called as ``observer(step, seen)``, after the step's comparisons,
    with the JAX side's parameters before and after and its gradients
    (``compare.toolkit.traps`` checks its hypotheses there). Returns the per-step losses
    ``(torch, jax)``."""
    ref = pair.reference
    fed = [pair.feed(*batch) for batch in batches]
    ref_fed = [pair.inputs(ref, *batch) for batch in batches] if ref is not None else None
    tm, jm = pair.torch.model, pair.jax.model
    forward = jitted_forward()
    for model in (tm, jm) + ((ref.model,) if ref is not None else ()):
        model.train()
    torch_losses, jax_losses = [], []
    bar = tqdm(range(steps), desc="check", unit="step", disable=not progress, leave=False)
    for step in bar:
        epoch, index = divmod(step, len(batches))
        if index == 0:
            for side in (pair.torch, pair.jax, ref):
                if side is not None and side.start_epoch is not None:
                    side.start_epoch(epoch)
        if before_step is not None:
            before_step(step)
        t_in, j_in = fed[index]
        r_in = ref_fed[index] if ref is not None else None
        context = {"pair": pair, "step": step, "torch_inputs": t_in, "jax_inputs": j_in}
        recording = not recorder.done
        # observers see a few steps past the divergence: their evidence for a hint
        observing = observers and (recording or step <= recorder.first["step"] + EVIDENCE_STEPS)

        if recording and t_in[2] is None and has_forward(tm) and has_forward(jm):
            draws = _rng_state()  # the reference draws what torch draws (functional dropout)
            torch_out = _torch_output(tm, t_in, step)
            restore_jax = jax_snapshot(jm)
            jax_out = guarded("jax", f"forward pass at step {step}", forward, jm, j_in[0])
            jax_out = match_layout(np.asarray(jax_out), torch_out)
            restore_jax()
            own = None
            if ref is not None:
                with _replaying(draws):
                    own = _torch_output(ref.model, r_in, step, "reference")
            context["torch_output"] = torch_out
            recorder.compare(step, "output", "output", jax_out, torch_out, context=context, own=own)

        grads = ref_grads = None
        if recording and not (pair.torch.step_grads and pair.jax.step_grads):
            draws = _rng_state()
            grads = _loss_grads(pair, t_in, j_in)  # the losses' gradients before the step
            if ref is not None:
                with _replaying(draws):
                    ref_grads = _torch_grads_of_loss(ref, r_in)
        seen = {"jax_before": port.nnx_to_torch(jm)} if observing else {}

        draws = _rng_state()
        t_loss, t_grads = _train_step(pair.torch, t_in, step)
        j_loss, j_grads = _train_step(pair.jax, j_in, step)
        t_loss, j_loss = to_numpy(t_loss), np.asarray(j_loss)
        for side, loss in (("torch", t_loss), ("jax", j_loss)):
            check_finite([loss], side, step, after=NOT_COMPARED)
        torch_losses.append(t_loss)
        jax_losses.append(j_loss)
        if ref is not None and recording:
            with _replaying(draws):
                r_loss, r_step_grads = _train_step(ref, r_in, step)
            r_loss = to_numpy(r_loss)
            ref_grads = r_step_grads if r_step_grads is not None else ref_grads
        if not (recording or observing):
            continue
        if t_grads is None or j_grads is None:
            t_grads, j_grads = grads if grads is not None else ({}, {})
        else:
            j_grads = unfold_grads(port.grads_from_nnx(jm, j_grads), pair.folds)

        jax_state = port.nnx_to_torch(jm)
        if recording:
            own = (r_loss, ref_grads) if ref is not None else (None, None)
            jax_step = (j_loss, j_grads, jax_state)
            _compare_step(recorder, pair, step, context, (t_loss, t_grads), jax_step, own)
            jax_step = None
        # the observers see the step after the comparisons (a hint that needs what they saw
        # is asked when the run is over), with the torch and reference gradients let go:
        # they hold the JAX side's arrays only
        grads = t_grads = ref_grads = r_step_grads = None
        if observing:
            seen.update(jax_after=jax_state, jax_grads=j_grads)
            j_grads = jax_state = None
            for observer in observers:
                observer(step, seen)
        seen = None  # not held into the next step: it holds the JAX side's old parameters
    recorder.finish()
    return np.asarray(torch_losses), np.asarray(jax_losses)


def _compare_step(recorder, pair, step, context, torch_step, jax_step, own):
    """One step's loss, gradients, parameters and statistics, and optimizer state compared in
    that order, each with the reference's value (``own``: its loss and gradients; its state is
    read here) where the pair has one. ``torch_step``: ``(loss, grads)``; ``jax_step``:
    ``(loss, grads, state after the step)``. The torch and reference tensors are read as
    views: nothing model-sized is copied."""
    ref, tm, jm = pair.reference, pair.torch.model, pair.jax.model
    (t_loss, t_grads), (j_loss, j_grads, jax_state), (own_loss, ref_grads) = (
        torch_step,
        jax_step,
        own,
    )
    t_grads, j_grads = (port.split_parts(g, pair.parts) for g in (t_grads, j_grads))
    ref_grads = port.split_parts(ref_grads or {}, pair.parts)
    recorder.compare(step, "loss", "loss", j_loss, t_loss, context=context, own=own_loss)
    scale = max((max_abs(g) for g in t_grads.values() if g.size), default=0.0)
    for key, want in t_grads.items():
        if key in j_grads:
            recorder.compare(
                step,
                "grad",
                f"{key}.grad",
                j_grads[key],
                want,
                scale=scale,
                context=context,
                own=ref_grads.get(key),
            )
    own_state = {}
    if ref is not None:
        ref_state = state_views(ref.model)
        own_state = {name: v for name, _, _, v in state_pairs(pair, ref_state, jax_state)}
    torch_state = state_views(tm)
    for name, kind, got, want in state_pairs(pair, torch_state, jax_state):
        scale = running_mean_scale(name, want, torch_state)
        recorder.compare(
            step, kind, name, got, want, scale=scale, context=context, own=own_state.get(name)
        )
    t_opt = torch_optimizer_state(pair.torch.optimizer, tm, copy=False)
    t_opt = port.split_parts(t_opt, pair.parts)
    j_opt = jax_optimizer_state(pair.jax.optimizer, jm)  # parts apart already
    r_opt = {}
    if ref is not None:
        r_opt = torch_optimizer_state(ref.optimizer, ref.model, copy=False)
        r_opt = port.split_parts(r_opt, pair.parts)
    scales = {}
    for (_, name), want in t_opt.items():
        scales[name] = max(scales.get(name, 0.0), max_abs(want))
    for (key, name), want in t_opt.items():
        if (key, name) in j_opt:
            recorder.compare(
                step,
                "optimizer",
                f"optimizer.state[{key}]['{name}']",
                j_opt[(key, name)],
                want,
                scale=scales[name],
                context=context,
                own=r_opt.get((key, name)),
            )


# BatchNorm's eps for the running mean's scale: torch's default, the smallest any layer uses
_BATCHNORM_EPS = 1e-5


def running_mean_scale(name, want, torch_state):
    """What a BatchNorm's running mean is measured against: the larger of its own size and
    the smallest running standard deviation of its layer, ``sqrt(running_var + eps)`` (None,
    its own size, for any other tensor). In eval mode the mean is subtracted and the result
    divided by that deviation, so an error d in it moves the output by d / deviation; and
    where the layer's input averages to zero (after a normalisation and a convolution without
    bias, say) the mean itself is rounding noise, 1e-17 beside a deviation near 1, and
    relative to its own size any two correct sides differ by 100 %."""
    if not name.endswith(".running_mean"):
        return None
    var = torch_state.get(name.removesuffix("running_mean") + "running_var")
    if var is None or np.shape(var) != np.shape(want) or not np.size(want):
        return None
    deviation = float(np.sqrt(np.min(var) + _BATCHNORM_EPS)) if np.min(var) >= 0 else 0.0
    return max(max_abs(want), deviation)


def _rng_state():
    """torch's random state (CPU, and CUDA where there is one)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def _replaying(state):
    """Within: torch draws again from ``state``; after: it goes on as if nothing was drawn
    (the reference draws the numbers torch drew, and takes none from torch's stream)."""
    after = _rng_state()
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])
    try:
        yield
    finally:
        torch.set_rng_state(after[0])
        if after[1] is not None:
            torch.cuda.set_rng_state_all(after[1])


def _torch_output(model, inputs, step, side="torch"):
    """A torch model's train-mode output on ``inputs``, its statistics put back, as numpy."""
    restore = torch_snapshot(model)
    with torch.no_grad():
        out = guarded(side, f"forward pass at step {step}", call, model, inputs[0])
    restore()
    return to_numpy(first_output(out))


def _train_step(side, inputs, step):
    """One training step of ``side``: ``(loss, grads in torch's names or None)``."""
    noise = () if inputs[2] is None else (inputs[2],)
    result = guarded(
        side.framework,
        f"training step {step}",
        side.step,
        side.model,
        side.optimizer,
        *inputs[:2],
        *noise,
    )
    return result if side.step_grads else (result, None)


def _torch_grads_of_loss(side, inputs):
    """A torch side's loss gradients at its current weights, statistics put back."""
    model = side.model
    restore = torch_snapshot(model)
    noise = () if inputs[2] is None else (inputs[2],)
    model.zero_grad(set_to_none=True)
    loss = guarded(side.framework, "loss", side.loss, model, *inputs[:2], *noise)
    guarded(side.framework, "backward pass", loss.backward)
    grads = torch_grads(model)
    model.zero_grad(set_to_none=True)
    restore()
    return grads


def _loss_grads(pair, t_in, j_in):
    """Both losses' gradients at the current weights (for steps that keep theirs to
    themselves), statistics put back afterwards; torch's names."""
    t_grads = _torch_grads_of_loss(pair.torch, t_in)
    jm = pair.jax.model
    restore_jax = jax_snapshot(jm)
    j_args = () if j_in[2] is None else (j_in[2],)
    j_grads = guarded("jax", "gradient", jitted_grad(pair.jax.loss), jm, *j_in[:2], *j_args)
    j_grads = port.grads_from_nnx(jm, j_grads)
    restore_jax()
    return t_grads, unfold_grads(j_grads, pair.folds)


_JITTED = {}  # (what, function) -> its jitted form, compiled once per function


def jitted(loss):
    """``loss(model, x, y[, noise])`` under ``nnx.jit``."""
    return _JITTED.setdefault(("loss", loss), nnx.jit(loss))


def jitted_grad(loss):
    """``nnx.grad(loss)`` under ``nnx.jit``."""
    return _JITTED.setdefault(("grad", loss), nnx.jit(nnx.grad(loss)))


@nnx.jit
def _forward(model, x):
    return first_output(call(model, x))


def jitted_forward():
    """``model(x)`` (``model(*x)`` for a tuple) under ``nnx.jit``, the output's first
    element (one function for every model: ``nnx.jit`` keys its compilations by the model's
    graph)."""
    return _forward
