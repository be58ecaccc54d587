"""``compare.check``: a user's PyTorch model against their Flax NNX port, in lockstep.

The lockstep engine (``compare.toolkit.engine``) for any pair of models: the torch
weights are ported into the NNX module (``port.torch_to_nnx``), the optax twin of the torch
optimizer is derived (``optim.to_optax``) unless given, and both sides train on the same
batches, one step at a time, in float64 by default. Every step's forward output, loss,
gradients, parameters and statistics after the update and optimizer state are compared in
torch's key names; the first tensor past the tolerance is ``first_divergence``, with a hint
when the pattern is a known porting trap (``compare.toolkit.traps``, docs/PORTING.md).
"""

import copy
import json
import re
import warnings
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

from compare import optim, port
from compare.arrays import cast, to_flax_layout
from compare.diff import max_rel_diff, rel_diff, tensor_rel_diff
from compare.errors import CompareError, PortError, SideError
from compare.toolkit import engine, traps
from compare.toolkit.dropout import DropoutFeed

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}  # the floor of every tensor's bound
# a tensor may part from torch by this many times torch's own rounding noise in it (the
# reference's difference from torch): parity's factor for a chaotic trajectory
SENSITIVITY_FACTOR = 10.0
# a gradient this many float eps of the whole gradient's scale is rounding level
NOISE_LEVEL = 16
# a tensor is rounding noise when torch's own noise in it is this large (relative), and this
# many times the loss's own noise
NOISY, NOISY_OVER_LOSS = 1e-2, 1e3


