"""``compare.translate``: readable Flax NNX source written from a torch module, proven on the spot.

The module is traced with ``torch.fx`` one class at a time: every child is a leaf of its
parent's graph, so each user-defined torch class becomes one NNX class with the torch
attribute names (its ``nnx.State`` paths are the ``state_dict`` keys, and
``port.torch_to_nnx`` loads the weights unchanged). Instances of one torch class whose
forward passes trace alike share one NNX class; the layer settings that differ between them
(channels, strides) become its constructor's arguments, the rest stay literals.

The module is traced twice, in training and in eval mode (``self.training`` is a Python
value fx reads at trace time): a class whose forward pass traces alike in both is written once;
one that traces otherwise (``if self.training:``) branches on ``self.deterministic``, which
``nnx.Module.train()`` and ``.eval()`` flip, as torch's ``train()`` and ``eval()`` flip
``self.training``. Instances share a class only when they trace alike in both modes.

Layer settings come from the port rules (docs/PORTING.md), never Flax's defaults: explicit
padding, torch's BatchNorm statistics (``jaxnets.layers.BatchNorm``), LayerNorm's epsilon,
pooling's ``ceil_mode`` and ``count_include_pad``, exact or tanh GELU, ReLU6.

Layout: every value carries a permutation ``perm`` (the JAX array is the torch tensor
transposed by it). Images enter channels-last (``check`` hands 4-D batches over NHWC);
convolutions, BatchNorm and pooling keep them so; an op whose meaning hangs on torch's axis
order (``flatten``, ``view``, ``cat``, ``mean``, ``softmax``...) has its dims remapped, or a
transpose placed first, and the outputs leave in torch's layout. ``permute`` and
``transpose`` only change the bookkeeping: no data moves.

Where fx cannot trace a forward symbolically (a Python loop over ``r_out.size(1)``: fx holds
sizes as symbols), that forward alone is traced again on the example input: sizes read where
Python needs numbers take the example's values, loops over them unroll (and are written back
as comprehensions), the sizes the traced code depends on are checked in the generated
``__call__``, and the header says so. It is not ``torch.export``: the rules are keyed on
``nn`` modules, which export inlines into ATen ops (docs/TRANSLATE.md).

What cannot be translated (no rule for a layer or an op, control flow on a tensor's values)
ends in one ``CompareError`` line naming the node, the op and the torch source line.
"""

import ast
import contextlib
import dataclasses
import difflib
import functools
import inspect
import math
import operator
import re
import subprocess
import sys
import textwrap
import types

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from flax import nnx
from torch import nn

from compare import port
from compare.errors import CompareError
from compare.toolkit.engine import call as call_model

__all__ = ["Translation", "translate"]


# -- layouts -------------------------------------------------------------------------------


def _ident(n):
    return tuple(range(n))


def _channels_last(n):
    return (0, *range(2, n), 1)


def _convert(perm, target):
    """The axes to transpose an array held in ``perm`` by to hold it in ``target``."""
    return tuple(perm.index(t) for t in target)


def _order_free(perm, shape):
    """Whether a reshape reads the same numbers in both layouts: the axes longer than one
    appear in torch's order."""
    kept = [a for a in perm if shape[a] != 1]
    return kept == sorted(kept)


_LETTERS = {4: "NCHW", 3: "NCL", 5: "NCDHW"}


def _layout_words(perm):
    n = len(perm)
    if n in _LETTERS and perm != _ident(n):
        letters = _LETTERS[n]
        return "".join(letters[a] for a in perm)
    return None


class Untranslatable(CompareError):
    """What has no rule: one line naming the node, the op and the torch source line."""


@dataclasses.dataclass
class Val:
    """A value in the generated code: its expression, the layout it is held in, and the torch
    value it stands for (a tensor, a tuple of values, or a Python value)."""

    expr: str
    perm: object = None  # tensors: a tuple; tuples: a list of the elements' perms
    value: object = None

    @property
    def is_tensor(self):
        return isinstance(self.value, torch.Tensor)


# -- generated classes ---------------------------------------------------------------------


@dataclasses.dataclass
class Lit:
    """A literal argument of a layer in ``__init__``: its keyword (or None) and value."""

    name: str
    value: object


@dataclasses.dataclass
class Ctor:
    """A constructor call in ``__init__``: ``func(args...)``; an arg is a Lit, a Ctor, a list
    of Ctors (a Sequential's layers) or a fixed source string."""

    func: str
    args: list
    comment: str = ""
    instance: object = None  # the child Instance, for a generated class


@dataclasses.dataclass
class Instance:
    """One torch module instance translated to one generated class (shared by alike ones)."""

    module: nn.Module
    path: str
    key: tuple = None
    init: list = dataclasses.field(default_factory=list)  # (attribute, Ctor or source)
    forward: list = dataclasses.field(default_factory=list)  # source lines
    arguments: list = dataclasses.field(default_factory=list)  # forward's parameter names
    out_perm: object = None
    helpers: set = dataclasses.field(default_factory=set)
    group: object = None  # the Group it ended in
    values: list = None  # its argument values, in the group's parameter order
    kind: str = "class"  # "class", "sequential" (an nnx.Sequential with transposes) or "root"
    switch: bool = False  # its forward branches on the mode (torch's self.training)
    specialized: object = None  # a Specialized: traced on the example's sizes, not symbols


@dataclasses.dataclass
class Uncalled:
    """A child the forward pass does not call in the mode traced: the other mode's constructor
    stands in for it, or ``message`` is the error when neither mode calls it."""

    message: str


class Group:
    """The instances sharing one generated class: its name and constructor parameters."""

    def __init__(self, key, first):
        self.key, self.instances, self.name = key, [first], None
        self.params = []  # parameter names
        self.slots = {}  # slot index -> parameter name (the rest are literals)


# -- tracing -------------------------------------------------------------------------------


class _Tracer(torch.fx.Tracer):
    """Traces one module's own forward: every child is a leaf (translated on its own)."""

    def __init__(self):
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m, qualname):
        return True


class _Recorder(torch.fx.Interpreter):
    """Runs a traced graph, keeping every node's value (the shapes and the children's
    inputs the translation needs)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        result = super().run_node(n)
        self.values[n] = result
        return result


def _source_line(stack):
    """``file:line: code`` of the innermost user frame of an fx stack trace."""
    if not stack:
        return "unknown source line"
    found = re.findall(r'File "([^"]+)", line (\d+), in \w+\n\s*(.*)', stack)
    for file, line, code in reversed(found):
        tracing = "/torch/fx/" in file or "/torch/nn/modules/module.py" in file
        if not tracing and file != __file__:  # this file: the example trace's create_proxy
            return f"{file}:{line}: {code.strip()}"
    return "unknown source line"


def _left_at_default(module, n_inputs):
    """``{name: default}`` of the forward's parameters the call leaves out (those past the
    ``n_inputs`` it is given, each with a default): an optional input (``masks=None``,
    ``eps=None``) is traced as its default, so that ``if masks is None`` takes the branch the
    call takes. Empty when one left out has no default: the input count error says so."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # no signature to read: trace it as it is
        return {}
    named = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) <= n_inputs or any(p.kind not in named for p in params):
        return {}
    left = params[n_inputs:]
    if any(p.default is inspect.Parameter.empty for p in left):
        return {}
    return {p.name: p.default for p in left}


def _drop_defaults(graph, n_inputs):
    """What fx adds for arguments traced at their defaults, dropped: their placeholders (those
    past the first ``n_inputs``) and the guards fed from them alone (``out == 2.0``, the
    asserts); a ``None`` left no placeholder but a pytree calling convention, reset to the
    plain one so that the graph takes the given inputs only."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    doomed = set(placeholders[n_inputs:])
    for node in graph.nodes:
        inputs = node.all_input_nodes
        if node.op != "placeholder" and inputs and all(i in doomed for i in inputs):
            doomed.add(node)
    for node in reversed(list(graph.nodes)):
        if node in doomed:
            graph.erase_node(node)
    graph.set_codegen(torch.fx.graph.CodeGen())


def _traced_len(obj):
    """``len`` while a forward is traced: of a traced tensor, a node (``len(x)``, the batch
    size, is common in torch code, and fx refuses it unless its module calls ``fx.wrap``)."""
    if isinstance(obj, torch.fx.Proxy):
        return obj.tracer.create_proxy("call_function", len, (obj,), {})
    return len(obj)


@contextlib.contextmanager
def _len_recorded(forward):
    """``len`` in ``forward``'s module is ``_traced_len`` for the trace: what ``fx.wrap("len")``
    at that module's top would do, undone after."""
    names = getattr(forward, "__globals__", None)
    if names is None or "len" in names:  # a module of its own len: leave it
        yield
        return
    names["len"] = _traced_len
    try:
        yield
    finally:
        del names["len"]


def _traced(module, tracer, defaults, n_inputs):
    with _len_recorded(type(module).forward):
        graph = tracer.trace(module, concrete_args=defaults or None)
    if defaults:
        _drop_defaults(graph, n_inputs)
    return graph


def _cannot_trace(err, module, where):
    """The one line for a forward pass that cannot be traced: the error's first line and the
    innermost line of the user's code it came from."""
    tb = err.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    code = "unknown source line"
    for frame in reversed(frames):
        file = frame.f_code.co_filename
        if "/torch/" not in file and "/compare/" not in file:
            line = frame.f_lineno
            text = inspect.getframeinfo(frame).code_context
            code = f"{file}:{line}: {(text or [''])[0].strip()}"
            break
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return Untranslatable(
        f"cannot trace {where} ({type(module).__name__}.forward): {first} ({code})"
    )


def _trace(module, where, args):
    """The forward pass of ``module`` as a graph (its children leaves), and ``None``; or,
    where a symbolic trace fails, the trace specialized to ``args`` (``_ExampleTracer``) and
    what it specialized (a ``Specialized``)."""
    n_inputs = len(args)
    defaults = _left_at_default(module, n_inputs)
    try:
        graph = _traced(module, _Tracer(), defaults, n_inputs)
        return torch.fx.GraphModule(module, graph, type(module).__name__), None
    except Exception as err:  # fx's TraceError and whatever the traced code raises
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    try:
        tracer = _ExampleTracer(args, defaults)
        graph = _traced(module, tracer, defaults, n_inputs)
    except Exception as err:  # neither trace: the specialized one's reason, the closer one
        raise _cannot_trace(err, module, where) from None
    _drop_unused_sizes(graph, tracer.sizes)
    sizes = _specialized_sizes(module, args, defaults, graph, tracer.read_sizes)
    found = Specialized(reason, list(dict.fromkeys(tracer.specialized)), sizes)
    return torch.fx.GraphModule(module, graph, type(module).__name__), found


# -- the fallback: a trace specialized to the example's sizes -------------------------------

_UNKNOWN = object()  # a value the example trace could not compute

# the methods and attributes of a tensor that read its sizes, never its values
_SIZE_METHODS = {"size", "dim", "numel"}
_SIZE_ATTRIBUTES = {"shape", "ndim"}


class _ExampleProxy(torch.fx.Proxy):
    """A traced value that also holds its value on the example input. A size read from it
    (``x.size(1)``, ``x.shape``, ``x.dim()``, ``len(x)`` and arithmetic on them) is a node as
    in a plain trace, but where Python needs a number (``range(r_out.size(1))``,
    ``if x.dim() == 3:``) it is the example's: the trace is specialized to that size. A value
    computed from a tensor's values is never made a constant."""

    def __index__(self):
        return self.tracer.as_constant(self, "a tensor's value used as a Python integer")


class _ExampleTracer(_Tracer):
    """``_Tracer`` run on the example inputs alongside the graph it builds: every node's value
    is computed as it is recorded (the children run as torch runs them), so that sizes are
    known while the forward's Python code runs. ``specialized`` lists the source lines where
    a size became a constant."""

    def __init__(self, inputs, defaults):
        super().__init__()
        self.inputs, self.defaults = list(inputs), defaults
        self.values = {}  # node -> its value on the example (or _UNKNOWN)
        self.sizes = set()  # the nodes holding sizes and what is computed from them alone
        self.ranks = set()  # those of them read from ``dim()`` alone: no size the input has
        self.specialized = []  # "file:line: code" where a size was read as a constant
        self.read_sizes = False  # a size, not only a rank, was read as a constant
        self._placeholders = 0
        self._running = False  # a child runs as torch runs it: no nodes, no proxies

    def proxy(self, node):
        return _ExampleProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, *rest, **more):
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **more)
        if isinstance(proxy, torch.fx.Proxy):
            node = proxy.node
            self.values[node] = self._evaluate(kind, target, args, kwargs)
            if self._reads_sizes(kind, target, args) and self.values[node] is not _UNKNOWN:
                self.sizes.add(node)
                if self._reads_rank(kind, target, args):
                    self.ranks.add(node)
        return proxy

    def call_module(self, m, forward, args, kwargs):
        if self._running:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._running:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def _value(self, a):
        return self.values.get(a.node, _UNKNOWN) if isinstance(a, torch.fx.Proxy) else a

    def _evaluate(self, kind, target, args, kwargs):
        if kind == "placeholder":
            k = self._placeholders
            self._placeholders += 1
            return self.inputs[k] if k < len(self.inputs) else self.defaults.get(target)
        values = torch.fx.node.map_aggregate((args, kwargs), self._value)
        unknown = []
        torch.fx.node.map_aggregate(values, lambda v: unknown.append(v is _UNKNOWN))
        if any(unknown):
            return _UNKNOWN
        (args, kwargs), self._running = values, True
        try:
            with torch.no_grad():
                if kind == "call_function":
                    return target(*args, **kwargs)
                if kind == "call_method":
                    return getattr(args[0], target)(*args[1:], **kwargs)
                if kind == "call_module":
                    return self.root.get_submodule(target)(*args, **kwargs)
                if kind == "get_attr":
                    return operator.attrgetter(target)(self.root)
        finally:
            self._running = False
        return _UNKNOWN

    def _reads_sizes(self, kind, target, args):
        if kind == "call_method" and target in _SIZE_METHODS:
            return True
        if kind != "call_function":
            return False
        if target is getattr:
            return args[1] in _SIZE_ATTRIBUTES
        if target is len or target is _traced_len:
            return isinstance(self._value(args[0]), torch.Tensor)
        inputs = []
        torch.fx.node.map_aggregate(
            args, lambda a: inputs.append(a) if isinstance(a, torch.fx.Proxy) else None
        )
        pure = getattr(target, "__module__", None) in ("_operator", "operator", "builtins")
        return pure and bool(inputs) and all(a.node in self.sizes for a in inputs)

    def _reads_rank(self, kind, target, args):
        if kind == "call_method":
            return target == "dim"
        if target is getattr:
            return args[1] == "ndim"
        inputs = []
        torch.fx.node.map_aggregate(
            args, lambda a: inputs.append(a) if isinstance(a, torch.fx.Proxy) else None
        )
        return bool(inputs) and all(a.node in self.ranks for a in inputs)

    def as_constant(self, proxy, what):
        """The example's value of ``proxy`` where Python needs a number, when it is a size; a
        value computed from a tensor's values is refused: the example's would hold for it
        alone."""
        if proxy.node not in self.sizes:
            raise torch.fx.proxy.TraceError(f"{what} (only sizes are specialized to the example's)")
        self.specialized.append(_user_line())
        self.read_sizes |= proxy.node not in self.ranks
        return self.values[proxy.node]

    def to_bool(self, obj):
        return bool(self.as_constant(obj, "control flow on a tensor's values"))

    def iter(self, obj):
        value = self.values.get(obj.node, _UNKNOWN)
        if obj.node in self.sizes and isinstance(value, tuple):  # for d in x.shape
            self.specialized.append(_user_line())
            return iter([obj[i] for i in range(len(value))])
        return super().iter(obj)


