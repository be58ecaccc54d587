"""The lessons' own numpy versions, written by hand: the third implementation where a lesson
has one (``autograd_fit``: ch. 2.6's descent; ``optimizers_ch5``: ch. 5.6's pseudo-code).

Same file stems as ``jaxnets`` and ``torchref``; numpy only. A task whose registry entry says
``by_hand=True`` has one here, and ``compare``'s ``run`` measures it against torch in float64.
"""