@dataclass
class Report:
    """What ``check`` found. ``to_json()`` has ``parity --json``'s fields (``dtype``,
    ``steps``, ``loss_max_rel_diff``, ``param_max_rel_diff``, ``tolerance``, ``passed``) and
    ``forward_rel_diff``, ``grad_rel_diff`` (tiers 1-2 on the first batch at the initial
    weights), ``first_divergence`` (None, or ``{"step", "tensor", "rel_diff", "bound",
    "hint"}``), ``bound`` (what each tensor was held to, and why), ``loss_irrelevant`` (the
    parameters whose gradient is at rounding level: compared against their own noise),
    ``notes`` (traps the lockstep cannot see: a Flax attention that drops otherwise in
    training), ``dropout`` (how dropout ran) and ``optimizer`` (where the optax side came
    from)."""

    dtype: str
    steps: int
    loss_max_rel_diff: float
    param_max_rel_diff: float
    forward_rel_diff: float
    grad_rel_diff: float
    tolerance: float
    passed: bool
    first_divergence: dict | None
    dropout: str
    optimizer: str
    compared: list = field(default_factory=list)
    bound: dict = field(default_factory=dict)
    loss_irrelevant: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    torch_losses: np.ndarray = None
    jax_losses: np.ndarray = None

    def to_json(self):
        return {
            "dtype": self.dtype,
            "steps": self.steps,
            "loss_max_rel_diff": self.loss_max_rel_diff,
            "param_max_rel_diff": self.param_max_rel_diff,
            "forward_rel_diff": self.forward_rel_diff,
            "grad_rel_diff": self.grad_rel_diff,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "first_divergence": self.first_divergence,
            "dropout": self.dropout,
            "optimizer": self.optimizer,
            "compared": self.compared,
            "bound": self.bound,
            "loss_irrelevant": self.loss_irrelevant,
            "notes": self.notes,
            "final_loss": {
                "jax": np.asarray(self.jax_losses[-1]).tolist(),
                "torch": np.asarray(self.torch_losses[-1]).tolist(),
            },
        }

    def __str__(self):
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [f"check {self.dtype} lockstep over {self.steps} steps: {verdict}"]
        for key in ("loss_max_rel_diff", "param_max_rel_diff", "forward_rel_diff", "grad_rel_diff"):
            lines.append(f"  {key:<22} {getattr(self, key):.3e}")
        lines.append(f"  {'tolerance':<22} {self.tolerance:.1e}")
        if self.bound.get("kind") == "sensitivity":
            lines.append(
                f"  {'':<22} or {self.bound['factor']:g} x each tensor's own noise, up to "
                f"{self.bound['tolerance']:.1e} ({self.bound['reference']})"
            )
            # beside float32 the noise is float32's, not chaos; and a failure is first a port
            # to look at, not a trajectory to tame
            if self.dtype == "float64" and self.passed:
                lines.append(
                    f"  note: torch parts from itself by {self.bound['self_divergence']:.1e} "
                    f"here (a chaotic trajectory), so the port was held to {self.bound['factor']:g}"
                    f" x that, not to {self.bound['floor']:.0e}; where a smaller learning rate, "
                    "a larger batch or input tames torch, it can be (docs/TRANSLATE.md)"
                )
        lines.append(f"  {'optimizer':<22} {self.optimizer}")
        lines.append(f"  {'dropout':<22} {self.dropout}")
        first = self.first_divergence
        if first is not None:
            lines.append(
                f"  first divergence: step {first['step']}, {first['tensor']} "
                f"(relative difference {first['rel_diff']:.3e})"
            )
            if first.get("hint"):
                lines.append(f"  hint: {first['hint']}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        for entry in self.loss_irrelevant:
            if "grad_max" in entry:
                what = f"gradient {entry['grad_max']:.1e} of {entry['grad_scale']:.1e}"
            else:
                what = "its value is rounding noise"
            lines.append(
                f"  loss-irrelevant: {entry['tensor']} (relative difference "
                f"{entry['rel_diff']:.1e}; {what})"
            )
        return "\n".join(lines)

    def __repr__(self):
        return f"Report({json.dumps(self.to_json())})"


def check(
    torch_model,
    flax_model,
    *,
    batches,
    torch_loss,
    flax_loss,
    torch_optimizer,
    optax_tx=None,
    steps=None,
    dtype="float64",
    to_flax=None,
    tolerance=None,
    scheduler=None,
    scheduler_interval="epoch",
    torch_step=None,
    flax_step=None,
    dropout="masks",
    seed=0,
    progress=False,
):
    """Check ``flax_model`` (NNX) against ``torch_model`` in lockstep; returns a ``Report``.

    - ``batches``: a list of ``(x, y)`` numpy pairs in torch's layout, one epoch; a third
      element, a dict of arrays, is noise both losses take as a fourth argument (a VAE's eps,
      a GAN's z). ``steps`` (default: one epoch) cycles them. ``x`` may be a tuple of arrays,
      one per argument of a forward that takes several (``forward(x, labels)``), handed to
      both models in that order (``model(*x)``); ``y`` a tuple too (one target per output).
    - ``torch_loss(model, x, y)`` and ``flax_loss(model, x, y)``: each side's loss, as in the
      tutorial files (``x`` and ``y`` as the batch holds them: a tuple stays a tuple).
    - ``torch_optimizer``: a ``torch.optim.Optimizer`` on ``torch_model``'s parameters; the optax
      side is ``compare.optim.to_optax(torch_optimizer, scheduler)`` unless ``optax_tx`` is
      given. ``scheduler``: a torch scheduler stepped after each epoch of ``batches``, or
      after every step with ``scheduler_interval="step"``; with one, ``steps`` defaults to
      enough epochs for the schedule to move once.
    - ``dtype``: ``"float64"`` (any semantic difference shows) or ``"float32"``. Every tensor
      is held to ``tolerance`` (default 1e-9 and 1e-4) or to 10 times its own rounding noise
      when that is larger: how far torch itself lands from torch in float64 (a float32
      check) or from torch started from weights nudged by one rounding step (float64: a
      chaotic trajectory, a parameter the loss does not depend on). The report's ``bound``
      says which applied, ``loss_irrelevant`` lists the parameters whose gradient is at
      rounding level.
    - ``to_flax(array)``: one array of a batch in the Flax layout (default: 4-D arrays NCHW ->
      NHWC, others unchanged).
    - ``dropout``: ``"masks"`` (each dropout site, matched by name, gets the same mask on both
      sides, drawn in numpy, each step, one per call where a pass calls it several times:
      ``nn.Dropout`` / ``nnx.Dropout``, the attention
      probabilities of ``nn.MultiheadAttention`` / ``nnx.MultiHeadAttention``, between the
      layers of a stacked ``nn.LSTM``/``GRU``/``RNN`` and ``jaxnets.layers``' stacks;
      ``compare.toolkit.dropout``) or ``"off"`` (none drops).
    - Steps that are not "one loss, one optimizer" (two optimizers, a state carried between
      steps, a learning rate changed by hand): ``torch_step(model, optimizer, x, y)`` and
      ``flax_step(model, optimizer, x, y)`` train one step and return its loss(es); then
      ``torch_optimizer`` and ``optax_tx`` are whatever the steps take (an ``optax_tx`` that is
      a transformation is wrapped in ``nnx.Optimizer``; a function is called with the ported
      ``flax_model`` and returns the optimizer), the gradients compared are those of
      the two losses at the weights before each step, and the optimizer state is not compared.

    Both models are trained in place (``torch_model`` converted to ``dtype``); the torch
    weights are first ported into ``flax_model``. Bad input ends in one ``CompareError`` line.
    """
    if dtype not in engine.DTYPES:
        raise CompareError(f"unknown dtype {dtype!r}; use float32 or float64")
    if dropout not in ("masks", "off"):
        raise CompareError(f"dropout must be 'masks' or 'off', not {dropout!r}")
    if not isinstance(torch_model, torch.nn.Module):
        raise CompareError(
            f"torch_model must be a torch.nn.Module, not {type(torch_model).__name__}"
        )
    if not isinstance(flax_model, nnx.Module):
        raise CompareError(f"flax_model must be an nnx.Module, not {type(flax_model).__name__}")
    for name, fn in (("torch_loss", torch_loss), ("flax_loss", flax_loss)):
        if not callable(fn):
            raise CompareError(f"{name} must be a function loss(model, x, y)")
    custom = torch_step is not None or flax_step is not None
    if custom and (torch_step is None or flax_step is None):
        raise CompareError("give both torch_step and flax_step, or neither")
    if custom and optax_tx is None:
        raise CompareError("with flax_step, optax_tx is the optimizer flax_step takes")
    if custom and scheduler is not None:
        raise CompareError("with torch_step, the steps handle the learning rate (no scheduler)")
    if not custom and not isinstance(torch_optimizer, torch.optim.Optimizer):
        raise CompareError(
            f"torch_optimizer must be a torch.optim.Optimizer, not {type(torch_optimizer).__name__}"
        )
    if scheduler_interval not in optim.INTERVALS:
        raise CompareError(
            f"scheduler_interval must be 'epoch' or 'step', not {scheduler_interval!r}"
        )
    batches = _batches(batches)
    if steps is None:
        steps = len(batches)
        if scheduler is not None:  # long enough for the schedule to move at least once
            steps = _steps_to_move(torch_optimizer, scheduler, len(batches), scheduler_interval)
    steps = int(steps)
    if steps < 1:
        raise CompareError("steps must be at least 1")
    tolerance = TOLERANCE[dtype] if tolerance is None else float(tolerance)
    np_dtype, torch_dtype = engine.DTYPES[dtype]
    engine.set_precision(dtype)

    torch_model.to(torch_dtype)  # in place: the optimizer keeps its Parameters
    _state_to_params_dtype(torch_optimizer)
    if not custom:
        owned = {id(p) for p in torch_model.parameters()}
        if any(id(p) not in owned for g in torch_optimizer.param_groups for p in g["params"]):
            raise CompareError("torch_optimizer holds parameters that are not torch_model's")
    try:
        port.torch_to_nnx(
            torch_model.state_dict(),
            flax_model,
            dtype=np_dtype,
            fold_biases=True,
            source="torch_model's weights into flax_model",
        )
    except PortError as err:
        raise PortError(f"{err}{_layers_apart(err, torch_model, flax_model)}") from None
    _cast_other_variables(flax_model, np_dtype)
    table = port.mapping(flax_model, fold_biases=True)

    translation = dict(
        steps_per_epoch=len(batches),
        scheduler_interval=scheduler_interval,
        horizon=steps,
        torch_model=torch_model,
        flax_model=flax_model,
    )
    if custom:
        flax_optimizer = optax_tx
        if isinstance(optax_tx, optax.GradientTransformation):
            flax_optimizer = nnx.Optimizer(flax_model, optax_tx, wrt=nnx.Param)
        elif callable(optax_tx):  # built on the ported model: its state in the right dtype
            flax_optimizer = optax_tx(flax_model)
        label = "custom steps"
    else:
        tx = optax_tx
        label = "optax_tx as given"
        if tx is None:
            tx = optim.to_optax(torch_optimizer, scheduler, **translation)
            label = f"compare.optim.to_optax({type(torch_optimizer).__name__})"
        if scheduler is not None:
            label += f", {type(scheduler).__name__} stepped per {scheduler_interval}"
        flax_optimizer = nnx.Optimizer(flax_model, tx, wrt=nnx.Param)

    suspects = traps.audit(torch_model, flax_model, dtype)  # before dropout layers are swapped
    notes = traps.notes(torch_model, flax_model)
    # the reference: torch again, from a copy made now; its dropout fed the same masks
    reference, reference_kind = _reference(torch_model, torch_optimizer, scheduler, dtype, seed)
    feed = DropoutFeed(torch_model, flax_model, dropout, seed, np_dtype, also=[reference[0]])
    to_flax = to_flax or to_flax_layout

    def to_jax_side(a):
        return jnp.asarray(np.asarray(to_flax(cast(a, np_dtype))))

    torch_side = _torch_side(
        "torch",
        torch_model,
        torch_optimizer,
        scheduler,
        np_dtype,
        torch_step if custom else None,
        torch_loss,
        scheduler_interval,
    )
    pair = engine.Pair(
        torch=torch_side,
        jax=engine.Side(
            "jax",
            flax_model,
            flax_optimizer,
            flax_loss,
            flax_step if custom else _flax_step(flax_loss),
            to_jax_side,
            step_grads=not custom,
        ),
        dtype=dtype,
        folds=table.folds,
        parts=table.parts,
        reference=_torch_side(
            "reference",
            *reference,
            np.float64,
            torch_step if custom else None,
            torch_loss,
            scheduler_interval,
        ),
    )
    try:
        torch_model.train()
        flax_model.train()
        feed.begin(0)
        forward, grads = engine.probe(pair, *pair.feed(*batches[0]), jit=True)
        witness = None
        if not custom and dtype == "float64":
            witness = _witness(
                torch_optimizer, scheduler, flax_model, table.folds, tolerance, translation
            )
        recorder = engine.Recorder(
            tolerance,
            diagnose=traps.Diagnosis(pair, suspects, tolerance, witness),
            factor=SENSITIVITY_FACTOR,
            noise_level=NOISE_LEVEL * np.finfo(np_dtype).eps,
        )
        torch_losses, jax_losses = engine.run_recorded(
            pair,
            batches,
            steps,
            recorder,
            before_step=feed.begin,
            observers=[witness] if witness is not None else [],
            progress=progress,
        )
    except SideError as err:
        found = traps.Diagnosis(pair, suspects, tolerance).structural_hint()
        raise CompareError(f"{err}" + (f"; hint: {found}" if found else "")) from None
    finally:
        feed.remove()

    loss_diff = max_rel_diff(jax_losses, torch_losses)
    torch_final = engine.state_views(torch_model)
    final = engine.state_pairs(pair, torch_final, port.nnx_to_torch(flax_model))
    irrelevant = _irrelevant(recorder, final, reference_kind)
    relevant = [(name, got, want) for name, _, got, want in final if name not in irrelevant]
    # a running mean at its layer's deviation's scale, as the steps held it (engine)
    scales = {n: engine.running_mean_scale(n, want, torch_final) for n, _, want in relevant}
    own_scale = [(name, got, want) for name, got, want in relevant if scales[name] is None]
    param_diff = max(
        [tensor_rel_diff({n: got for n, got, _ in own_scale}, {n: w for n, _, w in own_scale})]
        + [rel_diff(got, want, scales[n]) for n, got, want in relevant if scales[n] is not None]
    )
    return Report(
        dtype=dtype,
        steps=int(steps),
        loss_max_rel_diff=loss_diff,
        param_max_rel_diff=param_diff,
        forward_rel_diff=forward,
        grad_rel_diff=grads,
        tolerance=tolerance,
        passed=recorder.first is None,
        first_divergence=recorder.first,
        dropout=feed.describe(),
        optimizer=label,
        compared=sorted(recorder.compared),
        bound=_bound(recorder, tolerance, reference_kind, final, irrelevant),
        loss_irrelevant=list(irrelevant.values()),
        notes=notes,
        torch_losses=torch_losses,
        jax_losses=jax_losses,
    )


def _layers_apart(err, torch_model, flax_model):
    """For keys that do not fit: the layer type on each side at their names (a torch layer
    with no Flax twin of its kind), e.g. ``; at attn torch has MultiheadAttention, Flax
    Linear``."""
    named = re.findall(r"'([\w.\[\]]+)'", str(err))  # the keys, as the message quotes them
    torch_layers = dict(torch_model.named_modules())
    modules = dict(nnx.iter_modules(flax_model))
    flax_layers = {port.torch_prefix(p, modules).rstrip("."): m for p, m in modules.items()}
    apart = {}
    for key in named:
        owner = key.rsplit(".", 1)[0] if "." in key else ""
        while owner and owner not in torch_layers and owner not in flax_layers:
            owner = owner.rsplit(".", 1)[0] if "." in owner else ""
        t, f = torch_layers.get(owner), flax_layers.get(owner)
        if owner and (t is None or f is None or type(t).__name__ != type(f).__name__):
            apart[owner] = (
                type(t).__name__ if t is not None else "nothing",
                type(f).__name__ if f is not None else "nothing",
            )
    if not apart:
        return ""
    where = "; ".join(f"{name}: torch {t}, Flax {f}" for name, (t, f) in apart.items())
    return f" (the layers there: {where})"


def _state_to_params_dtype(optimizer):
    """The state an optimizer built before ``torch_model.to(dtype)`` (Adagrad's ``sum``, from its
    constructor) converted with the parameters: left in float32, Adagrad's float64 steps would
    accumulate ``g * g`` rounded to float32 (2e-8 apart after one step)."""
    optimizers = optimizer.values() if isinstance(optimizer, dict) else [optimizer]
    for opt in optimizers:
        if not isinstance(opt, torch.optim.Optimizer):
            continue
        for param, state in opt.state.items():
            for key, value in state.items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.is_floating_point()
                    and value.shape == param.shape
                    and value.dtype != param.dtype
                ):
                    state[key] = value.to(param.dtype)