def _user_line():
    """``file:line: code`` of the innermost frame of the user's code on the stack now."""
    frame = inspect.currentframe()
    while frame is not None:
        file = frame.f_code.co_filename
        if "/torch/" not in file and "/compare/" not in file:
            text = inspect.getframeinfo(frame).code_context
            return f"{file}:{frame.f_lineno}: {(text or [''])[0].strip()}"
        frame = frame.f_back
    return "unknown source line"


def _drop_unused_sizes(graph, sizes):
    """The size reads the example trace made constants of (``r_out.size(1)`` read by
    ``range``) are nodes no other reads: dropped, so that no dead line is written."""
    for node in reversed(list(graph.nodes)):
        if node in sizes and not node.users:
            graph.erase_node(node)


@dataclasses.dataclass
class Specialized:
    """What a trace specialized to the example made constants of: ``reason``, why the plain
    trace failed; ``lines``, the source lines where a size became a constant; ``sizes``,
    ``(input index, torch dim, size)`` of the input sizes the traced code depends on."""

    reason: str
    lines: list
    sizes: list


def _resized(x, dim, size):
    """``x`` with ``size`` along ``dim``: its own slices, repeated or cut (integer inputs stay
    valid indices)."""
    index = torch.arange(size) % x.shape[dim]
    return x.index_select(dim, index)


def _specialized_sizes(module, args, defaults, graph, read_sizes):
    """The input sizes a trace specialized to ``args`` depends on: each size, one smaller and
    one larger, traced again; where torch runs the module at that size but the code traced
    there differs (another unrolling, another branch) or fails, the size is specialized. A
    size torch itself refuses (a Linear's features) is not. When sizes were read as constants
    but no neighbour shows it (``if x.size(1) > 5`` at 10), every size torch would take
    another of is taken as specialized: the file refuses more than it must, never less."""
    code = graph.python_code("self").src
    n_inputs = len(args)
    found, free = [], []
    for i, x in enumerate(args):
        if not isinstance(x, torch.Tensor):
            continue
        for dim in range(x.dim()):
            changed = accepted = False
            for size in (x.shape[dim] - 1, x.shape[dim] + 1):
                if size < 1:
                    continue
                other = list(args)
                other[i] = _resized(x, dim, size)
                try:
                    with torch.no_grad():
                        module(*other)
                except Exception:  # torch refuses this size: the model fixes it, not the trace
                    continue
                accepted = True
                try:
                    tracer = _ExampleTracer(other, defaults)
                    traced = _traced(module, tracer, defaults, n_inputs)
                    _drop_unused_sizes(traced, tracer.sizes)
                    changed = traced.python_code("self").src != code
                except Exception:  # the trace fails there: another path through the code
                    changed = True
                if changed:
                    break
            if changed:
                found.append((i, dim, x.shape[dim]))
            elif accepted:
                free.append((i, dim, x.shape[dim]))
    if read_sizes and not found:
        found = free
    return found


# -- unrolled loops, rolled back -------------------------------------------------------------


class _LoopIndex(int):
    """An integer constant of an unrolled loop's first pass, written as the loop's variable."""

    name = "t"

    def __repr__(self):
        return self.name


@dataclasses.dataclass
class _Loop:
    """Items of a list (``torch.stack(outs, 1)``'s) computed alike, one per pass of a loop the
    example trace unrolled: ``chains[j]``, the nodes computing item ``j`` alone; ``varying``,
    where in the first chain the pass's integer stands (node index, argument path);
    ``indices``, that integer in each pass."""

    consumer: torch.fx.Node
    chains: list
    varying: list
    indices: list


def _chain(end, consumer, position):
    """The nodes that compute ``end`` for ``consumer`` alone, in graph order (None: ``end``
    is read elsewhere too)."""
    if set(end.users) != {consumer}:
        return None
    chain = {end}
    grew = True
    while grew:
        grew = False
        for node in list(chain):
            for m in node.all_input_nodes:
                computed = m.op in ("call_function", "call_method", "call_module")
                if m not in chain and computed and set(m.users) <= chain:
                    chain.add(m)
                    grew = True
    return sorted(chain, key=position.__getitem__)


def _alike(a, b, inside, path, diffs):
    """Whether arguments ``a`` (of the first chain) and ``b`` (of another) are the same but
    for integers, whose paths and values go into ``diffs``."""
    if isinstance(a, torch.fx.Node):
        return isinstance(b, torch.fx.Node) and inside.get(a, a) is b
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(
            _alike(x, y, inside, (*path, k), diffs)
            for k, (x, y) in enumerate(zip(a, b, strict=True))
        )
    if isinstance(a, slice):
        parts = ((a.start, b.start), (a.stop, b.stop), (a.step, b.step))
        return all(_alike(x, y, inside, (*path, k), diffs) for k, (x, y) in enumerate(parts))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            _alike(a[k], b[k], inside, (*path, k), diffs) for k in a
        )
    if type(a) is int and a != b:
        diffs.append((path, a, b))
        return True
    return a == b


def _loops(nodes):
    """The lists in ``nodes`` whose items are computed alike, pass by pass, with one integer
    counting the passes: what remains of a Python loop the example trace unrolled."""
    position = {node: k for k, node in enumerate(nodes)}
    found = []
    for consumer in nodes:
        for items in (*consumer.args, *consumer.kwargs.values()):
            if not (isinstance(items, list | tuple) and len(items) >= 2):
                continue
            if not all(isinstance(n, torch.fx.Node) for n in items) or len(set(items)) < len(items):
                continue
            loop = _loop(consumer, items, position)
            if loop is not None:
                found.append(loop)
    taken, loops = set(), []
    for loop in found:  # a node in one loop only
        nodes_in = {n for chain in loop.chains for n in chain}
        if not nodes_in & taken:
            taken |= nodes_in
            loops.append(loop)
    return loops


def _loop(consumer, items, position):
    chains = [_chain(end, consumer, position) for end in items]
    if any(c is None or len(c) != len(chains[0]) for c in chains):
        return None
    first, varying, indices = chains[0], None, []
    for chain in chains[1:]:
        inside = dict(zip(first, chain, strict=True))
        diffs = []
        for k, (a, b) in enumerate(zip(first, chain, strict=True)):
            if a.op != b.op or a.target != b.target or a.op == "placeholder":
                return None
            if a.op == "call_method" and a.target.endswith("_"):  # in place: not rolled
                return None
            if not _alike((a.args, a.kwargs), (b.args, b.kwargs), inside, (k,), diffs):
                return None
        paths = [path for path, _, _ in diffs]
        if not diffs or (varying is not None and paths != varying):
            return None
        if len({a for _, a, _ in diffs}) != 1 or len({b for _, _, b in diffs}) != 1:
            return None
        varying = paths
        indices = indices or [diffs[0][1]]
        indices.append(diffs[0][2])
    step = indices[1] - indices[0]
    if step == 0 or any(b - a != step for a, b in zip(indices, indices[1:], strict=False)):
        return None
    outside = {m for chain in chains for n in chain for m in n.all_input_nodes} - set(
        n for chain in chains for n in chain
    )
    begin = min(position[n] for chain in chains for n in chain)
    if any(position[m] > begin for m in outside):  # written at the loop's first node
        return None
    return _Loop(consumer, chains, varying, indices)


def _substituted(value, path, new):
    """``value`` (nested tuples, lists, slices, dicts) with ``new`` at ``path``."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, slice):
        parts = [value.start, value.stop, value.step]
        parts[head] = _substituted(parts[head], rest, new)
        return slice(*parts)
    if isinstance(value, dict):
        return {**value, head: _substituted(value[head], rest, new)}
    items = list(value)
    items[head] = _substituted(items[head], rest, new)
    return type(value)(items)


def _atom(expr):
    """``expr`` as an operand: parenthesized unless it is a name, call, subscript or literal."""
    try:
        body = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return f"({expr})"
    simple = (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant, ast.List, ast.Tuple)
    return expr if isinstance(body, simple) else f"({expr})"


def _pass_expr(ctx, loop, j, variable):
    """Item ``j`` of ``loop`` as one expression, its pass's integer written as ``variable``."""
    index = _LoopIndex(loop.indices[j])
    index.name = variable
    chain, saved = loop.chains[j], {}
    try:
        for k, node in enumerate(chain):
            paths = [path[1:] for path in loop.varying if path[0] == k]
            if paths:
                saved[node] = (node.args, node.kwargs)
                args_kwargs = (node.args, node.kwargs)
                for path in paths:
                    args_kwargs = _substituted(args_kwargs, path, index)
                node.args, node.kwargs = args_kwargs
            val, _ = ctx.node(node)
            val = val.val if isinstance(val, Alias) else val
            ctx.env[node] = Val(_atom(val.expr), val.perm, ctx.values.get(node))
    finally:
        for node, (args, kwargs) in saved.items():
            node.args, node.kwargs = args, kwargs
    return val  # the item itself: no parentheses around it in the comprehension


def _write_loop(ctx, loop, live_until):
    """``outs = [self.out(r_out[:, t, :]) for t in range(10)]`` for ``loop``, when every
    pass's expression is the first one's with its own integer (a rule that reads the integer
    itself, not only writes it, makes them differ: then the passes stay unrolled); None when
    not."""
    variable = ctx.new_name("t")
    try:
        passes = [_pass_expr(ctx, loop, j, variable) for j in range(len(loop.chains))]
    except Untranslatable:  # the unrolled lines name the node that cannot be translated
        return None
    if any(p.expr != passes[0].expr or p.perm != passes[0].perm for p in passes):
        return None
    end = loop.chains[0][-1]
    base = re.sub(r"_\d+$", "", end.name)
    if end.op == "call_module":  # the layer's name: outs = [self.out(...) for t in ...]
        base = end.target.replace(".", "_")
    name = ctx.new_name(f"{base}s")
    start, step, count = loop.indices[0], loop.indices[1] - loop.indices[0], len(loop.indices)
    bounds = f"{count}" if (start, step) == (0, 1) else f"{start}, {start + step * count}"
    bounds += "" if step == 1 else f", {step}"
    shape = _shape_comment(ctx.values.get(end), passes[0].perm)
    note = f"  # each {shape}" if shape else ""
    for j, chain in enumerate(loop.chains):
        ctx.env[chain[-1]] = Val(f"{name}[{j}]", passes[0].perm, ctx.values.get(chain[-1]))
    ctx.live[name] = live_until[loop.consumer]
    items = "[" + ", ".join(f"{name}[{j}]" for j in range(count)) + "]"
    return f"{name} = [{passes[0].expr} for {variable} in range({bounds})]{note}", items, name


# -- the translator ------------------------------------------------------------------------

_STATEFUL = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    nn.LSTM,
    nn.GRU,
    nn.RNN,
    nn.Dropout,
)


def _is_numeric_sequential(m):
    return (
        isinstance(m, nn.Sequential)
        and type(m).forward is nn.Sequential.forward
        and all(name.isdigit() for name in m._modules)
    )


def _fmt(value):
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, torch.Size):
        return repr(tuple(value))
    return repr(value)


