"""Each tutorial's torch model by task name: what ``twinnets translate`` reaches.

    twinnets translate compare.tutorials:torch_model --kwargs task=mnist-cnn \\
        --input 2,1,28,28 --check

``torch_model(task)`` is the task's torch model as its training builds it
(``torchref.<module>.new_model`` with the task's hyperparameters from the registry). A task
that trains several nets keeps them in one module without a forward of its own (a GAN's
``D`` and ``G``, the optimizer races' ``nn.ModuleDict``): ``torch_model(task, model=NAME)``
is one of them. ``twin_model`` is the hand-written ``jaxnets`` counterpart, ``parameter_tree``
and ``tree_difference`` compare a translated module's tree with it, and ``EXAMPLES`` gives
every model its example inputs in ``--input``'s syntax (``examples/translate_table.py
--tutorials`` runs them all through the command).
"""

from dataclasses import dataclass

from compare.errors import CompareError
from compare.tutorials import registry


@dataclass(frozen=True)
class Example:
    """One translatable model of a task: ``model`` names the net within the task's module
    (None: the module itself), ``input`` is an example input in ``--input``'s syntax (torch's
    layout, batch 2 to 4), one per forward argument separated by spaces for a forward of
    several (``"4,784 4:int10"``: an image and its digit label), ``same_as`` the task's other
    nets of this very architecture (they differ only in their optimizer, which the lockstep
    of ``--check`` does not use)."""

    task: str
    model: str | None
    input: str
    same_as: tuple[str, ...] = ()

    def inputs(self):
        """Each forward argument's example, in order: ``["4,784", "4:int10"]``."""
        return self.input.split()

    def input_flags(self):
        """The command's ``--input`` flags, one per forward argument:
        ``["--input", "4,784", "--input", "4:int10"]``."""
        return [flag for spec in self.inputs() for flag in ("--input", spec)]

    def kwargs(self):
        """The command's ``--kwargs`` for it: ``["task=gan", "model=D"]``."""
        return [f"task={self.task}"] + ([f"model={self.model}"] if self.model else [])


EXAMPLES = (
    Example("regression", None, "4,1"),
    Example("classification", None, "4,2"),
    Example("optimizers", "SGD", "4,1", ("Momentum", "RMSprop", "Adam")),
    Example("flower-logistic", None, "4,2"),
    Example("flower-net", None, "4,2"),
    Example("autograd-fit", None, "4,1"),
    Example("mnist-mlp", None, "2,1,28,28"),
    Example("mnist-mlp-bn", None, "4,784"),
    Example("mnist-cnn", None, "2,1,28,28"),
    Example("mnist-resnet", None, "2,1,28,28"),
    Example("mnist-lstm", None, "2,1,28,28"),
    Example("rnn-sincos", None, "2,10,1"),
    Example("pos-tagger", None, "2,5:int9"),
    Example("lstm-forecast", None, "4,30,1"),
    # eps handed in, as the tutorial's lockstep does: traced at its default (None) the model
    # draws it with torch.randn_like, which no side can feed the other
    Example("vae", None, "4,784 4,20"),
    Example("gan", "D", "4,784"),
    Example("gan", "G", "4,64"),
    Example("cgan", "D", "4,784 4:int10"),  # the image and its digit's label
    Example("cgan", "G", "4,64 4:int10"),  # z and the digit to forge
    Example("dcgan", "D", "4,1,28,28"),
    Example("dcgan", "G", "4,100"),
    Example("housing-regularization", "plain", "4,12", ("L2",)),
    Example("housing-regularization", "dropout", "4,12"),
    Example("housing-regularization", "batchnorm", "4,12"),
    Example("housing-parallel", None, "4,12"),
    Example("optimizers-ch5", "SGD", "4,1", ("Momentum", "NAG", "AdaGrad", "RMSProp", "Adam")),
    Example("init-and-activations", None, "4,2"),
)


def _nets(container):
    """The names of the nets a task trains when its module has no forward of its own (its
    direct children), else None: the module is the model."""
    import torch

    if type(container).forward is not torch.nn.Module.forward:
        return None
    return [name for name, _ in container.named_children()]


def torch_model(task, model=None):
    """The torch model of ``task`` (a registry name) as its training builds it; for a task
    of several nets, the one called ``model``. Call ``torch.manual_seed`` first for fixed
    weights (``twinnets translate`` does)."""
    spec = registry.get(task)
    _, torch_module = spec.modules()
    container = torch_module.new_model(spec.hp)
    nets = _nets(container)
    if nets is None:
        if model is not None:
            raise CompareError(f"{task} trains one model: drop model={model}")
        return container
    if model is None or model not in nets:
        given = "no model" if model is None else f"model={model} is not one of them"
        raise CompareError(
            f"{task} trains several nets ({', '.join(nets)}): {given}; pass model=NAME, "
            f"e.g. --kwargs task={task} model={nets[0]}"
        )
    return container.get_submodule(model)


def twin_model(task, model=None, seed=0):
    """The hand-written ``jaxnets`` twin of ``torch_model(task, model)``, built with
    ``nnx.Rngs(seed)``."""
    from flax import nnx

    spec = registry.get(task)
    jax_module, _ = spec.modules()
    twin = jax_module.new_model(spec.hp, nnx.Rngs(seed))
    if model is None:
        return twin
    try:
        return twin[model]  # an nnx.Dict of nets
    except (KeyError, TypeError):
        return getattr(twin, model)


def parameter_tree(nnx_module):
    """``{torch key: (nnx path, shape)}`` of every variable the weight port writes
    (parameters and BatchNorm statistics), the path dotted as ``layer1.layers.0.kernel``."""
    from compare import port

    return {
        key: (".".join(map(str, path)), tuple(var.get_value().shape))
        for key, (path, var, _, _) in port.mapping(nnx_module).items()
    }


def _differing_prefixes(path, other):
    """``rnn.layers.0.cell.dense_h.kernel`` and ``rnn.cell.dense_h.kernel`` ->
    ``("rnn.layers.0.*", "rnn.*")``: the two paths less their common tail."""
    a, b = path.split("."), other.split(".")
    while a and b and a[-1] == b[-1]:
        a.pop(), b.pop()
    return ".".join(a + ["*"]), ".".join(b + ["*"])


def tree_difference(got, want):
    """What differs between two ``parameter_tree``s (``got`` the generated module's, ``want``
    the twin's) in one line, "" when nothing does: the torch keys only one side has, the
    shapes that differ, and the NNX paths that differ (each pair once, less their common
    tail: ``rnn.layers.0.* vs the twin's rnn.*``)."""
    parts = []
    extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
    if extra:
        parts.append("torch keys not in the twin: " + ", ".join(extra))
    if missing:
        parts.append("torch keys only in the twin: " + ", ".join(missing))
    common = sorted(set(got) & set(want))
    shapes = [f"{k} {got[k][1]} vs {want[k][1]}" for k in common if got[k][1] != want[k][1]]
    if shapes:
        parts.append("shapes: " + ", ".join(shapes))
    paths = dict.fromkeys(
        _differing_prefixes(got[k][0], want[k][0]) for k in common if got[k][0] != want[k][0]
    )
    if paths:
        parts.append("NNX paths: " + ", ".join(f"{a} vs the twin's {b}" for a, b in paths))
    return "; ".join(parts)