def _as_array(value, what):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, int | float):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise CompareError(f"{what} must be a numpy array, not {type(value).__name__}")
    return value


def _as_arrays(value, what):
    """One array, or a tuple of them (a forward's several inputs, a model's several outputs'
    targets): a non-empty list or tuple of arrays is the latter; anything else (a list of
    numbers) must be one array."""
    arrays = (np.ndarray, torch.Tensor)
    if isinstance(value, list | tuple) and value and all(isinstance(a, arrays) for a in value):
        return tuple(_as_array(a, f"{what}[{k}]") for k, a in enumerate(value))
    return _as_array(value, what)


def _batches(batches):
    """``[(x, y, noise or None)]`` of numpy arrays, or one CompareError line."""
    if not isinstance(batches, list | tuple) or not batches:
        raise CompareError("batches must be a non-empty list of (x, y) numpy pairs")
    out = []
    for i, batch in enumerate(batches):
        if not isinstance(batch, list | tuple) or len(batch) not in (2, 3):
            raise CompareError(f"batch {i} must be an (x, y) pair (or (x, y, noise))")
        x, y = _as_arrays(batch[0], f"batch {i}'s x"), _as_arrays(batch[1], f"batch {i}'s y")
        noise = batch[2] if len(batch) == 3 else None
        if noise is not None:
            if not isinstance(noise, dict):
                raise CompareError(f"batch {i}'s noise must be a dict of numpy arrays")
            noise = {k: _as_array(v, f"batch {i}'s noise {k!r}") for k, v in noise.items()}
        out.append((x, y, noise))
    return out