class Translator:
    def __init__(self):
        self.instances = []
        self.helpers = set()
        self._ctors = {}  # id(torch module) -> its constructor

    # ---- one instance -----------------------------------------------------------------

    def instance(self, module, path, args, in_perms):
        """Translate ``module`` (called with ``args``, tensors held in ``in_perms``)."""
        inst = Instance(module, path)
        where = path or "the model"
        if not path and _is_numeric_sequential(module):
            return self._root_sequential(inst, args, in_perms)
        if not path and isinstance(module, _STATEFUL) and type(module) in LEAVES:
            return self._root_layer(inst, args, in_perms)
        gm, inst.specialized = _trace(module, where, args)
        nodes = list(gm.graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        if len(placeholders) != len(args):  # before running it: fx would fail in a traceback
            raise Untranslatable(
                f"{where}: forward takes {len(placeholders)} inputs "
                f"({', '.join(n.name for n in placeholders)}), {len(args)} were given"
            )
        recorder = _Recorder(gm)
        with torch.no_grad():
            recorder.run(*args)
        values = recorder.values
        position = {node: i for i, node in enumerate(nodes)}
        live_until = {node: max((position[u] for u in node.users), default=0) for node in nodes}
        lines = []
        env = {}
        ctx = _Ctx(self, inst, env, values, lines, nodes)
        for node, perm in zip(placeholders, in_perms, strict=True):
            # fx renames torch's ``input`` (a builtin) to input_1: x reads as the twins do
            name = ctx.new_name("x" if re.fullmatch(r"input(_\d+)?", node.name) else node.name)
            inst.arguments.append(name)
            env[node] = Val(name, perm, values[node])
            ctx.live[name] = live_until[node]
        if inst.specialized is not None:
            lines += _size_checks(inst, type(module).__name__, placeholders, env)
        # the loops the example trace unrolled, written as loops again where they can be
        loops = _loops(nodes) if inst.specialized is not None else []
        starts = {min((n for c in lp.chains for n in c), key=position.get): lp for lp in loops}
        rolled, lists = set(), {}  # the nodes a loop line wrote; consumer -> (items, name)
        for i, node in enumerate(nodes):
            ctx.index = i
            if node in starts:
                written = _write_loop(ctx, starts[node], live_until)
                if written is not None:
                    line, items, name = written
                    lines.append(line)
                    rolled |= {n for c in starts[node].chains for n in c}
                    lists.setdefault(starts[node].consumer, []).append((items, name))
            if node.op == "placeholder" or node in rolled:
                continue
            if node.op == "output":
                out = ctx.to_torch_layout(node.args[0]) if not path else ctx.arg(node.args[0])
                inst.out_perm = out.perm
                lines.append(f"return {out.expr}")
                continue
            try:
                val, comment = ctx.node(node)
            except Untranslatable as err:
                raise Untranslatable(
                    f"{where}: node {node.name} ({node.op} {_target_name(node)}): {err} "
                    f"({_source_line(node.stack_trace)})"
                ) from None
            for items, name in lists.get(node, ()) if isinstance(val, Val) else ():
                val.expr = val.expr.replace(items, name)  # [outs[0], outs[1]...] read as outs
            if isinstance(val, Alias):  # a no-op: the value goes on under its old name
                env[node] = Val(val.val.expr, val.val.perm, values.get(node))
                ctx.live[val.val.expr] = max(ctx.live.get(val.val.expr, 0), live_until[node])
                if comment:
                    lines.append(f"# {comment}")
            else:
                name = ctx.result_name(node, live_until)
                shape = _shape_comment(values.get(node), val.perm)
                note = "; ".join(c for c in (comment, shape) if c)
                lines.append(f"{name} = {val.expr}" + (f"  # {note}" if note else ""))
                env[node] = Val(name, val.perm, values.get(node))
                ctx.live[name] = live_until[node]
            src = node.args[0] if node.args else None
            if (
                node.op == "call_method"
                and node.target.endswith("_")
                and not node.target.startswith("_")
                and isinstance(src, torch.fx.Node)
            ):  # in place in torch, pure here: later reads of its input read the result
                env[src] = env[node]
                ctx.live[env[node].expr] = max(ctx.live[env[node].expr], live_until[src])
        inst.forward = lines
        self._build_init(inst, ctx)
        inst.key = _instance_key(inst)
        self.instances.append(inst)
        return inst

    def _root_sequential(self, inst, args, in_perms):
        """A torch Sequential as the whole model: a subclass of ``nnx.Sequential`` (its keys
        ``0.weight``... are torch's), returning torch's layout."""
        if len(args) != 1:
            raise Untranslatable("the model: a Sequential takes one input")
        call = Call(tuple(args), tuple(in_perms))
        ctor = self.sequential(inst.module, "", call)
        with torch.no_grad():
            out = inst.module(*args)
        inst.arguments = ["x"]
        shape = _shape_comment(out, call.out_perm)
        moves = getattr(self, "_root_moves", {})
        if moves:
            for k in range(len(ctor.args)):
                arg = f"x.transpose{moves[k]}" if k in moves else "x"
                inst.forward.append(f"x = self.layers[{k}]({arg})")
        else:
            inst.forward = [f"x = super().__call__(x)  # {shape}"]
        back = _convert(call.out_perm, _ident(out.dim()))
        inst.forward.append(
            "return x" if back == _ident(out.dim()) else f"return x.transpose{back}"
        )
        inst.init = [("__super__", ctor)]
        inst.kind = "root"
        inst.key = _instance_key(inst)
        inst.out_perm = _ident(out.dim())
        self.instances.append(inst)
        return inst

    def _root_layer(self, inst, args, in_perms):
        """A bare torch layer with weights as the whole model (``nn.Linear(3, 2)``): a
        subclass of its NNX layer, built with the port rule's settings, so that the state
        paths are the layer's own (``weight``, ``bias``: the state dict's keys), taking and
        returning torch's layout."""
        module = inst.module
        if len(args) != 1:
            raise Untranslatable(f"the model: a {type(module).__name__} takes one input")
        rule = LEAVES[type(module)]
        (x,), (perm,) = args, in_perms
        need = rule.needs(module, x, perm)
        expr = "x" if need is None or need == perm else f"x.transpose{_convert(perm, need)}"
        perm = need if need is not None else perm
        _, out_perm = rule.call(module, expr, x, perm, self.helpers, "super().__call__")
        with torch.no_grad():
            out = module(x)
        inst.arguments = ["x"]
        if isinstance(out, torch.Tensor):
            shape = _shape_comment(out, out_perm)
            inst.forward = [f"x = super().__call__({expr})  # {shape}"]
            back = _convert(out_perm, _ident(out.dim()))
            moved = back != _ident(out.dim())
            inst.forward.append(f"return x.transpose{back}" if moved else "return x")
            inst.out_perm = _ident(out.dim())
        else:  # a recurrent layer's (output, state): torch's layout as it comes
            inst.forward = [f"return super().__call__({expr})"]
            inst.out_perm = out_perm
        ctor = rule.ctor(module)
        ctor.comment = ""
        inst.init = [("__super__", ctor)]
        inst.kind = "root"
        inst.key = _instance_key(inst)
        self.instances.append(inst)
        return inst

    # ---- __init__ ---------------------------------------------------------------------

    def _build_init(self, inst, ctx):
        module = inst.module
        for name, param in module._parameters.items():
            if param is not None:
                shape = tuple(param.shape)
                inst.init.append(
                    (name, f"nnx.Param(jnp.zeros({shape!r}))  # {name}: torch's own, ported")
                )
        for name, buf in module._buffers.items():
            if buf is not None and name not in module._non_persistent_buffers_set:
                shape = tuple(buf.shape)
                inst.init.append(
                    (name, f"nnx.BatchStat(jnp.zeros({shape!r}))  # {name}: torch's buffer")
                )
        for name, child in module.named_children():
            ctor = self.child_ctor(child, f"{inst.path}.{name}".lstrip("."), ctx.called.get(name))
            if ctor is not None:
                inst.init.append((name, ctor))

    def child_ctor(self, child, path, call):
        """The constructor of a child in its parent's ``__init__`` (None: a stateless layer
        the forward pass writes inline); one per module, however often it is asked for."""
        if id(child) in self._ctors:
            return self._ctors[id(child)]
        ctor = self._child_ctor(child, path, call)
        self._ctors[id(child)] = ctor
        return ctor

    def _child_ctor(self, child, path, call):
        stateless = not any(True for _ in child.state_dict())
        if call is None and stateless and LEAVES.get(type(child)) is None:
            return None  # never called and holding nothing: nothing to write
        rule = LEAVES.get(type(child))
        if rule is not None:
            if not isinstance(child, _STATEFUL):
                return None
            ctor = rule.ctor(child)
            note = ctor.comment.partition(": ")[2]
            name = path.rsplit(".", 1)[-1]
            ctor.comment = f"{name}: nn.{type(child).__name__}" + (f", {note}" if note else "")
            return ctor
        if _is_numeric_sequential(child):
            return self.sequential(child, path, call)
        if isinstance(child, nn.ModuleList):
            if call is None:
                return Uncalled(f"{path}: a ModuleList whose layers are never called")
            items = []
            for k, item in enumerate(child):
                items.append(self.child_ctor(item, f"{path}.{k}", call.get(str(k))))
            return Ctor("nnx.List", [items], comment=f"{path.rsplit('.', 1)[-1]}")
        if type(child).__module__.startswith("torch.nn") and not isinstance(
            child, nn.Sequential | nn.ModuleDict
        ):
            raise Untranslatable(f"{path}: no rule for torch.nn.{type(child).__name__}")
        if call is None:
            return Uncalled(
                f"{path}: {type(child).__name__} is never called by its parent's forward"
            )
        if not isinstance(call, Call):
            raise Untranslatable(
                f"{path}: {type(child).__name__} is never called by its parent's forward"
            )
        sub = self.instance(child, path, call.args, call.perms)
        call.out_perm = sub.out_perm
        return Ctor(
            "", [], comment=f"{path.rsplit('.', 1)[-1]}: {type(child).__name__}", instance=sub
        )

    def sequential(self, seq, path, call):
        """A torch Sequential with numbered layers: an ``nnx.Sequential`` of the same
        indices; stateless layers are functions in it (they keep their index)."""
        if call is None:
            return Uncalled(f"{path}: a Sequential that is never called as a whole")
        if not isinstance(call, Call):
            raise Untranslatable(f"{path}: a Sequential that is never called as a whole")
        (x,) = call.args
        perm = call.perms[0]
        items, moves = [], {}  # moves: layer index -> the transpose before it
        for k, (name, layer) in enumerate(seq.named_children()):
            where = f"{path}.{name}".lstrip(".")
            rule = LEAVES.get(type(layer))
            with torch.no_grad():
                y = layer(x)
            if rule is not None:
                need = rule.needs(layer, x, perm)
                if need is not None and need != perm and isinstance(layer, _STATEFUL):
                    # a transpose before a layer: the Sequential gets a __call__ of its own
                    moves[k] = _convert(perm, need)
                    _, out_perm = rule.call(layer, "x", x, need, self.helpers, where)
                    ctor = rule.ctor(layer)
                    ctor.comment = f"{name} ({type(layer).__name__})"
                    items.append(ctor)
                    x, perm = y, out_perm
                    continue
                if need is not None and need != perm:
                    rule_call, out_perm = rule.call(layer, "x", x, need, self.helpers, where)
                    axes = _convert(perm, need)
                    fn = f"lambda x: {rule_call.replace('(x', f'(x.transpose{axes}', 1)}"
                elif isinstance(layer, _STATEFUL):
                    _, out_perm = rule.call(layer, "x", x, perm, self.helpers, where)
                    ctor = rule.ctor(layer)
                    ctor.comment = f"{name} ({type(layer).__name__})"
                    items.append(ctor)
                    x, perm = y, out_perm
                    continue
                else:
                    rule_call, out_perm = rule.call(layer, "x", x, perm, self.helpers, where)
                    fn = _as_function(rule_call)
                items.append(Ctor(fn, [], comment=f"{name} ({type(layer).__name__})"))
            else:
                sub_call = Call((x,), (perm,))
                ctor = self.child_ctor(layer, where, sub_call)
                items.append(ctor)
                out_perm = sub_call.out_perm
            x, perm = y, out_perm
        call.out_perm = perm
        ctor = Ctor("nnx.Sequential", items, comment=f"{path.rsplit('.', 1)[-1]}: nn.Sequential")
        if not moves or not path:
            if moves:  # the whole model: its class's __call__ does it
                self._root_moves = moves
            return ctor
        inst = Instance(seq, path)
        inst.arguments = ["x"]
        for k in range(len(items)):
            arg = f"x.transpose{moves[k]}" if k in moves else "x"
            note = "  # to the layout this layer reads" if k in moves else ""
            inst.forward.append(f"x = self.layers[{k}]({arg}){note}")
        inst.forward.append("return x")
        inst.init = [("__super__", ctor)]
        inst.out_perm = perm
        inst.kind = "sequential"
        inst.key = _instance_key(inst)
        self.instances.append(inst)
        return Ctor("", [], comment=ctor.comment, instance=inst)

    # ---- the file ---------------------------------------------------------------------

    def source(self, root, class_name, torch_module, example_inputs):
        groups = self._group(root, class_name)
        parts = []
        for group in groups:
            parts.append(self._render_class(group))
        specialized = {}  # one note per class: instances sharing one are specialized alike
        for inst in self.instances:
            if inst.specialized is not None:
                specialized.setdefault(inst.group.name, (inst, inst.group))
        specialized = list(specialized.values())
        header = _header(torch_module, example_inputs, root, specialized)
        helpers = "\n\n".join(HELPERS[h] for h in sorted(self.helpers))
        imports = ["import jax", "import jax.numpy as jnp", "from flax import nnx", ""]
        imports.append("from jaxnets import layers")
        body = "\n".join(imports) + "\n\n" + (helpers + "\n\n" if helpers else "")
        return header + "\n" + body + "\n\n".join(parts)

    def _group(self, root, class_name):
        groups = {}
        order = []
        for inst in self.instances:  # children come before their parents
            key = inst.key if inst is not root else ("root",)
            if key in groups:
                groups[key].instances.append(inst)
            else:
                groups[key] = Group(key, inst)
                order.append(groups[key])
            inst.group = groups[key]
        taken = {}
        root_first = [root.group] + [g for g in order if g is not root.group]
        for group in root_first:  # the model's class keeps its name
            first = group.instances[0]
            base = class_name if first is root and class_name else type(first.module).__name__
            if type(first.module) is nn.Sequential and first.path:  # named: its attribute's
                camel = _camel(first.path.rsplit(".", 1)[-1])
                base = camel if camel.isidentifier() else base
            if not base.isidentifier():
                base = "Module" + _camel(base)
            name = base
            if name in taken:
                others = {a for a, _ in taken[name].instances[0].init}
                extra = [a for a, _ in first.init if a not in others]
                name = base + "With" + "".join(_camel(e) for e in extra[:2])
                name = name if extra else base
                k = 1
                while name in taken or name == base:
                    k += 1
                    name = f"{base}{k}"
            taken[name] = group
            group.name = name
        for group in order:  # children first: a parent's arguments hold theirs
            self._params(group)
        return order

    def _params(self, group):
        """Literals alike in every instance stay literals; the others become parameters,
        one per distinct column of values."""
        columns = [_slots(inst.init) for inst in group.instances]
        n = len(columns[0])
        params, by_values = [], {}
        for i in range(n):
            values = tuple(_freeze(c[i][1]) for c in columns)
            if len(set(values)) == 1:
                continue
            if values in by_values:
                group.slots[i] = by_values[values]
                continue
            base = (columns[0][i][0] or "arg").lstrip("_")
            name, k = base, 1
            while name in params:
                k += 1
                name = f"{columns[0][i][2]}_{base}" if k == 2 else f"{base}{k}"
            params.append(name)
            by_values[values] = name
            group.slots[i] = name
        group.params = params
        for inst, column in zip(group.instances, columns, strict=True):
            firsts = {}
            for i, name in group.slots.items():
                firsts.setdefault(name, column[i][1])
            inst.values = [firsts[p] for p in params]

    def _render_class(self, group):
        first = group.instances[0]
        torch_cls = type(first.module)
        paths = [inst.path or "the model" for inst in group.instances]
        where = ", ".join(paths[:6]) + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")
        doc = f'    """{torch_cls.__module__}.{torch_cls.__qualname__}: {where}."""\n'
        params = "".join(f"{p}, " for p in group.params)
        base = "nnx.Module"
        if first.init and first.init[0][0] == "__super__":
            base = _SUPER_BASES.get(first.init[0][1].func, first.init[0][1].func)
        lines = [f"class {group.name}({base}):", doc.rstrip("\n"), ""]
        lines.append(f"    def __init__(self, {params}*, rngs: nnx.Rngs):")
        counter = iter(range(10**9))
        if first.switch and base == "nnx.Module":
            lines.append(f"        {_SWITCH_INIT}")
        if not first.init and not first.switch:
            lines.append("        pass")
        for attr, ctor in first.init:
            if isinstance(ctor, str):
                lines.append(f"        {_set(attr, ctor)}")
                continue
            text = _render_ctor(ctor, group, counter, 2)
            if attr == "__super__":  # an nnx.Sequential's layers, a layer's settings
                rest = text.removeprefix(f"{ctor.func}(")
                if ctor.func in _SUPER_EXTRA:  # what a partial adds to the class it subclasses
                    rest = rest.removesuffix("rngs=rngs)") + f"{_SUPER_EXTRA[ctor.func]}rngs=rngs)"
                lines.append("        super().__init__(" + rest)
                if first.switch:
                    lines.append(f"        {_SWITCH_INIT}")
                continue
            if ctor.comment:
                lines.append(f"        # {ctor.comment}")
            lines.append(f"        {_set(attr, text)}")
        lines.append("")
        args = ", ".join(first.arguments)
        shapes = ""
        if first.arguments and len(group.instances) == 1 and first.path == "":
            shapes = ""
        lines.append(f"    def __call__(self, {args}):{shapes}")
        shared = len(group.instances) > 1
        for line in first.forward:
            if shared:  # shapes differ between the instances: keep the layout words only
                line = re.sub(r"  # (.*?)\(\d[\d, ]*\)( \w+)?$", _keep_words, line)
                line = line.removesuffix("  # each")  # a loop's items: their shape alone
            lines.append(f"        {line}")
        return "\n".join(lines) + "\n"


# a model that is one layer subclasses the layer's NNX class: jaxnets.layers.Conv is a partial
# of nnx.Conv (torch's convolution arithmetic), so its class is nnx.Conv given what it adds
_SUPER_BASES = {"layers.Conv": "nnx.Conv"}
_SUPER_EXTRA = {"layers.Conv": "conv_general_dilated=layers.conv_general_dilated, "}


def _camel(name):
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"\W|_", name) if p)


