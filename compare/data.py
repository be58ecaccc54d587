"""``compare.data.load(task)``: a task's data as numpy arrays, exactly what both sides train on.

The public path of ``compare.tutorials.data`` (docs/ and DESIGN name it): ``load`` and
``batch_order``, the order both sides see the batches in.
"""

from compare.tutorials.data import batch_order, load

__all__ = ["batch_order", "load"]
