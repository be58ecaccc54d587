"""The tutorials, one client of the toolkit: each registered task's twins trained and compared.

``registry`` (every task, its hyperparameters, what it adds), ``data`` (every dataset and
batch order, numpy), ``twins`` (both sides of a task from the same weights, their training
loops), ``runs`` (the ``run`` verb), ``parity`` (tiers 1-3), ``equivalences`` (a lesson's
table of torch and JAX function twins), ``plots`` (the pictures), ``models`` (each task's
torch model by name, ``torch_model``, re-exported here for ``twinnets translate
compare.tutorials:torch_model --kwargs task=mnist-cnn``).
"""

from compare.tutorials.models import torch_model

__all__ = ["torch_model"]