def _set(attr, text):
    """``self.attr = text``; torch allows names Python does not (regnet's ``block1-0``)."""
    if attr.isidentifier():
        return f"self.{attr} = {text}"
    return f"setattr(self, {attr!r}, {text})"


def _keep_words(match):
    words = (match.group(2) or "").strip()
    comment = match.group(1).rstrip("; ")
    rest = "; ".join(c for c in (comment, words) if c)
    return f"  # {rest}" if rest else ""


def _slots(init):
    """Every literal of an ``__init__``, in order: (name, value, owner attribute)."""
    out = []

    def walk(item, owner):
        if isinstance(item, Lit):
            out.append((item.name, item.value, owner))
        elif isinstance(item, Ctor):
            if item.instance is not None:
                inst = item.instance
                for p, v in zip(inst.group.params, inst.values, strict=True):
                    out.append((p, v, owner))
            for a in item.args:
                walk(a, owner)
        elif isinstance(item, list):
            for a in item:
                walk(a, owner)

    for attr, ctor in init:
        walk(ctor, attr)
    return out


def _freeze(value):
    return repr(value)


def _instance_key(inst):
    """What instances sharing a class must have alike: the forward pass (in every mode, shapes
    aside) and the constructors (a child's by its own key)."""
    if inst.kind == "root":
        return ("root",)
    if inst.kind == "sequential":
        return (type(inst.module), "sequential", tuple(inst.forward), _ctor_key(inst.init[0][1]))
    return (
        type(inst.module),
        tuple(inst.arguments),
        tuple(re.sub(r"\(\d[\d, ]*\)", "", line) for line in inst.forward),  # shapes aside
        tuple((attr, _ctor_key(c)) for attr, c in inst.init),
    )


def _ctor_key(ctor):
    if isinstance(ctor, str):
        return ctor
    if isinstance(ctor, Uncalled):
        return ("uncalled",)
    if isinstance(ctor, list):
        return tuple(_ctor_key(c) for c in ctor)
    if isinstance(ctor, Lit):
        return ("lit", ctor.name)
    if ctor.instance is not None:
        return ("instance", ctor.instance.key)
    return (ctor.func, tuple(_ctor_key(a) for a in ctor.args))


def _render_ctor(ctor, group, counter, depth):
    def lit(item):
        i = next(counter)
        if i in group.slots:
            return group.slots[i]
        return _fmt(item.value)

    if ctor.instance is not None:
        inst = ctor.instance
        args = []
        for p in inst.group.params:
            i = next(counter)
            args.append(group.slots.get(i, _fmt(inst.values[inst.group.params.index(p)])))
        return f"{inst.group.name}({''.join(a + ', ' for a in args)}rngs=rngs)"
    if ctor.func in ("nnx.Sequential", "nnx.List"):
        items = ctor.args if ctor.func == "nnx.Sequential" else ctor.args[0]
        pad = "    " * (depth + 1)
        inner = []
        for item in items:
            text = _render_ctor(item, group, counter, depth + 1)
            comment = f"  # {item.comment}" if item.comment else ""
            inner.append(f"{pad}{text},{comment}")
        end = "    " * depth
        body = "\n".join(inner)
        if ctor.func == "nnx.List":
            return f"nnx.List(\n{pad}[\n{body}\n{pad}]\n{end})"
        return f"nnx.Sequential(\n{body}\n{end})"
    if not ctor.args and "(" not in ctor.func:
        return ctor.func
    parts = []
    for a in ctor.args:
        if isinstance(a, Lit):
            text = lit(a)
            parts.append(f"{a.name}={text}" if a.name and not a.name.startswith("_") else text)
        elif isinstance(a, str):
            parts.append(a)
    if not ctor.args and "(" in ctor.func:
        return ctor.func
    return f"{ctor.func}({', '.join(parts + ['rngs=rngs'])})"


def _header(torch_module, example_inputs, root, specialized=()):
    cls = type(torch_module)
    shapes = ", ".join(str(tuple(x.shape)) for x in example_inputs)
    notes = "".join("\n" + _specialized_note(*item) + "\n" for item in specialized)
    traced_on = f"an input of shape {shapes}"
    if len(example_inputs) > 1:
        traced_on = f"{len(example_inputs)} inputs of shapes {shapes}"
    return (
        f'"""Flax NNX twin of {cls.__module__}.{cls.__qualname__}, written by '
        "`twinnets translate`.\n\n"
        f"Traced with torch.fx from {traced_on}. The nnx.State paths are the "
        "torch\nstate_dict keys, so compare.port.torch_to_nnx loads the torch weights "
        "unchanged. Images\nenter channels-last (N, H, W, C); the outputs leave in torch's "
        "layout. Layer settings are\ntorch's, spelled out where Flax's defaults differ "
        "(docs/PORTING.md).\n"
        f"{notes}"
        '"""\n'
    )


def _specialized_note(inst, group):
    """The header's paragraph on a class traced on the example's sizes: why, where sizes
    became constants, which sizes the file holds for."""
    found, class_name = inst.specialized, group.name
    torch_name = type(inst.module).__name__
    paths = [i.path for i in group.instances if i.path]
    where = f" ({', '.join(paths)})" if paths else ""
    read = "; ".join(re.sub(r"^.*/", "", line) for line in found.lines) or "nowhere"
    sizes = " and ".join(
        f"{inst.arguments[i]} of size {size} along torch dim {dim}" for i, dim, size in found.sizes
    )
    holds = (
        f"This file holds for {sizes} only: {class_name}.__call__ raises ValueError on another "
        "size (translate the model again for it)."
        if sizes
        else "No input size changes the traced code: the file holds for any."
    )
    text = (
        f"{torch_name}.forward{where} cannot be traced symbolically ({found.reason}); it was "
        f"traced on the example input instead, its sizes read as constants where Python needed "
        f"numbers ({read}), loops over them unrolled. {holds}"
    )
    return textwrap.fill(text, 92, break_long_words=False, break_on_hyphens=False)


def _shape_comment(value, perm):
    if not isinstance(value, torch.Tensor) or perm is None:
        return ""
    shape = tuple(value.shape[a] for a in perm)
    words = _layout_words(perm)
    return f"{shape}" + (f" {words}" if words else "")


def _as_function(call):
    """``nnx.relu(x)`` -> ``nnx.relu``; anything else a lambda of x."""
    m = re.fullmatch(r"([\w.]+)\(x\)", call)
    return m.group(1) if m else f"lambda x: {call}"


def _target_name(node):
    t = node.target
    if isinstance(t, str):
        return t
    mod = getattr(t, "__module__", "") or ""
    return f"{mod}.{getattr(t, '__name__', t)}".lstrip(".")


def _size_checks(inst, class_name, placeholders, env):
    """The first lines of a forward traced on the example's sizes: each size it is specialized
    to checked, so that another input ends in one clear error, not in other numbers."""
    lines = []
    for i, dim, size in inst.specialized.sizes:
        val = env[placeholders[i]]
        shape = f"{val.expr}.shape[{val.perm.index(dim)}]"
        lines += [
            f"if {shape} != {size}:  # traced on the example's size (docs/TRANSLATE.md)",
            "    raise ValueError(",
            f'        f"{class_name} was translated for {val.expr} of size {size} along torch dim '
            f"{dim} (the example's), not \"",
            f'        f"{{{shape}}}: translate the model again on an input of that size"',
            "    )",
        ]
    return lines


class Call:
    """What a parent's forward hands a child: its inputs, their layouts; the child's output
    layout comes back in ``out_perm``."""

    def __init__(self, args, perms):
        self.args, self.perms, self.out_perm = args, perms, None


class Alias:
    def __init__(self, val):
        self.val = val


# -- the forward pass: one node at a time ---------------------------------------------------


