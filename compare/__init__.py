"""Train the twin implementations on the same data and prove, in numbers, that they agree.

The public surface, re-exported here: ``compare.check(torch_model, flax_model, ...)`` does for
a user's own port what ``parity`` does for the tutorials, and ``CompareError`` is what every
bad input ends in; ``compare.translate(torch_module, example_inputs)`` writes the Flax NNX
source of a torch module and proves it with ``check``; ``compare.optim.to_optax``,
``compare.port.torch_to_nnx`` / ``nnx_to_torch`` and ``compare.data.load`` are public at their
own paths.

The rooms, bottom to top (tests/test_layout.py keeps them): ``errors``, ``diff``, ``arrays``,
``files``, ``port``, ``optim``; ``toolkit/`` (the lockstep engine, ``check``, the traps, the
spec files), which knows no tutorial; ``tutorials/`` (registry, data, the twins, ``run``,
``parity``, pictures); ``parallel/`` and ``bench/``, engines beside them; ``cli`` and
``printing`` in front. Importing ``compare`` loads neither torch nor JAX: ``check`` is
imported when it is first asked for.
"""

from compare.errors import CompareError

__all__ = ["CompareError", "check", "translate"]


def __getattr__(name):
    if name == "check":  # torch and JAX load with it
        from compare.toolkit.check import check

        return check
    if name == "translate":
        from compare.toolkit.translate import translate

        return translate
    raise AttributeError(f"module 'compare' has no attribute {name!r}")