def _cast_other_variables(model, np_dtype):
    """Floating variables the port does not write (a carried state) in the side's dtype."""
    ported = {id(var) for _, var, _, _ in port.mapping(model, fold_biases=True).values()}
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.Param))):
        value = var.get_value()
        if id(var) not in ported and jnp.issubdtype(jnp.asarray(value).dtype, jnp.floating):
            var.set_value(jnp.asarray(value, np_dtype))


def _torch_step(torch_loss, scheduler=None):
    """zero_grad, loss, backward, the gradients kept, step (and ``scheduler.step()`` when it
    steps per batch): torch's training step."""

    def step(model, optimizer, x, y, *noise):
        optimizer.zero_grad()
        loss = torch_loss(model, x, y, *noise)
        loss.backward()
        grads = engine.torch_grads(model)
        optimizer.step()
        # the next step's zero_grad sets them to None anyway: freed now, the grads are not
        # held twice (p.grad and the copy above) while the other sides step
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            _step_quietly(scheduler)
        return loss.detach(), grads

    return step


def _step_quietly(scheduler):
    # a copied scheduler warns that its optimizer's step was replaced: it was, by the copy's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


def _torch_side(framework, model, optimizer, scheduler, np_dtype, custom_step, loss, interval):
    """A torch side of the pair: ``torch`` itself, or the ``reference`` beside it."""

    def to_side(a):
        return torch.from_numpy(np.ascontiguousarray(cast(a, np_dtype)))

    start_epoch = None
    if scheduler is not None and interval == "epoch":

        def start_epoch(epoch):
            if epoch > 0:
                _step_quietly(scheduler)

    per_step = scheduler if interval == "step" else None
    return engine.Side(
        framework,
        model,
        optimizer,
        loss,
        custom_step or _torch_step(loss, per_step),
        to_side,
        step_grads=not custom_step,
        start_epoch=start_epoch,
    )