class _Ctx:
    def __init__(self, tr, inst, env, values, lines, nodes):
        self.tr, self.inst, self.env, self.values = tr, inst, env, values
        self.lines, self.nodes = lines, nodes
        self.called = {}  # child name -> Call (the first call)
        self.index = 0
        self.names, self.live = set(), {}  # variable names taken; name -> last node reading it

    def new_name(self, base):
        base = re.sub(r"\W", "_", base)
        if base in ("self", "rngs", "jnp", "jax", "nnx", "layers", "functools"):
            base = f"{base}_"
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    # values

    def arg(self, a):
        if isinstance(a, torch.fx.Node):
            return self.env[a]
        if isinstance(a, tuple | list):
            vals = [self.arg(x) for x in a]
            open_, close = ("(", ")") if isinstance(a, tuple) else ("[", "]")
            inner = ", ".join(v.expr for v in vals) + (
                "," if len(vals) == 1 and open_ == "(" else ""
            )
            return Val(
                f"{open_}{inner}{close}",
                [v.perm for v in vals],
                type(a)(v.value for v in vals),
            )
        if isinstance(a, slice):
            parts = [self.arg(x).expr if x is not None else "" for x in (a.start, a.stop, a.step)]
            text = f"{parts[0]}:{parts[1]}" + (f":{parts[2]}" if parts[2] else "")
            return Val(
                text,
                None,
                slice(
                    *(
                        self.arg(x).value if x is not None else None
                        for x in (a.start, a.stop, a.step)
                    )
                ),
            )
        if a is Ellipsis:
            return Val("...", None, a)
        if isinstance(a, torch.dtype | torch.device):
            raise Untranslatable(f"no rule for the argument {a!r}")
        return Val(_fmt(a), None, a)

    def layout(self, val, target, why=""):
        """``val``'s expression held in ``target``."""
        if val.perm == target:
            return val.expr
        axes = _convert(val.perm, target)
        return f"{val.expr}.transpose{axes}"

    def torch_order(self, val):
        return self.layout(val, _ident(len(val.perm)))

    def to_torch_layout(self, a):
        val = self.arg(a)
        if val.is_tensor:
            return Val(self.torch_order(val), _ident(val.value.dim()), val.value)
        if isinstance(val.value, tuple | list) and isinstance(a, tuple | list):
            vals = [self.to_torch_layout(x) for x in a]
            inner = ", ".join(v.expr for v in vals) + ("," if len(vals) == 1 else "")
            return Val(f"({inner})", [v.perm for v in vals], tuple(v.value for v in vals))
        if isinstance(a, torch.fx.Node) and _is_namedtuple(a.target):
            return self.to_torch_layout(_namedtuple_items(a))
        if isinstance(a, torch.fx.Node) and isinstance(val.value, tuple | list):
            # a tuple-valued node (an LSTM's output): its tensor elements already in torch's
            # order (recurrent layers keep it)
            return val
        return val

    def result_name(self, node, live_until):
        """The variable a node's value goes into: the name of its first input when that
        input is read no more, so that a chain reads ``x = ...; x = ...``."""
        first = next((a for a in node.args if isinstance(a, torch.fx.Node)), None)
        if first is not None and first in self.env:
            name = self.env[first].expr
            if re.fullmatch(r"\w+", name) and self.live.get(name, 0) <= self.index:
                return name
        tensor = isinstance(self.values.get(node), torch.Tensor)
        base = "out" if tensor and "out" not in self.names else node.name
        if node.op == "call_module" and "out" in self.names:
            base = node.target.replace(".", "_")
        return self.new_name(base)

    # nodes

    def node(self, node):
        if node.op == "call_module":
            return self.call_module(node)
        if node.op == "get_attr":
            return self.get_attr(node)
        if node.op in ("call_function", "call_method"):
            name = _op_name(node)
            rule = OPS.get(name)
            if rule is None:
                raise Untranslatable("no rule for this op")
            args = [self.arg(a) for a in node.args]
            kwargs = {k: self.arg(v) for k, v in node.kwargs.items()}
            result = rule(self, node, args, kwargs)
            return result if isinstance(result, tuple) else (result, "")
        raise Untranslatable(f"no rule for the node kind {node.op}")

    def get_attr(self, node):
        target = node.target
        if "." in target or not (
            target in self.inst.module._parameters or target in self.inst.module._buffers
        ):
            raise Untranslatable("a tensor attribute that is not this module's own")
        value = self.values[node]
        return Val(f"self.{target}[...]", _ident(value.dim()), value), ""

    def accessor(self, target):
        parts = target.split(".")
        module = self.inst.module
        text = "self"
        for part in parts:
            if _is_numeric_sequential(module):
                text += f".layers[{part}]"
            elif isinstance(module, nn.ModuleList):
                text += f"[{part}]"
            else:
                text = f"{text}.{part}" if part.isidentifier() else f"getattr({text}, {part!r})"
            module = module.get_submodule(part)
        return text, module

    def call_module(self, node):
        text, module = self.accessor(node.target)
        args = [self.arg(a) for a in node.args]
        if node.kwargs:
            raise Untranslatable("keyword arguments to a layer")
        rule = LEAVES.get(type(module))
        parts = node.target.split(".")
        if rule is not None:
            x = args[0]
            need = rule.needs(module, x.value, x.perm)
            expr = self.layout(x, need) if need is not None else x.expr
            perm = need if need is not None else x.perm
            if isinstance(module, _STATEFUL):
                self._record(parts, None)
                call, out_perm = rule.call(module, expr, x.value, perm, self.tr.helpers, text)
                rest = "".join(f", {a.expr}" for a in args[1:])
                return Val(f"{text}({expr}{rest})", out_perm), ""
            call, out_perm = rule.call(module, expr, x.value, perm, self.tr.helpers, text)
            return Val(call, out_perm), f"{node.target} ({type(module).__name__})"
        perms = tuple(a.perm for a in args)
        call = Call(tuple(a.value for a in args), perms)
        self._record(parts, call)
        # the child is translated when the parent's __init__ is built; its output layout is
        # needed now: translate it now and keep the result
        sub = self._child_now(parts, module, call)
        inner = ", ".join(a.expr for a in args)
        return Val(f"{text}({inner})", sub), ""

    def _record(self, parts, call):
        slot = self.called
        for p in parts[:-1]:
            slot = slot.setdefault(p, {})
            if isinstance(slot, Call):
                return
        slot.setdefault(parts[-1], call)

    def _child_now(self, parts, module, call):
        path = ".".join(filter(None, [self.inst.path, *parts]))
        ctor = self.tr.child_ctor(module, path, call)
        self._built = getattr(self, "_built", {})
        self._built[".".join(parts)] = ctor
        return call.out_perm


def _is_namedtuple(target):
    return isinstance(target, type) and issubclass(target, tuple) and hasattr(target, "_fields")


def _namedtuple_items(node):
    """The elements a namedtuple node is built from, in field order."""
    fields = node.target._fields[len(node.args) :]
    return (*node.args, *(node.kwargs[f] for f in fields if f in node.kwargs))


def _op_name(node):
    t = node.target
    if node.op == "call_method":
        return t
    if _is_namedtuple(t):
        return "namedtuple"
    if t in _FUNCTION_NAMES:
        return _FUNCTION_NAMES[t]
    return getattr(t, "__name__", str(t))


# -- layers ---------------------------------------------------------------------------------


def _pair(v, n=2):
    return tuple(v) if isinstance(v, tuple | list) else (v,) * n


class Leaf:
    """A torch layer: the input layout it needs, its NNX constructor, its call."""

    def needs(self, m, x, perm):
        return None

    def ctor(self, m):
        raise NotImplementedError

    def call(self, m, expr, x, perm, helpers, where):
        """(the call expression, the output layout); stateful layers are called as
        ``self.name(x)`` by the caller, this gives their output layout."""
        return f"{where}({expr})", perm


