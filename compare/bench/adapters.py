"""How the bench feeds a task's ``train_step``: one adapter per step signature."""

import functools
import inspect

import numpy as np


class Adapter:
    """The default: ``train_step(model, optimizer, x, y)`` on ``arrays["x"]``, ``arrays["y"]``.

    A task whose step takes more (noise drawn per step, a carried state, two optimizers)
    gets a subclass overriding what differs, registered in ``ADAPTERS`` under its name.
    """

    def unsupported(self, task):
        """Why the bench cannot run ``task`` (None when it can); checked without a device."""
        jax_module, torch_module = task.modules()
        for side, module in (("jax", jax_module), ("torch", torch_module)):
            try:
                params = list(inspect.signature(module.train_step).parameters)
            except (TypeError, ValueError, AttributeError):
                return f"{side} train_step has no inspectable signature"
            required = [
                p
                for p in inspect.signature(module.train_step).parameters.values()
                if p.default is inspect.Parameter.empty
            ]
            # a step whose noise argument defaults to None draws its own: a normal run's step
            if len(params) < 4 or len(required) != 4:
                return (
                    f"its {side} train_step{inspect.signature(module.train_step)} is not "
                    "(model, optimizer, x, y); add an Adapter for it in "
                    "compare.bench.adapters.ADAPTERS"
                )
        return None

    # torch: the step function (run as it is, or compiled), and its arguments after
    # (model, optimizer), one tuple per step, already on the device
    def torch_step(self, module):
        return module.train_step

    def torch_compiled(self, module, mode=None):
        """The step as torch-compile times it: the whole step compiled."""
        import torch

        return torch.compile(self.torch_step(module), mode=mode)

    def lesson_step(self, module, model, optimizer, inputs, target):
        """One step of the lesson's loop, on the batch its loader yields."""
        return module.train_step(model, optimizer, inputs, target)

    def torch_batches(self, x, y, batches, full_batch):
        if full_batch:
            return [(x, y)] * len(batches)
        import torch

        index = [torch.from_numpy(np.asarray(b)).to(x.device) for b in batches]
        return [(x[i], y[i]) for i in index]

    # jax: the three loops, each returning something to block on
    def jax_nnx_jit(self, module, model, optimizer, x, y, batches, full_batch):
        if full_batch:
            args = [(x, y)] * len(batches)
        else:
            args = [(x[i], y[i]) for i in _device_put(batches)]
        return functools.partial(_nnx_jit_loop, module.train_step, model, optimizer, args)

    def jax_steps(self, module, model, optimizer, x, y, batches, full_batch):
        import jaxnets

        if full_batch:
            return functools.partial(
                _full_batch_steps, module.train_step, model, optimizer, x, y, len(batches)
            )
        index = _device_put(batches)
        return _last(jaxnets.train_epoch, module.train_step, model, optimizer, x, y, index, "steps")

    def jax_scan(self, module, model, optimizer, x, y, batches, full_batch):
        import jaxnets

        if full_batch:
            return _last(
                jaxnets.train_full_batch, module.train_step, model, optimizer, x, y, len(batches)
            )
        return _last(
            jaxnets.train_epoch, module.train_step, model, optimizer, x, y, batches, "scan"
        )


def _last(loop, *args):
    """``loop(*args)`` returns every step's loss; the bench keeps the last step's."""
    return lambda: loop(*args)[-1]


class CompiledNets(Adapter):
    """A GAN step backpropagates twice, the second time through G's graph kept from before D's
    update; compiled whole, Dynamo's graph breaks free that graph ("backward through the graph
    a second time"). So compile each net, ``D.compile()`` and ``G.compile()``, as PyTorch's
    DCGAN users do, and keep the step's Python as written."""

    def torch_compiled(self, module, mode=None):
        def step(model, optimizer, x, y):
            if not getattr(model, "bench_compiled", False):
                for net in (model.D, model.G):
                    net.compile(mode=mode)
                model.bench_compiled = True
            return module.train_step(model, optimizer, x, y)

        return step


# task name -> Adapter instance, for steps that are not (model, optimizer, x, y); the
# generative steps' fifth argument, noise, defaults to None (each side draws its own)
ADAPTERS = {"gan": CompiledNets(), "cgan": CompiledNets(), "dcgan": CompiledNets()}


def adapter_for(task):
    return ADAPTERS.get(task.name, Adapter())


def _device_put(batches):
    import jax

    return [jax.device_put(np.asarray(b)) for b in batches]


def _nnx_jit_loop(train_step, model, optimizer, args):
    loss = None
    for xb, yb in args:
        loss = train_step(model, optimizer, xb, yb)
    return loss


@functools.cache
def _full_batch_step():
    import jax
    from flax import nnx

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def step(train_step, graphdef, state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss = train_step(model, optimizer, x, y)
        return nnx.state((model, optimizer)), loss

    return step


def _full_batch_steps(train_step, model, optimizer, x, y, num_steps):
    """The full-batch twin of ``train_epoch(loop="steps")``: one jitted pure step per step."""
    from flax import nnx

    step = _full_batch_step()
    graphdef, state = nnx.split((model, optimizer))
    loss = None
    for _ in range(num_steps):
        state, loss = step(train_step, graphdef, state, x, y)
    nnx.update((model, optimizer), state)
    return loss