def _reference(torch_model, torch_optimizer, scheduler, dtype, seed):
    """Copies of the model, its optimizer(s) and scheduler for the reference, and what it is:
    torch in float64 beside a float32 check, torch from weights nudged by one rounding step
    (each float times 1 +- eps, signs drawn from ``seed``) beside a float64 one."""
    model, optimizer, scheduler = copy.deepcopy((torch_model, torch_optimizer, scheduler))
    if dtype == "float32":
        model.double()  # in place: the copied optimizer keeps the same Parameters
        return (model, optimizer, scheduler), "torch in float64"
    rng = np.random.default_rng([seed, 11])
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                signs = rng.choice([-1.0, 1.0], size=tuple(tensor.shape))
                eps = np.finfo(np.float64).eps
                tensor.mul_(torch.from_numpy(1 + signs * eps).to(tensor.dtype))
    return (model, optimizer, scheduler), "torch from weights nudged by one rounding step"


def _steps_to_move(optimizer, scheduler, steps_per_epoch, interval, most_epochs=20):
    """Steps enough for ``scheduler`` to change the learning rate at least once: to the end of
    the first epoch (or step) trained at another rate than the first, at most ``most_epochs``
    epochs."""
    per = 1 if interval == "step" else steps_per_epoch
    count = most_epochs * steps_per_epoch // per
    try:
        lrs, _ = optim.replay(optimizer, scheduler, count)
    except Exception:  # a scheduler to_optax refuses: it says why, in one line, just after
        return steps_per_epoch
    for t in range(1, len(lrs[0])):
        if any(rates[t] != rates[0] for rates in lrs):
            return max(steps_per_epoch, (t + 1) * per)
    return len(lrs[0]) * per