class ConvLeaf(Leaf):
    def needs(self, m, x, perm):
        return _channels_last(x.dim())

    def ctor(self, m):
        if m.padding_mode != "zeros":
            raise Untranslatable(f"padding_mode={m.padding_mode!r}")
        n = len(m.kernel_size)
        if isinstance(m.padding, str):
            if m.padding == "valid":
                padding = ((0, 0),) * n
            else:  # 'same': torch puts the odd pixel after
                padding = []
                for k, d in zip(m.kernel_size, m.dilation, strict=True):
                    total = d * (k - 1)
                    padding.append((total // 2, total - total // 2))
                padding = tuple(padding)
        else:
            padding = tuple((p, p) for p in m.padding)
        args = [
            Lit("in_features", m.in_channels),
            Lit("out_features", m.out_channels),
            Lit("kernel_size", tuple(m.kernel_size)),
            Lit("strides", tuple(m.stride)),
            Lit("padding", padding),  # always: nnx.Conv pads 'SAME' unless told
        ]
        if any(d != 1 for d in m.dilation):
            args.append(Lit("kernel_dilation", tuple(m.dilation)))
        if m.groups != 1:
            args.append(Lit("feature_group_count", m.groups))
        if m.bias is None:
            args.append(Lit("use_bias", False))
        for a in args[:2]:
            a.name = "_" + a.name  # positional
        return Ctor("layers.Conv", args, comment=f"{type(m).__name__}")

    def call(self, m, expr, x, perm, helpers, where):
        return f"{where}({expr})", _channels_last(x.dim())


class ConvTransposeLeaf(ConvLeaf):
    def ctor(self, m):
        if m.padding_mode != "zeros" or m.groups != 1:
            raise Untranslatable("a grouped or non-zero-padded ConvTranspose2d")
        padding = []
        for k, d, p, o in zip(m.kernel_size, m.dilation, m.padding, m.output_padding, strict=True):
            lo = d * (k - 1) - p
            padding.append((lo, lo + o))
        args = [
            Lit("_in_features", m.in_channels),
            Lit("_out_features", m.out_channels),
            Lit("kernel_size", tuple(m.kernel_size)),
            Lit("strides", tuple(m.stride)),
            Lit("padding", tuple(padding)),
        ]
        if any(d != 1 for d in m.dilation):
            args.append(Lit("kernel_dilation", tuple(m.dilation)))
        args += [Lit("transpose_kernel", True), Lit("use_bias", m.bias is not None)]
        return Ctor("layers.ConvTranspose", args, comment="ConvTranspose2d")


class LinearLeaf(Leaf):
    def needs(self, m, x, perm):
        n = x.dim()
        return None if perm[-1] == n - 1 else _ident(n)

    def ctor(self, m):
        args = [Lit("_in_features", m.in_features), Lit("_out_features", m.out_features)]
        if m.bias is None:
            args.append(Lit("use_bias", False))
        return Ctor("nnx.Linear", args, comment="Linear")


class BatchNormLeaf(Leaf):
    def needs(self, m, x, perm):
        return _channels_last(x.dim()) if x.dim() > 2 else _ident(2)

    def ctor(self, m):
        if not m.affine or not m.track_running_stats or m.momentum is None:
            raise Untranslatable(
                "BatchNorm without affine weights, running statistics or with momentum=None"
            )
        return Ctor(
            "layers.BatchNorm",
            [Lit("_num_features", m.num_features), Lit("momentum", m.momentum), Lit("eps", m.eps)],
            comment=f"{type(m).__name__}: torch's running statistics",
        )

    def call(self, m, expr, x, perm, helpers, where):
        return f"{where}({expr})", self.needs(m, x, perm)


class LayerNormLeaf(Leaf):
    def needs(self, m, x, perm):
        n, k = x.dim(), len(m.normalized_shape)
        tail = tuple(range(n - k, n))
        return None if tuple(perm[n - k :]) == tail else _ident(n)

    def ctor(self, m):
        if len(m.normalized_shape) != 1 or not m.elementwise_affine or m.bias is None:
            raise Untranslatable("LayerNorm over more than one dim, or without weight and bias")
        return Ctor(
            "nnx.LayerNorm",
            [
                Lit("_num_features", m.normalized_shape[0]),
                Lit("epsilon", m.eps),
                Lit("use_fast_variance", False),
            ],
            comment="LayerNorm: torch's epsilon, two-pass variance",
        )


class GroupNormLeaf(Leaf):
    def needs(self, m, x, perm):
        return _channels_last(x.dim())

    def ctor(self, m):
        if not m.affine:
            raise Untranslatable("GroupNorm without affine weights")
        return Ctor(
            "nnx.GroupNorm",
            [
                Lit("_num_features", m.num_channels),
                Lit("num_groups", m.num_groups),
                Lit("epsilon", m.eps),
                Lit("use_fast_variance", False),
            ],
            comment="GroupNorm",
        )


class DropoutLeaf(Leaf):
    def needs(self, m, x, perm):
        n = x.dim()
        # compare.check feeds a mask in torch's layout, moved channels-last for images
        return None if perm in (_ident(n), _channels_last(n)) else _ident(n)

    def ctor(self, m):
        return Ctor("nnx.Dropout", [Lit("_rate", m.p)], comment="Dropout")


class EmbeddingLeaf(Leaf):
    def ctor(self, m):
        if m.padding_idx is not None or m.max_norm is not None or m.sparse:
            raise Untranslatable("Embedding with padding_idx, max_norm or sparse")
        return Ctor(
            "layers.Embed",
            [Lit("_num_embeddings", m.num_embeddings), Lit("_features", m.embedding_dim)],
            comment="Embedding: looks up in the table's dtype",
        )

    def call(self, m, expr, x, perm, helpers, where):
        return f"{where}({expr})", _ident(x.dim() + 1)


class RecurrentLeaf(Leaf):
    def needs(self, m, x, perm):
        return _ident(x.dim())

    def ctor(self, m):
        kind = type(m).__name__
        if not m.bias or getattr(m, "proj_size", 0) or getattr(m, "nonlinearity", "tanh") != "tanh":
            raise Untranslatable(f"{kind} without bias, with proj_size or a relu nonlinearity")
        args = [
            Lit("_input_size", m.input_size),
            Lit("_hidden_size", m.hidden_size),
            Lit("_num_layers", m.num_layers),
            Lit("batch_first", m.batch_first),
            Lit("bidirectional", m.bidirectional),
        ]
        if m.dropout:
            args.append(Lit("dropout", m.dropout))
        return Ctor(f"layers.{kind}", args, comment=f"{kind}: torch's gates and both biases")

    def call(self, m, expr, x, perm, helpers, where):
        d = x.dim()
        return f"{where}({expr})", [
            _ident(d),
            _ident(3) if kind_is_gru(m) else [_ident(3), _ident(3)],
        ]


def kind_is_gru(m):
    return not isinstance(m, nn.LSTM)


class Fn(Leaf):
    """A stateless layer written inline: ``template`` with ``{x}``."""

    def __init__(self, template, needs=None):
        self.template, self._needs = template, needs

    def needs(self, m, x, perm):
        return self._needs(m, x, perm) if self._needs else None

    def call(self, m, expr, x, perm, helpers, where):
        return self.template.format(x=expr, m=m), perm


class PoolLeaf(Leaf):
    def __init__(self, kind):
        self.kind = kind

    def needs(self, m, x, perm):
        return _channels_last(x.dim())

    def call(self, m, expr, x, perm, helpers, where):
        n = x.dim() - 2
        k = _pair(m.kernel_size, n)
        s = _pair(m.stride if m.stride is not None else m.kernel_size, n)
        p = _pair(m.padding, n)
        if self.kind == "max" and any(d != 1 for d in _pair(m.dilation, n)):
            raise Untranslatable("dilated max pooling")
        size = x.shape[2:]
        pads = _pool_padding(size, k, s, p, m.ceil_mode)
        pad_text = "" if all(p == (0, 0) for p in pads) else f", padding={pads}"
        if self.kind == "max":  # nnx.max_pool's padding (-inf, as torch's), fast on a CPU
            return f"layers.max_pool({expr}, {k}, strides={s}{pad_text})", perm
        if getattr(m, "divisor_override", None):
            raise Untranslatable("avg_pool2d with divisor_override")
        if any(hi != lo for (lo, hi) in pads) and m.ceil_mode:
            raise Untranslatable("avg pooling whose ceil_mode adds a window: no rule yet")
        include = m.count_include_pad
        return (
            f"nnx.avg_pool({expr}, {k}, strides={s}{pad_text}, count_include_pad={include})",
            perm,
        )


def _pool_padding(size, k, s, p, ceil):
    """Explicit (low, high) padding per axis giving torch's output size (``ceil_mode`` adds
    the window torch lets start inside the input or its left padding)."""
    pads = []
    for length, kk, ss, pp in zip(size, k, s, p, strict=True):
        span = length + 2 * pp - kk
        out = (-(-span // ss) if ceil else span // ss) + 1
        if ceil and (out - 1) * ss >= length + pp:
            out -= 1
        high = (out - 1) * ss + kk - length - pp
        pads.append((pp, max(high, 0) if ceil else pp))
    return tuple(pads)


class AdaptivePoolLeaf(Leaf):
    def __init__(self, kind):
        self.kind = kind

    def needs(self, m, x, perm):
        return _channels_last(x.dim())

    def call(self, m, expr, x, perm, helpers, where):
        return _adaptive(self.kind, m.output_size, expr, x, perm, helpers)


def _adaptive(kind, output_size, expr, x, perm, helpers):
    n = x.dim() - 2
    size = tuple(x.shape[2:])
    out = tuple(o if o is not None else s for o, s in zip(_pair(output_size, n), size, strict=True))
    axes = tuple(range(1, n + 1))
    if all(o == 1 for o in out):
        fn = "mean" if kind == "avg" else "max"
        return f"{expr}.{fn}(axis={axes}, keepdims=True)", perm
    if all(s % o == 0 for s, o in zip(size, out, strict=True)):
        window = tuple(s // o for s, o in zip(size, out, strict=True))
        return f"nnx.{kind}_pool({expr}, window_shape={window}, strides={window})", perm
    helpers.add(f"adaptive_{kind}_pool")
    return f"adaptive_{kind}_pool({expr}, {out})", perm


class FlattenLeaf(Leaf):
    def call(self, m, expr, x, perm, helpers, where):
        return _flatten(expr, x, perm, m.start_dim, m.end_dim)


def _flatten(expr, x, perm, start, end):
    n = x.dim()
    start, end = start % n, end % n
    shape = tuple(x.shape)
    source = expr
    if perm != _ident(n):
        outside = all(perm[k] == k for k in range(n) if k < start or k > end)
        if not (outside and _order_free(perm, shape)):
            # torch's order first: the numbers flatten as torch's do (a Linear's weights after)
            expr = f"{expr}.transpose{_convert(perm, _ident(n))}"
    head = ", ".join(f"{source}.shape[{perm.index(k)}]" for k in range(start)) if start else ""
    if end == n - 1:
        new = f"{head}, -1" if head else "-1"
        out_n = start + 1
    else:
        tail = ", ".join(f"{source}.shape[{perm.index(k)}]" for k in range(end + 1, n))
        new = f"{head + ', ' if head else ''}-1, {tail}"
        out_n = start + 1 + n - end - 1
    return f"{expr}.reshape({new})", _ident(out_n)


def _softmax_leaf(fn):
    def template(m, x, perm):
        return None

    class Softmax(Leaf):
        def call(self, m, expr, x, perm, helpers, where):
            dim = m.dim if m.dim is not None else 1
            return f"jax.nn.{fn}({expr}, axis={perm.index(dim % x.dim())})", perm

    return Softmax()


def _leaky(m):
    return m.negative_slope


LEAVES = {
    nn.Conv1d: ConvLeaf(),
    nn.Conv2d: ConvLeaf(),
    nn.ConvTranspose2d: ConvTransposeLeaf(),
    nn.Linear: LinearLeaf(),
    nn.BatchNorm1d: BatchNormLeaf(),
    nn.BatchNorm2d: BatchNormLeaf(),
    nn.LayerNorm: LayerNormLeaf(),
    nn.GroupNorm: GroupNormLeaf(),
    nn.Dropout: DropoutLeaf(),
    nn.Embedding: EmbeddingLeaf(),
    nn.LSTM: RecurrentLeaf(),
    nn.GRU: RecurrentLeaf(),
    nn.RNN: RecurrentLeaf(),
    nn.ReLU: Fn("nnx.relu({x})"),
    nn.ReLU6: Fn("jax.nn.relu6({x})"),
    nn.Sigmoid: Fn("nnx.sigmoid({x})"),
    nn.Tanh: Fn("jnp.tanh({x})"),
    nn.SiLU: Fn("nnx.silu({x})"),
    nn.Hardswish: Fn("jax.nn.hard_swish({x})"),
    nn.Hardsigmoid: Fn("layers.hard_sigmoid({x})"),  # torch's gradient constant
    nn.LeakyReLU: Fn("jax.nn.leaky_relu({x}, negative_slope={m.negative_slope!r})"),
    nn.ELU: Fn("jax.nn.elu({x}, alpha={m.alpha!r})"),
    nn.Identity: Fn("{x}"),
    nn.MaxPool1d: PoolLeaf("max"),
    nn.MaxPool2d: PoolLeaf("max"),
    nn.AvgPool1d: PoolLeaf("avg"),
    nn.AvgPool2d: PoolLeaf("avg"),
    nn.AdaptiveAvgPool1d: AdaptivePoolLeaf("avg"),
    nn.AdaptiveAvgPool2d: AdaptivePoolLeaf("avg"),
    nn.AdaptiveMaxPool2d: AdaptivePoolLeaf("max"),
    nn.Flatten: FlattenLeaf(),
    nn.Softmax: _softmax_leaf("softmax"),
    nn.LogSoftmax: _softmax_leaf("log_softmax"),
}


class _GeluLeaf(Leaf):
    def call(self, m, expr, x, perm, helpers, where):
        approximate = m.approximate == "tanh"
        return f"jax.nn.gelu({expr}, approximate={approximate})", perm


LEAVES[nn.GELU] = _GeluLeaf()


class _AvgPool1dFix(PoolLeaf):
    pass


HELPERS = {
    "adaptive_avg_pool": '''def adaptive_avg_pool(x, output_size):
    """torch's adaptive average pooling, channels-last: bin i of an axis of length n spans
    floor(i n / out) to ceil((i + 1) n / out), so bins may overlap or repeat a pixel."""
    for axis, out in enumerate(output_size, start=1):
        n = x.shape[axis]
        bins = [
            jax.lax.slice_in_dim(x, i * n // out, -(-(i + 1) * n // out), axis=axis).mean(
                axis=axis, keepdims=True
            )
            for i in range(out)
        ]
        x = jnp.concatenate(bins, axis=axis)
    return x''',
    "adaptive_max_pool": '''def adaptive_max_pool(x, output_size):
    """torch's adaptive max pooling, channels-last (bins as adaptive_avg_pool's)."""
    for axis, out in enumerate(output_size, start=1):
        n = x.shape[axis]
        bins = [
            jax.lax.slice_in_dim(x, i * n // out, -(-(i + 1) * n // out), axis=axis).max(
                axis=axis, keepdims=True
            )
            for i in range(out)
        ]
        x = jnp.concatenate(bins, axis=axis)
    return x''',
}


# -- ops ------------------------------------------------------------------------------------

_FUNCTION_NAMES = {}


def _names(*pairs):
    for fn, name in pairs:
        _FUNCTION_NAMES[fn] = name


_names(
    (operator.add, "add"),
    (operator.sub, "sub"),
    (operator.mul, "mul"),
    (operator.truediv, "div"),
    (operator.floordiv, "floordiv"),
    (operator.neg, "neg"),
    (operator.getitem, "getitem"),
    (operator.matmul, "matmul"),
    (operator.pow, "pow"),
    (torch.add, "add"),
    (torch.sub, "sub"),
    (torch.mul, "mul"),
    (torch.div, "div"),
    (torch.matmul, "matmul"),
    (torch.relu, "relu"),
    (F.relu, "relu"),
    (F.relu6, "relu6"),
    (torch.sigmoid, "sigmoid"),
    (F.sigmoid, "sigmoid"),
    (torch.tanh, "tanh"),
    (F.tanh, "tanh"),
    (F.gelu, "gelu"),
    (F.silu, "silu"),
    (F.hardswish, "hardswish"),
    (F.hardsigmoid, "hardsigmoid"),
    (F.leaky_relu, "leaky_relu"),
    (F.softmax, "softmax"),
    (torch.softmax, "softmax"),
    (F.log_softmax, "log_softmax"),
    (torch.log_softmax, "log_softmax"),
    (F.dropout, "dropout_fn"),
    (torch.flatten, "flatten"),
    (torch.cat, "cat"),
    (torch.concat, "cat"),
    (torch.stack, "stack"),
    (torch.mean, "mean"),
    (torch.sum, "sum"),
    (torch.transpose, "transpose"),
    (torch.permute, "permute"),
    (torch.reshape, "reshape"),
    (F.adaptive_avg_pool2d, "adaptive_avg_pool2d"),
    (F.max_pool2d, "max_pool2d"),
    (F.avg_pool2d, "avg_pool2d"),
    (torch.chunk, "chunk"),
    (F.layer_norm, "layer_norm"),
    (torch.exp, "exp"),
    (torch.clamp, "clamp"),
    (getattr, "getattr"),
)


def _tensor_args(args):
    return [a for a in args if a.is_tensor]


def _align(ctx, a, b):
    """Two operands of an elementwise op in one layout: a lower-rank tensor (broadcast from
    the right, as torch does) is lifted to the other's rank and layout."""
    if not (a.is_tensor and b.is_tensor):
        perm = a.perm if a.is_tensor else b.perm
        return a.expr if a.is_tensor else a.expr, b.expr, perm
    na, nb = a.value.dim(), b.value.dim()
    if na == nb:
        if a.perm == b.perm:
            return a.expr, b.expr, a.perm
        if a.perm == _ident(na):
            return ctx.layout(a, b.perm), b.expr, b.perm
        return a.expr, ctx.layout(b, a.perm), a.perm
    big, small = (a, b) if na > nb else (b, a)
    n, k = big.value.dim(), small.value.dim()
    # the rank lifted in the code, not left to numpy's rank promotion: the project's JAX
    # code broadcasts ranks explicitly (its tests raise on implicit promotion)
    small_expr = ctx.torch_order(small) if small.perm else small.expr
    lifted = small_expr if k == n else f"{small_expr}.reshape((1,) * {n - k} + {small_expr}.shape)"
    if big.perm != _ident(n):
        lifted = f"{lifted}.transpose{big.perm}"
    if big is a:
        return a.expr, lifted, big.perm
    return lifted, b.expr, big.perm


def _binary(symbol):
    def rule(ctx, node, args, kwargs):
        a, b = args[0], args[1] if len(args) > 1 else kwargs["other"]
        if "alpha" in kwargs:
            raise Untranslatable("add/sub with alpha")
        if not (a.is_tensor or b.is_tensor):
            return Val(f"({a.expr} {symbol} {b.expr})", None)
        x, y, perm = _align(ctx, a, b)
        return Val(f"{x} {symbol} {y}", perm)

    return rule


def _matmul(ctx, node, args, kwargs):
    """``a @ b`` (``torch.mm``, ``torch.matmul``, ``x.mm``): its axes are torch's, so both
    operands go in torch's order and the product is held in it."""
    a = args[0]
    b = args[1] if len(args) > 1 else kwargs.get("other", kwargs.get("mat2"))
    if kwargs.keys() - {"other", "mat2"} or not (a.is_tensor and b.is_tensor):
        raise Untranslatable("a product of two tensors only")
    out = ctx.values[node]
    return Val(f"{ctx.torch_order(a)} @ {ctx.torch_order(b)}", _ident(out.dim()))


def _pow(ctx, node, args, kwargs):
    exponent = args[1] if len(args) > 1 else kwargs["exponent"]
    return _binary("**")(ctx, node, [args[0], exponent], {})


def _unary(template):
    def rule(ctx, node, args, kwargs):
        x = args[0]
        return Val(template.format(x=x.expr), x.perm)

    return rule


def _kw(args, kwargs, index, name, default=None):
    if len(args) > index:
        return args[index].value
    if name in kwargs:
        return kwargs[name].value
    return default


def _gelu(ctx, node, args, kwargs):
    approximate = _kw(args, kwargs, 1, "approximate", "none") == "tanh"
    return Val(f"jax.nn.gelu({args[0].expr}, approximate={approximate})", args[0].perm)


def _leaky_relu(ctx, node, args, kwargs):
    slope = _kw(args, kwargs, 1, "negative_slope", 0.01)
    return Val(f"jax.nn.leaky_relu({args[0].expr}, negative_slope={slope!r})", args[0].perm)


def _dim_rule(fn):
    def rule(ctx, node, args, kwargs):
        x = args[0]
        dim = _kw(args, kwargs, 1, "dim")
        if dim is None:
            raise Untranslatable(f"{fn} without dim")
        return Val(f"jax.nn.{fn}({x.expr}, axis={x.perm.index(dim % x.value.dim())})", x.perm)

    return rule


def _dropout_fn(ctx, node, args, kwargs):
    p = _kw(args, kwargs, 1, "p", 0.5)
    training = _kw(args, kwargs, 2, "training", True)
    if p == 0 or not training:
        return Alias(args[0]), f"F.dropout(p={p}, training={training}): does nothing here"
    raise Untranslatable(
        "functional dropout draws a mask check cannot feed; use an nn.Dropout layer"
    )


def _stochastic_depth(ctx, node, args, kwargs):
    p = _kw(args, kwargs, 1, "p")
    training = _kw(args, kwargs, 3, "training", True)
    if p == 0 or not training:
        return Alias(args[0]), f"stochastic_depth(p={p}): does nothing here"
    raise Untranslatable(
        "stochastic depth drops whole samples at random, which check cannot feed; build the "
        "model with stochastic_depth_prob=0.0"
    )


def _flatten_op(ctx, node, args, kwargs):
    x = args[0]
    start = _kw(args, kwargs, 1, "start_dim", 0)
    end = _kw(args, kwargs, 2, "end_dim", -1)
    expr, perm = _flatten(x.expr, x.value, x.perm, start, end)
    return Val(expr, perm)


def _reduce(fn):
    def rule(ctx, node, args, kwargs):
        x = args[0]
        dim = _kw(args, kwargs, 1, "dim")
        keep = _kw(args, kwargs, 2, "keepdim", False)
        n = x.value.dim()
        if dim is None:
            return Val(f"{x.expr}.{fn}()", ())
        dims = dim if isinstance(dim, tuple | list) else (dim,)
        dims = sorted(d % n for d in dims)
        axes = tuple(sorted(x.perm.index(d) for d in dims))
        axis = axes[0] if len(axes) == 1 else axes
        keep_text = ", keepdims=True" if keep else ""
        if keep:
            perm = x.perm
        else:
            rest = [a for a in x.perm if a not in dims]
            perm = tuple(a - sum(1 for d in dims if d < a) for a in rest)
        return Val(f"{x.expr}.{fn}(axis={axis}{keep_text})", perm)

    return rule


def _cat(ctx, node, args, kwargs):
    items = node.args[0] if node.args else node.kwargs["tensors"]
    dim = _kw(args, kwargs, 1, "dim", 0)
    if isinstance(items, torch.fx.Node):  # a list handed in whole (densenet's features)
        seq = ctx.arg(items)
        perms = seq.perm if isinstance(seq.perm, list) else []
        if not perms or any(p != perms[0] for p in perms):
            raise Untranslatable("a list of tensors in several layouts")
        axis = perms[0].index(dim % len(perms[0]))
        return Val(f"jnp.concatenate({seq.expr}, axis={axis})", perms[0])
    tensors = [ctx.arg(a) for a in items]
    n = tensors[0].value.dim()
    perm = tensors[0].perm
    exprs = [ctx.layout(t, perm) for t in tensors]
    axis = perm.index(dim % n)
    return Val(f"jnp.concatenate([{', '.join(exprs)}], axis={axis})", perm)


def _stack(ctx, node, args, kwargs):
    """``torch.stack``: the items in the first one's layout, the new axis at the same place in
    the JAX array as in torch's (the layout's other axes, renumbered, keep their order)."""
    items = node.args[0] if node.args else node.kwargs["tensors"]
    dim = _kw(args, kwargs, 1, "dim", 0)
    if isinstance(items, torch.fx.Node):
        raise Untranslatable("a list of tensors handed in whole")
    tensors = [ctx.arg(a) for a in items]
    perm = tensors[0].perm
    dim %= len(perm) + 1
    exprs = [ctx.layout(t, perm) for t in tensors]
    moved = [a + (a >= dim) for a in perm]
    return Val(f"jnp.stack([{', '.join(exprs)}], axis={dim})", (*moved[:dim], dim, *moved[dim:]))


def _split_items(expr):
    inner = expr[1:-1].rstrip(",")
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        items.append(cur)
    return items


def _permute(ctx, node, args, kwargs):
    x = args[0]
    dims = [a.value for a in args[1:]] if node.op == "call_method" else args[1].value
    if node.op == "call_method" and len(args) == 2 and isinstance(args[1].value, tuple | list):
        dims = list(args[1].value)
    if "dims" in kwargs:
        dims = kwargs["dims"].value
    n = x.value.dim()
    dims = [d % n for d in dims]
    perm = tuple(dims.index(p) for p in x.perm)
    return Alias(
        Val(x.expr, perm, None)
    ), f"torch's permute{tuple(dims)}: only the layout bookkeeping"


def _transpose(ctx, node, args, kwargs):
    x = args[0]
    n = x.value.dim()
    a = _kw(args, kwargs, 1, "dim0") % n
    b = _kw(args, kwargs, 2, "dim1") % n
    dims = list(range(n))
    dims[a], dims[b] = dims[b], dims[a]
    perm = tuple(dims.index(p) for p in x.perm)
    return Alias(
        Val(x.expr, perm, None)
    ), f"torch's transpose({a}, {b}): only the layout bookkeeping"


def _reshape(ctx, node, args, kwargs):
    x = args[0]
    if node.op == "call_method":
        shape = args[1:]
        if len(shape) == 1 and isinstance(shape[0].value, tuple | list | torch.Size):
            shape_expr = shape[0].expr
        else:
            shape_expr = ", ".join(s.expr for s in shape)
    else:
        shape_expr = args[1].expr
    n = x.value.dim()
    expr = x.expr
    if x.perm != _ident(n) and not _order_free(x.perm, tuple(x.value.shape)):
        expr = f"{expr}.transpose{_convert(x.perm, _ident(n))}"
    out = ctx.values[node]
    return Val(f"{expr}.reshape({shape_expr})", _ident(out.dim()))


def _contiguous(ctx, node, args, kwargs):
    return Alias(args[0]), ""


def _size(ctx, node, args, kwargs):
    x = args[0]
    dim = _kw(args, kwargs, 1, "dim")
    n = x.value.dim()
    if dim is not None:
        return Val(f"{x.expr}.shape[{x.perm.index(dim % n)}]", None)
    if x.perm == _ident(n):
        return Val(f"{x.expr}.shape", None)
    inner = ", ".join(f"{x.expr}.shape[{x.perm.index(d)}]" for d in range(n))
    return Val(f"({inner})", None)


def _len(ctx, node, args, kwargs):
    x = args[0]
    if not x.is_tensor:
        return Val(f"len({x.expr})", None)
    return Val(f"{x.expr}.shape[{x.perm.index(0)}]", None)


def _getattr(ctx, node, args, kwargs):
    x, name = args[0], args[1].value
    if name == "shape" and x.is_tensor:
        return _size(ctx, node, [x], {})
    raise Untranslatable(f"no rule for the attribute {name!r}")


def _getitem(ctx, node, args, kwargs):
    x, index = args
    if x.is_tensor:
        expr = ctx.torch_order(x)
        out = ctx.values[node]
        return Val(
            f"{expr}[{_index_expr(index)}]",
            _ident(out.dim()) if isinstance(out, torch.Tensor) else None,
        )
    i = index.value
    perm = x.perm[i] if isinstance(x.perm, list) and isinstance(i, int) else None
    return Val(f"{x.expr}[{index.expr}]", perm)


def _index_expr(index):
    if isinstance(index.value, tuple):
        return index.expr[1:-1].rstrip(",") if index.expr.startswith("(") else index.expr
    return index.expr


def _chunk(ctx, node, args, kwargs):
    x = args[0]
    chunks = _kw(args, kwargs, 1, "chunks")
    dim = _kw(args, kwargs, 2, "dim", 0)
    axis = x.perm.index(dim % x.value.dim())
    out = ctx.values[node]
    sizes = [t.shape[dim] for t in out]
    if len(set(sizes)) != 1 or len(sizes) != chunks:
        raise Untranslatable("chunk into unequal pieces")
    return Val(f"jnp.split({x.expr}, {chunks}, axis={axis})", [x.perm] * chunks)


def _layer_norm(ctx, node, args, kwargs):
    x = args[0]
    shape = _kw(args, kwargs, 1, "normalized_shape")
    weight = args[2] if len(args) > 2 else kwargs.get("weight")
    bias = args[3] if len(args) > 3 else kwargs.get("bias")
    eps = _kw(args, kwargs, 4, "eps", 1e-5)
    n, k = x.value.dim(), len(shape)
    expr = x.expr
    perm = x.perm
    if tuple(perm[n - k :]) != tuple(range(n - k, n)):
        expr, perm = ctx.torch_order(x), _ident(n)
    axes = tuple(range(n - k, n))
    ctx.tr.helpers.add("layer_norm")
    w = weight.expr if weight is not None and weight.value is not None else "None"
    b = bias.expr if bias is not None and bias.value is not None else "None"
    return Val(f"layer_norm({expr}, {w}, {b}, {eps!r}, axes={axes})", perm)


HELPERS["layer_norm"] = '''def layer_norm(x, weight, bias, eps, axes):
    """torch's F.layer_norm: normalised over the trailing ``axes``, the biased variance."""
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps)
    lead = (1,) * (x.ndim - len(axes))  # spelled out: strict rank promotion refuses implicit
    if weight is not None:
        y = y * weight.reshape(lead + weight.shape)
    return y + bias.reshape(lead + bias.shape) if bias is not None else y'''


def _adaptive_fn(kind):
    def rule(ctx, node, args, kwargs):
        x = args[0]
        size = _kw(args, kwargs, 1, "output_size")
        n = x.value.dim()
        expr = ctx.layout(x, _channels_last(n))
        call, perm = _adaptive(kind, size, expr, x.value, _channels_last(n), ctx.tr.helpers)
        return Val(call, perm)

    return rule


def _pool_fn(kind):
    def rule(ctx, node, args, kwargs):
        x = args[0]
        fake = types.SimpleNamespace(
            kernel_size=_kw(args, kwargs, 1, "kernel_size"),
            stride=_kw(args, kwargs, 2, "stride") or _kw(args, kwargs, 1, "kernel_size"),
            padding=_kw(args, kwargs, 3, "padding", 0),
            dilation=_kw(args, kwargs, 4, "dilation", 1) if kind == "max" else 1,
            ceil_mode=_kw(args, kwargs, 5 if kind == "max" else 4, "ceil_mode", False),
            count_include_pad=_kw(args, kwargs, 5, "count_include_pad", True),
            divisor_override=_kw(args, kwargs, 6, "divisor_override"),
        )
        n = x.value.dim()
        expr = ctx.layout(x, _channels_last(n))
        call, perm = PoolLeaf(kind).call(fake, expr, x.value, _channels_last(n), None, "")
        return Val(call, perm)

    return rule


def _clamp(ctx, node, args, kwargs):
    x = args[0]
    lo = _kw(args, kwargs, 1, "min")
    hi = _kw(args, kwargs, 2, "max")
    return Val(f"jnp.clip({x.expr}, {lo!r}, {hi!r})", x.perm)


def _namedtuple(ctx, node, args, kwargs):
    """A namedtuple (googlenet's ``GoogLeNetOutputs``): a plain tuple of its elements."""
    items = ctx.arg(tuple(_namedtuple_items(node)))
    return Alias(items), ""


def _inplace(rule):
    """An in-place method: the same computation, pure; later reads of its input read the
    result (the generated code rebinds nothing in place)."""

    def wrapped(ctx, node, args, kwargs):
        result = rule(ctx, node, args, kwargs)
        src = node.args[0]
        if isinstance(src, torch.fx.Node):
            ctx._inplace_sources = getattr(ctx, "_inplace_sources", [])
            ctx._inplace_sources.append((src, node))
        return result

    return wrapped


OPS = {
    "add": _binary("+"),
    "sub": _binary("-"),
    "mul": _binary("*"),
    "div": _binary("/"),
    "floordiv": _binary("//"),
    "matmul": _matmul,
    "mm": _matmul,
    "pow": _pow,
    "neg": _unary("-{x}"),
    "relu": _unary("nnx.relu({x})"),
    "relu6": _unary("jax.nn.relu6({x})"),
    "sigmoid": _unary("nnx.sigmoid({x})"),
    "tanh": _unary("jnp.tanh({x})"),
    "exp": _unary("jnp.exp({x})"),
    "silu": _unary("nnx.silu({x})"),
    "hardswish": _unary("jax.nn.hard_swish({x})"),
    "hardsigmoid": _unary("layers.hard_sigmoid({x})"),
    "gelu": _gelu,
    "leaky_relu": _leaky_relu,
    "softmax": _dim_rule("softmax"),
    "log_softmax": _dim_rule("log_softmax"),
    "dropout_fn": _dropout_fn,
    "stochastic_depth": _stochastic_depth,
    "flatten": _flatten_op,
    "cat": _cat,
    "stack": _stack,
    "mean": _reduce("mean"),
    "sum": _reduce("sum"),
    "permute": _permute,
    "transpose": _transpose,
    "view": _reshape,
    "reshape": _reshape,
    "contiguous": _contiguous,
    "size": _size,
    "len": _len,
    "getattr": _getattr,
    "getitem": _getitem,
    "chunk": _chunk,
    "layer_norm": _layer_norm,
    "adaptive_avg_pool2d": _adaptive_fn("avg"),
    "max_pool2d": _pool_fn("max"),
    "avg_pool2d": _pool_fn("avg"),
    "clamp": _clamp,
    "namedtuple": _namedtuple,
}
for _name in ("add", "sub", "mul", "div", "relu", "sigmoid", "tanh", "clamp"):
    OPS[_name + "_"] = OPS[_name]
OPS = {k: v for k, v in OPS.items() if v is not None}


# -- training and eval: one class for both modes ----------------------------------------------

# The modes traced, training first (what cannot be translated in both reads as it always has).
_TRACED_MODES = (True, False)

# torch's ``self.training`` becomes ``not self.deterministic``: nnx's ``Module.train()`` and
# ``.eval()`` set ``deterministic`` (and ``use_running_average``) on every submodule that has
# the attribute, so the switch flips with the Dropout and BatchNorm layers (docs/TRANSLATE.md).
_SWITCH = "deterministic"
_SWITCH_INIT = f"self.{_SWITCH} = False  # torch's not self.training: model.eval() sets it"


@contextlib.contextmanager
def _in_mode(module, training):
    """``module`` put in one mode as torch's ``train()`` does it; every submodule's own flag
    back afterwards (a model may hold a frozen BatchNorm in eval inside a training one)."""
    flags = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _is_code(line):
    return not line.startswith("#")


def _switch(eval_lines, train_lines):
    """One forward pass from the two modes' straight-line code: the lines alike stay, each
    stretch that differs goes into ``if not self.deterministic: <training> else: <eval>``
    (torch's ``if self.training:`` order), so that either mode runs exactly its own lines. A
    stretch differing only in comments keeps training's."""
    out = []
    matcher = difflib.SequenceMatcher(None, eval_lines, train_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        evals, trains = eval_lines[i1:i2], train_lines[j1:j2]
        if tag == "equal" or not any(map(_is_code, evals + trains)):
            out += trains
            continue
        trains = trains if any(map(_is_code, trains)) else []
        evals = evals if any(map(_is_code, evals)) else []
        if trains:
            out.append(f"if not self.{_SWITCH}:")
            out += [f"    {line}" for line in trains]
            if evals:
                out.append("else:")
        else:
            out.append(f"if self.{_SWITCH}:")
        out += [f"    {line}" for line in evals]
    return out


def _merge_ctor(a, b, where):
    """One constructor from the two modes' (the same layers: the first mode's; a child only one
    mode calls: that mode's)."""
    if b is None or isinstance(b, Uncalled):
        return a
    if a is None or isinstance(a, Uncalled):
        return b
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [_merge_ctor(x, y, where) for x, y in zip(a, b, strict=True)]
    if isinstance(a, Ctor) and isinstance(b, Ctor):
        if a.instance is not None and b.instance is not None:
            if a.instance.module is b.instance.module:
                return a
        elif a.instance is None and b.instance is None and a.func == b.func:
            if len(a.args) == len(b.args):
                a.args = [_merge_ctor(x, y, where) for x, y in zip(a.args, b.args, strict=True)]
                return a
    elif a == b:  # literals and the source lines of parameters and buffers
        return a
    raise Untranslatable(f"{where}: translates to other layers in training than in eval mode")


def _walk_ctors(item, visit):
    """``visit`` on every constructor inside an ``__init__`` entry, nested ones too."""
    if isinstance(item, list):
        for sub in item:
            _walk_ctors(sub, visit)
    elif isinstance(item, Ctor | Uncalled):
        visit(item)
        for sub in getattr(item, "args", ()):
            _walk_ctors(sub, visit)


def _join_modes(runs):
    """One translation from the translations of each mode (``runs``: ``(training,
    translator, root)``, training first): an instance traced alike in both keeps its forward
    pass; one traced otherwise gets the switch. The first run's translator comes back, holding
    the joined instances (children before parents, the first run's order kept), their keys
    (the class sharing) taken from both modes."""
    joined, order = {}, []
    for _, tr, _ in runs:
        for inst in tr.instances:
            first = joined.setdefault(id(inst.module), inst)
            if first is inst:
                order.append(inst)
                continue
            where = inst.path or "the model"
            if first.arguments != inst.arguments:
                raise Untranslatable(f"{where}: its inputs differ between training and eval mode")
            module = inst.module
            names = [*module._parameters, *module._buffers, *module._modules]
            rank = {name: k for k, name in enumerate(names)}
            theirs = dict(inst.init)
            init = {
                attr: _merge_ctor(c, theirs.get(attr), f"{where}.{attr}") for attr, c in first.init
            }
            init.update({attr: c for attr, c in inst.init if attr not in init})
            first.init = sorted(init.items(), key=lambda item: rank.get(item[0], -1))
            first.specialized = first.specialized or inst.specialized
            forward = _switch(inst.forward, first.forward)
            if forward != first.forward:  # not a difference of comments alone
                if _SWITCH in init:
                    raise Untranslatable(
                        f"{where}: an attribute named {_SWITCH!r}, the name the generated class "
                        "switches between training and eval on"
                    )
                first.forward, first.switch = forward, True

    ordered, seen = [], set()

    def visit(inst):  # children first; a child's constructor names the joined instance
        if id(inst) in seen:
            return
        seen.add(id(inst))
        children = []

        def adopt(ctor):
            if isinstance(ctor, Uncalled):
                raise Untranslatable(ctor.message)
            if ctor.instance is not None:
                ctor.instance = joined[id(ctor.instance.module)]
                children.append(ctor.instance)

        for _, ctor in inst.init:
            _walk_ctors(ctor, adopt)
        for child in children:
            visit(child)
        ordered.append(inst)

    for inst in order:
        visit(inst)
    for inst in ordered:
        inst.key = _instance_key(inst)
    tr = runs[0][1]
    tr.instances = ordered
    for _, other, _ in runs[1:]:
        tr.helpers |= other.helpers
    return tr, joined[id(runs[0][2].module)]


# -- the public entry -----------------------------------------------------------------------


@dataclasses.dataclass
class Translation:
    """What ``translate`` returns: ``source`` (the file), ``module`` (its class built with the
    torch weights), ``class_name``, and ``check(...)``, ``compare.check`` on the pair."""

    source: str
    module: nnx.Module
    class_name: str
    torch_module: nn.Module
    example_inputs: tuple
    namespace: types.ModuleType = None

    def new_module(self, torch_module=None):
        """A fresh instance of the generated class holding ``torch_module``'s weights, in
        training mode (as NNX builds it)."""
        model = getattr(self.namespace, self.class_name)(rngs=nnx.Rngs(0))
        source = torch_module if torch_module is not None else self.torch_module
        return port.torch_to_nnx(port.torch_state_dict(source), model)

    def check(
        self,
        *,
        batches=None,
        torch_loss=None,
        flax_loss=None,
        torch_optimizer=None,
        steps=5,
        lr=None,
        dtype="float64",
        seed=0,
        **check_kwargs,
    ):
        """``compare.check`` on a copy of the torch module and a fresh generated module:
        by default ``steps`` batches drawn like the example inputs (each forward argument its
        own array, in order, to both sides), the sum over the output's tensors of
        cross-entropy on integer labels for a 2-D output of two columns or more (mean squared
        error otherwise), SGD at ``lr`` (0.01 unless given) with momentum 0.9; ``lr`` is the
        default optimizer's, so it and ``torch_optimizer`` are not given together."""
        import copy

        from compare.toolkit.check import check

        if torch_optimizer is not None and lr is not None:
            raise CompareError("check: lr sets the default SGD's rate; give it or torch_optimizer")
        torch_model = copy.deepcopy(self.torch_module)
        torch_model.train(self.torch_module.training)
        if batches is None:
            batches = default_batches(self.torch_module, self.example_inputs, steps, seed)
        if torch_loss is None or flax_loss is None:
            torch_loss, flax_loss = default_losses(self.torch_module, self.example_inputs)
        if torch_optimizer is None:
            rate = 0.01 if lr is None else lr
            torch_optimizer = torch.optim.SGD(torch_model.parameters(), lr=rate, momentum=0.9)
        elif callable(torch_optimizer) and not isinstance(torch_optimizer, torch.optim.Optimizer):
            torch_optimizer = torch_optimizer(torch_model)
        return check(
            torch_model,
            self.new_module(torch_model),
            batches=batches,
            torch_loss=torch_loss,
            flax_loss=flax_loss,
            torch_optimizer=torch_optimizer,
            steps=steps,
            dtype=dtype,
            seed=seed,
            **check_kwargs,
        )


def _output_tensors(out):
    """Every tensor (torch's or JAX's array) of a model's output, in order: a tuple's, a
    nested tuple's; a ``None`` in it is no output."""
    if isinstance(out, tuple | list):
        return [t for item in out for t in _output_tensors(item)]
    return [] if out is None else [out]


def _probe_outputs(torch_module, example_inputs):
    """The tensors of ``torch_module``'s output on the example inputs (a copy runs it: its
    statistics do not move)."""
    import copy

    probe = copy.deepcopy(torch_module)
    with torch.no_grad():
        outs = _output_tensors(probe(*example_inputs))
    if not outs:
        raise CompareError("the model's output holds no tensor")
    return outs


def _classifies(out):
    """Whether ``check``'s default loss treats ``out`` as class scores: 2-D with two classes
    or more. One column (a regression's, a discriminator's probability) is not: cross-entropy
    over a single class is 0 whatever the weights, so its gradients would all be 0 and the
    lockstep would train nothing."""
    return out.dim() == 2 and out.shape[1] > 1


def _one_or_tuple(items):
    return items[0] if len(items) == 1 else tuple(items)


def default_batches(torch_module, example_inputs, steps, seed=0):
    """``steps`` batches like the example inputs: ``x`` one array per forward argument (a
    tuple of them for several), floats standard normal, integers within that example's
    range; ``y`` one target per tensor of the output (a tuple for several): labels for class
    scores (2-D, two columns or more), numbers of the output's shape otherwise."""
    rng = np.random.default_rng(seed)
    outs = _probe_outputs(torch_module, example_inputs)
    batches = []
    for _ in range(steps):
        xs = []
        for x in example_inputs:
            if x.is_floating_point():
                xs.append(rng.standard_normal(tuple(x.shape)))
            else:
                xs.append(rng.integers(0, int(x.max()) + 1, tuple(x.shape)))
        ys = []
        for out in outs:
            if _classifies(out):
                ys.append(rng.integers(0, out.shape[1], out.shape[0]))
            else:
                ys.append(rng.standard_normal(tuple(out.shape)))
        batches.append((_one_or_tuple(xs), _one_or_tuple(ys)))
    return batches


def default_losses(torch_module, example_inputs):
    """The sum over the output's tensors (one, or each of a tuple's: a VAE's reconstruction,
    mean and log-variance) of a loss against its target: cross-entropy on labels for class
    scores (2-D, two columns or more), mean squared error otherwise. Every output counts, so
    that one the translation got wrong shows in the loss and its gradients, not only the
    first; ``x`` and ``y`` are tuples where ``default_batches`` makes them so."""
    import optax

    classify = [_classifies(out) for out in _probe_outputs(torch_module, example_inputs)]
    several = len(classify) > 1

    def pairs(out, y):
        outs = _output_tensors(out)
        ys = y if several else (y,)
        if len(outs) != len(classify):
            raise CompareError(
                f"the model returned {len(outs)} outputs, {len(classify)} when probed"
            )
        return zip(outs, ys, classify, strict=True)

    def torch_loss(model, x, y):
        total = 0
        for out, target, cls in pairs(call_model(model, x), y):
            total = total + (F.cross_entropy(out, target) if cls else F.mse_loss(out, target))
        return total

    def flax_loss(model, x, y):
        total = 0
        for out, target, cls in pairs(call_model(model, x), y):
            if cls:
                total = total + optax.softmax_cross_entropy_with_integer_labels(out, target).mean()
                continue
            if target.ndim == 4:  # check hands 4-D arrays over channels-last; outputs are torch's
                target = target.transpose(0, 3, 1, 2)
            total = total + ((out - target) ** 2).mean()
        return total

    return torch_loss, flax_loss


def _format(source):
    """The source through ``ruff format`` (line length 100) when ruff is installed."""
    try:
        from ruff.__main__ import find_ruff_bin

        ruff = find_ruff_bin()
    except Exception:  # ruff not installed: the source stays as written
        return source
    try:
        done = subprocess.run(
            [ruff, "format", "--line-length", "100", "-"],
            input=source,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return source
    return done.stdout if done.returncode == 0 else source


def _load(source, class_name):
    name = f"twinnets_translated_{class_name}_{abs(hash(source)) % 10**8}"
    namespace = types.ModuleType(name)
    namespace.__file__ = f"<{name}>"
    sys.modules[name] = namespace
    exec(compile(source, namespace.__file__, "exec"), namespace.__dict__)  # noqa: S102
    return namespace


def translated_source(torch_module, example_inputs, *, class_name=None):
    """The generated file and its class's name, as ``translate`` writes them, without building
    the class (no JAX compilation): what a test of the source alone needs."""
    import copy

    if not isinstance(torch_module, nn.Module):
        raise CompareError(f"translate takes a torch.nn.Module, not {type(torch_module).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    if class_name is not None and not str(class_name).isidentifier():
        raise CompareError(f"class_name {class_name!r} is not a Python identifier")
    work = copy.deepcopy(torch_module)  # tracing runs it: its statistics must not move
    in_perms = tuple(
        _channels_last(x.dim()) if x.dim() == 4 else _ident(x.dim()) for x in example_inputs
    )
    runs = []
    for training in _TRACED_MODES:
        with _in_mode(work, training):
            tr = Translator()
            try:
                root = tr.instance(work, "", example_inputs, in_perms)
            except Untranslatable as err:
                if training:
                    raise
                raise Untranslatable(f"in eval mode, {err}") from None
        runs.append((training, tr, root))
    tr, root = _join_modes(runs)
    class_name = class_name or type(torch_module).__name__
    source = _format(tr.source(root, class_name, torch_module, example_inputs))
    return source, class_name


def translate(torch_module, example_inputs, *, class_name=None):
    """Readable Flax NNX source for ``torch_module`` (traced on ``example_inputs``, a tensor
    or a tuple of them, in torch's layout, in training and in eval mode), its class built
    with the torch weights, in the torch module's mode; see the module docstring. What cannot
    be translated raises ``CompareError`` in one line."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    source, class_name = translated_source(torch_module, example_inputs, class_name=class_name)
    namespace = _load(source, class_name)
    model = getattr(namespace, class_name)(rngs=nnx.Rngs(0))
    port.torch_to_nnx(port.torch_state_dict(torch_module), model)
    if not torch_module.training:  # the twin in the mode the torch module is in
        model.eval()
    return Translation(source, model, class_name, torch_module, example_inputs, namespace)


_ = (functools, math)