def _flax_step(flax_loss):
    """``nnx.value_and_grad`` and ``optimizer.update`` under ``nnx.jit``, the gradients kept."""

    @nnx.jit
    def jitted(model, optimizer, x, y, noise):
        args = () if noise is None else (noise,)
        loss, grads = nnx.value_and_grad(flax_loss)(model, x, y, *args)
        optimizer.update(model, grads)
        return loss, grads

    def step(model, optimizer, x, y, *noise):
        return jitted(model, optimizer, x, y, noise[0] if noise else None)

    return step


def _witness(torch_optimizer, scheduler, flax_model, folds, tolerance, translation):
    """The optimizer witness (``traps.OptimizerWitness``) for one parameter group, at the
    learning rate its scheduler makes (none where the scheduler moves the momentum too)."""
    if len(torch_optimizer.param_groups) != 1:
        return None
    seconds = {second for _, second in folds}
    params = {
        key: value
        for key, value in port.grads_from_nnx(flax_model, nnx.state(flax_model, nnx.Param)).items()
        if key not in seconds
    }
    try:
        [(lr, momentum)] = optim.learning_rates(
            torch_optimizer,
            scheduler,
            translation["steps_per_epoch"],
            translation["scheduler_interval"],
            translation["horizon"],
        )
        if momentum is not None:
            return None
        exact = optim.to_optax(torch_optimizer, scheduler, **translation)
        return traps.OptimizerWitness(
            torch_optimizer, params, min(tolerance, 1e-12), exact=exact, lr=lr
        )
    except CompareError:  # an optimizer to_optax cannot translate: no witness, no hint
        return None


def _irrelevant(recorder, final, reference):
    """What the loss does not depend on, in the state dict's order, with how far each parted:
    the parameters whose gradient was at rounding level on both sides, and the parameters and
    statistics that are themselves rounding noise (torch's own, the reference's difference,
    is a large part of them while the loss's is not: a running mean of activations that
    average to zero, say). Each was held to its own noise."""
    loss_noise = recorder.noise.get("loss", 0.0)
    found = {}
    for name, kind, got, want in final:
        entry = {"tensor": name, "rel_diff": tensor_rel_diff({name: got}, {name: want})}
        noted, noise = recorder.irrelevant.get(name), recorder.noise.get(name, 0.0)
        if kind == "param" and noted is not None:
            grad_max, scale = noted["grad_max"], noted["grad_scale"]
            entry.update(grad_max=grad_max, grad_scale=scale)
            entry["why"] = (
                f"its gradient is at rounding level on both sides (at most {grad_max:.1e} "
                f"against {scale:.1e} for the whole model): to the step's precision the loss "
                "does not depend on it (a shift a following normalisation absorbs, a key bias "
                "softmax ignores), so each side moves it by its own rounding noise"
            )
        elif noise >= NOISY and noise >= NOISY_OVER_LOSS * loss_noise:
            entry["why"] = (
                f"its value is rounding noise: {reference} lands {noise:.1e} (relative) from "
                "torch in it while the loss agrees (a statistic of activations that average to "
                "zero, a value the loss does not depend on)"
            )
        else:
            continue
        found[name] = entry
    return found


def _bound(recorder, tolerance, reference, final, irrelevant):
    """What each tensor was held to: ``fixed`` (the tolerance) when torch's own noise in the
    loss and the parameters the loss depends on stayed below a tenth of it, else
    ``sensitivity``: up to ``factor`` times that noise."""
    params = [name for name, kind, _, _ in final if kind == "param" and name not in irrelevant]
    noise = max((recorder.noise.get(name, 0.0) for name in ("loss", *params)), default=0.0)
    kind = "sensitivity" if recorder.factor * noise > tolerance else "fixed"
    return {
        "kind": kind,
        "tolerance": max(tolerance, recorder.factor * noise),
        "floor": tolerance,
        "factor": recorder.factor,
        "self_divergence": noise,
        "reference": reference,
        "why": (
            "each tensor held to the tolerance, or to factor x its own rounding noise (the "
            "reference's difference from torch, step by step) when that is larger; "
            "self_divergence is the largest such noise in the loss or a parameter the loss "
            "depends on"
        ),
    }
